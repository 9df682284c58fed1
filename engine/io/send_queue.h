// The outgoing side of one connection: bytes queued by its owner, one send in flight at a time,
// short sends continued, and a high-water mark that tells the owner to stop reading a peer that
// does not read what it is sent. One owner each: the receiver's control replies and data acks,
// the sender's control lines. With a TlsChannel set, what is queued is plaintext: it is
// encrypted as the channel's output has room, and what goes out is the channel's output
// (which also carries the handshake and alerts: flush() after the channel made progress).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "io/loop.h"

namespace ackxfer {

class TlsChannel;

class SendQueue {
 public:
  // Sends go out as `owner`'s op `op`; the owner routes that op's completions to on_sent().
  // Above `high_water` queued bytes, backlogged() is true.
  SendQueue(LoopObject& owner, unsigned op, std::size_t high_water)
      : owner_(owner), op_(op), high_water_(high_water) {}

  void set_fd(int fd) { fd_ = fd; }
  // Encrypts through `tls` from now on (nullptr: plain again). Only while nothing is queued
  // or in flight.
  void set_tls(TlsChannel* tls) { tls_ = tls; }
  // Sends what is queued, and the channel's output (handshake messages, alerts, key updates).
  void flush();
  // Queues `bytes` and starts sending if nothing is in flight.
  void write(std::string_view bytes);
  // With a TlsChannel: close_notify after everything queued so far (OpenSSL writes nothing
  // after it, so a reply queued behind a send in flight was lost). The queue is not idle() until
  // it is out.
  void close_tls();
  // The result of the send op. Returns true while the connection is usable (false: it failed,
  // and nothing more will be sent).
  bool on_sent(int res);
  // Forgets everything (a new connection follows). Only when no send is in flight.
  void reset();

  bool idle() const;  // everything is out
  bool in_flight() const { return in_flight_; }
  bool backlogged() const { return pending_bytes() > high_water_; }
  std::size_t pending_bytes() const;
  bool failed() const { return failed_; }

 private:
  void flush_tls();

  LoopObject& owner_;
  const unsigned op_;
  const std::size_t high_water_;
  int fd_ = -1;
  TlsChannel* tls_ = nullptr;
  std::string queued_;   // not yet handed to the kernel
  std::string current_;  // the buffer the send in flight reads
  std::size_t sent_ = 0;
  bool in_flight_ = false;
  bool failed_ = false;
  bool closing_tls_ = false;  // close_tls(): close_notify still to be written
};

}  // namespace ackxfer
