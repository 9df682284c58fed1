// The outgoing side of one connection: bytes queued by its owner, one send in flight at a time,
// short sends continued, and a high-water mark that tells the owner to stop reading a peer that
// does not read what it is sent. One owner each: the receiver's control replies and data acks,
// the sender's control lines.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "io/loop.h"

namespace ackxfer {

class SendQueue {
 public:
  // Sends go out as `owner`'s op `op`; the owner routes that op's completions to on_sent().
  // Above `high_water` queued bytes, backlogged() is true.
  SendQueue(LoopObject& owner, unsigned op, std::size_t high_water)
      : owner_(owner), op_(op), high_water_(high_water) {}

  void set_fd(int fd) { fd_ = fd; }
  // Queues `bytes` and starts sending if nothing is in flight.
  void write(std::string_view bytes);
  // The result of the send op. Returns true while the connection is usable (false: it failed,
  // and nothing more will be sent).
  bool on_sent(int res);
  // Forgets everything (a new connection follows). Only when no send is in flight.
  void reset();

  bool idle() const { return !in_flight_ && queued_.empty(); }  // everything is out
  bool in_flight() const { return in_flight_; }
  bool backlogged() const { return pending_bytes() > high_water_; }
  std::size_t pending_bytes() const { return queued_.size() + (current_.size() - sent_); }
  bool failed() const { return failed_; }

 private:
  void flush();

  LoopObject& owner_;
  const unsigned op_;
  const std::size_t high_water_;
  int fd_ = -1;
  std::string queued_;   // not yet handed to the kernel
  std::string current_;  // the buffer the send in flight reads
  std::size_t sent_ = 0;
  bool in_flight_ = false;
  bool failed_ = false;
};

}  // namespace ackxfer
