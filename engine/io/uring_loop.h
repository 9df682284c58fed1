// The production Loop: one io_uring per thread. Completion flags are decoded here (buffer ids,
// IORING_CQE_F_MORE), provided-buffer pools are registered here, and an op that finds the
// submission queue full waits in user space instead of spinning on the kernel.
#pragma once

#include <liburing.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "io/loop.h"

namespace ackxfer {

// Why io_uring cannot be used here, with what to do about it; nullopt if it works.
std::optional<std::string> io_uring_unavailable_reason();

class UringLoop final : public Loop {
 public:
  // Creates the ring for the calling thread, which must be the one that calls run() (the ring
  // is set up SINGLE_ISSUER | DEFER_TASKRUN where the kernel supports it). Throws Failure with
  // io_uring_unavailable_reason() if io_uring is not usable.
  explicit UringLoop(unsigned queue_depth = 512);
  ~UringLoop() override;
  UringLoop(const UringLoop&) = delete;
  UringLoop& operator=(const UringLoop&) = delete;

  void accept(int listen_fd, IoHandler* h, unsigned op) override;
  void recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op) override;
  void recv_multishot(int fd, std::uint16_t pool, IoHandler* h, unsigned op) override;
  void send(int fd, const void* buf, std::size_t len, int flags, IoHandler* h,
            unsigned op) override;
  void connect(int fd, const sockaddr* addr, socklen_t len, IoHandler* h, unsigned op) override;
  void splice(int fd_in, std::int64_t off_in, int fd_out, std::int64_t off_out, unsigned len,
              IoHandler* h, unsigned op) override;
  void fdatasync(int fd, IoHandler* h, unsigned op) override;
  void timeout(std::uint64_t ns, IoHandler* h, unsigned op) override;
  void remove_timeout(IoHandler* h, unsigned op) override;
  void nop(IoHandler* h, unsigned op) override;
  void cancel(IoHandler* h, unsigned op) override;
  void cancel_fd(int fd) override;
  // Every op in flight on this ring completes with -ECANCELED (forced shutdown).
  void cancel_all();
  void add_buffer_pool(std::uint16_t pool, unsigned count, std::size_t bytes) override;

  void post(std::function<void()> task) override;
  void defer(std::function<void()> task) override;
  void stop() override { stop_ = true; }
  bool stopping() const override { return stop_; }
  std::int64_t now_ms() const override;

  // Dispatches completions until stop(). Throws SystemError if the ring itself fails.
  void run();
  // Like run(), but returns once `done()` holds after a turn, or after `max_ms` (shutdown
  // drains use it to wait for the last completions).
  void run_until(const std::function<bool()>& done, std::int64_t max_ms);

  const LoopCounters& counters() const { return counters_; }
  std::string setup_description() const;  // ring flags actually in use, for reports

 private:
  struct Pool;
  struct Slot {  // a provided buffer, by its (ring-wide) buffer id
    std::uint8_t* data = nullptr;
    Pool* pool = nullptr;
  };

  io_uring_sqe* next_sqe();
  void prep_user_data(io_uring_sqe* sqe, IoHandler* h, unsigned op);
  void submit_backlog();
  void after_submit();
  void arm_wake();
  void run_posted();
  void dispatch(std::uint64_t user_data, int res, unsigned flags);
  void turn(bool wait);

  io_uring ring_{};
  unsigned setup_flags_ = 0;
  int wake_fd_ = -1;
  std::uint64_t wake_value_ = 0;
  bool stop_ = false;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mu_
  bool closed_ = false;                        // guarded by post_mu_
  std::vector<std::function<void()>> deferred_;
  // Ops prepared while the submission queue was full; copied into it as slots free up.
  std::deque<io_uring_sqe> backlog_;
  // Timeouts' timespecs: the kernel reads them when the op is submitted.
  std::deque<__kernel_timespec> timespecs_;
  std::vector<std::unique_ptr<Pool>> pools_;
  std::vector<Slot> slots_;
  LoopCounters counters_;
};

}  // namespace ackxfer
