// ControlClient, the connection: lines in and out, deadlines, the end of the session.
#include "sender/control_client.h"

#include <sys/socket.h>

#include <cstring>

#include "display.h"
#include "error.h"
#include "protocol/limits.h"
#include "sender/outbound_stream.h"

namespace ackxfer {
namespace {

constexpr std::size_t kControlBufferBytes = 64 * 1024;
static_assert(kControlBufferBytes > kMaxLineBytes + 1);
// Lines queued for a receiver that does not read them: beyond this, nothing new is opened.
constexpr std::size_t kMaxQueuedLineBytes = 1 << 20;
constexpr std::uint64_t kTickNs = 1'000'000'000;
// Every data stream gone: the control connection usually says why a moment later (the
// receiver is shutting down, say); this long, before concluding from the streams alone.
constexpr std::int64_t kStreamsLostGraceMs = 1'000;

}  // namespace

ControlClient::ControlClient(SenderContext& ctx, EntrySource& walker, SendReport& report)
    : LoopObject(*ctx.loops[0]),
      ctx_(ctx),
      walker_(walker),
      report_(report),
      backoff_(ctx.options.retry_for),
      lines_(*this, kSend, kMaxQueuedLineBytes) {}

ControlClient::~ControlClient() = default;

void ControlClient::start() {
  started_ = std::chrono::steady_clock::now();
  in_.resize(kControlBufferBytes);
  tick_armed_ = true;
  arm_timer(kTickNs, kTick);
  // PATH arguments that cannot be sent fail from the start, whether a receiver is reached or
  // not (the walker looked at them when it was made).
  collect_walk_problems();
  connect();
}

void ControlClient::on_complete(unsigned op, const Completion& c) {
  const int res = c.res;
  switch (op) {
    case kTick:
      tick_armed_ = false;
      if (state_ == State::kDone) return;
      tick();
      if (state_ != State::kDone && !closing()) {
        tick_armed_ = true;
        arm_timer(kTickNs, kTick);
      }
      return;
    case kConnect:
      if (state_ != State::kConnecting) return;  // a connection we gave up on (deadline)
      if (res != 0) {
        connect_failed(-res);
        return;
      }
      set_nodelay(fd_.get());
      milestone("control connected");
      start_session();
      return;
    case kTimer:
      if (state_ == State::kBackoff && inflight() > (tick_armed_ ? 1 : 0)) {
        arm_timer(1'000'000, kTimer);  // the old connection's ops have not all completed yet
        return;
      }
      if (state_ == State::kBackoff) connect();
      return;
    case kRecv:
      if (state_ == State::kBackoff || state_ == State::kConnecting) return;  // old connection
      recv_armed_ = false;
      if (res <= 0) {
        if (state_ == State::kDone) return;
        std::string why = res == 0 ? "the receiver closed the control connection"
                                   : "control connection: " + errno_text(-res);
        if (state_ == State::kHello)
          connect_failed(res == 0 ? ECONNRESET : -res, why);
        else
          session_lost(why);
        return;
      }
      if (on_received(static_cast<std::size_t>(res))) arm_read();
      return;
    case kSend:
      if (state_ == State::kBackoff || state_ == State::kConnecting) return;  // old connection
      if (!lines_.on_sent(res)) {
        if (state_ == State::kHello)
          connect_failed(-res);
        else if (state_ != State::kDone)
          session_lost("control connection: " + errno_text(-res));
        return;
      }
      if (lines_.idle() && state_ == State::kActive) feed();  // room in the queue again
      arm_read();  // the TLS input may have waited for our output to drain
      return;
  }
}

void ControlClient::process_input() {
  std::size_t start = 0;
  while (state_ != State::kDone && state_ != State::kBackoff && state_ != State::kConnecting) {
    const char* begin = in_.data() + start;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', in_len_ - start));
    if (!nl) break;
    std::string_view line(begin, static_cast<std::size_t>(nl - begin));
    start = static_cast<std::size_t>(nl - in_.data()) + 1;
    auto parsed = parse_server_line(line);
    if (!parsed.ok()) {
      finish_session(SendReport::Outcome::kProtocolError,
                     "the receiver sent a line this sender does not understand (" +
                         printable(parsed.error().message) + "); are both sides the same version?");
      return;
    }
    handle(parsed.value());
  }
  // Done, or reconnecting (a busy receiver): the rest of this buffer is of no use.
  if (state_ == State::kDone || state_ == State::kBackoff || state_ == State::kConnecting) return;
  std::memmove(in_.data(), in_.data() + start, in_len_ - start);
  in_len_ -= start;
  if (in_len_ > kMaxLineBytes)
    finish_session(SendReport::Outcome::kProtocolError, "the receiver sent an overlong line");
}

void ControlClient::handle(const ServerMessage& m) {
  if (const auto* e = std::get_if<ErrReply>(&m)) return on_err(*e);
  if (tls_ && (plain_answer_ || !tls_->handshake_done())) {
    // We started TLS and this came outside it: only a refusal (ERR, above) may come that way.
    // Anything else, a HELLO above all, would let whoever is on the path speak for the
    // receiver without the secret or its certificate.
    finish_session(SendReport::Outcome::kAuthFailed,
                   "the receiver at " + ctx_.control_ep.to_string() +
                       " answered in plain text, outside the TLS this sender started (something "
                       "on the path, or not an ackxfer-fast receiver with encryption); nothing "
                       "was sent");
    return;
  }
  if (state_ == State::kHello) {
    if (const auto* h = std::get_if<HelloReply>(&m)) return on_hello(*h);
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver did not answer HELLO; is this an ackxfer-fast receiver?");
    return;
  }
  if (const auto* r = std::get_if<ReadyReply>(&m)) return on_ready(*r);
  if (const auto* o = std::get_if<OkReply>(&m)) return on_ok(*o);
  // CREDIT and PROGRESS only where HELLO agreed on them: a receiver that sends them anyway
  // does not speak the protocol it answered with, and nothing it says can be relied on.
  auto not_agreed = [&](const char* line, Feature f) {
    finish_session(SendReport::Outcome::kProtocolError,
                   std::string("the receiver sent ") + line +
                       " without having agreed on feature '" + std::string(feature_name(f)) +
                       "' in HELLO; is it a compatible ackxfer-fast?");
  };
  if (const auto* c = std::get_if<CreditReply>(&m)) {
    if (!features_.has(Feature::kCredit)) return not_agreed("CREDIT", Feature::kCredit);
    return on_credit(*c);
  }
  if (const auto* p = std::get_if<ProgressNote>(&m)) {
    if (!features_.has(Feature::kProgress)) return not_agreed("PROGRESS", Feature::kProgress);
    return on_progress(*p);
  }
  if (std::holds_alternative<ByeReply>(m) && state_ == State::kBye) {
    milestone("BYE answered");
    finish_session(SendReport::Outcome::kOk, "");
    return;
  }
  finish_session(SendReport::Outcome::kProtocolError, "unexpected reply from the receiver");
}

void ControlClient::send_line(const ClientMessage& m) {
  lines_.write(format_line(m));
}

bool ControlClient::owed_reply() const {
  return state_ == State::kBye || !open_files_.empty() || !open_dirs_.empty() ||
         !open_links_.empty();
}

void ControlClient::expect_reply() {
  if (!owed_reply()) last_heard_ms_ = loop_.now_ms();
}

void ControlClient::heard_from_receiver() {
  last_heard_ms_ = loop_.now_ms();
}

void ControlClient::tick() {
  const std::int64_t now = loop_.now_ms();
  const std::int64_t idle = ctx_.options.idle_timeout.count();
  switch (state_) {
    case State::kConnecting:
      if (now - phase_started_ms_ > kConnectTimeoutMs) {
        timed_out_ = true;
        connect_failed(ETIMEDOUT, "the connection did not complete within " +
                                      std::to_string(kConnectTimeoutMs / 1000) + " s");
      }
      return;
    case State::kHello:
      if (now - phase_started_ms_ > std::min(kHelloTimeoutMs, idle)) {
        timed_out_ = true;
        connect_failed(ETIMEDOUT, "it accepted the connection but did not answer HELLO within " +
                                      std::to_string(std::min(kHelloTimeoutMs, idle) / 1000) +
                                      " s");
      }
      return;
    case State::kActive:
    case State::kBye: {
      if (state_ == State::kActive && !streams_lost_reason_.empty() &&
          now - streams_lost_ms_ >= kStreamsLostGraceMs) {
        finish_session(SendReport::Outcome::kInterrupted, streams_lost_reason_);
        return;
      }
      show_local_checks();
      // PROGRESS for our own long local work, so the receiver does not take us for gone.
      if (features_.has(Feature::kProgress)) {
        for (auto& [id, c] : checksums_) {
          std::uint64_t done = c.done->load(std::memory_order_relaxed);
          if (done == c.reported) continue;
          c.reported = done;
          send_line(ProgressNote{id, done, c.file->size()});
        }
        for (auto& [id, f] : open_files_) {
          std::uint64_t done = f->local_hashed.load(std::memory_order_relaxed);
          if (done == f->local_hashed_reported) continue;  // only while it moves
          f->local_hashed_reported = done;
          send_line(ProgressNote{id, done, f->size()});
        }
      }
      if (state_ == State::kActive && !resend_.empty() && resend_.front().not_before_ms <= now)
        feed();  // a file the receiver was too busy for: its wait is over
      if (!owed_reply()) return;
      std::int64_t heard = std::max(last_heard_ms_, ctx_.last_ack_ms.load());
      if (now - heard > idle) {
        timed_out_ = true;
        session_lost("the receiver has not answered for " + std::to_string(idle / 1000) +
                     " s (--idle-timeout)");
      }
      return;
    }
    case State::kBackoff:
    case State::kDone:
      return;
  }
}

void ControlClient::cancel() {
  if (state_ != State::kDone) finish_session(SendReport::Outcome::kInterrupted, "cancelled");
}

void ControlClient::finish_session(SendReport::Outcome outcome, const std::string& why) {
  if (state_ == State::kDone) return;
  state_ = State::kDone;
  if (outcome != SendReport::Outcome::kOk) {
    report_.outcome = outcome;
    report_.error = why;
    // Whatever was in flight did not arrive.
    for (auto& [id, f] : open_files_)
      record_failure(f->source_path, "not delivered: " + why);
    for (auto& [id, c] : checksums_)
      record_failure(c.file->source_path, "not delivered: " + why);
    for (auto& r : resend_)
      record_failure(r.entry.source_path, "not delivered: " + why);
    for (auto& [id, d] : open_dirs_)
      record_failure(d.source_path, "not created: " + why);
    for (auto& d : resend_dirs_)
      record_failure(d.source_path, "not created: " + why);
    for (auto& [id, l] : open_links_)
      record_failure(l.source_path, "not created: " + why);
    for (auto& l : resend_links_)
      record_failure(l.source_path, "not created: " + why);
  }
  close_all_files();
  forget_all_checksums();
  open_dirs_.clear();
  resend_dirs_.clear();
  open_links_.clear();
  resend_links_.clear();
  resend_.clear();
  ctx_.scheduler->close();
  for (auto& s : ctx_.streams) {
    OutboundStream* stream = s.get();
    ctx_.loops[stream->loop_index()]->post([stream] { stream->finish(); });
  }
  begin_close(fd_.get());
}

void ControlClient::milestone(const char* what) {
  if (!ctx_.log.enabled(LogLevel::kDebug)) return;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  started_)
                .count();
  ctx_.log.debug("+" + std::to_string(us / 1000) + "." + std::to_string(us % 1000 / 100) +
                 " ms: " + what + " (" + std::to_string(report_.files) + " files done, " +
                 std::to_string(open_files_.size()) + " open)");
}

void ControlClient::on_drained() {
  fd_.reset();
  tls_.reset();
  retired_tls_.reset();
  ctx_.object_finished(0);
}

}  // namespace ackxfer
