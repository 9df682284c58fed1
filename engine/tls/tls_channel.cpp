// TlsContext and TlsChannel: OpenSSL 3 driven through a BIO of our own (see tls_channel.h).
#include "tls/tls_channel.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "error.h"
#include "hex.h"
#include "protocol/token.h"

namespace ackxfer {

namespace {

// TLS_AES_128_GCM_SHA256: the suite the pre-shared key is bound to (its hash, SHA-256, is what
// matters; ChaCha20-Poly1305 uses SHA-256 too, so either suite can be negotiated with it).
const unsigned char kAes128GcmSha256[] = {0x13, 0x01};
// The largest TLS record's plaintext: what one record of a write carries at most.
constexpr std::size_t kMaxRecordPlaintext = 16384;

bool cpu_has_aes() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("aes");
#else
  return true;  // arm64 servers have the crypto extensions; a wrong guess only costs speed
#endif
}

std::string openssl_reason() {
  unsigned long e = ERR_peek_last_error();
  const char* r = e ? ERR_reason_error_string(e) : nullptr;
  std::string s = r ? r : "unknown TLS error";
  ERR_clear_error();
  return s;
}

// Whether an error says bytes were damaged on the way (a record that failed its tag, a
// malformed message, or the peer's alert saying one of those) rather than that a peer refused
// the other: no alert a refusal sends (handshake_failure, the certificate ones, access_denied)
// and no local verdict on a key or certificate is here.
bool damaged_in_transit(unsigned long e) {
  if (e == 0 || ERR_GET_LIB(e) != ERR_LIB_SSL) return false;
  switch (ERR_GET_REASON(e)) {
    case SSL_R_SSLV3_ALERT_BAD_RECORD_MAC:
    case SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER:
    case SSL_R_TLSV1_ALERT_DECODE_ERROR:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:  // a binder or Finished that does not verify
    case SSL_R_SSLV3_ALERT_UNEXPECTED_MESSAGE:
    case SSL_R_TLSV1_ALERT_RECORD_OVERFLOW:
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
    case SSL_R_BINDER_DOES_NOT_VERIFY:
    case SSL_R_DIGEST_CHECK_FAILED:
    case SSL_R_LENGTH_MISMATCH:
    case SSL_R_LENGTH_TOO_SHORT:
    case SSL_R_BAD_LENGTH:
    case SSL_R_BAD_PACKET_LENGTH:
    case SSL_R_BAD_HANDSHAKE_LENGTH:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
    case SSL_R_DATA_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_EXTRA_DATA_IN_MESSAGE:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_WRONG_CIPHER_RETURNED:
    case SSL_R_BAD_EXTENSION:
    case SSL_R_BAD_KEY_SHARE:
    case SSL_R_BAD_ECPOINT:
      return true;
    default:
      return false;
  }
}

}  // namespace

// The channel's two byte queues, as the BIO OpenSSL reads from and writes to.
struct TlsBuffers {
  std::vector<std::uint8_t> in, out;
  std::size_t in_start = 0, in_end = 0;    // ciphertext received, not yet read by OpenSSL
  std::size_t out_start = 0, out_end = 0;  // ciphertext written by OpenSSL, not yet sent
  bool out_lent = false;                   // output() handed out: no compaction until sent()
};

struct TlsCallbacks {
  static TlsContext* context_of(SSL* ssl) {
    return static_cast<TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  }
  static TlsChannel* channel_of(SSL* ssl) {
    return static_cast<TlsChannel*>(SSL_get_app_data(ssl));
  }

  static SSL_SESSION* psk_session(SSL* ssl, const TlsKey& key) {
    const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
    if (!cipher) return nullptr;
    SSL_SESSION* s = SSL_SESSION_new();
    bool ok = s && SSL_SESSION_set1_master_key(s, key.data(), key.size()) == 1 &&
              SSL_SESSION_set_cipher(s, cipher) == 1 &&
              SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) == 1;
    if (!ok) {
      SSL_SESSION_free(s);
      return nullptr;
    }
    return s;
  }

  // Client: offer the key derived from our secret.
  static int use_session(SSL* ssl, const EVP_MD* md, const unsigned char** id, std::size_t* idlen,
                         SSL_SESSION** sess) {
    TlsContext* c = context_of(ssl);
    *sess = nullptr;
    if (md && EVP_MD_get_type(md) != NID_sha256) return 1;  // another hash: no PSK for it
    SSL_SESSION* s = psk_session(ssl, c->psk_.key);
    if (!s) return 0;
    *id = reinterpret_cast<const unsigned char*>(c->psk_.identity.data());
    *idlen = c->psk_.identity.size();
    *sess = s;
    return 1;
  }

  // Server: accept only the key derived from our own secret.
  static int find_session(SSL* ssl, const unsigned char* identity, std::size_t len,
                          SSL_SESSION** sess) {
    TlsContext* c = context_of(ssl);
    *sess = nullptr;
    std::string_view id(reinterpret_cast<const char*>(identity), len);
    if (c->lookup_) {
      auto key = c->lookup_(id);
      if (!key) {
        if (TlsChannel* ch = channel_of(ssl)) ch->foreign_identity_ = true;
        return 1;
      }
      *sess = psk_session(ssl, *key);
      OPENSSL_cleanse(key->data(), key->size());
      return *sess ? 1 : 0;
    }
    if (id != c->psk_.identity) {
      // Not an error here: with no key and no certificate the handshake fails, and says so.
      if (TlsChannel* ch = channel_of(ssl)) ch->foreign_identity_ = true;
      return 1;
    }
    *sess = psk_session(ssl, c->psk_.key);
    return *sess ? 1 : 0;
  }

  static void on_message(int write_p, int, int content_type, const void* buf, std::size_t len,
                         SSL* ssl, void*) {
    if (write_p || content_type != SSL3_RT_HANDSHAKE || len < 1) return;
    if (static_cast<const unsigned char*>(buf)[0] != SSL3_MT_KEY_UPDATE) return;
    if (TlsChannel* ch = channel_of(ssl)) ++ch->key_updates_received_;
  }

  // ---- the BIO ----
  static TlsBuffers& buffers(BIO* b) { return *static_cast<TlsBuffers*>(BIO_get_data(b)); }

  static int bio_read(BIO* b, char* out, std::size_t n, std::size_t* got) {
    TlsBuffers& t = buffers(b);
    BIO_clear_retry_flags(b);
    std::size_t have = t.in_end - t.in_start;
    if (have == 0) {
      BIO_set_retry_read(b);
      *got = 0;
      return 0;
    }
    std::size_t k = std::min(n, have);
    std::memcpy(out, t.in.data() + t.in_start, k);
    // Not reset to the front when all is read: a receive may be outstanding into the space
    // after in_end (OpenSSL also reads while the loop drives a handshake from a send's
    // completion), and its bytes would then be taken from the wrong place. input_space()
    // compacts, when no receive is outstanding.
    t.in_start += k;
    *got = k;
    return 1;
  }

  static int bio_write(BIO* b, const char* data, std::size_t n, std::size_t* put) {
    TlsBuffers& t = buffers(b);
    BIO_clear_retry_flags(b);
    if (!t.out_lent && t.out_start > 0) {
      std::memmove(t.out.data(), t.out.data() + t.out_start, t.out_end - t.out_start);
      t.out_end -= t.out_start;
      t.out_start = 0;
    }
    std::size_t room = t.out.size() - t.out_end;
    if (room == 0) {
      BIO_set_retry_write(b);
      *put = 0;
      return 0;
    }
    std::size_t k = std::min(n, room);
    std::memcpy(t.out.data() + t.out_end, data, k);
    t.out_end += k;
    *put = k;
    return 1;
  }

  static long bio_ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;
      case BIO_CTRL_PENDING: {
        TlsBuffers& t = buffers(b);
        return static_cast<long>(t.in_end - t.in_start);
      }
      case BIO_CTRL_WPENDING: {
        TlsBuffers& t = buffers(b);
        return static_cast<long>(t.out_end - t.out_start);
      }
      default:
        return 0;
    }
  }

  static BIO_METHOD* method() {
    static BIO_METHOD* m = [] {
      BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ackxfer-ring");
      if (!bm || !BIO_meth_set_read_ex(bm, bio_read) || !BIO_meth_set_write_ex(bm, bio_write) ||
          !BIO_meth_set_ctrl(bm, bio_ctrl))
        throw Failure("OpenSSL: cannot create a BIO method");
      return bm;
    }();
    return m;
  }
};

// ---- TlsContext ----

std::shared_ptr<TlsContext> TlsContext::with_secret(TlsRole role,
                                                    std::shared_ptr<const SharedSecret> secret,
                                                    TlsCipherOrder order) {
  std::shared_ptr<TlsContext> c(new TlsContext(role, order));
  c->psk_ = TlsPsk{secret->tls_psk_identity(), secret->tls_psk()};
  c->use_psk(role);
  return c;
}

std::shared_ptr<TlsContext> TlsContext::with_psk(TlsRole role, TlsPsk psk, TlsCipherOrder order) {
  std::shared_ptr<TlsContext> c(new TlsContext(role, order));
  c->psk_ = std::move(psk);
  c->use_psk(role);
  return c;
}

std::shared_ptr<TlsContext> TlsContext::with_psk_lookup(TlsRole role, TlsPskLookup lookup,
                                                        TlsCipherOrder order) {
  std::shared_ptr<TlsContext> c(new TlsContext(role, order));
  c->lookup_ = std::move(lookup);
  c->use_psk(role);
  return c;
}

void TlsContext::use_psk(TlsRole role) {
  if (role == TlsRole::kClient) {
    SSL_CTX_set_psk_use_session_callback(ctx_, TlsCallbacks::use_session);
    // A receiver that holds the key never needs a certificate: one that shows a certificate
    // instead of taking the key is someone else, whatever the certificate says.
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 0; });
  } else {
    SSL_CTX_set_psk_find_session_callback(ctx_, TlsCallbacks::find_session);
  }
}

std::shared_ptr<TlsContext> TlsContext::with_certificates(TlsRole role,
                                                          const TlsCertificates& files,
                                                          TlsCipherOrder order) {
  std::shared_ptr<TlsContext> c(new TlsContext(role, order));
  c->certificates_ = true;
  SSL_CTX* ctx = c->ctx_;
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert.c_str()) != 1)
    throw Failure("--tls-cert " + files.cert + ": " + openssl_reason());
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    std::string why = openssl_reason();
    if (why.find("mismatch") != std::string::npos)
      why = "it is not the key of the certificate in --tls-cert " + files.cert;
    throw Failure("--tls-key " + files.key + ": " + why);
  }
  if (SSL_CTX_load_verify_locations(ctx, files.ca.c_str(), nullptr) != 1)
    throw Failure("--tls-ca " + files.ca + ": " + openssl_reason());
  // Mutual: each side checks the other's certificate against its CA.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // The peer's chain arrives before anything about the peer is proven, and OpenSSL reserves
  // (and zeroes) the size its message header claims at once, until the handshake ends or the
  // first-line deadline: its default of 100 KiB let anyone make a receiver hold almost three
  // times what a handshake's budget counts.
  SSL_CTX_set_max_cert_list(ctx, static_cast<long>(kMaxPeerCertificateChainBytes));
  return c;
}

std::shared_ptr<TlsContext> TlsContext::from_options(TlsRole role,
                                                     std::shared_ptr<const SharedSecret> secret,
                                                     const std::optional<TlsCertificates>& files,
                                                     const char* plain_data_option,
                                                     bool plain_data) {
  if (secret && files)
    throw Failure("--secret-file and --tls-cert are alternatives: use one of them",
                  FailureKind::kUsage);
  if (plain_data && !secret && !files)
    throw Failure(std::string(plain_data_option) +
                      " goes with --secret-file or --tls-cert (the control connection stays "
                      "encrypted); without them nothing is encrypted anyway",
                  FailureKind::kUsage);
  if (secret) return with_secret(role, std::move(secret));
  if (files) return with_certificates(role, *files);
  return nullptr;
}

TlsContext::TlsContext(TlsRole role, TlsCipherOrder order)
    : role_(role),
      aes_first_(order == TlsCipherOrder::kByCpu ? cpu_has_aes()
                                                 : order == TlsCipherOrder::kAesFirst) {
  ctx_ = SSL_CTX_new(role == TlsRole::kClient ? TLS_client_method() : TLS_server_method());
  if (!ctx_) throw Failure("OpenSSL: cannot create a TLS context: " + openssl_reason());
  SSL_CTX_set_app_data(ctx_, this);
  bool ok = SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION) == 1 &&
            SSL_CTX_set_max_proto_version(ctx_, TLS1_3_VERSION) == 1 &&
            SSL_CTX_set_ciphersuites(ctx_, aes_first_ ? "TLS_AES_128_GCM_SHA256:"
                                                        "TLS_CHACHA20_POLY1305_SHA256"
                                                      : "TLS_CHACHA20_POLY1305_SHA256:"
                                                        "TLS_AES_128_GCM_SHA256") == 1 &&
            // Elliptic curves only. OpenSSL's default list includes the finite-field groups
            // (ffdhe2048 to ffdhe8192), and a server takes whichever the client offers first:
            // an ffdhe8192 key share of random bytes cost a receiver's worker 140 ms of CPU per
            // ClientHello, against 0.4 for X25519, before anything was authenticated.
            SSL_CTX_set1_groups_list(ctx_, "X25519:P-256") == 1;
  if (!ok) {
    SSL_CTX_free(ctx_);
    throw Failure("OpenSSL: cannot configure TLS 1.3: " + openssl_reason());
  }
  // Each side sends with its own preference: the receiver's CPU decides what it decrypts.
  SSL_CTX_set_options(ctx_, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_num_tickets(ctx_, 0);  // no resumption tickets: every connection has the key
  SSL_CTX_set_msg_callback(ctx_, TlsCallbacks::on_message);
}

TlsContext::~TlsContext() {
  OPENSSL_cleanse(psk_.key.data(), psk_.key.size());
  SSL_CTX_free(ctx_);
}

const char* TlsContext::preferred_cipher() const {
  return aes_first_ ? "TLS_AES_128_GCM_SHA256" : "TLS_CHACHA20_POLY1305_SHA256";
}

// ---- TlsChannel ----

TlsChannel::TlsChannel(std::shared_ptr<TlsContext> ctx, std::size_t buffer_bytes,
                       std::uint64_t records_per_key, std::size_t output_bytes)
    : ctx_(std::move(ctx)),
      buf_(std::make_unique<TlsBuffers>()),
      records_per_key_(std::max<std::uint64_t>(1, records_per_key)) {
  buf_->in.resize(std::max(buffer_bytes, kMinTlsBufferBytes));
  buf_->out.resize(std::max(output_bytes ? output_bytes : buffer_bytes, kMinTlsBufferBytes));
  ssl_ = SSL_new(ctx_->ctx());
  BIO* bio = BIO_new(TlsCallbacks::method());
  if (!ssl_ || !bio) {
    BIO_free(bio);
    SSL_free(ssl_);
    throw Failure("OpenSSL: cannot create a TLS connection: " + openssl_reason());
  }
  BIO_set_data(bio, buf_.get());
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // one BIO for both directions; SSL_free frees it
  SSL_set_app_data(ssl_, this);
  // A small channel (control connections, a data connection's handshake) is mostly idle:
  // OpenSSL's own record buffers go back to the heap between records.
  if (buf_->in.size() < kTlsBufferBytes && buf_->out.size() < kTlsBufferBytes)
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
  if (ctx_->role() == TlsRole::kClient)
    SSL_set_connect_state(ssl_);
  else
    SSL_set_accept_state(ssl_);
}

TlsChannel::~TlsChannel() {
  SSL_free(ssl_);
}

std::span<std::uint8_t> TlsChannel::input_space() {
  TlsBuffers& t = *buf_;
  if (t.in_start > 0) {  // no receive is outstanding while the loop asks for space
    std::memmove(t.in.data(), t.in.data() + t.in_start, t.in_end - t.in_start);
    t.in_end -= t.in_start;
    t.in_start = 0;
  }
  return {t.in.data() + t.in_end, t.in.size() - t.in_end};
}

void TlsChannel::grow_input(std::size_t bytes) {
  if (buf_->in.size() >= bytes) return;
  buf_->in.resize(bytes);
  // A bulk channel now: OpenSSL keeps its record buffers rather than allocating them per record.
  if (bytes >= kTlsBufferBytes) SSL_clear_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
}

void TlsChannel::received(std::size_t n) {
  TlsBuffers& t = *buf_;
  if (n > t.in.size() - t.in_end) {  // the caller's bug; never pretend bytes arrived
    if (error_.empty()) error_ = "received more ciphertext than there was room for";
    n = t.in.size() - t.in_end;
  }
  t.in_end += n;
  // Before OpenSSL reads a message header and reserves what it claims (HandshakeGuard).
  if (!handshake_done_ && !guard_.standing_down() && error_.empty())
    if (auto why = guard_.feed({t.in.data() + t.in_end - n, n}))
      error_ = "TLS handshake refused: " + *why;
}

std::span<const std::uint8_t> TlsChannel::output() {
  TlsBuffers& t = *buf_;
  t.out_lent = t.out_end > t.out_start;
  return {t.out.data() + t.out_start, t.out_end - t.out_start};
}

std::size_t TlsChannel::output_pending() const {
  return buf_->out_end - buf_->out_start;
}

std::size_t TlsChannel::held_bytes() const {
  return buf_->in.capacity() + buf_->out.capacity() + kOpenSslChannelBytes;
}

void TlsChannel::sent(std::size_t n) {
  TlsBuffers& t = *buf_;
  t.out_start += std::min(n, t.out_end - t.out_start);
  t.out_lent = false;
  if (t.out_start == t.out_end) t.out_start = t.out_end = 0;
}

TlsChannel::Status TlsChannel::fail_from(int ret, const char* what) {
  int err = SSL_get_error(ssl_, ret);
  switch (err) {
    case SSL_ERROR_WANT_READ:
      return Status::kWantInput;
    case SSL_ERROR_WANT_WRITE:
      return Status::kWantOutput;
    case SSL_ERROR_ZERO_RETURN:
      return Status::kClosed;
    default:
      break;
  }
  if (error_.empty()) {
    const bool damaged_bytes = damaged_in_transit(ERR_peek_last_error());
    // What we know of the cause before OpenSSL's reason, which for another key is a
    // misleading "no suitable signature algorithm" (nothing left to authenticate with).
    error_ = std::string(what) + ": ";
    if (foreign_identity_)
      error_ += ctx_->uses_key_lookup() ? "its key belongs to no live session ("
                                        : "the peer's key is derived from a different secret (";
    error_ += openssl_reason();
    if (foreign_identity_) error_ += ")";
    long v = SSL_get_verify_result(ssl_);
    if (v != X509_V_OK)
      error_ += std::string(" (the peer's certificate: ") + X509_verify_cert_error_string(v) + ")";
    // A refusal named above (another secret, a certificate) is no damage, whatever the last
    // error OpenSSL reported.
    damaged_ = damaged_bytes && !foreign_identity_ && v == X509_V_OK;
  }
  ERR_clear_error();
  return Status::kFailed;
}

void TlsChannel::expect_peer(const std::string& host) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
  in6_addr a6;
  in_addr a4;
  bool ip =
      inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
  bool ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1
               : SSL_set1_host(ssl_, host.c_str()) == 1 &&
                     SSL_set_tlsext_host_name(ssl_, host.c_str()) == 1;
  if (ok)
    peer_name_set_ = true;
  else if (error_.empty())
    error_ = "cannot check the peer's certificate against " + host;
}

TlsChannel::Status TlsChannel::handshake() {
  if (!error_.empty()) return Status::kFailed;
  if (handshake_done_) return Status::kOk;
  if (ctx_->uses_certificates() && ctx_->role() == TlsRole::kClient && !peer_name_set_) {
    // A certificate from the right CA is not enough: it must be the receiver's.
    error_ = "TLS handshake not started: no receiver name or address to check its certificate";
    return Status::kFailed;
  }
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    if (!ctx_->uses_certificates() && !SSL_session_reused(ssl_)) {
      // Belt and braces for the verify callback: without the key the peer proved nothing.
      error_ = "TLS handshake failed: the peer did not use the shared secret";
      return Status::kFailed;
    }
    handshake_done_ = true;
    return Status::kOk;
  }
  return fail_from(r, "TLS handshake failed");
}

TlsChannel::Status TlsChannel::read(std::span<std::uint8_t> out, std::size_t& got) {
  got = 0;
  // Failed, or the handshake still going: handshake() says which (and moves it on).
  if (Status s = handshake(); s != Status::kOk) return s;
  if (out.empty()) return Status::kOk;
  if (SSL_read_ex(ssl_, out.data(), out.size(), &got) == 1) return Status::kOk;
  return fail_from(0, "TLS record rejected");
}

void TlsChannel::count_records(std::size_t bytes) {
  records_this_key_ += (bytes + kMaxRecordPlaintext - 1) / kMaxRecordPlaintext;
  if (records_this_key_ < records_per_key_) return;
  // Our sending keys move on; the peer updates its own when it has sent as much.
  if (SSL_key_update(ssl_, SSL_KEY_UPDATE_NOT_REQUESTED) == 1) {
    records_this_key_ = 0;
    ++key_updates_sent_;
    SSL_do_handshake(ssl_);  // the KeyUpdate goes into output() now, not with the next write
  }
}

TlsChannel::Status TlsChannel::write(std::span<const std::uint8_t> data, std::size_t& taken) {
  taken = 0;
  // Failed, or the handshake still going: handshake() says which (and moves it on).
  if (Status s = handshake(); s != Status::kOk) return s;
  // With SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write_ex returns after each record (16 KiB): keep
  // going until everything is taken or the output is full, so that one send carries as many
  // records as the output holds, not one (a send per 16 KiB cost the sender 50 times the ring
  // round trips, and the receiver 18 times the pwrites, of a transfer in clear).
  while (taken < data.size()) {
    std::size_t n = 0;
    if (SSL_write_ex(ssl_, data.data() + taken, data.size() - taken, &n) != 1) {
      // The output is full: what was taken so far stands; the record OpenSSL could not put
      // out whole is taken by the next call, which must start with the same bytes.
      Status s = fail_from(0, "TLS write failed");
      return s == Status::kWantOutput && taken > 0 ? Status::kOk : s;
    }
    count_records(n);
    taken += n;
  }
  return Status::kOk;
}

bool TlsChannel::close() {
  if (!error_.empty() || !handshake_done_) return true;
  const int r = SSL_shutdown(ssl_);
  if (r >= 0) return true;
  const int e = SSL_get_error(ssl_, r);
  ERR_clear_error();
  return e != SSL_ERROR_WANT_WRITE;
}

std::optional<TlsPsk> TlsChannel::session_data_key() const {
  if (!handshake_done_) return std::nullopt;
  static const char kKeyLabel[] = "ackxfer data connection key";
  static const char kIdLabel[] = "ackxfer data connection identity";
  TlsPsk psk;
  std::uint8_t id[16];
  if (SSL_export_keying_material(ssl_, psk.key.data(), psk.key.size(), kKeyLabel,
                                 sizeof kKeyLabel - 1, nullptr, 0, 0) != 1 ||
      SSL_export_keying_material(ssl_, id, sizeof id, kIdLabel, sizeof kIdLabel - 1, nullptr, 0,
                                 0) != 1)
    return std::nullopt;
  psk.identity = "ackxfer2-data-" + to_hex(id, sizeof id);
  return psk;
}

std::string TlsChannel::cipher() const {
  if (!handshake_done_) return {};
  const char* name = SSL_get_cipher_name(ssl_);
  return name ? name : "";
}

}  // namespace ackxfer
