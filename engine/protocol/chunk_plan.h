// How a file of `size` bytes is cut into chunks of `chunk` bytes (the last may be shorter): the
// one owner of that arithmetic on both sides. Pure; tested in tests/unit/chunk_plan_test.cpp.
#pragma once

#include <cstdint>
#include <optional>

namespace ackxfer {

class ChunkPlan {
 public:
  ChunkPlan() = default;
  // `chunk` must be non-zero (the codec refuses chunk sizes below kMinChunkBytes).
  ChunkPlan(std::uint64_t size, std::uint64_t chunk) : size_(size), chunk_(chunk) {}

  // The chunk size for a file: `preferred` clamped to the protocol's range, grown for huge
  // files so that the chunk count stays within kMaxChunksPerFile.
  static std::uint64_t choose_chunk_bytes(std::uint64_t file_size, std::uint64_t preferred);
  // Whether a SEND's size and chunk make a plan within the protocol's limits.
  static bool within_limits(std::uint64_t size, std::uint64_t chunk);

  std::uint64_t size() const { return size_; }
  std::uint64_t chunk_bytes() const { return chunk_; }
  std::uint32_t count() const {
    return chunk_ ? static_cast<std::uint32_t>((size_ + chunk_ - 1) / chunk_) : 0;
  }
  std::uint64_t offset(std::uint32_t i) const { return std::uint64_t{i} * chunk_; }
  std::uint64_t length(std::uint32_t i) const {
    std::uint64_t off = offset(i);
    return off >= size_ ? 0 : (size_ - off < chunk_ ? size_ - off : chunk_);
  }
  // The index of the chunk a frame (offset, length) carries, or nullopt if it is not exactly
  // one whole chunk of this file.
  std::optional<std::uint32_t> chunk_at(std::uint64_t offset, std::uint64_t length) const;
  // Whether chunk i lies wholly within the first `bytes` bytes of the file.
  bool within(std::uint32_t i, std::uint64_t bytes) const { return offset(i) + length(i) <= bytes; }

  friend bool operator==(const ChunkPlan&, const ChunkPlan&) = default;

 private:
  std::uint64_t size_ = 0;
  std::uint64_t chunk_ = 0;
};

}  // namespace ackxfer
