// One data connection on the receiver: parses frames, writes each payload into its file's temp
// file while hashing it, checks the frame digest and acks every frame, in frame order. Frames
// of any file of any session may arrive on any data connection; the token says which file.
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "digest/digest.h"
#include "io/send_queue.h"
#include "io/splice_pipe.h"
#include "protocol/data_frame.h"
#include "receiver/incoming_file.h"
#include "receiver/legacy_uploads.h"
#include "receiver/worker.h"

namespace ackxfer {

class DataStream final : public WorkerObject {
 public:
  DataStream(Worker& worker, UniqueFd fd);
  ~DataStream() override;
  void start() override;
  void shutdown() override;
  void tick(std::int64_t now_ms) override;
  // Closes this connection to make room for a newer one (Worker::adopt_data_connection): one
  // that has proven nothing, or at the limit in all, the quietest. It no longer counts, as
  // unproven or at all, from here on.
  void evict();
  std::int64_t last_bytes_ms() const { return last_bytes_ms_; }
  bool owes_acks() const { return unsent_ack_bytes() > 0; }

 private:
  enum Op : unsigned { kRecv = 1, kSend = 2, kRecvExact = 3, kSpliceIn = 4, kSpliceOut = 5 };
  enum class Phase { kHeader, kPayload, kTrailer };

  void on_complete(unsigned op, const Completion& c) override;
  void on_drained() override;

  void arm_read();
  void pause_read();
  // Acks queued or waiting their turn (a durable publish) that the peer has not taken yet.
  std::size_t unsent_ack_bytes() const {
    return acks_out_.pending_bytes() + acks_.size() * kFrameAckBytes;
  }
  bool ack_backlog() const { return unsent_ack_bytes() > kMaxPendingAckBytes; }
  void on_bytes(const Completion& c);
  // With TLS: the connection's first bytes (in tls_'s input) decide whether it is TLS, or
  // frames in clear (recv --allow-unencrypted). False if the connection was refused.
  bool check_first_bytes(std::size_t n);
  // With TLS: `n` bytes of ciphertext arrived; decrypts them into the worker's plaintext
  // buffer and consumes that.
  void decrypt(std::size_t n);
  // Once the handshake is done and a frame proved the connection: a full-size ciphertext
  // buffer, within the receiver's budget (ReceiverContext::max_tls_data_buffers).
  void size_tls_buffers();
  void ended(int res);
  // Runs the frame state machine over received bytes; returns false once the stream must
  // stop (protocol error: close after the acks).
  bool consume(const std::uint8_t* p, std::size_t n);
  bool begin_frame(const std::uint8_t* header);
  void consume_payload(const std::uint8_t* data, std::size_t n);
  void end_frame(const std::uint8_t* trailer);
  // A one-chunk file whose frame verified: publish it and complete its ack `seq` (at once, or
  // when the durable publisher is done).
  void publish_single(std::size_t seq);
  // Acks leave in frame order; a one-chunk file's ack may wait (`ready` false) for a durable
  // publish, and the acks behind it wait with it. Returns the ack's sequence number.
  std::size_t ack(AckStatus status, int err = 0, bool ready = true);
  void complete_ack(std::size_t seq, AckStatus status, int err);
  void flush_acks();
  void on_acks_sent(int res);
  void fail(const std::string& why);  // protocol violation: ack it, then close
  // The first bytes of an unproven connection in clear are a control line (`HELLO ...`): a
  // sender given this port instead of the control port. Returns true if so, after telling it
  // in a line it can read and closing; it would otherwise wait for an answer until its
  // deadline, and then report the receiver as not responding.
  bool answered_as_wrong_port(const std::uint8_t* p, std::size_t n);
  void proven();  // a frame named an open file: no longer counted unproven
  void uncount_unproven();
  void uncount();  // no longer counted among the receiver's data connections
  void heard();    // bytes arrived: last_bytes_ms_, and its place in the worker's proven list
  // Reads no more; closes once the acks queued so far are out, or after kMaxClosingMs.
  void close_after_acks();
  // The frame's file closed under it: lets go of the file, the rest of the frame is dropped.
  void drop_closed_file();
  // recv --legacy (receiver/legacy_uploads.h). A connection from an address with a legacy file
  // waiting whose first bytes are not the frame magic carries that file: raw bytes to EOF.
  // Returns true when `first` (the connection's first `n` bytes, n <= 4) makes it one.
  bool try_legacy(const std::uint8_t* first, std::size_t n);
  void legacy_write(const std::uint8_t* p, std::size_t n);
  // EOF: publish what arrived (there is nothing to verify it against); an error: drop it.
  void finish_legacy(bool clean_eof, const std::string& why);
  // The connection ended (`res` 0 or -errno): true if it carried a legacy file, now finished.
  bool legacy_ended(int res);
  void release_claim();
  // Splice receive path (RecvPath::kSplice): exact-size reads for headers, trailers and small
  // payloads, socket -> pipe -> file for large ones.
  void arm_read_exact();
  void splice_to_file();  // moves pipe_pending_ bytes into the file (kSpliceOut)
  // Makes the splice pipe on first use; false if the kernel refuses a usable one (then this
  // connection copies through scratch_).
  bool want_pipe();
  void spliced_out(std::size_t n);
  // The file would not take the pipe's bytes (`err`: ENOSPC, EIO): the rest of the frame is
  // read and dropped, and its ack says why, as when a pwrite fails.
  void splice_out_failed(int err);

  UniqueFd fd_;
  std::string peer_;
  const std::uint64_t id_;  // names this connection's claims
  bool proven_ = false;
  // Where it is in its worker's list of unproven connections, while it is counted as one.
  std::optional<Worker::UnprovenList::iterator> unproven_pos_;
  // Where it is in its worker's list of proven connections, while it is in it.
  std::optional<Worker::ProvenList::iterator> proven_pos_;
  bool counted_ = true;  // in ReceiverContext::data_connections (Worker::adopt_data_connection)

  // Receive buffers come from the worker's shared pool; only a header or trailer split across
  // two of them is staged here.
  std::array<std::uint8_t, kFrameHeaderBytes> staged_{};
  std::size_t staged_len_ = 0;
  bool recv_armed_ = false;   // the multishot receive is running
  bool read_paused_ = false;  // stopped while acks wait for a sender that does not read them

  std::int64_t created_ms_ = 0;
  std::int64_t last_bytes_ms_ = 0;
  bool framed_ = false;  // at least one frame header arrived
  Phase phase_ = Phase::kHeader;
  FrameHeader header_;
  std::shared_ptr<IncomingFile> file_;  // the file of the current frame, if claimed
  IncomingFile::Claim claim_;
  std::uint64_t remaining_ = 0;              // payload bytes still to come
  AckStatus frame_status_ = AckStatus::kOk;  // kOk while the payload is being written
  int write_errno_ = 0;
  StreamingDigest digest_;

  // recv --legacy: undecided until the first 4 bytes (or EOF) say whether this is framing.
  bool legacy_undecided_ = false;
  std::shared_ptr<LegacyUpload> legacy_;
  std::uint64_t legacy_bytes_ = 0;

  // With encryption: the connection's TLS (acks_out_ encrypts through it; receives go into its
  // input; records are decrypted into the worker's buffer: Worker::take_tls_plain).
  std::unique_ptr<TlsChannel> tls_;
  std::size_t tls_buffers_granted_ = 0;  // this one's share of ReceiverContext::tls_data_buffers
  bool tls_sized_ = false;               // buffers have their final size
  bool first_bytes_seen_ = false;

  // Splice path only.
  bool splice_ = false;
  std::vector<std::uint8_t> scratch_;  // exact reads, and reading spliced bytes back to hash
  SplicePipe pipe_;
  unsigned pipe_pending_ = 0;  // spliced in from the socket, not yet out to the file
  bool splicing_ = false;      // this frame's payload goes by splice
  bool writing_ = false;       // a splice into file_ is in flight (begin_write was called)

  struct PendingAck {
    FrameAck ack;
    bool ready = false;
  };
  std::deque<PendingAck> acks_;  // not yet handed to acks_out_, in frame order
  std::size_t acks_front_seq_ = 0;
  SendQueue acks_out_;
  bool close_after_acks_ = false;  // set by close_after_acks()
  std::int64_t close_decided_ms_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace ackxfer
