// LoopObject: in-flight accounting and per-tag timers, for any Loop.
#include "io/loop.h"

#include <chrono>

namespace ackxfer {

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void LoopObject::arm_accept(int fd, unsigned op) {
  ++inflight_;
  loop_.accept(fd, this, op);
}
void LoopObject::arm_recv(int fd, void* buf, std::size_t len, unsigned op) {
  ++inflight_;
  loop_.recv(fd, buf, len, this, op);
}
void LoopObject::arm_recv_multishot(int fd, std::uint16_t pool, unsigned op) {
  ++inflight_;
  loop_.recv_multishot(fd, pool, this, op);
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
void LoopObject::arm_yield(unsigned op) {
  ++inflight_;
  loop_.nop(this, op);
}
void LoopObject::arm_fdatasync(int fd, unsigned op) {
  ++inflight_;
  loop_.fdatasync(fd, this, op);
}

void LoopObject::arm_timer(std::uint64_t ns, unsigned op) {
  const auto bit = static_cast<std::uint8_t>(1u << op);
  if (closing_) return;
  if (timers_ & bit) {
    // Replace: remove the running one; its completion arms this one (see on_io).
    rearm_ns_[op] = ns;
    if (!(removing_ & bit)) {
      removing_ |= bit;
      loop_.remove_timeout(this, op);
    }
    return;
  }
  timers_ |= bit;
  ++inflight_;
  loop_.timeout(ns, this, op);
}

void LoopObject::disarm_timer(unsigned op) {
  const auto bit = static_cast<std::uint8_t>(1u << op);
  if (!(timers_ & bit)) return;
  // A replacement on its way is called off too; the cancelled completion is reported.
  if (!(removing_ & bit)) loop_.remove_timeout(this, op);
  removing_ &= static_cast<std::uint8_t>(~bit);
}

void LoopObject::begin_close(int fd) {
  if (closing_) return;
  closing_ = true;
  if (fd >= 0) loop_.cancel_fd(fd);
  for (unsigned op = 0; op <= kMaxOpTag; ++op)
    if (timer_armed(op) && !((removing_ >> op) & 1u)) loop_.remove_timeout(this, op);
  removing_ = 0;
  if (inflight_ == 0) loop_.defer([this] { on_drained(); });
}

void LoopObject::on_io(unsigned op, const Completion& c) {
  if (!c.more) --inflight_;
  const auto bit = static_cast<std::uint8_t>(1u << op);
  if ((timers_ & bit) && !c.more) {
    // Only a timer uses its tag while it is armed.
    if (removing_ & bit) {
      removing_ &= static_cast<std::uint8_t>(~bit);
      if (!closing_) {
        ++inflight_;
        loop_.timeout(rearm_ns_[op], this, op);
        return;
      }
    }
    timers_ &= static_cast<std::uint8_t>(~bit);
  }
  if (!closing_) {
    on_complete(op, c);
    return;
  }
  if (inflight_ == 0) loop_.defer([this] { on_drained(); });
}

}  // namespace ackxfer
