// EventLoop on io_uring, and LoopObject's in-flight accounting.
#include "io/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "error.h"

namespace ackxfer {
namespace {

// user_data values below a page can never be handler addresses.
constexpr std::uint64_t kIgnoreUserData = 0;  // cancel / timeout-remove results
constexpr std::uint64_t kWakeUserData = 1;    // the eventfd read that delivers posted tasks

int try_queue_init(unsigned entries, io_uring* ring, unsigned flags) {
  io_uring_params p{};
  p.flags = flags | IORING_SETUP_CQSIZE;
  // A roomy CQ: multishot accepts and bursts of sends can complete many ops at once, and an
  // overflowed CQ costs a slow path in the kernel.
  p.cq_entries = entries * 4;
  return io_uring_queue_init_params(entries, ring, &p);
}

std::string read_sysctl(const char* path) {
  std::ifstream f(path);
  std::string v;
  if (f) std::getline(f, v);
  return v;
}

}  // namespace

std::optional<std::string> io_uring_unavailable_reason() {
  io_uring ring;
  int r = io_uring_queue_init(2, &ring, 0);
  if (r == 0) {
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    std::optional<std::string> missing;
    if (!probe) {
      missing = "io_uring is too old here: it cannot report which operations it supports";
    } else {
      const int needed[] = {IORING_OP_ACCEPT,  IORING_OP_RECV,         IORING_OP_SEND,
                            IORING_OP_CONNECT, IORING_OP_SPLICE,       IORING_OP_TIMEOUT,
                            IORING_OP_READ,    IORING_OP_ASYNC_CANCEL, IORING_OP_TIMEOUT_REMOVE};
      for (int op : needed)
        if (!io_uring_opcode_supported(probe, op)) {
          missing = "this kernel's io_uring lacks operation " + std::to_string(op) +
                    "; ackxfer-fast needs Linux 6.0 or newer";
          break;
        }
      io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
    return missing;
  }
  std::string msg = "io_uring is unavailable: io_uring_setup failed: " + errno_text(-r) + ". ";
  std::string disabled = read_sysctl("/proc/sys/kernel/io_uring_disabled");
  if (!disabled.empty() && disabled != "0")
    msg += "The sysctl kernel.io_uring_disabled is " + disabled +
           "; set it to 0 (sysctl -w kernel.io_uring_disabled=0) or, if it is 1, run as a "
           "member of the group in kernel.io_uring_group.";
  else if (r == -EPERM || r == -ENOSYS)
    msg +=
        "A seccomp filter probably blocks it (Docker's and containerd's default profiles "
        "do); run the container with a profile that allows io_uring_setup, io_uring_enter "
        "and io_uring_register (e.g. --security-opt seccomp=unconfined).";
  else if (r == -ENOMEM)
    msg += "The locked-memory limit may be too low (ulimit -l).";
  return msg;
}

EventLoop::EventLoop(unsigned queue_depth) {
  // DEFER_TASKRUN runs completion work only when this thread waits for it, so the kernel never
  // interrupts the loop with task work; SINGLE_ISSUER is its precondition. Older kernels reject
  // the flags with EINVAL: fall back step by step.
  const unsigned attempts[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                               IORING_SETUP_COOP_TASKRUN, 0};
  int r = -EINVAL;
  for (unsigned flags : attempts) {
    r = try_queue_init(queue_depth, &ring_, flags);
    if (r == 0) {
      setup_flags_ = flags;
      break;
    }
    if (r != -EINVAL) break;
  }
  if (r != 0) {
    auto why = io_uring_unavailable_reason();
    throw Failure(why ? *why : "io_uring_queue_init: " + errno_text(-r));
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    io_uring_queue_exit(&ring_);
    throw SystemError("eventfd", errno);
  }
  arm_wake();
}

EventLoop::~EventLoop() {
  {
    std::lock_guard lock(post_mu_);
    closed_ = true;
    posted_.clear();
  }
  io_uring_queue_exit(&ring_);
  ::close(wake_fd_);
}

std::string EventLoop::setup_description() const {
  if (setup_flags_ & IORING_SETUP_DEFER_TASKRUN) return "single-issuer+defer-taskrun";
  if (setup_flags_ & IORING_SETUP_COOP_TASKRUN) return "coop-taskrun";
  return "default";
}

io_uring_sqe* EventLoop::next_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    // SQ full: hand what we have to the kernel and try again.
    int r = io_uring_submit(&ring_);
    if (r > 0) counters_.submitted += static_cast<unsigned>(r);
    ++counters_.enter_calls;
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void EventLoop::prep_user_data(io_uring_sqe* sqe, IoHandler* h, unsigned op) {
  auto addr = reinterpret_cast<std::uintptr_t>(h);
  io_uring_sqe_set_data64(sqe, addr | op);
}

void EventLoop::accept(int listen_fd, bool multishot, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  if (multishot)
    io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  else
    io_uring_prep_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  prep_user_data(sqe, h, op);
}

void EventLoop::recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_recv(sqe, fd, buf, len, 0);
  prep_user_data(sqe, h, op);
}

void EventLoop::recv_multishot(int fd, std::uint16_t group, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = group;
  prep_user_data(sqe, h, op);
}

void EventLoop::cancel(IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(h) | op, 0);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

int EventLoop::register_buffer_ring(io_uring_buf_reg* reg) {
  return io_uring_register_buf_ring(&ring_, reg, 0);
}

void EventLoop::unregister_buffer_ring(std::uint16_t group) {
  io_uring_unregister_buf_ring(&ring_, group);
}

void EventLoop::send(int fd, const void* buf, std::size_t len, int flags, IoHandler* h,
                     unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_send(sqe, fd, buf, len, flags | MSG_NOSIGNAL);
  prep_user_data(sqe, h, op);
}

void EventLoop::connect(int fd, const sockaddr* addr, socklen_t len, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_connect(sqe, fd, addr, len);
  prep_user_data(sqe, h, op);
}

void EventLoop::splice(int fd_in, std::int64_t off_in, int fd_out, std::int64_t off_out,
                       unsigned len, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_splice(sqe, fd_in, off_in, fd_out, off_out, len, SPLICE_F_MOVE);
  prep_user_data(sqe, h, op);
}

void EventLoop::timeout(__kernel_timespec* ts, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_timeout(sqe, ts, 0, 0);
  prep_user_data(sqe, h, op);
}

void EventLoop::nop(IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_nop(sqe);
  prep_user_data(sqe, h, op);
}

void EventLoop::fdatasync(int fd, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  prep_user_data(sqe, h, op);
}

void EventLoop::remove_timeout(IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_timeout_remove(sqe, reinterpret_cast<std::uintptr_t>(h) | op, 0);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void EventLoop::cancel_fd(int fd) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void EventLoop::arm_wake() {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof wake_value_, 0);
  io_uring_sqe_set_data64(sqe, kWakeUserData);
}

void EventLoop::post(std::function<void()> task) {
  // The write happens under the lock: the destructor takes the same lock before closing the
  // eventfd, so a post can never write to a closed (or reused) descriptor.
  std::lock_guard lock(post_mu_);
  if (closed_) return;
  bool was_empty = posted_.empty();
  posted_.push_back(std::move(task));
  // One wake-up per batch: the loop drains the whole list when it runs.
  if (was_empty) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }
}

void EventLoop::defer(std::function<void()> task) {
  deferred_.push_back(std::move(task));
}

void EventLoop::run_posted() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(post_mu_);
    tasks.swap(posted_);
  }
  counters_.tasks += tasks.size();
  for (auto& t : tasks)
    t();
}

void EventLoop::dispatch(std::uint64_t user_data, int res, unsigned flags) {
  if (user_data == kIgnoreUserData) return;
  if (user_data == kWakeUserData) {
    run_posted();
    if (!stop_) arm_wake();
    return;
  }
  auto* h = reinterpret_cast<IoHandler*>(user_data & ~std::uint64_t{kMaxOpTag});
  h->on_io(static_cast<unsigned>(user_data & kMaxOpTag), res, flags);
}

namespace {
std::uint64_t clock_ns(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

void EventLoop::run() {
  // Wall and CPU time of the loop's thread: their ratio says whether this thread was the
  // bottleneck (near 1) or waited on something else (the bench reports it).
  const std::uint64_t wall0 = clock_ns(CLOCK_MONOTONIC);
  const std::uint64_t cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  while (!stop_) {
    int r = io_uring_submit_and_wait(&ring_, 1);
    ++counters_.enter_calls;
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
      throw SystemError("io_uring_submit_and_wait", -r);
    if (r > 0) counters_.submitted += static_cast<unsigned>(r);
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      std::uint64_t ud = cqe->user_data;
      int res = cqe->res;
      unsigned flags = cqe->flags;
      io_uring_cqe_seen(&ring_, cqe);
      ++counters_.completions;
      dispatch(ud, res, flags);
    }
    while (!deferred_.empty()) {
      auto tasks = std::move(deferred_);
      deferred_.clear();
      for (auto& t : tasks)
        t();
    }
  }
  // Let the kernel see any final SQEs (cancels) before the ring is torn down.
  io_uring_submit(&ring_);
  counters_.run_ns += clock_ns(CLOCK_MONOTONIC) - wall0;
  counters_.cpu_ns += clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  if (ring_.cq.koverflow) counters_.cq_overflow = *ring_.cq.koverflow;
}

// ---- LoopObject ----

void LoopObject::arm_accept(int fd, bool multishot, unsigned op) {
  ++inflight_;
  loop_.accept(fd, multishot, this, op);
}
void LoopObject::arm_recv(int fd, void* buf, std::size_t len, unsigned op) {
  ++inflight_;
  loop_.recv(fd, buf, len, this, op);
}
void LoopObject::arm_recv_multishot(int fd, std::uint16_t group, unsigned op) {
  ++inflight_;
  loop_.recv_multishot(fd, group, this, op);
}
void LoopObject::arm_send(int fd, const void* buf, std::size_t len, unsigned op, int flags) {
  ++inflight_;
  loop_.send(fd, buf, len, flags, this, op);
}
void LoopObject::arm_connect(int fd, const sockaddr* a, socklen_t len, unsigned op) {
  ++inflight_;
  loop_.connect(fd, a, len, this, op);
}
void LoopObject::arm_splice(int in, std::int64_t off_in, int out, std::int64_t off_out,
                            unsigned len, unsigned op) {
  ++inflight_;
  loop_.splice(in, off_in, out, off_out, len, this, op);
}
void LoopObject::arm_timer(std::uint64_t ns, unsigned op) {
  if (timer_armed_) return;
  timer_ts_.tv_sec = static_cast<long long>(ns / 1000000000u);
  timer_ts_.tv_nsec = static_cast<long long>(ns % 1000000000u);
  timer_armed_ = true;
  timer_op_ = op;
  ++inflight_;
  loop_.timeout(&timer_ts_, this, op);
}
void LoopObject::arm_yield(unsigned op) {
  ++inflight_;
  loop_.nop(this, op);
}
void LoopObject::arm_fdatasync(int fd, unsigned op) {
  ++inflight_;
  loop_.fdatasync(fd, this, op);
}
void LoopObject::disarm_timer() {
  if (timer_armed_) loop_.remove_timeout(this, timer_op_);
}

void LoopObject::begin_close(int fd) {
  if (closing_) return;
  closing_ = true;
  if (fd >= 0) loop_.cancel_fd(fd);
  disarm_timer();
  if (inflight_ == 0) loop_.defer([this] { on_drained(); });
}

void LoopObject::on_io(unsigned op, int res, unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) --inflight_;
  if (timer_armed_ && op == timer_op_ && !(flags & IORING_CQE_F_MORE)) {
    // Only the timer op uses timer_op_'s tag while a timer is armed.
    timer_armed_ = false;
  }
  if (!closing_) {
    on_complete(op, res, flags);
    return;
  }
  if (inflight_ == 0) loop_.defer([this] { on_drained(); });
}

}  // namespace ackxfer
