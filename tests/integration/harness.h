// Helpers for integration tests that run the real ackxfer-fast binary over loopback: child
// processes with deadlines, a receiver that reports its ports, temp trees and tree comparison.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ackxfer::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string binary_path();      // the ackxfer-fast under test
std::string faultproxy_path();  // tools/ackxfer-faultproxy

// A fresh directory, removed with everything in it at destruction. On tmpfs when available,
// so that big files test the engine, not the disk.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "t");
  ~TempDir();
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& p) const { return path_ / p; }

 private:
  fs::path path_;
};

struct ProcessResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  int term_signal = 0;
  bool timed_out = false;
  std::string out, err;
};

// A child process. stdout can be read line by line while it runs; stderr goes to a file.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const fs::path& workdir = {});
  ~Process();  // kills the child if still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // Reads one stdout line; nullopt on EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  void signal(int sig);
  // What it has written to stderr so far.
  std::string stderr_so_far() const;
  // Waits for exit; on timeout kills it with SIGKILL and reports timed_out.
  ProcessResult wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string out_buf_;
  fs::path err_file_;
  bool reaped_ = false;
  ProcessResult result_;
};

// Runs to completion (or kills at the deadline).
ProcessResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 120s);

// `ackxfer-fast recv` on 127.0.0.1 with free ports, started and parsed. `prefix` runs it
// through another command (setpriv ... --).
class ReceiverProcess {
 public:
  explicit ReceiverProcess(const fs::path& dir, unsigned threads = 2,
                           std::vector<std::string> extra = {}, std::uint16_t port = 0,
                           std::uint16_t data_port = 0, const std::string& listen = "127.0.0.1",
                           const std::vector<std::string>& prefix = {});
  std::uint16_t port() const { return port_; }
  std::uint16_t data_port() const { return data_port_; }
  std::string to() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& listening_line() const { return line_; }
  Process& process() { return *proc_; }
  // SIGTERM and wait.
  ProcessResult stop(std::chrono::milliseconds timeout = 10s);

 private:
  std::unique_ptr<Process> proc_;
  std::string line_;
  std::uint16_t port_ = 0, data_port_ = 0;
};

// tools/ackxfer-faultproxy in front of a receiver. It listens on 127.0.0.2 with the receiver's
// port numbers, so the sender's data connections (same host as control, announced port) go
// through it too. `faults` are its command-line options (--flip PORT:OFFSET, ...).
class FaultProxy {
 public:
  FaultProxy(const ReceiverProcess& r, std::vector<std::string> faults);
  const std::string& to() const { return to_; }

 private:
  std::unique_ptr<Process> proc_;
  std::string to_;
};

// Polls `pred` every 20 ms until it holds (true) or `timeout` passes (false).
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);
// True when the only temp files under `p` are kept partials: `.ackxfer-<16 hex>.part` files,
// each with at most a `.journal` of the same name beside it.
bool only_kept_partials(const fs::path& p);
// Whether process `pid` holds open a nameless file (O_TMPFILE) created in `dir`.
bool holds_nameless_file(pid_t pid, const fs::path& dir);
// Chunks that the journals of kept partial files under `p` record as verified.
std::size_t journaled_chunks_under(const fs::path& p);

// Runs `ackxfer-fast send` with `args` (e.g. {"--to", r.to(), path}).
ProcessResult send(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 120s);

// A port that was free a moment ago and that no earlier call in this process returned, so two
// calls in a row (a control and a data port) never give the same one.
std::uint16_t free_port();

// A listening socket on 127.0.0.1 at a port the kernel picks, for stand-in servers; sets
// `port`. Returns -1 (and fails the test) if it cannot.
int listen_on_loopback(std::uint16_t& port);

// Writes `size` pseudo-random bytes (deterministic for a seed).
void write_file(const fs::path& p, std::uint64_t size, std::uint64_t seed = 1);
void write_text(const fs::path& p, const std::string& text);
std::string read_text(const fs::path& p);

// Empty when `got` holds exactly what `want` holds: same names, types, contents and (when
// `metadata`) permission bits and mtimes of files; symlinks are compared, never followed: same
// target bytes and (when `metadata`) the link's own mtime. Otherwise the first difference.
std::string compare_trees(const fs::path& want, const fs::path& got, bool metadata = true);
// Number of entries under p (recursive).
std::size_t count_entries(const fs::path& p);
// Names under p that look like our temp files.
std::vector<std::string> temp_files_under(const fs::path& p);

// A value from the single JSON object printed by --json (numbers and simple strings only).
std::optional<std::string> json_field(const std::string& json, const std::string& key);
// A number field of the --json object; ~0 when it is missing.
std::uint64_t json_u64(const std::string& json, const std::string& key);

// Whether this (and so the binary under test) is a sanitizer build: their allocators keep
// freed memory in quarantine and add shadow memory, so RSS says nothing about ours there.
constexpr bool kSanitizedBuild =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#else
    false;
#endif

// A process's resident memory (VmRSS, KiB) and how many fds it holds; -1 if unknown.
long proc_rss_kb(pid_t pid);
long proc_fd_count(pid_t pid);

// Raises this process's fd limit to its hard limit (tests that open many connections).
void raise_fd_limit_for_tests();

}  // namespace ackxfer::test

namespace ackxfer::test {

// A data frame as a sender would send it (payload `payload`, header saying `announced`).
std::string frame_bytes(const std::string& token_hex, std::uint64_t offset,
                        const std::string& payload, std::uint64_t announced);
class RawClient {
 public:
  explicit RawClient(std::uint16_t port, const std::string& host = "127.0.0.1");
  ~RawClient();
  bool connected() const { return fd_ >= 0; }
  bool send_bytes(const std::string& bytes);
  // One line without '\n'; nullopt on EOF/timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = 5s);
  // Exactly n bytes; nullopt on EOF/timeout.
  std::optional<std::string> read_exact(std::size_t n, std::chrono::milliseconds timeout = 5s);
  // True once the peer has closed (EOF or reset) within the timeout.
  bool closed_by_peer(std::chrono::milliseconds timeout = 5s);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
};

// The status of the next ack on a data connection, as its wire number (AckStatus); -1 on EOF,
// timeout or a malformed ack.
int read_ack_status(RawClient& d);

}  // namespace ackxfer::test
