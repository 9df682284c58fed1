// Chunk bookkeeping and the verify-then-publish step.
#include "receiver/incoming_file.h"

namespace ackxfer {

IncomingFile::IncomingFile(const SendRequest& req, Token token, TempFile temp)
    : id_(req.id),
      path_(req.path),
      size_(req.size),
      chunk_bytes_(req.chunk),
      mode_(req.mode),
      mtime_(req.mtime),
      token_(token),
      fd_(temp.fd()),
      temp_(std::move(temp)) {
  std::size_t chunks = static_cast<std::size_t>((size_ + chunk_bytes_ - 1) / chunk_bytes_);
  state_.assign(chunks, ChunkState::kMissing);
  digests_.resize(chunks);
  reserved_.assign(chunks, false);
  if (chunks) reserved_[0] = true;  // by create_temp
}

int IncomingFile::reserve_chunk(std::uint32_t index) {
  {
    std::lock_guard lock(mu_);
    if (index >= reserved_.size() || reserved_[index] || closed_) return 0;
  }
  // The caller holds the claim on this chunk, so nobody else reserves it meanwhile; the
  // fallocate runs without the lock.
  std::uint64_t off = std::uint64_t{index} * chunk_bytes_;
  int e = reserve_range(fd_, off, std::min(chunk_bytes_, size_ - off));
  if (e == 0) {
    std::lock_guard lock(mu_);
    reserved_[index] = true;
  }
  return e;
}

AckStatus IncomingFile::claim(std::uint64_t offset, std::uint64_t length, std::uint32_t& index) {
  std::lock_guard lock(mu_);
  if (closed_) return AckStatus::kUnknownToken;
  // A frame carries exactly one whole chunk: aligned start, full length except at the end.
  if (offset % chunk_bytes_ != 0 || offset >= size_) return AckStatus::kBadRange;
  std::uint64_t expect = std::min(chunk_bytes_, size_ - offset);
  if (length != expect) return AckStatus::kBadRange;
  index = static_cast<std::uint32_t>(offset / chunk_bytes_);
  if (state_[index] == ChunkState::kReceiving) return AckStatus::kBusy;
  // A verified chunk may come again (its ack was lost with a connection): take it again.
  state_[index] = ChunkState::kReceiving;
  return AckStatus::kOk;
}

void IncomingFile::finish_chunk(std::uint32_t index, bool verified, const Digest128& digest) {
  std::lock_guard lock(mu_);
  if (index >= state_.size()) return;
  state_[index] = verified ? ChunkState::kVerified : ChunkState::kMissing;
  if (verified) digests_[index] = digest;
}

IncomingFile::Outcome IncomingFile::finish(const Digest128& digest) {
  std::lock_guard lock(mu_);
  if (closed_) return {Verdict::kFailed, FsError{ENOENT, "file already closed"}};
  closed_ = true;
  for (ChunkState s : state_)
    if (s != ChunkState::kVerified) {
      temp_.discard();
      return {Verdict::kIncomplete, {}};
    }
  if (file_digest_from_chunks(digests_) != digest) {
    temp_.discard();
    return {Verdict::kMismatch, {}};
  }
  auto r = temp_.publish(mode_, mtime_);
  if (auto* e = std::get_if<FsError>(&r)) return {Verdict::kFailed, *e};
  return {Verdict::kPublished, {}};
}

void IncomingFile::abandon() {
  std::lock_guard lock(mu_);
  closed_ = true;
  temp_.discard();
}

}  // namespace ackxfer
