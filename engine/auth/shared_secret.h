// A shared secret (--secret-file; docs/SECURITY.md) and the TLS 1.3 pre-shared key derived from
// it: both sides prove they hold it inside every handshake (engine/tls/tls_channel.h), and the
// secret itself never crosses the wire or serves as a key. Pure computation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "protocol/token.h"

namespace ackxfer {

// A secret file holds at most this many bytes (a key, a passphrase; not a data file).
inline constexpr std::size_t kMaxSecretBytes = 4096;
// Shorter secrets are accepted with a warning: a recorded exchange lets an attacker test
// guesses offline, so a secret needs real entropy (`head -c 32 /dev/urandom | base64`).
inline constexpr std::size_t kWeakSecretBytes = 16;

class SharedSecret {
 public:
  // The secret is the bytes given; one trailing newline (LF or CRLF), as editors and `echo`
  // leave, is not part of it. Throws Failure if nothing remains or it is too long.
  explicit SharedSecret(std::string bytes);
  ~SharedSecret();  // wipes the secret from memory
  SharedSecret(const SharedSecret&) = delete;
  SharedSecret& operator=(const SharedSecret&) = delete;

  std::size_t size() const { return bytes_.size(); }

  // TLS 1.3 with an external pre-shared key (engine/tls/tls_channel.h): the key is derived
  // from the secret with HKDF-SHA256 under its own label, so the secret itself is never a key.
  // The identity names the key by a fingerprint (HKDF under another label), so a receiver can
  // tell "a different secret" from "no TLS"; it says no more about the secret than the
  // handshake's binder already does.
  std::array<std::uint8_t, 32> tls_psk() const;
  std::string tls_psk_identity() const;

 private:
  void derive(const char* label, std::uint8_t* out, std::size_t len) const;
  std::string bytes_;
};

// Reads a secret file. Throws Failure naming the file and the reason (missing, unreadable,
// empty, too long). `warning` gets a message when the file is readable by group or others, or
// the secret is short.
std::shared_ptr<const SharedSecret> load_secret_file(const std::string& path,
                                                     std::optional<std::string>& warning);

}  // namespace ackxfer
