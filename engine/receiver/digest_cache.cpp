// DigestCache: how often each version of a file was read for skip=xxh3 checks (see the header;
// the digests themselves are StatKeyedCache's, in the header).
#include "receiver/digest_cache.h"

namespace ackxfer {

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

}  // namespace ackxfer
