// ControlClient: the sender's half of the control protocol (docs/PROTOCOL.md).
#include "sender/control_client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>

#include "auth/shared_secret.h"
#include "error.h"
#include "fs/file_digest.h"
#include "protocol/limits.h"
#include "sender/outbound_stream.h"

namespace ackxfer {
namespace {

constexpr std::size_t kControlBufferBytes = 64 * 1024;
static_assert(kControlBufferBytes > kMaxLineBytes + 1);

// A receiver older than LINK: the link fails, the rest of the transfer goes on.
constexpr const char* kLinksUnsupported =
    "not sent: the receiver is too old to receive symlinks (it does not know LINK); upgrade "
    "ackxfer-fast there to send symlinks";

std::string seconds_text(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

}  // namespace

ControlClient::ControlClient(SenderContext& ctx, EntrySource& walker, SendReport& report)
    : LoopObject(*ctx.loops[0]),
      ctx_(ctx),
      walker_(walker),
      report_(report),
      backoff_(ctx.options.retry_for) {}

ControlClient::~ControlClient() = default;

void ControlClient::start() {
  started_ = std::chrono::steady_clock::now();
  in_.resize(kControlBufferBytes);
  connect();
}

void ControlClient::connect() {
  state_ = State::kConnecting;
  try {
    fd_ = make_tcp_socket(ctx_.control_ep.family());
  } catch (const SystemError& e) {
    finish_session(SendReport::Outcome::kCannotConnect, e.what());
    return;
  }
  arm_connect(fd_.get(), ctx_.control_ep.sa(), ctx_.control_ep.len, kConnect);
}

void ControlClient::drop_connection() {
  if (fd_) {
    // Its cancelled ops complete before the backoff timer fires and are ignored (kBackoff).
    ::shutdown(fd_.get(), SHUT_RDWR);
    loop_.cancel_fd(fd_.get());
    fd_.reset();
  }
  in_len_ = 0;
  out_queued_.clear();
  out_inflight_.clear();
  out_sent_ = 0;
  send_armed_ = false;
}

void ControlClient::session_lost(const std::string& why) {
  if (state_ == State::kDone) return;
  if (state_ == State::kBye) {
    // Every file already has its verdict: the data is there and verified.
    ctx_.log.warn("the session ended before the receiver answered BYE (" + why +
                  "); every file was delivered and verified, but directory modes and mtimes may "
                  "not have been applied");
    finish_session(SendReport::Outcome::kOk, "");
    return;
  }
  std::optional<std::chrono::milliseconds> delay;
  if (ctx_.options.retry_for.count() > 0) delay = backoff_.next_delay(Backoff::Clock::now());
  if (!delay) {
    finish_session(SendReport::Outcome::kInterrupted, why);
    return;
  }
  drop_connection();
  // What had no verdict goes again, first, on the next session. The receiver kept the
  // verified part of large files, so "again" mostly means "the rest".
  std::deque<Resend> again;
  for (auto& [id, f] : open_files_) {
    ctx_.scheduler->drop_file(f);  // its queued chunks carry a token that died with the session
    again.push_back(Resend{entry_of(*f), f->attempt});
  }
  resend_.insert(resend_.begin(), again.begin(), again.end());
  open_files_.clear();
  open_bytes_ = 0;
  for (auto& [id, d] : open_dirs_)
    resend_dirs_.push_back(d.request);
  open_dirs_.clear();
  std::deque<OpenLink> links;
  for (auto& [id, l] : open_links_)
    links.push_back(std::move(l));
  resend_links_.insert(resend_links_.begin(), links.begin(), links.end());
  open_links_.clear();
  links_sent_.clear();
  streams_lost_reason_.clear();
  if (!reconnecting_) {
    lost_why_ = why;
    ctx_.log.warn("lost the session with " + ctx_.control_ep.to_string() + ": " + why +
                  "; reconnecting for up to " + seconds_text(ctx_.options.retry_for) +
                  " (--retry-for) to finish the transfer");
  }
  reconnecting_ = true;
  ctx_.reconnects.fetch_add(1, std::memory_order_relaxed);
  state_ = State::kBackoff;
  arm_timer(static_cast<std::uint64_t>(delay->count()) * 1'000'000, kTimer);
}

void ControlClient::connect_failed(int err, const std::string& detail) {
  drop_connection();
  // A name with several addresses (localhost: 127.0.0.1 and ::1): try the next one at once;
  // back off only when every one has refused.
  const auto& candidates = ctx_.control_candidates;
  if (detail.empty() && is_retryable_connect_error(err) && candidate_ + 1 < candidates.size()) {
    ctx_.log.debug("connect to " + ctx_.control_ep.to_string() + ": " + errno_text(err) +
                   "; trying the next address");
    ctx_.control_ep = candidates[++candidate_];
    connect();
    return;
  }
  std::string tried = ctx_.control_ep.to_string();
  if (candidates.size() > 1) {
    tried.clear();
    for (const Endpoint& e : candidates)
      tried += (tried.empty() ? "" : " and ") + e.to_string();
    candidate_ = 0;
    ctx_.control_ep = candidates.front();
  }
  std::optional<std::chrono::milliseconds> delay;
  if (is_retryable_connect_error(err)) delay = backoff_.next_delay(Backoff::Clock::now());
  if (delay) {
    ctx_.log.debug("connect to " + ctx_.control_ep.to_string() + ": " + errno_text(err) +
                   "; retrying in " + std::to_string(delay->count()) + " ms");
    ctx_.reconnects.fetch_add(1, std::memory_order_relaxed);
    state_ = State::kBackoff;
    arm_timer(static_cast<std::uint64_t>(delay->count()) * 1'000'000, kTimer);
    return;
  }
  std::string where = tried;
  std::string retried =
      backoff_.attempts() > 0 ? "retried for " + seconds_text(ctx_.options.retry_for) : "";
  if (reconnecting_) {
    finish_session(SendReport::Outcome::kInterrupted,
                   lost_why_ + "; could not reconnect to " + where + " (" +
                       (detail.empty() ? errno_text(err) : detail) +
                       (retried.empty() ? "" : ", " + retried) + ")");
    return;
  }
  std::string msg;
  if (!detail.empty()) {
    msg = where + ": " + detail + (retried.empty() ? "" : " (" + retried + ")");
  } else {
    msg = err == ECONNREFUSED ? "no receiver listening on " + where + " (connection refused"
                              : "cannot connect to " + where + " (" + errno_text(err);
    if (!retried.empty()) msg += ", " + retried;
    msg += "); is `ackxfer-fast recv` running there, and is the port open?";
  }
  finish_session(SendReport::Outcome::kCannotConnect, msg);
}

void ControlClient::on_complete(unsigned op, int res, unsigned /*flags*/) {
  switch (op) {
    case kConnect:
      if (res != 0) {
        connect_failed(-res);
        return;
      }
      set_nodelay(fd_.get());
      milestone("control connected");
      state_ = State::kHello;
      arm_recv(fd_.get(), in_.data(), in_.size(), kRecv);
      receiver_nonce_.reset();
      if (ctx_.options.secret) {
        our_nonce_ = Nonce::random();  // fresh per connection: nothing can be replayed
        send_line(HelloRequest{kProtocolVersion, our_nonce_});
      } else {
        send_line(HelloRequest{kProtocolVersion, std::nullopt});
      }
      return;
    case kTimer:
      if (state_ == State::kBackoff && inflight() > 0) {
        arm_timer(1'000'000, kTimer);  // the old connection's ops have not all completed yet
        return;
      }
      if (state_ == State::kBackoff)
        connect();
      else if (!streams_lost_reason_.empty() && state_ != State::kDone)
        finish_session(SendReport::Outcome::kInterrupted, streams_lost_reason_);
      return;
    case kRecv:
      if (state_ == State::kBackoff || state_ == State::kConnecting) return;  // old connection
      if (res <= 0) {
        if (state_ == State::kDone) return;
        std::string why = res == 0 ? "the receiver closed the control connection"
                                   : "control connection: " + errno_text(-res);
        if (state_ == State::kHello)
          connect_failed(res == 0 ? ECONNRESET : -res, why);
        else
          session_lost(why);
        return;
      }
      in_len_ += static_cast<std::size_t>(res);
      process_input();
      if (state_ != State::kDone && state_ != State::kBackoff && !closing())
        arm_recv(fd_.get(), in_.data() + in_len_, in_.size() - in_len_, kRecv);
      return;
    case kSend:
      if (state_ == State::kBackoff || state_ == State::kConnecting) return;  // old connection
      send_armed_ = false;
      if (res < 0) {
        if (state_ == State::kHello)
          connect_failed(-res);
        else
          session_lost("control connection: " + errno_text(-res));
        return;
      }
      out_sent_ += static_cast<std::size_t>(res);
      flush();
      return;
  }
}

void ControlClient::process_input() {
  std::size_t start = 0;
  while (state_ != State::kDone && state_ != State::kBackoff) {
    const char* begin = in_.data() + start;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', in_len_ - start));
    if (!nl) break;
    std::string_view line(begin, static_cast<std::size_t>(nl - begin));
    start = static_cast<std::size_t>(nl - in_.data()) + 1;
    auto parsed = parse_server_line(line);
    if (!parsed.ok()) {
      finish_session(SendReport::Outcome::kProtocolError,
                     "the receiver sent a line this sender does not understand (" +
                         parsed.error().message + "); are both sides the same version?");
      return;
    }
    handle(parsed.value());
  }
  // Done, or reconnecting (a busy receiver): the rest of this buffer is of no use.
  if (state_ == State::kDone || state_ == State::kBackoff) return;
  std::memmove(in_.data(), in_.data() + start, in_len_ - start);
  in_len_ -= start;
  if (in_len_ > kMaxLineBytes)
    finish_session(SendReport::Outcome::kProtocolError, "the receiver sent an overlong line");
}

void ControlClient::handle(const ServerMessage& m) {
  if (const auto* e = std::get_if<ErrReply>(&m)) return on_err(*e);
  if (state_ == State::kHello) {
    if (const auto* h = std::get_if<HelloReply>(&m)) return on_hello(*h);
    if (const auto* a = std::get_if<AuthChallenge>(&m)) return on_auth_challenge(*a);
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver did not answer HELLO; is this an ackxfer-fast receiver?");
    return;
  }
  if (const auto* r = std::get_if<ReadyReply>(&m)) return on_ready(*r);
  if (const auto* o = std::get_if<OkReply>(&m)) return on_ok(*o);
  if (std::holds_alternative<ByeReply>(m) && state_ == State::kBye) {
    milestone("BYE answered");
    finish_session(SendReport::Outcome::kOk, "");
    return;
  }
  finish_session(SendReport::Outcome::kProtocolError, "unexpected reply from the receiver");
}

void ControlClient::on_auth_challenge(const AuthChallenge& m) {
  const SharedSecret* secret = ctx_.options.secret.get();
  if (!secret || receiver_nonce_) {
    // Without a secret we sent no nonce, so a conforming receiver refuses with auth-required
    // instead; a second challenge is not in the protocol either.
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver sent an authentication challenge out of turn");
    return;
  }
  receiver_nonce_ = m.nonce;
  send_line(AuthRequest{secret->sender_proof(our_nonce_, m.nonce)});
}

void ControlClient::on_hello(const HelloReply& m) {
  if (m.version != kProtocolVersion) {
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver speaks protocol version " + std::to_string(m.version) +
                       ", this sender " + std::to_string(kProtocolVersion) +
                       "; upgrade the older side so that both run releases with the same "
                       "protocol version (ackxfer-fast --version shows it)");
    return;
  }
  if (const SharedSecret* secret = ctx_.options.secret.get()) {
    // Mutual: a receiver that cannot prove it holds the secret gets no data.
    if (!receiver_nonce_ || !m.proof) {
      finish_session(SendReport::Outcome::kAuthFailed,
                     "the receiver at " + ctx_.control_ep.to_string() +
                         " did not authenticate itself: it runs without --secret-file, or it is "
                         "not the receiver you meant; nothing was sent");
      return;
    }
    if (!proofs_match(*m.proof, secret->receiver_proof(our_nonce_, *receiver_nonce_))) {
      finish_session(SendReport::Outcome::kAuthFailed,
                     "the receiver at " + ctx_.control_ep.to_string() +
                         " does not hold our secret (its proof does not match); nothing was "
                         "sent");
      return;
    }
    milestone("receiver authenticated");
  }
  backoff_.reset();
  window_files_ = std::min<std::size_t>(kMaxWindowFiles, m.max_open);
  ctx_.data_ep = ctx_.control_ep;
  ctx_.data_ep.set_port(m.data_port);
  state_ = State::kActive;
  milestone("HELLO answered");
  bool again = std::exchange(reconnecting_, false);
  if (again)
    ctx_.log.warn("reconnected to " + ctx_.control_ep.to_string() + "; sending the " +
                  std::to_string(resend_.size()) + " unfinished files again");
  streams_given_up_ = 0;
  for (auto& s : ctx_.streams) {
    OutboundStream* stream = s.get();
    ctx_.loops[stream->loop_index()]->post([stream, again, ep = ctx_.data_ep] {
      if (again)
        stream->retarget(ep);
      else
        stream->start(ep);
    });
  }
  while (!resend_dirs_.empty()) {
    MkdirRequest d = std::move(resend_dirs_.front());
    resend_dirs_.pop_front();
    d.id = next_id_++;
    open_dirs_.emplace(d.id, OpenDir{d.path, d});
    send_line(d);
  }
  feed();
}

void ControlClient::feed() {
  // Open at most a slice of files per turn of the loop, so the first SENDs are on the wire (and
  // the receiver busy) while we open the rest, instead of after the whole window is open.
  constexpr int kFeedSlice = 64;
  int opened = 0;
  while (state_ == State::kActive &&
         open_files_.size() + open_dirs_.size() + open_links_.size() < window_files_ &&
         (open_bytes_ < kMaxWindowBytes || open_files_.empty())) {
    if (opened++ == kFeedSlice) {
      if (!feed_posted_) {
        feed_posted_ = true;
        loop_.post([this] {
          feed_posted_ = false;
          feed();
        });
      }
      return;
    }
    if (!resend_links_.empty()) {
      OpenLink l = std::move(resend_links_.front());
      resend_links_.pop_front();
      send_link(std::move(l));
      continue;
    }
    if (!resend_.empty()) {
      Resend r = std::move(resend_.front());
      resend_.pop_front();
      open_next_file(r.entry, r.attempt);
      continue;
    }
    if (walk_done_) break;
    auto e = walker_.next();
    collect_walk_problems();
    if (!e) {
      walk_done_ = true;
      milestone("walk finished");
      break;
    }
    if (e->kind == SourceEntry::Kind::kDirectory) {
      MkdirRequest req{next_id_++, e->wire_path, e->mode, e->mtime};
      open_dirs_.emplace(req.id, OpenDir{e->source_path, req});
      send_line(req);
    } else if (e->kind == SourceEntry::Kind::kSymlink) {
      send_link(OpenLink{e->source_path, LinkRequest{0, e->wire_path, e->link_target, e->mtime}});
    } else {
      open_next_file(*e, 1);
    }
  }
  if (state_ == State::kActive && walk_done_ && resend_.empty() && open_files_.empty() &&
      open_dirs_.empty() && open_links_.empty() && resend_links_.empty()) {
    state_ = State::kBye;
    milestone("every file has its verdict; BYE");
    send_line(ByeRequest{});
  }
}

void ControlClient::send_link(OpenLink link) {
  if (links_unsupported_) {
    record_failure(link.source_path, kLinksUnsupported);
    return;
  }
  link.request.id = next_id_++;
  links_sent_.push_back(link.request.id);
  send_line(link.request);
  open_links_.emplace(link.request.id, std::move(link));
}

void ControlClient::links_unsupported(const OpenLink& link) {
  if (!links_unsupported_)
    ctx_.log.warn("the receiver at " + ctx_.control_ep.to_string() +
                  " does not know LINK (it predates symlink support): symlinks are not sent");
  links_unsupported_ = true;
  record_failure(link.source_path, kLinksUnsupported);
}

void ControlClient::forget_answered_links() {
  while (!links_sent_.empty() && !open_links_.count(links_sent_.front()))
    links_sent_.pop_front();
}

bool ControlClient::open_next_file(const SourceEntry& e, int attempt) {
  if (e.synthetic) return open_synthetic(e, attempt);
  // Relative to its directory when the walk kept it open: one path component to resolve
  // instead of the whole path (a tenth of the sender's CPU on small files). O_NOFOLLOW: the
  // walk saw a regular file there; a symlink swapped in since is not followed.
  UniqueFd fd(
      e.dir ? ::openat(e.dir->get(), e.name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW)
            : ::open(e.source_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) {
    record_failure(e.source_path, "cannot open: " + errno_text(errno));
    return false;
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    record_failure(e.source_path, "cannot stat: " + errno_text(errno));
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    record_failure(e.source_path, "is no longer a regular file");
    return false;
  }
  // Sequential reads of a large file: ask for aggressive readahead. (Small files are read in
  // one go; the hint would only cost a syscall.)
  if (st.st_size >= (1 << 20)) posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  auto f = std::make_shared<OutgoingFile>();
  f->fd = std::move(fd);
  f->size = static_cast<std::uint64_t>(st.st_size);
  f->mode = st.st_mode & 07777;
  f->mtime = Mtime{st.st_mtim.tv_sec, static_cast<std::uint32_t>(st.st_mtim.tv_nsec)};
  f->ctime = st.st_ctim;
  send_file(std::move(f), e, attempt);
  return true;
}

bool ControlClient::open_synthetic(const SourceEntry& e, int attempt) {
  auto f = std::make_shared<OutgoingFile>();
  f->synthetic = true;
  f->size = e.size;
  f->mode = e.mode;
  f->mtime = e.mtime;
  send_file(std::move(f), e, attempt);
  return true;
}

// Names the file, plans its chunks and sends its SEND.
void ControlClient::send_file(std::shared_ptr<OutgoingFile> f, const SourceEntry& e, int attempt) {
  f->id = next_id_++;
  f->wire_path = e.wire_path;
  f->source_path = e.source_path;
  std::uint64_t preferred =
      ctx_.options.chunk_bytes ? ctx_.options.chunk_bytes : kDefaultChunkBytes;
  f->chunk_bytes = choose_chunk_bytes(f->size, preferred);
  f->chunk_count = static_cast<std::uint32_t>((f->size + f->chunk_bytes - 1) / f->chunk_bytes);
  f->attempt = attempt;
  SendRequest req{f->id,          f->wire_path,       f->size,    f->mode, f->mtime,
                  f->chunk_bytes, SkipPolicy::kNever, Digest128{}};
  // A re-sent file (its first attempt failed) is never skipped: whatever is there now is not
  // what we mean to deliver. Generated files (benchmarks) are never skipped either.
  if (!ctx_.options.force && attempt == 1 && !f->synthetic) {
    req.skip = SkipPolicy::kSizeMtime;
    if (ctx_.options.checksum) {
      // Reads the whole file here, on the control loop, before it is sent: --checksum trades
      // speed for certainty, like rsync -c.
      auto d = file_digest_of(f->fd.get(), f->size, f->chunk_bytes);
      if (!d) {
        record_failure(f->source_path, "cannot read it: " + errno_text(errno));
        return;
      }
      req.skip = SkipPolicy::kDigest;
      req.digest = *d;
    }
  }
  open_bytes_ += f->size;
  send_line(req);
  open_files_.emplace(f->id, std::move(f));
}

void ControlClient::on_ready(const ReadyReply& m) {
  auto it = open_files_.find(m.id);
  if (it == open_files_.end()) return;  // cancelled meanwhile
  std::shared_ptr<OutgoingFile> f = it->second;
  f->token = m.token;
  if (++readies_ == 1) milestone("first READY");
  if (f->chunk_count == 0) {
    send_line(DoneRequest{f->id, file_digest_from_chunks({})});
    return;
  }
  ctx_.scheduler->add_file(f, m.have);
}

void ControlClient::file_chunks_done(const std::shared_ptr<OutgoingFile>& f) {
  auto it = open_files_.find(f->id);
  if (it == open_files_.end() || it->second != f || state_ != State::kActive) return;
  if (f->chunk_count == 1) {
    // The receiver published it when its one frame verified (the stream checked that the
    // source had not changed before sending the frame's digest).
    file_delivered(it);
    feed();
    return;
  }
  // A file that changed while it was read may have been sent torn: check before DONE.
  if (f->changed_since_opened()) {
    send_line(CancelRequest{f->id});
    open_files_.erase(it);
    open_bytes_ -= f->size;
    retry_or_fail(f, "it changed while being sent", true);
    feed();
    return;
  }
  send_line(DoneRequest{f->id, file_digest_from_chunks(f->chunk_digests)});
}

void ControlClient::file_delivered(
    std::unordered_map<std::uint64_t, std::shared_ptr<OutgoingFile>>::iterator it) {
  if (report_.files == 0) milestone("first file delivered");
  ++report_.files;
  report_.bytes += it->second->size;
  ctx_.files_done.fetch_add(1, std::memory_order_relaxed);
  ctx_.bytes_done.fetch_add(it->second->size, std::memory_order_relaxed);
  open_bytes_ -= it->second->size;
  open_files_.erase(it);
}

void ControlClient::file_failed(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                                bool retryable) {
  auto it = open_files_.find(f->id);
  if (it == open_files_.end() || it->second != f) return;
  if (state_ == State::kActive) send_line(CancelRequest{f->id});
  open_files_.erase(it);
  open_bytes_ -= f->size;
  retry_or_fail(f, reason, retryable);
  feed();
}

void ControlClient::on_ok(const OkReply& m) {
  if (auto d = open_dirs_.find(m.id); d != open_dirs_.end()) {
    ++report_.directories;
    open_dirs_.erase(d);
  } else if (auto l = open_links_.find(m.id); l != open_links_.end()) {
    ++report_.symlinks;
    open_links_.erase(l);
    forget_answered_links();
  } else if (auto it = open_files_.find(m.id); it != open_files_.end()) {
    if (m.skipped) {
      // Already there and identical: nothing was sent, nothing to count as delivered.
      ++report_.unchanged;
      report_.unchanged_bytes += it->second->size;
      ctx_.files_done.fetch_add(1, std::memory_order_relaxed);
      ctx_.bytes_done.fetch_add(it->second->size, std::memory_order_relaxed);
      ctx_.unchanged_bytes.fetch_add(it->second->size, std::memory_order_relaxed);
      open_bytes_ -= it->second->size;
      open_files_.erase(it);
    } else {
      file_delivered(it);
    }
  }
  feed();
}

void ControlClient::on_err(const ErrReply& m) {
  if (!m.id) {
    if (m.code == ErrorCode::kBusy && state_ == State::kHello) {
      // Too many sessions on the receiver right now: like a refused connection, retry.
      connect_failed(ECONNREFUSED, "the receiver is busy: " + m.message);
      return;
    }
    if (m.code == ErrorCode::kAuthRequired || m.code == ErrorCode::kAuthFailed) {
      finish_session(
          SendReport::Outcome::kAuthFailed,
          "the receiver at " + ctx_.control_ep.to_string() + " refused us: " + m.message);
      return;
    }
    if (m.code == ErrorCode::kUnknownVerb && state_ != State::kHello) {
      // LINK is the one verb a version-1 receiver may not know, and it answers it at once, in
      // line order, without the id: the oldest LINK still unanswered is the one refused.
      forget_answered_links();
      if (!links_sent_.empty()) {
        auto l = open_links_.find(links_sent_.front());
        links_unsupported(l->second);
        open_links_.erase(l);
        forget_answered_links();
        feed();
        return;
      }
    }
    std::string why = "the receiver says: " + std::string(wire_name(m.code)) + ": " + m.message;
    if (m.code == ErrorCode::kShutdown || m.code == ErrorCode::kTimeout) {
      session_lost(why);
      return;
    }
    finish_session(SendReport::Outcome::kProtocolError, why);
    return;
  }
  if (auto d = open_dirs_.find(*m.id); d != open_dirs_.end()) {
    record_failure(d->second.source_path,
                   "the receiver could not create the directory: " + m.message);
    open_dirs_.erase(d);
    feed();
    return;
  }
  if (auto l = open_links_.find(*m.id); l != open_links_.end()) {
    OpenLink link = std::move(l->second);
    open_links_.erase(l);
    forget_answered_links();
    if (m.code == ErrorCode::kUnknownVerb) {
      links_unsupported(link);
    } else if (is_retryable(m.code) && link.attempt < kMaxFileAttempts) {
      ++file_resends_;
      ctx_.log.warn("'" + link.source_path + "': the receiver could not make the symlink (" +
                    std::string(wire_name(m.code)) + ": " + m.message + "); sending it again");
      ++link.attempt;
      resend_links_.push_back(std::move(link));
    } else {
      record_failure(link.source_path, "the receiver could not make the symlink: " +
                                           std::string(wire_name(m.code)) + ": " + m.message);
    }
    feed();
    return;
  }
  auto it = open_files_.find(*m.id);
  if (it == open_files_.end()) return;  // e.g. the reply to our own CANCEL
  std::shared_ptr<OutgoingFile> f = it->second;
  open_files_.erase(it);
  open_bytes_ -= f->size;
  // Chunks still queued for it are dropped by the scheduler.
  ctx_.scheduler->fail(ChunkJob{f, 0, false}, "", false);
  retry_or_fail(f, "the receiver refused it: " + std::string(wire_name(m.code)) + ": " + m.message,
                is_retryable(m.code));
  feed();
}

SourceEntry ControlClient::entry_of(const OutgoingFile& f) {
  SourceEntry e;
  e.kind = SourceEntry::Kind::kFile;
  e.source_path = f.source_path;
  e.wire_path = f.wire_path;
  e.synthetic = f.synthetic;
  e.size = f.size;
  e.mode = f.mode;
  e.mtime = f.mtime;
  return e;
}

void ControlClient::retry_or_fail(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                                  bool retryable) {
  if (retryable && f->attempt < kMaxFileAttempts) {
    ++file_resends_;
    ctx_.file_resends.fetch_add(1, std::memory_order_relaxed);
    ctx_.log.warn("'" + f->source_path + "': " + reason + "; sending it again (attempt " +
                  std::to_string(f->attempt + 1) + " of " + std::to_string(kMaxFileAttempts) + ")");
    resend_.push_back(Resend{entry_of(*f), f->attempt + 1});
    return;
  }
  record_failure(f->source_path, reason);
}

void ControlClient::record_failure(const std::string& path, const std::string& reason) {
  report_.failed.push_back(FailedFile{path, reason});
  ctx_.files_failed.fetch_add(1, std::memory_order_relaxed);
}

void ControlClient::collect_walk_problems() {
  for (auto& p : walker_.take_problems()) {
    if (p.is_failure) {
      record_failure(p.path, p.reason);
    } else {
      ++report_.skipped;
      ctx_.log.warn("'" + p.path + "': " + p.reason);
    }
  }
}

void ControlClient::stream_recovered() {
  if (streams_given_up_ > 0) --streams_given_up_;
}

void ControlClient::stream_gave_up(const std::string& why) {
  if (state_ == State::kDone) return;
  if (++streams_given_up_ < ctx_.streams.size()) return;
  // Re-establishing the session retargets the streams; no verdict on them meanwhile.
  if (state_ != State::kActive && state_ != State::kBye) return;
  // Every data connection is gone. The control connection usually says why a moment later
  // (the receiver is shutting down, say): give it that moment before concluding.
  streams_lost_reason_ = "lost every data connection to " + ctx_.data_ep.to_string() + ": " + why;
  arm_timer(kStreamsLostGraceNs, kTimer);
}

void ControlClient::cancel() {
  if (state_ != State::kDone) finish_session(SendReport::Outcome::kInterrupted, "cancelled");
}

void ControlClient::send_line(const ClientMessage& m) {
  out_queued_ += format_line(m);
  flush();
}

void ControlClient::flush() {
  if (send_armed_ || closing() || !fd_) return;
  if (out_sent_ == out_inflight_.size()) {
    out_inflight_.clear();
    out_sent_ = 0;
    if (out_queued_.empty()) return;
    out_inflight_.swap(out_queued_);
  }
  send_armed_ = true;
  arm_send(fd_.get(), out_inflight_.data() + out_sent_, out_inflight_.size() - out_sent_, kSend);
}

void ControlClient::finish_session(SendReport::Outcome outcome, const std::string& why) {
  if (state_ == State::kDone) return;
  state_ = State::kDone;
  if (outcome != SendReport::Outcome::kOk) {
    report_.outcome = outcome;
    report_.error = why;
    // Whatever was in flight did not arrive.
    for (auto& [id, f] : open_files_)
      record_failure(f->source_path, "not delivered: " + why);
    for (auto& r : resend_)
      record_failure(r.entry.source_path, "not delivered: " + why);
    for (auto& [id, d] : open_dirs_)
      record_failure(d.source_path, "not created: " + why);
    for (auto& d : resend_dirs_)
      record_failure(d.path, "not created: " + why);
    for (auto& [id, l] : open_links_)
      record_failure(l.source_path, "not created: " + why);
    for (auto& l : resend_links_)
      record_failure(l.source_path, "not created: " + why);
  }
  open_files_.clear();
  open_dirs_.clear();
  resend_dirs_.clear();
  open_links_.clear();
  resend_links_.clear();
  links_sent_.clear();
  resend_.clear();
  ctx_.scheduler->close();
  for (auto& s : ctx_.streams) {
    OutboundStream* stream = s.get();
    ctx_.loops[stream->loop_index()]->post([stream] { stream->finish(); });
  }
  begin_close(fd_.get());
}

void ControlClient::milestone(const char* what) {
  if (!ctx_.log.enabled(LogLevel::kDebug)) return;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  started_)
                .count();
  ctx_.log.debug("+" + std::to_string(us / 1000) + "." + std::to_string(us % 1000 / 100) +
                 " ms: " + what + " (" + std::to_string(report_.files) + " files done, " +
                 std::to_string(open_files_.size()) + " open)");
}

void ControlClient::on_drained() {
  fd_.reset();
  ctx_.object_finished(0);
}

}  // namespace ackxfer
