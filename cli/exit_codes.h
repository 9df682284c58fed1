// Process exit codes: documented in --help, the README and the man page (docs/ackxfer-fast.1),
// which say the same. Scripts depend on them; never renumber.
#pragma once

#include <exception>
#include <string>

namespace ackxfer {
struct SendReport;
}

namespace ackxfer::cli {

// X(name, value, meaning)
#define ACKXFER_EXIT_CODES(X)                                                               \
  X(kOk, 0,                                                                                 \
    "success: every file was delivered and verified (special files and names shaped like "  \
    "the receiver's temp files are skipped, each with a warning)")                          \
  X(kFilesFailed, 1, "some files failed (each is named on stderr)")                         \
  X(kUsage, 2, "usage error: bad option or argument")                                       \
  X(kCannotConnect, 3, "cannot connect: no receiver reachable within --retry-for")          \
  X(kInterrupted, 4, "interrupted: the receiver went away or a signal stopped us")          \
  X(kProtocol, 5, "protocol error: the peer is not a compatible ackxfer-fast")              \
  X(kSetup, 6,                                                                              \
    "local setup failed: io_uring unavailable, port in use, cannot create --dir, "          \
    "unreadable --secret-file or certificate")                                              \
  X(kAuth, 7,                                                                               \
    "authentication failed: --secret-file missing or different, a certificate refused, "    \
    "one side unencrypted, data in clear refused, or 4 handshakes in a row damaged in "     \
    "transit")                                                                              \
  X(kTimedOut, 8,                                                                           \
    "timed out: the receiver stopped answering (no connect, no answer to HELLO, or silent " \
    "for --idle-timeout while it owed an answer) and did not come back within --retry-for") \
  X(kInternal, 9,                                                                           \
    "internal error: an engine loop failed while running (a bug, or the kernel "            \
    "refused io_uring); the message says which")

enum ExitCode {
#define ACKXFER_EXIT_ENUM(name, value, text) name = value,
  ACKXFER_EXIT_CODES(ACKXFER_EXIT_ENUM)
#undef ACKXFER_EXIT_ENUM
};

// "Exit status:" section for send's and bench's --help.
const char* exit_code_help();
// The same for recv, which serves until stopped.
std::string recv_exit_code_help();

// The exit code for a transfer's outcome (send, and bench's runs).
ExitCode exit_code_for(const SendReport& r);
// A failure before or around the transfer, by its kind (never by its text).
ExitCode exit_code_for(const std::exception& e);

}  // namespace ackxfer::cli
