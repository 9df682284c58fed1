// OutboundStream: the sender's data path (docs/PROTOCOL.md, "Data connections";
// docs/ARCHITECTURE.md, "Sender").
#include "sender/outbound_stream.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "display.h"
#include "error.h"
#include "io/splice_pipe.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "sender/control_client.h"

namespace ackxfer {
namespace {

// One send's worth of frames. 1 MiB: on the AMD host of 2026-12-02 a 2 GiB file moved in
// 1 MiB reads and sends took half the wall time of 256 KiB ones (the size ../shared/DESIGN.md
// had measured best on an Intel host), for the engine and for tools/least_work.cpp alike
// (docs/PERFORMANCE.md, "Cycles per byte").
constexpr std::size_t kSendBufferBytes = 1024 * 1024;
// A send of whole small frames stops once it holds this much (256 KiB, as before the send
// buffer grew to 1 MiB: small files keep the batching measured best for them).
constexpr std::size_t kSmallFramesBatchBytes = 256 * 1024;
// With TLS, the input side of a data connection only ever holds acks: room for one whole
// record is enough.
constexpr std::size_t kAckTlsBufferBytes = 17 * 1024 + 512;
// Frames sent but not yet acknowledged: bounds what a broken connection makes us re-send.
constexpr std::size_t kMaxUnackedFrames = 1024;
constexpr std::uint64_t kMaxUnackedBytes = 64ull << 20;
// Below this a chunk takes the copy path whatever --send-path says: it is packed with other
// small frames into one send, which costs less than a mapping or the pipe round trips.
constexpr std::uint64_t kStreamedMinBytes = 1 << 20;
// How much of a streamed chunk is hashed and then handed to the kernel at once: small enough
// that the pages are still in L2 when the socket (or the receiver) reads them.
constexpr std::uint64_t kWindowBytes = 1 << 20;
// Chunks the receiver already holds are hashed this much per turn of the loop, so that acks
// and other chunks keep moving meanwhile.
constexpr std::uint64_t kLocalHashSliceBytes = 16 << 20;

// Generated content for memory-to-memory benchmarks: a fixed pseudo-random pattern, so the
// sender spends nothing on producing it (a copy, as a page-cache read would be).
ssize_t synthetic_read(std::uint8_t* out, std::size_t n, std::uint64_t offset) {
  static const std::vector<std::uint8_t> pattern = [] {
    std::vector<std::uint8_t> p(1 << 20);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& b : p) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b = static_cast<std::uint8_t>(x);
    }
    return p;
  }();
  for (std::size_t done = 0; done < n;) {
    std::size_t at = static_cast<std::size_t>((offset + done) % pattern.size());
    std::size_t piece = std::min(n - done, pattern.size() - at);
    std::memcpy(out + done, pattern.data() + at, piece);
    done += piece;
  }
  return static_cast<ssize_t>(n);
}

}  // namespace

OutboundStream::OutboundStream(SenderContext& ctx, unsigned loop_index, unsigned stream_index)
    : LoopObject(*ctx.loops[loop_index]),
      ctx_(ctx),
      loop_index_(loop_index),
      stream_index_(stream_index),
      backoff_(ctx.options.retry_for) {}

OutboundStream::~OutboundStream() = default;

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

void OutboundStream::arm_ack_read() {
  recv_armed_ = true;
  if (tls_) {
    auto space = tls_->input_space();
    arm_recv(fd_.get(), space.data(), space.size(), kRecv);
    return;
  }
  arm_recv(fd_.get(), ack_buf_.data() + ack_len_, ack_buf_.size() - ack_len_, kRecv);
}

bool OutboundStream::send_tls_output() {
  if (!tls_ || send_armed_ || tls_->output_pending() == 0) return false;
  // tls_taken_ stays: it is what this output carries of out_, counted once all of it is sent.
  auto out = tls_->output();
  send_armed_ = true;
  arm_send(fd_.get(), out.data(), out.size(), kSend);
  return true;
}

void OutboundStream::send_out(bool more) {
  if (!tls_) {
    send_armed_ = true;
    arm_send(fd_.get(), out_.data() + out_sent_, out_len_ - out_sent_, kSend, more ? MSG_MORE : 0);
    return;
  }
  if (send_tls_output()) return;  // what the channel already holds goes first
  std::size_t taken = 0;
  auto st = tls_->write({out_.data() + out_sent_, out_len_ - out_sent_}, taken);
  if (st == TlsChannel::Status::kFailed) {
    connection_failed("data connection: " + tls_->error(), true);
    return;
  }
  if (tls_->output_pending() == 0) return;  // the handshake is not done yet: acks move it on
  auto out = tls_->output();
  tls_taken_ = taken;
  send_armed_ = true;
  arm_send(fd_.get(), out.data(), out.size(), kSend, more ? MSG_MORE : 0);
}

void OutboundStream::wake() {
  ctx_.loops[loop_index_]->post([this] {
    if (state_ == State::kRunning)
      pump();
    else
      ctx_.scheduler->pass_wake();
  });
}

void OutboundStream::finish() {
  if (state_ == State::kFinished && closing()) return;
  state_ = State::kFinished;
  ctx_.scheduler->forget_waiter(this);
  begin_close(fd_.get());
}

void OutboundStream::on_drained() {
  fd_.reset();
  ctx_.object_finished(loop_index_);
}

void OutboundStream::on_complete(unsigned op, const Completion& c) {
  const int res = c.res;
  if (op == kLater) {
    later_armed_ = false;
    if (state_ == State::kDraining) {
      if (inflight() == 0) after_drain();
      return;
    }
    later();
    return;
  }
  if (state_ == State::kDraining) {
    if (inflight() == (later_armed_ ? 1 : 0)) after_drain();
    return;
  }
  switch (op) {
    case kConnect:
      if (res == 0) {
        connected();
      } else {
        connection_failed("connect to " + target_.to_string() + ": " + errno_text(-res),
                          is_retryable_connect_error(-res));
      }
      return;
    case kTimer:
      if (state_ == State::kBackoff) connect();
      return;
    case kRecv:
      recv_armed_ = false;
      if (res <= 0) {
        connection_failed(res == 0 ? "the receiver closed the data connection"
                                   : "data connection: " + errno_text(-res),
                          true);
        return;
      }
      on_ack_bytes(static_cast<std::size_t>(res));
      return;
    case kSend: {
      send_armed_ = false;
      if (res < 0) {
        connection_failed("sending on the data connection: " + errno_text(-res), true);
        return;
      }
      std::size_t plain = static_cast<std::size_t>(res);
      if (tls_) {
        // Ciphertext went out; the plaintext it carries counts once all of it has.
        tls_->sent(plain);
        if (send_tls_output()) return;
        plain = std::exchange(tls_taken_, 0);
      }
      out_sent_ += plain;
      if (out_sent_ == out_len_) out_len_ = out_sent_ = 0;
      pump();
      return;
    }
    case kSendMapped:
      window_armed_ = false;
      if (res == -EFAULT) {
        abort_current("it shrank while being sent");
        return;
      }
      if (res <= 0) {
        connection_failed("sending on the data connection: " +
                              (res == 0 ? std::string("connection closed") : errno_text(-res)),
                          true);
        return;
      }
      window_sent(static_cast<std::uint64_t>(res));
      return;
    case kSpliceIn:
      window_armed_ = false;
      if (res <= 0) {
        abort_current(res == 0 ? "it shrank while being sent"
                               : "cannot read it: " + errno_text(-res));
        return;
      }
      splice_in_left_ -= static_cast<unsigned>(res);
      pipe_pending_ = static_cast<unsigned>(res);
      window_armed_ = true;
      arm_splice(pipe_.read_end(), -1, fd_.get(), -1, pipe_pending_, kSpliceOut);
      return;
    case kSpliceOut:
      window_armed_ = false;
      if (res <= 0) {
        connection_failed("splicing to the data connection: " +
                              (res == 0 ? std::string("connection closed") : errno_text(-res)),
                          true);
        return;
      }
      pipe_pending_ -= static_cast<unsigned>(res);
      window_sent(static_cast<std::uint64_t>(res));
      return;
  }
}

void OutboundStream::pump() {
  if (state_ != State::kRunning || send_armed_ || window_armed_) return;
  if (tls_ && !tls_->handshake_done()) return;  // frames wait for the handshake
  if (out_len_ == 0 && !fill()) return;
  if (out_len_ > 0) {
    // A streamed chunk's header goes first; MSG_MORE lets it share a segment with the payload.
    bool more = cur_ && cur_streamed_ && cur_pos_ < cur_->file->plan.length(cur_->index);
    send_out(more);
    return;
  }
  if (send_tls_output()) return;
  if (cur_ && cur_streamed_ && cur_pos_ < cur_->file->plan.length(cur_->index)) start_window();
}

// Packs as many frames (or frame pieces) into out_ as fit. Returns false if the stream had to
// be reset (a source read failed).
bool OutboundStream::fill() {
  const std::size_t cap = out_.size();
  while (true) {
    if (!cur_) {
      if (unacked_.size() >= kMaxUnackedFrames || unacked_bytes_ >= kMaxUnackedBytes) break;
      // Only start a frame when its header and at least one payload byte fit.
      if (cap - out_len_ < kFrameHeaderBytes + kFrameTrailerBytes + 1) break;
      auto job = ctx_.scheduler->next(this);
      if (!job) break;
      if (job->local_only) {
        // One at a time, hashed in slices (hash_local_slice); a second one goes back.
        if (local_) {
          ctx_.scheduler->put_back(*job);
          break;
        }
        local_ = std::move(job);
        arm_later();
        continue;
      }
      cur_ = std::move(job);
      cur_pos_ = 0;
      digest_.reset();
      OutgoingFile& f = *cur_->file;
      const std::uint64_t len = f.plan.length(cur_->index);
      cur_streamed_ = ctx_.send_path != SendPath::kCopy && len >= kStreamedMinBytes && !f.synthetic;
      encode_frame_header(FrameHeader{f.token, f.plan.offset(cur_->index), len},
                          out_.data() + out_len_);
      out_len_ += kFrameHeaderBytes;
    }
    OutgoingFile& f = *cur_->file;
    const std::uint64_t len = f.plan.length(cur_->index);
    const std::uint64_t base = f.plan.offset(cur_->index);
    if (cur_streamed_ && cur_pos_ < len) break;  // payload follows from the mapping or pipe
    while (cur_pos_ < len && out_len_ < cap - kFrameTrailerBytes) {
      std::size_t want = static_cast<std::size_t>(
          std::min<std::uint64_t>(len - cur_pos_, cap - kFrameTrailerBytes - out_len_));
      ssize_t r = f.synthetic ? synthetic_read(out_.data() + out_len_, want, base + cur_pos_)
                              : ::pread(f.fd.get(), out_.data() + out_len_, want,
                                        static_cast<off_t>(base + cur_pos_));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        abort_current(r == 0 ? "it shrank while being sent"
                             : "cannot read it: " + errno_text(errno));
        return false;
      }
      digest_.update(out_.data() + out_len_, static_cast<std::size_t>(r));
      out_len_ += static_cast<std::size_t>(r);
      cur_pos_ += static_cast<std::uint64_t>(r);
      ctx_.payload_bytes_sent.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
    }
    if (cur_pos_ < len) break;  // buffer full
    if (cap - out_len_ < kFrameTrailerBytes) break;
    Digest128 d = digest_.finish();
    if (f.chunk_count() == 1 && f.changed_since_opened()) {
      // The receiver publishes a one-chunk file as soon as its frame verifies, so a file that
      // changed while we read it must fail here: a wrong trailer makes the receiver discard
      // the frame, and the file is sent again from a fresh look at it.
      d.bytes[0] ^= 0xff;
      ctx_.scheduler->fail(*cur_, "it changed while being sent", true);
    }
    std::memcpy(out_.data() + out_len_, d.bytes.data(), kFrameTrailerBytes);
    out_len_ += kFrameTrailerBytes;
    unacked_.push_back(SentFrame{std::move(*cur_), d});
    unacked_bytes_ += len;
    cur_.reset();
    // Whole frames of small files go out in batches of this much, so the receiver starts on
    // them while the next batch is read.
    if (out_len_ >= kSmallFramesBatchBytes) break;
  }
  return true;
}

void OutboundStream::arm_later() {
  if (closing() || state_ == State::kFinished) return;
  std::int64_t now = loop_.now_ms();
  std::int64_t wait = -1;
  if (local_) {
    wait = 0;
  } else if (!busy_.empty()) {
    auto first = std::min_element(busy_.begin(), busy_.end(),
                                  [](const auto& a, const auto& b) { return a.first < b.first; });
    wait = std::max<std::int64_t>(0, first->first - now);
  }
  if (wait < 0 || (later_armed_ && wait > 0)) return;
  later_armed_ = true;
  arm_timer(static_cast<std::uint64_t>(wait) * 1'000'000, kLater);
}

void OutboundStream::later() {
  if (closing() || state_ == State::kFinished) return;
  if (local_) hash_local_slice();
  // Busy chunks whose wait is over go back to the queue (to this or any idle stream).
  std::int64_t now = loop_.now_ms();
  bool released = false;
  for (auto it = busy_.begin(); it != busy_.end();) {
    if (it->first <= now) {
      ctx_.scheduler->put_back(it->second);
      it = busy_.erase(it);
      released = true;
    } else {
      ++it;
    }
  }
  arm_later();
  if (released || !local_) pump();
}

void OutboundStream::busy(ChunkJob job) {
  const std::int64_t now = loop_.now_ms();
  if (job.busy == 0) job.busy_since_ms = now;
  // The receiver holds the chunk on another connection: that one may still finish it, or it
  // is dead and the receiver hands the chunk over once it has been quiet long enough
  // (kStaleClaimMs). Either way, hammering it helps nobody.
  if (now - job.busy_since_ms > ctx_.options.idle_timeout.count()) {
    ctx_.scheduler->fail(job, "the receiver kept a chunk busy for longer than --idle-timeout",
                         true);
    return;
  }
  std::int64_t delay =
      std::min<std::int64_t>(kBusyMaxDelayMs, kBusyFirstDelayMs << std::min<int>(job.busy, 8));
  if (job.busy < 255) ++job.busy;
  busy_.emplace_back(now + delay, std::move(job));
  arm_later();
}

void OutboundStream::hash_local_slice() {
  const ChunkJob& job = *local_;
  OutgoingFile& f = *job.file;
  const std::uint64_t len = f.plan.length(job.index);
  const std::uint64_t base = f.plan.offset(job.index);
  std::optional<Digest128> d;
  if (f.synthetic) {
    StreamingDigest s;
    std::vector<std::uint8_t> buf(1 << 20);
    for (std::uint64_t done = 0; done < len;) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), len - done));
      synthetic_read(buf.data(), n, base + done);
      s.update(buf.data(), n);
      done += n;
    }
    d = s.finish();
  } else {
    if (!local_hasher_) local_hasher_.emplace(f.fd.get(), base, len);
    std::uint64_t before = local_hasher_->hashed();
    if (!local_hasher_->step(kLocalHashSliceBytes)) {
      int err = errno;
      local_hasher_.reset();
      ctx_.scheduler->fail(
          job, err == ENODATA ? "it shrank while being sent" : "cannot read it: " + errno_text(err),
          false);
      local_.reset();
      return;
    }
    f.local_hashed.fetch_add(local_hasher_->hashed() - before, std::memory_order_relaxed);
    if (!local_hasher_->done()) return;  // the next slice next turn
    d = local_hasher_->finish();
    local_hasher_.reset();
  }
  ctx_.resumed_bytes.fetch_add(len, std::memory_order_relaxed);
  ChunkJob done = std::move(*local_);
  local_.reset();
  ctx_.scheduler->acked(done, *d);
}

void OutboundStream::start_window() {
  OutgoingFile& f = *cur_->file;
  const std::uint64_t len = f.plan.length(cur_->index);
  const std::uint64_t base = f.plan.offset(cur_->index);
  if (!map_.mapped() || map_.offset() != base || map_.length() != len) {
    if (int e = map_.map(f.fd.get(), base, len)) {
      abort_current("cannot map it: " + errno_text(e));
      return;
    }
  }
  std::uint64_t window = std::min(kWindowBytes, len - cur_pos_);
  // Hash the window through the mapping first: the pages are then hot in cache when the
  // kernel copies (mmap) or the receiver reads (splice) them.
  if (!map_.hash(digest_, cur_pos_, static_cast<std::size_t>(window))) {
    abort_current("it shrank while being sent");
    return;
  }
  window_left_ = window;
  window_armed_ = true;
  window_by_splice_ = ctx_.send_path == SendPath::kSplice && want_pipe();
  if (!window_by_splice_) {
    arm_send(fd_.get(), map_.at(cur_pos_), static_cast<std::size_t>(window), kSendMapped, MSG_MORE);
    return;
  }
  splice_in_left_ = window;
  arm_splice(f.fd.get(), static_cast<std::int64_t>(base + cur_pos_), pipe_.write_end(), -1,
             static_cast<unsigned>(std::min<std::uint64_t>(splice_in_left_, pipe_.bytes())),
             kSpliceIn);
}

// `n` more payload bytes of the current window are on the socket: continue the window, or
// move on once it is all out.
void OutboundStream::window_sent(std::uint64_t n) {
  cur_pos_ += n;
  window_left_ -= n;
  ctx_.payload_bytes_sent.fetch_add(n, std::memory_order_relaxed);
  OutgoingFile& f = *cur_->file;
  if (pipe_pending_ > 0) {  // splice: the pipe still holds part of what came in
    window_armed_ = true;
    arm_splice(pipe_.read_end(), -1, fd_.get(), -1, pipe_pending_, kSpliceOut);
    return;
  }
  if (window_left_ > 0) {
    window_armed_ = true;
    if (!window_by_splice_) {
      arm_send(fd_.get(), map_.at(cur_pos_), static_cast<std::size_t>(window_left_), kSendMapped,
               MSG_MORE);
    } else {
      arm_splice(f.fd.get(), static_cast<std::int64_t>(f.plan.offset(cur_->index) + cur_pos_),
                 pipe_.write_end(), -1,
                 static_cast<unsigned>(std::min<std::uint64_t>(splice_in_left_, pipe_.bytes())),
                 kSpliceIn);
    }
    return;
  }
  if (cur_pos_ == f.plan.length(cur_->index)) map_.unmap();
  pump();
}

bool OutboundStream::want_pipe() {
  std::string why;
  if (pipe_.ensure(why)) return true;
  // Sending from the mapping the window was just hashed through costs one copy, which is
  // less than splicing through a pipe of a few pages.
  if (!why.empty() && !ctx_.splice_refused.exchange(true))
    ctx_.log.warn("splice send path: " + why + "; sending from a mapping instead");
  return false;
}

void OutboundStream::on_ack_bytes(std::size_t n) {
  if (!tls_) {
    ack_len_ += n;
    if (!take_acks()) return;
  } else {
    tls_->received(n);
    TlsChannel::Status st = TlsChannel::Status::kOk;
    while (st == TlsChannel::Status::kOk) {
      std::size_t got = 0;
      st = tls_->read({ack_buf_.data() + ack_len_, ack_buf_.size() - ack_len_}, got);
      ack_len_ += got;
      if (!take_acks()) return;
      if (got == 0 && st == TlsChannel::Status::kOk) break;  // not possible: take_acks made room
    }
    if (st == TlsChannel::Status::kFailed || st == TlsChannel::Status::kClosed) {
      send_tls_output();  // our alert, if any
      connection_failed(st == TlsChannel::Status::kClosed
                            ? "the receiver closed the data connection (TLS close_notify)"
                            : "data connection: " + tls_->error(),
                        true);
      return;
    }
  }
  arm_ack_read();
  pump();
}

bool OutboundStream::take_acks() {
  std::size_t pos = 0;
  while (ack_len_ - pos >= kFrameAckBytes) {
    FrameAck a;
    if (!decode_frame_ack(
            std::span<const std::uint8_t, kFrameAckBytes>(ack_buf_.data() + pos, kFrameAckBytes),
            a)) {
      connection_failed("the receiver sent a malformed ack", true);
      return false;
    }
    pos += kFrameAckBytes;
    handle_ack(a);
    if (state_ != State::kRunning) return false;
  }
  std::memmove(ack_buf_.data(), ack_buf_.data() + pos, ack_len_ - pos);
  ack_len_ -= pos;
  return true;
}

void OutboundStream::handle_ack(const FrameAck& a) {
  const auto is = [&](const ChunkJob& j) {
    return j.file->token == a.token && j.file->plan.offset(j.index) == a.offset;
  };
  if (unacked_.empty() && cur_ && is(*cur_) &&
      (a.status == AckStatus::kUnknownToken || a.status == AckStatus::kBadRange)) {
    // Refused at its header (a file the receiver has closed, e.g. published before an ack
    // was lost): the receiver reads no more of this connection, so the rest of the frame
    // has nowhere to go. The chunk gets its verdict, the connection a fresh start.
    ChunkJob job = std::move(*cur_);
    cur_.reset();
    resolve(std::move(job), Digest128{}, a);
    connection_failed("the receiver refused a frame at its header", true);
    return;
  }
  if (unacked_.empty() || !is(unacked_.front().job)) {
    std::string expected = "nothing";
    if (!unacked_.empty())
      expected = quote_name(unacked_.front().job.file->wire_path) + " at offset " +
                 std::to_string(unacked_.front().job.file->plan.offset(unacked_.front().job.index));
    connection_failed("the receiver acknowledged a frame that was not sent next (token " +
                          a.token.hex().substr(0, 8) + "... at offset " + std::to_string(a.offset) +
                          ", status " + ack_status_name(a.status) + "; expected " + expected + ")",
                      true);
    return;
  }
  // An ack for the frame sent next is an answer; bytes alone (a byte at a time, or TLS records
  // with nothing in them) are not, or a receiver could hold the session past --idle-timeout.
  ctx_.last_ack_ms.store(loop_.now_ms(), std::memory_order_relaxed);
  SentFrame frame = std::move(unacked_.front());
  unacked_.pop_front();
  unacked_bytes_ -= frame.job.file->plan.length(frame.job.index);
  resolve(std::move(frame.job), frame.digest, a);
}

void OutboundStream::resolve(ChunkJob job, const Digest128& digest, const FrameAck& a) {
  ChunkScheduler& s = *ctx_.scheduler;
  const std::string where =
      quote_name(job.file->wire_path) + " at offset " + std::to_string(a.offset);
  switch (a.status) {
    case AckStatus::kOk:
    case AckStatus::kPublished:  // a one-chunk file: verified and published already
      s.acked(job, digest);
      return;
    case AckStatus::kPublishFailed:
      s.fail(job, "the receiver could not publish it: " + errno_text(a.error), false);
      return;
    case AckStatus::kBadDigest:
      ctx_.log.warn("digest mismatch reported by the receiver for " + where +
                    " (data changed in transit); sending that chunk again");
      s.retry(job, "digest mismatch");
      return;
    case AckStatus::kBusy:
      busy(std::move(job));
      return;
    case AckStatus::kWriteFailed:
      s.fail(job, "the receiver could not write it: " + errno_text(a.error), false);
      return;
    case AckStatus::kUnknownToken:
      // The receiver closed the file (it gave up on it, or restarted); a new SEND may work.
      s.fail(job, "the receiver no longer had the file open", true);
      return;
    case AckStatus::kBadRange:
    case AckStatus::kProtocol:
      s.fail(job, std::string("the receiver rejected a frame: ") + ack_status_name(a.status),
             false);
      return;
  }
}

void OutboundStream::abort_current(const std::string& why) {
  // The frame's header is already on the wire: the stream cannot continue in step with the
  // receiver, so fail this file and reset the connection.
  if (cur_) {
    ctx_.scheduler->fail(*cur_, why, false);
    cur_.reset();
  }
  map_.unmap();
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
  map_.unmap();
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
