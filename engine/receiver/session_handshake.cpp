// ControlSession, the handshake: TLS (--secret-file or certificates), HELLO (version, features,
// data connections in clear).
#include <array>

#include "display.h"
#include "protocol/limits.h"
#include "receiver/control_session.h"

namespace ackxfer {

bool ControlSession::check_first_bytes(std::uint8_t first) {
  const bool tls = first == kTlsHandshakeRecord;
  if (tls_ && !tls) {
    // Plain text where encryption is required: answer in plain text, so that a sender of this
    // protocol (or an older one) can say why.
    replies_.set_tls(nullptr);
    tls_.reset();
    refuse_auth("it did not start TLS (an unencrypted sender, or not an ackxfer-fast sender)");
    reply_error(std::nullopt, ErrorCode::kAuthRequired,
                "this receiver accepts only encrypted sessions: run send with --secret-file "
                "holding the receiver's secret, or with --tls-cert, --tls-key and --tls-ca");
    close_after_flush();
    return false;
  }
  if (!tls_ && tls) {
    refuse_auth("it started TLS, and this receiver has no --secret-file or --tls-cert");
    reply_error(std::nullopt, ErrorCode::kNoEncryption,
                "this receiver cannot encrypt: it runs without --secret-file and --tls-cert");
    close_after_flush();
    return false;
  }
  return true;
}

bool ControlSession::decrypt_input(std::size_t n) {
  tls_->received(n);
  const bool was_done = tls_->handshake_done();
  TlsChannel::Status st;
  // Through a piece on the stack, so that in_ grows by what was decrypted (append_input), not
  // by a piece's room.
  std::array<std::uint8_t, 16 * 1024> piece;
  while (true) {
    std::size_t got = 0;
    st = tls_->read(piece, got);
    append_input(reinterpret_cast<const char*>(piece.data()), got);
    if (st != TlsChannel::Status::kOk) break;
  }
  replies_.flush();  // handshake messages, alerts
  if (!was_done && tls_->handshake_done()) {
    encryption_ = tls_->cipher();
    // Proven: room for a whole record (no receive is outstanding while a completion is
    // handled, so the buffer may move).
    tls_->grow_input(kTlsInputBytes);
    // Its data connections prove they belong to this session with a key only its two ends
    // can compute.
    if (auto key = tls_->session_data_key()) {
      worker_.ctx().data_keys.add(*key);
      data_key_identity_ = key->identity;
    }
    worker_.ctx().log.debug("session from " + peer_ + ": TLS established (" + encryption_ + ")");
  }
  if (st == TlsChannel::Status::kClosed) {
    if (state_ == State::kActive || state_ == State::kFinishing) log_end("the sender closed TLS");
    close_now();
    return false;
  }
  if (st != TlsChannel::Status::kFailed) return true;
  if (!was_done && !tls_->handshake_done()) {
    refuse_auth(tls_->error());
  } else {
    ReceiverContext& ctx = worker_.ctx();
    ctx.stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning(
        [&] { return "session from " + peer_ + ": " + tls_->error() + "; closing"; });
    log_end(tls_->error());
  }
  // The alert (if any) goes out; nothing more is read or answered.
  close_after_flush();
  return false;
}

void ControlSession::handle(const HelloRequest& m) {
  ReceiverContext& ctx = worker_.ctx();
  if (m.version != kProtocolVersion) {
    reply_error(std::nullopt, ErrorCode::kVersion,
                "this receiver speaks protocol version " + std::to_string(kProtocolVersion) +
                    ", the sender " + std::to_string(m.version) +
                    "; use ackxfer-fast releases that share a protocol version");
    close_after_flush();
    return;
  }
  // What both sides support. A sender that predates negotiation gets none of the features
  // (it would not understand their lines), and may still send LINK (it always could).
  if (m.features) features_ = *m.features & Features::all();
  HelloReply r;
  if (m.plain_data) {
    // Asked inside TLS, so it is the sender's own wish; in a plain session data is in clear
    // anyway. Either way both sides say what they do, and neither can be talked down.
    if (tls_ && !ctx.allow_plain_data) {
      ctx.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
      worker_.peer_warning([&] {
        return "refused a session from " + peer_ +
               ": it asked for data in clear (send --no-encryption), and this receiver runs "
               "without --allow-unencrypted";
      });
      reply_error(std::nullopt, ErrorCode::kPlainRefused,
                  "this receiver does not take file data in clear: run send without "
                  "--no-encryption, or recv with --allow-unencrypted");
      close_after_flush();
      return;
    }
    r.plain_data = tls_ != nullptr;
    plain_data_ = true;
  }
  state_ = State::kActive;
  stop_awaiting();
  said_hello_ = true;
  account_buffers();  // from the handshakes' count to the sessions'
  r.version = kProtocolVersion;
  r.data_port = ctx.data_port;
  // A sender starts with the initial credit; with `credit` it hears of every raise.
  r.max_open = static_cast<std::uint32_t>(credit_);
  r.features = features_;
  r.durable = ctx.publisher != nullptr;
  reply(r);
  ctx.log.debug("session from " + peer_ + " established; control " + encryption_ + ", data " +
                data_encryption() +
                "; features: " + (features_.empty() ? std::string("none") : features_.to_string()));
}

std::string ControlSession::data_encryption() const {
  return plain_data_ || !tls_ ? "none" : encryption_;
}

void ControlSession::refuse_auth(const std::string& why) {
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
  worker_.peer_warning(
      [&] { return "refused a session from " + peer_ + ": " + control_free(why); });
}

}  // namespace ackxfer
