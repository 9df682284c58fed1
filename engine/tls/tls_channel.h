// TLS 1.3 for one connection, with no I/O of its own: the record layer of issue 11, in one
// place. The event loop keeps doing every recv and send on io_uring; a TlsChannel only turns
// ciphertext into plaintext and back, through two buffers the loop
// reads from and writes into directly (a BIO of our own: the ciphertext stays where the ring
// put it, and what the ring is sending is never moved):
//
//   recv:  input_space() -> the ring receives into it -> received(n)
//          -> handshake() until done, then read(out) yields plaintext
//   send:  write(plaintext) -> output() is ciphertext -> the ring sends it -> sent(n)
//
// Both buffers are fixed-size, so a peer can make a channel hold at most kTlsBufferBytes of
// its input, and a writer gets "would block" (kWantOutput) until the loop has sent what is
// pending. Keys: an external pre-shared key derived from --secret-file
// (SharedSecret::tls_psk, with (EC)DHE for forward secrecy), or mutual X.509 certificates.
// AES-128-GCM where the CPU has AES instructions, ChaCha20-Poly1305 where it does not. The
// sending keys are updated (TLS 1.3 KeyUpdate) every `records_per_key` records, far below
// AES-GCM's limit of about 2^24.5 records per key.
//
// Not thread-safe: a channel belongs to the loop that owns its connection. A kTLS path (the
// kernel doing the record layer, so splice and sendfile stay zero-copy) would replace this
// class behind the same connection code; this kernel has no TLS module, so there is none.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "auth/shared_secret.h"
#include "tls/handshake_guard.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace ackxfer {

struct TlsBuffers;

// Each direction's buffer between OpenSSL and the network: a few records.
inline constexpr std::size_t kTlsBufferBytes = 256 * 1024;
// Records sent under one key before a KeyUpdate: 2^22, an eighth of AES-GCM's safe limit.
inline constexpr std::uint64_t kRecordsPerKey = std::uint64_t{1} << 22;

// The first byte of a TLS record of each type: what a connection's first byte says about its
// peer (a ClientHello or ServerHello is a handshake record; a refusal may be an alert). Nothing
// in the plain protocol starts with either.
inline constexpr std::uint8_t kTlsAlertRecord = 0x15;
inline constexpr std::uint8_t kTlsHandshakeRecord = 0x16;

// What OpenSSL holds for one connection after its handshake and data both ways (SSL object,
// a read and a write buffer of a record each), for accounting: about 36 KiB with OpenSSL 3.0
// (malloc's count; tests/unit/tls_channel_test.cpp checks it).
inline constexpr std::size_t kOpenSslChannelBytes = 36 * 1024;

// Below this, a buffer would take several calls per record.
inline constexpr std::size_t kMinTlsBufferBytes = 4096;
// What a peer's certificate chain (its Certificate message) may weigh: a few certificates of
// 1-3 KiB each are usual; beyond it the handshake fails (`excessive message size`).
inline constexpr std::size_t kMaxPeerCertificateChainBytes = 32 * 1024;

// A TLS 1.3 external pre-shared key and the identity that names it.
using TlsKey = std::array<std::uint8_t, 32>;
struct TlsPsk {
  std::string identity;
  TlsKey key{};
};
// Server side of per-session keys: the key an identity names, if a live session made it.
using TlsPskLookup = std::function<std::optional<TlsKey>(std::string_view identity)>;

enum class TlsRole { kClient, kServer };
// Which suite goes first: by whether this CPU has AES instructions (what every caller but the
// tests wants), or forced.
enum class TlsCipherOrder { kByCpu, kAesFirst, kChaChaFirst };

// PEM files: this side's certificate (chain), its private key, and the CA that signs the
// peers' certificates.
struct TlsCertificates {
  std::string cert, key, ca;
};

// What both ends of every connection of a process share: the SSL_CTX (ciphers, key).
class TlsContext {
 public:
  // Throws Failure if OpenSSL cannot set it up.
  static std::shared_ptr<TlsContext> with_secret(TlsRole role,
                                                 std::shared_ptr<const SharedSecret> secret,
                                                 TlsCipherOrder order = TlsCipherOrder::kByCpu);
  // One fixed key (a client), or the keys `lookup` finds (a server): what data connections
  // use, with a key each control session derives from its own handshake
  // (TlsChannel::session_data_key), so that their set-up needs neither the secret nor
  // certificates and binds them to one live session.
  static std::shared_ptr<TlsContext> with_psk(TlsRole role, TlsPsk psk,
                                              TlsCipherOrder order = TlsCipherOrder::kByCpu);
  static std::shared_ptr<TlsContext> with_psk_lookup(TlsRole role, TlsPskLookup lookup,
                                                     TlsCipherOrder order = TlsCipherOrder::kByCpu);
  // Mutual X.509: this side presents `files.cert` and accepts only peers whose certificate
  // `files.ca` signed (a client also checks the name it dialled: TlsChannel::expect_peer).
  // Throws Failure naming the file and what is wrong with it.
  static std::shared_ptr<TlsContext> with_certificates(
      TlsRole role, const TlsCertificates& files, TlsCipherOrder order = TlsCipherOrder::kByCpu);
  // What a sender or receiver runs with: a secret, certificates, or neither (nullptr: no
  // TLS). Throws Failure (kUsage) if both are given, or if `plain_data_option` (the option
  // that sends or accepts file data in clear) is set without either.
  static std::shared_ptr<TlsContext> from_options(TlsRole role,
                                                  std::shared_ptr<const SharedSecret> secret,
                                                  const std::optional<TlsCertificates>& files,
                                                  const char* plain_data_option, bool plain_data);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsRole role() const { return role_; }
  bool uses_certificates() const { return certificates_; }
  bool uses_key_lookup() const { return static_cast<bool>(lookup_); }
  SSL_CTX* ctx() const { return ctx_; }
  // The first cipher suite offered or preferred.
  const char* preferred_cipher() const;

 private:
  TlsContext(TlsRole role, TlsCipherOrder order);
  TlsRole role_;
  bool aes_first_;
  bool certificates_ = false;  // X.509 rather than a pre-shared key
  SSL_CTX* ctx_ = nullptr;
  TlsPsk psk_;           // a client's key, or a server's with one fixed key
  TlsPskLookup lookup_;  // a server's keys, when they are many and change
  void use_psk(TlsRole role);
  friend struct TlsCallbacks;
};

class TlsChannel {
 public:
  enum class Status {
    kOk,          // progress made (handshake done, bytes read or written)
    kWantInput,   // nothing more without ciphertext from the peer
    kWantOutput,  // the output ring is full: send output() first
    kClosed,      // the peer closed the TLS session cleanly (close_notify)
    kFailed,      // the session is over: error() says why; output() may hold an alert to send
  };

  // `buffer_bytes` for each direction (`output_bytes`, if not 0, for the output): kTlsBufferBytes
  // for the bulk direction of data connections, less for acks and control connections (a
  // channel holds its two buffers, plus OpenSSL's own ~36 KiB).
  explicit TlsChannel(std::shared_ptr<TlsContext> ctx, std::size_t buffer_bytes = kTlsBufferBytes,
                      std::uint64_t records_per_key = kRecordsPerKey, std::size_t output_bytes = 0);
  ~TlsChannel();
  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;

  // ---- network side ----
  // Where the next received ciphertext goes (empty while it is full: read() first). Call it
  // only while no receive into an earlier input_space() is outstanding: it may move what is
  // buffered to the front.
  std::span<std::uint8_t> input_space();
  void received(std::size_t n);
  // Makes the input buffer `bytes` long if it is shorter (a connection that starts small, while
  // its peer has proven nothing, and grows once the handshake is done). Like input_space(),
  // only while no receive into it is outstanding.
  void grow_input(std::size_t bytes);
  // Ciphertext waiting to be sent; stays valid and unchanged until sent(n).
  std::span<const std::uint8_t> output();
  void sent(std::size_t n);
  std::size_t output_pending() const;
  // Memory the channel holds: its two buffers and OpenSSL's (about kOpenSslChannelBytes).
  std::size_t held_bytes() const;

  // ---- session side ----
  // Client with certificates: the receiver's name or address as dialled; its certificate must
  // name it (a DNS name, or an IP address in subjectAltName). Call before the handshake.
  void expect_peer(const std::string& host);
  Status handshake();
  bool handshake_done() const { return handshake_done_; }
  // Plaintext: up to out.size() bytes into out; `got` says how many.
  Status read(std::span<std::uint8_t> out, std::size_t& got);
  // Encrypts up to data.size() bytes; `taken` says how many were taken (all, unless the output
  // ring filled up: send output() and call again with the rest).
  Status write(std::span<const std::uint8_t> data, std::size_t& taken);
  // Sends close_notify (into output()). False: the output is full, call again once some of it
  // is sent. True also when there is nothing to close (no handshake, or a failed session).
  bool close();

  const std::string& error() const { return error_; }
  // After kFailed: whether the failure says bytes were damaged on the way (a record that
  // failed its tag, a malformed message, or the peer's alert saying so) rather than that
  // either side refused the other. A new connection may then succeed where this one failed.
  bool failed_on_damaged_bytes() const { return damaged_; }
  // The negotiated suite, e.g. "TLS_AES_128_GCM_SHA256"; empty before the handshake is done.
  std::string cipher() const;
  // After the handshake: the key this session's data connections use, exported from it (RFC
  // 8446 7.5; both ends compute the same, nobody else can). Empty before the handshake.
  std::optional<TlsPsk> session_data_key() const;
  std::uint64_t key_updates_sent() const { return key_updates_sent_; }
  std::uint64_t key_updates_received() const { return key_updates_received_; }

 private:
  Status fail_from(int ret, const char* what);
  void count_records(std::size_t bytes);

  std::shared_ptr<TlsContext> ctx_;
  std::unique_ptr<TlsBuffers> buf_;  // what the BIO reads and writes
  HandshakeGuard guard_;             // every byte received before the handshake is done
  SSL* ssl_ = nullptr;
  bool handshake_done_ = false;
  bool foreign_identity_ = false;  // server: the client offered a key from another secret
  bool peer_name_set_ = false;
  bool damaged_ = false;  // failed_on_damaged_bytes()
  std::string error_;
  std::uint64_t records_per_key_;
  std::uint64_t records_this_key_ = 0;
  std::uint64_t key_updates_sent_ = 0;
  std::uint64_t key_updates_received_ = 0;
  friend struct TlsCallbacks;
};

}  // namespace ackxfer
