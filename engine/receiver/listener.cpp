// Listener: multishot accept with fallbacks for old kernels and fd exhaustion.
#include "receiver/listener.h"

#include <sys/socket.h>

#include "error.h"

namespace ackxfer {

Listener::Listener(Worker& worker, UniqueFd fd, Kind kind)
    : WorkerObject(worker.loop()), worker_(worker), fd_(std::move(fd)), kind_(kind) {}

void Listener::start() {
  arm();
}

void Listener::arm() {
  arm_accept(fd_.get(), multishot_, kAccept);
}

void Listener::on_complete(unsigned op, int res, unsigned flags) {
  if (op == kRetryTimer) {
    arm();
    return;
  }
  if (res >= 0) {
    UniqueFd conn(res);
    if (kind_ == Kind::kControl)
      worker_.adopt_control_connection(std::move(conn));
    else
      worker_.adopt_data_connection(std::move(conn));
    if (!(flags & IORING_CQE_F_MORE)) arm();
    return;
  }
  if (res == -EINVAL && multishot_) {
    // Kernel without multishot accept (before 5.19): one accept at a time still works.
    multishot_ = false;
    arm();
    return;
  }
  if (res == -ECANCELED) return;
  // EMFILE/ENFILE/ENOMEM: out of fds or memory. Back off briefly instead of spinning; the
  // pending connections wait in the backlog.
  worker_.ctx().log.warn(std::string(kind_ == Kind::kControl ? "control" : "data") +
                         " accept failed: " + errno_text(-res) + "; retrying in 100 ms");
  if (flags & IORING_CQE_F_MORE) return;
  arm_timer(100'000'000, kRetryTimer);
}

void Listener::shutdown() {
  begin_close(fd_.get());
}

void Listener::on_drained() {
  fd_.reset();
  worker_.release(this);
}

}  // namespace ackxfer
