// The receiver's path rule: which names a sender may ask for. Pure; the file-system side that
// enforces "never outside --dir" even through symlinks is in fs/destination.h.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ackxfer {

// The receiver's own namespace: its temp files, partials and journals are named
// `.ackxfer-<...>.part` and `.ackxfer-<...>.journal`. No path component a sender asks for may
// have that shape, so a sender can never create, replace or remove one of them.
inline constexpr std::string_view kTempPrefix = ".ackxfer-";
inline constexpr std::string_view kTempSuffix = ".part";
inline constexpr std::string_view kJournalSuffix = ".journal";
bool is_reserved_name(std::string_view component);

// A path relative to the transfer root, split into components that are each safe to pass to
// an *at() call: non-empty, not "." or "..", no '/' or NUL, at most NAME_MAX bytes, not in the
// receiver's reserved namespace.
struct RelativePath {
  std::vector<std::string_view> components;  // views into the validated string
};

// Returns the components, or a sentence saying what is wrong with `path`.
std::variant<RelativePath, std::string> validate_relative_path(std::string_view path);

}  // namespace ackxfer
