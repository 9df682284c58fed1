// Errors with context: which operation, which object, which errno, and what kind of failure it
// is, so that the CLI chooses its exit code from the type, never from the text. Per-file
// failures travel as protocol error codes instead (see protocol/error_codes.h).
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ackxfer {

// "open /data/x: No such file or directory": errno text without allocation surprises.
inline std::string errno_text(int err) {
  char buf[128];
  // GNU strerror_r returns a pointer that may or may not be buf.
  const char* s = strerror_r(err, buf, sizeof buf);
  return std::string(s);
}

// What went wrong, for the exit code (cli/exit_codes.h maps each kind to one).
enum class FailureKind {
  kSetup,          // local set-up: io_uring unavailable, a port in use, --dir unusable
  kUsage,          // a bad option or argument
  kCannotConnect,  // the peer's name cannot be resolved, or no peer can be reached
  kInternal,       // an engine loop failed while running: a bug, or the kernel refused the ring
};

// A failure that is not a single errno (bad argument, protocol violation, ...).
class Failure : public std::runtime_error {
 public:
  explicit Failure(const std::string& what, FailureKind kind = FailureKind::kSetup)
      : std::runtime_error(what), kind_(kind) {}
  FailureKind kind() const { return kind_; }

 private:
  FailureKind kind_;
};

// A failed system call, with what we were doing when it failed.
class SystemError : public Failure {
 public:
  SystemError(std::string_view what_doing, int err, FailureKind kind = FailureKind::kSetup)
      : Failure(std::string(what_doing) + ": " + errno_text(err), kind), err_(err) {}
  int code() const { return err_; }

 private:
  int err_;
};

}  // namespace ackxfer
