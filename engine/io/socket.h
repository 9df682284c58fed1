// Addresses and sockets: parsing HOST[:PORT], resolving, SO_REUSEPORT listeners and the socket
// options the engine sets. Blocking helpers here run at start-up, never on a worker loop.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "unique_fd.h"

namespace ackxfer {

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;

  int family() const { return addr.ss_family; }
  std::uint16_t port() const;
  void set_port(std::uint16_t port);
  // "127.0.0.1:36258" or "[::1]:36258".
  std::string to_string() const;
  // Address without port: "127.0.0.1" or "::1".
  std::string host_string() const;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&addr); }
};

// "host", "host:port", "[v6]:port", "v6" (bare IPv6 without port). Throws Failure on bad input.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  bool has_port = false;
};
HostPort parse_host_port(std::string_view text);

// Resolves a host name or numeric address (getaddrinfo; blocking). Throws Failure naming the
// host when it cannot be resolved. `passive` for bind addresses.
Endpoint resolve_endpoint(const std::string& host, std::uint16_t port, bool passive);
// Every address of `host`, IPv4 first (loopback and most LANs are IPv4 first), without
// duplicates: a sender tries the next when one refuses (`localhost` may be ::1 only for the
// receiver). Throws like resolve_endpoint.
std::vector<Endpoint> resolve_endpoints(const std::string& host, std::uint16_t port, bool passive);

// A listening TCP socket with SO_REUSEPORT, so each worker can have its own and the kernel
// spreads connections across them.
UniqueFd make_reuseport_listener(const Endpoint& ep, int backlog);

// Fails with a clear message if another process (another receiver, most likely) already
// listens on ep. SO_REUSEPORT would otherwise let a second receiver bind silently and split
// the connections with the first.
// "In use" counts only once it has lasted 2 s: a receiver killed a moment ago releases its
// ports only when the kernel has torn its io_uring down.
void check_port_available(const Endpoint& ep, std::string_view what);

// The local address a socket is bound to.
Endpoint local_endpoint(int fd);
Endpoint peer_endpoint(int fd);

UniqueFd make_tcp_socket(int family);
void set_nodelay(int fd);

}  // namespace ackxfer
