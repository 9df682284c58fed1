// One receiver worker: a thread that owns an io_uring loop, one control and one data listener
// (SO_REUSEPORT siblings of the other workers'), and every connection those listeners accept.
// Nothing here is shared with other workers except through ReceiverContext.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>
#include <unordered_map>

#include "io/buffer_ring.h"
#include "io/event_loop.h"
#include "receiver/receiver_context.h"
#include "unique_fd.h"

namespace ackxfer {

// A connection or listener owned by a worker.
class WorkerObject : public LoopObject {
 public:
  using LoopObject::LoopObject;
  virtual void start() = 0;
  // The receiver is stopping: finish up quickly and close.
  virtual void shutdown() = 0;
  // Once a second: check deadlines (idle and first-line timeouts). `now_ms`: steady clock.
  virtual void tick(std::int64_t /*now_ms*/) {}
};

// Connections must speak up this soon after connecting (or within the idle timeout, if that is
// shorter): a control connection its HELLO, a data connection its first frame header. A peer
// that connects and says nothing is dropped quickly.
inline constexpr std::int64_t kFirstLineTimeoutMs = 10'000;

// Milliseconds on the steady clock, for deadlines.
std::int64_t steady_ms();

class Worker {
 public:
  Worker(ReceiverContext& ctx, unsigned index, UniqueFd control_listener, UniqueFd data_listener);
  ~Worker();

  // Starts the thread; returns when its loop runs with accepts armed. Throws if it cannot.
  void start();
  void stop();  // thread-safe
  void join();
  // The loop's counters (complete after join()).
  LoopCounters counters() const { return loop_ ? loop_->counters() : LoopCounters{}; }

  // Loop thread only.
  ReceiverContext& ctx() { return ctx_; }
  EventLoop& loop() { return *loop_; }
  // Provided-buffer rings shared by this worker's connections (see io/buffer_ring.h).
  BufferRing& control_buffers() { return *control_buffers_; }
  BufferRing& data_buffers() { return *data_buffers_; }
  unsigned index() const { return index_; }
  bool stopping() const { return shutting_down_; }
  void adopt_control_connection(UniqueFd fd);
  void adopt_data_connection(UniqueFd fd);
  // Shutdown took too long: close every connection now.
  void force_close_all();
  // Housekeeping, once a second: lets every object check its deadlines.
  void tick_all();
  // Called by an object once all its ops have drained; destroys it.
  void release(WorkerObject* obj);

 private:
  void thread_main();
  void add(std::unique_ptr<WorkerObject> obj);
  void begin_shutdown();

  ReceiverContext& ctx_;
  const unsigned index_;
  UniqueFd control_listener_fd_, data_listener_fd_;
  std::thread thread_;
  std::promise<void> started_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<BufferRing> control_buffers_, data_buffers_;
  std::unordered_map<WorkerObject*, std::unique_ptr<WorkerObject>> objects_;
  bool shutting_down_ = false;
};

}  // namespace ackxfer
