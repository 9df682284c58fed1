// Protocol features both sides must agree on before using (the idea of WDT's per-feature
// protocol versions): the sender lists what it supports in HELLO, the receiver answers with the
// ones it supports too, and neither side sends a line of a feature the other did not list.
// Pure; tested in tests/unit/control_codec_test.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ackxfer {

// X(enumerator, wire name, what it allows)
#define ACKXFER_FEATURES(X)                                                               \
  X(kLink, "link", "LINK: symlinks travel as symlinks")                                   \
  X(kProgress, "progress", "PROGRESS: long local work on either side counts as activity") \
  X(kCredit, "credit", "CREDIT: the receiver raises the number of files a session may open")

enum class Feature : std::uint32_t {
#define ACKXFER_FEATURE_ENUM(e, wire, desc) e,
  ACKXFER_FEATURES(ACKXFER_FEATURE_ENUM)
#undef ACKXFER_FEATURE_ENUM
};

class Features {
 public:
  Features() = default;
  // Every feature this build knows.
  static Features all();
  bool has(Feature f) const { return bits_ & bit(f); }
  Features& add(Feature f) {
    bits_ |= bit(f);
    return *this;
  }
  Features operator&(Features o) const { return Features(bits_ & o.bits_); }
  bool empty() const { return bits_ == 0; }
  // "link,progress" (known names only, in a fixed order); "" when empty.
  std::string to_string() const;
  // From a features= value: names of lower-case letters, digits and '-', comma-separated, at
  // most kMaxFeatures of them. Unknown names are ignored (a newer peer's features); nullopt if
  // the value is malformed.
  static std::optional<Features> parse(std::string_view text);
  friend bool operator==(const Features&, const Features&) = default;

 private:
  explicit Features(std::uint32_t bits) : bits_(bits) {}
  static std::uint32_t bit(Feature f) { return 1u << static_cast<std::uint32_t>(f); }
  std::uint32_t bits_ = 0;
};

std::string_view feature_name(Feature f);

}  // namespace ackxfer
