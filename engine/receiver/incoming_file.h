// One file between READY and its verdict: the temp file, and the state of each chunk that has
// started to arrive. Shared by the control session that opened it and the data streams (on any
// worker) that fill it; every method is thread-safe.
//
// Memory grows with what the peer has sent, not with what it declared: a chunk has an entry
// only once a frame for it arrived, so a SEND of 16,384 chunks costs a few hundred bytes until
// its bytes come.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "digest/digest.h"
#include "fs/destination.h"
#include "fs/partial.h"
#include "protocol/chunk_plan.h"
#include "protocol/control_codec.h"
#include "protocol/data_frame.h"
#include "protocol/token.h"

namespace ackxfer {

// What a control session has published so far. Files may be published by data streams on
// other workers (one-chunk files), so these are atomics.
struct SessionTotals {
  std::atomic<std::uint64_t> files{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::uint64_t> failed{0};
  // When a data stream last received bytes of this session's files (steady clock, ms): a
  // session whose control connection is quiet while its data flows is not idle.
  std::atomic<std::int64_t> last_progress_ms{0};
};

// A place in the receiver-wide count of open temp files (ReceiverContext::open_files): taken
// before a temp file is created, given back when the file's fd closes.
class OpenFileSlot {
 public:
  OpenFileSlot() = default;
  explicit OpenFileSlot(std::atomic<std::size_t>* count) : count_(count) {}
  OpenFileSlot(OpenFileSlot&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  OpenFileSlot& operator=(OpenFileSlot&& o) noexcept {
    if (this != &o) {
      release();
      count_ = std::exchange(o.count_, nullptr);
    }
    return *this;
  }
  ~OpenFileSlot() { release(); }
  // Takes a place if fewer than `limit` are taken; an empty slot (false) otherwise.
  static OpenFileSlot take(std::atomic<std::size_t>& count, std::size_t limit);
  explicit operator bool() const { return count_ != nullptr; }

 private:
  void release() {
    if (count_) count_->fetch_sub(1, std::memory_order_relaxed);
    count_ = nullptr;
  }
  std::atomic<std::size_t>* count_ = nullptr;
};

class IncomingFile {
 public:
  enum class State {
    kReceiving,    // READY went out; frames arrive
    kReadingBack,  // verified by digests; the kept chunks it resumed with are being read back
    kPublishing,   // every chunk and the file digest verified; being published (durably)
    kPublished,
    kFailed,     // a verdict other than published; the temp file is gone
    kAbandoned,  // the session ended or the sender cancelled; a partial may have been kept
  };

  // `have`: chunks a kept partial file already holds, as its journal says (resume); they are
  // read back before the file is published (verify() says kReadBack). `resumable`: the temp
  // file is a partial with a journal (fs/partial.h) that checkpoints record progress in. The
  // first chunk was reserved at SEND (or is small) unless `have` is given: a reopened partial
  // is not touched until a frame arrives, so its first chunk is reserved then.
  IncomingFile(const SendRequest& req, Token token, TempFile temp,
               std::shared_ptr<SessionTotals> totals, OpenFileSlot slot = {},
               const std::vector<JournalEntry>& have = {}, bool resumable = false);
  ~IncomingFile();

  const Token& token() const { return token_; }
  std::uint64_t id() const { return id_; }
  const std::string& path() const { return path_; }
  std::uint64_t size() const { return plan_.size(); }
  const ChunkPlan& plan() const { return plan_; }
  SessionTotals& totals() const { return *totals_; }
  bool resumable() const { return resumable_; }
  std::uint64_t resumed_bytes() const { return resumed_bytes_; }
  State state() const;
  bool closed() const { return state() != State::kReceiving; }
  // The temp file's fd; valid for the object's lifetime. -1 when the receiver discards data
  // (memory-to-memory mode): writes and publishing are skipped, verification is not.
  int fd() const { return fd_; }
  bool discarding() const { return fd_ < 0; }
  // Chunk entries held (what a peer has made this file remember), for tests and accounting.
  std::size_t chunk_entries() const;

  // ---- Data side ----
  struct Claim {
    AckStatus status = AckStatus::kOk;  // kOk: the caller writes the payload
    std::uint32_t index = 0;
    std::uint64_t generation = 0;  // identifies this claim in the calls below
    bool taken_over = false;       // the chunk was another connection's, gone quiet
  };
  // Reserves the chunk a frame (offset, length) carries for connection `owner`. A chunk that
  // another connection is receiving is kBusy, unless that connection has received nothing for
  // kStaleClaimMs: then the claim passes to `owner` and the old one's writes are refused.
  Claim claim(std::uint64_t offset, std::uint64_t length, std::uint64_t owner, std::int64_t now_ms);
  // The claim holder received bytes: its claim is not stale.
  void touch(const Claim& c, std::int64_t now_ms);
  // Allocates the claimed chunk's space before its bytes are written (the first chunk was
  // allocated at SEND). Returns 0 or the errno (ENOSPC).
  int reserve_chunk(const Claim& c);
  // Every write into the temp file is bracketed by these (a pwrite, or a splice in flight).
  // begin_write() returns false once the file is closed or the claim was taken over: drop the
  // bytes. So no stale write can reach a partial that a later attempt has taken over.
  bool begin_write(const Claim& c);
  // `now_ms`: the claim holder was just receiving (its claim is fresh).
  void end_write(const Claim& c, std::int64_t now_ms);
  // `verified`: the payload was written and its digest matched `digest`. Otherwise the chunk
  // goes back to missing and the sender will send it again. A claim taken over does nothing.
  void finish_chunk(const Claim& c, bool verified, const Digest128& digest);

  enum class Verdict { kVerified, kReadBack, kIncomplete, kMismatch, kAlreadyClosed };
  // Data side, one-chunk files: the claimed (only) chunk verified against the frame's digest,
  // which verifies the whole file. kVerified: the caller publishes it (publish()).
  Verdict verify_single(const Claim& c, const Digest128& digest);
  // Control side, DONE: every chunk verified and the file digest over them equals `digest`?
  // kVerified: the caller publishes it; kReadBack: the same, once the chunks resumed from a kept
  // partial are read back and found as its journal says (read_back_done()); otherwise the temp
  // file is removed. No chunk can be claimed after either call, whatever its outcome.
  Verdict verify(const Digest128& digest);
  // After kReadBack: the resumed chunks `bad` are not what the journal says. None: true, and the
  // caller publishes the file. Otherwise the journal forgets them and the partial is kept for
  // the sender's next attempt (false); with `synced` (the file's data was flushed after the
  // last write), the chunks this transfer verified are journaled first, so that only `bad` are
  // sent again. False too when the file was abandoned meanwhile.
  bool read_back_done(const std::vector<std::uint32_t>& bad, bool synced);
  // Those of `claims` (the chunks it resumed with) still as the partial kept them: not received
  // again since READY (a sender may send a chunk again; it is then verified as it arrives).
  std::vector<JournalEntry> still_kept(const std::vector<JournalEntry>& claims);
  // After kVerified: sets mode and mtime and moves the verified bytes to the final name
  // (TempFile::publish). With `durable`, the file's data and inode reach stable storage first
  // (the caller syncs the directory). Counts the verdict in the session's totals.
  std::variant<std::monostate, FsError> publish(bool durable);
  // publish() in two steps, for a caller that flushes many files at once in between
  // (receiver/durable_publisher.h): mode and mtime, then the final name.
  std::variant<std::monostate, FsError> prepare_publish();
  std::variant<std::monostate, FsError> place();
  // Between the two: flushing failed; the file fails and its temp file goes.
  void fail_publish();
  // The directory the file is published in (for syncing it).
  std::shared_ptr<const UniqueFd> directory() const;

  // The session ended or the sender cancelled: refuse further chunks and remove the temp file,
  // unless `keep` allows keeping a resumable partial that has journaled chunks (a later
  // attempt resumes it). Returns true if it was kept.
  bool abandon(bool keep = false);

  // Journal checkpoints (resumable files only). take_unjournaled() returns the chunks verified
  // since the last checkpoint and marks them pending; once the caller has made the file's data
  // durable (fdatasync), journal_written() records them (`durable` false: try again later).
  std::vector<JournalEntry> take_unjournaled();
  void journal_written(const std::vector<JournalEntry>& entries, bool durable);
  // A flush of its data failed (a checkpoint's fdatasync: EIO, or ENOSPC and EDQUOT from
  // delayed allocation). The error is reported once, so a later fsync would pass and what was
  // written may never reach the disk: the file is not published; publish() says why.
  void flush_failed(int err);

 private:
  enum class ChunkState : std::uint8_t { kReceiving, kVerified };
  enum class JournalState : std::uint8_t { kNone, kPending, kJournaled };
  struct Chunk {
    ChunkState state = ChunkState::kReceiving;
    JournalState journal = JournalState::kNone;
    bool reserved = false;
    bool writing = false;
    bool kept = false;  // resumed from the partial, not received again
    std::uint64_t owner = 0;
    std::uint64_t generation = 0;
    std::int64_t touched_ms = 0;
    Digest128 digest;
  };
  // Chunk index -> Chunk, in index order. Chunk 0 lives inline: most files are one chunk, and
  // then the table allocates nothing.
  class ChunkTable {
   public:
    Chunk* find(std::uint32_t i);
    // The entry for `i`, and whether it was just made.
    std::pair<Chunk*, bool> emplace(std::uint32_t i);
    void erase(std::uint32_t i);
    std::size_t size() const { return (first_ ? 1 : 0) + rest_.size(); }
    template <class F>
    void for_each(F f) {
      if (first_) f(0u, *first_);
      for (auto& [i, c] : rest_)
        f(i, c);
    }

   private:
    std::optional<Chunk> first_;
    std::map<std::uint32_t, Chunk> rest_;
  };
  // The chunk `c` names, if `c` still holds it.
  Chunk* held(const Claim& c);
  void count_verdict(bool published);

  const std::uint64_t id_;
  const std::string path_;
  const ChunkPlan plan_;
  const std::uint32_t mode_;
  const Mtime mtime_;
  const Token token_;
  const int fd_;
  const std::shared_ptr<SessionTotals> totals_;
  const bool resumable_;
  const bool reopened_;  // resumed from a kept partial (`have` given)
  std::uint64_t resumed_bytes_ = 0;

  mutable std::mutex mu_;
  TempFile temp_;                      // guarded by mu_ (publish/discard)
  OpenFileSlot slot_;                  // released with the object (its fd closes then)
  State state_ = State::kReceiving;    // guarded by mu_
  ChunkTable chunks_;                  // guarded by mu_: chunks that started to arrive
  std::uint64_t next_generation_ = 1;  // guarded by mu_
  int writers_ = 0;                    // guarded by mu_: writes and reservations under way
  bool unlock_when_idle_ = false;      // guarded by mu_: kept; unlock after the last write
  // Guarded by mu_: this transfer wrote into or reserved space in its temp file. A kept partial
  // that nothing wrote to is left exactly as it was (abandon), so that what a read-back found
  // stays true for the next attempt (ReceiverContext::read_backs).
  bool touched_ = false;
  int flush_error_ = 0;  // guarded by mu_: see flush_failed()

  // Under mu_: fails a file that must not be published (state kFailed, temp discarded): its
  // data could not be flushed, or its partial file is not the size declared.
  std::optional<FsError> unpublishable();
  // Under mu_: a write or reservation has ended; the last one unlocks a kept partial.
  void writer_done();
  // Under mu_: the temp file holds over a MiB more disk than its journaled chunks need.
  bool holds_more_than_journaled();
  // Under mu_: abandon() once the state allows it.
  bool keep_or_discard(bool keep);
};

}  // namespace ackxfer
