// DirectoryMetadata: one entry per path, a byte budget, deepest-first order.
#include "receiver/directory_metadata.h"

#include <algorithm>

namespace ackxfer {

DirectoryMetadata::DirectoryMetadata(std::size_t max_bytes) : max_bytes_(max_bytes) {}

DirectoryMetadata::Added DirectoryMetadata::add(
    const std::string& path, std::uint32_t mode, const Mtime& mtime,
    const std::function<bool(std::size_t)>& take_budget) {
  if (auto it = index_.find(path); it != index_.end()) {
    entries_[it->second].mode = mode;
    entries_[it->second].mtime = mtime;
    return Added::kUpdated;
  }
  const std::size_t cost = DirectoryMetadata::cost(path);
  if (bytes_ + cost > max_bytes_ || (take_budget && !take_budget(cost))) {
    ++dropped_;
    return Added::kOverLimit;
  }
  bytes_ += cost;
  index_.emplace(path, entries_.size());
  entries_.push_back(Entry{path, mode, mtime, std::nullopt});
  return Added::kNew;
}

DirectoryMetadata::Entry* DirectoryMetadata::find(const std::string& path) {
  auto it = index_.find(path);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::vector<DirectoryMetadata::Entry> DirectoryMetadata::take_deepest_first() {
  std::vector<Entry> out = std::move(entries_);
  entries_.clear();
  index_.clear();
  bytes_ = 0;
  // Depth counted once per entry, not per comparison.
  std::vector<std::pair<std::size_t, std::size_t>> order;  // (depth, position)
  order.reserve(out.size());
  for (std::size_t i = 0; i < out.size(); ++i)
    order.emplace_back(std::count(out[i].path.begin(), out[i].path.end(), '/'), i);
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<Entry> sorted;
  sorted.reserve(out.size());
  for (const auto& [depth, i] : order)
    sorted.push_back(std::move(out[i]));
  return sorted;
}

}  // namespace ackxfer
