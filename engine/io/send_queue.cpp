// SendQueue: send-all over one op at a time.
#include "io/send_queue.h"

#include "tls/tls_channel.h"

namespace ackxfer {

void SendQueue::write(std::string_view bytes) {
  if (failed_) return;
  queued_.append(bytes);
  flush();
}

bool SendQueue::idle() const {
  return !in_flight_ && queued_.empty() && !closing_tls_ && (!tls_ || tls_->output_pending() == 0);
}

void SendQueue::close_tls() {
  if (!tls_ || failed_) return;
  closing_tls_ = true;
  flush();
}

std::size_t SendQueue::pending_bytes() const {
  return queued_.size() + (current_.size() - sent_) + (tls_ ? tls_->output_pending() : 0);
}

bool SendQueue::on_sent(int res) {
  in_flight_ = false;
  if (res < 0 || failed_) {
    failed_ = true;
    closing_tls_ = false;
    queued_.clear();
    current_.clear();
    sent_ = 0;
    return false;
  }
  if (tls_)
    tls_->sent(static_cast<std::size_t>(res));
  else
    sent_ += static_cast<std::size_t>(res);
  flush();
  return true;
}

void SendQueue::reset() {
  queued_.clear();
  current_.clear();
  sent_ = 0;
  failed_ = false;
  in_flight_ = false;
  closing_tls_ = false;
}

void SendQueue::flush() {
  if (in_flight_ || failed_ || fd_ < 0 || owner_.closing()) return;
  if (tls_) return flush_tls();
  if (sent_ == current_.size()) {
    sent_ = 0;
    current_.clear();
    if (queued_.empty()) {
      // Drained: give back a buffer a burst made large.
      if (current_.capacity() > 64 * 1024) std::string().swap(current_);
      return;
    }
    current_.swap(queued_);
  }
  in_flight_ = true;
  owner_.arm_send(fd_, current_.data() + sent_, current_.size() - sent_, op_);
}

// Plaintext into the channel while its output has room (before the handshake is done, none
// goes in), then the channel's output onto the socket.
void SendQueue::flush_tls() {
  // A handshake flight larger than the output (a long certificate chain) goes out in pieces:
  // each drained piece makes room for the next, which only the handshake itself writes. With
  // plaintext queued, write() below drives it; without (a receiver, which speaks second), this.
  if (queued_.empty() && !tls_->handshake_done()) tls_->handshake();
  if (!queued_.empty()) {
    std::size_t taken = 0;
    auto st =
        tls_->write({reinterpret_cast<const std::uint8_t*>(queued_.data()), queued_.size()}, taken);
    queued_.erase(0, taken);
    // A failed channel takes nothing more: only its alert (below) is left to send.
    if (st == TlsChannel::Status::kFailed) queued_.clear();
    if (queued_.empty() && queued_.capacity() > 64 * 1024) std::string().swap(queued_);
  }
  // The last reply is in the channel: close_notify follows it (or waits for room).
  if (closing_tls_ && queued_.empty() && tls_->close()) closing_tls_ = false;
  auto out = tls_->output();
  if (out.empty()) return;
  in_flight_ = true;
  owner_.arm_send(fd_, out.data(), out.size(), op_);
}

}  // namespace ackxfer
