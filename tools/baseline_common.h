// Plumbing shared by the two reference programs of tools/compare-peers (tools/naive_loop.cpp
// and tools/least_work.cpp): blocking sockets, send-all / recv-exact, a tree walk relative to
// held directory fds, and creating a destination's parent directories. Written the plain way
// on purpose: these programs are the yardsticks the engine is measured against.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "fs/relative_path.h"

namespace baseline {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), errno ? std::strerror(errno) : "failed");
  std::exit(1);
}

inline void send_all(int fd, const void* p, std::size_t n) {
  auto* b = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t r = ::send(fd, b, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("send");
    b += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Reads exactly n bytes; false on a clean end of stream before the first byte.
inline bool recv_exact(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, b + got, n - got, MSG_WAITALL);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 && got == 0) return false;
    if (r <= 0) {
      errno = r == 0 ? ECONNRESET : errno;
      die("recv");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

inline void write_all(int fd, const void* p, std::size_t n) {
  auto* b = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t r = ::write(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("write");
    b += r;
    n -= static_cast<std::size_t>(r);
  }
}

// A loopback-or-anywhere IPv4 listener; port 0 picks a free one.
inline int listen_on(const char* host, int port, int* bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host, &a.sin_addr) != 1) die(std::string("bad address ") + host);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0)
    die("listen");
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound = ntohs(a.sin_port);
  return fd;
}

// socket_buffer > 0: SO_SNDBUF and SO_RCVBUF set before connecting (the window scale is
// agreed in the handshake).
inline int connect_to(const std::string& host, int port, int socket_buffer = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (socket_buffer > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &socket_buffer, sizeof socket_buffer);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &socket_buffer, sizeof socket_buffer);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) die("bad address " + host);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect " + host);
  return fd;
}

// HOST:PORT
inline void split_target(const std::string& to, std::string* host, int* port) {
  auto colon = to.rfind(':');
  if (colon == std::string::npos) {
    errno = 0;
    die("--to wants HOST:PORT");
  }
  *host = to.substr(0, colon);
  *port = std::atoi(to.c_str() + colon + 1);
}

// Calls on_file(dirfd, name, relative path, stat) for every regular file under `top` (itself
// included if it is a file), relative paths starting with top's last component, the way
// `cp -r` and the engine name them.
using OnFile =
    std::function<void(int dirfd, const char* name, const std::string& rel, const struct stat& st)>;

inline void walk_dir(int dirfd, const std::string& rel, const OnFile& on_file) {
  DIR* d = ::fdopendir(dirfd);
  if (!d) die("opendir " + rel);
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
    std::string child = rel + "/" + e->d_name;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) die("stat " + child);
    if (S_ISDIR(st.st_mode)) {
      int sub = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
      if (sub < 0) die("open " + child);
      walk_dir(sub, child, on_file);
    } else if (S_ISREG(st.st_mode)) {
      on_file(::dirfd(d), e->d_name, child, st);
    }
  }
  ::closedir(d);
}

inline void walk(const std::string& top, const OnFile& on_file) {
  std::string path = top;
  while (path.size() > 1 && path.back() == '/')
    path.pop_back();
  std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) die("stat " + path);
  if (S_ISREG(st.st_mode)) {
    std::string parent =
        path.size() > base.size() ? path.substr(0, path.size() - base.size()) : ".";
    int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) die("open " + parent);
    on_file(dfd, base.c_str(), base, st);
    ::close(dfd);
    return;
  }
  int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) die("open " + path);
  walk_dir(dfd, base, on_file);
}

// A relative path a peer sent, checked by the engine's own path rule (fs/relative_path.h).
inline bool path_ok(const std::string& p) {
  return std::holds_alternative<ackxfer::RelativePath>(ackxfer::validate_relative_path(p));
}

// Opens (creating as needed, like mkdir -p) the directory `rel` under rootfd.
inline int open_dirs(int rootfd, const std::string& rel) {
  int fd = ::dup(rootfd);
  std::size_t start = 0;
  while (start < rel.size()) {
    std::size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    std::string c = rel.substr(start, end - start);
    if (::mkdirat(fd, c.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir " + rel);
    int next = ::openat(fd, c.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (next < 0) die("open " + rel);
    ::close(fd);
    fd = next;
    start = end + 1;
  }
  return fd;
}

// The command line both yardsticks share: `recv|send`, --dir, --to, --listen, --port, paths;
// `extra(option, value)` takes the rest (value() consumes the next argument) and returns
// whether it knew the option.
struct Args {
  std::string mode, dir, to, host = "127.0.0.1";
  int port = 0;
  std::vector<std::string> paths;
};

using ExtraOption =
    std::function<bool(const std::string& option, const std::function<std::string()>& value)>;

inline Args parse_args(int argc, char** argv, const ExtraOption& extra) {
  Args a;
  a.mode = argc > 1 ? argv[1] : "";
  for (int i = 2; i < argc; ++i) {
    std::string opt = argv[i];
    std::function<std::string()> value = [&]() -> std::string {
      if (i + 1 >= argc) {
        errno = 0;
        die(opt + " needs a value");
      }
      return argv[++i];
    };
    if (opt == "--dir")
      a.dir = value();
    else if (opt == "--to")
      a.to = value();
    else if (opt == "--listen")
      a.host = value();
    else if (opt == "--port")
      a.port = std::atoi(value().c_str());
    else if (!extra(opt, value))
      a.paths.push_back(opt);
  }
  return a;
}

}  // namespace baseline
