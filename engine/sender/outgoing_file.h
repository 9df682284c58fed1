// One file on the sender between SEND and its verdict. The control client creates it; data
// streams on any sender thread read its chunks. Fields below `// scheduler` are guarded by
// the ChunkScheduler's mutex.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "digest/digest.h"
#include "protocol/control_codec.h"
#include "protocol/token.h"
#include "unique_fd.h"

namespace ackxfer {

struct OutgoingFile {
  // Set before the chunks are queued; constant while streams use them.
  std::uint64_t id = 0;
  std::string wire_path;
  std::string source_path;
  UniqueFd fd;
  std::uint64_t size = 0;
  std::uint32_t mode = 0;
  Mtime mtime;
  std::uint64_t chunk_bytes = 0;
  std::uint32_t chunk_count = 0;
  Token token;
  int attempt = 1;  // 1 + whole-file re-sends so far

  // scheduler
  std::vector<Digest128> chunk_digests;
  std::vector<std::uint8_t> chunk_attempts;
  std::uint32_t chunks_acked = 0;
  bool failed = false;

  std::uint64_t chunk_offset(std::uint32_t i) const { return std::uint64_t{i} * chunk_bytes; }
  std::uint64_t chunk_length(std::uint32_t i) const {
    std::uint64_t off = chunk_offset(i);
    return size - off < chunk_bytes ? size - off : chunk_bytes;
  }
};

// The chunk size for a file: the default, grown for huge files so that the chunk count stays
// within kMaxChunksPerFile.
std::uint64_t choose_chunk_bytes(std::uint64_t file_size, std::uint64_t preferred);

}  // namespace ackxfer
