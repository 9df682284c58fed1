// WorkQueue: round-robin slices over a few threads.
#include "io/work_queue.h"

namespace ackxfer {

WorkQueue::WorkQueue(unsigned threads) : want_threads_(threads ? threads : 1) {}

WorkQueue::~WorkQueue() {
  stop();
}

void WorkQueue::submit(std::function<bool()> job) {
  std::lock_guard lock(mu_);
  if (stop_) return;
  jobs_.push_back(std::move(job));
  if (threads_.size() < want_threads_) threads_.emplace_back([this] { run(); });
  cv_.notify_one();
}

std::size_t WorkQueue::queued() const {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

void WorkQueue::stop() {
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

void WorkQueue::run() {
  while (true) {
    std::function<bool()> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    if (!job()) continue;
    std::lock_guard lock(mu_);
    if (stop_) return;
    jobs_.push_back(std::move(job));  // behind everyone else's next slice
    cv_.notify_one();
  }
}

}  // namespace ackxfer
