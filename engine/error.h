// Errors with context: which operation, which object, which errno. Used by setup code that
// throws; per-file failures travel as protocol error codes instead (see protocol/control_codec.h).
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

// A failed system call, with what we were doing when it failed.
class SystemError : public std::runtime_error {
 public:
  SystemError(std::string_view what_doing, int err)
      : std::runtime_error(std::string(what_doing) + ": " + errno_text(err)), err_(err) {}
  int code() const { return err_; }

 private:
  int err_;
};

// A failure that is not a single errno (bad argument, protocol violation, ...).
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ackxfer
