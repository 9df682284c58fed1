// DigestCache: what skip=xxh3 checks found, so that an unchanged file is read and hashed once,
// not at every SEND that names it. Without it, a peer repeating a 200-byte SEND (and CANCEL)
// made the receiver read a large file over and over, and every `send --checksum` re-run paid
// for reading the receiver's whole tree again.
//
// Keyed by what changes whenever the content can have: the inode, the size, mtime and ctime
// (nobody can set ctime back), and the chunk size the file digest is made of. A digest is kept
// only if the file did not change while it was hashed, and its ctime was already a second old
// when hashing began: timestamps advance in coarse ticks, so a write in the same tick as our
// look at the file would not show (git's "racy" rule).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

#include "digest/digest.h"

namespace ackxfer {

class DigestCache {
 public:
  using Key = std::tuple<dev_t, ino_t, std::uint64_t, std::int64_t, long, std::int64_t, long,
                         std::uint64_t>;
  static Key key_of(const struct stat& st, std::uint64_t chunk);
  static constexpr std::size_t kDefaultEntries = 16'384;  // about 2 MiB

  explicit DigestCache(std::size_t max_entries = kDefaultEntries) : max_(max_entries) {}
  DigestCache(const DigestCache&) = delete;
  DigestCache& operator=(const DigestCache&) = delete;

  // Thread-safe.
  std::optional<Digest128> find(const Key& k);
  // Remembers `d` for `k` (the file as it was when hashing began, at wall-clock `started`)
  // if `after`, the file as it is now, is the same and was old enough then (above). The
  // oldest entry makes room. Returns whether it was kept.
  bool remember(const Key& k, const struct stat& after, const timespec& started,
                const Digest128& d);
  std::size_t size() const;

 private:
  const std::size_t max_;
  mutable std::mutex mu_;
  std::list<Key> order_;  // least recently used first
  std::map<Key, std::pair<Digest128, std::list<Key>::iterator>> entries_;
};

}  // namespace ackxfer
