// UringLoop: the io_uring implementation of Loop.
#include "io/uring_loop.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
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

std::uint64_t clock_ns(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

// A provided-buffer ring (io_uring "buffer select"), registered by hand: liburing 2.3 has no
// io_uring_setup_buf_ring. Buffer ids are unique across the loop's pools, so a completion's
// buffer id alone says which pool and which buffer.
struct UringLoop::Pool {
  std::uint16_t group = 0;
  unsigned count = 0;
  std::uint16_t first_id = 0;
  std::size_t bytes = 0;
  io_uring_buf_ring* ring = nullptr;
  std::size_t ring_bytes = 0;
  std::uint8_t* storage = nullptr;

  void give_back(std::uint16_t id, std::uint8_t* data) {
    io_uring_buf_ring_add(ring, data, static_cast<unsigned>(bytes), id,
                          io_uring_buf_ring_mask(count), 0);
    io_uring_buf_ring_advance(ring, 1);
  }
  ~Pool() {
    if (storage) munmap(storage, bytes * count);
    if (ring) munmap(ring, ring_bytes);
  }
};

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

UringLoop::UringLoop(unsigned queue_depth) {
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
    throw Failure(why ? *why : "io_uring_queue_init: " + errno_text(-r), FailureKind::kSetup);
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    io_uring_queue_exit(&ring_);
    throw SystemError("eventfd", errno);
  }
  arm_wake();
}

UringLoop::~UringLoop() {
  {
    std::lock_guard lock(post_mu_);
    closed_ = true;
    posted_.clear();
  }
  for (auto& p : pools_)
    io_uring_unregister_buf_ring(&ring_, p->group);
  io_uring_queue_exit(&ring_);
  ::close(wake_fd_);
}

std::string UringLoop::setup_description() const {
  if (setup_flags_ & IORING_SETUP_DEFER_TASKRUN) return "single-issuer+defer-taskrun";
  if (setup_flags_ & IORING_SETUP_COOP_TASKRUN) return "coop-taskrun";
  return "default";
}

std::int64_t UringLoop::now_ms() const {
  return steady_ms();
}

io_uring_sqe* UringLoop::next_sqe() {
  // Keep submission order: once ops wait in the backlog, new ones queue behind them.
  if (backlog_.empty()) {
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
    // SQ full: hand what we have to the kernel, once. If it cannot take it now (its CQ is
    // overflowing, which only the loop's own reaping fixes), park the op in user space: the
    // loop submits it after the next completions. Never spin here.
    int r = io_uring_submit(&ring_);
    ++counters_.enter_calls;
    if (r > 0) {
      counters_.submitted += static_cast<unsigned>(r);
      after_submit();
    } else if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR) {
      throw SystemError("io_uring_submit", -r);
    }
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
  }
  ++counters_.sq_backlog;
  io_uring_sqe& parked = backlog_.emplace_back();
  std::memset(&parked, 0, sizeof parked);
  return &parked;
}

void UringLoop::submit_backlog() {
  while (!backlog_.empty()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return;
    *sqe = backlog_.front();
    backlog_.pop_front();
  }
}

void UringLoop::after_submit() {
  // The kernel has read every timespec of what it consumed.
  if (backlog_.empty() && io_uring_sq_ready(&ring_) == 0) timespecs_.clear();
}

void UringLoop::prep_user_data(io_uring_sqe* sqe, IoHandler* h, unsigned op) {
  auto addr = reinterpret_cast<std::uintptr_t>(h);
  io_uring_sqe_set_data64(sqe, addr | op);
}

void UringLoop::accept(int listen_fd, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  prep_user_data(sqe, h, op);
}

void UringLoop::recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_recv(sqe, fd, buf, len, 0);
  prep_user_data(sqe, h, op);
}

void UringLoop::recv_multishot(int fd, std::uint16_t pool, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = pool;
  prep_user_data(sqe, h, op);
}

void UringLoop::send(int fd, const void* buf, std::size_t len, int flags, IoHandler* h,
                     unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_send(sqe, fd, buf, len, flags | MSG_NOSIGNAL);
  prep_user_data(sqe, h, op);
}

void UringLoop::connect(int fd, const sockaddr* addr, socklen_t len, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_connect(sqe, fd, addr, len);
  prep_user_data(sqe, h, op);
}

void UringLoop::splice(int fd_in, std::int64_t off_in, int fd_out, std::int64_t off_out,
                       unsigned len, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_splice(sqe, fd_in, off_in, fd_out, off_out, len, SPLICE_F_MOVE);
  prep_user_data(sqe, h, op);
}

void UringLoop::fdatasync(int fd, IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  prep_user_data(sqe, h, op);
}

void UringLoop::timeout(std::uint64_t ns, IoHandler* h, unsigned op) {
  __kernel_timespec& ts = timespecs_.emplace_back();
  ts.tv_sec = static_cast<long long>(ns / 1000000000u);
  ts.tv_nsec = static_cast<long long>(ns % 1000000000u);
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_timeout(sqe, &ts, 0, 0);
  prep_user_data(sqe, h, op);
}

void UringLoop::remove_timeout(IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_timeout_remove(sqe, reinterpret_cast<std::uintptr_t>(h) | op, 0);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void UringLoop::nop(IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_nop(sqe);
  prep_user_data(sqe, h, op);
}

void UringLoop::cancel(IoHandler* h, unsigned op) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(h) | op, 0);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void UringLoop::cancel_fd(int fd) {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void UringLoop::cancel_all() {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void UringLoop::add_buffer_pool(std::uint16_t group, unsigned count, std::size_t bytes) {
  if (count == 0 || (count & (count - 1)) != 0 || count > 32768 || slots_.size() + count > 65536)
    throw Failure("buffer pool size must be a power of two up to 32768");
  auto p = std::make_unique<Pool>();
  p->group = group;
  p->count = count;
  p->bytes = bytes;
  p->first_id = static_cast<std::uint16_t>(slots_.size());
  p->ring_bytes = sizeof(io_uring_buf) * count;
  void* r =
      mmap(nullptr, p->ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) throw SystemError("mmap buffer ring", errno);
  p->ring = static_cast<io_uring_buf_ring*>(r);
  // The buffers: pages become resident only as data lands in them, so a pool that is never
  // filled costs address space, not memory.
  void* s =
      mmap(nullptr, bytes * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) throw SystemError("mmap receive buffers", errno);
  p->storage = static_cast<std::uint8_t*>(s);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(p->ring);
  reg.ring_entries = count;
  reg.bgid = group;
  if (int r2 = io_uring_register_buf_ring(&ring_, &reg, 0))
    throw Failure("io_uring cannot register a provided-buffer ring (" + errno_text(-r2) +
                      "); ackxfer-fast needs Linux 6.0 or newer",
                  FailureKind::kSetup);
  io_uring_buf_ring_init(p->ring);
  int mask = io_uring_buf_ring_mask(count);
  for (unsigned i = 0; i < count; ++i) {
    std::uint8_t* data = p->storage + std::size_t{i} * bytes;
    auto id = static_cast<std::uint16_t>(p->first_id + i);
    io_uring_buf_ring_add(p->ring, data, static_cast<unsigned>(bytes), id, mask,
                          static_cast<int>(i));
    slots_.push_back(Slot{data, p.get()});
  }
  io_uring_buf_ring_advance(p->ring, static_cast<int>(count));
  pools_.push_back(std::move(p));
}

void UringLoop::arm_wake() {
  io_uring_sqe* sqe = next_sqe();
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof wake_value_, 0);
  io_uring_sqe_set_data64(sqe, kWakeUserData);
}

void UringLoop::post(std::function<void()> task) {
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

void UringLoop::defer(std::function<void()> task) {
  deferred_.push_back(std::move(task));
}

void UringLoop::run_posted() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(post_mu_);
    tasks.swap(posted_);
  }
  counters_.tasks += tasks.size();
  for (auto& t : tasks)
    t();
}

void UringLoop::dispatch(std::uint64_t user_data, int res, unsigned flags) {
  if (user_data == kIgnoreUserData) return;
  if (user_data == kWakeUserData) {
    run_posted();
    if (!stop_) arm_wake();
    return;
  }
  auto* h = reinterpret_cast<IoHandler*>(user_data & ~std::uint64_t{kMaxOpTag});
  auto op = static_cast<unsigned>(user_data & kMaxOpTag);
  Completion c{res, (flags & IORING_CQE_F_MORE) != 0, {}};
  if (res == -ENOBUFS) ++counters_.buffers_exhausted;
  if (!(flags & IORING_CQE_F_BUFFER)) {
    h->on_io(op, c);
    return;
  }
  auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
  if (id >= slots_.size()) throw Failure("io_uring returned an unknown buffer id");
  Slot& s = slots_[id];
  if (res > 0) c.data = {s.data, static_cast<std::size_t>(res)};
  h->on_io(op, c);
  // The handler has used the bytes (connections copy or write them out synchronously).
  s.pool->give_back(id, s.data);
}

void UringLoop::turn(bool wait) {
  submit_backlog();
  int r = wait ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit(&ring_);
  ++counters_.enter_calls;
  if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
    throw SystemError("io_uring_submit_and_wait", -r);
  if (r > 0) {
    counters_.submitted += static_cast<unsigned>(r);
    after_submit();
  }
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

void UringLoop::run() {
  // Wall and CPU time of the loop's thread: their ratio says whether this thread was the
  // bottleneck (near 1) or waited on something else (the bench reports it).
  const std::uint64_t wall0 = clock_ns(CLOCK_MONOTONIC);
  const std::uint64_t cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  try {
    while (!stop_)
      turn(true);
  } catch (...) {
    counters_.run_ns += clock_ns(CLOCK_MONOTONIC) - wall0;
    counters_.cpu_ns += clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    throw;
  }
  // Let the kernel see any final SQEs (cancels) before the ring is torn down.
  submit_backlog();
  io_uring_submit(&ring_);
  counters_.run_ns += clock_ns(CLOCK_MONOTONIC) - wall0;
  counters_.cpu_ns += clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  if (ring_.cq.koverflow) counters_.cq_overflow = *ring_.cq.koverflow;
}

void UringLoop::run_until(const std::function<bool()>& done, std::int64_t max_ms) {
  const std::int64_t deadline = now_ms() + max_ms;
  // A short timer keeps each wait bounded, so the deadline is honoured even when nothing
  // completes.
  while (!done() && now_ms() < deadline) {
    __kernel_timespec ts{0, 20'000'000};
    submit_backlog();
    io_uring_cqe* cqe = nullptr;
    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    ++counters_.enter_calls;
    turn(false);
  }
}

}  // namespace ackxfer
