// A read-only mapping of part of a file, and hashing from it that survives the file shrinking
// underneath (SIGBUS is caught and reported as a short file, not a crash).
//
// The sender hashes source pages in place through it: its mmap and splice paths never copy
// file bytes into a user buffer (docs/PERFORMANCE.md, "Sender").
#pragma once

#include <cstddef>
#include <cstdint>

#include "digest/digest.h"

namespace ackxfer {

class MappedRange {
 public:
  MappedRange() = default;
  ~MappedRange() { unmap(); }
  MappedRange(const MappedRange&) = delete;
  MappedRange& operator=(const MappedRange&) = delete;

  // Maps [offset, offset + length) of fd, prefaulted. Returns errno or 0.
  int map(int fd, std::uint64_t offset, std::uint64_t length);
  void unmap();
  bool mapped() const { return base_ != nullptr; }
  std::uint64_t offset() const { return offset_; }
  std::uint64_t length() const { return length_; }
  // Pointer to file offset `offset() + pos`.
  const std::uint8_t* at(std::uint64_t pos) const { return data_ + pos; }

  // Hashes [pos, pos + len) into `digest`. False if the file no longer has those bytes.
  bool hash(StreamingDigest& digest, std::uint64_t pos, std::size_t len) const;

 private:
  void* base_ = nullptr;  // page-aligned mapping start
  std::size_t map_len_ = 0;
  const std::uint8_t* data_ = nullptr;  // file offset `offset_`
  std::uint64_t offset_ = 0, length_ = 0;
};

}  // namespace ackxfer
