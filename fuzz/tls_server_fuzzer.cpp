// Whatever a peer sends a receiver's TLS channel before and during the handshake: raw bytes,
// or a real ClientHello (with a pre-shared key offered) with bytes of the input XORed into it,
// fed in pieces of input-chosen sizes. The channel must fail cleanly or wait, never crash,
// leak, or hold more than its buffer (engine/tls/tls_channel.h).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tls/tls_channel.h"

using namespace ackxfer;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto key = std::make_shared<const SharedSecret>(std::string("fuzz fuzz fuzz fuzz"));
  static const auto server_ctx = TlsContext::with_secret(TlsRole::kServer, key);
  static const auto client_ctx = TlsContext::with_secret(TlsRole::kClient, key);
  if (size < 2) return 0;
  const bool mutate = data[0] & 1;
  const std::size_t piece = 1 + data[1] % 251;  // bytes delivered per receive
  data += 2;
  size -= 2;

  std::vector<std::uint8_t> wire;
  if (mutate) {
    TlsChannel client(client_ctx);
    client.handshake();
    auto hello = client.output();
    wire.assign(hello.begin(), hello.end());
    // Pairs of (position, xor): up to 64 changes anywhere in the ClientHello.
    for (std::size_t i = 0; i + 2 < size && i < 3 * 64; i += 3) {
      std::size_t at = (std::size_t{data[i]} << 8 | data[i + 1]) % wire.size();
      wire[at] ^= data[i + 2];
    }
  } else {
    wire.assign(data, data + size);
  }

  TlsChannel server(server_ctx, kMinTlsBufferBytes);
  std::vector<std::uint8_t> plain(4096);
  for (std::size_t at = 0; at < wire.size();) {
    auto space = server.input_space();
    if (space.empty()) {
      std::size_t got = 0;
      if (server.read(plain, got) == TlsChannel::Status::kFailed) break;
      if (got == 0 && server.input_space().empty()) __builtin_trap();  // stuck full: a bug
      continue;
    }
    std::size_t n = std::min({piece, space.size(), wire.size() - at});
    std::memcpy(space.data(), wire.data() + at, n);
    server.received(n);
    at += n;
    auto st = server.handshake();
    server.sent(server.output().size());  // whatever it answers goes nowhere
    if (st == TlsChannel::Status::kFailed) {
      if (server.error().empty()) __builtin_trap();  // a failure must say why
      break;
    }
  }
  return 0;
}
