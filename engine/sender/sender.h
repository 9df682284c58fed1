// The sender engine: walks the PATH arguments, runs the control session and the data streams on
// `threads` io_uring loops, and reports what was delivered and verified.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "log.h"

namespace ackxfer {

// How the bytes of large chunks leave the sender (chunks under 1 MiB always take kCopy, packed
// several to a send):
//   kCopy:   pread into the send buffer, hash it there while hot, send it (two copies).
//   kMmap:   hash the page-cache pages through a mapping, send from the mapping (one copy, in
//            the kernel).
//   kSplice: hash through a mapping, splice the same pages to the socket through a pipe
//            (no copy on the sender; the receiver copies from the page cache).
//   kAuto:   chosen by destination (docs/PERFORMANCE.md says why).
enum class SendPath { kAuto, kCopy, kMmap, kSplice };
const char* send_path_name(SendPath p);
std::optional<SendPath> parse_send_path(std::string_view name);

struct SenderOptions {
  std::string to;  // HOST[:PORT]
  std::vector<std::string> paths;
  unsigned streams = 4;
  unsigned threads = 0;  // 0: min(streams, online CPUs)
  std::chrono::milliseconds retry_for{10'000};
  SendPath send_path = SendPath::kAuto;
  std::uint64_t chunk_bytes = 0;  // 0: the protocol default
  Logger log;
};

struct FailedFile {
  std::string path;
  std::string reason;
};

struct SendReport {
  enum class Outcome {
    kOk,             // every file delivered and verified
    kSomeFailed,     // the session completed but some files did not make it
    kCannotConnect,  // no session could be established within --retry-for
    kInterrupted,    // the receiver went away or shut down mid-transfer, or we were cancelled
    kProtocolError,  // the receiver answered something this sender cannot understand
  };
  Outcome outcome = Outcome::kOk;
  std::string error;              // session-level problem, for the user; empty when kOk/kSomeFailed
  std::uint64_t files = 0;        // files delivered and verified
  std::uint64_t directories = 0;  // directories created
  std::uint64_t bytes = 0;        // payload bytes of the delivered files
  std::uint64_t retries = 0;      // chunk re-sends + file re-sends + reconnects
  std::uint64_t skipped = 0;      // symlinks and special files not sent
  double seconds = 0;
  std::vector<FailedFile> failed;
  std::string send_path;  // which path ran: "copy" or "splice"
  unsigned streams = 0;
  unsigned threads = 0;
};

struct SenderContext;

class Sender {
 public:
  explicit Sender(SenderOptions options);
  ~Sender();
  // Runs the whole transfer on the calling thread (plus threads-1 helpers). Throws Failure
  // only for bad options (unparseable --to, unresolvable host, io_uring unavailable).
  SendReport run();
  // Thread-safe (not async-signal-safe): ends the transfer early; run() reports kInterrupted.
  void cancel();

 private:
  SenderOptions options_;
  std::mutex ctx_mu_;
  SenderContext* ctx_ = nullptr;   // guarded by ctx_mu_; set while run() is running
  bool cancel_requested_ = false;  // guarded by ctx_mu_
};

}  // namespace ackxfer
