// XXH3-128 digests: a streaming wrapper for hashing bytes as they move, and the file digest
// defined over per-chunk digests (docs/PROTOCOL.md, "Digests").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ackxfer {

// An XXH3-128 value in canonical (big-endian) byte order, the order it has on the wire.
struct Digest128 {
  std::array<std::uint8_t, 16> bytes{};

  std::string hex() const;
  static std::optional<Digest128> from_hex(std::string_view hex);
  friend bool operator==(const Digest128&, const Digest128&) = default;
};

// Streaming XXH3-128. The implementation (SSE2, AVX2 or AVX-512) is chosen once at start-up
// from what the CPU supports: Debian's libxxhash is built for SSE2 only, which is 2.5x slower.
class StreamingDigest {
 public:
  StreamingDigest();
  void reset();
  void update(const void* data, std::size_t len);
  Digest128 finish() const;

 private:
  // Opaque XXH3_state_t; its size is checked in digest.cpp.
  alignas(64) unsigned char state_[576];
};

// One-shot XXH3-128 of a buffer.
Digest128 digest_of(const void* data, std::size_t len);

// Which XXH3 kernel runs here ("avx512", "avx2" or "sse2"), for reports.
const char* digest_kernel_name();

// The file digest: XXH3-128 over the concatenated canonical digests of the file's chunks, in
// offset order. A file of size 0 has no chunks; its digest is XXH3-128 of empty input.
class FileDigestBuilder {
 public:
  void add_chunk(const Digest128& chunk) { stream_.update(chunk.bytes.data(), chunk.bytes.size()); }
  Digest128 finish() const { return stream_.finish(); }

 private:
  StreamingDigest stream_;
};

Digest128 file_digest_from_chunks(std::span<const Digest128> chunks);

}  // namespace ackxfer
