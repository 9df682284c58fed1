// OutboundStream, the acks: each frame's verdict from the receiver, and what follows from it
// (the chunk done, sent again, or its file failed).
#include "sender/outbound_stream.h"

#include <cstring>

#include "display.h"
#include "error.h"
#include "protocol/data_frame.h"

namespace ackxfer {

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
  // Nor is `busy`: a receiver answering every frame so would otherwise hold the sender for as
  // many --idle-timeouts as the tree has windows of files (each chunk gives up after one).
  if (a.status != AckStatus::kBusy)
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
      // A one-chunk file gets no DONE and no verdict but this ack: only `published` says it
      // is there. `ok` (verified, nothing more) for it, or `published` for one chunk of many
      // (before DONE proved the whole), would count a file delivered that is not.
      if ((a.status == AckStatus::kPublished) != (job.file->chunk_count() == 1)) {
        s.fail(job,
               std::string("the receiver acknowledged ") +
                   (a.status == AckStatus::kOk ? "the only chunk of a file as verified only"
                                               : "a chunk of a larger file as published") +
                   "; is it a compatible ackxfer-fast?",
               false);
        return;
      }
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

}  // namespace ackxfer
