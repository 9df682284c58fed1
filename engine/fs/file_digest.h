// Digests of bytes already on disk: the chunks a resumed transfer does not send again, and the
// whole-file comparison of `send --checksum` / `skip=xxh3`. The steppers read a bounded amount
// per call, so long work can be spread over turns of a loop or slices of a work queue, shared
// fairly and cancelled between steps.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "digest/digest.h"
#include "protocol/chunk_plan.h"

namespace ackxfer {

// XXH3-128 of [offset, offset + length) of `fd`, a step at a time.
class RangeHasher {
 public:
  RangeHasher(int fd, std::uint64_t offset, std::uint64_t length);
  // Reads and hashes up to `budget` more bytes. False on a read error, or when the file ends
  // early (errno ENODATA); true otherwise.
  bool step(std::uint64_t budget);
  bool done() const { return done_ == length_; }
  std::uint64_t hashed() const { return done_; }
  Digest128 finish() { return digest_.finish(); }
  // Read buffers (1 MiB each) that exist, in all threads: one per thread that has stepped a
  // hasher. A hasher keeps only its digest state between steps, so hashers waiting for their
  // next step (a session may start 64) hold none. For tests.
  static std::size_t read_buffers();

 private:
  int fd_;
  std::uint64_t offset_, length_, done_ = 0;
  StreamingDigest digest_;
};

// The file digest (docs/PROTOCOL.md, "Digests") of `fd` under `plan`, a step at a time.
class FileHasher {
 public:
  FileHasher(int fd, const ChunkPlan& plan);
  bool step(std::uint64_t budget);  // as RangeHasher::step
  bool done() const { return next_ == plan_.count() && !chunk_; }
  std::uint64_t hashed() const { return hashed_; }
  Digest128 digest() { return file_.finish(); }

 private:
  int fd_;
  ChunkPlan plan_;
  std::uint32_t next_ = 0;
  std::uint64_t hashed_ = 0;
  std::optional<RangeHasher> chunk_;
  FileDigestBuilder file_;
};

// Blocking forms. nullopt (errno set) on a read error or a short file; `cancel`, if given, is
// checked between steps (errno ECANCELED).
std::optional<Digest128> chunk_digest_of(int fd, std::uint64_t offset, std::uint64_t length);
std::optional<Digest128> file_digest_of(int fd, std::uint64_t size, std::uint64_t chunk,
                                        const std::atomic<bool>* cancel = nullptr);

}  // namespace ackxfer
