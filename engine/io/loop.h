// The narrow interface every connection in the engine runs on (the Redis `ae` idea): submit an
// op for a handler, get its completion back on the loop's thread, timers, tasks posted from
// other threads, and the loop's clock. Two implementations: UringLoop (io/uring_loop.h, one
// io_uring per thread) and the test double in tests/unit/fake_loop.h, which lets a unit test
// feed a connection completions and read what it sent, with no socket and no kernel.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace ackxfer {

// What an op produced. The loop decodes the kernel's flags: handlers never see IORING_CQE_F_*.
struct Completion {
  int res = 0;        // bytes, an fd, 0, or -errno
  bool more = false;  // a multishot op goes on: more completions of it will come
  // A multishot receive into a buffer pool: the bytes that arrived. Valid only during the call;
  // the buffer goes back to the pool when the handler returns.
  std::span<const std::uint8_t> data;
};

// Receives completions. The op tag (0..kMaxOpTag) tells one handler's ops apart.
class IoHandler {
 public:
  virtual void on_io(unsigned op, const Completion& c) = 0;

 protected:
  ~IoHandler() = default;
};

inline constexpr unsigned kMaxOpTag = 7;

struct LoopCounters {
  std::uint64_t submitted = 0;  // ops handed to the kernel
  std::uint64_t completions = 0;
  std::uint64_t enter_calls = 0;  // io_uring_enter syscalls (submit + wait)
  std::uint64_t tasks = 0;        // tasks posted from other threads
  std::uint64_t run_ns = 0;       // wall time in run()
  std::uint64_t cpu_ns = 0;       // this thread's CPU time in run(): cpu/run near 1 = saturated
  std::uint64_t cq_overflow = 0;  // completions the kernel had to hold back (CQ full)
  std::uint64_t sq_backlog = 0;   // ops that waited in user space for a free submission slot
  std::uint64_t buffers_exhausted = 0;  // multishot receives that found every pool buffer busy
};

// Milliseconds on the steady clock: UringLoop::now_ms(), for code that has no loop at hand.
std::int64_t steady_ms();

class Loop {
 public:
  virtual ~Loop() = default;

  // Network ops. Every op completes exactly once (multishot ops: until `more` is false).
  virtual void accept(int listen_fd, IoHandler* h, unsigned op) = 0;  // multishot
  virtual void recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op) = 0;
  // Multishot receive into buffers of `pool` (add_buffer_pool): one completion per piece of
  // data, until an error, EOF, cancellation or -ENOBUFS (every buffer busy) ends it.
  virtual void recv_multishot(int fd, std::uint16_t pool, IoHandler* h, unsigned op) = 0;
  // MSG_NOSIGNAL is always added: a peer that went away is an error result, not SIGPIPE.
  virtual void send(int fd, const void* buf, std::size_t len, int flags, IoHandler* h,
                    unsigned op) = 0;
  virtual void connect(int fd, const sockaddr* addr, socklen_t len, IoHandler* h, unsigned op) = 0;
  virtual void splice(int fd_in, std::int64_t off_in, int fd_out, std::int64_t off_out,
                      unsigned len, IoHandler* h, unsigned op) = 0;
  // fdatasync(fd) off the loop's thread: durability without blocking the loop.
  virtual void fdatasync(int fd, IoHandler* h, unsigned op) = 0;

  // Fires (res -ETIME) after `ns`, or completes -ECANCELED once remove_timeout() reaches it.
  virtual void timeout(std::uint64_t ns, IoHandler* h, unsigned op) = 0;
  virtual void remove_timeout(IoHandler* h, unsigned op) = 0;
  // Completes on the next turn of the loop, after everything queued so far has been submitted.
  virtual void nop(IoHandler* h, unsigned op) = 0;
  // Cancels op (h, op) / every op on `fd`; each completes with -ECANCELED (if not done yet).
  virtual void cancel(IoHandler* h, unsigned op) = 0;
  virtual void cancel_fd(int fd) = 0;

  // Receive buffers shared by every connection of this loop: an idle connection holds none.
  // `count` is a power of two. Throws Failure if the kernel refuses.
  virtual void add_buffer_pool(std::uint16_t pool, unsigned count, std::size_t bytes) = 0;

  // Thread-safe: runs `task` on the loop's thread soon. Dropped once the loop is destroyed.
  virtual void post(std::function<void()> task) = 0;
  // Loop thread only: runs `task` after the completions being dispatched now (used to destroy
  // objects outside their own callbacks).
  virtual void defer(std::function<void()> task) = 0;
  virtual void stop() = 0;
  virtual bool stopping() const = 0;

  // Milliseconds on the loop's clock (steady; the test double's is set by the test). Every
  // deadline in the engine is measured on it.
  virtual std::int64_t now_ms() const = 0;
};

// Base for objects with ops in flight (connections, listeners, timers). Counts in-flight ops so
// that close() can cancel them and the object is released only after the last completion: the
// kernel never writes into freed memory.
class LoopObject : public IoHandler {
 public:
  explicit LoopObject(Loop& loop) : loop_(loop) {}
  virtual ~LoopObject() = default;
  bool closing() const { return closing_; }
  int inflight() const { return inflight_; }
  Loop& loop() const { return loop_; }

  // Public so that helpers an object owns (io/send_queue.h) can submit on its behalf; their
  // completions come back through the object's on_complete.
  void arm_send(int fd, const void* buf, std::size_t len, unsigned op, int flags = 0);

 protected:
  void arm_accept(int fd, unsigned op);
  void arm_recv(int fd, void* buf, std::size_t len, unsigned op);
  void arm_recv_multishot(int fd, std::uint16_t pool, unsigned op);
  void arm_connect(int fd, const sockaddr* a, socklen_t len, unsigned op);
  void arm_splice(int in, std::int64_t off_in, int out, std::int64_t off_out, unsigned len,
                  unsigned op);
  void arm_yield(unsigned op);  // completes next turn (Loop::nop)
  void arm_fdatasync(int fd, unsigned op);
  // One timer per op tag; several tags may run at once. Arming a tag that is already armed
  // replaces it: the old timer is removed and its completion swallowed, the new one reported.
  void arm_timer(std::uint64_t ns, unsigned op);
  void disarm_timer(unsigned op);
  bool timer_armed(unsigned op) const { return (timers_ >> op) & 1u; }

  // Stops delivering completions and cancels what is in flight on `fd` and every timer. When
  // the last op has completed, on_drained() runs.
  void begin_close(int fd);

  virtual void on_complete(unsigned op, const Completion& c) = 0;
  virtual void on_drained() = 0;

  Loop& loop_;

 private:
  void on_io(unsigned op, const Completion& c) final;
  int inflight_ = 0;
  bool closing_ = false;
  std::uint8_t timers_ = 0;    // bit per op tag: a timer of that tag is in flight
  std::uint8_t removing_ = 0;  // bit per op tag: its timer is being replaced
  std::uint64_t rearm_ns_[kMaxOpTag + 1] = {};
};

}  // namespace ackxfer
