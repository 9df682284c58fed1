// One data connection of the sender: takes chunks from the scheduler, sends each as a frame
// (header, payload hashed on the way, digest trailer), and matches the receiver's acks to the
// frames in flight. Reconnects with backoff when the connection fails, handing its unacked
// chunks back to the scheduler first. A chunk the receiver calls busy waits here, backing off,
// before it is offered again.
#pragma once

#include <deque>
#include <optional>
#include <vector>

#include "digest/digest.h"
#include "fs/file_digest.h"
#include "fs/mapped_range.h"
#include "io/loop.h"
#include "io/socket.h"
#include "io/splice_pipe.h"
#include "protocol/data_frame.h"
#include "sender/backoff.h"
#include "sender/chunk_scheduler.h"
#include "sender/sender_context.h"
#include "tls/tls_channel.h"
#include "unique_fd.h"

namespace ackxfer {

class OutboundStream final : public LoopObject, public ChunkWaiter {
 public:
  OutboundStream(SenderContext& ctx, unsigned loop_index, unsigned stream_index);
  ~OutboundStream() override;

  // Loop thread: connect to `target` (the receiver's data port) and start pulling chunks.
  // `tls`: the session's data-connection context (ControlClient), or null for data in clear.
  void start(const Endpoint& target, std::shared_ptr<TlsContext> tls);
  // Loop thread: the control session was re-established (the receiver may have restarted on
  // another data port): connect there, now, with a fresh retry budget.
  void retarget(const Endpoint& target, std::shared_ptr<TlsContext> tls);
  // Loop thread: the transfer is over; close now.
  void finish();
  // Any thread.
  void wake() override;

  unsigned loop_index() const { return loop_index_; }

 private:
  // One send's worth of frames. 1 MiB: on the AMD host of 2026-12-02 a 2 GiB file moved in
  // 1 MiB reads and sends took half the wall time of 256 KiB ones (the size ../shared/DESIGN.md
  // had measured best on an Intel host), for the engine and for tools/least_work.cpp alike
  // (docs/PERFORMANCE.md, "Cycles per byte").
  static constexpr std::size_t kSendBufferBytes = 1024 * 1024;
  // With TLS, the input side of a data connection only ever holds acks: room for one whole
  // record is enough.
  static constexpr std::size_t kAckTlsBufferBytes = 17 * 1024 + 512;

  enum Op : unsigned {
    kConnect = 1,
    kSend = 2,        // from out_
    kRecv = 3,        // acks
    kTimer = 4,       // reconnect backoff
    kSpliceIn = 5,    // file -> pipe
    kSpliceOut = 6,   // pipe -> socket
    kSendMapped = 7,  // from the mapping of the current chunk
  };
  // Busy chunks and local hashing share the nop/timer tag 0 (see on_complete).
  static constexpr unsigned kLater = 0;
  enum class State { kIdle, kConnecting, kRunning, kDraining, kBackoff, kFinished };

  struct SentFrame {
    ChunkJob job;
    Digest128 digest;
  };

  void on_complete(unsigned op, const Completion& c) override;
  void on_drained() override;

  void connect();
  void connected();
  void connection_failed(const std::string& why, bool retryable);
  void after_drain();
  void pump();
  bool fill();
  void start_window();
  // Makes the splice pipe on first use; false if the kernel refuses a usable one (then this
  // stream sends from the mapping).
  bool want_pipe();
  void window_sent(std::uint64_t n);
  // Sends out_ from out_sent_ (through TLS, when the connection has it).
  void send_out(bool more);
  // With TLS: sends what the channel has to say (handshake, key updates) when nothing else is
  // being sent. Returns true if a send was armed.
  bool send_tls_output();
  void arm_ack_read();
  // `n` bytes arrived where arm_ack_read() put them.
  void on_ack_bytes(std::size_t n);
  // Decodes the whole acks in ack_buf_. False once the connection failed.
  bool take_acks();
  void handle_ack(const FrameAck& ack);
  // The scheduler's verdict on `job` from the receiver's answer.
  void resolve(ChunkJob job, const Digest128& digest, const FrameAck& ack);
  void abort_current(const std::string& why);
  // A chunk the receiver called busy: offered again after a delay that doubles each time,
  // for at most the idle timeout.
  void busy(ChunkJob job);
  // The timer of busy chunks, and the slices of local hashing.
  void later();
  void arm_later();
  // A chunk the receiver already holds: hash it from the source (for the file digest in
  // DONE) instead of sending it, a slice per turn of the loop.
  void hash_local_slice();

  SenderContext& ctx_;
  const unsigned loop_index_;
  const unsigned stream_index_;
  State state_ = State::kIdle;
  UniqueFd fd_;
  Backoff backoff_;
  Endpoint target_;
  std::string last_error_;
  bool retryable_ = true;  // whether the last failure may be retried
  // Reconnecting failed for --retry-for and the control client was told; the stream keeps
  // trying (slowly) until the control client finishes or retargets it.
  bool gave_up_ = false;

  // Outgoing bytes: headers, copied payload, trailers.
  std::vector<std::uint8_t> out_;
  std::size_t out_len_ = 0, out_sent_ = 0;
  bool send_armed_ = false;

  // The chunk being put on the wire.
  std::optional<ChunkJob> cur_;
  std::uint64_t cur_pos_ = 0;  // payload bytes of cur_ read into out_ or sent from the mapping
  StreamingDigest digest_;
  // A large chunk on the mmap or splice path: its payload goes from `map_` (or the file
  // through the pipe) one window at a time, after out_ (holding its header) has been sent.
  bool cur_streamed_ = false;
  bool window_armed_ = false;
  std::uint64_t window_left_ = 0;  // bytes of the current window not yet on the socket
  MappedRange map_;

  // Splice path.
  SplicePipe pipe_;
  bool window_by_splice_ = false;     // the current window goes file -> pipe -> socket
  std::uint64_t splice_in_left_ = 0;  // window bytes not yet moved into the pipe
  unsigned pipe_pending_ = 0;         // bytes in the pipe not yet moved to the socket

  std::deque<SentFrame> unacked_;
  std::uint64_t unacked_bytes_ = 0;

  std::vector<std::uint8_t> ack_buf_;
  std::size_t ack_len_ = 0;
  bool recv_armed_ = false;

  // With encryption (and not --no-encryption): this connection's TLS. Frames are encrypted
  // from out_ (the copy path: see Sender::run); acks are decrypted into ack_buf_.
  std::shared_ptr<TlsContext> tls_ctx_;  // this session's data key, or null
  std::unique_ptr<TlsChannel> tls_;
  std::size_t tls_taken_ = 0;  // bytes of out_ the send in flight carries, encrypted

  // Busy chunks waiting for their next try (due time on the loop clock), and the local-only
  // chunk being hashed.
  std::deque<std::pair<std::int64_t, ChunkJob>> busy_;
  std::optional<ChunkJob> local_;
  std::optional<RangeHasher> local_hasher_;
  bool later_armed_ = false;
};

}  // namespace ackxfer
