// Features: the names on the wire.
#include "protocol/features.h"

#include "protocol/limits.h"

namespace ackxfer {
namespace {

struct Row {
  Feature feature;
  std::string_view wire;
};
constexpr Row kRows[] = {
#define ACKXFER_FEATURE_ROW(e, wire, desc) {Feature::e, wire},
    ACKXFER_FEATURES(ACKXFER_FEATURE_ROW)
#undef ACKXFER_FEATURE_ROW
};

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

}  // namespace

std::string_view feature_name(Feature f) {
  return kRows[static_cast<std::uint32_t>(f)].wire;
}

Features Features::all() {
  Features f;
  for (const Row& r : kRows)
    f.add(r.feature);
  return f;
}

std::string Features::to_string() const {
  std::string out;
  for (const Row& r : kRows)
    if (has(r.feature)) {
      if (!out.empty()) out.push_back(',');
      out.append(r.wire);
    }
  return out;
}

std::optional<Features> Features::parse(std::string_view text) {
  Features out;
  if (text.empty()) return out;
  std::size_t names = 0;
  while (true) {
    std::size_t comma = text.find(',');
    std::string_view name = text.substr(0, comma);
    if (name.empty() || ++names > kMaxFeatures) return std::nullopt;
    for (char c : name)
      if (!name_char(c)) return std::nullopt;
    for (const Row& r : kRows)
      if (r.wire == name) out.add(r.feature);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace ackxfer
