// FileRegistry: a mutex-guarded hash map; touched once per frame, not per byte.
#include "receiver/file_registry.h"

namespace ackxfer {

void FileRegistry::add(const std::shared_ptr<IncomingFile>& file) {
  std::lock_guard lock(mu_);
  files_.emplace(file->token(), file);
}

void FileRegistry::remove(const Token& token) {
  std::shared_ptr<IncomingFile> last;  // destroyed outside the lock: it may close an fd
  std::lock_guard lock(mu_);
  auto it = files_.find(token);
  if (it == files_.end()) return;
  last = std::move(it->second);
  files_.erase(it);
}

std::shared_ptr<IncomingFile> FileRegistry::find(const Token& token) const {
  std::lock_guard lock(mu_);
  auto it = files_.find(token);
  return it == files_.end() ? nullptr : it->second;
}

std::size_t FileRegistry::size() const {
  std::lock_guard lock(mu_);
  return files_.size();
}

}  // namespace ackxfer
