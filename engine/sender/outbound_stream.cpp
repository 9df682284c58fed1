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

// A send of whole small frames stops once it holds this much (256 KiB, as before the send
// buffer grew to 1 MiB: small files keep the batching measured best for them).
constexpr std::size_t kSmallFramesBatchBytes = 256 * 1024;
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
    ctx_.scheduler->fail(job, "the receiver kept a chunk busy for longer than --idle-timeout", true,
                         job.busy_since_ms);
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
  f.resumed.fetch_add(len, std::memory_order_relaxed);
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

}  // namespace ackxfer
