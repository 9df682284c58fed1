// ControlClient, connecting: attempts and backoff, TLS and HELLO, losing a session and
// re-establishing it.
#include <sys/socket.h>

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
  retired_tls_.reset();  // kTimer let us here only once its connection's ops had completed
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
  lines_.set_tls(nullptr);
  // A cancelled send may still read its output, a cancelled receive write its input.
  if (tls_) retired_tls_ = std::move(tls_);
  recv_armed_ = false;
}

namespace {
// Each direction of the control connection's TLS: one whole record of input.
constexpr std::size_t kControlTlsBufferBytes = 17 * 1024 + 512;
}  // namespace

void ControlClient::start_session() {
  state_ = State::kHello;
  phase_started_ms_ = loop_.now_ms();
  lines_.set_fd(fd_.get());
  first_bytes_seen_ = plain_answer_ = false;
  if (ctx_.tls) {
    tls_ = std::make_unique<TlsChannel>(ctx_.tls, kControlTlsBufferBytes);
    if (ctx_.tls->uses_certificates()) tls_->expect_peer(ctx_.tls_host);
    lines_.set_tls(tls_.get());
    tls_->handshake();  // the ClientHello, sent by flush() below
  }
  HelloRequest hello{kProtocolVersion, Features::all()};
  hello.plain_data = tls_ && ctx_.options.no_encryption;
  send_line(hello);  // with TLS, it waits in lines_ until the handshake is done
  lines_.flush();
  arm_read();
}

void ControlClient::arm_read() {
  if (recv_armed_ || closing() || !fd_ || state_ == State::kDone || state_ == State::kBackoff ||
      state_ == State::kConnecting)
    return;
  if (tls_ && !plain_answer_) {
    auto space = tls_->input_space();
    if (space.empty()) return;  // our output is full: on_sent re-arms
    recv_armed_ = true;
    arm_recv(fd_.get(), space.data(), space.size(), kRecv);
    return;
  }
  recv_armed_ = true;
  arm_recv(fd_.get(), in_.data() + in_len_, in_.size() - in_len_, kRecv);
}

bool ControlClient::on_received(std::size_t n) {
  if (tls_ && !plain_answer_) {
    if (!first_bytes_seen_) {
      first_bytes_seen_ = true;
      auto space = tls_->input_space();
      if (space[0] != kTlsHandshakeRecord && space[0] != kTlsAlertRecord) {
        // Plain text where TLS should answer: an older receiver, or one without encryption
        // explaining itself. Read its lines as they are.
        plain_answer_ = true;
        std::size_t k = std::min(n, in_.size() - in_len_);
        std::memcpy(in_.data() + in_len_, space.data(), k);
        in_len_ += k;
        process_input();
        return state_ == State::kHello && !closing();
      }
    }
    return decrypt_input(n);
  }
  in_len_ += n;
  process_input();
  return state_ != State::kDone && state_ != State::kBackoff && state_ != State::kConnecting &&
         !closing();
}

bool ControlClient::decrypt_input(std::size_t n) {
  tls_->received(n);
  const bool was_done = tls_->handshake_done();
  TlsChannel::Status st = TlsChannel::Status::kOk;
  while (st == TlsChannel::Status::kOk) {
    std::size_t got = 0;
    st = tls_->read({reinterpret_cast<std::uint8_t*>(in_.data()) + in_len_, in_.size() - in_len_},
                    got);
    in_len_ += got;
    if (!was_done && tls_->handshake_done()) milestone("TLS established");
    if (got > 0 || in_len_ == in_.size()) process_input();
    if (state_ == State::kDone || state_ == State::kBackoff || state_ == State::kConnecting ||
        closing())
      return false;
    if (got == 0 && st == TlsChannel::Status::kOk) break;  // in_ full of an overlong line
  }
  lines_.flush();  // handshake messages, HELLO once the handshake is done, alerts
  if (st == TlsChannel::Status::kClosed) {
    session_lost("the receiver closed the control connection");
    return false;
  }
  if (st != TlsChannel::Status::kFailed) return true;
  // Until HELLO is answered, a failure is the handshake's: in TLS 1.3 our side is done before
  // the receiver has checked our certificate, and its verdict comes as an alert.
  if (!tls_->handshake_done() || state_ == State::kHello) {
    // Bytes damaged on the way are no refusal: a new connection (within --retry-for) may
    // well succeed. A receiver that fails every handshake that way is refused all the same.
    const bool damaged = tls_->failed_on_damaged_bytes();
    if (damaged && ++damaged_handshakes_ < kMaxDamagedHandshakes) {
      connect_failed(ECONNRESET,
                     "the TLS handshake failed on damaged bytes (" + tls_->error() + ")");
      return false;
    }
    finish_session(SendReport::Outcome::kAuthFailed,
                   "TLS with the receiver at " + ctx_.control_ep.to_string() +
                       " failed: " + tls_->error() +
                       (damaged ? " (" + std::to_string(damaged_handshakes_) +
                                      " handshakes in a row failed on damaged bytes)"
                                : "") +
                       (ctx_.tls->uses_certificates()
                            ? "; check --tls-cert, --tls-key and --tls-ca on both sides"
                            : "; both sides need the same --secret-file") +
                       "; nothing was sent");
  } else {
    session_lost("control connection: " + tls_->error());
  }
  return false;
}

void ControlClient::made_progress() {
  last_progress_ms_ = loop_.now_ms();
  backoff_.reset();
  timed_out_ = false;
}

void ControlClient::session_lost(const std::string& why) {
  if (state_ == State::kDone) return;
  // No session yet (HELLO unanswered): this is a connection attempt that failed.
  if (state_ == State::kConnecting || state_ == State::kHello) {
    connect_failed(ECONNRESET, why);
    return;
  }
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
  // Their queued chunks carry a token that died with the session: close_all_files() drops them.
  for (auto& [id, f] : open_files_) {
    FileHistory h = f->history;
    h.readied_before = h.readied_before || f->readied;
    if (f->done_sent && ++h.dones_unanswered >= kMaxFileAttempts) {
      record_failure(f->source_path,
                     "the receiver never gave its verdict: " + std::to_string(h.dones_unanswered) +
                         " sessions ended while it had every chunk and the "
                         "file's digest (DONE) and had not answered");
      continue;
    }
    again.push_back(Resend{entry_of(*f), h, 0});
  }
  for (auto& [id, c] : checksums_)
    again.push_back(Resend{entry_of(*c.file), c.file->history, 0});
  resend_.insert(resend_.begin(), again.begin(), again.end());
  close_all_files();
  forget_all_checksums();
  for (auto& [id, d] : open_dirs_)
    resend_dirs_.push_back(d);
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
    // Once, so that a sender waiting for its receiver says why instead of sitting silent (a
    // lost session says so itself, in session_lost).
    if (!reconnecting_ && !std::exchange(said_waiting_, true))
      ctx_.log.warn("cannot reach the receiver at " + tried + " yet (" +
                    (detail.empty() ? errno_text(err) : detail) + "); retrying for up to " +
                    seconds_text(ctx_.options.retry_for) + " (--retry-for)");
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

void ControlClient::on_hello(const HelloReply& m) {
  if (m.version != kProtocolVersion) {
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver speaks protocol version " + std::to_string(m.version) +
                       ", this sender " + std::to_string(kProtocolVersion) +
                       "; upgrade the older side so that both run releases with the same "
                       "protocol version (ackxfer-fast --version shows it)");
    return;
  }
  // Data in clear only where we asked for it inside TLS and the receiver agreed; anything
  // else is someone changing what was agreed, and nothing is sent.
  const bool want_plain = tls_ && ctx_.options.no_encryption;
  if (m.plain_data != want_plain) {
    finish_session(
        SendReport::Outcome::kAuthFailed,
        "the receiver at " + ctx_.control_ep.to_string() +
            (m.plain_data ? " offered data connections in clear, which we did not ask for"
                          : " did not confirm data connections in clear") +
            "; nothing was sent");
    return;
  }
  const bool plain_data = !tls_ || m.plain_data;
  // The data connections' key, from this session's handshake (with certificates too: only
  // the control connection carries them).
  std::shared_ptr<TlsContext> data_tls;
  if (!plain_data) {
    auto key = tls_->session_data_key();
    if (!key) {
      finish_session(SendReport::Outcome::kProtocolError,
                     "cannot derive the data connections' key from the TLS session");
      return;
    }
    data_tls = TlsContext::with_psk(TlsRole::kClient, std::move(*key));
  }
  damaged_handshakes_ = 0;
  report_.control_encryption = tls_ ? tls_->cipher() : "none";
  report_.encryption = plain_data ? "none" : report_.control_encryption;
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
    ctx_.loops[stream->loop_index()]->post([stream, again, ep = ctx_.data_ep, data_tls] {
      if (again)
        stream->retarget(ep, data_tls);
      else
        stream->start(ep, data_tls);
    });
  }
  while (!resend_dirs_.empty()) {
    OpenDir d = std::move(resend_dirs_.front());
    resend_dirs_.pop_front();
    d.request.id = next_id_++;
    expect_reply();
    send_line(d.request);
    open_dirs_.emplace(d.request.id, std::move(d));
  }
  feed();
}

}  // namespace ackxfer
