// What a TLS peer declares before it has proven anything: the plaintext handshake messages at
// the start of a connection (ClientHello, ServerHello, HelloRetryRequest). OpenSSL reserves a
// buffer of the size a message's header claims as soon as it reads the header (up to 128 KiB
// for a ClientHello, zero-filled), and keeps it until the handshake ends: nine bytes from
// anyone held a receiver's connection at about three times the memory its budgets count.
// A channel runs every received byte of the plaintext phase through this guard first, which
// follows record and message boundaries however the peer splits them, and refuses a message
// that claims more than kMaxPlainHandshakeMessage before OpenSSL sees its header. Ours are
// a few hundred bytes. The guard stands down at the first record of another type (encrypted
// records: the peer is past the plaintext phase, and what follows is bounded by OpenSSL's own
// limits once keys are agreed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace ackxfer {

inline constexpr std::size_t kMaxPlainHandshakeMessage = 8 * 1024;

class HandshakeGuard {
 public:
  // Follows `bytes`, the next received; the reason for refusing the connection, if it must be.
  std::optional<std::string> feed(std::span<const std::uint8_t> bytes);
  bool standing_down() const { return off_; }

 private:
  static constexpr std::uint8_t kChangeCipherSpec = 0x14, kAlert = 0x15, kHandshake = 0x16;
  bool off_ = false;
  std::uint8_t record_[5]{};
  std::size_t record_have_ = 0;
  std::size_t record_left_ = 0;  // body bytes of the current record still to come
  std::uint8_t message_[4]{};
  std::size_t message_have_ = 0;
  std::size_t message_left_ = 0;  // body bytes of the current handshake message still to come
};

inline std::optional<std::string> HandshakeGuard::feed(std::span<const std::uint8_t> bytes) {
  std::size_t i = 0;
  while (!off_ && i < bytes.size()) {
    if (record_left_ == 0 && record_have_ < sizeof record_) {
      record_[record_have_++] = bytes[i++];
      if (record_have_ < sizeof record_) continue;
      record_left_ = static_cast<std::size_t>(record_[3]) << 8 | record_[4];
      if (record_[0] != kHandshake && record_[0] != kChangeCipherSpec && record_[0] != kAlert) {
        off_ = true;  // encrypted from here on, or garbage OpenSSL refuses by itself
        break;
      }
      if (record_left_ == 0) record_have_ = 0;
      continue;
    }
    const std::size_t n = std::min(record_left_, bytes.size() - i);
    if (record_[0] == kHandshake) {
      for (std::size_t k = 0; k < n; ++k) {
        if (message_left_ > 0) {  // skipping the body (it may span records)
          const std::size_t skip = std::min(message_left_, n - k);
          message_left_ -= skip;
          k += skip - 1;
          continue;
        }
        message_[message_have_++] = bytes[i + k];
        if (message_have_ < sizeof message_) continue;
        message_have_ = 0;
        message_left_ = static_cast<std::size_t>(message_[1]) << 16 |
                        static_cast<std::size_t>(message_[2]) << 8 | message_[3];
        if (message_left_ > kMaxPlainHandshakeMessage)
          return "its handshake message (type " + std::to_string(message_[0]) + ") claims " +
                 std::to_string(message_left_) + " bytes, more than the " +
                 std::to_string(kMaxPlainHandshakeMessage) +
                 " accepted before it has proven "
                 "anything";
      }
    }
    i += n;
    record_left_ -= n;
    if (record_left_ == 0) record_have_ = 0;
  }
  return std::nullopt;
}

}  // namespace ackxfer
