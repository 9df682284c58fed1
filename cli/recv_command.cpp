// `ackxfer-fast recv`: runs a Receiver until SIGINT or SIGTERM.
#include <sys/stat.h>
#include <boost/program_options.hpp>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "cli_common.h"
#include "display.h"
#include "error.h"
#include "exit_codes.h"
#include "receiver/receiver.h"

namespace po = boost::program_options;

namespace ackxfer::cli {

namespace {

// How often the wait below looks at the receiver's health between signals.
constexpr long kHealthCheckNs = 200'000'000;

// Waits for SIGINT/SIGTERM (returns the signal), or for the receiver to fail (returns 0).
// Meanwhile, with an interval, logs what all sessions did in each one:
// "stats: 1.23 GB/s received, 310 files/s published, 3 sessions".
int wait_printing_stats(Receiver& receiver, const sigset_t& signals, double interval,
                        const Logger& log) {
  const ReceiverStats& s = receiver.stats();
  auto last = std::chrono::steady_clock::now();
  std::uint64_t bytes0 = s.payload_bytes_received.load(), files0 = s.files_published.load();
  const auto every = std::chrono::duration<double>(interval);
  for (;;) {
    timespec timeout{0, kHealthCheckNs};
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig > 0) return sig;
    if (errno != EAGAIN && errno != EINTR) return SIGTERM;
    if (receiver.failure()) return 0;
    auto now = std::chrono::steady_clock::now();
    if (interval <= 0 || now - last < every) continue;
    double secs = std::chrono::duration<double>(now - last).count();
    std::uint64_t bytes = s.payload_bytes_received.load(), files = s.files_published.load();
    char files_rate[32];
    std::snprintf(files_rate, sizeof files_rate, "%.0f",
                  static_cast<double>(files - files0) / secs);
    log.info("stats: " + human_rate(static_cast<double>(bytes - bytes0) / secs) + " received, " +
             files_rate + " files/s published, " +
             counted(s.sessions_active.load(), "session", "sessions") + " open; since start " +
             counted(files, "file", "files") + ", " +
             human_bytes(static_cast<double>(s.bytes_published.load())) + " published, " +
             std::to_string(s.files_failed.load()) + " failed");
    last = now;
    bytes0 = bytes;
    files0 = files;
  }
}

}  // namespace

int recv_command(int argc, char** argv) {
  ReceiverOptions opt;
  std::string dir = ".", log_level = "info", recv_path = "buffers", secret_file, tls_cert, tls_key,
              tls_ca;
  unsigned idle_seconds = 300;
  double keep_partials_hours = 24, stats_interval = 0;
  unsigned control_port = opt.control_port, data_port = opt.data_port;
  po::options_description desc("Options");
  // clang-format off
  desc.add_options()
      ("help,h", "show this help")
      ("dir", po::value(&dir), "destination root, created if missing (default: current directory)")
      ("listen", po::value(&opt.listen)->default_value(opt.listen),
       "address to bind: IPv4, IPv6 or a host name")
      ("port", po::value(&control_port)->default_value(control_port),
       "control port (0: any free port)")
      ("data-port", po::value(&data_port)->default_value(data_port),
       "data port (0: any free port)")
      ("threads", po::value(&opt.threads)->default_value(0),
       "worker threads, each with its own io_uring (0: one per online CPU)")
      ("log-level", po::value(&log_level)->default_value(log_level),
       "error, warning, info or debug")
      ("idle-timeout", po::value(&idle_seconds)->default_value(300),
       "close sessions and data connections idle for this many seconds")
      ("max-sessions", po::value(&opt.max_sessions)->default_value(opt.max_sessions),
       "control sessions served at once; beyond it the oldest that has not said HELLO makes "
       "room, or, if every one has, the newcomer gets a 'busy' reply")
      ("max-handshakes", po::value(&opt.max_handshakes)->default_value(opt.max_handshakes),
       "connections that have not said HELLO yet (nor finished their TLS handshake) held at "
       "once, within --max-sessions; beyond it the oldest of them is closed to make room. With "
       "encryption each holds up to about 60 KiB. Raise it only if more senders than this "
       "connect within one handshake's time")
      ("discard", po::bool_switch(&opt.discard),
       "receive and verify every byte but write nothing: for measuring a link with "
       "`ackxfer-fast bench --mem --to`")
      ("secret-file", po::value(&secret_file),
       "encrypt every connection (TLS 1.3) with a key derived from the secret in this file, and "
       "accept only senders that hold it (see docs/SECURITY.md). Without it or --tls-cert, "
       "names and contents cross the network in clear")
      ("tls-cert", po::value(&tls_cert),
       "instead of a secret: mutual TLS 1.3 with this certificate (PEM; with --tls-key and "
       "--tls-ca); senders need a certificate signed by --tls-ca")
      ("tls-key", po::value(&tls_key), "the private key of --tls-cert (PEM)")
      ("tls-ca", po::value(&tls_ca), "the CA (PEM) that signs the senders' certificates")
      ("allow-unencrypted", po::bool_switch(&opt.allow_unencrypted),
       "with --secret-file or --tls-cert: let senders that ask (send --no-encryption) send file "
       "data in clear; their control connections stay encrypted")
      ("stats-interval", po::value(&stats_interval)->default_value(0),
       "every this many seconds, print throughput and files published across all sessions "
       "(0: never)")
      ("legacy", po::bool_switch(&opt.legacy),
       "also accept classic SEND/READY clients (`SEND <name>`, READY, raw bytes on the data "
       "port); their files cannot be verified and are published when the data connection "
       "closes (see docs/PROTOCOL.md, \"Legacy clients\")")
      ("fsync", po::bool_switch(&opt.fsync),
       "answer a file's verdict only once its data, its name and its directory are on stable "
       "storage (batched, off the network loops): a sender's exit 0 then survives a power loss")
      ("keep-partials", po::value(&keep_partials_hours)->default_value(keep_partials_hours),
       "hours to keep the verified part of an interrupted file for the same send to resume "
       "(0: never keep partial files)")
      ("recv-path", po::value(&recv_path)->default_value(recv_path),
       "buffers (receive into shared buffers, then write) or splice (socket to file through a "
       "pipe); for benchmarks");
  // clang-format on
  po::variables_map vm;
  try {
    parse_options_only(argc, argv, desc, vm, "--dir");
    po::notify(vm);
    if (vm.count("help")) {
      std::cout
          << "Usage: ackxfer-fast recv [--dir DIR] [--listen ADDR] [--port N] "
             "[--data-port N] [--threads N]\n\n"
             "Receives files from `ackxfer-fast send` into DIR. Each file is written to a\n"
             "temporary file and renamed into place only after its XXH3-128 digest\n"
             "matches. Prints one line to stdout once it accepts connections:\n"
             "  listening control=ADDR:PORT data=ADDR:PORT threads=N\n"
             "and everything else to stderr. SIGINT/SIGTERM stop it; files not yet\n"
             "verified are never published. The verified part of an interrupted large\n"
             "file is kept as DIR/.../.ackxfer-<hash>.part (with a .journal) so that\n"
             "running the same send again resumes it; see --keep-partials.\n\n"
          << desc
          << "\nExamples:\n"
             "  ackxfer-fast recv --dir /data\n"
             "  ackxfer-fast recv --dir /data --listen 10.0.0.5 --threads 8\n"
             "  ackxfer-fast recv --dir /tmp/in --port 0 --data-port 0   # any free ports\n"
             "  head -c 32 /dev/urandom | base64 > secret; chmod 600 secret\n"
             "  ackxfer-fast recv --dir /data --secret-file secret   # senders need it too\n\n"
             "Without --secret-file or --tls-cert nothing is encrypted: file names and\n"
             "contents cross the network in clear.\n\n"
          << recv_exit_code_help();
      return kOk;
    }
    if (control_port > 65535 || data_port > 65535) throw Failure("ports are 0 to 65535");
    if (recv_path != "buffers" && recv_path != "splice")
      throw Failure("--recv-path must be buffers or splice");
    opt.recv_path = recv_path == "splice" ? RecvPath::kSplice : RecvPath::kBuffers;
    if (idle_seconds == 0) throw Failure("--idle-timeout must be at least 1 second");
    opt.idle_timeout = std::chrono::seconds(idle_seconds);
    if (opt.max_sessions == 0) throw Failure("--max-sessions must be at least 1");
    if (opt.max_handshakes == 0 || opt.max_handshakes > kMaxHandshakesOption)
      throw Failure("--max-handshakes must be 1 to " + std::to_string(kMaxHandshakesOption));
    if (!(keep_partials_hours >= 0) || keep_partials_hours > 24 * 365 * 100)
      throw Failure("--keep-partials must be 0 or more hours");
    opt.keep_partials = std::chrono::seconds(std::llround(keep_partials_hours * 3600));
    if (!(stats_interval == 0 || stats_interval >= 0.1) || stats_interval > 1e6)
      throw Failure("--stats-interval must be 0 (off) or at least 0.1 seconds");
    opt.certificates = certificate_options(tls_cert, tls_key, tls_ca);
    if (opt.legacy && (!secret_file.empty() || opt.certificates))
      throw Failure(
          "--legacy cannot be combined with --secret-file or --tls-cert: classic clients can "
          "neither authenticate nor encrypt");
    opt.log = make_stderr_logger(parse_log_level(log_level));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ackxfer-fast recv: %s\nTry 'ackxfer-fast recv --help'.\n", e.what());
    return kUsage;
  }
  if (!secret_file.empty()) {
    try {
      opt.secret = load_secret(secret_file, opt.log);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ackxfer-fast recv: %s\n", e.what());
      return kSetup;
    }
  }
  opt.dir = dir;
  opt.control_port = static_cast<std::uint16_t>(control_port);
  opt.data_port = static_cast<std::uint16_t>(data_port);

  // Files get exactly the sender's modes (publish sets them); directories and --dir that the
  // receiver creates on its own account follow the caller's umask, as mkdir -p does.
  sigset_t signals = block_termination_signals();
  Receiver receiver(opt);
  try {
    receiver.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ackxfer-fast recv: %s\n", e.what());
    const auto* f = dynamic_cast<const Failure*>(&e);
    return f && f->kind() == FailureKind::kUsage ? kUsage : kSetup;
  }
  std::printf("listening control=%s data=%s threads=%u\n",
              receiver.control_endpoint().to_string().c_str(),
              receiver.data_endpoint().to_string().c_str(), receiver.threads());
  std::fflush(stdout);
  opt.log.info("receiving into " + dir);

  int sig = wait_printing_stats(receiver, signals, stats_interval, opt.log);
  if (sig)
    opt.log.info(std::string("stopping on ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                 "; unfinished files are not published");
  else
    opt.log.error("stopping: " + receiver.failure().value_or("a worker failed") +
                  "; unfinished files are not published");
  receiver.stop();
  receiver.wait();
  const ReceiverStats& s = receiver.stats();
  opt.log.info(
      "stopped: " + counted(s.files_published.load(), "file", "files") + " (" +
      human_bytes(static_cast<double>(s.bytes_published.load())) + ") published, " +
      std::to_string(s.files_failed.load()) + " failed, " + std::to_string(s.files_skipped.load()) +
      " unchanged, " + std::to_string(s.files_resumed.load()) + " resumed (" +
      human_bytes(static_cast<double>(s.bytes_read_back.load())) +
      " of kept partials read back to check them), " + std::to_string(s.partials_kept.load()) +
      " partials kept, " + counted(s.sessions.load(), "session", "sessions"));
  if (auto why = receiver.failure()) {
    std::fprintf(stderr, "ackxfer-fast recv: %s\n", why->c_str());
    return kInternal;
  }
  return kOk;
}

}  // namespace ackxfer::cli
