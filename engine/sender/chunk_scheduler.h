// The queue of chunks waiting for a data stream, shared by every stream on every sender
// thread. An idle stream takes the next chunk, so a slow stream never holds up the others; a
// chunk the receiver rejects goes back into the queue; a file whose chunks are all acknowledged
// is handed back to the control client for DONE.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "protocol/control_codec.h"
#include "sender/outgoing_file.h"

namespace ackxfer {

struct ChunkJob {
  std::shared_ptr<OutgoingFile> file;
  std::uint32_t index = 0;
  // The receiver already holds this chunk (READY have=): hash it locally for the file digest
  // and call acked(), but do not send it.
  bool local_only = false;
  // The receiver called this chunk busy (another of its connections holds it): how many times
  // in a row, and since when (ms, the loop's clock). The stream backs off; see limits.h.
  std::uint8_t busy = 0;
  std::int64_t busy_since_ms = 0;
};

// A data stream waiting for work; wake() is called with the scheduler's lock released and must
// be thread-safe (streams post to their own loop).
class ChunkWaiter {
 public:
  virtual void wake() = 0;

 protected:
  ~ChunkWaiter() = default;
};

class ChunkScheduler {
 public:
  struct Callbacks {
    // Every chunk of the file is acknowledged: send DONE. Called without the lock held.
    std::function<void(std::shared_ptr<OutgoingFile>)> file_chunks_done;
    // The file cannot be delivered in this attempt (reason for the user).
    std::function<void(std::shared_ptr<OutgoingFile>, std::string reason, bool retryable)>
        file_failed;
  };
  explicit ChunkScheduler(Callbacks callbacks) : callbacks_(std::move(callbacks)) {}

  // Queues all chunks of a file that has its token. Files of size 0 have no chunks: the caller
  // sends DONE directly.
  // `have`: chunks the receiver already holds (resume); they become local_only jobs.
  void add_file(const std::shared_ptr<OutgoingFile>& file,
                const std::vector<ChunkRange>& have = {});

  // The next chunk to send, or nullopt; in that case `waiter` is woken when there may be one.
  // Returns nullopt and does not register once close() was called.
  std::optional<ChunkJob> next(ChunkWaiter* waiter);
  void forget_waiter(ChunkWaiter* waiter);

  void acked(const ChunkJob& job, const Digest128& digest);
  // The chunk must be sent again (digest mismatch, busy, connection lost). Counts as a retry;
  // fails the file after kMaxChunkAttempts.
  void retry(const ChunkJob& job, const std::string& why);
  // The chunk cannot be delivered: fail its file. `busy_since_ms`: it failed because the
  // receiver has called it busy since then (kept in the file for the control client).
  void fail(const ChunkJob& job, const std::string& why, bool retryable,
            std::int64_t busy_since_ms = 0);
  // A chunk a stream took but will not send after all (a busy chunk whose wait is over, a
  // second local-only chunk): back to the front, not counted as a retry.
  void put_back(const ChunkJob& job);

  // The file's session is gone, or its verdict came: drop its queued chunks and ignore its
  // acks, without telling the control client (which is sending it again, or done with it).
  void drop_file(const std::shared_ptr<OutgoingFile>& file);
  // A woken waiter that will not look for work now (its connection is down) hands its wake-up
  // on: another waiter is woken if chunks are queued, so none waits behind a stream that cannot
  // take it.
  void pass_wake();
  // No more chunks will be added; wakes every waiter so that idle streams can finish.
  void close();
  bool closed() const;
  std::uint64_t retries() const;
  std::size_t queued() const;
  // Bytes of the chunks acknowledged (or, resumed, hashed here) of the files whose chunks are
  // still wanted: what the files on their way have settled so far, each byte once however
  // often it was sent. For progress figures; any thread.
  std::uint64_t settled_in_flight() const { return settled_.load(std::memory_order_relaxed); }

 private:
  // Wakes up to `n` waiters, longest waiting first: one per queued chunk, not every idle stream
  // per chunk (with 64 streams, waking all of them for every small file cost the sender one
  // cross-thread post and context switch per stream per file; docs/PERFORMANCE.md).
  void wake(std::unique_lock<std::mutex>& lock, std::size_t n);
  void wake_all(std::unique_lock<std::mutex>& lock) { wake(lock, waiters_.size()); }
  void fail_locked(const std::shared_ptr<OutgoingFile>& f, const std::string& why, bool retryable,
                   std::unique_lock<std::mutex>& lock);
  // Marks `f` failed (its chunks no longer wanted) and takes its bytes out of settled_.
  void give_up_locked(OutgoingFile& f);

  Callbacks callbacks_;
  mutable std::mutex mu_;
  std::deque<ChunkJob> queue_;
  std::vector<ChunkWaiter*> waiters_;
  bool closed_ = false;
  std::uint64_t retries_ = 0;
  std::atomic<std::uint64_t> settled_{0};  // written under mu_
};

}  // namespace ackxfer
