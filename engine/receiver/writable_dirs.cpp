// WritableDirs: who holds which read-only directory open for writing, and its mode to set back.
#include "receiver/writable_dirs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/destination.h"
#include "fs/relative_path.h"

namespace ackxfer {
namespace {

constexpr std::uint32_t kUserWx = S_IWUSR | S_IXUSR;

DirKey key_of(const struct stat& st) {
  return DirKey{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

}  // namespace

WritableDirs::WritableDirs(std::function<bool(std::size_t)> take_budget,
                           std::function<void(std::size_t)> give_back)
    : take_budget_(std::move(take_budget)), give_back_(std::move(give_back)) {}

std::optional<WritableDirs::Hold> WritableDirs::hold(int dir, std::string_view path) {
  struct stat st {};
  if (fstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
  const DirKey key = key_of(st);
  std::lock_guard lock(mu_);
  if (auto it = held_.find(key); it != held_.end()) {
    ++it->second.holders;
    return Hold{key, true};
  }
  if (st.st_uid != geteuid() || (st.st_mode & kUserWx) == kUserWx) return std::nullopt;
  const std::uint32_t mode = st.st_mode & 07777;
  if (fchmod(dir, mode | kUserWx) != 0) return std::nullopt;
  const std::size_t cost = cost_of(path);
  if (!take_budget_(cost)) return Hold{key, false};
  held_.emplace(key, Held{1, mode, mode | kUserWx, std::string(path), cost});
  return Hold{key, true};
}

void WritableDirs::forget(std::unordered_map<DirKey, Held, KeyHash>::iterator it) {
  give_back_(it->second.cost);
  held_.erase(it);
}

bool WritableDirs::release_at_bye(const DirKey& key, std::uint32_t mode) {
  std::lock_guard lock(mu_);
  auto it = held_.find(key);
  if (it == held_.end()) return true;
  if (--it->second.holders > 0) {
    it->second.mode_after = mode & 0777;
    return false;
  }
  forget(it);
  return true;
}

void WritableDirs::release_lost(const DirKey& key, const Destination& dest) {
  Held h;
  {
    std::lock_guard lock(mu_);
    auto it = held_.find(key);
    if (it == held_.end() || --it->second.holders > 0) return;
    h = std::move(it->second);
    forget(it);
  }
  // Found again by its path, beneath --dir, and set back only if it is still the directory held
  // and nobody changed its mode meanwhile. Renamed or replaced: it stays as it is.
  auto valid = validate_relative_path(h.path);
  if (!std::holds_alternative<RelativePath>(valid)) return;
  UniqueFd fd = dest.open_directory(std::get<RelativePath>(valid));
  struct stat st {};
  if (!fd || fstat(fd.get(), &st) != 0 || !(key_of(st) == key) ||
      (st.st_mode & 07777) != h.mode_given)
    return;
  fchmod(fd.get(), h.mode_after);
}

std::size_t WritableDirs::size() const {
  std::lock_guard lock(mu_);
  return held_.size();
}

}  // namespace ackxfer
