// One data connection on the receiver: parses frames, writes each payload into its file's temp
// file while hashing it, checks the frame digest and acks every frame. Frames of any file of
// any session may arrive on any data connection; the token says which file.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "digest/digest.h"
#include "protocol/data_frame.h"
#include "receiver/incoming_file.h"
#include "receiver/worker.h"

namespace ackxfer {

class DataStream final : public WorkerObject {
 public:
  DataStream(Worker& worker, UniqueFd fd);
  ~DataStream() override;
  void start() override;
  void shutdown() override;
  void tick(std::int64_t now_ms) override;

 private:
  enum Op : unsigned { kRecv = 1, kSend = 2, kRecvExact = 3, kSpliceIn = 4, kSpliceOut = 5 };
  enum class Phase { kHeader, kPayload, kTrailer };

  void on_complete(unsigned op, int res, unsigned flags) override;
  void on_drained() override;

  void arm_read();
  void pause_read();
  void on_bytes(int res, unsigned flags);
  // Runs the frame state machine over received bytes; returns false once the stream must
  // stop (protocol error: close after the acks).
  bool consume(const std::uint8_t* p, std::size_t n);
  bool begin_frame(const std::uint8_t* header);
  void consume_payload(const std::uint8_t* data, std::size_t n);
  void end_frame(const std::uint8_t* trailer);
  void ack(AckStatus status, int err = 0);
  void flush_acks();
  void fail(const std::string& why);  // protocol violation: ack it, then close
  void release_claim();
  // Splice receive path (RecvPath::kSplice): exact-size reads for headers, trailers and small
  // payloads, socket -> pipe -> file for large ones.
  void arm_read_exact();
  void splice_to_file();  // moves pipe_pending_ bytes into the file (kSpliceOut)
  // The file a splice in flight writes into (IncomingFile::begin_write was called for it).
  std::shared_ptr<IncomingFile> writing_;
  void spliced_out(std::size_t n);

  Worker& worker_;
  UniqueFd fd_;
  std::string peer_;

  // Receive buffers come from the worker's shared ring (io/buffer_ring.h); only a header or
  // trailer split across two of them is staged here.
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
  std::uint32_t chunk_index_ = 0;
  std::uint64_t remaining_ = 0;              // payload bytes still to come
  AckStatus frame_status_ = AckStatus::kOk;  // kOk while the payload is being written
  int write_errno_ = 0;
  StreamingDigest digest_;

  // Splice path only.
  bool splice_ = false;
  std::vector<std::uint8_t> scratch_;  // exact reads, and reading spliced bytes back to hash
  UniqueFd pipe_r_, pipe_w_;
  unsigned pipe_bytes_ = 0;
  unsigned pipe_pending_ = 0;  // spliced in from the socket, not yet out to the file
  bool splicing_ = false;      // this frame's payload goes by splice

  std::string acks_queued_, acks_inflight_;
  std::size_t acks_sent_ = 0;
  bool send_armed_ = false;
  bool close_after_acks_ = false;
};

}  // namespace ackxfer
