#include "io/splice_pipe.h"

#include <fcntl.h>
#include <unistd.h>

#include "error.h"

namespace ackxfer {

bool SplicePipe::ensure(std::string& why) {
  if (read_end_) return true;
  if (refused_) return false;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    refused_ = true;
    why = "cannot create a pipe: " + errno_text(errno);
    return false;
  }
  UniqueFd r(p[0]), w(p[1]);
  // fs.pipe-max-size may be lower than we want: step down to what it allows.
  int set_errno = 0;
  for (unsigned want = kWantSplicePipeBytes; want >= kMinSplicePipeBytes; want /= 2) {
    if (fcntl(p[1], F_SETPIPE_SZ, want) >= 0) {
      set_errno = 0;
      break;
    }
    set_errno = errno;
  }
  int sz = fcntl(p[1], F_GETPIPE_SZ);
  unsigned granted = sz > 0 ? static_cast<unsigned>(sz) : 0;
  if (granted < kMinSplicePipeBytes) {
    refused_ = true;
    why = "the kernel granted a pipe of only " + std::to_string(granted / 1024) + " KiB" +
          (set_errno != 0 ? " (" + errno_text(set_errno) +
                                ": fs.pipe-max-size, or this user's pipes have reached "
                                "fs.pipe-user-pages-soft)"
                          : std::string());
    return false;
  }
  read_end_ = std::move(r);
  write_end_ = std::move(w);
  bytes_ = granted;
  return true;
}

}  // namespace ackxfer
