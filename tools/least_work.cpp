// ackxfer-least-work: the least work a verified transfer can do on Linux, as the floor
// tools/compare-peers measures the engine against (docs/PERFORMANCE.md, "Cycles per byte").
//
// One TCP connection, one thread per side, blocking calls, the kernel's socket buffer
// autotuning (--socket-buffer sets a size). The sender streams every file back to back: a
// 32-byte header and the path, the bytes read() 1 MiB at a time (--buffer) into one buffer,
// hashed there (XXH3-128, the engine's kernel) and sent from there, then the file's 16-byte
// digest; small files share sends. The receiver recv()s into one 1 MiB buffer, hashes and
// write()s from it into an O_TMPFILE file, sets the mode and mtime, and links the file under
// its name only when its digest matches the sender's; at the end it answers how many files
// verified. What it leaves out on purpose (and the engine does): resume, retries, acks per chunk,
// parallel streams, space reservation, limits, every defence against a hostile peer. Loopback only:
// the header is host order.
//
//   ackxfer-least-work recv --dir DIR [--listen 127.0.0.1] [--port 0]
//       prints `listening control=HOST:PORT`, serves one sender, exits
//   ackxfer-least-work send --to HOST:PORT PATH...
#include <string>
#include <vector>

#include "baseline_common.h"
#include "digest/digest.h"

using namespace baseline;

namespace {

// Defaults chosen by measurement (docs/PERFORMANCE.md, "Cycles per byte"); --buffer and
// --socket-buffer (0: the kernel's autotuning) try others.
std::size_t g_buffer = 1 << 20;
int g_socket_buffer = 0;

struct Header {
  std::uint32_t path_len;  // 0: end of the stream
  std::uint32_t mode;
  std::int64_t sec, nsec;
  std::uint64_t size;
};
static_assert(sizeof(Header) == 32);

void big_buffers(int fd) {
  if (g_socket_buffer <= 0) return;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &g_socket_buffer, sizeof g_socket_buffer);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &g_socket_buffer, sizeof g_socket_buffer);
}

struct Reader {
  int fd;
  std::vector<unsigned char> buf = std::vector<unsigned char>(g_buffer);
  std::size_t pos = 0, len = 0;
  // Makes n bytes available at buf[pos].
  void need(std::size_t n) {
    if (len - pos >= n) return;
    std::memmove(buf.data(), buf.data() + pos, len - pos);
    len -= pos;
    pos = 0;
    while (len < n) {
      ssize_t r = ::recv(fd, buf.data() + len, buf.size() - len, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("the stream ended early");
      len += static_cast<std::size_t>(r);
    }
  }
  // Some payload bytes, at most `left`: what the buffer holds, else a fresh fill.
  std::size_t some(std::uint64_t left) {
    if (pos == len) {
      pos = len = 0;
      // All payload: wait for a full buffer, one call instead of several small ones.
      int flags = left >= buf.size() ? MSG_WAITALL : 0;
      ssize_t r;
      do {
        r = ::recv(fd, buf.data(), buf.size(), flags);
      } while (r < 0 && errno == EINTR);
      if (r <= 0) die("the stream ended early");
      len = static_cast<std::size_t>(r);
    }
    return static_cast<std::size_t>(std::min<std::uint64_t>(left, len - pos));
  }
};

int recv_main(const std::string& dir, const std::string& host, int port) {
  ::umask(0);  // files get the sender's mode exactly, no fchmod
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir " + dir);
  int root = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) die("open " + dir);
  int bound = 0;
  int l = listen_on(host.c_str(), port, &bound);
  big_buffers(l);
  std::printf("listening control=%s:%d\n", host.c_str(), bound);
  std::fflush(stdout);
  int c = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) die("accept");
  Reader in{c};
  std::string parent_rel = "\x01";  // no directory open yet
  int parent = -1;
  std::uint64_t ok = 0, bad = 0;
  ackxfer::StreamingDigest digest;
  while (true) {
    in.need(sizeof(Header));
    Header h;
    std::memcpy(&h, in.buf.data() + in.pos, sizeof h);
    in.pos += sizeof h;
    if (h.path_len == 0) break;
    if (h.path_len > 4096) die("path too long");
    in.need(h.path_len);
    std::string path(reinterpret_cast<char*>(in.buf.data() + in.pos), h.path_len);
    in.pos += h.path_len;
    if (!path_ok(path)) die("bad path");
    auto slash = path.rfind('/');
    std::string prel = slash == std::string::npos ? "" : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (prel != parent_rel) {
      if (parent >= 0) ::close(parent);
      parent = prel.empty() ? ::dup(root) : open_dirs(root, prel);
      parent_rel = prel;
    }
    int out = ::openat(parent, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, h.mode & 07777);
    if (out < 0) die("O_TMPFILE in " + prel);
    digest.reset();
    for (std::uint64_t left = h.size; left > 0;) {
      std::size_t n = in.some(left);
      digest.update(in.buf.data() + in.pos, n);
      write_all(out, in.buf.data() + in.pos, n);
      in.pos += n;
      left -= n;
    }
    const timespec times[2] = {{h.sec, h.nsec}, {h.sec, h.nsec}};
    ::futimens(out, times);
    in.need(16);
    ackxfer::Digest128 theirs;
    std::memcpy(theirs.bytes.data(), in.buf.data() + in.pos, 16);
    in.pos += 16;
    if (theirs == digest.finish()) {
      char proc[64];
      std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", out);
      if (::linkat(AT_FDCWD, proc, parent, name.c_str(), AT_SYMLINK_FOLLOW) != 0 &&
          !(errno == EEXIST && ::unlinkat(parent, name.c_str(), 0) == 0 &&
            ::linkat(AT_FDCWD, proc, parent, name.c_str(), AT_SYMLINK_FOLLOW) == 0))
        die("link " + path);
      ++ok;
    } else {
      ++bad;
    }
    ::close(out);
  }
  const std::uint64_t verdict[2] = {ok, bad};
  send_all(c, verdict, sizeof verdict);
  ::close(c);
  if (bad)
    std::fprintf(stderr, "ackxfer-least-work: %llu files failed their digest\n",
                 static_cast<unsigned long long>(bad));
  return bad ? 1 : 0;
}

int send_main(const std::string& to, const std::vector<std::string>& paths) {
  std::string host;
  int port = 0;
  split_target(to, &host, &port);
  int c = connect_to(host, port, g_socket_buffer);
  std::vector<unsigned char> out(g_buffer);
  std::size_t len = 0;
  auto flush = [&] {
    send_all(c, out.data(), len);
    len = 0;
  };
  auto put = [&](const void* p, std::size_t n) {
    if (out.size() - len < n) flush();
    std::memcpy(out.data() + len, p, n);
    len += n;
  };
  std::uint64_t files = 0;
  ackxfer::StreamingDigest digest;
  for (const std::string& top : paths) {
    walk(top, [&](int dirfd, const char* name, const std::string& rel, const struct stat& st) {
      int in = ::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (in < 0) die("open " + rel);
      Header h{static_cast<std::uint32_t>(rel.size()), st.st_mode & 07777, st.st_mtim.tv_sec,
               st.st_mtim.tv_nsec, static_cast<std::uint64_t>(st.st_size)};
      put(&h, sizeof h);
      put(rel.data(), rel.size());
      digest.reset();
      for (std::uint64_t left = h.size; left > 0;) {
        if (len == out.size()) flush();
        std::size_t want =
            static_cast<std::size_t>(std::min<std::uint64_t>(left, out.size() - len));
        ssize_t r = ::read(in, out.data() + len, want);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die("read " + rel);
        digest.update(out.data() + len, static_cast<std::size_t>(r));
        len += static_cast<std::size_t>(r);
        left -= static_cast<std::uint64_t>(r);
      }
      ::close(in);
      ackxfer::Digest128 d = digest.finish();
      put(d.bytes.data(), d.bytes.size());
      ++files;
    });
  }
  Header end{};
  put(&end, sizeof end);
  flush();
  std::uint64_t verdict[2];
  if (!recv_exact(c, verdict, sizeof verdict)) die("no verdict from the receiver");
  if (verdict[0] != files || verdict[1] != 0) {
    std::fprintf(stderr, "ackxfer-least-work: %llu of %llu files verified\n",
                 static_cast<unsigned long long>(verdict[0]),
                 static_cast<unsigned long long>(files));
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv, [](const std::string& opt, const auto& value) {
    if (opt == "--buffer")
      g_buffer = std::strtoull(value().c_str(), nullptr, 0);
    else if (opt == "--socket-buffer")
      g_socket_buffer = std::atoi(value().c_str());
    else
      return false;
    return true;
  });
  if (a.mode == "recv" && !a.dir.empty()) return recv_main(a.dir, a.host, a.port);
  if (a.mode == "send" && !a.to.empty() && !a.paths.empty()) return send_main(a.to, a.paths);
  std::fprintf(stderr,
               "usage: ackxfer-least-work recv --dir DIR [--listen ADDR] [--port N] [OPTIONS]\n"
               "       ackxfer-least-work send --to HOST:PORT [OPTIONS] PATH...\n"
               "options: --buffer BYTES (1 MiB), --socket-buffer BYTES (0: autotuned)\n");
  return 2;
}
