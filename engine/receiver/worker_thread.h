// One receiver worker thread: its own io_uring (UringLoop), a Worker with one control and one
// data listener (SO_REUSEPORT siblings of the other workers'), and every connection those
// listeners accept. Nothing here is shared with other workers except through ReceiverContext.
#pragma once

#include <future>
#include <memory>
#include <thread>

#include "io/uring_loop.h"
#include "receiver/receiver_context.h"
#include "receiver/worker.h"
#include "unique_fd.h"

namespace ackxfer {

class WorkerThread {
 public:
  WorkerThread(ReceiverContext& ctx, unsigned index, UniqueFd control_listener,
               UniqueFd data_listener);
  ~WorkerThread();

  // Starts the thread; returns when its loop runs with accepts armed. Throws if it cannot.
  void start();
  void stop();  // thread-safe
  // Thread-safe: `fd`, accepted by another worker, is adopted by this one's loop (a data
  // connection is counted in its load already). Once the loop has stopped, the fd is closed
  // unadopted.
  void hand_connection(UniqueFd fd, ReceiverContext::Handed what);
  void join();
  // The loop's counters (complete after join()).
  LoopCounters counters() const { return counters_; }

 private:
  void thread_main();
  // After the loop has stopped: every object is closed and its last completions awaited, then
  // the ring goes before anything it could still write into.
  void drain();

  ReceiverContext& ctx_;
  const unsigned index_;
  UniqueFd control_listener_fd_, data_listener_fd_;
  std::thread thread_;
  std::promise<void> started_;
  std::unique_ptr<UringLoop> loop_;
  std::unique_ptr<Worker> worker_;
  LoopCounters counters_;
};

}  // namespace ackxfer
