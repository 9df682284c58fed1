// Threads for local work that blocks on the disk for a long time (hashing an existing file for
// `skip=xxh3` or `--checksum`, reading a kept partial back), so the io_uring loops never do.
// Work comes in slices: a job runs one slice per call and goes to the back of its owner's
// queue, and owners (the receiver's sessions) take turns, so one session's 20 GiB check, or
// its 64 checks at once, share the threads with everyone else's small ones instead of holding
// them up. Jobs post their progress and results back to the loop that asked (Loop::post) and
// check their own cancellation flag between slices.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ackxfer {

class WorkQueue {
 public:
  explicit WorkQueue(unsigned threads = 2);
  ~WorkQueue();  // stops: queued jobs that have not finished are dropped
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // `job` is called once per slice until it returns false (finished or cancelled). Threads
  // start on the first job, so a process that never needs one has none. Owners take turns
  // slice by slice, whatever number of jobs each has; `owner` only names a turn (nothing
  // is dereferenced), so a pointer that outlives its object is harmless.
  void submit(std::function<bool()> job, const void* owner = nullptr);
  void stop();
  std::size_t queued() const;

 private:
  struct Turn {
    const void* owner;
    std::deque<std::function<bool()>> jobs;
  };
  void run();
  void enqueue(std::function<bool()> job, const void* owner);  // mu_ held

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<Turn> turns_;  // guarded by mu_: owners with jobs waiting, the next turn first
  std::unordered_map<const void*, std::list<Turn>::iterator> turn_of_;  // guarded by mu_
  std::size_t queued_ = 0;                                              // guarded by mu_
  bool stop_ = false;                                                   // guarded by mu_
  std::vector<std::thread> threads_;
  unsigned want_threads_;
};

}  // namespace ackxfer
