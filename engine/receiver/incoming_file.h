// One file between READY and its verdict: the temp file, and the state of each chunk. Shared
// by the control session that opened it and the data streams (on any worker) that fill it;
// every method is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "digest/digest.h"
#include "fs/destination.h"
#include "fs/partial.h"
#include "protocol/control_codec.h"
#include "protocol/data_frame.h"
#include "protocol/token.h"

namespace ackxfer {

// What a control session has published so far. Files may be published by data streams on
// other workers (one-chunk files, see IncomingFile::verify_single), so these are atomics.
struct SessionTotals {
  std::atomic<std::uint64_t> files{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::uint64_t> failed{0};
  // When a data stream last completed a frame of this session's files (steady clock, ms):
  // a session whose control connection is quiet while its data flows is not idle.
  std::atomic<std::int64_t> last_progress_ms{0};
};

class IncomingFile {
 public:
  // `have`: chunks a kept partial file already holds, verified (resume). `resumable`: the temp
  // file is a partial with a journal (fs/partial.h) that checkpoints record progress in.
  IncomingFile(const SendRequest& req, Token token, TempFile temp,
               std::shared_ptr<SessionTotals> totals, const std::vector<JournalEntry>& have = {},
               bool resumable = false);

  const Token& token() const { return token_; }
  std::uint64_t id() const { return id_; }
  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }
  std::uint32_t chunk_count() const { return chunk_count_; }
  SessionTotals& totals() const { return *totals_; }
  bool resumable() const { return resumable_; }
  std::uint64_t resumed_bytes() const { return resumed_bytes_; }
  bool closed() const;
  // The temp file's fd; valid for the object's lifetime. -1 when the receiver discards data
  // (memory-to-memory mode): writes and publishing are skipped, verification is not.
  int fd() const { return fd_; }
  bool discarding() const { return fd_ < 0; }

  // Data side. claim() reserves the chunk that starts at `offset` for one frame; on kOk the
  // caller writes the payload and then calls finish_chunk().
  AckStatus claim(std::uint64_t offset, std::uint64_t length, std::uint32_t& index);
  // Allocates the claimed chunk's space before its bytes are written (the first chunk was
  // allocated at SEND). Returns 0 or the errno (ENOSPC).
  int reserve_chunk(std::uint32_t index);
  // Every write into the temp file is bracketed by these (a pwrite, or a splice in flight).
  // begin_write() returns false once the file is closed: drop the bytes. So when abandon() has
  // kept a partial, no stale write can reach it after the next attempt has taken it over.
  bool begin_write();
  void end_write();
  // `verified`: the payload was written and its digest matched `digest`. Otherwise the chunk
  // goes back to missing and the sender will send it again.
  void finish_chunk(std::uint32_t index, bool verified, const Digest128& digest);

  enum class Verdict { kPublished, kIncomplete, kMismatch, kFailed, kAlreadyClosed };
  struct Outcome {
    Verdict verdict;
    FsError error;  // for kFailed
  };
  // Data side, one-chunk files: the claimed (only) chunk was written and its digest matched
  // the frame's, which verifies the whole file. Publishes it now (no DONE will come) and
  // counts it in the session's totals.
  Outcome verify_single(const Digest128& digest);

  // Control side.
  // DONE: if every chunk is verified and the file digest over them equals `digest`, publishes
  // the file under its final name (mode, mtime, rename). Otherwise the temp file is removed.
  // No chunk can be claimed after this call, whatever its outcome.
  Outcome finish(const Digest128& digest);
  // The session ended or the sender cancelled: refuse further chunks and remove the temp file,
  // unless `keep` allows keeping a resumable partial that has journaled chunks (a later
  // attempt resumes it). Returns true if it was kept.
  bool abandon(bool keep = false);

  // Journal checkpoints (resumable files only). take_unjournaled() returns the chunks verified
  // since the last checkpoint and marks them pending; once the caller has made the file's data
  // durable (fdatasync), journal_written() records them (`durable` false: try again later).
  std::vector<JournalEntry> take_unjournaled();
  void journal_written(const std::vector<JournalEntry>& entries, bool durable);

 private:
  Outcome finish_locked(const Digest128& digest);
  Outcome counted(const Outcome& out);  // adds the verdict to the session's totals
  enum class ChunkState : std::uint8_t { kMissing, kReceiving, kVerified };
  enum class JournalState : std::uint8_t { kNone, kPending, kJournaled };

  const std::uint64_t id_;
  const std::string path_;
  const std::uint64_t size_;
  const std::uint64_t chunk_bytes_;
  const std::uint32_t mode_;
  const Mtime mtime_;
  const Token token_;
  const int fd_;
  const std::uint32_t chunk_count_;
  const std::shared_ptr<SessionTotals> totals_;
  const bool resumable_;
  std::uint64_t resumed_bytes_ = 0;

  mutable std::mutex mu_;
  TempFile temp_;                      // guarded by mu_ (publish/discard)
  bool closed_ = false;                // guarded by mu_
  std::vector<ChunkState> state_;      // guarded by mu_
  std::vector<Digest128> digests_;     // guarded by mu_
  std::vector<bool> reserved_;         // guarded by mu_
  std::vector<JournalState> journal_;  // guarded by mu_; empty unless resumable
  int writers_ = 0;                    // guarded by mu_
  bool unlock_when_idle_ = false;      // guarded by mu_: kept; unlock after the last write
};

}  // namespace ackxfer
