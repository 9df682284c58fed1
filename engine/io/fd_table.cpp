// raise_fd_limit and presize_fd_table.
#include "io/fd_table.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

namespace ackxfer {

unsigned raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur == RLIM_INFINITY ? 1u << 20 : static_cast<unsigned>(rl.rlim_cur);
}

void presize_fd_table(unsigned fds) {
  if (fds < 2) return;
  // Duplicating onto the highest number we want grows the table to cover it; the table
  // never shrinks when the descriptor is closed again.
  int fd = fcntl(0, F_DUPFD_CLOEXEC, static_cast<int>(fds - 1));
  if (fd < 0) {
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (probe < 0) return;
    fd = fcntl(probe, F_DUPFD_CLOEXEC, static_cast<int>(fds - 1));
    close(probe);
  }
  if (fd >= 0) close(fd);
}

}  // namespace ackxfer
