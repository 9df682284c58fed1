// ackxfer-faultproxy: a TCP proxy that injects faults, for tests and for trying failures by
// hand. It listens on --listen at each --port and forwards to --target at the same port, so a
// sender pointed at the proxy's address sends both control and data traffic through it.
//
//   ackxfer-faultproxy --listen 127.0.0.2 --target 127.0.0.1 --port 36258 --port 36250
//       --flip 36250:4096    (flips one byte 4096 bytes into the first data connection)
//
// Faults (upstream = sender to receiver; each applies to the first connection on PORT unless
// "every" is given):
//   --flip PORT:OFFSET[:every]    XOR 0xff into the byte at OFFSET
//   --cut PORT:BYTES[:every]      reset both sides after BYTES upstream bytes
//   --stall PORT:BYTES:MS         stop forwarding for MS milliseconds after BYTES
// Prints "ready" on stdout once every port listens; runs until killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Fault {
  enum Kind { kFlip, kCut, kStall } kind;
  std::uint64_t at = 0;
  unsigned ms = 0;
  bool every = false;
};

struct PortRules {
  std::vector<Fault> faults;
  std::atomic<int> connections{0};
};

std::string g_listen = "127.0.0.2", g_target = "127.0.0.1";
std::map<int, PortRules> g_ports;

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "ackxfer-faultproxy: %s\n", msg.c_str());
  std::exit(2);
}

sockaddr_in addr_of(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) die("bad IPv4 address " + host);
  return a;
}

bool write_all(int fd, const char* p, std::size_t n) {
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void reset(int fd) {
  linger l{1, 0};  // close with RST, like a crashed peer or a middlebox
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::shutdown(fd, SHUT_RDWR);
}

// Copies from `from` to `to`, applying `faults` (upstream only). Each fault fires once per
// connection, at its byte offset in the stream.
void pump(int from, int to, std::vector<Fault> faults) {
  std::vector<char> buf(64 * 1024);
  std::uint64_t pos = 0;  // stream offset of buf[0]
  while (true) {
    ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::size_t len = static_cast<std::size_t>(n), sent = 0;
    for (Fault& f : faults) {
      if (f.at < pos || f.at >= pos + len) continue;
      std::size_t i = static_cast<std::size_t>(f.at - pos);
      f.at = ~0ull;  // fired
      if (f.kind == Fault::kFlip) {
        buf[i] = static_cast<char>(buf[i] ^ 0xff);
        continue;
      }
      if (i > sent && !write_all(to, buf.data() + sent, i - sent)) goto done;
      sent = i;
      if (f.kind == Fault::kCut) {
        reset(from);
        reset(to);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(f.ms));  // kStall
    }
    if (!write_all(to, buf.data() + sent, len - sent)) break;
    pos += len;
  }
done:
  ::shutdown(to, SHUT_WR);
}

void serve(int port, int listener) {
  PortRules& rules = g_ports[port];
  while (true) {
    int client = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die(std::string("accept: ") + std::strerror(errno));
    }
    int index = rules.connections++;
    int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in t = addr_of(g_target, port);
    if (::connect(server, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
      reset(client);
      ::close(client);
      ::close(server);
      continue;
    }
    int one = 1;
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<Fault> faults;
    for (const Fault& f : rules.faults)
      if (f.every || index == 0) faults.push_back(f);
    std::sort(faults.begin(), faults.end(),
              [](const Fault& a, const Fault& b) { return a.at < b.at; });
    std::thread([client, server, faults] {
      std::thread down(pump, server, client, std::vector<Fault>{});
      pump(client, server, faults);
      down.join();
      ::close(client);
      ::close(server);
    }).detach();
  }
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto c = s.find(':', start);
    out.push_back(s.substr(start, c - start));
    if (c == std::string::npos) break;
    start = c + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ports;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--listen")
      g_listen = need();
    else if (a == "--target")
      g_target = need();
    else if (a == "--port")
      ports.push_back(std::atoi(need().c_str()));
    else if (a == "--flip" || a == "--cut" || a == "--stall") {
      auto parts = split(need());
      if (parts.size() < 2) die(a + " needs PORT:BYTES");
      Fault f{a == "--flip"  ? Fault::kFlip
              : a == "--cut" ? Fault::kCut
                             : Fault::kStall,
              std::strtoull(parts[1].c_str(), nullptr, 10), 0, false};
      if (f.kind == Fault::kStall) {
        if (parts.size() < 3) die("--stall needs PORT:BYTES:MS");
        f.ms = static_cast<unsigned>(std::atoi(parts[2].c_str()));
      } else if (parts.size() > 2) {
        f.every = parts[2] == "every";
      }
      g_ports[std::atoi(parts[0].c_str())].faults.push_back(f);
    } else {
      die("unknown argument " + a + " (see the comment at the top of tools/fault_proxy.cpp)");
    }
  }
  if (ports.empty()) die("give at least one --port");
  std::vector<std::thread> threads;
  for (int port : ports) {
    g_ports[port];  // create before threads read the map
  }
  for (int port : ports) {
    int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = addr_of(g_listen, port);
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 512) != 0)
      die("listen on " + g_listen + ":" + std::to_string(port) + ": " + std::strerror(errno));
    threads.emplace_back(serve, port, l);
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (auto& t : threads)
    t.join();
}
