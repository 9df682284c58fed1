// One sender's control connection: reads pipelined control lines, opens files (READY), checks
// digests and publishes (OK/ERR), creates directories, and ends with BYE. A state machine on its
// worker's loop; it never blocks on the network.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "io/socket.h"
#include "protocol/control_codec.h"
#include "receiver/incoming_file.h"
#include "receiver/legacy_uploads.h"
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
  enum Op : unsigned {
    kRecv = 1,
    kSend = 2,
    kLingerTimer = 3,
    kYield = 4,
    kFsync = 5,
    kLegacyQuiet = 6
  };
  // kAwaitAuth: HELLO came and the receiver has a secret; the sender must answer AUTH.
  // kLegacy: a classic client's `SEND <name>` (recv --legacy); nothing more is read.
  enum class State { kAwaitHello, kAwaitAuth, kActive, kLegacy, kClosing };

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
  void handle(const LinkRequest& m);
  void handle(const DoneRequest& m);
  void handle(const CancelRequest& m);
  void handle(const ByeRequest& m);
  void handle(const AuthRequest& m);
  // recv --legacy: `SEND <name>` from a classic client (receiver/legacy_uploads.h). Opens the
  // temp file, then answers READY when it is this client address's turn.
  void handle_legacy_send(std::string_view name);
  void legacy_turn();
  // Input that starts like a legacy SEND but has no newline yet: armed to wait for quiet.
  bool looks_like_unterminated_legacy_send() const;
  // Authenticated (or no secret): the session starts; HELLO carries our proof, if any.
  void accept_session(std::optional<Proof> proof);
  // No or wrong secret: says so, counts it, logs it, and closes.
  void refuse_auth(ErrorCode code, const std::string& why);
  // SEND, after the checks: creates the temp (or resumable partial) file and replies READY.
  void open_file(const SendRequest& m, const RelativePath& rel);
  // The directory `path` goes in (cached: trees arrive directory by directory). Replies the
  // error for `id` and returns false if it cannot be opened.
  bool enter_parent(std::uint64_t id, std::string_view path, const RelativePath& rel);
  // A SEND, or a check or resume for one, holds this id.
  bool id_open(std::uint64_t id) const;
  // SEND with skip=...: if the file is already there and identical, replies OK skipped=1 and
  // returns true; with skip=xxh3 the comparison runs on the blocking pool and the SEND
  // continues in checked().
  bool try_skip(const SendRequest& m, const RelativePath& rel);
  void checked(std::uint64_t id, bool same);
  // A kept partial's journaled chunks were read back: `good` still match, `bad` did not.
  void resume_checked(std::uint64_t id, const std::vector<JournalEntry>& good, std::size_t bad);
  // Registers the file and replies READY (with have= for chunks already verified).
  void ready_partial(const SendRequest& m, TempFile temp, const std::vector<JournalEntry>& have,
                     bool resumable);
  // Journal checkpoints for resumable files: fdatasync each, then record its newly verified
  // chunks (see IncomingFile::take_unjournaled). One fdatasync in flight at a time.
  void run_checkpoints();
  void next_checkpoint();

  void reply(const ServerMessage& m);
  void reply_error(std::optional<std::uint64_t> id, ErrorCode code, std::string message);
  // A SEND, MKDIR or LINK that cannot be done: the ERR reply, counted as failed and logged, so
  // the receiver's side names it too.
  void refuse(std::uint64_t id, ErrorCode code, std::string message);
  // The path of a SEND, MKDIR or LINK under the path rule, or nothing (refused with bad-path).
  // Its components view `path`.
  std::optional<RelativePath> checked_path(std::uint64_t id, const std::string& path);
  void flush();
  // Sends what is queued, then closes. Used for BYE, fatal protocol errors and shutdown.
  void close_after_flush();
  void close_now();
  // `keep`: resumable partials with journaled chunks stay for a later attempt (the session was
  // lost or the receiver is stopping), rather than being removed (BYE, CANCEL).
  void abandon_open_files(bool keep);
  // Forgets files that data streams have already published (one-chunk files).
  void sweep_closed_files();

  Worker& worker_;
  UniqueFd fd_;
  std::string peer_;
  std::string peer_host_;  // without the port: what legacy data connections are matched by
  State state_ = State::kAwaitHello;
  std::int64_t created_ms_ = 0;
  std::int64_t last_line_ms_ = 0;
  bool counted_active_ = false;  // counted in ReceiverStats::sessions_active
  // The authentication exchange (kAwaitAuth): the sender's nonce and ours.
  Nonce sender_nonce_, receiver_nonce_;
  // recv --legacy: our file until its READY went out (then LegacyUploads holds it alone).
  std::shared_ptr<LegacyUpload> legacy_;
  bool legacy_quiet_armed_ = false;

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
  std::vector<DirMeta> dirs_;                     // applied at BYE, deepest first
  std::unordered_set<std::uint64_t> fresh_dirs_;  // hashes of directories this session created

  // The parent directory of the last file: trees arrive directory by directory, so one entry
  // saves an openat2 per file.
  std::string cached_dir_key_;
  std::shared_ptr<const UniqueFd> cached_dir_;

  // Shared with the session's files: one-chunk files are published by data streams.
  std::shared_ptr<SessionTotals> totals_ = std::make_shared<SessionTotals>();

  // SENDs whose skip=xxh3 comparison runs on the blocking pool. Its result is posted back to
  // this loop; `alive_` tells it whether the session still exists.
  std::unordered_map<std::uint64_t, SendRequest> pending_checks_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  // SENDs resuming a kept partial whose journaled chunks are being read back (resume_checked).
  struct PendingResume {
    SendRequest request;
    TempFile temp;
  };
  std::unordered_map<std::uint64_t, PendingResume> pending_resumes_;

  struct Checkpoint {
    std::shared_ptr<IncomingFile> file;
    std::vector<JournalEntry> entries;
  };
  std::deque<Checkpoint> checkpoints_;
  bool fsync_armed_ = false;
};

}  // namespace ackxfer
