// printable(): ASCII and safe UTF-8 through, everything else escaped.
#include "display.h"

#include <cstdint>

namespace ackxfer {
namespace {

// Length of the well-formed UTF-8 sequence at s[i] and its code point, or 0.
std::size_t utf8_sequence(std::string_view s, std::size_t i, std::uint32_t& cp) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = b(0);
  std::size_t n;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not well-formed.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

bool unsafe_code_point(std::uint32_t cp) {
  return cp < 0xa0 ||                       // C1 controls (and NBSP's neighbours below it)
         cp == 0x2028 || cp == 0x2029 ||    // line and paragraph separators
         cp == 0x200e || cp == 0x200f ||    // LRM, RLM
         (cp >= 0x202a && cp <= 0x202e) ||  // embeddings and overrides
         (cp >= 0x2066 && cp <= 0x2069) ||  // isolates
         cp == 0xfeff;                      // zero-width no-break space (BOM)
}

}  // namespace

void append_hex_escape(std::string& out, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += "\\x";
  out.push_back(kHex[c >> 4]);
  out.push_back(kHex[c & 15]);
}

std::string printable(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size();) {
    auto c = static_cast<unsigned char>(raw[i]);
    if (c >= 0x20 && c < 0x7f) {
      if (c == '\\') out.push_back('\\');
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    if (c >= 0x80) {
      std::size_t n = utf8_sequence(raw, i, cp);
      if (n && !unsafe_code_point(cp)) {
        out.append(raw.substr(i, n));
        i += n;
        continue;
      }
    }
    append_hex_escape(out, c);
    ++i;
  }
  return out;
}

std::string control_free(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c != 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      append_hex_escape(out, c);
    }
  }
  return out;
}

std::string counted(std::uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

}  // namespace ackxfer
