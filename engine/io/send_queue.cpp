// SendQueue: send-all over one op at a time.
#include "io/send_queue.h"

namespace ackxfer {

void SendQueue::write(std::string_view bytes) {
  if (failed_) return;
  queued_.append(bytes);
  flush();
}

bool SendQueue::on_sent(int res) {
  in_flight_ = false;
  if (res < 0 || failed_) {
    failed_ = true;
    queued_.clear();
    current_.clear();
    sent_ = 0;
    return false;
  }
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
}

void SendQueue::flush() {
  if (in_flight_ || failed_ || fd_ < 0 || owner_.closing()) return;
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

}  // namespace ackxfer
