// `send`'s progress display: a line redrawn in place on a terminal, plain periodic lines
// otherwise. Totals come from a quick walk of the PATH arguments that runs beside the
// transfer (the engine walks lazily, so it cannot say how much is left).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sender/sender.h"

namespace ackxfer::cli {

// Files and bytes under PATH arguments, as the sender will see them (regular files; the
// arguments themselves followed through symlinks, nothing inside a tree).
struct TreeTotals {
  std::atomic<std::uint64_t> files{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<bool> complete{false};
};

// "1.2 GB of 4.5 GB (27%), 1,234 of 5,000 files, 1.10 GB/s, ETA 0:03, 2 retries": the text
// of one progress report. `rate` in bytes/s; `total` may be incomplete (shown as "at least").
std::string progress_text(const SendProgress& p, const TreeTotals& total, double rate);
// "1:02:03", "4:05", "0:07".
std::string eta_text(double seconds);

class ProgressReporter {
 public:
  // `interval`: between plain lines when stderr is not a terminal (a terminal is redrawn
  // twice a second).
  ProgressReporter(Sender& sender, std::vector<std::string> paths,
                   std::chrono::milliseconds interval);
  ~ProgressReporter();  // stops and clears the status line
  void stop();

 private:
  void count_totals(std::vector<std::string> paths);
  void run();

  Sender& sender_;
  TreeTotals totals_;
  bool tty_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<bool> stop_counting_{false};
  std::thread counter_, reporter_;
};

}  // namespace ackxfer::cli
