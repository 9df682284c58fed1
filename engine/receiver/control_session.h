// One sender's control connection: reads pipelined control lines, opens files (READY), checks
// digests and publishes (OK/ERR), creates directories, and ends with BYE. A state machine on its
// worker's loop; it never blocks on the network.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/socket.h"
#include "protocol/control_codec.h"
#include "receiver/incoming_file.h"
#include "receiver/worker.h"

namespace ackxfer {

class ControlSession final : public WorkerObject {
 public:
  ControlSession(Worker& worker, UniqueFd fd);
  ~ControlSession() override;
  void start() override;
  void shutdown() override;
  void tick(std::int64_t now_ms) override;

 private:
  enum Op : unsigned { kRecv = 1, kSend = 2, kLingerTimer = 3, kYield = 4 };
  enum class State { kAwaitHello, kActive, kClosing };

  void on_complete(unsigned op, int res, unsigned flags) override;
  void on_drained() override;

  void arm_read();
  void pause_read();
  void on_bytes(int res, unsigned flags);
  void process_input();
  void handle_line(std::string_view line);
  void handle(const HelloRequest& m);
  void handle(const SendRequest& m);
  void handle(const MkdirRequest& m);
  void handle(const DoneRequest& m);
  void handle(const CancelRequest& m);
  void handle(const ByeRequest& m);

  void reply(const ServerMessage& m);
  void reply_error(std::optional<std::uint64_t> id, ErrorCode code, std::string message);
  void flush();
  // Sends what is queued, then closes. Used for BYE, fatal protocol errors and shutdown.
  void close_after_flush();
  void close_now();
  void abandon_open_files();
  // Forgets files that data streams have already published (one-chunk files).
  void sweep_closed_files();

  Worker& worker_;
  UniqueFd fd_;
  std::string peer_;
  State state_ = State::kAwaitHello;
  std::int64_t created_ms_ = 0;
  std::int64_t last_line_ms_ = 0;
  bool counted_active_ = false;  // counted in ReceiverStats::sessions_active

  // Bytes received and not yet handled: unprocessed lines and an incomplete last line. Empty
  // (and without capacity) while the session is idle: receive buffers come from the worker's
  // shared ring, so an idle session costs no buffer memory.
  std::string in_;
  std::size_t in_start_ = 0;  // handled bytes at the front of in_
  bool recv_armed_ = false;   // the multishot receive is running
  bool read_paused_ = false;  // stopped for backpressure; re-armed by process_input()
  bool processing_ = false;   // inside process_input(): replies must not re-enter it
  bool yield_armed_ = false;  // more complete lines wait; process_input() runs next turn

  std::string out_queued_;    // replies not yet handed to the kernel
  std::string out_inflight_;  // the buffer the current send op reads
  std::size_t out_sent_ = 0;
  bool send_armed_ = false;
  bool close_when_flushed_ = false;

  std::unordered_map<std::uint64_t, std::shared_ptr<IncomingFile>> open_files_;
  struct DirMeta {
    std::string path;
    std::uint32_t mode;
    Mtime mtime;
  };
  std::vector<DirMeta> dirs_;  // applied at BYE, deepest first

  // The parent directory of the last file: trees arrive directory by directory, so one entry
  // saves an openat2 per file.
  std::string cached_dir_key_;
  std::shared_ptr<const UniqueFd> cached_dir_;

  // Shared with the session's files: one-chunk files are published by data streams.
  std::shared_ptr<SessionTotals> totals_ = std::make_shared<SessionTotals>();
};

}  // namespace ackxfer
