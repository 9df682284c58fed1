// ChunkScheduler: one mutex, touched once per chunk (not per byte).
#include "sender/chunk_scheduler.h"

#include <algorithm>

#include "protocol/limits.h"

namespace ackxfer {

void ChunkScheduler::add_file(const std::shared_ptr<OutgoingFile>& file,
                              const std::vector<ChunkRange>& have) {
  std::unique_lock lock(mu_);
  file->chunk_digests.assign(file->chunk_count(), Digest128{});
  file->chunk_attempts.assign(file->chunk_count(), 0);
  file->chunks_acked = 0;
  std::size_t r = 0;
  for (std::uint32_t i = 0; i < file->chunk_count(); ++i) {
    while (r < have.size() && have[r].last < i)
      ++r;
    bool held = r < have.size() && have[r].first <= i && i <= have[r].last;
    queue_.push_back(ChunkJob{file, i, held});
  }
  wake(lock, file->chunk_count());
}

std::optional<ChunkJob> ChunkScheduler::next(ChunkWaiter* waiter) {
  std::lock_guard lock(mu_);
  while (!queue_.empty()) {
    ChunkJob job = std::move(queue_.front());
    queue_.pop_front();
    if (job.file->failed) continue;  // its file gave up; drop the leftovers
    return job;
  }
  if (!closed_ && waiter && std::find(waiters_.begin(), waiters_.end(), waiter) == waiters_.end())
    waiters_.push_back(waiter);
  return std::nullopt;
}

void ChunkScheduler::forget_waiter(ChunkWaiter* waiter) {
  std::lock_guard lock(mu_);
  std::erase(waiters_, waiter);
}

void ChunkScheduler::acked(const ChunkJob& job, const Digest128& digest) {
  std::shared_ptr<OutgoingFile> done;
  {
    std::lock_guard lock(mu_);
    OutgoingFile& f = *job.file;
    if (f.failed) return;
    f.chunk_digests[job.index] = digest;
    const std::uint64_t len = f.plan.length(job.index);
    f.settled += len;
    settled_.fetch_add(len, std::memory_order_relaxed);
    if (++f.chunks_acked == f.chunk_count()) done = job.file;
  }
  if (done) callbacks_.file_chunks_done(std::move(done));
}

void ChunkScheduler::retry(const ChunkJob& job, const std::string& why) {
  std::unique_lock lock(mu_);
  OutgoingFile& f = *job.file;
  if (f.failed) return;
  ++retries_;
  if (++f.chunk_attempts[job.index] >= kMaxChunkAttempts) {
    std::string msg = "chunk at offset " + std::to_string(f.plan.offset(job.index)) + " failed " +
                      std::to_string(kMaxChunkAttempts) + " times (last: " + why + ")";
    if (why.find("digest mismatch") != std::string::npos)
      msg +=
          "; the bytes arrived damaged every time: suspect the network path (a faulty NIC, "
          "cable or middlebox) or the memory of either host";
    fail_locked(job.file, msg, false, lock);
    return;
  }
  // To the front: the file is already open on the receiver, finish it first.
  queue_.push_front(job);
  wake(lock, 1);
}

void ChunkScheduler::put_back(const ChunkJob& job) {
  std::unique_lock lock(mu_);
  if (job.file->failed) return;
  queue_.push_front(job);
  wake(lock, 1);
}

void ChunkScheduler::pass_wake() {
  std::unique_lock lock(mu_);
  if (!queue_.empty()) wake(lock, 1);
}

void ChunkScheduler::fail(const ChunkJob& job, const std::string& why, bool retryable,
                          std::int64_t busy_since_ms) {
  std::unique_lock lock(mu_);
  if (job.file->failed) return;
  job.file->chunk_busy_since_ms = busy_since_ms;
  fail_locked(job.file, why, retryable, lock);
}

void ChunkScheduler::fail_locked(const std::shared_ptr<OutgoingFile>& f, const std::string& why,
                                 bool retryable, std::unique_lock<std::mutex>& lock) {
  give_up_locked(*f);
  lock.unlock();
  callbacks_.file_failed(f, why, retryable);
}

void ChunkScheduler::drop_file(const std::shared_ptr<OutgoingFile>& file) {
  std::lock_guard lock(mu_);
  give_up_locked(*file);
}

void ChunkScheduler::give_up_locked(OutgoingFile& f) {
  if (f.failed) return;
  f.failed = true;
  settled_.fetch_sub(f.settled, std::memory_order_relaxed);
}

void ChunkScheduler::close() {
  std::unique_lock lock(mu_);
  closed_ = true;
  wake_all(lock);
}

bool ChunkScheduler::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

std::uint64_t ChunkScheduler::retries() const {
  std::lock_guard lock(mu_);
  return retries_;
}

std::size_t ChunkScheduler::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void ChunkScheduler::wake(std::unique_lock<std::mutex>& lock, std::size_t n) {
  n = std::min(n, waiters_.size());
  if (n == 0) return;
  std::vector<ChunkWaiter*> waiters(waiters_.begin(), waiters_.begin() + static_cast<long>(n));
  waiters_.erase(waiters_.begin(), waiters_.begin() + static_cast<long>(n));
  lock.unlock();
  for (ChunkWaiter* w : waiters)
    w->wake();
}

}  // namespace ackxfer
