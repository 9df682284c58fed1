// DataStream: recv -> hash -> pwrite, frame by frame (docs/PROTOCOL.md, "Data connections").
#include "receiver/data_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "display.h"
#include "error.h"
#include "io/socket.h"
#include "protocol/control_codec.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

// Splice receive path: payloads at least this large are spliced; the rest is read into the
// scratch buffer (which also holds spliced bytes read back for hashing).
constexpr std::uint64_t kSpliceMinBytes = 64 * 1024;
constexpr std::size_t kScratchBytes = 256 * 1024;
// With TLS: the acks' side of the channel (acks are 40 bytes: 8 KiB holds ~200, and what does
// not fit waits as plaintext within kMaxPendingAckBytes), and the input side while the peer
// has proven nothing (one whole record: a handshake holds no more). Plaintext goes to the
// worker's buffer (Worker::take_tls_plain); kSmallPlainBytes only should that be taken.
constexpr std::size_t kAckTlsOutputBytes = 8 * 1024;
constexpr std::size_t kHandshakeInputBytes = 17 * 1024 + 512;
// Plaintext, should the worker's buffer be taken (never expected): one record's.
constexpr std::size_t kSmallPlainBytes = 16 * 1024;

}  // namespace

DataStream::DataStream(Worker& worker, UniqueFd fd)
    : WorkerObject(worker),
      fd_(std::move(fd)),
      id_(worker.ctx().next_connection_id.fetch_add(1, std::memory_order_relaxed)),
      acks_out_(*this, kSend, kMaxPendingAckBytes) {
  peer_ = peer_endpoint(fd_.get()).to_string();
  acks_out_.set_fd(fd_.get());
  unproven_pos_ = worker.track_unproven(this);  // counted by Worker::adopt_data_connection
}

DataStream::~DataStream() {
  *alive_ = false;
  release_claim();
  ReceiverContext& ctx = worker_.ctx();
  worker_.data_connection_gone();
  uncount();
  uncount_unproven();
  ctx.tls_data_buffers.fetch_sub(tls_buffers_granted_, std::memory_order_relaxed);
}

void DataStream::start() {
  // Acks are small and the sender waits on them to send DONE: never hold one back for Nagle.
  set_nodelay(fd_.get());
  worker_.ctx().stats.data_connections.fetch_add(1, std::memory_order_relaxed);
  created_ms_ = last_bytes_ms_ = loop_.now_ms();
  legacy_undecided_ = worker_.ctx().legacy_enabled;
  splice_ = worker_.ctx().recv_path == RecvPath::kSplice;
  if (const auto& tls = worker_.ctx().data_tls) {
    // Nothing is spliced or taken from the shared pool: ciphertext is received into the
    // channel and decrypted into the worker's plaintext buffer, hashed and written from there
    // like a pool buffer.
    tls_ =
        std::make_unique<TlsChannel>(tls, kHandshakeInputBytes, kRecordsPerKey, kAckTlsOutputBytes);
    acks_out_.set_tls(tls_.get());
    splice_ = false;
    legacy_undecided_ = false;  // --legacy is not allowed with encryption
  }
  // The pipe is made when the first large payload arrives (want_pipe): an idle connection
  // holds none of its user's pipe budget.
  if (splice_) scratch_.resize(kScratchBytes);
  arm_read();
}

void DataStream::proven() {
  if (proven_) return;
  proven_ = true;
  uncount_unproven();
  if (counted_) proven_pos_ = worker_.track_proven(this);
}

void DataStream::uncount() {
  if (proven_pos_) worker_.untrack_proven(*proven_pos_);
  proven_pos_.reset();
  if (!counted_) return;
  counted_ = false;
  // Admitted (and counted) by Worker::adopt_data_connection.
  worker_.ctx().data_connections.fetch_sub(1, std::memory_order_relaxed);
}

void DataStream::heard() {
  last_bytes_ms_ = loop_.now_ms();
  if (proven_pos_) worker_.heard_from(*proven_pos_);
}

void DataStream::uncount_unproven() {
  if (!unproven_pos_) return;
  worker_.untrack_unproven(*unproven_pos_);
  unproven_pos_.reset();
  worker_.ctx().unproven_data_connections.fetch_sub(1, std::memory_order_relaxed);
}

void DataStream::evict() {
  const bool was_proven = proven_;
  uncount_unproven();
  uncount();              // its place is the newcomer's now, though its fd closes a moment later
  if (closing()) return;  // going anyway
  ReceiverContext& ctx = worker_.ctx();
  (was_proven ? ctx.stats.data_connections_displaced : ctx.stats.data_connections_evicted)
      .fetch_add(1, std::memory_order_relaxed);
  ctx.log.debug("closing data connection from " + peer_ +
                (was_proven
                     ? ": quiet for longest (" + std::to_string(loop_.now_ms() - last_bytes_ms_) +
                           " ms) of the receiver's maximum, and a newer connection needs "
                           "its place"
                     : std::string(": no frame for an open file yet, and a newer "
                                   "connection needs its place")));
  if (legacy_) finish_legacy(false, "closed to make room for newer data connections");
  release_claim();
  begin_close(fd_.get());
}

bool DataStream::want_pipe() {
  std::string why;
  if (pipe_.ensure(why)) return true;
  // Reading into the scratch buffer and writing from it is what the buffer path does, and
  // faster than splicing through a pipe of a few pages.
  ReceiverContext& ctx = worker_.ctx();
  if (!why.empty() && !ctx.pipe_refusal_logged.exchange(true))
    ctx.log.warn("splice receive path: " + why +
                 "; such data connections read and write through a buffer instead");
  return false;
}

void DataStream::shutdown() {
  if (legacy_) finish_legacy(false, "the receiver is stopping");
  release_claim();
  begin_close(fd_.get());
}

void DataStream::tick(std::int64_t now) {
  if (closing()) return;
  ReceiverContext& ctx = worker_.ctx();
  // A file closed under the frame this connection is in (cancelled, its session gone): let go
  // of it now, not when the rest of the frame comes. Its temp file's fd and its place in the
  // open-file budget go with the last holder, and a peer that sends a byte and then sits
  // would otherwise hold them until --idle-timeout, for as many files as it cancels.
  if (file_ && !writing_ && file_->closed()) drop_closed_file();
  // Refused (a protocol error, a token it does not know): the acks that say why get
  // kMaxClosingMs to go out, whether the peer reads them or not.
  if (close_after_acks_ && now - close_decided_ms_ > kMaxClosingMs) {
    release_claim();
    begin_close(fd_.get());
    return;
  }
  bool silent_start =
      !framed_ && now - created_ms_ > std::min(kFirstLineTimeoutMs, ctx.idle_timeout.count());
  bool idle = now - last_bytes_ms_ > ctx.idle_timeout.count();
  if (!silent_start && !idle) return;
  ctx.stats.timeouts.fetch_add(1, std::memory_order_relaxed);
  ctx.log.debug("closing data connection from " + peer_ +
                (silent_start ? ": no frame after connecting" : ": idle"));
  if (legacy_) finish_legacy(false, "idle for longer than --idle-timeout");
  release_claim();
  begin_close(fd_.get());
}

void DataStream::arm_read() {
  if (splice_) return arm_read_exact();
  if (recv_armed_ || closing() || close_after_acks_ || ack_backlog()) return;
  if (tls_) {
    auto space = tls_->input_space();
    if (space.empty()) return;  // our output is full (key updates nobody reads): acks re-arm
    read_paused_ = false;
    recv_armed_ = true;
    arm_recv(fd_.get(), space.data(), space.size(), kRecv);
    return;
  }
  read_paused_ = false;
  recv_armed_ = true;
  arm_recv_multishot(fd_.get(), Worker::kDataPool, kRecv);
}

void DataStream::pause_read() {
  if (!recv_armed_ || read_paused_) return;
  read_paused_ = true;
  loop_.cancel(this, kRecv);
}

void DataStream::on_complete(unsigned op, const Completion& c) {
  if (op == kSend) {
    on_acks_sent(c.res);
    return;
  }
  if (op == kRecv) {
    on_bytes(c);
    return;
  }
  // The splice path: exact reads and the two splice legs.
  recv_armed_ = false;
  if (op == kSpliceOut && writing_) {
    writing_ = false;
    file_->end_write(claim_, loop_.now_ms());
  }
  if (op == kSpliceOut && c.res <= 0 && c.res != -ECANCELED && !closing()) {
    splice_out_failed(c.res < 0 ? -c.res : EIO);
    return;
  }
  if (c.res <= 0) {
    ended(c.res);
    return;
  }
  heard();
  if (op == kRecvExact) {
    consume(scratch_.data(), static_cast<std::size_t>(c.res));
  } else if (op == kSpliceIn) {
    pipe_pending_ = static_cast<unsigned>(c.res);
    splice_to_file();
    return;
  } else {
    spliced_out(static_cast<std::size_t>(c.res));
    if (recv_armed_) return;  // more of the pipe to move
  }
  if (!close_after_acks_) arm_read_exact();
}

void DataStream::ended(int res) {
  if (legacy_ended(res)) return;
  if (phase_ != Phase::kHeader || staged_len_ > 0)
    worker_.ctx().log.debug("data connection from " + peer_ + " ended inside a frame: " +
                            (res == 0 ? std::string("closed") : errno_text(-res)));
  release_claim();
  begin_close(fd_.get());
}

void DataStream::on_bytes(const Completion& c) {
  // With TLS, what counts is plaintext (decrypt): key updates alone are no activity.
  if (c.res > 0 && !tls_) heard();
  if (!c.more) recv_armed_ = false;
  if (tls_ && c.res > 0 && !first_bytes_seen_) {
    first_bytes_seen_ = true;
    if (!check_first_bytes(static_cast<std::size_t>(c.res))) return;
  }
  // After a protocol error (close_after_acks_) the rest of the stream is ignored.
  if (tls_ && c.res > 0) {
    if (!close_after_acks_) decrypt(static_cast<std::size_t>(c.res));
    if (closing()) return;
  } else if (!c.data.empty() && !close_after_acks_) {
    consume(c.data.data(), c.data.size());
  }
  if (c.res == -ENOBUFS) {
    arm_read();
    return;
  }
  if (c.res == -ECANCELED) {
    if (!recv_armed_) arm_read();
    return;
  }
  if (c.res <= 0) {
    ended(c.res);
    return;
  }
  if (close_after_acks_) {
    pause_read();
    return;
  }
  if (ack_backlog())
    pause_read();  // resumes when the acks drain (on_acks_sent)
  else if (!recv_armed_ && !read_paused_)
    arm_read();
}

bool DataStream::check_first_bytes(std::size_t n) {
  auto space = tls_->input_space();
  if (space[0] == kTlsHandshakeRecord) return true;
  ReceiverContext& ctx = worker_.ctx();
  if (!ctx.allow_plain_data) {
    // Frames in clear where data must be encrypted: nothing of it is read.
    ctx.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning([&] {
      return "refused a data connection from " + peer_ +
             ": it did not start TLS, and this receiver runs without --allow-unencrypted";
    });
    release_claim();
    begin_close(fd_.get());
    return false;
  }
  // recv --allow-unencrypted: frames in clear, read from the shared pool from now on. Only
  // a sender whose control session is encrypted knows a token, so only it gets this far.
  std::vector<std::uint8_t> first(space.begin(), space.begin() + static_cast<std::ptrdiff_t>(n));
  acks_out_.set_tls(nullptr);
  tls_.reset();
  consume(first.data(), first.size());
  return true;  // consumed here (c.data is empty); on_bytes goes on as for a plain connection
}

void DataStream::decrypt(std::size_t n) {
  tls_->received(n);
  TlsChannel::Status st = TlsChannel::Status::kOk;
  // Records (16 KiB each at most) are decrypted one after another into the worker's plaintext
  // buffer, and consumed together before this returns: one pwrite per batch, as on the pool
  // path, not one per record. A connection holds no plaintext of its own.
  std::span<std::uint8_t> plain = worker_.take_tls_plain();
  std::vector<std::uint8_t> own;
  if (plain.empty()) {
    own.resize(kSmallPlainBytes);
    plain = own;
  }
  std::size_t have = 0;
  while (st == TlsChannel::Status::kOk && !close_after_acks_ && !closing()) {
    std::size_t got = 0;
    // Until the handshake is done, reading drives it and yields nothing.
    st = tls_->read(tls_->handshake_done() ? plain.subspan(have) : plain.first(0), got);
    have += got;
    if (got > 0) heard();
    if (have > 0 && (have == plain.size() || st != TlsChannel::Status::kOk)) {
      consume(plain.data(), have);
      have = 0;
      if (!tls_sized_) size_tls_buffers();  // the frame may have proved the connection
    }
  }
  if (own.empty()) worker_.give_back_tls_plain();
  acks_out_.flush();  // handshake messages, alerts
  if (st == TlsChannel::Status::kClosed) {
    ended(0);
    return;
  }
  if (st != TlsChannel::Status::kFailed) return;
  ReceiverContext& ctx = worker_.ctx();
  if (!tls_->handshake_done()) {
    ctx.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning(
        [&] { return "refused a data connection from " + peer_ + ": " + tls_->error(); });
  } else {
    ctx.stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning([&] {
      return "data connection from " + peer_ + ": " + tls_->error() +
             "; closing it (the sender sends its unacknowledged chunks again)";
    });
  }
  // The frame being received cannot be finished: its claim goes, the alert goes out.
  release_claim();
  close_after_acks();
  flush_acks();
}

void DataStream::size_tls_buffers() {
  // Once the handshake is done and a frame for an open file proved the connection, it gets a
  // full-size ciphertext buffer, while the receiver's total for them allows.
  if (!proven_ || !tls_->handshake_done()) return;
  tls_sized_ = true;
  ReceiverContext& ctx = worker_.ctx();
  const std::size_t want = kTlsBufferBytes - kHandshakeInputBytes;
  if (ctx.tls_data_buffers.fetch_add(want, std::memory_order_relaxed) + want <=
      ctx.max_tls_data_buffers) {
    tls_buffers_granted_ = want;
    tls_->grow_input(kTlsBufferBytes);
    return;
  }
  ctx.tls_data_buffers.fetch_sub(want, std::memory_order_relaxed);
  ctx.log.debug("data connection from " + peer_ +
                ": encrypted connections hold their buffer budget; this one reads a record at a "
                "time");
}

void DataStream::arm_read_exact() {
  if (recv_armed_ || closing() || close_after_acks_ || ack_backlog()) return;
  recv_armed_ = true;
  if (legacy_) {
    arm_recv(fd_.get(), scratch_.data(), scratch_.size(), kRecvExact);
    return;
  }
  std::size_t want = 0;
  switch (phase_) {
    case Phase::kHeader:
      want = kFrameHeaderBytes - staged_len_;
      break;
    case Phase::kTrailer:
      want = kFrameTrailerBytes - staged_len_;
      break;
    case Phase::kPayload:
      if (splicing_) {
        arm_splice(fd_.get(), -1, pipe_.write_end(), -1,
                   static_cast<unsigned>(std::min<std::uint64_t>(remaining_, pipe_.bytes())),
                   kSpliceIn);
        return;
      }
      want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, scratch_.size()));
      break;
  }
  // Exactly the bytes of the current phase, so a frame's payload is never read by accident.
  arm_recv(fd_.get(), scratch_.data(), want, kRecvExact);
}

void DataStream::splice_to_file() {
  if (!file_ || !file_->begin_write(claim_)) {
    // The file was abandoned or the claim taken over meanwhile. The pipe holds its bytes; the
    // simplest honest way out is to drop the connection (the sender reconnects if it still
    // has work).
    release_claim();
    begin_close(fd_.get());
    return;
  }
  writing_ = true;
  recv_armed_ = true;
  arm_splice(pipe_.read_end(), -1, file_->fd(),
             static_cast<std::int64_t>(header_.offset + header_.length - remaining_), pipe_pending_,
             kSpliceOut);
}

// `n` bytes went from the pipe into the file: read them back (hot in the page cache) to hash.
void DataStream::spliced_out(std::size_t n) {
  std::uint64_t off = header_.offset + header_.length - remaining_;
  for (std::size_t done = 0; done < n;) {
    std::size_t piece = std::min(n - done, scratch_.size());
    ssize_t r = ::pread(file_->fd(), scratch_.data(), piece, static_cast<off_t>(off + done));
    if (r <= 0) {
      frame_status_ = AckStatus::kWriteFailed;
      write_errno_ = r < 0 ? errno : EIO;
      break;
    }
    digest_.update(scratch_.data(), static_cast<std::size_t>(r));
    done += static_cast<std::size_t>(r);
  }
  worker_.ctx().stats.payload_bytes_received.fetch_add(n, std::memory_order_relaxed);
  file_->touch(claim_, last_bytes_ms_);
  pipe_pending_ -= static_cast<unsigned>(n);
  remaining_ -= n;
  if (pipe_pending_ > 0) {
    splice_to_file();
    return;
  }
  if (remaining_ == 0) {
    phase_ = Phase::kTrailer;
    splicing_ = false;
  }
}

void DataStream::splice_out_failed(int err) {
  // It used to end the connection without a word: the sender sent the chunk again on new
  // connections, into the same full disk, and then reported a lost connection.
  frame_status_ = AckStatus::kWriteFailed;
  write_errno_ = err;
  // What the pipe holds of the frame is dropped like the rest (it is there: no wait).
  while (pipe_pending_ > 0) {
    ssize_t r = ::read(pipe_.read_end(), scratch_.data(),
                       std::min<std::size_t>(pipe_pending_, scratch_.size()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {  // cannot happen; if it does, the connection cannot go on
      release_claim();
      begin_close(fd_.get());
      return;
    }
    pipe_pending_ -= static_cast<unsigned>(r);
    remaining_ -= static_cast<std::uint64_t>(r);
  }
  splicing_ = false;
  if (remaining_ == 0) phase_ = Phase::kTrailer;
  if (!close_after_acks_) arm_read_exact();
}

bool DataStream::consume(const std::uint8_t* p, std::size_t n) {
  if (legacy_undecided_) {
    // Collect the first 4 bytes in staged_ (where the frame path expects a split header).
    std::size_t take = std::min<std::size_t>(4 - staged_len_, n);
    std::memcpy(staged_.data() + staged_len_, p, take);
    staged_len_ += take;
    p += take;
    n -= take;
    if (staged_len_ < 4) return true;
    if (try_legacy(staged_.data(), staged_len_)) staged_len_ = 0;
    // Otherwise staged_ holds the first 4 bytes of a frame header; carry on below.
  }
  if (legacy_) {
    legacy_write(p, n);
    return true;
  }
  std::size_t pos = 0;
  while (pos < n && !close_after_acks_) {
    std::size_t avail = n - pos;
    switch (phase_) {
      case Phase::kHeader:
      case Phase::kTrailer: {
        std::size_t want = phase_ == Phase::kHeader ? kFrameHeaderBytes : kFrameTrailerBytes;
        const std::uint8_t* whole = nullptr;
        if (staged_len_ == 0 && avail >= want) {
          whole = p + pos;  // the usual case: no copy
          pos += want;
        } else {
          std::size_t take = std::min(want - staged_len_, avail);
          std::memcpy(staged_.data() + staged_len_, p + pos, take);
          staged_len_ += take;
          pos += take;
          if (staged_len_ < want) {
            if (answered_as_wrong_port(staged_.data(), staged_len_)) return false;
            return true;  // the rest comes in the next buffer
          }
          whole = staged_.data();
          staged_len_ = 0;
        }
        if (phase_ == Phase::kHeader) {
          if (!begin_frame(whole)) return false;
        } else {
          end_frame(whole);
          if (unsent_ack_bytes() > kMaxUnreadAckBytes) {
            fail("it does not read its acks (" + std::to_string(kMaxUnreadAckBytes / 1024) +
                 " KiB of them unsent)");
            return false;
          }
        }
        break;
      }
      case Phase::kPayload: {
        std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(avail, remaining_));
        consume_payload(p + pos, take);
        pos += take;
        break;
      }
    }
  }
  return true;
}

bool DataStream::begin_frame(const std::uint8_t* raw) {
  framed_ = true;
  auto r = decode_frame_header(
      std::span<const std::uint8_t, kFrameHeaderBytes>(raw, kFrameHeaderBytes), header_);
  if (r != DecodeResult::kOk) {
    if (answered_as_wrong_port(raw, kFrameHeaderBytes)) return false;
    fail(r == DecodeResult::kBadMagic   ? "not a data frame (bad magic)"
         : r == DecodeResult::kBadFlags ? "frame header has unknown flags (incompatible sender)"
                                        : "frame header check failed (corrupted header)");
    return false;
  }
  ReceiverContext& ctx = worker_.ctx();
  std::shared_ptr<IncomingFile> file = ctx.registry.find(header_.token);
  if (!file) {
    // Unknown or finished token: nothing can be written, and a guessing peer learns nothing
    // beyond "no".
    ack(AckStatus::kUnknownToken);
    close_after_acks();
    flush_acks();
    return false;
  }
  proven();
  IncomingFile::Claim c = file->claim(header_.offset, header_.length, id_, last_bytes_ms_);
  if (c.status == AckStatus::kBadRange || c.status == AckStatus::kUnknownToken) {
    ack(c.status);
    close_after_acks();
    flush_acks();
    return false;
  }
  if (c.taken_over) {
    ctx.stats.claims_taken_over.fetch_add(1, std::memory_order_relaxed);
    ctx.log.debug("data connection from " + peer_ + " takes over chunk " + std::to_string(c.index) +
                  " of " + quote_name(file->path()) + " from a connection that has gone quiet");
  }
  remaining_ = header_.length;
  write_errno_ = 0;
  frame_status_ = c.status;  // kOk, or kBusy: the payload is read and dropped
  if (c.status == AckStatus::kOk) {
    file_ = std::move(file);
    claim_ = c;
    if (int e = file_->reserve_chunk(claim_)) {
      // No space for this chunk: read and drop its payload, then say why in the ack.
      frame_status_ = AckStatus::kWriteFailed;
      write_errno_ = e;
    }
  }
  digest_.reset();
  phase_ = remaining_ ? Phase::kPayload : Phase::kTrailer;
  // Splice path: large payloads of a file we are writing go socket -> pipe -> file.
  splicing_ = splice_ && frame_status_ == AckStatus::kOk && remaining_ >= kSpliceMinBytes &&
              !file_->discarding() && want_pipe();
  return true;
}

void DataStream::consume_payload(const std::uint8_t* data, std::size_t n) {
  if (frame_status_ == AckStatus::kOk && !file_->begin_write(claim_)) {
    // Abandoned meanwhile (drop the rest), or the claim passed to another connection after
    // this one went quiet (then this copy is merely late: busy). Either way the file is not
    // this connection's to hold any more.
    AckStatus status = file_->closed() ? AckStatus::kUnknownToken : AckStatus::kBusy;
    drop_closed_file();
    frame_status_ = status;
  }
  if (frame_status_ == AckStatus::kOk) {
    std::uint64_t off = header_.offset + (header_.length - remaining_);
    std::size_t done = file_->discarding() ? n : 0;
    while (done < n) {
      ssize_t w = ::pwrite(file_->fd(), data + done, n - done, static_cast<off_t>(off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        write_errno_ = w < 0 ? errno : EIO;
        frame_status_ = AckStatus::kWriteFailed;
        break;
      }
      done += static_cast<std::size_t>(w);
    }
    file_->end_write(claim_, last_bytes_ms_);  // the claim is fresh: bytes just came
    digest_.update(data, n);
    worker_.ctx().stats.payload_bytes_received.fetch_add(n, std::memory_order_relaxed);
    // A large chunk on a slow link keeps its session alive while it arrives.
    file_->totals().last_progress_ms.store(last_bytes_ms_, std::memory_order_relaxed);
  }
  remaining_ -= n;
  if (remaining_ == 0) phase_ = Phase::kTrailer;
}

void DataStream::end_frame(const std::uint8_t* trailer) {
  phase_ = Phase::kHeader;
  if (file_) file_->totals().last_progress_ms.store(loop_.now_ms(), std::memory_order_relaxed);
  AckStatus status = frame_status_;
  if (status == AckStatus::kOk) {
    Digest128 sent;
    std::memcpy(sent.bytes.data(), trailer, 16);
    Digest128 got = digest_.finish();
    if (got != sent) {
      status = AckStatus::kBadDigest;
      worker_.ctx().stats.chunk_digest_mismatches.fetch_add(1, std::memory_order_relaxed);
      worker_.peer_warning([&] {
        return "digest mismatch in " + quote_name_cut(file_->path()) + " at offset " +
               std::to_string(header_.offset) + " from " + peer_ +
               "; asking the sender to send that chunk again";
      });
      file_->finish_chunk(claim_, false, Digest128{});
    } else if (file_->plan().count() == 1) {
      // The only chunk is the whole file: publish it here, on this worker, and say so in the
      // ack; the sender sends no DONE for it.
      if (file_->verify_single(claim_, got) == IncomingFile::Verdict::kVerified) {
        // Its ack waits (in order) until the file is published.
        publish_single(ack(AckStatus::kPublished, 0, false));
        file_.reset();
        return;
      }
      status = file_->closed() ? AckStatus::kUnknownToken : AckStatus::kBusy;
    } else {
      file_->finish_chunk(claim_, true, got);
    }
    file_.reset();
  } else if (status == AckStatus::kWriteFailed) {
    worker_.peer_warning([&] {
      return "could not write " + quote_name_cut(file_->path()) + " at offset " +
             std::to_string(header_.offset) + " (from " + peer_ + "): " + errno_text(write_errno_) +
             "; the sender is told";
    });
    file_->finish_chunk(claim_, false, Digest128{});
    file_.reset();
  } else {
    file_.reset();
  }
  ack(status, write_errno_);
}

void DataStream::publish_single(std::size_t seq) {
  ReceiverContext& ctx = worker_.ctx();
  ctx.registry.remove(file_->token());
  std::shared_ptr<IncomingFile> file = file_;
  // Counts and logs the verdict, and completes the waiting ack with it.
  auto verdict = [this, seq, file](const DurablePublisher::Result& r) {
    ReceiverContext& c = worker_.ctx();
    if (auto* e = std::get_if<FsError>(&r)) {
      c.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
      worker_.peer_warning(
          [&] { return "could not publish " + quote_name_cut(file->path()) + ": " + e->what; });
      complete_ack(seq, AckStatus::kPublishFailed, e->err);
      return;
    }
    c.stats.files_published.fetch_add(1, std::memory_order_relaxed);
    c.stats.bytes_published.fetch_add(file->size(), std::memory_order_relaxed);
    complete_ack(seq, AckStatus::kPublished, 0);
  };
  if (!ctx.publisher || file->discarding()) {
    verdict(file->publish(false));
    return;
  }
  // Durably: this ack, and those behind it, wait for the publisher.
  Loop* loop = &loop_;
  ctx.publisher->submit(DurablePublisher::Job::publishing(
      file, [loop, alive = alive_, verdict](DurablePublisher::Result r) {
        loop->post([alive, verdict, r = std::move(r)] {
          if (*alive) verdict(r);
        });
      }));
}

void DataStream::close_after_acks() {
  if (close_after_acks_) return;
  close_after_acks_ = true;
  close_decided_ms_ = loop_.now_ms();
}

void DataStream::drop_closed_file() {
  release_claim();
  frame_status_ = AckStatus::kUnknownToken;  // the rest of the frame is read and dropped
  // The splice path has nowhere to drop the rest of the frame: end the connection (the sender
  // reconnects if it still has work), as splice_to_file would at the next bytes.
  if (splicing_) begin_close(fd_.get());
}

void DataStream::release_claim() {
  if (!file_) return;
  if (writing_) {
    writing_ = false;
    file_->end_write(claim_, 0);
  }
  file_->finish_chunk(claim_, false, Digest128{});
  file_.reset();
}

bool DataStream::answered_as_wrong_port(const std::uint8_t* p, std::size_t n) {
  static constexpr std::string_view kHello = "HELLO ";
  if (proven_ || tls_ || close_after_acks_ || n < kHello.size() ||
      std::memcmp(p, kHello.data(), kHello.size()) != 0)
    return false;
  worker_.ctx().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
  worker_.peer_warning([&] {
    return "data connection from " + peer_ +
           " says HELLO: a sender was given the data port instead of the control port; told it "
           "so";
  });
  acks_out_.write(
      "ERR - unknown-verb this is the data port of an ackxfer-fast receiver; send --to its "
      "control port instead\n");
  close_after_acks();
  flush_acks();
  return true;
}

void DataStream::fail(const std::string& why) {
  worker_.ctx().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
  worker_.peer_warning(
      [&] { return "data connection from " + peer_ + ": " + why + "; closing it"; });
  ack(AckStatus::kProtocol);
  close_after_acks();
  flush_acks();
}

std::size_t DataStream::ack(AckStatus status, int err, bool ready) {
  PendingAck a;
  a.ack.status = status;
  a.ack.error = static_cast<std::uint16_t>(err);
  a.ack.token = header_.token;
  a.ack.offset = header_.offset;
  a.ready = ready;
  acks_.push_back(a);
  std::size_t seq = acks_front_seq_ + acks_.size() - 1;
  flush_acks();
  return seq;
}

void DataStream::complete_ack(std::size_t seq, AckStatus status, int err) {
  if (seq < acks_front_seq_ || seq - acks_front_seq_ >= acks_.size()) return;
  PendingAck& a = acks_[seq - acks_front_seq_];
  a.ack.status = status;
  a.ack.error = static_cast<std::uint16_t>(err);
  a.ready = true;
  flush_acks();
}

void DataStream::flush_acks() {
  if (closing()) return;
  while (!acks_.empty() && acks_.front().ready) {
    std::uint8_t raw[kFrameAckBytes];
    encode_frame_ack(acks_.front().ack, raw);
    acks_out_.write(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
    acks_.pop_front();
    ++acks_front_seq_;
  }
  if (close_after_acks_ && acks_.empty() && acks_out_.idle()) {
    release_claim();
    begin_close(fd_.get());
  }
}

void DataStream::on_acks_sent(int res) {
  if (!acks_out_.on_sent(res)) {
    release_claim();
    begin_close(fd_.get());
    return;
  }
  flush_acks();
  if (closing() || close_after_acks_) return;
  // Reading may have paused on a full ack queue.
  if (splice_ ? !recv_armed_ : (read_paused_ || !recv_armed_)) arm_read();
}

void DataStream::on_drained() {
  // A splice into the file that completed after we began closing.
  release_claim();
  fd_.reset();
  worker_.release(this);
}

}  // namespace ackxfer
