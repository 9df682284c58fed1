// Chunk bookkeeping and the verify-then-publish step.
#include "receiver/incoming_file.h"

#include <algorithm>

namespace ackxfer {

IncomingFile::IncomingFile(const SendRequest& req, Token token, TempFile temp,
                           std::shared_ptr<SessionTotals> totals,
                           const std::vector<JournalEntry>& have, bool resumable)
    : id_(req.id),
      path_(req.path),
      size_(req.size),
      chunk_bytes_(req.chunk),
      mode_(req.mode),
      mtime_(req.mtime),
      token_(token),
      fd_(temp.fd()),
      chunk_count_(static_cast<std::uint32_t>((req.size + req.chunk - 1) / req.chunk)),
      totals_(std::move(totals)),
      resumable_(resumable),
      temp_(std::move(temp)) {
  std::size_t chunks = chunk_count_;
  state_.assign(chunks, ChunkState::kMissing);
  digests_.resize(chunks);
  reserved_.assign(chunks, false);
  // The first chunk was allocated by create_temp, or (a small file) needs no allocation ahead.
  if (chunks) reserved_[0] = true;
  if (resumable_) journal_.assign(chunks, JournalState::kNone);
  for (const JournalEntry& e : have) {
    if (e.index >= chunks) continue;
    state_[e.index] = ChunkState::kVerified;
    digests_[e.index] = e.digest;
    reserved_[e.index] = true;
    if (resumable_) journal_[e.index] = JournalState::kJournaled;
    resumed_bytes_ += std::min(chunk_bytes_, size_ - std::uint64_t{e.index} * chunk_bytes_);
  }
}

std::vector<JournalEntry> IncomingFile::take_unjournaled() {
  std::vector<JournalEntry> out;
  std::lock_guard lock(mu_);
  if (closed_ || journal_.empty()) return out;
  for (std::uint32_t i = 0; i < chunk_count_; ++i)
    if (state_[i] == ChunkState::kVerified && journal_[i] == JournalState::kNone) {
      journal_[i] = JournalState::kPending;
      out.push_back(JournalEntry{i, digests_[i]});
    }
  return out;
}

void IncomingFile::journal_written(const std::vector<JournalEntry>& entries, bool durable) {
  std::lock_guard lock(mu_);
  if (journal_.empty()) return;
  std::string lines;
  std::vector<std::uint32_t> written;
  for (const JournalEntry& e : entries) {
    // A chunk claimed again since it was taken is no longer what the fdatasync covered.
    if (e.index >= journal_.size() || journal_[e.index] != JournalState::kPending) continue;
    journal_[e.index] = JournalState::kNone;
    if (!durable || closed_) continue;
    lines += journal_line(e);
    written.push_back(e.index);
  }
  if (lines.empty() || temp_.append_journal(lines) != 0) return;
  for (std::uint32_t i : written)
    journal_[i] = JournalState::kJournaled;
}

int IncomingFile::reserve_chunk(std::uint32_t index) {
  {
    std::lock_guard lock(mu_);
    if (index >= reserved_.size() || reserved_[index] || closed_) return 0;
  }
  // The caller holds the claim on this chunk, so nobody else reserves it meanwhile; the
  // fallocate runs without the lock.
  if (fd_ < 0) return 0;
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
  // A verified chunk may come again (its ack was lost with a connection): take it again. Its
  // bytes are about to be overwritten, so the journal must stop vouching for them first.
  if (!journal_.empty() && journal_[index] != JournalState::kNone) {
    if (journal_[index] == JournalState::kJournaled &&
        temp_.append_journal(journal_forget_line(index)) != 0) {
      // The journal cannot take it back: drop the journal (this file will not be resumable).
      temp_.drop_journal();
      journal_.clear();
    } else {
      journal_[index] = JournalState::kNone;
    }
  }
  state_[index] = ChunkState::kReceiving;
  return AckStatus::kOk;
}

void IncomingFile::finish_chunk(std::uint32_t index, bool verified, const Digest128& digest) {
  std::lock_guard lock(mu_);
  if (index >= state_.size()) return;
  state_[index] = verified ? ChunkState::kVerified : ChunkState::kMissing;
  if (verified) digests_[index] = digest;
}

bool IncomingFile::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

IncomingFile::Outcome IncomingFile::verify_single(const Digest128& digest) {
  Outcome out{Verdict::kPublished, {}};
  {
    std::lock_guard lock(mu_);
    if (closed_ || chunk_count_ != 1) return {Verdict::kAlreadyClosed, {}};
    closed_ = true;
    state_[0] = ChunkState::kVerified;
    digests_[0] = digest;
    if (fd_ >= 0) {
      auto r = temp_.publish(mode_, mtime_);
      if (auto* e = std::get_if<FsError>(&r)) out = {Verdict::kFailed, *e};
    }
  }
  return counted(out);
}

IncomingFile::Outcome IncomingFile::finish(const Digest128& digest) {
  Outcome out = finish_locked(digest);
  return out.verdict == Verdict::kAlreadyClosed ? out : counted(out);
}

IncomingFile::Outcome IncomingFile::counted(const Outcome& out) {
  if (out.verdict == Verdict::kPublished) {
    totals_->files.fetch_add(1, std::memory_order_relaxed);
    totals_->bytes.fetch_add(size_, std::memory_order_relaxed);
  } else {
    totals_->failed.fetch_add(1, std::memory_order_relaxed);
  }
  return out;
}

IncomingFile::Outcome IncomingFile::finish_locked(const Digest128& digest) {
  std::lock_guard lock(mu_);
  if (closed_) return {Verdict::kAlreadyClosed, {}};
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
  if (fd_ < 0) return {Verdict::kPublished, {}};  // discarding: verified is all there is
  auto r = temp_.publish(mode_, mtime_);
  if (auto* e = std::get_if<FsError>(&r)) return {Verdict::kFailed, *e};
  return {Verdict::kPublished, {}};
}

bool IncomingFile::begin_write() {
  std::lock_guard lock(mu_);
  if (closed_) return false;
  ++writers_;
  return true;
}

void IncomingFile::end_write() {
  std::lock_guard lock(mu_);
  if (--writers_ == 0 && unlock_when_idle_) {
    unlock_when_idle_ = false;
    temp_.unlock();
  }
}

bool IncomingFile::abandon(bool keep) {
  std::lock_guard lock(mu_);
  closed_ = true;
  bool journaled =
      std::find(journal_.begin(), journal_.end(), JournalState::kJournaled) != journal_.end();
  if (keep && resumable_ && journaled) {
    temp_.keep();
    // A later attempt may take the partial over as soon as nothing writes to it any more
    // (until then it finds it locked and uses a fresh temp file).
    if (writers_ == 0)
      temp_.unlock();
    else
      unlock_when_idle_ = true;
    return true;
  }
  temp_.discard();
  return false;
}

}  // namespace ackxfer
