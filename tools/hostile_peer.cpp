// ackxfer-hostile-peer: the worst peer we could write, to measure what it can make a receiver
// hold (tools/measure-hostile runs it and reads the receiver's RSS and fds). Each mode opens
// its connections, does its damage and holds everything until killed or `--hold` seconds pass.
//
//   ackxfer-hostile-peer --port 36258 --data-port 36250 --mode declare --sessions 64
//
// Modes (all speak the protocol as documented; none sends a byte of file data):
//   declare      --sessions N: each says HELLO and SENDs kMaxOpenFilesPerSession files of the
//                largest size with the smallest chunks, reading the replies
//   mkdir        --sessions N: each repeats one MKDIR of a 3,855-byte path 20,000 times
//   never-read   --sessions N: each floods CANCEL lines and never reads a reply
//   silent-data  --connections N: data connections that never send a byte
//   slow-hello   --sessions N: control connections that send "HELLO" a byte at a time
//   all          every one of the above at once
// Prints one line per mode when its connections are in place: "<mode> ready".
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "protocol/limits.h"

namespace {

int g_port = 36258, g_data_port = 36250;
std::string g_host = "127.0.0.1";

int connect_to(int port, int rcvbuf = 0) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, g_host.c_str(), &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& s) {
  for (std::size_t done = 0; done < s.size();) {
    ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads and drops what arrives for `ms` milliseconds (or until the peer closes).
void drain(int fd, int ms) {
  char buf[65536];
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    if (::recv(fd, buf, sizeof buf, 0) <= 0) return;
  }
}

std::vector<int> declare(int sessions) {
  std::vector<int> fds;
  const std::uint64_t size = ackxfer::kMaxChunksPerFile * ackxfer::kMinChunkBytes;
  for (int s = 0; s < sessions; ++s) {
    int fd = connect_to(g_port);
    if (fd < 0) break;
    std::string lines = "HELLO ackxfer 2\n";
    for (std::size_t i = 1; i <= ackxfer::kMaxOpenFilesPerSession; ++i)
      lines += "SEND " + std::to_string(i) + " hostile" + std::to_string(s) + "/f" +
               std::to_string(i) + " size=" + std::to_string(size) +
               " mode=0644 mtime=1.0 chunk=" + std::to_string(ackxfer::kMinChunkBytes) + "\n";
    send_all(fd, lines);
    drain(fd, 200);
    fds.push_back(fd);
  }
  return fds;
}

std::vector<int> mkdirs(int sessions) {
  std::vector<int> fds;
  std::string path;
  for (int i = 0; i < 16; ++i)
    path += (i ? "/" : "") + std::string(240, static_cast<char>('a' + i));
  for (int s = 0; s < sessions; ++s) {
    int fd = connect_to(g_port);
    if (fd < 0) break;
    send_all(fd, "HELLO ackxfer 2\n");
    std::thread reader([fd] { drain(fd, 60'000); });
    std::string batch;
    for (int i = 1; i <= 20'000; ++i) {
      batch += "MKDIR " + std::to_string(i) + " " + path + " mode=0755 mtime=1.0\n";
      if (batch.size() > (1 << 20)) {
        if (!send_all(fd, batch)) break;
        batch.clear();
      }
    }
    send_all(fd, batch);
    reader.detach();
    fds.push_back(fd);
  }
  return fds;
}

std::vector<int> never_read(int sessions) {
  std::vector<int> fds;
  std::string burst;
  while (burst.size() < 64 * 1024)
    burst += "CANCEL 1\n";
  for (int s = 0; s < sessions; ++s) {
    int fd = connect_to(g_port, 4096);
    if (fd < 0) break;
    send_all(fd, "HELLO ackxfer 2\n");
    fcntl(fd, F_SETFL, O_NONBLOCK);
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (std::chrono::steady_clock::now() < end) {
      ssize_t n = ::send(fd, burst.data(), burst.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, 200) == 0) break;  // the receiver stopped reading us
      } else if (n <= 0) {
        break;
      }
    }
    fds.push_back(fd);
  }
  return fds;
}

std::vector<int> silent_data(int connections) {
  std::vector<int> fds;
  for (int i = 0; i < connections; ++i) {
    int fd = connect_to(g_data_port);
    if (fd >= 0) fds.push_back(fd);
  }
  return fds;
}

std::vector<int> slow_hello(int sessions) {
  std::vector<int> fds;
  for (int s = 0; s < sessions; ++s) {
    int fd = connect_to(g_port);
    if (fd < 0) break;
    send_all(fd, "H");
    fds.push_back(fd);
  }
  return fds;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "all";
  int sessions = 16, connections = 2048, hold = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--port")
      g_port = std::atoi(v.c_str());
    else if (a == "--data-port")
      g_data_port = std::atoi(v.c_str());
    else if (a == "--host")
      g_host = v;
    else if (a == "--mode")
      mode = v;
    else if (a == "--sessions")
      sessions = std::atoi(v.c_str());
    else if (a == "--connections")
      connections = std::atoi(v.c_str());
    else if (a == "--hold")
      hold = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "ackxfer-hostile-peer: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  std::vector<std::vector<int>> held;
  auto run = [&](const std::string& m, auto fn, int n) {
    if (mode != m && mode != "all") return;
    held.push_back(fn(n));
    std::printf("%s ready (%zu connections)\n", m.c_str(), held.back().size());
    std::fflush(stdout);
  };
  run("declare", declare, sessions);
  run("mkdir", mkdirs, sessions);
  run("never-read", never_read, sessions);
  run("silent-data", silent_data, connections);
  run("slow-hello", slow_hello, sessions);
  std::this_thread::sleep_for(std::chrono::seconds(hold));
  return 0;
}
