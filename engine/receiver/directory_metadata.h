// The modes and mtimes of a session's directories, kept from MKDIR to BYE (applied last, so the
// files written inside do not move a directory's mtime again). Each path is kept once, however
// often it is sent, and the paths together are bounded by kMaxDirMetadataBytes: a peer cannot
// grow this by repeating itself. Pure bookkeeping; tested in
// tests/unit/directory_metadata_test.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "protocol/control_codec.h"
#include "receiver/writable_dirs.h"

namespace ackxfer {

class DirectoryMetadata {
 public:
  struct Entry {
    std::string path;
    std::uint32_t mode = 0;
    Mtime mtime;
    std::optional<DirKey> held;  // made writable for the session (WritableDirs), to let go
  };
  explicit DirectoryMetadata(std::size_t max_bytes);

  enum class Added { kNew, kUpdated, kOverLimit };
  // What keeping `path` costs in memory: the path twice (entry and index), each with its
  // allocation, the entry, the index node and its bucket.
  static std::size_t cost(const std::string& path) { return 2 * (path.size() + 17) + 160; }
  // Records (or updates) a directory's metadata. kOverLimit: not kept, the budget is spent
  // (this one's, or the one `take_budget` is asked for the cost of a new path).
  Added add(const std::string& path, std::uint32_t mode, const Mtime& mtime,
            const std::function<bool(std::size_t)>& take_budget = {});
  // Everything kept, deepest first (so that setting a directory's mtime is not undone by work
  // in a child), and forgets it.
  std::vector<Entry> take_deepest_first();
  Entry* find(const std::string& path);
  const std::vector<Entry>& entries() const { return entries_; }
  std::size_t size() const { return entries_.size(); }
  std::size_t bytes() const { return bytes_; }
  std::size_t dropped() const { return dropped_; }  // paths not kept for lack of budget

 private:
  std::size_t dropped_ = 0;
  const std::size_t max_bytes_;
  std::size_t bytes_ = 0;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;  // path -> entries_ position
};

}  // namespace ackxfer
