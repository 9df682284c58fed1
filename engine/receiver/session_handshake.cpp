// ControlSession, the handshake: HELLO (version, features), AUTH (--secret-file).
#include "auth/shared_secret.h"
#include "display.h"
#include "protocol/limits.h"
#include "receiver/control_session.h"

namespace ackxfer {

void ControlSession::handle(const HelloRequest& m) {
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
  const SharedSecret* secret = worker_.ctx().secret.get();
  if (!secret) {
    accept_session(std::nullopt);
    return;
  }
  if (!m.nonce) {
    refuse_auth(ErrorCode::kAuthRequired,
                "this receiver only accepts senders that authenticate: run send with "
                "--secret-file holding the receiver's secret");
    return;
  }
  sender_nonce_ = *m.nonce;
  receiver_nonce_ = Nonce::random();
  state_ = State::kAwaitAuth;
  reply(AuthChallenge{receiver_nonce_});
}

void ControlSession::handle(const AuthRequest& m) {
  const SharedSecret& secret = *worker_.ctx().secret;
  if (!proofs_match(m.proof, secret.sender_proof(sender_nonce_, receiver_nonce_))) {
    refuse_auth(ErrorCode::kAuthFailed,
                "the sender's secret does not match this receiver's: --secret-file must hold "
                "the same secret on both sides");
    return;
  }
  worker_.ctx().log.debug("session from " + peer_ + " authenticated");
  accept_session(secret.receiver_proof(sender_nonce_, receiver_nonce_));
}

void ControlSession::accept_session(std::optional<Proof> proof) {
  ReceiverContext& ctx = worker_.ctx();
  state_ = State::kActive;
  HelloReply r;
  r.version = kProtocolVersion;
  r.data_port = ctx.data_port;
  // A sender starts with the initial credit; with `credit` it hears of every raise.
  r.max_open = static_cast<std::uint32_t>(credit_);
  r.proof = proof;
  r.features = features_;
  r.durable = ctx.publisher != nullptr;
  reply(r);
  ctx.log.debug("session from " + peer_ + " established; features: " +
                (features_.empty() ? std::string("none") : features_.to_string()));
}

void ControlSession::refuse_auth(ErrorCode code, const std::string& why) {
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
  ctx.log.warn("refused a session from " + peer_ + ": " +
               (code == ErrorCode::kAuthRequired ? "it did not authenticate (this receiver has "
                                                   "--secret-file)"
                                                 : "wrong secret"));
  reply_error(std::nullopt, code, why);
  close_after_flush();
}

}  // namespace ackxfer
