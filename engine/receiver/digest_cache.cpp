// DigestCache: a small LRU of file digests (see the header for when one may be trusted).
#include "receiver/digest_cache.h"

namespace ackxfer {

DigestCache::Key DigestCache::key_of(const struct stat& st, std::uint64_t chunk) {
  return Key{st.st_dev,
             st.st_ino,
             static_cast<std::uint64_t>(st.st_size),
             st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec,
             st.st_ctim.tv_sec,
             st.st_ctim.tv_nsec,
             chunk};
}

std::optional<Digest128> DigestCache::find(const Key& k) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(k);
  if (it == entries_.end()) return std::nullopt;
  order_.splice(order_.end(), order_, it->second.second);  // most recently used now
  return it->second.first;
}

bool DigestCache::remember(const Key& k, const struct stat& after, const timespec& started,
                           const Digest128& d) {
  if (max_ == 0 || key_of(after, std::get<7>(k)) != k) return false;
  // A second older than the start of hashing, or a write in the same timestamp tick as our
  // look could have gone unseen.
  if (after.st_ctim.tv_sec + 1 >= started.tv_sec) return false;
  std::lock_guard lock(mu_);
  if (auto it = entries_.find(k); it != entries_.end()) {
    it->second.first = d;
    return true;
  }
  if (entries_.size() >= max_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(k);
  entries_.emplace(k, std::make_pair(d, std::prev(order_.end())));
  return true;
}

bool DigestCache::may_read(const struct stat& st) {
  if (max_ == 0 || static_cast<std::uint64_t>(st.st_size) < kReadsCountedFromBytes) return true;
  const Version v{st.st_dev, st.st_ino, static_cast<std::uint64_t>(st.st_size), st.st_mtim.tv_sec,
                  st.st_mtim.tv_nsec};
  std::lock_guard lock(mu_);
  if (auto it = reads_.find(v); it != reads_.end()) {
    read_order_.splice(read_order_.end(), read_order_, it->second.second);
    if (it->second.first >= kReadsPerVersion) return false;
    ++it->second.first;
    return true;
  }
  if (reads_.size() >= max_) {
    reads_.erase(read_order_.front());
    read_order_.pop_front();
  }
  read_order_.push_back(v);
  reads_.emplace(v, std::make_pair(1u, std::prev(read_order_.end())));
  return true;
}

std::size_t DigestCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace ackxfer
