// Token generation and hex form.
#include "protocol/token.h"

#include <sys/random.h>

#include <cstring>

#include "digest/digest.h"
#include "error.h"

namespace ackxfer {

namespace {

// getrandom(2) output drawn 4 KiB at a time per thread: one syscall per 256 tokens instead
// of one per file. The bytes are the kernel's CSPRNG output either way.
struct RandomPool {
  std::array<std::uint8_t, 4096> bytes;
  std::size_t used = bytes.size();

  void take(std::uint8_t* out, std::size_t n) {
    if (used + n > bytes.size()) refill();
    std::memcpy(out, bytes.data() + used, n);
    // Each byte is handed out once; wipe it so it does not linger in memory.
    std::memset(bytes.data() + used, 0, n);
    used += n;
  }
  void refill() {
    std::size_t got = 0;
    while (got < bytes.size()) {
      ssize_t n = getrandom(bytes.data() + got, bytes.size() - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw SystemError("getrandom", errno);
      }
      got += static_cast<std::size_t>(n);
    }
    used = 0;
  }
};

thread_local RandomPool t_pool;

}  // namespace

Token Token::random() {
  Token t;
  t_pool.take(t.bytes.data(), t.bytes.size());
  return t;
}

// Same text form as a digest: 32 lower-case hex digits.
std::string Token::hex() const {
  Digest128 d{bytes};
  return d.hex();
}

std::optional<Token> Token::from_hex(std::string_view hex) {
  auto d = Digest128::from_hex(hex);
  if (!d) return std::nullopt;
  return Token{d->bytes};
}

}  // namespace ackxfer
