// BlockingPool: threads start on the first job, so a receiver that never needs one has none.
#include "io/blocking_pool.h"

namespace ackxfer {

BlockingPool::BlockingPool(unsigned threads) : want_threads_(threads ? threads : 1) {}

BlockingPool::~BlockingPool() {
  stop();
}

void BlockingPool::submit(std::function<void()> job) {
  std::lock_guard lock(mu_);
  if (stop_) return;
  jobs_.push_back(std::move(job));
  if (threads_.size() < want_threads_) threads_.emplace_back([this] { run(); });
  cv_.notify_one();
}

void BlockingPool::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    jobs_.clear();
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& t : threads)
    t.join();
}

void BlockingPool::run() {
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace ackxfer
