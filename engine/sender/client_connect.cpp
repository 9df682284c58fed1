// ControlClient, connecting: attempts and backoff, HELLO and AUTH, losing a session and
// re-establishing it.
#include <sys/socket.h>

#include "auth/shared_secret.h"
#include "display.h"
#include "error.h"
#include "protocol/limits.h"
#include "sender/control_client.h"
#include "sender/outbound_stream.h"

namespace ackxfer {
namespace {

std::string seconds_text(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

}  // namespace

void ControlClient::connect() {
  state_ = State::kConnecting;
  phase_started_ms_ = loop_.now_ms();
  try {
    fd_ = make_tcp_socket(ctx_.control_ep.family());
  } catch (const SystemError& e) {
    finish_session(SendReport::Outcome::kCannotConnect, e.what());
    return;
  }
  arm_connect(fd_.get(), ctx_.control_ep.sa(), ctx_.control_ep.len, kConnect);
}

void ControlClient::drop_connection() {
  if (fd_) {
    // Its cancelled ops complete before the backoff timer lets connect() run (kTimer waits).
    ::shutdown(fd_.get(), SHUT_RDWR);
    loop_.cancel_fd(fd_.get());
    fd_.reset();
  }
  in_len_ = 0;
  lines_.reset();
  lines_.set_fd(-1);
}

void ControlClient::made_progress() {
  backoff_.reset();
  timed_out_ = false;
}

void ControlClient::session_lost(const std::string& why) {
  if (state_ == State::kDone) return;
  if (state_ == State::kBye) {
    // Every file already has its verdict: the data is there and verified.
    ctx_.log.warn("the session ended before the receiver answered BYE (" + why +
                  "); every file was delivered and verified, but directory modes and mtimes may "
                  "not have been applied");
    finish_session(SendReport::Outcome::kOk, "");
    return;
  }
  // The retry budget runs from the first loss since the transfer last made progress, so a
  // receiver that keeps accepting and then failing us cannot keep the sender busy forever.
  std::optional<std::chrono::milliseconds> delay;
  if (ctx_.options.retry_for.count() > 0)
    delay =
        backoff_.next_delay(Backoff::Clock::time_point(std::chrono::milliseconds(loop_.now_ms())));
  if (!delay) {
    finish_session(timed_out_ ? SendReport::Outcome::kTimedOut : SendReport::Outcome::kInterrupted,
                   why);
    return;
  }
  drop_connection();
  // What had no verdict goes again, first, on the next session. The receiver kept the
  // verified part of large files, so "again" mostly means "the rest".
  std::deque<Resend> again;
  for (auto& [id, f] : open_files_) {
    ctx_.scheduler->drop_file(f);  // its queued chunks carry a token that died with the session
    again.push_back(Resend{entry_of(*f), f->attempt});
  }
  for (auto& [id, c] : checksums_) {
    c.cancelled->store(true);
    again.push_back(Resend{entry_of(*c.file), c.file->attempt});
  }
  resend_.insert(resend_.begin(), again.begin(), again.end());
  open_files_.clear();
  checksums_.clear();
  open_bytes_ = 0;
  for (auto& [id, d] : open_dirs_)
    resend_dirs_.push_back(d.request);
  open_dirs_.clear();
  std::deque<OpenLink> links;
  for (auto& [id, l] : open_links_)
    links.push_back(std::move(l));
  resend_links_.insert(resend_links_.begin(), links.begin(), links.end());
  open_links_.clear();
  streams_lost_reason_.clear();
  if (!reconnecting_) {
    lost_why_ = why;
    ctx_.log.warn("lost the session with " + ctx_.control_ep.to_string() + ": " + why +
                  "; reconnecting for up to " + seconds_text(ctx_.options.retry_for) +
                  " (--retry-for) to finish the transfer");
  }
  reconnecting_ = true;
  ctx_.reconnects.fetch_add(1, std::memory_order_relaxed);
  state_ = State::kBackoff;
  arm_timer(static_cast<std::uint64_t>(delay->count()) * 1'000'000, kTimer);
}

void ControlClient::connect_failed(int err, const std::string& detail) {
  drop_connection();
  // A name with several addresses (localhost: 127.0.0.1 and ::1): try the next one at once;
  // back off only when every one has refused.
  const auto& candidates = ctx_.control_candidates;
  if (detail.empty() && is_retryable_connect_error(err) && candidate_ + 1 < candidates.size()) {
    ctx_.log.debug("connect to " + ctx_.control_ep.to_string() + ": " + errno_text(err) +
                   "; trying the next address");
    ctx_.control_ep = candidates[++candidate_];
    state_ = State::kBackoff;
    arm_timer(1'000'000, kTimer);  // connects once the old attempt's ops have completed
    return;
  }
  std::string tried = ctx_.control_ep.to_string();
  if (candidates.size() > 1) {
    tried.clear();
    for (const Endpoint& e : candidates)
      tried += (tried.empty() ? "" : " and ") + e.to_string();
    candidate_ = 0;
    ctx_.control_ep = candidates.front();
  }
  std::optional<std::chrono::milliseconds> delay;
  if (is_retryable_connect_error(err))
    delay =
        backoff_.next_delay(Backoff::Clock::time_point(std::chrono::milliseconds(loop_.now_ms())));
  if (delay) {
    ctx_.log.debug("connect to " + ctx_.control_ep.to_string() + ": " +
                   (detail.empty() ? errno_text(err) : detail) + "; retrying in " +
                   std::to_string(delay->count()) + " ms");
    ctx_.reconnects.fetch_add(1, std::memory_order_relaxed);
    state_ = State::kBackoff;
    arm_timer(static_cast<std::uint64_t>(delay->count()) * 1'000'000, kTimer);
    return;
  }
  std::string where = tried;
  std::string retried =
      backoff_.attempts() > 0 ? "retried for " + seconds_text(ctx_.options.retry_for) : "";
  std::string what = detail.empty() ? errno_text(err) : detail;
  if (reconnecting_) {
    finish_session(timed_out_ ? SendReport::Outcome::kTimedOut : SendReport::Outcome::kInterrupted,
                   lost_why_ + "; could not reconnect to " + where + " (" + what +
                       (retried.empty() ? "" : ", " + retried) + ")");
    return;
  }
  if (timed_out_) {
    finish_session(SendReport::Outcome::kTimedOut,
                   "the receiver at " + where + " does not respond: " + what +
                       (retried.empty() ? "" : " (" + retried + ")") +
                       "; is it overloaded, stopped, or not an ackxfer-fast receiver?");
    return;
  }
  std::string msg;
  if (!detail.empty()) {
    msg = where + ": " + detail + (retried.empty() ? "" : " (" + retried + ")");
  } else {
    msg = err == ECONNREFUSED ? "no receiver listening on " + where + " (connection refused"
                              : "cannot connect to " + where + " (" + errno_text(err);
    if (!retried.empty()) msg += ", " + retried;
    msg += "); is `ackxfer-fast recv` running there, and is the port open?";
  }
  finish_session(SendReport::Outcome::kCannotConnect, msg);
}

void ControlClient::on_auth_challenge(const AuthChallenge& m) {
  const SharedSecret* secret = ctx_.options.secret.get();
  if (!secret || receiver_nonce_) {
    // Without a secret we sent no nonce, so a conforming receiver refuses with auth-required
    // instead; a second challenge is not in the protocol either.
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver sent an authentication challenge out of turn");
    return;
  }
  receiver_nonce_ = m.nonce;
  send_line(AuthRequest{secret->sender_proof(our_nonce_, m.nonce)});
}

void ControlClient::on_hello(const HelloReply& m) {
  if (m.version != kProtocolVersion) {
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver speaks protocol version " + std::to_string(m.version) +
                       ", this sender " + std::to_string(kProtocolVersion) +
                       "; upgrade the older side so that both run releases with the same "
                       "protocol version (ackxfer-fast --version shows it)");
    return;
  }
  if (const SharedSecret* secret = ctx_.options.secret.get()) {
    // Mutual: a receiver that cannot prove it holds the secret gets no data.
    if (!receiver_nonce_ || !m.proof) {
      finish_session(SendReport::Outcome::kAuthFailed,
                     "the receiver at " + ctx_.control_ep.to_string() +
                         " did not authenticate itself: it runs without --secret-file, or it is "
                         "not the receiver you meant; nothing was sent");
      return;
    }
    if (!proofs_match(*m.proof, secret->receiver_proof(our_nonce_, *receiver_nonce_))) {
      finish_session(SendReport::Outcome::kAuthFailed,
                     "the receiver at " + ctx_.control_ep.to_string() +
                         " does not hold our secret (its proof does not match); nothing was "
                         "sent");
      return;
    }
    milestone("receiver authenticated");
  }
  // A receiver that predates negotiation lists none, and gets none of their lines. LINK is the
  // one such receivers may or may not know: they are not sent symlinks (each fails by name).
  features_ = m.features ? (*m.features & Features::all()) : Features();
  links_supported_ = features_.has(Feature::kLink);
  report_.durable = m.durable;
  window_files_ = std::min<std::size_t>(kMaxOpenFilesPerSession, m.max_open);
  ctx_.data_ep = ctx_.control_ep;
  ctx_.data_ep.set_port(m.data_port);
  state_ = State::kActive;
  timed_out_ = false;
  heard_from_receiver();
  milestone("HELLO answered");
  if (!m.features)
    ctx_.log.warn("the receiver at " + ctx_.control_ep.to_string() +
                  " predates feature negotiation: symlinks are not sent to it, and it is not "
                  "told about long local work; upgrade ackxfer-fast there");
  bool again = std::exchange(reconnecting_, false);
  if (again)
    ctx_.log.warn("reconnected to " + ctx_.control_ep.to_string() + "; sending the " +
                  std::to_string(resend_.size()) + " unfinished files again");
  streams_given_up_ = 0;
  for (auto& s : ctx_.streams) {
    OutboundStream* stream = s.get();
    ctx_.loops[stream->loop_index()]->post([stream, again, ep = ctx_.data_ep] {
      if (again)
        stream->retarget(ep);
      else
        stream->start(ep);
    });
  }
  while (!resend_dirs_.empty()) {
    MkdirRequest d = std::move(resend_dirs_.front());
    resend_dirs_.pop_front();
    d.id = next_id_++;
    expect_reply();
    open_dirs_.emplace(d.id, OpenDir{d.path, d});
    send_line(d);
  }
  feed();
}

}  // namespace ackxfer
