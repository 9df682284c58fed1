// ChunkPlan: chunk counts, ranges and the frame range rule.
#include "protocol/chunk_plan.h"

#include <algorithm>

#include "protocol/limits.h"

namespace ackxfer {

std::uint64_t ChunkPlan::choose_chunk_bytes(std::uint64_t file_size, std::uint64_t preferred) {
  std::uint64_t chunk = std::clamp(preferred, kMinChunkBytes, kMaxChunkBytes);
  while (!within_limits(file_size, chunk) && chunk < kMaxChunkBytes)
    chunk = std::min(chunk * 2, kMaxChunkBytes);
  return chunk;
}

bool ChunkPlan::within_limits(std::uint64_t size, std::uint64_t chunk) {
  // 64-bit: count() is 32-bit, valid only for plans within these limits.
  return chunk >= kMinChunkBytes && chunk <= kMaxChunkBytes && size <= kMaxFileBytes &&
         (size + chunk - 1) / chunk <= kMaxChunksPerFile;
}

std::optional<std::uint32_t> ChunkPlan::chunk_at(std::uint64_t offset, std::uint64_t length) const {
  // A frame carries exactly one whole chunk: aligned start, full length except at the end.
  if (chunk_ == 0 || offset % chunk_ != 0 || offset >= size_) return std::nullopt;
  auto index = static_cast<std::uint32_t>(offset / chunk_);
  if (length != this->length(index)) return std::nullopt;
  return index;
}

}  // namespace ackxfer
