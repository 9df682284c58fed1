// The receiver's path rule: which names a sender may ask for. Pure; the file-system side that
// enforces "never outside --dir" even through symlinks is in fs/destination.h.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ackxfer {

// A path relative to the transfer root, split into components that are each safe to pass to
// an *at() call: non-empty, not "." or "..", no '/' or NUL, at most NAME_MAX bytes.
struct RelativePath {
  std::vector<std::string_view> components;  // views into the validated string
};

// Returns the components, or a sentence saying what is wrong with `path`.
std::variant<RelativePath, std::string> validate_relative_path(std::string_view path);

}  // namespace ackxfer
