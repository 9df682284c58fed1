// Threads for local work that blocks on the disk for a long time (hashing an existing file for
// `skip=xxh3` or `--checksum`, reading a kept partial back), so the io_uring loops never do.
// Work comes in slices: a job runs one slice per call and goes to the back of the queue, so one
// session's 20 GiB check shares the threads with everyone else's small ones instead of holding
// them up. Jobs post their progress and results back to the loop that asked (Loop::post) and
// check their own cancellation flag between slices.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ackxfer {

class WorkQueue {
 public:
  explicit WorkQueue(unsigned threads = 2);
  ~WorkQueue();  // stops: queued jobs that have not finished are dropped
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // `job` is called once per slice until it returns false (finished or cancelled). Threads
  // start on the first job, so a process that never needs one has none.
  void submit(std::function<bool()> job);
  void stop();
  std::size_t queued() const;

 private:
  void run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<bool()>> jobs_;  // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::vector<std::thread> threads_;
  unsigned want_threads_;
};

}  // namespace ackxfer
