// ackxfer-faultproxy: a TCP proxy that injects faults, for tests and for trying failures by
// hand. It listens on --listen at each --port and forwards to --target at the same port, so a
// sender pointed at the proxy's address sends both control and data traffic through it.
//
//   ackxfer-faultproxy --listen 127.0.0.2 --target 127.0.0.1 --port 36258 --port 36250
//       --flip 36250:4096    (flips one byte 4096 bytes into the first data connection)
//
// Faults apply to the upstream direction (sender to receiver) of the first connection on PORT,
// or of every connection with ":every", or to the downstream direction (receiver to sender)
// with ":down" (the two suffixes combine: ":every:down"):
//   --flip PORT:OFFSET       XOR 0xff into the byte at OFFSET
//   --cut PORT:BYTES         reset both sides after BYTES
//   --stall PORT:BYTES:MS    stop forwarding for MS milliseconds after BYTES
//   --reorder PORT:OFFSET    swap the 4 KiB block at OFFSET with the 4 KiB after it
//   --delay PORT:MS          hold every chunk for MS milliseconds before forwarding it
//   --throttle PORT:KBPS     forward at most KBPS kilobytes per second
//   --abandon PORT:BYTES     after BYTES, reset the sender's side but keep the receiver's side
//                            open and silent: a connection that died on one side only (a
//                            crashed NAT, a lost FIN), which the receiver cannot tell from slow
// and, not a fault:
//   --record DIR             write every byte each connection carries, as it arrived, to
//                            DIR/PORT-N-up and DIR/PORT-N-down (N counts connections per port
//                            from 0): what an observer on the path would see
// Prints "ready" on stdout once every port listens; runs until killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kReorderBlock = 4096;

struct Fault {
  enum Kind { kFlip, kCut, kStall, kReorder, kDelay, kThrottle, kAbandon } kind;
  std::uint64_t at = 0;  // stream offset (flip, cut, stall, reorder)
  unsigned value = 0;    // milliseconds (stall, delay) or KB/s (throttle)
  bool every = false;    // every connection, not only the first
  bool down = false;     // receiver-to-sender direction
};

struct PortRules {
  std::vector<Fault> faults;
  std::atomic<int> connections{0};
};

std::string g_listen = "127.0.0.2", g_target = "127.0.0.1", g_record;
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

// Copies one direction, applying `faults`. Offset faults fire once, at their byte offset in
// this connection's stream; delay and throttle apply throughout. Returns true when the
// connection was abandoned: `to` must then be kept open, and silent.
bool pump(int from, int to, std::vector<Fault> faults, std::string record) {
  std::FILE* rec = record.empty() ? nullptr : std::fopen(record.c_str(), "wb");
  if (!record.empty() && !rec) die("--record: cannot create " + record);
  struct Closer {
    std::FILE* f;
    ~Closer() {
      if (f) std::fclose(f);
    }
  } closer{rec};
  std::vector<char> buf(64 * 1024);
  std::string held;       // reorder: the block waiting for the one after it
  std::uint64_t pos = 0;  // stream offset of buf[0]
  unsigned delay_ms = 0, kbps = 0;
  for (const Fault& f : faults) {
    if (f.kind == Fault::kDelay) delay_ms = f.value;
    if (f.kind == Fault::kThrottle) kbps = f.value;
  }
  auto started = std::chrono::steady_clock::now();
  std::uint64_t forwarded = 0;
  auto forward = [&](const char* p, std::size_t n) {
    if (kbps) {
      // Pace: never ahead of kbps since the start.
      forwarded += n;
      auto due = started + std::chrono::microseconds(forwarded * 1000 / kbps);
      std::this_thread::sleep_until(due);
    }
    return write_all(to, p, n);
  };
  while (true) {
    // Leave room to complete a held reorder block from the next read.
    ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (rec) {
      std::fwrite(buf.data(), 1, static_cast<std::size_t>(n), rec);
      std::fflush(rec);
    }
    if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    std::size_t len = static_cast<std::size_t>(n), sent = 0;
    for (Fault& f : faults) {
      if (f.kind == Fault::kDelay || f.kind == Fault::kThrottle) continue;
      if (f.at < pos || f.at >= pos + len) continue;
      std::size_t i = static_cast<std::size_t>(f.at - pos);
      if (f.kind == Fault::kFlip) {
        buf[i] = static_cast<char>(buf[i] ^ 0xff);
        f.at = ~0ull;
        continue;
      }
      if (i > sent && !forward(buf.data() + sent, i - sent)) goto done;
      sent = i;
      if (f.kind == Fault::kCut) {
        reset(from);
        reset(to);
        return false;
      }
      if (f.kind == Fault::kAbandon) {
        reset(from);
        return true;
      }
      if (f.kind == Fault::kStall) {
        f.at = ~0ull;
        std::this_thread::sleep_for(std::chrono::milliseconds(f.value));
        continue;
      }
      // kReorder: collect 2 blocks from here (across reads if need be), send them swapped.
      std::size_t take = std::min(len - i, 2 * kReorderBlock - held.size());
      held.append(buf.data() + i, take);
      sent = i + take;
      if (held.size() == 2 * kReorderBlock) {
        if (!forward(held.data() + kReorderBlock, kReorderBlock) ||
            !forward(held.data(), kReorderBlock))
          goto done;
        held.clear();
        f.at = ~0ull;
      } else {
        f.at = pos + len;  // continue holding with the next read
      }
    }
    if (!forward(buf.data() + sent, len - sent)) break;
    pos += len;
  }
done:
  if (!held.empty()) write_all(to, held.data(), held.size());
  ::shutdown(to, SHUT_WR);
  return false;
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
    std::vector<Fault> up, down;
    for (const Fault& f : rules.faults)
      if (f.every || index == 0) (f.down ? down : up).push_back(f);
    auto by_offset = [](const Fault& a, const Fault& b) { return a.at < b.at; };
    std::sort(up.begin(), up.end(), by_offset);
    std::sort(down.begin(), down.end(), by_offset);
    std::string record;
    if (!g_record.empty())
      record = g_record + "/" + std::to_string(port) + "-" + std::to_string(index) + "-";
    std::thread([client, server, up, down, record] {
      std::thread back(pump, server, client, down, record.empty() ? "" : record + "down");
      bool abandoned = pump(client, server, up, record.empty() ? "" : record + "up");
      back.join();
      ::close(client);
      if (!abandoned) ::close(server);  // abandoned: held open, silent, until the proxy exits
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
  const std::map<std::string, Fault::Kind> kinds = {
      {"--flip", Fault::kFlip},       {"--cut", Fault::kCut},     {"--stall", Fault::kStall},
      {"--reorder", Fault::kReorder}, {"--delay", Fault::kDelay}, {"--throttle", Fault::kThrottle},
      {"--abandon", Fault::kAbandon}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--listen") {
      g_listen = need();
    } else if (a == "--target") {
      g_target = need();
    } else if (a == "--record") {
      g_record = need();
    } else if (a == "--port") {
      ports.push_back(std::atoi(need().c_str()));
    } else if (auto k = kinds.find(a); k != kinds.end()) {
      auto parts = split(need());
      if (parts.size() < 2) die(a + " needs PORT:VALUE");
      Fault f{k->second, 0, 0, false, false};
      std::size_t next = 2;
      switch (f.kind) {
        case Fault::kDelay:
        case Fault::kThrottle:
          f.value = static_cast<unsigned>(std::atoi(parts[1].c_str()));
          break;
        case Fault::kStall:
          if (parts.size() < 3) die("--stall needs PORT:BYTES:MS");
          f.at = std::strtoull(parts[1].c_str(), nullptr, 10);
          f.value = static_cast<unsigned>(std::atoi(parts[2].c_str()));
          next = 3;
          break;
        default:
          f.at = std::strtoull(parts[1].c_str(), nullptr, 10);
      }
      for (std::size_t j = next; j < parts.size(); ++j) {
        if (parts[j] == "every")
          f.every = true;
        else if (parts[j] == "down")
          f.down = true;
        else
          die("unknown suffix :" + parts[j]);
      }
      g_ports[std::atoi(parts[0].c_str())].faults.push_back(f);
    } else {
      die("unknown argument " + a + " (see the comment at the top of tools/fault_proxy.cpp)");
    }
  }
  if (ports.empty()) die("give at least one --port");
  for (int port : ports)
    g_ports[port];  // create every entry before threads read the map
  std::vector<std::thread> threads;
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
