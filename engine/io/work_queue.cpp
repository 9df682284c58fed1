// WorkQueue: slices over a few threads, owners taking turns.
#include "io/work_queue.h"

namespace ackxfer {

WorkQueue::WorkQueue(unsigned threads) : want_threads_(threads ? threads : 1) {}

WorkQueue::~WorkQueue() {
  stop();
}

void WorkQueue::enqueue(std::function<bool()> job, const void* owner) {
  auto it = turn_of_.find(owner);
  if (it == turn_of_.end())  // a new turn, after everyone already waiting
    it = turn_of_.emplace(owner, turns_.insert(turns_.end(), Turn{owner, {}})).first;
  it->second->jobs.push_back(std::move(job));
  ++queued_;
}

void WorkQueue::submit(std::function<bool()> job, const void* owner) {
  std::lock_guard lock(mu_);
  if (stop_) return;
  enqueue(std::move(job), owner);
  if (threads_.size() < want_threads_) threads_.emplace_back([this] { run(); });
  cv_.notify_one();
}

std::size_t WorkQueue::queued() const {
  std::lock_guard lock(mu_);
  return queued_;
}

void WorkQueue::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    turns_.clear();
    turn_of_.clear();
    queued_ = 0;
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& t : threads)
    t.join();
}

void WorkQueue::run() {
  while (true) {
    std::function<bool()> job;
    const void* owner = nullptr;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !turns_.empty(); });
      if (stop_) return;
      auto turn = turns_.begin();
      owner = turn->owner;
      job = std::move(turn->jobs.front());
      turn->jobs.pop_front();
      --queued_;
      // This owner's turn is over: to the back of the line, or out of it.
      if (turn->jobs.empty()) {
        turn_of_.erase(owner);
        turns_.erase(turn);
      } else {
        turns_.splice(turns_.end(), turns_, turn);
      }
    }
    if (!job()) continue;
    std::lock_guard lock(mu_);
    if (stop_) return;
    enqueue(std::move(job), owner);  // behind its owner's other jobs
    cv_.notify_one();
  }
}

}  // namespace ackxfer
