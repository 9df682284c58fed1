// A few threads for work that blocks on the disk for a long time (hashing a whole existing file
// for `--checksum`), so the io_uring loops never do. Jobs post their results back to the loop
// that asked (EventLoop::post).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ackxfer {

class BlockingPool {
 public:
  explicit BlockingPool(unsigned threads = 1);
  ~BlockingPool();  // stops: queued jobs that have not started are dropped
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  void submit(std::function<void()> job);
  void stop();

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::vector<std::thread> threads_;
  unsigned want_threads_;
};

}  // namespace ackxfer
