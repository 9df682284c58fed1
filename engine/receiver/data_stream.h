// One data connection on the receiver: parses frames, writes each payload into its file's temp
// file while hashing it, checks the frame digest and acks every frame. Frames of any file of
// any session may arrive on any data connection; the token says which file.
#pragma once

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

 private:
  enum Op : unsigned { kRecv = 1, kSend = 2 };
  enum class Phase { kHeader, kPayload, kTrailer };

  void on_complete(unsigned op, int res, unsigned flags) override;
  void on_drained() override;

  void arm_read();
  void process();
  void process_frames();
  bool begin_frame(const std::uint8_t* header);
  void consume_payload(const std::uint8_t* data, std::size_t n);
  void end_frame(const std::uint8_t* trailer);
  void ack(AckStatus status, int err = 0);
  void flush_acks();
  void fail(const std::string& why);  // protocol violation: ack it, then close
  void release_claim();

  Worker& worker_;
  UniqueFd fd_;
  std::string peer_;

  std::vector<std::uint8_t> buf_;
  std::size_t begin_ = 0, end_ = 0;  // unread bytes are buf_[begin_, end_)
  bool recv_armed_ = false;
  bool processing_ = false;  // inside process(): the buffer must not move

  Phase phase_ = Phase::kHeader;
  FrameHeader header_;
  std::shared_ptr<IncomingFile> file_;  // the file of the current frame, if claimed
  std::uint32_t chunk_index_ = 0;
  std::uint64_t remaining_ = 0;              // payload bytes still to come
  AckStatus frame_status_ = AckStatus::kOk;  // kOk while the payload is being written
  int write_errno_ = 0;
  StreamingDigest digest_;

  std::string acks_queued_, acks_inflight_;
  std::size_t acks_sent_ = 0;
  bool send_armed_ = false;
  bool close_after_acks_ = false;
};

}  // namespace ackxfer
