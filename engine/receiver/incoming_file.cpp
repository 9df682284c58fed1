// Chunk bookkeeping, claims and the verify-then-publish step.
#include "receiver/incoming_file.h"

#include <sys/stat.h>

#include <algorithm>

#include "display.h"
#include "error.h"
#include "protocol/limits.h"

namespace ackxfer {

OpenFileSlot OpenFileSlot::take(std::atomic<std::size_t>& count, std::size_t limit) {
  std::size_t n = count.load(std::memory_order_relaxed);
  while (n < limit)
    if (count.compare_exchange_weak(n, n + 1, std::memory_order_relaxed))
      return OpenFileSlot(&count);
  return {};
}

IncomingFile::Chunk* IncomingFile::ChunkTable::find(std::uint32_t i) {
  if (i == 0) return first_ ? &*first_ : nullptr;
  auto it = rest_.find(i);
  return it == rest_.end() ? nullptr : &it->second;
}

std::pair<IncomingFile::Chunk*, bool> IncomingFile::ChunkTable::emplace(std::uint32_t i) {
  if (i == 0) {
    bool fresh = !first_;
    if (fresh) first_.emplace();
    return {&*first_, fresh};
  }
  auto [it, fresh] = rest_.try_emplace(i);
  return {&it->second, fresh};
}

void IncomingFile::ChunkTable::erase(std::uint32_t i) {
  if (i == 0)
    first_.reset();
  else
    rest_.erase(i);
}

IncomingFile::IncomingFile(const SendRequest& req, Token token, TempFile temp,
                           std::shared_ptr<SessionTotals> totals, OpenFileSlot slot,
                           const std::vector<JournalEntry>& have, bool resumable)
    : id_(req.id),
      path_(req.path),
      plan_(req.size, req.chunk),
      mode_(req.mode),
      mtime_(req.mtime),
      token_(token),
      fd_(temp.fd()),
      totals_(std::move(totals)),
      resumable_(resumable),
      reopened_(!have.empty()),
      temp_(std::move(temp)),
      slot_(std::move(slot)) {
  for (const JournalEntry& e : have) {
    if (e.index >= plan_.count()) continue;
    Chunk& c = *chunks_.emplace(e.index).first;
    c.state = ChunkState::kVerified;
    c.digest = e.digest;
    c.reserved = true;
    c.journal = JournalState::kJournaled;
    c.kept = true;
    resumed_bytes_ += plan_.length(e.index);
  }
}

IncomingFile::~IncomingFile() = default;

IncomingFile::State IncomingFile::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::size_t IncomingFile::chunk_entries() const {
  std::lock_guard lock(mu_);
  return chunks_.size();
}

std::shared_ptr<const UniqueFd> IncomingFile::directory() const {
  std::lock_guard lock(mu_);
  return temp_.directory();
}

IncomingFile::Chunk* IncomingFile::held(const Claim& c) {
  Chunk* ch = chunks_.find(c.index);
  if (!ch || ch->generation != c.generation || ch->state != ChunkState::kReceiving) return nullptr;
  return ch;
}

std::vector<JournalEntry> IncomingFile::take_unjournaled() {
  std::vector<JournalEntry> out;
  std::lock_guard lock(mu_);
  // After a failed flush, a later one may pass with the data lost: nothing more is vouched for.
  if (state_ != State::kReceiving || !resumable_ || !temp_.has_journal() || flush_error_)
    return out;
  chunks_.for_each([&](std::uint32_t i, Chunk& c) {
    if (c.state == ChunkState::kVerified && c.journal == JournalState::kNone) {
      c.journal = JournalState::kPending;
      out.push_back(JournalEntry{i, c.digest});
    }
  });
  return out;
}

void IncomingFile::journal_written(const std::vector<JournalEntry>& entries, bool durable) {
  std::lock_guard lock(mu_);
  if (!resumable_) return;
  std::string lines;
  std::vector<std::uint32_t> written;
  for (const JournalEntry& e : entries) {
    // A chunk claimed again since it was taken is no longer what the fdatasync covered.
    Chunk* ch = chunks_.find(e.index);
    if (!ch || ch->journal != JournalState::kPending) continue;
    ch->journal = JournalState::kNone;
    if (!durable || flush_error_ || state_ != State::kReceiving) continue;
    lines += journal_line(e);
    written.push_back(e.index);
  }
  if (lines.empty() || temp_.append_journal(lines) != 0) return;
  for (std::uint32_t i : written)
    if (Chunk* ch = chunks_.find(i)) ch->journal = JournalState::kJournaled;
}

IncomingFile::Claim IncomingFile::claim(std::uint64_t offset, std::uint64_t length,
                                        std::uint64_t owner, std::int64_t now_ms) {
  Claim out;
  std::lock_guard lock(mu_);
  if (state_ != State::kReceiving) {
    out.status = AckStatus::kUnknownToken;
    return out;
  }
  auto index = plan_.chunk_at(offset, length);
  if (!index) {
    out.status = AckStatus::kBadRange;
    return out;
  }
  out.index = *index;
  auto [entry, fresh] = chunks_.emplace(*index);
  Chunk& c = *entry;
  if (!fresh && c.state == ChunkState::kReceiving) {
    // Another connection holds it. If that one has gone quiet (the sender gave up on it and
    // sent the chunk again here), it is dead: take the claim over. Its later writes are
    // refused by generation.
    if (c.writing || now_ms - c.touched_ms < kStaleClaimMs) {
      out.status = AckStatus::kBusy;
      return out;
    }
    out.taken_over = true;
  }
  // A verified chunk may come again (its ack was lost with a connection): take it again. Its
  // bytes are about to be overwritten, so the journal must stop vouching for them first.
  if (c.journal == JournalState::kJournaled && temp_.has_journal() &&
      temp_.append_journal(journal_forget_line(*index)) != 0) {
    // The journal cannot take it back: drop the journal (this file will not be resumable).
    temp_.drop_journal();
  }
  c.journal = JournalState::kNone;
  c.state = ChunkState::kReceiving;
  c.kept = false;
  c.owner = owner;
  c.generation = next_generation_++;
  c.touched_ms = now_ms;
  c.writing = false;
  if (*index == 0 && !reopened_) c.reserved = true;
  out.generation = c.generation;
  return out;
}

void IncomingFile::touch(const Claim& c, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  if (Chunk* ch = held(c)) ch->touched_ms = now_ms;
}

int IncomingFile::reserve_chunk(const Claim& c) {
  if (fd_ < 0) return 0;
  {
    std::lock_guard lock(mu_);
    Chunk* ch = held(c);
    if (!ch || ch->reserved || state_ != State::kReceiving) return 0;
    // Counted as a writer: a partial given up meanwhile stays locked until the fallocate is
    // done, so the next transfer of the file cannot truncate it first and have it grown again.
    ++writers_;
    touched_ = true;
  }
  // The caller holds the claim on this chunk, so nobody else reserves it meanwhile; the
  // fallocate runs without the lock.
  int e = reserve_range(fd_, plan_.offset(c.index), plan_.length(c.index));
  std::lock_guard lock(mu_);
  if (Chunk* ch = held(c); ch && e == 0) ch->reserved = true;
  writer_done();
  return e;
}

bool IncomingFile::begin_write(const Claim& c) {
  std::lock_guard lock(mu_);
  Chunk* ch = state_ == State::kReceiving ? held(c) : nullptr;
  if (!ch) return false;
  ch->writing = true;
  ++writers_;
  touched_ = true;
  return true;
}

void IncomingFile::end_write(const Claim& c, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  Chunk* ch = chunks_.find(c.index);
  if (ch && ch->generation == c.generation) {
    ch->writing = false;
    ch->touched_ms = std::max(ch->touched_ms, now_ms);
  }
  writer_done();
}

void IncomingFile::writer_done() {
  if (--writers_ == 0 && unlock_when_idle_) {
    unlock_when_idle_ = false;
    temp_.unlock();
  }
}

void IncomingFile::finish_chunk(const Claim& c, bool verified, const Digest128& digest) {
  std::lock_guard lock(mu_);
  Chunk* ch = held(c);
  if (!ch) return;
  if (!verified) {
    chunks_.erase(c.index);  // missing again: the sender sends it again
    return;
  }
  ch->state = ChunkState::kVerified;
  ch->digest = digest;
}

IncomingFile::Verdict IncomingFile::verify_single(const Claim& c, const Digest128& digest) {
  std::lock_guard lock(mu_);
  if (state_ != State::kReceiving || plan_.count() != 1 || !held(c)) return Verdict::kAlreadyClosed;
  Chunk& ch = *chunks_.find(c.index);
  ch.state = ChunkState::kVerified;
  ch.digest = digest;
  state_ = State::kPublishing;
  return Verdict::kVerified;
}

IncomingFile::Verdict IncomingFile::verify(const Digest128& digest) {
  std::unique_lock lock(mu_);
  if (state_ != State::kReceiving) return Verdict::kAlreadyClosed;
  std::vector<Digest128> digests;
  digests.reserve(plan_.count());
  bool complete = chunks_.size() == plan_.count();
  chunks_.for_each([&](std::uint32_t, Chunk& c) {
    if (c.state != ChunkState::kVerified) complete = false;
    digests.push_back(c.digest);
  });
  Verdict v = Verdict::kVerified;
  if (!complete)
    v = Verdict::kIncomplete;
  else if (file_digest_from_chunks(digests) != digest)
    v = Verdict::kMismatch;
  if (v != Verdict::kVerified) {
    state_ = State::kFailed;
    temp_.discard();
    lock.unlock();
    count_verdict(false);
    return v;
  }
  if (reopened_) {
    state_ = State::kReadingBack;
    return Verdict::kReadBack;
  }
  state_ = State::kPublishing;
  return v;
}

std::vector<JournalEntry> IncomingFile::still_kept(const std::vector<JournalEntry>& claims) {
  std::vector<JournalEntry> out;
  std::lock_guard lock(mu_);
  for (const JournalEntry& e : claims)
    if (Chunk* c = chunks_.find(e.index); c && c->kept) out.push_back(e);
  return out;
}

bool IncomingFile::read_back_done(const std::vector<std::uint32_t>& bad, bool synced) {
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kReadingBack) return false;
    if (bad.empty()) {
      state_ = State::kPublishing;
      return true;
    }
    std::string lines;
    if (synced && resumable_ && !flush_error_)
      chunks_.for_each([&](std::uint32_t i, Chunk& c) {
        if (c.state != ChunkState::kVerified || c.journal == JournalState::kJournaled) return;
        lines += journal_line(JournalEntry{i, c.digest});
        c.journal = JournalState::kJournaled;
      });
    for (std::uint32_t i : bad) {
      lines += journal_forget_line(i);
      chunks_.erase(i);
    }
    // The journal must stop vouching for them before the partial is kept: one that cannot say
    // so goes, and the partial with it.
    if (!temp_.has_journal() || temp_.append_journal(lines) != 0) {
      state_ = State::kFailed;
      temp_.discard();
    } else {
      keep_or_discard(true);
    }
  }
  count_verdict(false);
  return false;
}

void IncomingFile::flush_failed(int err) {
  std::lock_guard lock(mu_);
  if (!flush_error_) flush_error_ = err;
}

std::optional<FsError> IncomingFile::unpublishable() {
  std::optional<FsError> why;
  struct stat st {};
  // Only a partial can be written by more than this file's transfer (one given up before it, on
  // the same name): a temp file of its own, anonymous or randomly named, is checked for nothing
  // (a syscall per small file).
  const bool shared = resumable_ && fd_ >= 0;
  if (flush_error_) {
    why = FsError{flush_error_, "not publishing " + quote_name(path_) +
                                    ": flushing its data to disk failed earlier (" +
                                    errno_text(flush_error_) + "), so it may not be on disk"};
  } else if (shared && fstat(fd_, &st) != 0) {
    const int e = errno;
    why = FsError{e, "not publishing " + quote_name(path_) + ": " + errno_text(e)};
  } else if (shared && static_cast<std::uint64_t>(st.st_size) != plan_.size()) {
    // Its chunks were verified, but something grew (or cut) the file besides them: what is
    // beyond or missing was never checked.
    why = FsError{EIO, "not publishing " + quote_name(path_) + ": its temp file holds " +
                           std::to_string(st.st_size) + " bytes, not the " +
                           std::to_string(plan_.size()) + " declared"};
  }
  if (!why) return std::nullopt;
  state_ = State::kFailed;
  temp_.discard();
  return why;
}

std::variant<std::monostate, FsError> IncomingFile::publish(bool durable) {
  std::variant<std::monostate, FsError> r;
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kPublishing)
      return FsError{ENOENT, "publish " + quote_name(path_) + ": the file was abandoned"};
    if (auto e = unpublishable())
      r = *e;
    else if (fd_ >= 0)
      r = temp_.publish(mode_, mtime_, durable);
    state_ = std::holds_alternative<FsError>(r) ? State::kFailed : State::kPublished;
  }
  count_verdict(std::holds_alternative<std::monostate>(r));
  return r;
}

std::variant<std::monostate, FsError> IncomingFile::prepare_publish() {
  std::variant<std::monostate, FsError> r;
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kPublishing)
      return FsError{ENOENT, "publish " + quote_name(path_) + ": the file was abandoned"};
    if (auto e = unpublishable()) {
      r = *e;
    } else {
      if (fd_ < 0) return r;
      r = temp_.prepare(mode_, mtime_);
      if (std::holds_alternative<std::monostate>(r)) return r;
    }
    state_ = State::kFailed;
  }
  count_verdict(false);
  return r;
}

std::variant<std::monostate, FsError> IncomingFile::place() {
  std::variant<std::monostate, FsError> r;
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kPublishing)
      return FsError{ENOENT, "publish " + quote_name(path_) + ": the file was abandoned"};
    if (fd_ >= 0) r = temp_.place();
    state_ = std::holds_alternative<FsError>(r) ? State::kFailed : State::kPublished;
  }
  count_verdict(std::holds_alternative<std::monostate>(r));
  return r;
}

void IncomingFile::fail_publish() {
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kPublishing) return;
    state_ = State::kFailed;
    temp_.discard();
  }
  count_verdict(false);
}

void IncomingFile::count_verdict(bool published) {
  if (published) {
    totals_->files.fetch_add(1, std::memory_order_relaxed);
    totals_->bytes.fetch_add(plan_.size(), std::memory_order_relaxed);
  } else {
    totals_->failed.fetch_add(1, std::memory_order_relaxed);
  }
}

bool IncomingFile::holds_more_than_journaled() {
  struct stat st {};
  if (fstat(fd_, &st) != 0) return true;
  std::uint64_t journaled = 0;
  chunks_.for_each([&](std::uint32_t i, Chunk& c) {
    if (c.journal == JournalState::kJournaled) journaled += plan_.length(i);
  });
  // Blocks at the chunks' edges and the file system's own (extent trees) are no reservation.
  constexpr std::uint64_t kSlack = 1 << 20;
  return static_cast<std::uint64_t>(st.st_blocks) * 512 > journaled + kSlack;
}

bool IncomingFile::abandon(bool keep) {
  std::lock_guard lock(mu_);
  if (state_ == State::kPublished || state_ == State::kFailed) return false;
  // Publishing (durably, on another thread): let it finish; the verdict is simply not sent.
  if (state_ == State::kPublishing) return false;
  return keep_or_discard(keep);
}

bool IncomingFile::keep_or_discard(bool keep) {
  state_ = State::kAbandoned;
  bool journaled = false;
  chunks_.for_each([&](std::uint32_t, Chunk& c) {
    journaled = journaled || c.journal == JournalState::kJournaled;
  });
  if (keep && resumable_ && journaled && temp_.has_journal()) {
    // Only what the journal vouches for keeps its space: chunks reserved ahead (the first at
    // SEND, each later one at its frame's header) and chunks written but not journaled are
    // given back. A peer could otherwise leave partials holding whole chunks of disk (up to
    // 64 GiB each) for a few bytes sent, until the receiver next starts. A write still in
    // flight may allocate its own range again: at most a chunk per data connection. A resumed
    // partial that this transfer neither wrote to nor reserved space in (a kept partial has
    // journaled chunks, so a fresh one was written to) is left untouched: a punch would move
    // its ctime, and the next attempt would have to read it all back again
    // (ReceiverContext::read_backs). Unless it holds more than its journaled chunks (a
    // receiver killed before it could give an attempt's reservations back): then once.
    if (fd_ >= 0 && (touched_ || holds_more_than_journaled())) {
      std::uint64_t from = 0;
      chunks_.for_each([&](std::uint32_t i, Chunk& c) {  // in index order
        if (c.journal != JournalState::kJournaled) return;
        release_range(fd_, from, plan_.offset(i) - from);
        from = plan_.offset(i) + plan_.length(i);
      });
      release_range(fd_, from, plan_.size() - from);
    }
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
