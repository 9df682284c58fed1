// validate_relative_path: the whole rule in one function, tested in
// tests/unit/relative_path_test.cpp.
#include "fs/relative_path.h"

#include "protocol/limits.h"

namespace ackxfer {

bool is_reserved_name(std::string_view c) {
  return c.starts_with(kTempPrefix) && (c.ends_with(kTempSuffix) || c.ends_with(kJournalSuffix));
}

std::variant<RelativePath, std::string> validate_relative_path(std::string_view path) {
  if (path.empty()) return std::string("path is empty");
  if (path.size() > kMaxPathBytes)
    return "path is " + std::to_string(path.size()) + " bytes; the limit is " +
           std::to_string(kMaxPathBytes);
  if (path.find('\0') != std::string_view::npos) return std::string("path contains a NUL byte");
  if (path.front() == '/') return std::string("path is absolute; only relative paths are allowed");
  RelativePath out;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    std::string_view c = path.substr(start, end - start);
    if (c.empty()) return std::string("path has an empty component (\"//\" or a trailing \"/\")");
    if (c == ".") return std::string("path has a \".\" component");
    if (c == "..") return std::string("path has a \"..\" component");
    if (c.size() > kMaxComponentBytes)
      return "a path component is " + std::to_string(c.size()) + " bytes; the limit is " +
             std::to_string(kMaxComponentBytes);
    if (is_reserved_name(c))
      return std::string(
          "a path component is named like the receiver's own temporary files "
          "(.ackxfer-*.part, .ackxfer-*.journal); such names are reserved");
    out.components.push_back(c);
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

}  // namespace ackxfer
