// Token generation and hex form.
#include "protocol/token.h"

#include <sys/random.h>

#include "digest/digest.h"
#include "error.h"

namespace ackxfer {

Token Token::random() {
  Token t;
  std::size_t got = 0;
  while (got < t.bytes.size()) {
    ssize_t n = getrandom(t.bytes.data() + got, t.bytes.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SystemError("getrandom", errno);
    }
    got += static_cast<std::size_t>(n);
  }
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
