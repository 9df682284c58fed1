// ackxfer-hostile-peer: the worst peer we could write, to measure what it can make a receiver
// hold (tools/measure-hostile runs it and reads the receiver's RSS and fds). Each mode opens
// its connections, does its damage and holds everything until killed or `--hold` seconds pass.
//
//   ackxfer-hostile-peer --port 36258 --data-port 36250 --mode declare --sessions 64
//   ackxfer-hostile-peer ... --secret-file S    (every connection TLS, as a sender with the key)
//
// Modes (all speak the protocol as documented):
//   declare        --sessions N: each says HELLO and SENDs kMaxOpenFilesPerSession files of the
//                  largest size with the smallest chunks, reading the replies
//   mkdir          --sessions N: each repeats one MKDIR of a 3,855-byte path 20,000 times
//   never-read     --sessions N: each floods CANCEL lines and never reads a reply
//   silent-data    --connections N: data connections that never send a byte (with a secret:
//                  that finish the TLS handshake with a live session's key, then say nothing)
//   stalled-frames --connections N: data connections that each start a frame for a chunk of
//                  a declared file, send half its payload and stall (each proven: its frame
//                  is for an open file)
//   slow-hello     --sessions N: control connections that send "HELLO" a byte at a time (with
//                  a secret: the first byte of a ClientHello)
//   all            every one of the above at once
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
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "auth/shared_secret.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "protocol/token.h"
#include "tls/tls_channel.h"

namespace {

using ackxfer::TlsChannel;
using ackxfer::TlsContext;
using ackxfer::TlsRole;
using Clock = std::chrono::steady_clock;

int g_port = 36258, g_data_port = 36250;
std::string g_host = "127.0.0.1";
std::shared_ptr<TlsContext> g_tls;  // null: in clear

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

// One connection, in clear or through TLS.
struct Conn {
  int fd = -1;
  std::unique_ptr<TlsChannel> tls;
  std::string in;  // plaintext received (kept only where a mode asks for it)
  bool keep_input = false;
};

// Receives once (waiting up to `ms`); with TLS drives the handshake or decrypts. False once
// the peer closed or the channel failed.
bool receive(Conn& c, int ms) {
  pollfd p{c.fd, POLLIN, 0};
  if (poll(&p, 1, ms) <= 0) return true;
  char raw[65536];
  std::span<std::uint8_t> space =
      c.tls ? c.tls->input_space() : std::span(reinterpret_cast<std::uint8_t*>(raw), sizeof raw);
  if (space.empty()) return true;
  ssize_t n = ::recv(c.fd, space.data(), space.size(), MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
  if (n < 0) return true;
  if (!c.tls) {
    if (c.keep_input) c.in.append(raw, static_cast<std::size_t>(n));
    return true;
  }
  c.tls->received(static_cast<std::size_t>(n));
  if (!c.tls->handshake_done()) return c.tls->handshake() != TlsChannel::Status::kFailed;
  std::uint8_t buf[16384];
  std::size_t got = 0;
  TlsChannel::Status st;
  while ((st = c.tls->read(buf, got)) == TlsChannel::Status::kOk && got > 0)
    if (c.keep_input) c.in.append(reinterpret_cast<char*>(buf), got);
  return st != TlsChannel::Status::kFailed && st != TlsChannel::Status::kClosed;
}

// Sends `data` (plaintext), reading and dropping replies when `read_replies`, until it is all
// on the wire, `ms` pass, or (not reading) the receiver has stopped reading for 200 ms. True
// when all of it went.
bool pump(Conn& c, std::string_view data, int ms, bool read_replies) {
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  std::size_t off = 0;
  while (Clock::now() < end) {
    std::span<const std::uint8_t> out;
    if (c.tls) {
      if (off < data.size()) {
        std::size_t taken = 0;
        c.tls->write({reinterpret_cast<const std::uint8_t*>(data.data()) + off, data.size() - off},
                     taken);
        off += taken;
      }
      out = c.tls->output();
    } else {
      out = {reinterpret_cast<const std::uint8_t*>(data.data()) + off, data.size() - off};
    }
    if (out.empty() && off >= data.size()) return true;
    pollfd p{c.fd, static_cast<short>(POLLOUT | (read_replies ? POLLIN : 0)), 0};
    if (poll(&p, 1, 200) <= 0) {
      if (!read_replies) return false;  // the receiver stopped reading us
      continue;
    }
    if ((p.revents & POLLIN) && !receive(c, 0)) return false;
    if (p.revents & (POLLERR | POLLHUP)) return false;
    if (!(p.revents & POLLOUT) || out.empty()) continue;
    ssize_t n = ::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return false;
    if (c.tls)
      c.tls->sent(static_cast<std::size_t>(n));
    else
      off += static_cast<std::size_t>(n);
  }
  return false;
}

// Connects; with `ctx`, finishes the TLS handshake (fd -1 if either fails).
Conn open_conn(int port, const std::shared_ptr<TlsContext>& ctx, int rcvbuf = 0) {
  Conn c;
  c.fd = connect_to(port, rcvbuf);
  if (c.fd < 0 || !ctx) return c;
  c.tls = std::make_unique<TlsChannel>(ctx, 17 * 1024 + 512);
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (!c.tls->handshake_done() && Clock::now() < end) {
    if (c.tls->handshake() == TlsChannel::Status::kFailed || !pump(c, {}, 2000, true) ||
        (!c.tls->handshake_done() && !receive(c, 200))) {
      std::fprintf(stderr, "TLS handshake failed: %s\n", c.tls->error().c_str());
      break;
    }
  }
  if (!c.tls->handshake_done()) {
    ::close(c.fd);
    c.fd = -1;
  }
  return c;
}

// Reads and drops what arrives for `ms` milliseconds (or until the peer closes).
void drain(Conn& c, int ms) {
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < end)
    if (!receive(c, 50)) return;
}

// A session that has said HELLO and read the answer.
Conn hello_session(int rcvbuf = 0) {
  Conn c = open_conn(g_port, g_tls, rcvbuf);
  if (c.fd < 0) return c;
  c.keep_input = true;
  pump(c, "HELLO ackxfer 2\n", 5000, true);
  for (int i = 0; i < 50 && c.in.find('\n') == std::string::npos; ++i)
    if (!receive(c, 100)) break;
  c.in.clear();
  c.keep_input = false;
  return c;
}

std::string declare_lines(const std::string& prefix, std::uint64_t size) {
  std::string lines;
  for (std::size_t i = 1; i <= ackxfer::kMaxOpenFilesPerSession; ++i)
    lines += "SEND " + std::to_string(i) + " " + prefix + "/f" + std::to_string(i) +
             " size=" + std::to_string(size) +
             " mode=0644 mtime=1.0 chunk=" + std::to_string(ackxfer::kMinChunkBytes) + "\n";
  return lines;
}

constexpr std::uint64_t kLargestSmallChunked = ackxfer::kMaxChunksPerFile * ackxfer::kMinChunkBytes;

std::vector<Conn> declare(int sessions) {
  std::vector<Conn> held;
  for (int s = 0; s < sessions; ++s) {
    Conn c = hello_session();
    if (c.fd < 0) break;
    pump(c, declare_lines("hostile" + std::to_string(s), kLargestSmallChunked), 10'000, true);
    drain(c, 200);
    held.push_back(std::move(c));
  }
  return held;
}

std::vector<Conn> mkdirs(int sessions) {
  std::vector<Conn> held;
  std::string path;
  for (int i = 0; i < 16; ++i)
    path += (i ? "/" : "") + std::string(240, static_cast<char>('a' + i));
  std::string lines;
  for (int i = 1; i <= 20'000; ++i)
    lines += "MKDIR " + std::to_string(i) + " " + path + " mode=0755 mtime=1.0\n";
  for (int s = 0; s < sessions; ++s) {
    Conn c = hello_session();
    if (c.fd < 0) break;
    pump(c, lines, 60'000, true);
    held.push_back(std::move(c));
  }
  return held;
}

std::vector<Conn> never_read(int sessions) {
  std::vector<Conn> held;
  std::string burst;
  while (burst.size() < (8 << 20))
    burst += "CANCEL 1\n";
  for (int s = 0; s < sessions; ++s) {
    Conn c = hello_session(4096);
    if (c.fd < 0) break;
    pump(c, burst, 2000, false);
    held.push_back(std::move(c));
  }
  return held;
}

// With a secret, data connections need a live session's key: `session` is that session.
std::shared_ptr<TlsContext> data_tls(const Conn& session) {
  if (!session.tls) return nullptr;
  auto key = session.tls->session_data_key();
  if (!key) return nullptr;
  return TlsContext::with_psk(TlsRole::kClient, *key);
}

std::vector<Conn> silent_data(int connections) {
  std::vector<Conn> held;
  Conn session = g_tls ? hello_session() : Conn{};
  auto ctx = data_tls(session);
  for (int i = 0; i < connections; ++i) {
    Conn c = open_conn(g_data_port, ctx);
    if (c.fd >= 0) held.push_back(std::move(c));
  }
  if (session.fd >= 0) held.push_back(std::move(session));
  return held;
}

std::vector<Conn> stalled_frames(int connections) {
  std::vector<Conn> held;
  Conn session = hello_session();
  if (session.fd < 0) return held;
  session.keep_input = true;
  pump(session, declare_lines("stalled", kLargestSmallChunked), 10'000, true);
  std::vector<ackxfer::Token> tokens;
  for (int i = 0; i < 100 && tokens.size() < ackxfer::kMaxOpenFilesPerSession; ++i) {
    receive(session, 100);
    for (std::size_t at; (at = session.in.find('\n')) != std::string::npos;) {
      std::string line = session.in.substr(0, at);
      session.in.erase(0, at + 1);
      auto t = line.find(" token=");
      if (line.rfind("READY ", 0) == 0 && t != std::string::npos)
        if (auto tok = ackxfer::Token::from_hex(line.substr(t + 7, 32))) tokens.push_back(*tok);
    }
  }
  session.keep_input = false;
  if (tokens.empty()) {
    std::fprintf(stderr, "stalled-frames: no READY\n");
    return held;
  }
  auto ctx = data_tls(session);
  const std::string half(ackxfer::kMinChunkBytes / 2, 'x');
  for (int i = 0; i < connections; ++i) {
    Conn c = open_conn(g_data_port, ctx);
    if (c.fd < 0) continue;
    std::uint8_t h[ackxfer::kFrameHeaderBytes];
    const std::size_t chunk = static_cast<std::size_t>(i) / tokens.size();
    ackxfer::encode_frame_header({tokens[static_cast<std::size_t>(i) % tokens.size()],
                                  chunk * ackxfer::kMinChunkBytes, ackxfer::kMinChunkBytes},
                                 h);
    pump(c, std::string(reinterpret_cast<char*>(h), sizeof h) + half, 2000, true);
    held.push_back(std::move(c));
  }
  held.push_back(std::move(session));
  return held;
}

std::vector<Conn> slow_hello(int sessions) {
  std::vector<Conn> held;
  for (int s = 0; s < sessions; ++s) {
    Conn c;
    c.fd = connect_to(g_port);
    if (c.fd < 0) break;
    // In clear, the first byte of HELLO; with TLS, of a ClientHello (a handshake record).
    ::send(c.fd, g_tls ? "\x16" : "H", 1, MSG_NOSIGNAL);
    held.push_back(std::move(c));
  }
  return held;
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
    else if (a == "--secret-file") {
      std::optional<std::string> warning;
      g_tls = TlsContext::with_secret(TlsRole::kClient, ackxfer::load_secret_file(v, warning));
    } else {
      std::fprintf(stderr, "ackxfer-hostile-peer: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  std::vector<std::vector<Conn>> held;
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
  run("stalled-frames", stalled_frames, connections);
  run("slow-hello", slow_hello, sessions);
  std::this_thread::sleep_for(std::chrono::seconds(hold));
  return 0;
}
