// The pipe a splice path moves bytes through, sized for throughput (../shared/DESIGN.md: a
// 256 KiB pipe splices at 1.25 GB/s, 1 MiB at 1.95 on a machine like ours).
//
// The kernel grants less than asked in two ways: fs.pipe-max-size caps every pipe, and once a
// user's pipes hold fs.pipe-user-pages-soft pages (64 MiB by default: 64 pipes of 1 MiB), an
// unprivileged user's new pipes get two pages and cannot grow. Splicing through such a pipe
// crawls, so a pipe below kMinSplicePipeBytes is refused and the caller copies instead.
#pragma once

#include <string>

#include "unique_fd.h"

namespace ackxfer {

constexpr unsigned kWantSplicePipeBytes = 1u << 20;
constexpr unsigned kMinSplicePipeBytes = 256u << 10;

class SplicePipe {
 public:
  // True once the pipe exists, making it on the first call. False if the kernel will not give
  // a usable one; the first such call sets `why` (later ones leave it empty: the refusal is
  // final for this pipe's owner, which copies from then on).
  bool ensure(std::string& why);
  // Drops the pipe and whatever it holds (a refusal stays).
  void reset() {
    read_end_.reset();
    write_end_.reset();
  }
  int read_end() const { return read_end_.get(); }
  int write_end() const { return write_end_.get(); }
  unsigned bytes() const { return bytes_; }  // what the kernel granted

 private:
  UniqueFd read_end_, write_end_;
  unsigned bytes_ = 0;
  bool refused_ = false;
};

}  // namespace ackxfer
