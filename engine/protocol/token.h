// The unguessable 128-bit token that ties a data frame to the file its READY announced.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ackxfer {

struct Token {
  std::array<std::uint8_t, 16> bytes{};

  // 128 bits from getrandom(2); throws SystemError if the kernel cannot supply them.
  static Token random();
  std::string hex() const;
  static std::optional<Token> from_hex(std::string_view hex);
  friend bool operator==(const Token&, const Token&) = default;
};

// A fresh random challenge for the authentication exchange (HELLO nonce=, AUTH nonce=): each
// side picks one per connection, so no recorded exchange can be replayed.
struct Nonce {
  std::array<std::uint8_t, 16> bytes{};

  static Nonce random();  // getrandom(2), like Token
  std::string hex() const;
  static std::optional<Nonce> from_hex(std::string_view hex);
  friend bool operator==(const Nonce&, const Nonce&) = default;
};

// HMAC-SHA256 proof of knowing the shared secret (AUTH proof=, HELLO proof=); see
// engine/auth/shared_secret.h. Compare with proofs_match(), never with ==, outside tests.
struct Proof {
  std::array<std::uint8_t, 32> bytes{};

  std::string hex() const;
  static std::optional<Proof> from_hex(std::string_view hex);
  friend bool operator==(const Proof&, const Proof&) = default;
};

// Lower-case hex of `n` bytes (tokens, nonces, proofs, key fingerprints).
std::string to_hex(const std::uint8_t* p, std::size_t n);

struct TokenHash {
  std::size_t operator()(const Token& t) const noexcept {
    // Tokens are uniformly random: any 8 bytes are a good hash.
    std::size_t h;
    static_assert(sizeof h <= sizeof t.bytes);
    __builtin_memcpy(&h, t.bytes.data(), sizeof h);
    return h;
  }
};

}  // namespace ackxfer
