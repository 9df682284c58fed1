// Integration-test helpers (see harness.h).
#include "harness.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <thread>

#include "digest/digest.h"
#include "protocol/data_frame.h"

extern char** environ;

namespace ackxfer::test {

std::string binary_path() {
  // Another build under test (e.g. an older release, to show a test fails on it).
  if (const char* b = std::getenv("ACKXFER_TEST_BINARY")) return b;
  return ACKXFER_BINARY;
}
std::string faultproxy_path() {
  return ACKXFER_FAULTPROXY;
}

namespace {

fs::path temp_root() {
  if (const char* t = std::getenv("ACKXFER_TEST_TMP")) return t;
  struct statvfs sv {};
  if (statvfs("/dev/shm", &sv) == 0 && sv.f_bavail * sv.f_frsize > (4ull << 30)) return "/dev/shm";
  return fs::temp_directory_path();
}

}  // namespace

TempDir::TempDir(const std::string& tag) {
  std::string tmpl = (temp_root() / ("ackxfer-test-" + tag + "-XXXXXX")).string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Make read-only directories removable first.
  for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::end(it); ++it)
    if (it->is_directory(ec) && !it->is_symlink(ec)) chmod(it->path().c_str(), 0755);
  fs::remove_all(path_, ec);
}

Process::Process(const std::vector<std::string>& argv, const fs::path& workdir) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  char tmpl[] = "/tmp/ackxfer-test-stderr-XXXXXX";
  int err_fd = mkstemp(tmpl);
  err_file_ = tmpl;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  if (!workdir.empty()) posix_spawn_file_actions_addchdir_np(&fa, workdir.c_str());
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The child starts with default signal dispositions and an empty mask, whatever ours are.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int r = posix_spawn(&pid_, args[0], &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  ::close(err_fd);
  if (r != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(r));
  out_fd_ = out[0];
}

Process::~Process() {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
  std::error_code ec;
  fs::remove(err_file_, ec);
}

std::optional<std::string> Process::read_line(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    out_buf_.append(buf, static_cast<std::size_t>(n));
  }
}

void Process::signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

ProcessResult Process::wait(std::chrono::milliseconds timeout) {
  if (reaped_) return result_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  // Drain stdout while waiting so a chatty child never blocks on a full pipe.
  while (true) {
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      result_.timed_out = true;
      break;
    }
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, 20) > 0) {
      char buf[65536];
      ssize_t n = ::read(out_fd_, buf, sizeof buf);
      if (n > 0) out_buf_.append(buf, static_cast<std::size_t>(n));
    }
  }
  reaped_ = true;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(out_fd_, buf, sizeof buf)) > 0)
    out_buf_.append(buf, static_cast<std::size_t>(n));
  result_.out = out_buf_;
  result_.err = read_text(err_file_);
  if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result_.term_signal = WTERMSIG(status);
  return result_;
}

ProcessResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  Process p(argv);
  return p.wait(timeout);
}

ReceiverProcess::ReceiverProcess(const fs::path& dir, unsigned threads,
                                 std::vector<std::string> extra, std::uint16_t port,
                                 std::uint16_t data_port, const std::string& listen,
                                 const std::vector<std::string>& prefix) {
  std::vector<std::string> argv = prefix;
  argv.insert(argv.end(), {binary_path(), "recv", "--dir", dir.string(), "--listen", listen,
                           "--port", std::to_string(port), "--data-port", std::to_string(data_port),
                           "--threads", std::to_string(threads)});
  argv.insert(argv.end(), extra.begin(), extra.end());
  proc_ = std::make_unique<Process>(argv);
  auto line = proc_->read_line(15s);
  if (!line) {
    auto r = proc_->wait(5s);
    throw std::runtime_error("receiver did not start: " + r.err);
  }
  line_ = *line;
  // "listening control=ADDR:PORT data=ADDR:PORT threads=N"; ADDR may be "[::1]".
  std::smatch m;
  if (!std::regex_match(
          line_, m, std::regex(R"(listening control=(\S+):(\d+) data=(\S+):(\d+) threads=\d+)")))
    throw std::runtime_error("unexpected first line: " + line_);
  port_ = static_cast<std::uint16_t>(std::stoul(m[2]));
  data_port_ = static_cast<std::uint16_t>(std::stoul(m[4]));
}

ProcessResult ReceiverProcess::stop(std::chrono::milliseconds timeout) {
  proc_->signal(SIGTERM);
  return proc_->wait(timeout);
}

ProcessResult send(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {binary_path(), "send"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout);
}

std::uint16_t free_port() {
  static std::mutex m;
  static std::set<std::uint16_t> given;
  std::lock_guard<std::mutex> lock(m);
  for (int attempt = 0; attempt < 64; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
              getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    if (fd >= 0) ::close(fd);
    if (ok && given.insert(ntohs(a.sin_port)).second) return ntohs(a.sin_port);
  }
  throw std::runtime_error("no free loopback port found in 64 attempts");
}

int listen_on_loopback(std::uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 16) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ADD_FAILURE() << "cannot listen on 127.0.0.1: " << std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  port = ntohs(a.sin_port);
  return fd;
}

void write_file(const fs::path& p, std::uint64_t size, std::uint64_t seed) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  std::mt19937_64 rng(seed);
  // Only as many words as the file needs: thousands of small files must stay cheap, most of all
  // in the sanitizer builds, where every word written is checked.
  std::vector<std::uint64_t> buf(
      static_cast<std::size_t>(std::min<std::uint64_t>((size + 7) / 8, 1 << 17)));
  while (size) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size, buf.size() * 8));
    for (std::size_t w = 0; w < (n + 7) / 8; ++w)
      buf[w] = rng();
    f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    size -= n;
  }
}

void write_text(const fs::path& p, const std::string& text) {
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

std::string read_text(const fs::path& p) {
  // One read, not a character at a time: tests read files of many MiB, and the sanitizer
  // builds check every access.
  std::ifstream f(p, std::ios::binary | std::ios::ate);
  if (!f) return {};
  std::string s(static_cast<std::size_t>(f.tellg()), '\0');
  f.seekg(0);
  f.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<std::size_t>(f.gcount()));
  return s;
}

namespace {

bool same_content(const fs::path& a, const fs::path& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  // Allocated once: thousands of small files must stay cheap, most of all under sanitizers.
  thread_local std::vector<char> ba(1 << 20), bb(1 << 20);
  while (true) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount()) return false;
    if (fa.gcount() == 0) return true;
    if (std::memcmp(ba.data(), bb.data(), static_cast<std::size_t>(fa.gcount())) != 0) return false;
  }
}

// The target bytes exactly as stored (fs::read_symlink would normalise "a//b" to "a/b").
std::optional<std::string> link_target(const fs::path& p) {
  std::string buf(PATH_MAX, '\0');
  ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
  if (n < 0) return std::nullopt;
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

}  // namespace

std::string compare_trees(const fs::path& want, const fs::path& got, bool metadata) {
  std::size_t n_want = 0;
  for (auto it = fs::recursive_directory_iterator(want); it != fs::end(it); ++it) {
    ++n_want;
    // Lexically: fs::relative() would resolve a symlink and compare its target in its place.
    fs::path rel = it->path().lexically_relative(want);
    fs::path other = got / rel;
    struct stat sw, sg;
    if (lstat(it->path().c_str(), &sw) != 0) return "cannot stat " + it->path().string();
    if (lstat(other.c_str(), &sg) != 0) return "missing: " + rel.string();
    if ((sw.st_mode & S_IFMT) != (sg.st_mode & S_IFMT)) return "type differs: " + rel.string();
    if (S_ISREG(sw.st_mode)) {
      if (sw.st_size != sg.st_size) return "size differs: " + rel.string();
      if (!same_content(it->path(), other)) return "content differs: " + rel.string();
      if (metadata) {
        if ((sw.st_mode & 0777) != (sg.st_mode & 0777)) return "mode differs: " + rel.string();
        if (sw.st_mtim.tv_sec != sg.st_mtim.tv_sec || sw.st_mtim.tv_nsec != sg.st_mtim.tv_nsec)
          return "mtime differs: " + rel.string();
      }
    }
    if (S_ISLNK(sw.st_mode)) {
      // Compared as links, never followed: the target is data, wherever (or nowhere) it points.
      if (link_target(it->path()) != link_target(other))
        return "symlink target differs: " + rel.string();
      if (metadata &&
          (sw.st_mtim.tv_sec != sg.st_mtim.tv_sec || sw.st_mtim.tv_nsec != sg.st_mtim.tv_nsec))
        return "symlink mtime differs: " + rel.string();
    }
    if (S_ISDIR(sw.st_mode) && metadata && (sw.st_mode & 0777) != (sg.st_mode & 0777))
      return "directory mode differs: " + rel.string();
  }
  std::size_t n_got = count_entries(got);
  if (n_got != n_want)
    return "destination has " + std::to_string(n_got) + " entries, expected " +
           std::to_string(n_want);
  return {};
}

std::size_t count_entries(const fs::path& p) {
  std::size_t n = 0;
  for (auto it = fs::recursive_directory_iterator(p); it != fs::end(it); ++it)
    ++n;
  return n;
}

FaultProxy::FaultProxy(const ReceiverProcess& r, std::vector<std::string> faults) {
  std::vector<std::string> argv = {faultproxy_path(),
                                   "--listen",
                                   "127.0.0.2",
                                   "--target",
                                   "127.0.0.1",
                                   "--port",
                                   std::to_string(r.port()),
                                   "--port",
                                   std::to_string(r.data_port())};
  argv.insert(argv.end(), faults.begin(), faults.end());
  proc_ = std::make_unique<Process>(argv);
  auto line = proc_->read_line(10s);
  if (!line || *line != "ready") {
    auto res = proc_->wait(2s);
    throw std::runtime_error("fault proxy did not start: " + res.err);
  }
  to_ = "127.0.0.2:" + std::to_string(r.port());
}

std::string Process::stderr_so_far() const {
  return read_text(err_file_);
}

long proc_rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return -1;
}

long proc_fd_count(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != fs::end(it); it.increment(ec))
    ++n;
  return ec ? -1 : n;
}

void raise_fd_limit_for_tests() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

bool holds_nameless_file(pid_t pid, const fs::path& dir) {
  std::error_code ec;
  fs::path fds = "/proc/" + std::to_string(pid) + "/fd";
  for (auto it = fs::directory_iterator(fds, ec); !ec && it != fs::end(it); it.increment(ec)) {
    std::string target = fs::read_symlink(it->path(), ec).string();
    if (ec) continue;
    if (target.starts_with(dir.string() + "/#") && target.ends_with(" (deleted)")) return true;
  }
  return false;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

bool only_kept_partials(const fs::path& p) {
  std::set<std::string> parts, journals;
  for (const std::string& t : temp_files_under(p)) {
    fs::path path(t);
    std::string stem = (path.parent_path() / path.stem()).string();
    std::string name = path.filename().string();
    // ".ackxfer-" + 16 hex digits + suffix
    if (name.size() < 25 || name.find_first_not_of("0123456789abcdef", 9) != 25) return false;
    if (path.extension() == ".part")
      parts.insert(stem);
    else if (path.extension() == ".journal")
      journals.insert(stem);
    else
      return false;
  }
  for (const std::string& j : journals)
    if (!parts.count(j)) return false;
  return true;
}

std::size_t journaled_chunks_under(const fs::path& p) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!name.starts_with(".ackxfer-") || !name.ends_with(".journal")) continue;
    std::ifstream in(it->path());
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line))
      n += line.empty() || line[0] == 'x' ? 0 : 1;
  }
  return n;
}

std::vector<std::string> temp_files_under(const fs::path& p) {
  std::vector<std::string> out;
  if (!fs::exists(p)) return out;
  for (auto it = fs::recursive_directory_iterator(p); it != fs::end(it); ++it)
    if (it->path().filename().string().starts_with(".ackxfer-")) out.push_back(it->path());
  return out;
}

std::optional<std::string> json_field(const std::string& json, const std::string& key) {
  std::string needle = "\"" + key + "\":";
  auto pos = json.find(needle);
  if (pos == std::string::npos) return std::nullopt;
  pos += needle.size();
  if (json[pos] == '"') {
    auto end = json.find('"', pos + 1);
    return json.substr(pos + 1, end - pos - 1);
  }
  auto end = json.find_first_of(",}]", pos);
  return json.substr(pos, end - pos);
}

std::uint64_t json_u64(const std::string& json, const std::string& key) {
  auto v = json_field(json, key);
  return v ? std::stoull(*v) : ~0ull;
}

}  // namespace ackxfer::test

namespace ackxfer::test {

RawClient::RawClient(std::uint16_t port, const std::string& host) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RawClient::~RawClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawClient::send_bytes(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

namespace {
bool fill(int fd, std::string& buf, std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  char tmp[65536];
  ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf.append(tmp, static_cast<std::size_t>(n));
  return true;
}
}  // namespace

std::optional<std::string> RawClient::read_line(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    if (!fill(fd_, buf_, deadline)) return std::nullopt;
  }
}

std::optional<std::string> RawClient::read_exact(std::size_t n, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (buf_.size() < n)
    if (!fill(fd_, buf_, deadline)) return std::nullopt;
  std::string out = buf_.substr(0, n);
  buf_.erase(0, n);
  return out;
}

bool RawClient::closed_by_peer(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return true;
  }
  return false;
}

std::string frame_bytes(const std::string& token_hex, std::uint64_t offset,
                        const std::string& payload, std::uint64_t announced) {
  std::uint8_t hdr[kFrameHeaderBytes];
  encode_frame_header(FrameHeader{*Token::from_hex(token_hex), offset, announced}, hdr);
  Digest128 d = digest_of(payload.data(), payload.size());
  return std::string(reinterpret_cast<char*>(hdr), sizeof hdr) + payload +
         std::string(reinterpret_cast<const char*>(d.bytes.data()), 16);
}

int read_ack_status(RawClient& d) {
  auto raw = d.read_exact(kFrameAckBytes);
  if (!raw) return -1;
  FrameAck a;
  if (!decode_frame_ack(std::span<const std::uint8_t, kFrameAckBytes>(
                            reinterpret_cast<const std::uint8_t*>(raw->data()), kFrameAckBytes),
                        a))
    return -1;
  return static_cast<int>(a.status);
}

}  // namespace ackxfer::test
