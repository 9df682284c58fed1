// The sender's control session: connects with retry, says HELLO, pipelines SEND/MKDIR/LINK for
// the walked tree within a window, hands READY files to the chunk scheduler, sends DONE with the
// file digest once every chunk is acknowledged, re-sends files the receiver rejected, and ends
// with BYE. Runs on sender loop 0.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "io/event_loop.h"
#include "protocol/control_codec.h"
#include "sender/backoff.h"
#include "sender/outgoing_file.h"
#include "sender/sender_context.h"
#include "sender/tree_walker.h"

namespace ackxfer {

class ControlClient final : public LoopObject {
 public:
  static constexpr int kMaxFileAttempts = 3;
  // Files in flight (SENT, no verdict yet) and their total size: bounds the receiver's open
  // temp files and reserved space, and our open fds.
  static constexpr std::size_t kMaxWindowFiles = 2048;
  static constexpr std::uint64_t kMaxWindowBytes = 1ull << 30;

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

 private:
  enum Op : unsigned { kConnect = 1, kSend = 2, kRecv = 3, kTimer = 4 };
  enum class State { kConnecting, kBackoff, kHello, kActive, kBye, kDone };

  void on_complete(unsigned op, int res, unsigned flags) override;
  void on_drained() override;

  void connect();
  // A connection attempt failed (or was refused at HELLO, with `detail` saying why): retry
  // with backoff, or give up once --retry-for has passed.
  void connect_failed(int err, const std::string& detail = {});
  // The established session broke (connection lost, receiver shutting down or timing us out).
  // Within --retry-for, reconnect and send again what had no verdict yet (the receiver resumes
  // it from what it kept); otherwise end the transfer as interrupted.
  void session_lost(const std::string& why);
  // Closes the current control connection (its cancelled ops are ignored) and clears buffers.
  void drop_connection();
  void process_input();
  void handle(const ServerMessage& m);
  void on_hello(const HelloReply& m);
  // The receiver has a secret: prove ours over both nonces (AUTH proof=).
  void on_auth_challenge(const AuthChallenge& m);
  void on_ready(const ReadyReply& m);
  void on_ok(const OkReply& m);
  void on_err(const ErrReply& m);
  void feed();
  // A symlink between LINK and its verdict.
  struct OpenLink {
    std::string source_path;
    LinkRequest request;
    int attempt = 1;
  };
  // Sends `link` as a LINK with a fresh id; to a receiver known to lack LINK, fails it at once.
  void send_link(OpenLink link);
  // The receiver does not know LINK (it predates symlink support): fails `link`, and every
  // later one without sending it.
  void links_unsupported(const OpenLink& link);
  // Drops answered links from the front of links_sent_, so it holds only unanswered ones.
  void forget_answered_links();
  bool open_next_file(const SourceEntry& e, int attempt);
  bool open_synthetic(const SourceEntry& e, int attempt);
  void send_file(std::shared_ptr<OutgoingFile> f, const SourceEntry& e, int attempt);
  void send_line(const ClientMessage& m);
  void flush();
  void file_delivered(
      std::unordered_map<std::uint64_t, std::shared_ptr<OutgoingFile>>::iterator it);
  void retry_or_fail(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                     bool retryable);
  void record_failure(const std::string& path, const std::string& reason);
  // How to open `f` again for a re-send.
  static SourceEntry entry_of(const OutgoingFile& f);
  void collect_walk_problems();
  // Ends the session: fails what is still open with `why` (if any) and closes everything.
  void finish_session(SendReport::Outcome outcome, const std::string& why);
  // --log-level debug: a timeline of the session, to see where time goes.
  void milestone(const char* what);

  SenderContext& ctx_;
  EntrySource& walker_;
  SendReport& report_;
  State state_ = State::kConnecting;
  UniqueFd fd_;
  Backoff backoff_;

  std::vector<char> in_;
  std::size_t in_len_ = 0;
  std::string out_queued_, out_inflight_;
  std::size_t out_sent_ = 0;
  bool send_armed_ = false;

  std::size_t window_files_ = kMaxWindowFiles;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<OutgoingFile>> open_files_;
  struct OpenDir {
    std::string source_path;
    MkdirRequest request;
  };
  std::unordered_map<std::uint64_t, OpenDir> open_dirs_;
  std::deque<MkdirRequest> resend_dirs_;  // MKDIRs without a verdict when a session was lost
  std::unordered_map<std::uint64_t, OpenLink> open_links_;
  // Unanswered LINK ids, in the order they were sent on this connection. A receiver that
  // predates LINK answers each with `ERR - unknown-verb` (no id), in order: the front names the
  // link it refers to.
  std::deque<std::uint64_t> links_sent_;
  std::deque<OpenLink> resend_links_;  // lost with a session, or refused with a retryable error
  bool links_unsupported_ = false;
  std::size_t candidate_ = 0;  // index of ctx_.control_ep in ctx_.control_candidates
  bool reconnecting_ = false;  // the session was lost; trying to re-establish it
  // This connection's authentication exchange (with a secret): our nonce in HELLO, the
  // receiver's from its AUTH challenge.
  Nonce our_nonce_;
  std::optional<Nonce> receiver_nonce_;
  std::string lost_why_;  // why, for the final message if that fails
  std::uint64_t open_bytes_ = 0;
  struct Resend {
    SourceEntry entry;
    int attempt;
  };
  std::deque<Resend> resend_;
  bool walk_done_ = false;
  bool feed_posted_ = false;  // a feed() continuation is queued on the loop
  unsigned streams_given_up_ = 0;
  std::string streams_lost_reason_;  // set once every stream has given up
  static constexpr std::uint64_t kStreamsLostGraceNs = 1'000'000'000;
  std::uint64_t file_resends_ = 0;
  std::uint64_t readies_ = 0;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace ackxfer
