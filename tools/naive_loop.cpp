// ackxfer-naive-loop: the seed's fixed design, as a yardstick for tools/compare-peers.
//
// Exactly the design ../shared/DESIGN.md starts from, with its three rules kept and nothing
// more: one file at a time; `SEND size mode mtime path` on a control connection, `READY`
// back, then a new data connection per file; the sender read()s into a 1 MiB buffer, hashes
// it (XXH3-128, the same kernel as the engine) and send()s it all; the receiver recv()s into
// a 1 MiB buffer, hashes it and write()s it to a temp file; `DONE <digest>` after the data,
// and the receiver renames the temp file to its final name only when its own digest matches
// (`OK`, else `ERR`). No pipelining, no parallel streams, no zero-copy, default socket
// buffers. `--no-verify` drops the hashing (what the 200-line Python script of issue 10 did).
//
//   ackxfer-naive-loop recv --dir DIR [--listen 127.0.0.1] [--port 0]
//       prints `listening control=HOST:PORT data=HOST:PORT`, serves one sender, exits
//   ackxfer-naive-loop send --to HOST:PORT [--no-verify] PATH...
#include <sys/time.h>

#include <string>
#include <vector>

#include "baseline_common.h"
#include "digest/digest.h"

using namespace baseline;

namespace {

constexpr std::size_t kBuffer = 1 << 20;

struct LineReader {
  int fd;
  std::string buf;
  bool next(std::string* line) {
    while (true) {
      auto nl = buf.find('\n');
      if (nl != std::string::npos) {
        *line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return true;
      }
      char tmp[4096];
      ssize_t r = ::recv(fd, tmp, sizeof tmp, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(r));
      if (buf.size() > 65536) return false;
    }
  }
};

void send_line(int fd, const std::string& s) {
  send_all(fd, (s + "\n").data(), s.size() + 1);
}

int recv_main(const std::string& dir, const std::string& host, int port) {
  ::umask(022);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir " + dir);
  int root = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) die("open " + dir);
  int cport = 0, dport = 0;
  int cl = listen_on(host.c_str(), port, &cport);
  int dl = listen_on(host.c_str(), 0, &dport);
  std::printf("listening control=%s:%d data=%s:%d\n", host.c_str(), cport, host.c_str(), dport);
  std::fflush(stdout);
  int c = ::accept4(cl, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) die("accept");
  send_line(c, "HELLO data-port=" + std::to_string(dport));
  LineReader lines{c, {}};
  std::vector<unsigned char> buf(kBuffer);
  std::string line;
  int failed = 0;
  while (lines.next(&line)) {
    if (line == "BYE") break;
    // SEND <size> <mode> <mtime_sec> <mtime_nsec> <verify 0|1> <path>
    unsigned long long size = 0;
    unsigned mode = 0;
    long long sec = 0, nsec = 0;
    int verify = 1, used = 0;
    if (std::sscanf(line.c_str(), "SEND %llu %o %lld %lld %d %n", &size, &mode, &sec, &nsec,
                    &verify, &used) != 5 ||
        !path_ok(line.substr(static_cast<std::size_t>(used)))) {
      send_line(c, "ERR bad request");
      return 1;
    }
    std::string path = line.substr(static_cast<std::size_t>(used));
    auto slash = path.rfind('/');
    int dfd = slash == std::string::npos ? ::dup(root) : open_dirs(root, path.substr(0, slash));
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    std::string temp = "." + name + ".naive-tmp";
    int out = ::openat(dfd, temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
    if (out < 0) die("create " + path);
    send_line(c, "READY");
    int d = ::accept4(dl, nullptr, nullptr, SOCK_CLOEXEC);
    if (d < 0) die("accept data");
    ackxfer::StreamingDigest digest;
    for (unsigned long long left = size; left > 0;) {
      std::size_t want = left < kBuffer ? static_cast<std::size_t>(left) : kBuffer;
      ssize_t r = ::recv(d, buf.data(), want, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("data connection of " + path + " ended early");
      if (verify) digest.update(buf.data(), static_cast<std::size_t>(r));
      write_all(out, buf.data(), static_cast<std::size_t>(r));
      left -= static_cast<unsigned long long>(r);
    }
    ::close(d);
    const timespec times[2] = {{sec, nsec}, {sec, nsec}};
    ::futimens(out, times);
    ::close(out);
    if (!lines.next(&line) || line.rfind("DONE ", 0) != 0) die("no DONE for " + path);
    if (!verify || line.substr(5) == digest.finish().hex()) {
      if (::renameat(dfd, temp.c_str(), dfd, name.c_str()) != 0) die("rename " + path);
      send_line(c, "OK");
    } else {
      ::unlinkat(dfd, temp.c_str(), 0);
      ++failed;
      send_line(c, "ERR digest mismatch");
    }
    ::close(dfd);
  }
  return failed ? 1 : 0;
}

int send_main(const std::string& to, bool verify, const std::vector<std::string>& paths) {
  std::string host;
  int port = 0;
  split_target(to, &host, &port);
  int c = connect_to(host, port);
  LineReader lines{c, {}};
  std::string line;
  std::vector<unsigned char> buf(kBuffer);
  int data_port = 0;
  if (!lines.next(&line) || std::sscanf(line.c_str(), "HELLO data-port=%d", &data_port) != 1)
    die("no greeting from the receiver");
  int errors = 0;
  for (const std::string& top : paths) {
    walk(top, [&](int dirfd, const char* name, const std::string& rel, const struct stat& st) {
      int in = ::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (in < 0) die("open " + rel);
      char head[256];
      std::snprintf(head, sizeof head, "SEND %llu %o %lld %lld %d ",
                    static_cast<unsigned long long>(st.st_size), st.st_mode & 07777,
                    static_cast<long long>(st.st_mtim.tv_sec),
                    static_cast<long long>(st.st_mtim.tv_nsec), verify ? 1 : 0);
      send_line(c, head + rel);
      if (!lines.next(&line) || line != "READY") die("no READY for " + rel + ": " + line);
      int d = connect_to(host, data_port);
      ackxfer::StreamingDigest digest;
      for (off_t left = st.st_size; left > 0;) {
        ssize_t r = ::read(in, buf.data(), buf.size());
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("read " + rel);
        if (verify) digest.update(buf.data(), static_cast<std::size_t>(r));
        send_all(d, buf.data(), static_cast<std::size_t>(r));
        left -= r;
      }
      ::close(d);
      ::close(in);
      send_line(c, "DONE " + (verify ? digest.finish().hex() : std::string("-")));
      if (!lines.next(&line)) die("no verdict for " + rel);
      if (line != "OK") {
        std::fprintf(stderr, "%s: %s\n", rel.c_str(), line.c_str());
        ++errors;
      }
    });
  }
  send_line(c, "BYE");
  ::close(c);
  return errors ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool verify = true;
  Args a = parse_args(argc, argv, [&](const std::string& opt, const auto&) {
    if (opt != "--no-verify") return false;
    verify = false;
    return true;
  });
  if (a.mode == "recv" && !a.dir.empty()) return recv_main(a.dir, a.host, a.port);
  if (a.mode == "send" && !a.to.empty() && !a.paths.empty())
    return send_main(a.to, verify, a.paths);
  std::fprintf(stderr,
               "usage: ackxfer-naive-loop recv --dir DIR [--listen ADDR] [--port N]\n"
               "       ackxfer-naive-loop send --to HOST:PORT [--no-verify] PATH...\n");
  return 2;
}
