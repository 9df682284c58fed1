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
//
// The key still leaves a peer ways to miss: a different chunk size each time, or a chmod (by
// `skip=size-mtime`) that moves the ctime. So the reading itself is counted, by what a peer
// cannot change without delivering data: a version of a file (inode, size, mtime) of
// kReadsCountedFromBytes or more is read at most kReadsPerVersion times while counted. Beyond
// that a check is answered "send it" without reading: the peer then pays for every byte it
// makes the receiver write, and an honest sender (one chunk size per file, so its checks hit
// the digests above) never gets there.
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

  // For a check find() could not answer: whether this version of the file may be read and
  // hashed once more, counting the reading if so (above). Thread-safe.
  static constexpr unsigned kReadsPerVersion = 2;
  static constexpr std::uint64_t kReadsCountedFromBytes = 1 << 20;
  bool may_read(const struct stat& st);

 private:
  using Version = std::tuple<dev_t, ino_t, std::uint64_t, std::int64_t, long>;

  const std::size_t max_;
  mutable std::mutex mu_;
  std::list<Key> order_;  // least recently used first
  std::map<Key, std::pair<Digest128, std::list<Key>::iterator>> entries_;
  // Readings per version, at most max_ versions, the least recently read first out. Pushing
  // one out takes max_ other files of at least kReadsCountedFromBytes read.
  std::list<Version> read_order_;
  std::map<Version, std::pair<unsigned, std::list<Version>::iterator>> reads_;
};

}  // namespace ackxfer
