// `ackxfer-fast bench`: an end-to-end loopback benchmark of the real engine. Generates a data
// set, starts a Receiver in-process on 127.0.0.1, sends the data set through the whole path
// (handshake, data, digests, publish), verifies the copy byte for byte, cleans up.
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <thread>

#include "cli_common.h"
#include "error.h"
#include "exit_codes.h"
#include "json_writer.h"
#include "receiver/receiver.h"
#include "sender/sender.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace ackxfer::cli {
namespace {

struct Dataset {
  std::string name;
  std::uint64_t files;
  std::uint64_t file_bytes;
  std::string description;
};

const Dataset kDatasets[] = {
    {"large", 1, 1ull << 30, "1 file of 1 GiB"},
    {"small", 5000, 4096, "5,000 files of 4 KiB"},
};

struct RunResult {
  double seconds = 0;
  double cpu_seconds = 0;
  std::uint64_t retries = 0;
  std::string send_path;
};

std::atomic<bool> g_interrupted{false};

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Deterministic, incompressible-looking bytes: splitmix64, seeded per file.
void fill_pseudorandom(std::uint8_t* p, std::size_t n, std::uint64_t& state) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(p + i, &z, 8);
  }
  for (; i < n; ++i)
    p[i] = static_cast<std::uint8_t>(state++ >> 3);
}

void generate(const Dataset& d, const fs::path& root) {
  fs::create_directories(root);
  std::vector<std::uint8_t> buf(1 << 20);
  std::uint64_t state = 42;
  for (std::uint64_t i = 0; i < d.files; ++i) {
    // Spread many small files over subdirectories of 1,000, as real trees are.
    fs::path dir = d.files > 1000 ? root / ("d" + std::to_string(i / 1000)) : root;
    if (i % 1000 == 0) fs::create_directories(dir);
    fs::path p = dir / ("f" + std::to_string(i));
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw SystemError("create " + p.string(), errno);
    std::uint64_t left = d.file_bytes;
    while (left) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      fill_pseudorandom(buf.data(), n, state);
      if (::write(fd, buf.data(), n) != static_cast<ssize_t>(n)) {
        int e = errno;
        ::close(fd);
        throw SystemError("write " + p.string(), e);
      }
      left -= n;
    }
    ::close(fd);
  }
}

// Byte-for-byte comparison of two trees; returns an empty string when identical.
std::string compare_trees(const fs::path& a, const fs::path& b) {
  std::uint64_t entries_a = 0, entries_b = 0;
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (auto it = fs::recursive_directory_iterator(a); it != fs::recursive_directory_iterator();
       ++it) {
    ++entries_a;
    fs::path rel = fs::relative(it->path(), a);
    fs::path other = b / rel;
    if (it->is_directory()) {
      if (!fs::is_directory(other)) return "missing directory " + other.string();
      continue;
    }
    if (!fs::is_regular_file(other)) return "missing file " + other.string();
    if (fs::file_size(other) != it->file_size()) return "size differs: " + other.string();
    int fa = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC);
    int fb = ::open(other.c_str(), O_RDONLY | O_CLOEXEC);
    bool same = fa >= 0 && fb >= 0;
    while (same) {
      ssize_t na = ::read(fa, ba.data(), ba.size());
      ssize_t nb = ::read(fb, bb.data(), bb.size());
      if (na != nb || na < 0)
        same = false;
      else if (na == 0)
        break;
      else
        same = std::memcmp(ba.data(), bb.data(), static_cast<std::size_t>(na)) == 0;
    }
    if (fa >= 0) ::close(fa);
    if (fb >= 0) ::close(fb);
    if (!same) return "content differs: " + other.string();
  }
  for (auto it = fs::recursive_directory_iterator(b); it != fs::recursive_directory_iterator();
       ++it)
    ++entries_b;
  if (entries_a != entries_b)
    return "destination has " + std::to_string(entries_b) + " entries, source " +
           std::to_string(entries_a) + " (stray files?)";
  return {};
}

fs::path default_work_dir() {
  // tmpfs keeps the disk out of the measurement; fall back to TMPDIR.
  struct statvfs sv {};
  if (statvfs("/dev/shm", &sv) == 0 && sv.f_bavail * sv.f_frsize > (3ull << 30)) return "/dev/shm";
  const char* t = std::getenv("TMPDIR");
  return t ? t : "/tmp";
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string utc_now() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

int bench_command(int argc, char** argv) {
  bool json = false, keep = false;
  std::vector<std::string> names;
  unsigned runs = 3, warmup = 1, streams = 4, threads = 0, recv_threads = 0;
  std::string work_dir, send_path = "auto";
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "json", po::bool_switch(&json), "print one JSON object with every figure on stdout")(
      "dataset", po::value(&names)->multitoken(), "large, small, or all (default: all)")(
      "runs", po::value(&runs)->default_value(runs), "timed runs per data set (median reported)")(
      "warmup", po::value(&warmup)->default_value(warmup), "untimed runs first")(
      "streams", po::value(&streams)->default_value(streams), "sender data connections")(
      "threads", po::value(&threads)->default_value(0), "sender threads (0: auto)")(
      "recv-threads", po::value(&recv_threads)->default_value(0), "receiver threads (0: CPUs)")(
      "send-path", po::value(&send_path)->default_value(send_path), "auto, copy, mmap or splice")(
      "work-dir", po::value(&work_dir), "where to generate and receive (default: /dev/shm)")(
      "keep", po::bool_switch(&keep), "keep the generated and received files");
  po::variables_map vm;
  std::vector<const Dataset*> selected;
  SendPath path = SendPath::kAuto;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << "Usage: ackxfer-fast bench [--json] [--dataset NAME]... [--runs N]\n\n"
                   "Measures end-to-end transfer throughput over loopback: an in-process\n"
                   "receiver on 127.0.0.1, the real sender, every file verified and published,\n"
                   "and the received copy compared byte for byte afterwards (not timed).\n"
                   "Data sets:\n";
      for (const auto& d : kDatasets)
        std::cout << "  " << d.name << ": " << d.description << "\n";
      std::cout << "\n"
                << desc
                << "\nExamples:\n"
                   "  ackxfer-fast bench\n"
                   "  ackxfer-fast bench --dataset large --runs 5 --json\n\n"
                << exit_code_help();
      return kOk;
    }
    if (names.empty() || std::find(names.begin(), names.end(), "all") != names.end())
      for (const auto& d : kDatasets)
        selected.push_back(&d);
    else
      for (const auto& n : names) {
        auto it = std::find_if(std::begin(kDatasets), std::end(kDatasets),
                               [&](const Dataset& d) { return d.name == n; });
        if (it == std::end(kDatasets)) throw Failure("unknown data set '" + n + "'");
        selected.push_back(&*it);
      }
    if (runs == 0) throw Failure("--runs must be at least 1");
    if (auto p = parse_send_path(send_path))
      path = *p;
    else
      throw Failure("--send-path must be auto, copy, mmap or splice");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ackxfer-fast bench: %s\nTry 'ackxfer-fast bench --help'.\n", e.what());
    return kUsage;
  }

  Logger log = make_stderr_logger(LogLevel::kWarn);
  fs::path base = work_dir.empty() ? default_work_dir() : fs::path(work_dir);
  std::string tmpl = (base / "ackxfer-bench-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) {
    std::fprintf(stderr, "ackxfer-fast bench: cannot create a directory in %s: %s\n", base.c_str(),
                 errno_text(errno).c_str());
    return kSetup;
  }
  fs::path root = tmpl;

  // SIGINT/SIGTERM: stop the current run and still clean up.
  sigset_t signals = block_termination_signals();
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::atomic<Sender*> current_sender{nullptr};
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;
    g_interrupted = true;
    if (Sender* s = current_sender.load()) s->cancel();
  });

  JsonWriter j;
  j.begin_object()
      .field("tool", "ackxfer-fast bench")
      .field("version", version_text().substr(0, version_text().size() - 1))
      .field("date", utc_now());
  utsname un{};
  uname(&un);
  j.key("machine")
      .begin_object()
      .field("cpus", static_cast<std::uint64_t>(std::thread::hardware_concurrency()))
      .field("kernel", un.release)
      .field("work_dir", base.string())
      .end_object();
  j.begin_array("datasets");
  if (!json)
    std::printf("%-8s %7s %10s %5s %11s %11s %9s %8s %s\n", "dataset", "files", "bytes", "runs",
                "GB/s", "files/s", "CPU s/GB", "retries", "verified");

  int code = kOk;
  for (const Dataset* d : selected) {
    if (g_interrupted) break;
    fs::path src = root / "src", dst = root / "dst";
    std::string failure;
    std::vector<RunResult> results;
    try {
      fs::remove_all(src);
      generate(*d, src / d->name);
      ReceiverOptions ro;
      ro.dir = dst;
      ro.listen = "127.0.0.1";
      ro.control_port = 0;
      ro.data_port = 0;
      ro.threads = recv_threads;
      ro.log = log;
      for (unsigned r = 0; r < warmup + runs && !g_interrupted && failure.empty(); ++r) {
        fs::remove_all(dst);
        Receiver receiver(ro);
        receiver.start();
        SenderOptions so;
        so.to = receiver.control_endpoint().to_string();
        so.paths = {(src / d->name).string()};
        so.streams = streams;
        so.threads = threads;
        so.send_path = path;
        so.log = log;
        Sender sender(so);
        current_sender = &sender;
        double cpu0 = process_cpu_seconds();
        SendReport rep = sender.run();
        double cpu = process_cpu_seconds() - cpu0;
        current_sender = nullptr;
        receiver.stop();
        receiver.wait();
        if (rep.outcome != SendReport::Outcome::kOk) {
          failure = rep.error.empty() && !rep.failed.empty()
                        ? rep.failed.front().path + ": " + rep.failed.front().reason
                        : rep.error;
          break;
        }
        if (rep.files != d->files) {
          failure =
              "sent " + std::to_string(rep.files) + " files, expected " + std::to_string(d->files);
          break;
        }
        std::string diff = compare_trees(src, dst);
        if (!diff.empty()) {
          failure = "verification failed: " + diff;
          break;
        }
        if (r >= warmup) results.push_back(RunResult{rep.seconds, cpu, rep.retries, rep.send_path});
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (g_interrupted && failure.empty()) failure = "interrupted";
    std::vector<double> secs, cpus;
    std::uint64_t retries = 0;
    for (auto& r : results) {
      secs.push_back(r.seconds);
      cpus.push_back(r.cpu_seconds);
      retries += r.retries;
    }
    double total_bytes = static_cast<double>(d->files * d->file_bytes);
    double med = median(secs);
    double gbps = med > 0 ? total_bytes / med / 1e9 : 0;
    double fps = med > 0 ? static_cast<double>(d->files) / med : 0;
    double cpu_per_gb = total_bytes > 0 ? median(cpus) / (total_bytes / 1e9) : 0;
    j.begin_object()
        .field("name", d->name)
        .field("description", d->description)
        .field("files", d->files)
        .field("bytes", d->files * d->file_bytes)
        .field("verified", failure.empty())
        .field("median_seconds", med)
        .field("median_bytes_per_second", med > 0 ? total_bytes / med : 0.0)
        .field("median_files_per_second", fps)
        .field("cpu_seconds_per_gb_both_sides", cpu_per_gb)
        .field("retries", retries)
        .field("send_path", results.empty() ? std::string() : results.front().send_path);
    if (!failure.empty()) j.field("error", failure);
    j.begin_array("runs");
    for (auto& r : results)
      j.begin_object()
          .field("seconds", r.seconds)
          .field("bytes_per_second", total_bytes / r.seconds)
          .field("cpu_seconds", r.cpu_seconds)
          .end_object();
    j.end_array().end_object();
    if (!json)
      std::printf("%-8s %7llu %10s %5zu %11.3f %11.0f %9.2f %8llu %s\n", d->name.c_str(),
                  static_cast<unsigned long long>(d->files), human_bytes(total_bytes).c_str(),
                  results.size(), gbps, fps, cpu_per_gb, static_cast<unsigned long long>(retries),
                  failure.empty() ? "yes" : "NO");
    if (!failure.empty()) {
      std::fprintf(stderr, "ackxfer-fast bench: %s: %s\n", d->name.c_str(), failure.c_str());
      code = g_interrupted ? kInterrupted : kFilesFailed;
    }
    std::error_code ec;
    if (!keep) fs::remove_all(root / "src", ec), fs::remove_all(root / "dst", ec);
  }
  j.end_array().end_object();
  if (json) std::printf("%s\n", j.str().c_str());
  std::fflush(stdout);
  if (!keep) {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  pthread_kill(watcher.native_handle(), SIGUSR1);
  watcher.join();
  return code;
}

}  // namespace ackxfer::cli
