// ackxfer-linkemu: a WAN link between two TUN devices: one-way delay, random loss, a rate
// limit with a bounded queue, in each direction. Packets are IP packets moved by read/write, so
// the TCP connections that cross it are real end to end (nothing terminates them, unlike a
// proxy). This kernel has no netem qdisc; this is what tools/wan-sim uses instead.
//
//   ackxfer-linkemu --tun-a axtun0 --tun-b axtun1 --delay-ms 20 --loss 0.001 --rate-mbit 1000
//
// --delay-ms is one way (20 gives a 40 ms round trip); --loss and --rate-mbit apply to each
// direction; --queue-ms bounds the queue at that many milliseconds of the rate (drop-tail).
// Creates the devices, prints "ready", and forwards until SIGTERM; prints counters on exit.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;

std::uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

int open_tun(const std::string& name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    std::perror("open /dev/net/tun");
    std::exit(2);
  }
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    std::perror(("TUNSETIFF " + name).c_str());
    std::exit(2);
  }
  return fd;
}

struct Packet {
  std::uint64_t release_ns;
  std::vector<std::uint8_t> bytes;
};

// One direction of the link.
struct Direction {
  int in = -1, out = -1;
  std::deque<Packet> queue;
  std::uint64_t queued_bytes = 0;
  std::uint64_t last_departure_ns = 0;
  std::uint64_t forwarded = 0, lost = 0, overflowed = 0;
};

struct Config {
  std::uint64_t delay_ns = 20'000'000;
  double loss = 0;
  double rate_bps = 1e9;          // bits per second; 0 = unlimited
  std::uint64_t queue_bytes = 0;  // 0 = unbounded
};

void take_packets(Direction& d, const Config& c, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> coin(0, 1);
  std::uint8_t buf[65536];
  while (true) {
    ssize_t n = read(d.in, buf, sizeof buf);
    if (n <= 0) return;
    if (c.loss > 0 && coin(rng) < c.loss) {
      ++d.lost;
      continue;
    }
    if (c.queue_bytes && d.queued_bytes + static_cast<std::uint64_t>(n) > c.queue_bytes) {
      ++d.overflowed;
      continue;
    }
    std::uint64_t t = now_ns();
    // Serialisation at the link rate, then the propagation delay.
    std::uint64_t start = std::max(t, d.last_departure_ns);
    std::uint64_t tx = c.rate_bps > 0 ? static_cast<std::uint64_t>(n * 8 * 1e9 / c.rate_bps) : 0;
    d.last_departure_ns = start + tx;
    d.queue.push_back(
        Packet{d.last_departure_ns + c.delay_ns, std::vector<std::uint8_t>(buf, buf + n)});
    d.queued_bytes += static_cast<std::uint64_t>(n);
  }
}

void release_due(Direction& d) {
  std::uint64_t t = now_ns();
  while (!d.queue.empty() && d.queue.front().release_ns <= t) {
    Packet& p = d.queue.front();
    if (write(d.out, p.bytes.data(), p.bytes.size()) < 0 && errno == EAGAIN) return;
    d.queued_bytes -= p.bytes.size();
    ++d.forwarded;
    d.queue.pop_front();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string a = "axtun0", b = "axtun1";
  Config c;
  double queue_ms = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--tun-a")
      a = v;
    else if (k == "--tun-b")
      b = v;
    else if (k == "--delay-ms")
      c.delay_ns = static_cast<std::uint64_t>(std::atof(v.c_str()) * 1e6);
    else if (k == "--loss")
      c.loss = std::atof(v.c_str());
    else if (k == "--rate-mbit")
      c.rate_bps = std::atof(v.c_str()) * 1e6;
    else if (k == "--queue-ms")
      queue_ms = std::atof(v.c_str());
    else {
      std::fprintf(stderr,
                   "ackxfer-linkemu: unknown option %s (see the top of tools/link_emulator.cpp)\n",
                   k.c_str());
      return 2;
    }
  }
  if (c.rate_bps > 0 && queue_ms > 0)
    c.queue_bytes = static_cast<std::uint64_t>(c.rate_bps / 8 * queue_ms / 1000);
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGINT, [](int) { g_stop = 1; });
  int fa = open_tun(a), fb = open_tun(b);
  Direction ab, ba;
  ab.in = fa;
  ab.out = fb;
  ba.in = fb;
  ba.out = fa;
  std::mt19937_64 rng(12345);
  std::printf("ready\n");
  std::fflush(stdout);
  while (!g_stop) {
    pollfd p[2] = {{fa, POLLIN, 0}, {fb, POLLIN, 0}};
    std::uint64_t next = UINT64_MAX;
    for (Direction* d : {&ab, &ba})
      if (!d->queue.empty()) next = std::min(next, d->queue.front().release_ns);
    timespec ts{};
    timespec* tsp = nullptr;
    if (next != UINT64_MAX) {
      std::uint64_t t = now_ns();
      std::uint64_t wait = next > t ? next - t : 0;
      ts.tv_sec = static_cast<time_t>(wait / 1000000000ull);
      ts.tv_nsec = static_cast<long>(wait % 1000000000ull);
      tsp = &ts;
    }
    int r = ppoll(p, 2, tsp, nullptr);
    if (r < 0 && errno != EINTR) break;
    if (p[0].revents & POLLIN) take_packets(ab, c, rng);
    if (p[1].revents & POLLIN) take_packets(ba, c, rng);
    release_due(ab);
    release_due(ba);
  }
  std::fprintf(stderr,
               "ackxfer-linkemu: %s->%s forwarded %llu lost %llu queue-full %llu; %s->%s forwarded "
               "%llu lost %llu queue-full %llu\n",
               a.c_str(), b.c_str(), (unsigned long long)ab.forwarded, (unsigned long long)ab.lost,
               (unsigned long long)ab.overflowed, b.c_str(), a.c_str(),
               (unsigned long long)ba.forwarded, (unsigned long long)ba.lost,
               (unsigned long long)ba.overflowed);
  return 0;
}
