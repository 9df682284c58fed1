// ControlSession, the connection: lines in, replies out, deadlines, closing.
#include "receiver/control_session.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "display.h"
#include "error.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

// Lines handled per turn of the loop (see process_input), and at most kSessionTurnMs of them:
// a line usually takes microseconds, but one through deep paths and in-tree links can take a
// few ms of lookups, and 64 of those stalled every other session on the worker for their sum.
constexpr int kLinesPerTurn = 64;
constexpr std::size_t kControlTlsOutputBytes = 8 * 1024;  // replies go out in pieces

}  // namespace

ControlSession::ControlSession(Worker& worker, UniqueFd fd)
    : WorkerObject(worker),
      fd_(std::move(fd)),
      replies_(*this, kSend, kMaxQueuedReplyBytes),
      dirs_(kMaxDirMetadataBytes) {
  Endpoint peer = peer_endpoint(fd_.get());
  peer_ = peer.to_string();
  peer_host_ = peer.host_string();
  replies_.set_fd(fd_.get());
}

ControlSession::~ControlSession() {
  *alive_ = false;
  if (!data_key_identity_.empty()) worker_.ctx().data_keys.remove(data_key_identity_);
  worker_.ctx().session_buffers.fetch_sub(accounted_, std::memory_order_relaxed);
  worker_.ctx().handshake_buffers.fetch_sub(accounted_handshake_, std::memory_order_relaxed);
  worker_.ctx().dir_metadata_bytes.fetch_sub(dir_budget_taken_, std::memory_order_relaxed);
  // Gone before its READY: the next legacy client from this address may have its turn.
  if (legacy_) worker_.ctx().legacy.withdraw(peer_host_, legacy_.get(), loop_.now_ms());
  abandon_files(true);
  release_writable_dirs();
  stop_awaiting();
  if (counted_active_) worker_.ctx().stats.sessions_active.fetch_sub(1, std::memory_order_relaxed);
}

void ControlSession::stop_awaiting() {
  if (!awaiting_pos_) return;
  worker_.untrack_awaiting(*awaiting_pos_);
  awaiting_pos_.reset();
}

void ControlSession::evict() {
  stop_awaiting();
  if (counted_active_) {
    worker_.ctx().stats.sessions_active.fetch_sub(1, std::memory_order_relaxed);
    counted_active_ = false;
  }
  if (closing()) return;
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.sessions_evicted.fetch_add(1, std::memory_order_relaxed);
  ctx.log.debug("closing session from " + peer_ +
                ": no HELLO yet, and a newer session needs its place (--max-sessions " +
                std::to_string(ctx.max_sessions) + ", --max-handshakes " +
                std::to_string(ctx.max_sessions_awaiting_hello) + ")");
  close_now();
}

void ControlSession::start() {
  set_nodelay(fd_.get());
  created_ms_ = last_line_ms_ = loop_.now_ms();
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.sessions.fetch_add(1, std::memory_order_relaxed);
  counted_active_ = true;
  std::uint64_t active = ctx.stats.sessions_active.fetch_add(1, std::memory_order_relaxed) + 1;
  // With this one, which has not said HELLO either.
  std::size_t awaiting = ctx.sessions_awaiting_hello.load(std::memory_order_relaxed) + 1;
  if (active > ctx.max_sessions || awaiting > ctx.max_sessions_awaiting_hello) {
    // The oldest session on this worker that has not said HELLO makes room: a sender says it
    // within a round trip or two, so only peers that connect and sit lose their place (they
    // could otherwise keep every sender out, renewing their connections as they time out, or,
    // with a TLS handshake begun on each, make the receiver hold 60 KiB apiece).
    // Every session in that list holds a place: it leaves the list as it starts closing.
    if (ControlSession* oldest = worker_.oldest_awaiting()) {
      oldest->evict();
      --active;
      --awaiting;
    }
  }
  if (active > ctx.max_sessions || awaiting > ctx.max_sessions_awaiting_hello) {
    // Refused sessions do not hold a place while their reply lingers.
    ctx.stats.sessions_active.fetch_sub(1, std::memory_order_relaxed);
    counted_active_ = false;
    ctx.stats.sessions_refused_busy.fetch_add(1, std::memory_order_relaxed);
    reply_error(std::nullopt, ErrorCode::kBusy,
                active > ctx.max_sessions
                    ? "the receiver is serving its maximum of " + std::to_string(ctx.max_sessions) +
                          " sessions; try again later"
                    : "the receiver holds its maximum of " +
                          std::to_string(ctx.max_sessions_awaiting_hello) +
                          " connections that have not said HELLO; try again later");
    close_after_flush();
    return;
  }
  ctx.log.debug("control connection from " + peer_);
  awaiting_pos_ = worker_.track_awaiting(this);
  if (ctx.tls) {
    tls_ = std::make_unique<TlsChannel>(ctx.tls, kTlsHandshakeInputBytes, kRecordsPerKey,
                                        kControlTlsOutputBytes);
    replies_.set_tls(tls_.get());
    account_buffers();
  }
  arm_read();
}

std::int64_t ControlSession::last_activity() const {
  return std::max({last_line_ms_, local_activity_ms_,
                   totals_->last_progress_ms.load(std::memory_order_relaxed)});
}

void ControlSession::tick(std::int64_t now) {
  if (closing()) return;
  ReceiverContext& ctx = worker_.ctx();
  if (state_ == State::kClosing) {
    // The peer does not read its last reply, or does not close: it goes anyway.
    if (now - closing_since_ms_ > kMaxClosingMs) close_now();
    return;
  }
  run_checkpoints();
  if (report_local_work()) local_activity_ms_ = now;
  // Files published (or failed) by data streams since the last sweep let go of their fds and
  // budget places within a second, not only when this session next needs room: a session that
  // has gone quiet would otherwise keep up to its credit of them from every other session.
  if (state_ == State::kActive && verdicts() != verdicts_swept_) sweep_closed_files();
  refresh_credit();
  // Paused while the receiver's session buffers were over their total: look again.
  if (!recv_armed_ && !processing_ && (state_ == State::kActive || state_ == State::kAwaitHello))
    resume_read_if_clear();
  const char* why = nullptr;
  const std::int64_t idle = ctx.idle_timeout.count();
  switch (state_) {
    case State::kAwaitHello:
      // A TLS handshake that never finishes runs out of this time too.
      if (now - created_ms_ > std::min(kFirstLineTimeoutMs, idle))
        why = tls_ && !tls_->handshake_done() ? "no TLS handshake after connecting"
                                              : "no HELLO after connecting";
      break;
    case State::kLegacy:
      if (now - last_line_ms_ <= idle) break;
      // Waiting for its turn (READY) is bounded too: another client of its address may be
      // holding the turn on purpose.
      if (legacy_) {
        why = "no READY turn within the idle limit";
        break;
      }
      // It has its READY and nothing more to say here: the file travels on its data
      // connection (with a deadline of its own).
      close_after_flush();
      return;
    case State::kActive:
    case State::kFinishing:
      if (now - last_activity() > idle) why = "no activity";
      break;
    case State::kClosing:
      break;
  }
  if (!why) return;
  ctx.stats.timeouts.fetch_add(1, std::memory_order_relaxed);
  ctx.log.info("closing session from " + peer_ + ": " + why);
  if (tls_ && !tls_->handshake_done()) {
    close_now();  // there is no channel to say why in
    return;
  }
  if (legacy_) {
    ctx.legacy.withdraw(peer_host_, legacy_.get(), loop_.now_ms());
    legacy_.reset();
  }
  reply_error(std::nullopt, ErrorCode::kTimeout,
              std::string(why) + " (the receiver's idle limit is " + std::to_string(idle / 1000) +
                  " s); closing");
  close_after_flush();
}

void ControlSession::arm_read() {
  if (recv_armed_ || closing()) return;
  if (tls_) {
    // Ciphertext goes straight into the channel's input buffer. It is full only while our
    // output is (a peer that requests key updates and reads nothing): reading waits for
    // that, and the idle limit ends it.
    auto space = tls_->input_space();
    if (space.empty()) return;
    read_paused_ = false;
    recv_armed_ = true;
    arm_recv(fd_.get(), space.data(), space.size(), kRecv);
    return;
  }
  read_paused_ = false;
  recv_armed_ = true;
  arm_recv_multishot(fd_.get(), Worker::kControlPool, kRecv);
}

// Stops the multishot receive (backpressure). Completions already on their way still arrive.
void ControlSession::pause_read() {
  if (!recv_armed_ || read_paused_) return;
  read_paused_ = true;
  loop_.cancel(this, kRecv);
}

bool ControlSession::replies_held() const {
  return replies_.backlogged() || durable_replies_ >= kMaxDurableRepliesPerSession;
}

bool ControlSession::may_read() const {
  if (in_.size() - in_start_ > kMaxUnhandledInputBytes || replies_held()) return false;
  return buffered_ <= kSessionBufferFloor ||
         worker_.ctx().session_buffers.load(std::memory_order_relaxed) <=
             worker_.ctx().max_session_buffers;
}

void ControlSession::account_buffers() {
  // What it buffers for its peer, and, counted in the total but not held against it, what
  // every encrypted session holds (its channel). Until its HELLO is accepted, all of it goes
  // to the handshakes' own count instead.
  buffered_ = in_.capacity() + replies_.pending_bytes();
  const std::size_t held = buffered_ + (tls_ ? tls_->held_bytes() : 0);
  auto move_to = [](std::atomic<std::size_t>& total, std::size_t& mine, std::size_t now) {
    if (now > mine)
      total.fetch_add(now - mine, std::memory_order_relaxed);
    else if (now < mine)
      total.fetch_sub(mine - now, std::memory_order_relaxed);
    mine = now;
  };
  ReceiverContext& ctx = worker_.ctx();
  move_to(ctx.session_buffers, accounted_, said_hello_ ? held : 0);
  move_to(ctx.handshake_buffers, accounted_handshake_, said_hello_ ? 0 : held);
}

void ControlSession::resume_read_if_clear() {
  // Only a session that handles lines reads (kFinishing and kClosing read nothing more, a
  // legacy client is read only to be ignored).
  if (state_ != State::kActive && state_ != State::kAwaitHello) return;
  if (replies_held() || processing_) return;
  // Lines left over from before the pause come first; process_input() re-arms the receive
  // once the backlog of input is below its limit.
  process_input();
}

void ControlSession::on_complete(unsigned op, const Completion& c) {
  switch (op) {
    case kRecv:
      on_bytes(c);
      return;
    case kSend:
      on_sent(c.res);
      return;
    case kLingerTimer:
      close_now();
      return;
    case kYield:
      yield_armed_ = false;
      process_input();
      return;
    case kLegacyQuiet:
      // No newline came: the classic client sent `SEND <name>` alone and waits for READY.
      if (state_ == State::kAwaitHello && looks_like_unterminated_legacy_send()) {
        std::string line = std::exchange(in_, std::string());
        in_start_ = 0;
        handle_line(line);
      }
      return;
    case kFsync: {
      fsync_armed_ = false;
      Checkpoint cp = std::move(checkpoints_.front());
      checkpoints_.pop_front();
      if (c.res < 0 && c.res != -ECANCELED) {
        // What it wrote may never reach the disk (the error is reported only once): it fails
        // at publish instead of being published, and the sender sends it again.
        worker_.ctx().log.warn("fdatasync of the partial file of " + quote_name(cp.file->path()) +
                               " failed: " + errno_text(-c.res) + "; it will not be published");
        cp.file->flush_failed(-c.res);
      }
      cp.file->journal_written(cp.entries, c.res == 0);
      next_checkpoint();
      return;
    }
    case kApplyDirs:
      apply_dirs_slice();
      return;
  }
}

void ControlSession::on_bytes(const Completion& c) {
  if (!c.more) recv_armed_ = false;
  if (c.res > 0 && !first_bytes_seen_ && state_ == State::kAwaitHello) {
    first_bytes_seen_ = true;
    const std::uint8_t first = tls_ ? tls_->input_space()[0] : c.data[0];
    if (!check_first_bytes(first)) return;
  }
  if (tls_ && c.res > 0 && state_ != State::kClosing) {
    if (!decrypt_input(static_cast<std::size_t>(c.res))) return;
  } else if (!c.data.empty() && state_ != State::kClosing && state_ != State::kLegacy) {
    append_input(reinterpret_cast<const char*>(c.data.data()), c.data.size());
  }
  if (c.res == -ENOBUFS) {
    // Every buffer of the pool was in use for a moment: ask again, unless this session is
    // the reason (it has more unhandled input, or unread replies, than it may).
    account_buffers();
    if (may_read()) arm_read();
    return;
  }
  if (c.res == -ECANCELED) {  // pause_read(); resume if the reason has gone meanwhile
    if (!recv_armed_) resume_read_if_clear();
    return;
  }
  if (c.res <= 0) {
    // The peer closed (or reset) the connection.
    if (state_ == State::kActive || state_ == State::kFinishing)
      log_end(c.res == 0 ? "connection closed" : errno_text(-c.res));
    close_now();
    return;
  }
  if (closing()) return;
  // Lingering after our last reply, or a legacy client after its SEND: what the peer still
  // sends was discarded above.
  if (state_ == State::kClosing || state_ == State::kLegacy) {
    if (!recv_armed_) arm_read();
    return;
  }
  if (!processing_ && !yield_armed_) process_input();
  if (closing() || state_ == State::kClosing) return;
  account_buffers();
  if (!may_read()) pause_read();
  // A SEND without its newline from a classic client: take it as whole after a quiet spell.
  if (worker_.ctx().legacy_enabled && state_ == State::kAwaitHello &&
      looks_like_unterminated_legacy_send())
    arm_timer(static_cast<std::uint64_t>(kLegacyLineQuietMs) * 1'000'000, kLegacyQuiet);
  if (!recv_armed_ && !read_paused_ && may_read()) arm_read();
}

void ControlSession::append_input(const char* p, std::size_t n) {
  const std::size_t need = in_.size() + n;
  if (need > in_.capacity()) {
    // Doubling up to the limit, and past it (reading pauses there) only what arrives: a
    // peer that fills its input holds the limit plus what its last receives brought, not
    // twice the limit.
    std::string grown;
    grown.reserve(std::max(need, std::min(2 * in_.capacity(), kMaxUnhandledInputBytes)));
    grown.append(in_);
    in_.swap(grown);
  }
  in_.append(p, n);
}

void ControlSession::process_input() {
  processing_ = true;
  int handled = 0;
  bool more = false;  // complete lines are left for a later turn
  const std::int64_t turn_started_ms = loop_.now_ms();
  while (!closing() && (state_ == State::kAwaitHello || state_ == State::kActive)) {
    const char* begin = in_.data() + in_start_;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', in_.size() - in_start_));
    if (!nl) break;
    // A peer that asks faster than it reads the answers waits for them: its replies stay
    // bounded (the rest of its lines wait, and reading it pauses below).
    if (replies_held()) {
      more = true;
      break;
    }
    const std::int64_t now = loop_.now_ms();
    if (handled == kLinesPerTurn || (handled > 0 && now - turn_started_ms >= kSessionTurnMs)) {
      // Let the replies so far go out, and other sessions run, before the next batch.
      more = true;
      if (!yield_armed_) {
        yield_armed_ = true;
        arm_yield(kYield);
      }
      break;
    }
    std::string_view line(begin, static_cast<std::size_t>(nl - begin));
    in_start_ = static_cast<std::size_t>(nl - in_.data()) + 1;
    last_line_ms_ = now;
    ++handled;
    handle_line(line);
  }
  processing_ = false;
  if (closing() || state_ == State::kClosing) return;
  // Keep only what is left; an idle session keeps no buffer at all.
  if (in_start_ == in_.size()) {
    std::string().swap(in_);
  } else if (in_start_ > 0) {
    in_.erase(0, in_start_);
  }
  in_start_ = 0;
  if (!more && in_.size() > kMaxLineBytes) {
    reply_error(std::nullopt, ErrorCode::kLineTooLong,
                "no newline within " + std::to_string(kMaxLineBytes) + " bytes; closing");
    close_after_flush();
    return;
  }
  if (state_ == State::kActive) refresh_credit();
  // Backpressure: a peer that floods lines faster than we handle them, or does not read its
  // replies, is not read from until that is resolved (resume_read_if_clear).
  account_buffers();
  if (!may_read())
    pause_read();
  else if (!recv_armed_ && state_ != State::kLegacy)
    arm_read();
}

void ControlSession::handle_line(std::string_view line) {
  ReceiverContext& ctx = worker_.ctx();
  if (state_ == State::kAwaitHello && ctx.legacy_enabled && line.starts_with("SEND ")) {
    // A classic client speaks first with `SEND <name>`; an ackxfer sender always says HELLO.
    std::string_view name = line.substr(5);
    if (!name.empty() && name.back() == '\r') name.remove_suffix(1);
    handle_legacy_send(name);
    return;
  }
  auto parsed = parse_client_line(line);
  if (!parsed.ok()) {
    const ParseError& e = parsed.error();
    ctx.stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    reply_error(e.id, e.code, e.message);
    // Before the session is established nothing else is acceptable: say why and close.
    if (e.code == ErrorCode::kLineTooLong || state_ != State::kActive) close_after_flush();
    return;
  }
  const ClientMessage& m = parsed.value();
  if (state_ == State::kAwaitHello) {
    if (const auto* h = std::get_if<HelloRequest>(&m)) return handle(*h);
    reply_error(std::nullopt, ErrorCode::kHelloExpected,
                "the first line must be 'HELLO ackxfer " + std::to_string(kProtocolVersion) + "'");
    close_after_flush();
    return;
  }
  std::visit(
      [this](const auto& msg) {
        using T = std::decay_t<decltype(msg)>;
        if constexpr (std::is_same_v<T, HelloRequest>) {
          reply_error(std::nullopt, ErrorCode::kBadLine, "the session is already established");
        } else {
          handle(msg);
        }
      },
      m);
}

void ControlSession::reply(const ServerMessage& m) {
  replies_.write(format_line(m));
}

void ControlSession::reply_error(std::optional<std::uint64_t> id, ErrorCode code,
                                 std::string message) {
  reply(ErrReply{id, code, std::move(message)});
}

void ControlSession::refuse(std::uint64_t id, ErrorCode code, std::string message) {
  ReceiverContext& ctx = worker_.ctx();
  totals_->failed.fetch_add(1, std::memory_order_relaxed);
  ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
  // Names in `message` were made printable where it was built (quote_name); in the log it is
  // cut short (a name may be 16 KB escaped), and logged within the worker's rate.
  worker_.peer_warning([&] {
    return "session from " + peer_ + ": refused: " + std::string(wire_name(code)) + ": " +
           cut_for_log(control_free(message));
  });
  reply_error(id, code, std::move(message));
}

void ControlSession::on_sent(int res) {
  if (!replies_.on_sent(res)) {
    close_now();  // the peer is gone
    return;
  }
  account_buffers();
  if (!replies_.idle()) return;
  if (close_when_flushed_) {
    linger();
    return;
  }
  resume_read_if_clear();
}

void ControlSession::close_after_flush() {
  if (state_ == State::kClosing) return;
  state_ = State::kClosing;
  stop_awaiting();
  closing_since_ms_ = loop_.now_ms();
  close_when_flushed_ = true;
  // close_notify, after every reply already queued: the sender can tell our end from a cut
  // connection, and still reads why we end it.
  if (tls_ && tls_->handshake_done()) replies_.close_tls();
  if (replies_.idle()) linger();
}

// Everything is out. Half-close and wait for the peer's close (or the linger timer), so that
// the kernel does not discard our last reply with a reset.
void ControlSession::linger() {
  close_when_flushed_ = false;
  ::shutdown(fd_.get(), SHUT_WR);
  arm_timer(static_cast<std::uint64_t>(kLingerMs) * 1'000'000, kLingerTimer);
  if (!recv_armed_) {
    read_paused_ = false;
    recv_armed_ = true;
    arm_recv_multishot(fd_.get(), Worker::kControlPool, kRecv);
  }
}

void ControlSession::close_now() {
  if (closing()) return;
  stop_awaiting();
  abandon_files(true);
  begin_close(fd_.get());
}

void ControlSession::shutdown() {
  if (state_ == State::kClosing || closing()) {
    close_now();
    return;
  }
  abandon_files(true);
  if (legacy_) {
    worker_.ctx().legacy.withdraw(peer_host_, legacy_.get(), loop_.now_ms());
    legacy_.reset();
  }
  reply_error(std::nullopt, ErrorCode::kShutdown,
              "the receiver is shutting down; files not yet confirmed were not published");
  close_after_flush();
}

void ControlSession::log_end(const std::string& how) {
  std::size_t open = files_.size();
  if (open == 0) return;
  worker_.ctx().log.info("session from " + peer_ + " ended with " + counted(open, "file", "files") +
                         " unfinished: " + how);
}

void ControlSession::on_drained() {
  fd_.reset();
  worker_.release(this);
}

}  // namespace ackxfer
