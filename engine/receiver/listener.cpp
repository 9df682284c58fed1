// Listener: multishot accept, backing off when the process is out of fds.
#include "receiver/listener.h"

#include <sys/socket.h>

#include "error.h"

namespace ackxfer {

Listener::Listener(Worker& worker, UniqueFd fd, Kind kind)
    : WorkerObject(worker), fd_(std::move(fd)), kind_(kind) {}

void Listener::start() {
  arm();
}

void Listener::arm() {
  arm_accept(fd_.get(), kAccept);
}

void Listener::on_complete(unsigned op, const Completion& c) {
  if (op == kRetryTimer) {
    arm();
    return;
  }
  if (c.res >= 0) {
    UniqueFd conn(c.res);
    if (kind_ == Kind::kControl)
      worker_.take_control_connection(std::move(conn));
    else
      worker_.take_data_connection(std::move(conn));
    if (!c.more) arm();
    return;
  }
  if (c.res == -ECANCELED) return;
  // EMFILE/ENFILE/ENOMEM: out of fds or memory. Back off briefly instead of spinning; the
  // pending connections wait in the backlog.
  worker_.ctx().log.warn(std::string(kind_ == Kind::kControl ? "control" : "data") +
                         " accept failed: " + errno_text(-c.res) + "; retrying in 100 ms");
  if (c.more) return;
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
