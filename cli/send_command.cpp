// `ackxfer-fast send`: runs a Sender and reports per-file failures and the summary.
#include <pthread.h>
#include <boost/program_options.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "cli_common.h"
#include "display.h"
#include "error.h"
#include "exit_codes.h"
#include "json_writer.h"
#include "progress.h"
#include "sender/sender.h"

namespace po = boost::program_options;

namespace ackxfer::cli {
namespace {

// No receiver reached, or none that would talk to us, and nothing made there: the error says
// it all, and a summary of zeros would only bury it.
bool nothing_happened(const SendReport& r) {
  if (!r.started) return true;  // no PATH could be sent: there is nothing to sum up
  const bool refused = r.outcome == SendReport::Outcome::kCannotConnect ||
                       r.outcome == SendReport::Outcome::kAuthFailed ||
                       r.outcome == SendReport::Outcome::kProtocolError;
  return refused && r.files == 0 && r.unchanged == 0 && r.directories == 0 && r.symlinks == 0;
}

const char* outcome_name(SendReport::Outcome o) {
  switch (o) {
    case SendReport::Outcome::kOk:
      return "ok";
    case SendReport::Outcome::kSomeFailed:
      return "some-failed";
    case SendReport::Outcome::kCannotConnect:
      return "cannot-connect";
    case SendReport::Outcome::kInterrupted:
      return "interrupted";
    case SendReport::Outcome::kProtocolError:
      return "protocol-error";
    case SendReport::Outcome::kAuthFailed:
      return "auth-failed";
    case SendReport::Outcome::kTimedOut:
      return "timed-out";
  }
  return "?";
}

// Below this much data the run is mostly set-up and round trips: no limit worth naming.
constexpr std::uint64_t kLimiterMinBytes = 64ull << 20;

// What this side can tell about the limit: its own threads' CPU. The receiver's side is in
// its own log (and `ackxfer-fast bench` measures both).
std::string limiter_text(const SendReport& r) {
  int busy = static_cast<int>(std::lround(r.busiest_thread * 100));
  if (r.busiest_thread >= 0.85)
    return "limited by this machine's CPU: a sender thread was " + std::to_string(busy) +
           "% busy (more --threads may help if --streams > 1)";
  return "not limited by this machine's CPU (busiest sender thread " + std::to_string(busy) +
         "% busy): the network, the receiver or the source disk set the pace";
}

SendPath send_path_option(const std::string& s) {
  if (auto p = parse_send_path(s)) return *p;
  throw Failure("--send-path must be auto, copy, mmap or splice (not '" + s + "')",
                FailureKind::kUsage);
}

std::string report_json(const SendReport& r) {
  JsonWriter j;
  j.begin_object()
      .field("outcome", outcome_name(r.outcome))
      .field("started", r.started)
      .field("files", r.files)
      .field("directories", r.directories)
      .field("symlinks", r.symlinks)
      .field("bytes", r.bytes)
      .field("seconds", r.seconds)
      .field("bytes_per_second", r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds : 0.0)
      .field("retries", r.retries)
      .field("failed", static_cast<std::uint64_t>(r.failed.size()))
      .field("skipped", r.skipped)
      .field("unchanged", r.unchanged)
      .field("unchanged_bytes", r.unchanged_bytes)
      .field("resumed_bytes", r.resumed_bytes)
      .field("streams", r.streams)
      .field("threads", r.threads)
      .field("send_path", r.send_path)
      .field("durable", r.durable)
      .field("encryption", r.encryption)
      .field("control_encryption", r.control_encryption);
  if (!r.error.empty()) j.field("error", r.error);
  j.begin_array("failures");
  for (const auto& f : r.failed)
    j.begin_object().field("path", f.path).field("reason", f.reason).end_object();
  j.end_array().end_object();
  return j.str() + "\n";
}

}  // namespace

int send_command(int argc, char** argv) {
  SenderOptions opt;
  std::string log_level = "warning", send_path = "auto", secret_file, tls_cert, tls_key, tls_ca;
  double retry_for = 10, progress_interval = 10, idle_timeout = 300;
  bool json = false, quiet = false;
  po::options_description desc("Options");
  // clang-format off
  desc.add_options()
      ("help,h", "show this help")
      ("to", po::value(&opt.to), "receiver as HOST[:PORT] (port default 36258; [v6addr]:PORT)")
      ("streams", po::value(&opt.streams)->default_value(0, "auto"),
       "parallel data connections, 1 to 256 (auto: 1 to a loopback address, 4 otherwise)")
      ("threads", po::value(&opt.threads)->default_value(0),
       "sender threads, each with its own io_uring (0: min(streams, online CPUs))")
      ("json", po::bool_switch(&json), "print one JSON object with the results on stdout")
      ("quiet,q", po::bool_switch(&quiet),
       "no progress and no summary; failures and errors are still reported")
      ("progress-interval", po::value(&progress_interval)->default_value(progress_interval),
       "seconds between progress lines when stderr is not a terminal (a terminal gets one "
       "line, redrawn in place)")
      ("retry-for", po::value(&retry_for)->default_value(retry_for),
       "keep retrying refused or reset connections for this many seconds")
      ("idle-timeout", po::value(&idle_timeout)->default_value(idle_timeout),
       "give up on a receiver that owes an answer and says nothing for this many seconds "
       "(then --retry-for applies; exit 8 if it never answers again), and on a file it "
       "keeps answering busy")
      ("force", po::bool_switch(&opt.force),
       "send every file, even those already at the receiver with the same size and mtime")
      ("checksum,c", po::bool_switch(&opt.checksum),
       "skip a file only if its content digest matches the receiver's copy (reads the file "
       "on both sides first), not just size and mtime")
      ("secret-file", po::value(&secret_file),
       "encrypt every connection (TLS 1.3) with a key derived from the secret in this file (the "
       "receiver's --secret-file holds the same); nothing is sent unless the receiver proves it "
       "holds it too. Without it or --tls-cert, names and contents cross the network in clear")
      ("tls-cert", po::value(&tls_cert),
       "instead of a secret: mutual TLS 1.3 with this certificate (PEM; with --tls-key and "
       "--tls-ca). The receiver's certificate must be signed by --tls-ca and name the host in "
       "--to")
      ("tls-key", po::value(&tls_key), "the private key of --tls-cert (PEM)")
      ("tls-ca", po::value(&tls_ca), "the CA (PEM) that signs the receiver's certificate")
      ("no-encryption", po::bool_switch(&opt.no_encryption),
       "with --secret-file or --tls-cert: send file data in clear on trusted links (the control "
       "connection, with names and digests, stays encrypted); the receiver must run with "
       "--allow-unencrypted")
      ("send-path", po::value(&send_path)->default_value(send_path),
       "how large chunks leave: copy (read, hash, send), mmap (hash and send from a mapping) or "
       "splice (zero-copy); auto: copy to loopback, splice elsewhere. Encrypted data always "
       "takes copy")
      ("log-level", po::value(&log_level)->default_value(log_level),
       "error, warning, info or debug");
  // clang-format on
  po::options_description hidden;
  hidden.add_options()("path", po::value(&opt.paths)->multitoken());
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description positional;
  positional.add("path", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << "Usage: ackxfer-fast send --to HOST[:PORT] [--streams N] [--threads N] "
                   "[--json] [--retry-for SECONDS] PATH...\n\n"
                   "Sends files and directory trees to an `ackxfer-fast recv`. A file arrives\n"
                   "as DIR/<basename>, a directory as DIR/<dirname>/... (like scp -r; a\n"
                   "trailing slash makes no difference). Every file is verified with XXH3-128\n"
                   "on the receiver before it is published; chunks that arrive damaged are\n"
                   "sent again. Exits 0 only if every file was delivered and verified.\n\n"
                << desc
                << "\nExamples:\n"
                   "  ackxfer-fast send --to backup-host ./dataset\n"
                   "  ackxfer-fast send --to 10.0.0.5:36258 --streams 8 model.ckpt logs/\n"
                   "  ackxfer-fast send --to '[::1]' --json file.bin > result.json\n"
                   "  ackxfer-fast send --to host --retry-for 60 data/   # wait for the receiver\n"
                   "  ackxfer-fast send --to host --secret-file ~/.ackxfer.secret data/\n\n"
                   "Without --secret-file or --tls-cert nothing is encrypted: file names and\n"
                   "contents cross the network in clear.\n\n"
                << exit_code_help();
      return kOk;
    }
    if (opt.to.empty()) throw Failure("--to HOST[:PORT] is required");
    if (opt.paths.empty()) throw Failure("give at least one PATH to send");
    if (!(retry_for >= 0) || retry_for > 1e7) throw Failure("--retry-for must be >= 0 seconds");
    if (!(idle_timeout >= 1) || idle_timeout > 1e7)
      throw Failure("--idle-timeout must be at least 1 second");
    opt.idle_timeout =
        std::chrono::milliseconds(static_cast<long long>(std::llround(idle_timeout * 1000)));
    if (!(progress_interval >= 0.1) || progress_interval > 1e6)
      throw Failure("--progress-interval must be at least 0.1 seconds");
    opt.retry_for =
        std::chrono::milliseconds(static_cast<long long>(std::llround(retry_for * 1000)));
    opt.send_path = send_path_option(send_path);
    opt.certificates = certificate_options(tls_cert, tls_key, tls_ca);
    opt.log = make_stderr_logger(parse_log_level(log_level));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ackxfer-fast send: %s\nTry 'ackxfer-fast send --help'.\n", e.what());
    return kUsage;
  }
  if (!secret_file.empty()) {
    try {
      opt.secret = load_secret(secret_file, opt.log);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ackxfer-fast send: %s\n", e.what());
      return kSetup;
    }
  }

  sigset_t signals = block_termination_signals();
  Sender sender(opt);
  // SIGINT/SIGTERM cancel the transfer cleanly; SIGUSR1 (sent to ourselves) ends the watcher.
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread watcher([&sender, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig != SIGUSR1) sender.cancel();
  });

  std::optional<ProgressReporter> progress;
  if (!quiet)
    progress.emplace(sender, opt.paths,
                     std::chrono::milliseconds(std::llround(progress_interval * 1000)));
  SendReport report;
  int code;
  try {
    report = sender.run();
    code = exit_code_for(report);
    if (progress) progress->stop();
  } catch (const std::exception& e) {
    if (progress) progress->stop();
    pthread_kill(watcher.native_handle(), SIGUSR1);
    watcher.join();
    std::fprintf(stderr, "ackxfer-fast send: %s\n", control_free(e.what()).c_str());
    return exit_code_for(e);
  }
  pthread_kill(watcher.native_handle(), SIGUSR1);
  watcher.join();

  // Paths are the sender's own names (a tree may hold any bytes); reasons may quote the
  // receiver: both made printable so neither can forge a line or drive the terminal.
  for (const auto& f : report.failed)
    write_stderr_line("ackxfer-fast: failed: " + printable(f.path) + ": " + control_free(f.reason));
  if (!report.error.empty()) write_stderr_line("ackxfer-fast: " + control_free(report.error));
  if (json) {
    std::fputs(report_json(report).c_str(), stdout);
  } else if (!quiet && !nothing_happened(report)) {
    double rate = report.seconds > 0 ? static_cast<double>(report.bytes) / report.seconds : 0;
    std::string extra;
    if (report.symlinks) extra += ", " + counted(report.symlinks, "symlink", "symlinks");
    if (report.unchanged)
      extra += ", " + std::to_string(report.unchanged) + " unchanged (not sent)";
    if (report.skipped) extra += ", " + std::to_string(report.skipped) + " skipped (named above)";
    if (report.resumed_bytes)
      extra += ", " + human_bytes(static_cast<double>(report.resumed_bytes)) + " resumed";
    // With a secret or certificates, "none" only means no session got that far.
    const bool tls_asked = opt.secret || opt.certificates;
    extra += report.encryption != "none" ? ", encrypted (" + report.encryption + ")"
             : report.control_encryption != "none"
                 ? ", data in clear (control encrypted, " + report.control_encryption + ")"
             : tls_asked ? ", no encrypted session established"
                         : ", unencrypted";
    std::fprintf(stderr, "ackxfer-fast: sent %s (%s) in %.2f s, %s, %s, %zu failed%s\n",
                 counted(report.files, "file", "files").c_str(),
                 human_bytes(static_cast<double>(report.bytes)).c_str(), report.seconds,
                 human_rate(rate).c_str(), counted(report.retries, "retry", "retries").c_str(),
                 report.failed.size(), extra.c_str());
    if (report.bytes >= kLimiterMinBytes)
      std::fprintf(stderr, "ackxfer-fast: %s\n", limiter_text(report).c_str());
  }
  std::fflush(stdout);
  return code;
}

}  // namespace ackxfer::cli
