// Shared CLI helpers.
#include "cli_common.h"

#include <unistd.h>

#include <cstdio>
#include <mutex>

#include "auth/shared_secret.h"
#include "digest/digest.h"
#include "error.h"
#include "exit_codes.h"
#include "protocol/limits.h"

#ifndef ACKXFER_VERSION
#define ACKXFER_VERSION "0.0.0"
#endif
#ifndef ACKXFER_GIT_REVISION
#define ACKXFER_GIT_REVISION "unknown"
#endif

namespace ackxfer::cli {

const char* exit_code_help() {
  return "Exit status:\n"
#define ACKXFER_EXIT_HELP(name, value, text) "  " #value "  " text "\n"
      ACKXFER_EXIT_CODES(ACKXFER_EXIT_HELP)
#undef ACKXFER_EXIT_HELP
          ;
}

Logger make_stderr_logger(LogLevel level) {
  static std::mutex mu;
  return Logger(
      [](LogLevel l, std::string_view msg) {
        static const char* names[] = {"error", "warning", "info", "debug"};
        std::string line = "ackxfer-fast: ";
        if (l != LogLevel::kInfo) line += std::string(names[static_cast<int>(l)]) + ": ";
        line.append(msg);
        line += "\n";
        std::lock_guard lock(mu);
        std::fwrite(line.data(), 1, line.size(), stderr);
      },
      level);
}

LogLevel parse_log_level(const std::string& s) {
  if (s == "error") return LogLevel::kError;
  if (s == "warning" || s == "warn") return LogLevel::kWarn;
  if (s == "info") return LogLevel::kInfo;
  if (s == "debug") return LogLevel::kDebug;
  throw Failure("--log-level must be error, warning, info or debug (not '" + s + "')");
}

sigset_t block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

std::string version_text() {
  return std::string("ackxfer-fast ") + ACKXFER_VERSION + " (git " + ACKXFER_GIT_REVISION +
         "), protocol " + std::to_string(kProtocolVersion) + ", XXH3 kernel " +
         digest_kernel_name() + "\n";
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (b >= 1000 && u < 5) {
    b /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string human_rate(double bps) {
  return human_bytes(bps) + "/s";
}

std::shared_ptr<const SharedSecret> load_secret(const std::string& path, const Logger& log) {
  std::optional<std::string> warning;
  auto secret = load_secret_file(path, warning);
  if (warning) log.warn(*warning);
  return secret;
}

}  // namespace ackxfer::cli
