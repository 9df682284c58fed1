// One sender's control connection: reads pipelined control lines, opens files (READY), checks
// digests and publishes (OK/ERR), creates directories and links, and ends with BYE. A state
// machine on its worker's loop; it never blocks on the network, and every state has a deadline.
//
// Its member functions live in files by concern:
//   control_session.cpp   the connection: reading lines, replies, deadlines, closing
//   session_handshake.cpp TLS, HELLO and feature negotiation
//   session_files.cpp     SEND, DONE, CANCEL: opening, skip checks, resume, publishing, credit
//   session_tree.cpp      MKDIR, LINK, and directory metadata at BYE
//   session_legacy.cpp    recv --legacy: classic SEND/READY clients
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "io/send_queue.h"
#include "io/socket.h"
#include "protocol/control_codec.h"
#include "protocol/limits.h"
#include "receiver/directory_metadata.h"
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
  // Closes a session that has not said HELLO yet, to make room under --max-sessions for a
  // newer one (start()); its place is free from here on.
  void evict();

  // A control connection's TLS: input room for one whole record (16 KiB of plaintext and its
  // overhead), so that a session costs little while it waits. Until the handshake is done,
  // less (a sender's ClientHello is a few hundred bytes; larger messages come in pieces): a
  // connection from anyone that starts a handshake and sits holds 13 KiB less.
  static constexpr std::size_t kTlsInputBytes = 17 * 1024 + 512;
  static constexpr std::size_t kTlsHandshakeInputBytes = 4 * 1024;

  // For tests: what the session holds.
  std::size_t open_file_count() const { return files_.size(); }
  std::size_t open_credit() const { return credit_; }
  std::size_t directories_kept() const { return dirs_.size(); }

 private:
  enum Op : unsigned {
    kRecv = 1,
    kSend = 2,
    kLingerTimer = 3,
    kYield = 4,  // more complete lines wait: process_input() runs next turn
    kFsync = 5,  // a journal checkpoint's fdatasync
    kLegacyQuiet = 6,
    kApplyDirs = 7,  // the next slice of directory metadata (after BYE)
  };
  enum class State {
    kAwaitHello,  // with encryption, the TLS handshake runs in this state too
    kActive,
    kLegacy,     // a classic client's `SEND <name>` (recv --legacy); nothing more is read
    kFinishing,  // BYE came: directory metadata is applied (in slices), then BYE is answered
    kClosing,    // the last reply is going out; gone within kMaxClosingMs
  };

  // A file of this session, by its id, in one of four stages.
  // Work on the work queue for one file (start_job): hashing, reading back.
  struct LocalJob {
    std::atomic<bool> cancelled{false};
    std::atomic<std::uint64_t> done{0};  // bytes so far
    std::uint64_t total = 0;
    std::uint64_t reported = ~std::uint64_t{0};  // loop thread: `done` as last reported
  };
  struct KeptClaims {
    std::vector<JournalEntry> claims;
    // How many of `claims`, in order, the read-back memory vouched for at SEND: good only
    // while the partial stays as it was then (`at_send`), which DONE checks.
    std::size_t trusted = 0;
    std::optional<ReadBackMemory::Key> at_send;
    Digest128 digest;  // claims_digest() of `claims`
  };
  struct SessionFile {
    enum class Stage {
      kChecking,     // skip=xxh3: the existing file is being hashed (work queue)
      kOpen,         // READY went out; its data arrives
      kReadingBack,  // DONE verified it; the kept chunks it resumed with are read back (work
                     // queue) before it is published
      kPublishing,   // verified; being published durably (recv --fsync)
    };
    Stage stage = Stage::kOpen;
    SendRequest request;                 // kChecking
    std::shared_ptr<IncomingFile> file;  // kOpen, kReadingBack, kPublishing
    OpenFileSlot slot;                   // kChecking: the place it holds
    std::shared_ptr<LocalJob> job;       // kChecking, kReadingBack
    // kOpen, kReadingBack: a resumed file's kept chunks, as its journal claimed them at SEND.
    std::shared_ptr<const KeptClaims> kept;
  };

  void on_complete(unsigned op, const Completion& c) override;
  void on_drained() override;

  // ---- the connection (control_session.cpp) ----
  void arm_read();
  void pause_read();
  void resume_read_if_clear();
  // Whether this session may read more: within its own input and reply limits, and not one of
  // the big buffer holders while the receiver's total is over its limit.
  bool may_read() const;
  // Replies the peer has yet to take before it may ask more: queued, or waiting for a flush.
  bool replies_held() const;
  // Keeps ReceiverContext::session_buffers (or, before HELLO, handshake_buffers) up to date
  // with what this session holds.
  void account_buffers();
  void on_bytes(const Completion& c);
  void process_input();
  // Appends received (or decrypted) bytes to in_, within the growth kMaxUnhandledInputBytes
  // allows.
  void append_input(const char* p, std::size_t n);
  void handle_line(std::string_view line);
  void reply(const ServerMessage& m);
  void reply_error(std::optional<std::uint64_t> id, ErrorCode code, std::string message);
  // A SEND, MKDIR or LINK that cannot be done: the ERR reply, counted as failed and logged, so
  // the receiver's side names it too.
  void refuse(std::uint64_t id, ErrorCode code, std::string message);
  void on_sent(int res);
  // Sends what is queued, then closes (within kMaxClosingMs). BYE, fatal errors, shutdown.
  void close_after_flush();
  void linger();
  void close_now();
  void log_end(const std::string& how);
  std::int64_t last_activity() const;

  // ---- handshake (session_handshake.cpp) ----
  // The first bytes of the connection (`first`): TLS where the receiver encrypts, plain text
  // where it does not. Returns false (and refuses the session) on a mismatch.
  bool check_first_bytes(std::uint8_t first);
  // Ciphertext arrived (`n` bytes into tls_->input_space()): moves the handshake on and
  // appends plaintext to in_. Returns false once the session is over.
  bool decrypt_input(std::size_t n);
  void handle(const HelloRequest& m);
  // A session refused before it began (no TLS, or its handshake failed): says so in the
  // receiver's log, counts it, and closes.
  void refuse_auth(const std::string& why);
  bool negotiated(Feature f) const { return features_.has(f); }
  // What protects the data connections: the cipher suite, or "none".
  std::string data_encryption() const;

  // ---- files (session_files.cpp) ----
  void handle(const SendRequest& m);
  void handle(const DoneRequest& m);
  void handle(const CancelRequest& m);
  void handle(const ProgressNote& m);
  // The path of a SEND, MKDIR or LINK under the path rule, or nothing (refused with bad-path).
  std::optional<RelativePath> checked_path(std::uint64_t id, const std::string& path);
  // The directory `path` goes in (cached: trees arrive directory by directory). Replies the
  // error for `id` and returns false if it cannot be opened.
  bool enter_parent(std::uint64_t id, std::string_view path, const RelativePath& rel);
  bool id_open(std::uint64_t id) const { return files_.count(id) > 0; }
  // SEND with skip=...: if the file is already there and identical, replies OK skipped=1 and
  // returns true; with skip=xxh3 the comparison runs on the work queue (kChecking) and the
  // SEND continues in checked().
  bool try_skip(const SendRequest& m, const RelativePath& rel, OpenFileSlot& slot);
  void checked(std::uint64_t id, bool same);
  // File `id` is already there and identical: counted, and OK skipped=1.
  void reply_skipped(std::uint64_t id);
  // SEND, after the checks: creates the temp (or resumable partial) file and replies READY,
  // with have= for the chunks a kept partial's journal claims.
  void open_file(const SendRequest& m, const RelativePath& rel, OpenFileSlot slot);
  // Registers the file and replies READY (with have= for the chunks in `kept`, if any).
  void ready(const SendRequest& m, TempFile temp, OpenFileSlot slot, bool resumable,
             std::shared_ptr<const KeptClaims> kept = nullptr);
  // ---- reading kept chunks back (session_read_back.cpp) ----
  // DONE verified a resumed file: its kept chunks not yet known good are read back on the
  // work queue (kReadingBack), then read_back_finished() publishes it, or has the journal
  // forget the chunks found bad, keeps the partial and answers a retryable mismatch.
  void read_back(std::uint64_t id);
  void read_back_finished(std::uint64_t id, const std::vector<std::uint32_t>& bad, bool synced);
  // A verified file: publish it (inline, or durably on the publisher) and reply its verdict.
  void publish(std::uint64_t id);
  void published(std::uint64_t id, const std::variant<std::monostate, FsError>& r);
  // Local work for file `id` on the work queue; `done(result)` runs on this loop.
  std::shared_ptr<LocalJob> start_job(std::uint64_t id, std::uint64_t total,
                                      std::function<bool(LocalJob&)> slice,
                                      std::function<void(LocalJob&)> done);
  // Once a second: PROGRESS for files whose local work moved, and whether anything moved.
  bool report_local_work();
  // Raises the open-file credit by what the session has delivered; tells the sender (CREDIT).
  void refresh_credit();
  // Forgets files that data streams have published or failed (one-chunk files): each holds its
  // temp file's fd and a place in the receiver's open-file budget until then. Done when the
  // session reaches its credit, when the budget is full, and at the tick after any verdict.
  void sweep_closed_files();
  // The session's files published or failed so far, wherever their verdict was given.
  std::uint64_t verdicts() const {
    return totals_->files.load(std::memory_order_relaxed) +
           totals_->failed.load(std::memory_order_relaxed);
  }
  // `keep`: resumable partials with journaled chunks stay for a later attempt (the session was
  // lost or the receiver is stopping), rather than being removed (BYE, CANCEL).
  void abandon_files(bool keep);
  // MKDIR of an existing directory (`dir`, open on it): held writable while this session may
  // write in it.
  void hold_writable(int dir, const std::string& path);
  // Ended without BYE (or before every directory was applied): lets go of what it held.
  void release_writable_dirs();
  // Journal checkpoints for resumable files: fdatasync each, then record its newly verified
  // chunks (see IncomingFile::take_unjournaled). One fdatasync in flight at a time.
  void run_checkpoints();
  void next_checkpoint();

  // ---- directories and links (session_tree.cpp) ----
  // What fresh_dirs_ keeps of a directory's path (a collision merely costs a skip check).
  static std::uint64_t directory_hash(std::string_view path);
  void handle(const MkdirRequest& m);
  void handle(const LinkRequest& m);
  void handle(const ByeRequest& m);
  void apply_dirs_slice();
  void finish_bye();
  // recv --fsync: reply `m` only once `dir` (and new directories' parents) are flushed.
  void reply_when_durable(std::shared_ptr<const UniqueFd> dir, ServerMessage m);

  // ---- recv --legacy (session_legacy.cpp) ----
  void handle_legacy_send(std::string_view name);
  void legacy_turn();
  // Input that starts like a legacy SEND but has no newline yet: armed to wait for quiet.
  bool looks_like_unterminated_legacy_send() const;

  UniqueFd fd_;
  std::string peer_;
  std::string peer_host_;  // without the port: what legacy data connections are matched by
  State state_ = State::kAwaitHello;
  std::int64_t created_ms_ = 0;
  std::int64_t last_line_ms_ = 0;
  std::int64_t local_activity_ms_ = 0;  // local work for this session last moved
  std::int64_t closing_since_ms_ = 0;
  bool counted_active_ = false;  // counted in ReceiverStats::sessions_active
  // Where it is in its worker's list of sessions awaiting HELLO, while it is in it.
  std::optional<Worker::AwaitingList::iterator> awaiting_pos_;
  void stop_awaiting();
  Features features_;  // agreed in HELLO
  // With encryption (ReceiverContext::tls): the connection's TLS; replies_ encrypts through
  // it, and receives go into its input buffer.
  std::unique_ptr<TlsChannel> tls_;
  bool first_bytes_seen_ = false;
  std::string data_key_identity_;    // registered in ReceiverContext::data_keys while we live
  bool plain_data_ = false;          // the sender's data connections carry file bytes in clear
  std::string encryption_ = "none";  // what protected the session, for its log lines
  // recv --legacy: our file until its READY went out (then LegacyUploads holds it alone).
  std::shared_ptr<LegacyUpload> legacy_;

  // Bytes received and not yet handled: unprocessed lines and an incomplete last line. Empty
  // (and without capacity) while the session is idle: receive buffers come from the worker's
  // shared pool, so an idle session costs no buffer memory.
  std::string in_;
  std::size_t in_start_ = 0;  // handled bytes at the front of in_
  bool recv_armed_ = false;   // the multishot receive is running
  bool read_paused_ = false;  // stopped for backpressure; resumed by resume_read_if_clear()
  bool processing_ = false;   // inside process_input(): replies must not re-enter it
  bool yield_armed_ = false;  // more complete lines wait; process_input() runs next turn
  SendQueue replies_;
  bool close_when_flushed_ = false;
  std::size_t accounted_ = 0;            // this session's share of ReceiverContext::session_buffers
  std::size_t accounted_handshake_ = 0;  // or of ReceiverContext::handshake_buffers
  bool said_hello_ = false;              // its HELLO was accepted: counted in session_buffers
  std::size_t buffered_ = 0;  // of which input and replies (what kSessionBufferFloor limits)

  std::unordered_map<std::uint64_t, SessionFile> files_;
  std::size_t credit_ = kInitialOpenFiles;  // files that may be open at once
  std::size_t credit_announced_ = kInitialOpenFiles;
  std::uint64_t skipped_ = 0;         // files found already there (they earn credit too)
  std::uint64_t verdicts_swept_ = 0;  // the session's verdicts (totals_) at the last sweep
  DirectoryMetadata dirs_;
  std::vector<DirectoryMetadata::Entry> dirs_to_apply_;  // after BYE, deepest first
  std::size_t dirs_applied_ = 0;
  std::unordered_set<std::uint64_t> fresh_dirs_;  // hashes of directories this session created
  // What dirs_ and fresh_dirs_ took of ReceiverContext::dir_metadata_bytes (given back at the
  // end).
  std::size_t dir_budget_taken_ = 0;
  std::size_t durable_replies_ = 0;  // reply_when_durable()'s, not yet answered

  // The parent directory of the last file: trees arrive directory by directory, so one entry
  // saves an openat2 per file. Resolved again after kDirCacheMs: a directory renamed out of
  // --dir, or removed, meanwhile is not written into for longer than that.
  static constexpr std::int64_t kDirCacheMs = 1'000;
  std::string cached_dir_key_;
  std::shared_ptr<const UniqueFd> cached_dir_;
  std::int64_t cached_dir_ms_ = 0;

  // Shared with the session's files: one-chunk files are published by data streams.
  std::shared_ptr<SessionTotals> totals_ = std::make_shared<SessionTotals>();
  // Results of work queue jobs and the publisher are posted back to this loop; they check
  // `alive_` to learn whether the session still exists.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  struct Checkpoint {
    std::shared_ptr<IncomingFile> file;
    std::vector<JournalEntry> entries;
  };
  std::deque<Checkpoint> checkpoints_;
  bool fsync_armed_ = false;
};

}  // namespace ackxfer
