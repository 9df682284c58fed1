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
