// DigestCache: what skip=xxh3 checks found, so that an unchanged file is read and hashed once,
// not at every SEND that names it. Without it, a peer repeating a 200-byte SEND (and CANCEL)
// made the receiver read a large file over and over, and every `send --checksum` re-run paid
// for reading the receiver's whole tree again.
//
// Keyed and trusted as StatKeyedCache below says.
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

// What the receiver found by reading a file, kept for as long as the file cannot have changed
// unseen: keyed by the inode, size, mtime and ctime (nobody can set ctime back) and the chunk
// size the finding is made of. A finding is kept only if the file did not change while it was
// read, and its ctime was already a second old when reading began: timestamps advance in
// coarse ticks, so a write in the same tick as our look at the file would not show (git's
// "racy" rule). A small LRU, thread-safe.
template <class Value>
class StatKeyedCache {
 public:
  using Key = std::tuple<dev_t, ino_t, std::uint64_t, std::int64_t, long, std::int64_t, long,
                         std::uint64_t>;
  static Key key_of(const struct stat& st, std::uint64_t chunk) {
    return Key{st.st_dev,
               st.st_ino,
               static_cast<std::uint64_t>(st.st_size),
               st.st_mtim.tv_sec,
               st.st_mtim.tv_nsec,
               st.st_ctim.tv_sec,
               st.st_ctim.tv_nsec,
               chunk};
  }

  explicit StatKeyedCache(std::size_t max_entries) : max_(max_entries) {}
  StatKeyedCache(const StatKeyedCache&) = delete;
  StatKeyedCache& operator=(const StatKeyedCache&) = delete;

  std::optional<Value> find(const Key& k) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(k);
    if (it == entries_.end()) return std::nullopt;
    order_.splice(order_.end(), order_, it->second.second);  // most recently used now
    return it->second.first;
  }
  // Remembers `v` for `k` (the file as it was when reading began, at wall-clock `started`) if
  // `after`, the file as it is now, is the same and was old enough then (above). The oldest
  // entry makes room. Returns whether it was kept.
  bool remember(const Key& k, const struct stat& after, const timespec& started, const Value& v) {
    if (max_ == 0 || key_of(after, std::get<7>(k)) != k) return false;
    // A second older than the start of reading, or a write in the same timestamp tick as our
    // look could have gone unseen.
    if (after.st_ctim.tv_sec + 1 >= started.tv_sec) return false;
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(k); it != entries_.end()) {
      it->second.first = v;
      order_.splice(order_.end(), order_, it->second.second);
      return true;
    }
    if (entries_.size() >= max_) {
      entries_.erase(order_.front());
      order_.pop_front();
    }
    order_.push_back(k);
    entries_.emplace(k, std::make_pair(v, std::prev(order_.end())));
    return true;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return entries_.size();
  }

 protected:
  const std::size_t max_;
  mutable std::mutex mu_;

 private:
  std::list<Key> order_;  // least recently used first
  std::map<Key, std::pair<Value, typename std::list<Key>::iterator>> entries_;
};

// DigestCache: the file digests skip=xxh3 checks found, and how often each version of a file
// was read for them (above).
class DigestCache : public StatKeyedCache<Digest128> {
 public:
  static constexpr std::size_t kDefaultEntries = 16'384;  // about 2 MiB

  explicit DigestCache(std::size_t max_entries = kDefaultEntries) : StatKeyedCache(max_entries) {}

  // For a check find() could not answer: whether this version of the file may be read and
  // hashed once more, counting the reading if so (above). Thread-safe.
  static constexpr unsigned kReadsPerVersion = 2;
  static constexpr std::uint64_t kReadsCountedFromBytes = 1 << 20;
  bool may_read(const struct stat& st);

 private:
  using Version = std::tuple<dev_t, ino_t, std::uint64_t, std::int64_t, long>;

  // Readings per version, at most max_ versions, the least recently read first out. Pushing
  // one out takes max_ other files of at least kReadsCountedFromBytes read.
  std::list<Version> read_order_;
  std::map<Version, std::pair<unsigned, std::list<Version>::iterator>> reads_;
};

// How far a read-back of a kept partial got with every claim found good: the digest of the
// journal's claims (claims_digest in fs/partial.h) and how many of them, in order, were read
// and matched. Keyed by the partial as it was (ReceiverContext::read_backs).
struct ReadBackProgress {
  Digest128 claims;
  std::size_t verified = 0;
};
using ReadBackMemory = StatKeyedCache<ReadBackProgress>;

}  // namespace ackxfer
