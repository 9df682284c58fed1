// Mutual authentication with a shared secret (--secret-file; docs/SECURITY.md): each side sends
// a fresh nonce and proves it knows the secret with an HMAC-SHA256 over both nonces, so the
// secret never crosses the wire and no recorded exchange can be replayed. Pure computation;
// ControlSession (receiver) and ControlClient (sender) run the exchange.
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

  // What the sender proves, and what the receiver proves: different labels, so neither side's
  // answer can be reflected back as the other's.
  Proof sender_proof(const Nonce& sender, const Nonce& receiver) const;
  Proof receiver_proof(const Nonce& sender, const Nonce& receiver) const;
  std::size_t size() const { return bytes_.size(); }

  // TLS 1.3 with an external pre-shared key (engine/tls/tls_channel.h): the key is derived
  // from the secret with HKDF-SHA256 under its own label, so the secret itself is never a key.
  // The identity names the key by a fingerprint (HKDF under another label), so a receiver can
  // tell "a different secret" from "no TLS"; it says no more about the secret than the
  // handshake's binder already does.
  std::array<std::uint8_t, 32> tls_psk() const;
  std::string tls_psk_identity() const;

 private:
  Proof prove(const char* label, const Nonce& sender, const Nonce& receiver) const;
  void derive(const char* label, std::uint8_t* out, std::size_t len) const;
  std::string bytes_;
};

// Reads a secret file. Throws Failure naming the file and the reason (missing, unreadable,
// empty, too long). `warning` gets a message when the file is readable by group or others, or
// the secret is short.
std::shared_ptr<const SharedSecret> load_secret_file(const std::string& path,
                                                     std::optional<std::string>& warning);

// Constant time: how long the comparison takes says nothing about where proofs differ.
bool proofs_match(const Proof& a, const Proof& b);

}  // namespace ackxfer
