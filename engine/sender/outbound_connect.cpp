// OutboundStream, the connection: connecting (and the TLS handshake), losing it, and
// reconnecting within --retry-for with the unacknowledged frames sent again.
#include "sender/outbound_stream.h"

#include "error.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "sender/control_client.h"

namespace ackxfer {

void OutboundStream::start(const Endpoint& target, std::shared_ptr<TlsContext> tls) {
  target_ = target;
  tls_ctx_ = std::move(tls);
  out_.resize(kSendBufferBytes + kFrameHeaderBytes + kFrameTrailerBytes);
  ack_buf_.resize(kFrameAckBytes * 128);
  connect();
}

void OutboundStream::retarget(const Endpoint& target, std::shared_ptr<TlsContext> tls) {
  target_ = target;
  tls_ctx_ = std::move(tls);  // the new session's key: the next connection uses it
  backoff_.reset();
  gave_up_ = false;
  // Waiting to reconnect: go now (the cancelled timer completes and connects).
  if (state_ == State::kBackoff) disarm_timer(kTimer);
}

void OutboundStream::connect() {
  state_ = State::kConnecting;
  try {
    fd_ = make_tcp_socket(target_.family());
  } catch (const SystemError& e) {
    connection_failed(e.what(), is_retryable_connect_error(e.code()) || e.code() == EMFILE);
    return;
  }
  arm_connect(fd_.get(), target_.sa(), target_.len, kConnect);
}

void OutboundStream::connected() {
  state_ = State::kRunning;
  // Frames are batched into large sends already; a batch's tail (often a last small file)
  // must not wait for Nagle. Headers of streamed chunks use MSG_MORE instead.
  set_nodelay(fd_.get());
  backoff_.reset();
  if (std::exchange(gave_up_, false))
    ctx_.loops[0]->post([c = ctx_.control] { c->stream_recovered(); });
  if (tls_ctx_) {
    // Acks are small: the input side needs room for a record or two, the output side for
    // several records of frames per send.
    tls_ =
        std::make_unique<TlsChannel>(tls_ctx_, kAckTlsBufferBytes, kRecordsPerKey, kTlsBufferBytes);
    if (tls_->handshake() == TlsChannel::Status::kFailed) {
      connection_failed("data connection: " + tls_->error(), false);
      return;
    }
    send_tls_output();  // the ClientHello
  }
  arm_ack_read();
  pump();
}

void OutboundStream::abort_current(const std::string& why) {
  // The frame's header is already on the wire: the stream cannot continue in step with the
  // receiver, so fail this file and reset the connection.
  if (cur_) {
    ctx_.scheduler->fail(*cur_, why, false);
    cur_.reset();
  }
  connection_failed("reset after a read error", true);
}

void OutboundStream::connection_failed(const std::string& why, bool retryable) {
  if (state_ == State::kDraining || state_ == State::kFinished) return;
  last_error_ = why;
  ChunkScheduler& s = *ctx_.scheduler;
  if (cur_) {
    s.retry(*cur_, why);
    cur_.reset();
  }
  for (auto& f : unacked_)
    s.retry(f.job, why);
  unacked_.clear();
  unacked_bytes_ = 0;
  // Waiting chunks go back too: another stream may take them.
  for (auto& [due, job] : busy_)
    s.put_back(job);
  busy_.clear();
  if (local_) {
    s.put_back(*local_);
    local_.reset();
    local_hasher_.reset();
  }
  // The mapping stays until after_drain: a send of it may still be in flight.
  send_armed_ = recv_armed_ = window_armed_ = false;
  state_ = State::kDraining;
  retryable_ = retryable;
  if (fd_) {
    ::shutdown(fd_.get(), SHUT_RDWR);
    loop_.cancel_fd(fd_.get());
  }
  if (inflight() == (later_armed_ ? 1 : 0)) after_drain();
}

void OutboundStream::after_drain() {
  fd_.reset();
  tls_.reset();  // no op reads its buffers any more
  map_.unmap();  // nor any send the mapped window
  tls_taken_ = 0;
  // A splice cut short may leave bytes in the pipe: start the next connection with a clean one.
  pipe_.reset();
  pipe_pending_ = 0;
  out_len_ = out_sent_ = 0;
  ack_len_ = 0;
  if (ctx_.scheduler->closed()) {
    finish();
    return;
  }
  std::optional<std::chrono::milliseconds> delay;
  if (retryable_)
    delay =
        backoff_.next_delay(Backoff::Clock::time_point(std::chrono::milliseconds(loop_.now_ms())));
  if (!delay) {
    // Out of retries: tell the control client, which decides whether the transfer is over
    // (it finishes us) or the receiver came back (it retargets us). Meanwhile keep trying at
    // the slowest pace.
    if (!std::exchange(gave_up_, true))
      ctx_.loops[0]->post([c = ctx_.control, why = last_error_] { c->stream_gave_up(why); });
    delay = Backoff::kMaxDelay;
  }
  ctx_.reconnects.fetch_add(1, std::memory_order_relaxed);
  ctx_.log.debug("data stream " + std::to_string(stream_index_) + ": " + last_error_ +
                 "; reconnecting in " + std::to_string(delay->count()) + " ms");
  state_ = State::kBackoff;
  arm_timer(static_cast<std::uint64_t>(delay->count()) * 1'000'000, kTimer);
}

}  // namespace ackxfer
