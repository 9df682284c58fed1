// The sender's control session: connects with retry, says HELLO, pipelines SEND/MKDIR/LINK for
// the walked tree within a window, hands READY files to the chunk scheduler, sends DONE with the
// file digest once every chunk is acknowledged, re-sends files the receiver rejected, and ends
// with BYE. Runs on sender loop 0. Every phase has a deadline: connecting, HELLO, and any wait
// for the receiver while it owes us an answer.
//
// Its member functions live in files by concern:
//   control_client.cpp   the connection: lines in and out, deadlines, the end of the session
//   client_connect.cpp   connecting, retries and backoff, TLS and HELLO, losing and
//                        re-establishing
//   client_window.cpp    the window: walking, opening, hashing (--checksum), SEND/MKDIR/LINK
//   client_verdicts.cpp  READY, OK, ERR, CREDIT, PROGRESS; retries and failures of files
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "io/loop.h"
#include "io/send_queue.h"
#include "protocol/control_codec.h"
#include "protocol/limits.h"
#include "sender/backoff.h"
#include "sender/outgoing_file.h"
#include "sender/sender_context.h"
#include "sender/tree_walker.h"

namespace ackxfer {

class ControlClient final : public LoopObject {
 public:
  ControlClient(SenderContext& ctx, EntrySource& walker, SendReport& report);
  ~ControlClient() override;

  void start();
  // Posted to loop 0 by streams and the scheduler.
  void stream_gave_up(const std::string& why);
  void stream_recovered();
  void file_chunks_done(const std::shared_ptr<OutgoingFile>& f);
  void file_failed(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                   bool retryable);
  void cancel();

  std::uint64_t file_resends() const { return file_resends_; }
  // For tests.
  std::size_t window() const { return window_files_; }
  bool done() const { return state_ == State::kDone; }

 private:
  enum Op : unsigned { kConnect = 1, kSend = 2, kRecv = 3, kTimer = 4, kTick = 5 };
  enum class State { kConnecting, kBackoff, kHello, kActive, kBye, kDone };

  void on_complete(unsigned op, const Completion& c) override;
  void on_drained() override;

  // ---- the connection (control_client.cpp) ----
  void process_input();
  void handle(const ServerMessage& m);
  void send_line(const ClientMessage& m);
  // Once a second: deadlines, and PROGRESS for local work.
  void tick();
  // Something now waits for the receiver: its deadline starts now if nothing did before.
  void expect_reply();
  bool owed_reply() const;
  void heard_from_receiver();
  // Ends the session: fails what is still open with `why` (if any) and closes everything.
  void finish_session(SendReport::Outcome outcome, const std::string& why);
  // --log-level debug: a timeline of the session, to see where time goes.
  void milestone(const char* what);

  // ---- connecting (client_connect.cpp) ----
  void connect();
  // A connection attempt failed (or was refused at HELLO, with `detail` saying why): retry
  // with backoff, or give up once --retry-for has passed.
  void connect_failed(int err, const std::string& detail = {});
  // The established session broke (connection lost, receiver shutting down, timed out).
  // Within --retry-for, reconnect and send again what had no verdict yet (the receiver resumes
  // it from what it kept); otherwise end the transfer as interrupted (or timed out).
  void session_lost(const std::string& why);
  // Closes the current control connection (its cancelled ops are ignored) and clears buffers.
  void drop_connection();
  void on_hello(const HelloReply& m);
  // Connected: starts TLS (with a secret or certificates) and queues HELLO behind it.
  void start_session();
  // `n` bytes arrived where the last receive put them. Returns false once the connection or
  // the session is over.
  bool on_received(std::size_t n);
  // Ciphertext arrived: moves the handshake on and appends plaintext to in_.
  bool decrypt_input(std::size_t n);
  void arm_read();
  // Progress on the transfer: the retry budget starts afresh from here.
  void made_progress();

  // ---- the window (client_window.cpp) ----
  void feed();
  std::size_t in_window() const;
  // A symlink between LINK and its verdict.
  struct OpenLink {
    std::string source_path;
    LinkRequest request;
    int attempt = 1;
  };
  // Sends `link` as a LINK with a fresh id, or fails it if the receiver cannot take links.
  void send_link(OpenLink link);
  // `history`: what its earlier tries left (none for a file the walk just found).
  bool open_next_file(const SourceEntry& e, const FileHistory& history = {});
  bool open_synthetic(const SourceEntry& e, const FileHistory& history);
  void send_file(std::shared_ptr<OutgoingFile> f, const FileHistory& history);
  // A file hashed for --checksum before its SEND.
  struct Checksum {
    std::shared_ptr<OutgoingFile> file;
    SendRequest request;
    std::shared_ptr<std::atomic<bool>> cancelled;
    std::shared_ptr<std::atomic<std::uint64_t>> done;
    std::uint64_t reported = ~std::uint64_t{0};
    std::uint64_t shown = 0;  // what it adds to SenderContext::local_check_done
  };
  // --checksum: hash the file on the work queue first; SEND follows (checksummed()).
  void start_checksum(std::shared_ptr<OutgoingFile> f, SendRequest req);
  void checksummed(std::uint64_t id, std::optional<Digest128> d, int err);
  // Ends a --checksum hashing (done, failed or to go again) and takes it out of the figures
  // Sender::progress() shows; show_local_checks() brings those up to date (each tick).
  void forget_checksum(Checksum& c);
  void forget_all_checksums();
  void show_local_checks();
  // How to open `f` again for a re-send.
  static SourceEntry entry_of(const OutgoingFile& f);

  // ---- verdicts (client_verdicts.cpp) ----
  void on_ready(const ReadyReply& m);
  void on_ok(const OkReply& m);
  void on_err(const ErrReply& m);
  void on_session_err(const ErrReply& m);
  void on_credit(const CreditReply& m);
  void on_progress(const ProgressNote& m);
  // An id in a reply that this session never used: the receiver is confused or hostile.
  bool never_issued(std::uint64_t id);
  using OpenFiles = std::unordered_map<std::uint64_t, std::shared_ptr<OutgoingFile>>;
  void file_delivered(OpenFiles::iterator it);
  // Ends this session's dealings with an open file (its verdict came, or it goes again).
  void close_file(OpenFiles::iterator it);
  void close_all_files();
  // What the receiver last said of its own work on `f` (PROGRESS before READY or after DONE),
  // for Sender::progress(); 0 of 0 once that work is over.
  void show_receiver_work(OutgoingFile& f, std::uint64_t done, std::uint64_t total);
  // True when nothing was delivered and no chunk acknowledged (but as busy) since
  // `busy_since_ms` (0: false).
  bool busy_for_everything(std::int64_t busy_since_ms) const;
  void retry_or_fail(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                     bool retryable);
  // The receiver is out of room for files just now (busy): try the file again after a delay,
  // without spending an attempt, for at most the idle timeout.
  void retry_later(const std::shared_ptr<OutgoingFile>& f, const std::string& reason);
  void record_failure(const std::string& path, const std::string& reason);
  void collect_walk_problems();

  SenderContext& ctx_;
  EntrySource& walker_;
  SendReport& report_;
  State state_ = State::kConnecting;
  UniqueFd fd_;
  Backoff backoff_;

  std::vector<char> in_;
  std::size_t in_len_ = 0;
  SendQueue lines_;
  // With encryption: this connection's TLS (lines_ encrypts through it), and the previous
  // connection's, kept until its cancelled ops have completed (connect() frees it).
  std::unique_ptr<TlsChannel> tls_, retired_tls_;
  bool first_bytes_seen_ = false;
  // The receiver answered in plain text where we started TLS: its ERR line says why.
  bool plain_answer_ = false;
  // TLS handshakes in a row that failed on damaged bytes (TlsChannel::failed_on_damaged_bytes):
  // each is retried like a lost connection, up to kMaxDamagedHandshakes.
  static constexpr int kMaxDamagedHandshakes = 4;
  int damaged_handshakes_ = 0;
  bool recv_armed_ = false;

  // Deadlines (loop clock, ms).
  std::int64_t phase_started_ms_ = 0;  // connect or HELLO began
  std::int64_t last_heard_ms_ = 0;     // the receiver last answered something we waited for
  bool timed_out_ = false;             // the last session was lost to a deadline
  std::int64_t last_progress_ms_ = 0;  // a file last got its verdict (made_progress)
  bool tick_armed_ = false;

  Features features_;  // agreed in HELLO
  bool links_supported_ = false;
  std::size_t window_files_ = kInitialOpenFiles;
  std::uint64_t next_id_ = 1;
  OpenFiles open_files_;
  std::unordered_map<std::uint64_t, Checksum> checksums_;  // being hashed before SEND
  struct OpenDir {
    std::string source_path;
    MkdirRequest request;
  };
  std::unordered_map<std::uint64_t, OpenDir> open_dirs_;
  std::deque<OpenDir> resend_dirs_;  // MKDIRs without a verdict when a session was lost
  std::unordered_map<std::uint64_t, OpenLink> open_links_;
  std::deque<OpenLink> resend_links_;  // lost with a session, or refused with a retryable error
  std::size_t candidate_ = 0;          // index of ctx_.control_ep in ctx_.control_candidates
  bool reconnecting_ = false;          // the session was lost; trying to re-establish it
  bool said_waiting_ = false;          // warned that the first connect is being retried
  std::string lost_why_;               // why, for the final message if that fails
  std::uint64_t open_bytes_ = 0;
  struct Resend {
    SourceEntry entry;
    FileHistory history;
    std::int64_t not_before_ms = 0;  // busy: not before then
  };
  std::deque<Resend> resend_;
  bool walk_done_ = false;
  bool feed_posted_ = false;  // a feed() continuation is queued on the loop
  unsigned streams_given_up_ = 0;
  std::string streams_lost_reason_;  // set once every stream has given up
  std::int64_t streams_lost_ms_ = 0;
  std::uint64_t file_resends_ = 0;
  std::uint64_t readies_ = 0;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace ackxfer
