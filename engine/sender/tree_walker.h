// Walks the sender's PATH arguments lazily, one entry at a time, so memory stays bounded by the
// tree's depth, not its size. Each entry carries its wire path: a file argument becomes its
// basename, a directory argument its name followed by everything under it.
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "protocol/control_codec.h"

namespace ackxfer {

struct SourceEntry {
  enum class Kind { kFile, kDirectory };
  Kind kind = Kind::kFile;
  std::string source_path;  // where to open it on this machine
  std::string wire_path;    // its path relative to the receiver's --dir
  // Size, mode and mtime are filled in for directories and PATH arguments. Regular files met
  // inside a tree are recognised from readdir's d_type without a stat (the sender fstat()s
  // them when it opens them anyway): for those `stat_known` is false.
  bool stat_known = true;
  std::uint64_t size = 0;
  std::uint32_t mode = 0;
  Mtime mtime;
};

// Something the walk could not send: a missing argument, an unreadable directory (failures),
// or a symlink or special file it skips (warnings).
struct WalkProblem {
  std::string path;
  std::string reason;
  bool is_failure = true;
};

class TreeWalker {
 public:
  explicit TreeWalker(std::vector<std::string> roots);
  ~TreeWalker();
  TreeWalker(const TreeWalker&) = delete;
  TreeWalker& operator=(const TreeWalker&) = delete;

  // The next entry in pre-order (a directory before its contents), or nullopt at the end.
  std::optional<SourceEntry> next();
  // Problems found since the last call.
  std::vector<WalkProblem> take_problems();

  // The name a PATH argument has on the receiver, or nullopt if it has none ("/").
  static std::optional<std::string> wire_name_of(const std::string& arg);

 private:
  struct OpenDir {
    DIR* dir;
    std::string source_prefix;  // "src/dir/"
    std::string wire_prefix;    // "dir/"
  };
  std::optional<SourceEntry> start_root(const std::string& arg);
  std::optional<SourceEntry> from_stat(const struct stat& st, std::string source, std::string wire);
  void push_dir(const std::string& source, const std::string& wire);

  std::vector<std::string> roots_;
  std::size_t next_root_ = 0;
  std::vector<OpenDir> stack_;
  std::vector<WalkProblem> problems_;
};

}  // namespace ackxfer
