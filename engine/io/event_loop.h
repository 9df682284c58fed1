// A per-thread io_uring event loop behind a narrow interface: submit an op for a handler, get
// the completion back on the same thread; timers; tasks posted from other threads. Everything
// network-facing in the engine runs through one of these.
#pragma once

#include <liburing.h>
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ackxfer {

// Receives completions. The op tag (0..7) is packed into the low bits of user_data next to the
// handler's address, so one handler can have several kinds of op in flight.
class IoHandler {
 public:
  virtual void on_io(unsigned op, int res, unsigned flags) = 0;

 protected:
  ~IoHandler() = default;
};

inline constexpr unsigned kMaxOpTag = 7;

struct LoopCounters {
  std::uint64_t submitted = 0;  // SQEs handed to the kernel
  std::uint64_t completions = 0;
  std::uint64_t enter_calls = 0;  // io_uring_enter syscalls (submit + wait)
  std::uint64_t tasks = 0;        // tasks posted from other threads
  std::uint64_t run_ns = 0;       // wall time in run()
  std::uint64_t cpu_ns = 0;       // this thread's CPU time in run(): cpu/run near 1 = saturated
  std::uint64_t cq_overflow = 0;  // completions the kernel had to hold back (CQ full)
};

// Why io_uring cannot be used here, with what to do about it; nullopt if it works.
std::optional<std::string> io_uring_unavailable_reason();

class EventLoop {
 public:
  // Creates the ring for the calling thread, which must be the one that calls run() (the ring
  // is set up SINGLE_ISSUER | DEFER_TASKRUN where the kernel supports it). Throws Failure with
  // io_uring_unavailable_reason() if io_uring is not usable.
  explicit EventLoop(unsigned queue_depth = 512);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void accept(int listen_fd, bool multishot, IoHandler* h, unsigned op);
  void recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op);
  // Multishot receive into buffers of provided-buffer group `group` (BufferRing): one
  // completion per chunk of data, with the buffer id in the flags, until an error, EOF,
  // cancellation or -ENOBUFS ends it (no IORING_CQE_F_MORE).
  void recv_multishot(int fd, std::uint16_t group, IoHandler* h, unsigned op);
  // Cancels the op (h, op); it completes with -ECANCELED.
  void cancel(IoHandler* h, unsigned op);
  int register_buffer_ring(io_uring_buf_reg* reg);
  void unregister_buffer_ring(std::uint16_t group);
  // MSG_NOSIGNAL is always added: a peer that went away is an error result, not SIGPIPE.
  void send(int fd, const void* buf, std::size_t len, int flags, IoHandler* h, unsigned op);
  void connect(int fd, const sockaddr* addr, socklen_t len, IoHandler* h, unsigned op);
  void splice(int fd_in, std::int64_t off_in, int fd_out, std::int64_t off_out, unsigned len,
              IoHandler* h, unsigned op);
  // `ts` must stay valid until the completion arrives.
  void timeout(__kernel_timespec* ts, IoHandler* h, unsigned op);
  // Completes on the next turn of the loop, after everything queued so far has been submitted:
  // a way to hand work to the kernel (replies, sends) before carrying on with a long job.
  void nop(IoHandler* h, unsigned op);
  // fdatasync(fd) in the kernel's worker threads: durability without blocking the loop.
  void fdatasync(int fd, IoHandler* h, unsigned op);
  void remove_timeout(IoHandler* h, unsigned op);
  // Cancels every op on `fd`; the cancelled ops complete with -ECANCELED.
  void cancel_fd(int fd);

  // Thread-safe: runs `task` on the loop thread soon. Tasks posted after the loop has stopped
  // are dropped.
  void post(std::function<void()> task);
  // Loop thread only: runs `task` after the completions being dispatched now (used to destroy
  // objects outside their own callbacks).
  void defer(std::function<void()> task);

  // Dispatches completions until stop() is called on the loop thread.
  void run();
  void stop() { stop_ = true; }
  bool stopping() const { return stop_; }

  const LoopCounters& counters() const { return counters_; }
  std::string setup_description() const;  // ring flags actually in use, for reports

 private:
  io_uring_sqe* next_sqe();
  void prep_user_data(io_uring_sqe* sqe, IoHandler* h, unsigned op);
  void arm_wake();
  void run_posted();
  void dispatch(std::uint64_t user_data, int res, unsigned flags);

  io_uring ring_{};
  unsigned setup_flags_ = 0;
  int wake_fd_ = -1;
  std::uint64_t wake_value_ = 0;
  bool stop_ = false;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mu_
  bool closed_ = false;                        // guarded by post_mu_
  std::vector<std::function<void()>> deferred_;
  LoopCounters counters_;
};

// Base for objects with ops in flight (connections, listeners, timers). Counts in-flight ops so
// that close() can cancel them and the object is released only after the last completion:
// the kernel never writes into freed memory.
class LoopObject : public IoHandler {
 public:
  explicit LoopObject(EventLoop& loop) : loop_(loop) {}
  virtual ~LoopObject() = default;
  bool closing() const { return closing_; }
  int inflight() const { return inflight_; }

 protected:
  void arm_accept(int fd, bool multishot, unsigned op);
  void arm_recv(int fd, void* buf, std::size_t len, unsigned op);
  void arm_recv_multishot(int fd, std::uint16_t group, unsigned op);
  void arm_send(int fd, const void* buf, std::size_t len, unsigned op, int flags = 0);
  void arm_connect(int fd, const sockaddr* a, socklen_t len, unsigned op);
  void arm_splice(int in, std::int64_t off_in, int out, std::int64_t off_out, unsigned len,
                  unsigned op);
  void arm_timer(std::uint64_t ns, unsigned op);  // one timer per object
  void arm_yield(unsigned op);                    // completes next turn (EventLoop::nop)
  void arm_fdatasync(int fd, unsigned op);
  void disarm_timer();

  // Stops delivering completions and cancels what is in flight on `fd` (and the timer). When
  // the last op has completed, on_drained() runs.
  void begin_close(int fd);

  virtual void on_complete(unsigned op, int res, unsigned flags) = 0;
  virtual void on_drained() = 0;

  EventLoop& loop_;

 private:
  void on_io(unsigned op, int res, unsigned flags) final;
  int inflight_ = 0;
  bool closing_ = false;
  bool timer_armed_ = false;
  unsigned timer_op_ = 0;
  __kernel_timespec timer_ts_{};
};

}  // namespace ackxfer
