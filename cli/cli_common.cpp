// Shared CLI helpers.
#include "cli_common.h"

#include <unistd.h>

#include <cstdio>
#include <mutex>

#include "auth/shared_secret.h"
#include "digest/digest.h"
#include "display.h"
#include "error.h"
#include "exit_codes.h"
#include "protocol/limits.h"
#include "sender/sender.h"

#ifndef ACKXFER_VERSION
#define ACKXFER_VERSION "0.0.0"
#endif
#include "git_revision.h"  // generated at build time (cmake/git_revision.cmake)

namespace ackxfer::cli {

const char* exit_code_help() {
  return "Exit status:\n"
#define ACKXFER_EXIT_HELP(name, value, text) "  " #value "  " text "\n"
      ACKXFER_EXIT_CODES(ACKXFER_EXIT_HELP)
#undef ACKXFER_EXIT_HELP
          ;
}

namespace {
// The table's text of each code, for the commands whose list differs from send's.
#define ACKXFER_EXIT_TEXT(name, value, text) \
  [[maybe_unused]] constexpr const char* name##Text = text;
ACKXFER_EXIT_CODES(ACKXFER_EXIT_TEXT)
#undef ACKXFER_EXIT_TEXT
}  // namespace

std::string recv_exit_code_help() {
  // 2 and 6 as for every command; 0 and 9 mean what they mean for a receiver.
  return std::string("Exit status:\n") +
         "  0  stopped by SIGINT or SIGTERM (files not yet verified are not published)\n" +
         "  2  " + kUsageText + "\n  6  " + kSetupText + "\n" +
         "  9  a worker's loop failed while running, or --dir was replaced under it (renamed,\n"
         "     removed and made again, or a file system mounted over it); the message says which\n";
}

namespace {

// stderr is shared by log lines (any thread) and the status line: one lock for both.
std::mutex g_stderr_mu;
std::string g_status;  // the status line now on the terminal, or empty

// "\r" + erase to end of line: the cursor is back at the start of an empty line.
constexpr const char* kEraseLine = "\r\033[K";

}  // namespace

void write_stderr_line(const std::string& line) {
  std::lock_guard lock(g_stderr_mu);
  std::string out;
  if (!g_status.empty()) out += kEraseLine;
  out += line;
  if (!out.ends_with('\n')) out += '\n';
  out += g_status;  // redrawn below what was just written
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

void status_line_set(const std::string& text) {
  std::lock_guard lock(g_stderr_mu);
  g_status = text;
  std::string out = kEraseLine + text;
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

void status_line_clear() {
  std::lock_guard lock(g_stderr_mu);
  if (g_status.empty()) return;
  g_status.clear();
  std::fputs(kEraseLine, stderr);
  std::fflush(stderr);
}

Logger make_stderr_logger(LogLevel level) {
  return Logger(
      [](LogLevel l, std::string_view msg) {
        static const char* names[] = {"error", "warning", "info", "debug"};
        std::string line = "ackxfer-fast: ";
        if (l != LogLevel::kInfo) line += std::string(names[static_cast<int>(l)]) + ": ";
        // Names in messages are made printable where they are built; this is the net under
        // that: no message can carry a control character to the terminal or start a new line.
        line += control_free(msg);
        write_stderr_line(line);
      },
      level);
}

LogLevel parse_log_level(const std::string& s) {
  if (s == "error") return LogLevel::kError;
  if (s == "warning" || s == "warn") return LogLevel::kWarn;
  if (s == "info") return LogLevel::kInfo;
  if (s == "debug") return LogLevel::kDebug;
  throw Failure("--log-level must be error, warning, info or debug (not '" + s + "')",
                FailureKind::kUsage);
}

sigset_t block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

ExitCode exit_code_for(const SendReport& r) {
  switch (r.outcome) {
    case SendReport::Outcome::kOk:
      return kOk;
    case SendReport::Outcome::kSomeFailed:
      return kFilesFailed;
    case SendReport::Outcome::kCannotConnect:
      return kCannotConnect;
    case SendReport::Outcome::kInterrupted:
      return kInterrupted;
    case SendReport::Outcome::kProtocolError:
      return kProtocol;
    case SendReport::Outcome::kAuthFailed:
      return kAuth;
    case SendReport::Outcome::kTimedOut:
      return kTimedOut;
  }
  return kFilesFailed;
}

ExitCode exit_code_for(const std::exception& e) {
  const auto* f = dynamic_cast<const Failure*>(&e);
  if (!f) return kInternal;
  switch (f->kind()) {
    case FailureKind::kUsage:
      return kUsage;
    case FailureKind::kCannotConnect:
      return kCannotConnect;
    case FailureKind::kSetup:
      return kSetup;
    case FailureKind::kInternal:
      return kInternal;
  }
  return kInternal;
}

void parse_options_only(int argc, char** argv,
                        const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm, const std::string& option) {
  namespace po = boost::program_options;
  po::parsed_options parsed = po::command_line_parser(argc, argv).options(desc).run();
  for (const po::option& o : parsed.options)
    if (o.position_key >= 0 && !o.value.empty())
      throw Failure("unexpected argument '" + printable(o.value.front()) +
                    "': this command takes only options (did you mean " + option + " " +
                    printable(o.value.front()) + "?)");
  po::store(parsed, vm);
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

std::optional<TlsCertificates> certificate_options(const std::string& cert, const std::string& key,
                                                   const std::string& ca) {
  if (cert.empty() && key.empty() && ca.empty()) return std::nullopt;
  std::string missing;
  for (auto [name, value] :
       {std::pair{"--tls-cert", &cert}, {"--tls-key", &key}, {"--tls-ca", &ca}})
    if (value->empty()) missing += (missing.empty() ? "" : " and ") + std::string(name);
  if (!missing.empty())
    throw Failure("certificates need --tls-cert, --tls-key and --tls-ca together (missing " +
                  missing + ")");
  return TlsCertificates{cert, key, ca};
}

std::shared_ptr<const SharedSecret> load_secret(const std::string& path, const Logger& log) {
  std::optional<std::string> warning;
  auto secret = load_secret_file(path, warning);
  if (warning) log.warn(*warning);
  return secret;
}

}  // namespace ackxfer::cli
