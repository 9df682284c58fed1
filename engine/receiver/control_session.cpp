// ControlSession: the receiver's half of the control protocol (docs/PROTOCOL.md).
#include "receiver/control_session.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "auth/shared_secret.h"
#include "error.h"
#include "fs/file_digest.h"
#include "fs/partial.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

// Unhandled input beyond this (a flood of pipelined lines) pauses reading until it is handled.
constexpr std::size_t kMaxUnhandledInputBytes = 256 * 1024;
// Stop reading while this much output waits for a peer that does not read its replies.
constexpr std::size_t kMaxQueuedReplyBytes = 1 << 20;
// Lines handled per turn of the loop (see process_input).
constexpr int kLinesPerTurn = 64;
// Files smaller than this are not fallocated before READY (see handle(SendRequest)).
constexpr std::uint64_t kReserveMinBytes = 1 << 20;
// After the last reply of a closing session, how long to wait for the peer to close first so
// that our close does not reset the connection before it has read the reply.
constexpr std::uint64_t kLingerNs = 1'000'000'000;

std::uint64_t path_hash(std::string_view path) {
  Digest128 d = digest_of(path.data(), path.size());
  std::uint64_t h;
  std::memcpy(&h, d.bytes.data(), sizeof h);
  return h;
}

std::string dir_key_of(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

}  // namespace

ControlSession::ControlSession(Worker& worker, UniqueFd fd)
    : WorkerObject(worker.loop()), worker_(worker), fd_(std::move(fd)) {
  Endpoint peer = peer_endpoint(fd_.get());
  peer_ = peer.to_string();
  peer_host_ = peer.host_string();
}

ControlSession::~ControlSession() {
  *alive_ = false;
  // Gone before its READY: the next legacy client from this address may have its turn.
  if (legacy_) worker_.ctx().legacy.withdraw(peer_host_, legacy_.get());
  abandon_open_files(true);
  if (counted_active_) worker_.ctx().stats.sessions_active.fetch_sub(1, std::memory_order_relaxed);
}

void ControlSession::start() {
  set_nodelay(fd_.get());
  created_ms_ = last_line_ms_ = steady_ms();
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.sessions.fetch_add(1, std::memory_order_relaxed);
  counted_active_ = true;
  std::uint64_t active = ctx.stats.sessions_active.fetch_add(1, std::memory_order_relaxed) + 1;
  if (active > ctx.max_sessions) {
    // Refused sessions do not hold a place while their reply lingers.
    ctx.stats.sessions_active.fetch_sub(1, std::memory_order_relaxed);
    counted_active_ = false;
    ctx.stats.sessions_refused_busy.fetch_add(1, std::memory_order_relaxed);
    reply_error(std::nullopt, ErrorCode::kBusy,
                "the receiver is serving its maximum of " + std::to_string(ctx.max_sessions) +
                    " sessions; try again later");
    close_after_flush();
    return;
  }
  ctx.log.debug("control connection from " + peer_);
  arm_read();
}

void ControlSession::tick(std::int64_t now) {
  if (closing() || state_ == State::kClosing) return;
  run_checkpoints();
  ReceiverContext& ctx = worker_.ctx();
  const char* why = nullptr;
  // A legacy client waiting its turn for READY is not idle: the queue is the receiver's.
  if (state_ == State::kLegacy && legacy_) return;
  if ((state_ == State::kAwaitHello || state_ == State::kAwaitAuth) &&
      now - created_ms_ > std::min(kFirstLineTimeoutMs, ctx.idle_timeout.count())) {
    why = state_ == State::kAwaitHello ? "no HELLO after connecting" : "no AUTH after HELLO";
  } else {
    std::int64_t last = std::max(last_line_ms_, totals_->last_progress_ms.load());
    if (now - last > ctx.idle_timeout.count()) why = "no activity";
  }
  if (!why) return;
  ctx.stats.timeouts.fetch_add(1, std::memory_order_relaxed);
  ctx.log.info("closing session from " + peer_ + ": " + why);
  reply_error(std::nullopt, ErrorCode::kTimeout,
              std::string(why) + " (the receiver's idle limit is " +
                  std::to_string(ctx.idle_timeout.count() / 1000) + " s); closing");
  close_after_flush();
}

void ControlSession::arm_read() {
  if (recv_armed_ || closing()) return;
  read_paused_ = false;
  recv_armed_ = true;
  arm_recv_multishot(fd_.get(), worker_.control_buffers().group(), kRecv);
}

// Stops the multishot receive (backpressure). Completions already on their way still arrive.
void ControlSession::pause_read() {
  if (!recv_armed_ || read_paused_) return;
  read_paused_ = true;
  loop_.cancel(this, kRecv);
}

void ControlSession::on_complete(unsigned op, int res, unsigned flags) {
  switch (op) {
    case kRecv:
      on_bytes(res, flags);
      return;
    case kSend:
      send_armed_ = false;
      if (res < 0) {
        close_now();
        return;
      }
      out_sent_ += static_cast<std::size_t>(res);
      flush();
      return;
    case kLingerTimer:
      close_now();
      return;
    case kYield:
      yield_armed_ = false;
      process_input();
      return;
    case kLegacyQuiet:
      legacy_quiet_armed_ = false;
      // No newline came: the classic client sent `SEND <name>` alone and waits for READY.
      if (looks_like_unterminated_legacy_send()) {
        std::string line = std::exchange(in_, std::string());
        in_start_ = 0;
        handle_line(line);
      }
      return;
    case kFsync: {
      fsync_armed_ = false;
      Checkpoint c = std::move(checkpoints_.front());
      checkpoints_.pop_front();
      if (res < 0)
        worker_.ctx().log.warn("fdatasync of the partial file of '" + escape_bytes(c.file->path()) +
                               "' failed: " + errno_text(-res) + "; its progress is not journaled");
      c.file->journal_written(c.entries, res == 0);
      next_checkpoint();
      return;
    }
  }
}

void ControlSession::run_checkpoints() {
  if (fsync_armed_ || !checkpoints_.empty()) return;
  for (auto& [id, file] : open_files_) {
    if (!file->resumable()) continue;
    auto entries = file->take_unjournaled();
    if (!entries.empty()) checkpoints_.push_back(Checkpoint{file, std::move(entries)});
  }
  next_checkpoint();
}

void ControlSession::next_checkpoint() {
  if (fsync_armed_ || checkpoints_.empty() || closing()) return;
  fsync_armed_ = true;
  arm_fdatasync(checkpoints_.front().file->fd(), kFsync);
}

void ControlSession::on_bytes(int res, unsigned flags) {
  BufferRing& ring = worker_.control_buffers();
  if (flags & IORING_CQE_F_BUFFER) {
    auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    // Copy out and hand the buffer straight back: control lines are small, and the ring is
    // shared with every other session on this worker.
    if (res > 0 && state_ != State::kClosing && state_ != State::kLegacy)
      in_.append(reinterpret_cast<const char*>(ring.buffer(id)), static_cast<std::size_t>(res));
    ring.give_back(id);
  }
  bool ended = !(flags & IORING_CQE_F_MORE);
  if (ended) recv_armed_ = false;
  if (res == -ENOBUFS) {
    // Every buffer of the ring was in use for a moment: just ask again.
    ++ring.exhausted;
    arm_read();
    return;
  }
  if (res == -ECANCELED) {  // pause_read(); resume if the reason has gone meanwhile
    if (ended) process_input();
    return;
  }
  if (res <= 0) {
    if (state_ != State::kClosing && !open_files_.empty())
      worker_.ctx().log.warn(
          "session from " + peer_ + " ended with " + std::to_string(open_files_.size()) +
          " files unfinished: " + (res == 0 ? "connection closed" : errno_text(-res)));
    close_now();
    return;
  }
  if (state_ == State::kClosing || state_ == State::kLegacy) {
    // Lingering after our last reply, or a legacy client after its SEND: what the peer still
    // sends is discarded above.
    if (ended) arm_read();
    return;
  }
  if (ended && !read_paused_) arm_read();
  process_input();
}

void ControlSession::process_input() {
  if (processing_) return;
  processing_ = true;
  // A slice of lines per turn of the loop: the replies to the first lines then reach the
  // sender (and its next steps start) while we work through the rest, instead of the two
  // sides taking turns on whole batches.
  int budget = kLinesPerTurn;
  bool more = false;
  while (state_ != State::kClosing) {
    const char* begin = in_.data() + in_start_;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', in_.size() - in_start_));
    if (!nl) break;
    if (budget-- == 0) {
      more = true;
      break;
    }
    handle_line(std::string_view(begin, static_cast<std::size_t>(nl - begin)));
    in_start_ = static_cast<std::size_t>(nl - in_.data()) + 1;
  }
  processing_ = false;
  if (state_ == State::kClosing) return;
  if (more && !yield_armed_) {
    yield_armed_ = true;
    arm_yield(kYield);
  }
  // Drop handled bytes; give memory back once the burst is over.
  in_.erase(0, in_start_);
  in_start_ = 0;
  if (in_.empty() && in_.capacity() > 64 * 1024) std::string().swap(in_);
  if (!more && !legacy_quiet_armed_ && looks_like_unterminated_legacy_send()) {
    legacy_quiet_armed_ = true;
    arm_timer(static_cast<std::uint64_t>(kLegacyLineQuietMs) * 1'000'000, kLegacyQuiet);
  }
  if (!more && in_.size() > kMaxLineBytes) {
    reply_error(std::nullopt, ErrorCode::kLineTooLong,
                "no newline within " + std::to_string(kMaxLineBytes) + " bytes; closing");
    close_after_flush();
    return;
  }
  // Backpressure: a peer that floods lines faster than we handle them, or does not read its
  // replies, is not read from until that is resolved.
  if (in_.size() > kMaxUnhandledInputBytes || out_queued_.size() >= kMaxQueuedReplyBytes)
    pause_read();
  else if (!recv_armed_)
    arm_read();
}

bool ControlSession::looks_like_unterminated_legacy_send() const {
  return worker_.ctx().legacy_enabled && state_ == State::kAwaitHello && in_start_ == 0 &&
         in_.starts_with("SEND ") && in_.size() <= kMaxLineBytes &&
         in_.find('\n') == std::string::npos;
}

void ControlSession::handle_line(std::string_view line) {
  last_line_ms_ = steady_ms();
  if (state_ == State::kLegacy) return;
  if (worker_.ctx().legacy_enabled && state_ == State::kAwaitHello && line.starts_with("SEND ")) {
    if (line.ends_with('\r')) line.remove_suffix(1);
    handle_legacy_send(line.substr(5));
    return;
  }
  auto parsed = parse_client_line(line);
  if (!parsed.ok()) {
    const ParseError& e = parsed.error();
    worker_.ctx().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    reply_error(e.id, e.code, e.message);
    if (e.code == ErrorCode::kLineTooLong || state_ == State::kAwaitHello ||
        state_ == State::kAwaitAuth)
      close_after_flush();
    return;
  }
  const ClientMessage& msg = parsed.value();
  if (state_ == State::kAwaitHello && !std::holds_alternative<HelloRequest>(msg)) {
    reply_error(std::nullopt, ErrorCode::kHelloExpected,
                "the first line must be 'HELLO ackxfer " + std::to_string(kProtocolVersion) + "'");
    close_after_flush();
    return;
  }
  if (state_ == State::kAwaitAuth && !std::holds_alternative<AuthRequest>(msg)) {
    refuse_auth(ErrorCode::kAuthFailed, "expected 'AUTH proof=...' after HELLO");
    return;
  }
  std::visit([this](const auto& m) { handle(m); }, msg);
}

void ControlSession::handle(const HelloRequest& m) {
  if (state_ != State::kAwaitHello) {
    reply_error(std::nullopt, ErrorCode::kBadLine, "HELLO was already received");
    return;
  }
  if (m.version != kProtocolVersion) {
    reply_error(std::nullopt, ErrorCode::kVersion,
                "this receiver speaks protocol version " + std::to_string(kProtocolVersion) +
                    ", the sender " + std::to_string(m.version) +
                    "; use ackxfer-fast releases that share a protocol version");
    close_after_flush();
    return;
  }
  const SharedSecret* secret = worker_.ctx().secret.get();
  if (!secret) {
    accept_session(std::nullopt);
    return;
  }
  if (!m.nonce) {
    refuse_auth(ErrorCode::kAuthRequired,
                "this receiver only accepts senders that authenticate: run send with "
                "--secret-file holding the receiver's secret");
    return;
  }
  sender_nonce_ = *m.nonce;
  receiver_nonce_ = Nonce::random();
  state_ = State::kAwaitAuth;
  reply(AuthChallenge{receiver_nonce_});
}

void ControlSession::handle(const AuthRequest& m) {
  if (state_ != State::kAwaitAuth) {
    reply_error(std::nullopt, ErrorCode::kBadLine, "AUTH is only expected right after HELLO");
    return;
  }
  const SharedSecret& secret = *worker_.ctx().secret;
  if (!proofs_match(m.proof, secret.sender_proof(sender_nonce_, receiver_nonce_))) {
    refuse_auth(ErrorCode::kAuthFailed,
                "the sender's secret does not match this receiver's: --secret-file must hold "
                "the same secret on both sides");
    return;
  }
  worker_.ctx().log.debug("session from " + peer_ + " authenticated");
  accept_session(secret.receiver_proof(sender_nonce_, receiver_nonce_));
}

void ControlSession::handle_legacy_send(std::string_view name) {
  ReceiverContext& ctx = worker_.ctx();
  state_ = State::kLegacy;
  // The classic protocol sends the name as it is: no escapes. It still meets the path rule.
  std::string path(name);
  auto checked = validate_relative_path(path);
  if (auto* why = std::get_if<std::string>(&checked)) {
    ctx.log.warn("legacy client " + peer_ + ": refused 'SEND " + escape_bytes(path) + "': " + *why);
    reply_error(std::nullopt, ErrorCode::kBadPath, "'" + escape_bytes(path) + "': " + *why);
    close_after_flush();
    return;
  }
  const RelativePath& rel = std::get<RelativePath>(checked);
  auto parent = ctx.destination.open_parent(rel);
  if (auto* e = std::get_if<FsError>(&parent)) {
    ctx.log.warn("legacy client " + peer_ + ": " + e->what);
    reply_error(std::nullopt, error_code_from_errno(e->err), e->what);
    close_after_flush();
    return;
  }
  auto dir = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(parent)));
  // Size unknown: nothing to reserve; the bytes allocate as they are written.
  auto temp = ctx.destination.create_temp(dir, rel.components.back(), 0, 0,
                                          ctx.destination.anonymous_temps_supported(), 0644);
  if (auto* e = std::get_if<FsError>(&temp)) {
    ctx.log.warn("legacy client " + peer_ + ": " + e->what);
    reply_error(std::nullopt, error_code_from_errno(e->err), e->what);
    close_after_flush();
    return;
  }
  legacy_ = std::make_shared<LegacyUpload>();
  legacy_->path = path;
  legacy_->peer = peer_;
  legacy_->temp = std::move(std::get<TempFile>(temp));
  EventLoop* loop = &loop_;
  bool now = ctx.legacy.offer(peer_host_, legacy_, [this, loop, alive = alive_] {
    loop->post([this, alive] {
      if (*alive) legacy_turn();
    });
  });
  if (now) {
    legacy_turn();
  } else {
    ctx.log.info("legacy client " + peer_ + ": 'SEND " + escape_bytes(path) +
                 "' waits until the previous legacy file from " + peer_host_ +
                 " has its data connection");
  }
}

void ControlSession::legacy_turn() {
  if (!legacy_ || closing()) return;
  ReceiverContext& ctx = worker_.ctx();
  ctx.log.info("legacy client " + peer_ + ": READY for '" + escape_bytes(legacy_->path) +
               "'; it is published unverified when its data connection closes (the classic "
               "protocol carries no digest)");
  legacy_.reset();         // LegacyUploads holds it until its data connection claims it
  out_queued_ += "READY";  // exactly these five bytes, as the classic clients expect
  flush();
}

void ControlSession::accept_session(std::optional<Proof> proof) {
  state_ = State::kActive;
  reply(HelloReply{kProtocolVersion, worker_.ctx().data_port,
                   static_cast<std::uint32_t>(kMaxOpenFilesPerSession), proof});
}

void ControlSession::refuse_auth(ErrorCode code, const std::string& why) {
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.auth_failures.fetch_add(1, std::memory_order_relaxed);
  ctx.log.warn("refused a session from " + peer_ + ": " +
               (code == ErrorCode::kAuthRequired ? "it did not authenticate (this receiver has "
                                                   "--secret-file)"
                                                 : "wrong secret"));
  reply_error(std::nullopt, code, why);
  close_after_flush();
}

std::optional<RelativePath> ControlSession::checked_path(std::uint64_t id,
                                                         const std::string& path) {
  auto checked = validate_relative_path(path);
  if (auto* why = std::get_if<std::string>(&checked)) {
    refuse(id, ErrorCode::kBadPath, "'" + escape_bytes(path) + "': " + *why);
    return std::nullopt;
  }
  return std::get<RelativePath>(std::move(checked));
}

void ControlSession::handle(const SendRequest& m) {
  auto valid = checked_path(m.id, m.path);
  if (!valid) return;
  if (id_open(m.id)) {
    reply_error(m.id, ErrorCode::kDuplicateId, "id " + std::to_string(m.id) + " is still open");
    return;
  }
  auto open_now = [&] {
    return open_files_.size() + pending_checks_.size() + pending_resumes_.size();
  };
  if (open_now() >= kMaxOpenFilesPerSession) sweep_closed_files();
  if (open_now() >= kMaxOpenFilesPerSession) {
    reply_error(m.id, ErrorCode::kTooManyOpen,
                "at most " + std::to_string(kMaxOpenFilesPerSession) +
                    " files may be open at once in one session");
    return;
  }
  const RelativePath& rel = *valid;
  ReceiverContext& ctx = worker_.ctx();
  if (ctx.discard) {
    // Memory-to-memory: a file with no temp file; its bytes are verified and dropped.
    Token token = Token::random();
    auto file = std::make_shared<IncomingFile>(m, token, TempFile(), totals_);
    ctx.registry.add(file);
    open_files_.emplace(m.id, std::move(file));
    reply(ReadyReply{m.id, token, {}});
    return;
  }

  if (!enter_parent(m.id, m.path, rel)) return;
  if (m.skip != SkipPolicy::kNever && !fresh_dirs_.count(path_hash(dir_key_of(m.path))) &&
      try_skip(m, rel))
    return;
  open_file(m, rel);
}

bool ControlSession::id_open(std::uint64_t id) const {
  return open_files_.count(id) || pending_checks_.count(id) || pending_resumes_.count(id);
}

bool ControlSession::enter_parent(std::uint64_t id, std::string_view path,
                                  const RelativePath& rel) {
  std::string key = dir_key_of(path);
  if (cached_dir_ && key == cached_dir_key_) return true;
  auto r = worker_.ctx().destination.open_parent(rel);
  if (auto* e = std::get_if<FsError>(&r)) {
    cached_dir_.reset();
    refuse(id, error_code_from_errno(e->err), e->what);
    return false;
  }
  cached_dir_ = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(r)));
  cached_dir_key_ = std::move(key);
  return true;
}

bool ControlSession::try_skip(const SendRequest& m, const RelativePath& rel) {
  // Opened, not stat'ed by name: what we compare (and chmod) is the file itself, never what a
  // symlink put there meanwhile points to.
  const std::string name(rel.components.back());
  UniqueFd fd(openat(cached_dir_->get(), name.c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st {};
  if (fd && fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) {
    // Publishing could only fail (a file cannot replace a directory): say so before any byte
    // moves. (Without skip=, the same error comes from publishing, after the data.)
    refuse(m.id, ErrorCode::kIsDirectory,
           "'" + escape_bytes(m.path) + "' is a directory on the receiver");
    return true;
  }
  if (!fd || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) != m.size)
    return false;
  ReceiverContext& ctx = worker_.ctx();
  if (m.skip == SkipPolicy::kSizeMtime) {
    if (st.st_mtim.tv_sec != m.mtime.sec || st.st_mtim.tv_nsec != static_cast<long>(m.mtime.nsec))
      return false;
    // Same content as far as size and mtime tell; bring the mode in line if it differs.
    if ((st.st_mode & 0777) != (m.mode & 0777)) fchmod(fd.get(), m.mode & 0777);
    ctx.stats.files_skipped.fetch_add(1, std::memory_order_relaxed);
    reply(OkReply{m.id, true});
    return true;
  }
  // skip=xxh3: hash the existing file on the blocking pool; the loop carries on meanwhile.
  pending_checks_.emplace(m.id, m);
  auto shared_fd = std::make_shared<UniqueFd>(std::move(fd));
  EventLoop* loop = &loop_;
  ctx.pool.submit([this, loop, shared_fd, alive = alive_, id = m.id, size = m.size, chunk = m.chunk,
                   want = m.digest, stopping = &ctx.stopping] {
    auto d = file_digest_of(shared_fd->get(), size, chunk, stopping);
    bool same = d && *d == want;
    loop->post([this, alive, id, same] {
      if (*alive) checked(id, same);
    });
  });
  return true;
}

void ControlSession::checked(std::uint64_t id, bool same) {
  auto it = pending_checks_.find(id);
  if (it == pending_checks_.end() || state_ != State::kActive) return;
  SendRequest m = std::move(it->second);
  pending_checks_.erase(it);
  if (same) {
    worker_.ctx().stats.files_skipped.fetch_add(1, std::memory_order_relaxed);
    reply(OkReply{m.id, true});
    return;
  }
  auto checked = validate_relative_path(m.path);
  const auto& rel = std::get<RelativePath>(checked);
  if (enter_parent(m.id, m.path, rel)) open_file(m, rel);
}

void ControlSession::resume_checked(std::uint64_t id, const std::vector<JournalEntry>& good,
                                    std::size_t bad) {
  auto it = pending_resumes_.find(id);
  if (it == pending_resumes_.end() || state_ != State::kActive) return;
  PendingResume p = std::move(it->second);
  pending_resumes_.erase(it);
  if (bad > 0) {
    worker_.ctx().log.warn("'" + escape_bytes(p.request.path) + "': " + std::to_string(bad) +
                           " chunks of the kept partial no longer match their journal; they are "
                           "received again");
    // The journal must stop vouching for them before they are overwritten.
    std::string forget;
    std::size_t g = 0;
    for (std::uint32_t i = 0;
         i < static_cast<std::uint32_t>((p.request.size + p.request.chunk - 1) / p.request.chunk);
         ++i) {
      while (g < good.size() && good[g].index < i)
        ++g;
      if (g == good.size() || good[g].index != i) forget += journal_forget_line(i);
    }
    if (p.temp.append_journal(forget) != 0) {
      p.temp.drop_journal();
      ready_partial(p.request, std::move(p.temp), {}, false);
      return;
    }
  }
  ready_partial(p.request, std::move(p.temp), good, true);
}

void ControlSession::ready_partial(const SendRequest& m, TempFile temp,
                                   const std::vector<JournalEntry>& have, bool resumable) {
  ReceiverContext& ctx = worker_.ctx();
  Token token = Token::random();
  auto file = std::make_shared<IncomingFile>(m, token, std::move(temp), totals_, have, resumable);
  if (!have.empty()) {
    ctx.stats.files_resumed.fetch_add(1, std::memory_order_relaxed);
    ctx.stats.bytes_resumed.fetch_add(file->resumed_bytes(), std::memory_order_relaxed);
    ctx.log.info("resuming '" + escape_bytes(m.path) +
                 "': " + std::to_string(file->resumed_bytes()) + " of " + std::to_string(m.size) +
                 " bytes already verified");
  }
  ctx.registry.add(file);
  open_files_.emplace(m.id, std::move(file));
  reply(ReadyReply{m.id, token, to_ranges(have)});
}

void ControlSession::open_file(const SendRequest& m, const RelativePath& rel) {
  ReceiverContext& ctx = worker_.ctx();
  // The first chunk is allocated now, later ones as they arrive (IncomingFile::reserve_chunk).
  // Small files are not allocated ahead at all: their one write allocates as much, and says
  // ENOSPC just as clearly, for one syscall less per file.
  std::uint64_t reserve_now = m.size < kReserveMinBytes ? 0 : m.chunk;
  // A one-chunk file is written once and published when its frame verifies: an anonymous
  // temp file spares a directory update; larger files keep a named temp file.
  bool anonymous = m.size <= m.chunk;
  if (!anonymous && ctx.keep_partials_s > 0) {
    // Several chunks: a resumable partial, which may hold chunks from an earlier attempt.
    auto p = ctx.destination.open_partial(cached_dir_, rel.components.back(), m.size, m.mtime,
                                          m.chunk, reserve_now);
    if (auto* e = std::get_if<FsError>(&p)) {
      refuse(m.id, error_code_from_errno(e->err), e->what);
      return;
    }
    auto& part = std::get<Destination::Partial>(p);
    if (part.have.empty()) {
      ready_partial(m, std::move(part.temp), {}, part.resumable);
      return;
    }
    // The journal says which chunks were verified; before offering them, make sure the bytes
    // on disk still are those (a disk error, or anyone writing into the partial since, must
    // not end up in a published file). Read back on the blocking pool.
    UniqueFd dup(fcntl(part.temp.fd(), F_DUPFD_CLOEXEC, 0));
    if (!dup) {
      refuse(m.id, error_code_from_errno(errno), "dup: " + errno_text(errno));
      return;
    }
    auto job_fd = std::make_shared<UniqueFd>(std::move(dup));
    std::vector<JournalEntry> claimed = part.have;
    pending_resumes_.emplace(m.id, PendingResume{m, std::move(part.temp)});
    EventLoop* loop = &loop_;
    ctx.pool.submit([this, loop, job_fd, alive = alive_, id = m.id, size = m.size, chunk = m.chunk,
                     claimed = std::move(claimed), stopping = &ctx.stopping] {
      std::vector<JournalEntry> good;
      for (const JournalEntry& e : claimed) {
        if (stopping->load(std::memory_order_relaxed)) break;
        std::uint64_t off = std::uint64_t{e.index} * chunk;
        auto d = chunk_digest_of(job_fd->get(), off, std::min(chunk, size - off));
        if (d && *d == e.digest) good.push_back(e);
      }
      std::size_t bad = claimed.size() - good.size();
      loop->post([this, alive, id, good = std::move(good), bad] {
        if (*alive) resume_checked(id, good, bad);
      });
    });
    return;
  }
  auto temp = ctx.destination.create_temp(cached_dir_, rel.components.back(), m.size, reserve_now,
                                          anonymous, m.mode);
  if (auto* e = std::get_if<FsError>(&temp)) {
    refuse(m.id, error_code_from_errno(e->err), e->what);
    return;
  }
  Token token = Token::random();
  auto file =
      std::make_shared<IncomingFile>(m, token, std::move(std::get<TempFile>(temp)), totals_);
  ctx.registry.add(file);
  open_files_.emplace(m.id, std::move(file));
  reply(ReadyReply{m.id, token, {}});
}

void ControlSession::handle(const MkdirRequest& m) {
  auto valid = checked_path(m.id, m.path);
  if (!valid) return;
  if (worker_.ctx().discard) {
    reply(OkReply{m.id, false});
    return;
  }
  bool created = false;
  auto r = worker_.ctx().destination.make_directory(*valid, &created);
  if (auto* e = std::get_if<FsError>(&r)) {
    refuse(m.id, error_code_from_errno(e->err), e->what);
    return;
  }
  // A directory this session just created held nothing: its files need no "already there?"
  // check (one failed lookup per file, 5-10% of the small-file rate). Only hashes are kept; a
  // collision merely costs a file being sent again instead of skipped.
  if (created && fresh_dirs_.size() < kMaxDirsPerSession) fresh_dirs_.insert(path_hash(m.path));
  if (dirs_.size() < kMaxDirsPerSession)
    dirs_.push_back(DirMeta{m.path, m.mode, m.mtime});
  else if (dirs_.size() == kMaxDirsPerSession)
    worker_.ctx().log.warn("session from " + peer_ + ": more than " +
                           std::to_string(kMaxDirsPerSession) +
                           " directories; metadata of the rest is not kept");
  reply(OkReply{m.id, false});
}

void ControlSession::handle(const LinkRequest& m) {
  auto valid = checked_path(m.id, m.path);
  if (!valid) return;
  // Its OK or ERR would be taken for the verdict on the file that holds the id.
  if (id_open(m.id)) {
    reply_error(m.id, ErrorCode::kDuplicateId, "id " + std::to_string(m.id) + " is still open");
    return;
  }
  ReceiverContext& ctx = worker_.ctx();
  if (ctx.discard) {
    reply(OkReply{m.id, false});
    return;
  }
  // The parent is resolved like a file's (RESOLVE_BENEATH: never through a symlink leading out
  // of --dir); the target is only stored, never resolved, so where it points does not matter.
  const RelativePath& rel = *valid;
  if (!enter_parent(m.id, m.path, rel)) return;
  auto r =
      ctx.destination.make_symlink(cached_dir_->get(), rel.components.back(), m.target, m.mtime);
  if (auto* e = std::get_if<FsError>(&r)) {
    refuse(m.id, error_code_from_errno(e->err), e->what);
    return;
  }
  reply(OkReply{m.id, false});
}

void ControlSession::handle(const DoneRequest& m) {
  auto it = open_files_.find(m.id);
  if (it == open_files_.end()) {
    reply_error(m.id, ErrorCode::kUnknownId, "no open file has id " + std::to_string(m.id));
    return;
  }
  std::shared_ptr<IncomingFile> file = std::move(it->second);
  open_files_.erase(it);
  ReceiverContext& ctx = worker_.ctx();
  ctx.registry.remove(file->token());
  auto outcome = file->finish(m.digest);
  std::string name = "'" + escape_bytes(file->path()) + "'";
  switch (outcome.verdict) {
    case IncomingFile::Verdict::kPublished:
      ctx.stats.files_published.fetch_add(1, std::memory_order_relaxed);
      ctx.stats.bytes_published.fetch_add(file->size(), std::memory_order_relaxed);
      reply(OkReply{m.id, false});
      return;
    case IncomingFile::Verdict::kAlreadyClosed:
      // A one-chunk file is published (or failed) when its frame is verified; no DONE needed.
      reply_error(m.id, ErrorCode::kUnknownId,
                  name + " was already finished when its frame was verified");
      return;
    case IncomingFile::Verdict::kIncomplete:
      reply_error(m.id, ErrorCode::kIncomplete, name + ": DONE before every chunk was verified");
      break;
    case IncomingFile::Verdict::kMismatch:
      reply_error(m.id, ErrorCode::kMismatch,
                  name + ": file digest does not match the chunks received");
      break;
    case IncomingFile::Verdict::kFailed:
      reply_error(m.id, error_code_from_errno(outcome.error.err), outcome.error.what);
      break;
  }
  ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
}

void ControlSession::handle(const CancelRequest& m) {
  auto it = open_files_.find(m.id);
  if (it == open_files_.end()) {
    reply_error(m.id, ErrorCode::kUnknownId, "no open file has id " + std::to_string(m.id));
    return;
  }
  worker_.ctx().registry.remove(it->second->token());
  it->second->abandon(false);
  open_files_.erase(it);
  reply_error(m.id, ErrorCode::kCancelled, "cancelled by the sender; nothing was published");
}

void ControlSession::handle(const ByeRequest&) {
  // Deepest first, so that setting a directory's mtime is not undone by work in a child.
  std::stable_sort(dirs_.begin(), dirs_.end(), [](const DirMeta& a, const DirMeta& b) {
    return std::count(a.path.begin(), a.path.end(), '/') >
           std::count(b.path.begin(), b.path.end(), '/');
  });
  ReceiverContext& ctx = worker_.ctx();
  for (const DirMeta& d : dirs_) {
    auto checked = validate_relative_path(d.path);
    auto r =
        ctx.destination.set_directory_metadata(std::get<RelativePath>(checked), d.mode, d.mtime);
    if (auto* e = std::get_if<FsError>(&r)) ctx.log.warn("session from " + peer_ + ": " + e->what);
  }
  dirs_.clear();
  abandon_open_files(false);
  std::uint64_t files = totals_->files.load(), bytes = totals_->bytes.load();
  double secs = static_cast<double>(std::max<std::int64_t>(steady_ms() - created_ms_, 1)) / 1000;
  char took[64];
  std::snprintf(took, sizeof took, "%.2f s, %.1f MB/s", secs,
                static_cast<double>(bytes) / secs / 1e6);
  ctx.log.info("session from " + peer_ + " finished: " + std::to_string(files) + " files, " +
               std::to_string(bytes) + " bytes published in " + took + ", " +
               std::to_string(totals_->failed.load()) + " failed" +
               (totals_->failed.load() ? " (each named above)" : ""));
  reply(ByeReply{files, bytes});
  close_after_flush();
}

void ControlSession::refuse(std::uint64_t id, ErrorCode code, std::string message) {
  ReceiverContext& ctx = worker_.ctx();
  totals_->failed.fetch_add(1, std::memory_order_relaxed);
  ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
  ctx.log.warn("session from " + peer_ + ": refused: " + std::string(wire_name(code)) + ": " +
               message);
  reply_error(id, code, std::move(message));
}

void ControlSession::reply(const ServerMessage& m) {
  out_queued_ += format_line(m);
  flush();
}

void ControlSession::reply_error(std::optional<std::uint64_t> id, ErrorCode code,
                                 std::string message) {
  reply(ErrReply{id, code, std::move(message)});
}

void ControlSession::flush() {
  if (send_armed_ || closing()) return;
  if (out_sent_ == out_inflight_.size()) {
    out_inflight_.clear();
    out_sent_ = 0;
    if (out_queued_.empty()) {
      if (close_when_flushed_) {
        // Everything is out. Half-close and wait for the peer's close (or the linger timer)
        // so the kernel does not discard our last reply with a reset.
        close_when_flushed_ = false;
        ::shutdown(fd_.get(), SHUT_WR);
        arm_timer(kLingerNs, kLingerTimer);
        arm_read();
        return;
      }
      // Replies drained: release a large buffer, and resume reading if it was paused.
      if (out_inflight_.capacity() > 64 * 1024) std::string().swap(out_inflight_);
      if (state_ != State::kClosing && (read_paused_ || !recv_armed_)) process_input();
      return;
    }
    out_inflight_.swap(out_queued_);
  }
  send_armed_ = true;
  arm_send(fd_.get(), out_inflight_.data() + out_sent_, out_inflight_.size() - out_sent_, kSend);
}

void ControlSession::close_after_flush() {
  if (state_ == State::kClosing) return;
  state_ = State::kClosing;
  close_when_flushed_ = true;
  flush();
}

void ControlSession::close_now() {
  abandon_open_files(true);
  begin_close(fd_.get());
}

void ControlSession::shutdown() {
  if (state_ == State::kClosing) {
    close_now();
    return;
  }
  abandon_open_files(true);
  reply_error(std::nullopt, ErrorCode::kShutdown,
              "the receiver is shutting down; files not yet confirmed were not published");
  close_after_flush();
}

void ControlSession::sweep_closed_files() {
  std::erase_if(open_files_, [](const auto& kv) { return kv.second->closed(); });
}

void ControlSession::abandon_open_files(bool keep) {
  ReceiverContext& ctx = worker_.ctx();
  keep = keep && ctx.keep_partials_s > 0;
  for (auto& [id, file] : open_files_) {
    ctx.registry.remove(file->token());
    if (file->abandon(keep)) {
      ctx.stats.partials_kept.fetch_add(1, std::memory_order_relaxed);
      ctx.log.info("kept the partial file of '" + escape_bytes(file->path()) +
                   "' for resuming (see --keep-partials)");
    }
  }
  open_files_.clear();
  pending_checks_.clear();
  // Partials whose journaled chunks were being re-read: still as good as before.
  for (auto& [id, p] : pending_resumes_)
    if (keep)
      p.temp.keep();
    else
      p.temp.discard();
  pending_resumes_.clear();
}

void ControlSession::on_drained() {
  fd_.reset();
  worker_.release(this);
}

}  // namespace ackxfer
