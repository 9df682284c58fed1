// Address parsing, resolution and listener setup.
#include "io/socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/tcp.h>

#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

#include "error.h"

namespace ackxfer {

std::uint16_t Endpoint::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

void Endpoint::set_port(std::uint16_t port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(port);
}

std::string Endpoint::host_string() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, buf, sizeof buf);
  else if (family() == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, buf, sizeof buf);
  return buf;
}

std::string Endpoint::to_string() const {
  std::string h = host_string();
  if (family() == AF_INET6) h = "[" + h + "]";
  return h + ":" + std::to_string(port());
}

HostPort parse_host_port(std::string_view text) {
  HostPort out;
  auto bad = [&](const std::string& why) {
    return Failure("bad address '" + std::string(text) + "': " + why, FailureKind::kUsage);
  };
  if (text.empty()) throw bad("empty");
  std::string_view port_text;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) throw bad("missing ']'");
    out.host = std::string(text.substr(1, close - 1));
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw bad("expected ':PORT' after ']'");
      port_text = rest.substr(1);
      out.has_port = true;
    }
  } else {
    auto first = text.find(':');
    if (first != std::string_view::npos && text.find(':', first + 1) == std::string_view::npos) {
      out.host = std::string(text.substr(0, first));
      port_text = text.substr(first + 1);
      out.has_port = true;
    } else {
      out.host = std::string(text);  // a name, an IPv4 address or a bare IPv6 address
    }
  }
  if (out.host.empty()) throw bad("empty host");
  if (out.has_port) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), v);
    if (port_text.empty() || ec != std::errc() || p != port_text.data() + port_text.size() ||
        v > 65535)
      throw bad("port must be a number from 0 to 65535");
    out.port = static_cast<std::uint16_t>(v);
  }
  return out;
}

std::vector<Endpoint> resolve_endpoints(const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  int r = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (r != 0) {
    throw Failure(std::string("cannot resolve host '") + host +
                      "': " + (r == EAI_SYSTEM ? errno_text(errno) : std::string(gai_strerror(r))) +
                      "; check the name, or give an IP address",
                  FailureKind::kCannotConnect);
  }
  std::vector<Endpoint> out;
  // IPv4 first when a name has both: loopback and most LANs are IPv4 first.
  for (int family : {AF_INET, AF_INET6})
    for (const addrinfo* a = res; a; a = a->ai_next) {
      if (a->ai_family != family || a->ai_addrlen > sizeof(sockaddr_storage)) continue;
      Endpoint ep;
      std::memcpy(&ep.addr, a->ai_addr, a->ai_addrlen);
      ep.len = a->ai_addrlen;
      ep.set_port(port);
      bool seen = false;
      for (const Endpoint& e : out)
        seen = seen || (e.len == ep.len && std::memcmp(&e.addr, &ep.addr, ep.len) == 0);
      if (!seen) out.push_back(ep);
    }
  freeaddrinfo(res);
  if (out.empty())
    throw Failure("cannot resolve host '" + host + "': no IPv4 or IPv6 address",
                  FailureKind::kCannotConnect);
  return out;
}

Endpoint resolve_endpoint(const std::string& host, std::uint16_t port, bool passive) {
  return resolve_endpoints(host, port, passive).front();
}

UniqueFd make_tcp_socket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SystemError("socket", errno);
  return UniqueFd(fd);
}

UniqueFd make_reuseport_listener(const Endpoint& ep, int backlog) {
  UniqueFd fd = make_tcp_socket(ep.family());
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    throw SystemError("setsockopt SO_REUSEADDR", errno);
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    throw SystemError("setsockopt SO_REUSEPORT", errno);
  if (::bind(fd.get(), ep.sa(), ep.len) != 0) throw SystemError("bind " + ep.to_string(), errno);
  if (::listen(fd.get(), backlog) != 0) throw SystemError("listen on " + ep.to_string(), errno);
  return fd;
}

void check_port_available(const Endpoint& ep, std::string_view what) {
  if (ep.port() == 0) return;
  // A receiver killed a moment ago (SIGKILL, a crash) still holds its listeners until the
  // kernel has torn its io_uring down, which runs asynchronously after the process is gone
  // (tens of milliseconds, seen in tests). A restart right away (systemd, a script) should
  // not fail for that, so "in use" is only believed once it lasts this long.
  constexpr auto kPortReleaseWait = std::chrono::seconds(2);
  constexpr auto kPortRetryPause = std::chrono::milliseconds(50);
  auto deadline = std::chrono::steady_clock::now() + kPortReleaseWait;
  for (;;) {
    UniqueFd fd = make_tcp_socket(ep.family());
    int one = 1;
    // SO_REUSEADDR so that TIME_WAIT leftovers of an earlier run do not count as "in use".
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ep.sa(), ep.len) == 0) return;
    int e = errno;
    if (e != EADDRINUSE) throw SystemError("bind " + std::string(what) + " " + ep.to_string(), e);
    if (std::chrono::steady_clock::now() >= deadline)
      throw Failure(std::string(what) + " " + ep.to_string() +
                    " is already in use (is another ackxfer-fast recv running? pick another "
                    "port with --port/--data-port, or 0 for any free port)");
    std::this_thread::sleep_for(kPortRetryPause);
  }
}

Endpoint local_endpoint(int fd) {
  Endpoint ep;
  ep.len = sizeof ep.addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ep.addr), &ep.len) != 0)
    throw SystemError("getsockname", errno);
  return ep;
}

Endpoint peer_endpoint(int fd) {
  Endpoint ep;
  ep.len = sizeof ep.addr;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ep.addr), &ep.len) != 0) ep.len = 0;
  return ep;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace ackxfer
