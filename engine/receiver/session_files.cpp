// ControlSession, files: SEND (skip checks, resume, temp files, READY), DONE (verify, publish),
// CANCEL, the open-file credit, local work on the work queue, journal checkpoints.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <optional>

#include "display.h"
#include "error.h"
#include "fs/file_digest.h"
#include "fs/partial.h"
#include "protocol/limits.h"
#include "receiver/control_session.h"

namespace ackxfer {
namespace {

// Files smaller than this are not fallocated before READY (see open_file).
constexpr std::uint64_t kReserveMinBytes = 1 << 20;

std::string dir_key_of(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

// What DONE or CANCEL for a one-chunk file is told: its frame's ack gave its verdict.
std::string finished_by_its_frame(const IncomingFile& file) {
  return quote_name(file.path()) + " was already finished when its frame was verified";
}

}  // namespace

std::optional<RelativePath> ControlSession::checked_path(std::uint64_t id,
                                                         const std::string& path) {
  auto checked = validate_relative_path(path);
  if (auto* why = std::get_if<std::string>(&checked)) {
    refuse(id, ErrorCode::kBadPath, quote_name(path) + ": " + *why);
    return std::nullopt;
  }
  return std::get<RelativePath>(std::move(checked));
}

bool ControlSession::enter_parent(std::uint64_t id, std::string_view path,
                                  const RelativePath& rel) {
  std::string key = dir_key_of(path);
  const std::int64_t now = loop_.now_ms();
  if (cached_dir_ && key == cached_dir_key_ && now - cached_dir_ms_ < kDirCacheMs) return true;
  auto r = worker_.ctx().destination.open_parent(rel);
  if (auto* e = std::get_if<FsError>(&r)) {
    cached_dir_.reset();
    refuse(id, error_code_from_errno(e->err), e->what);
    return false;
  }
  cached_dir_ = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(r)));
  cached_dir_key_ = std::move(key);
  cached_dir_ms_ = now;
  return true;
}

void ControlSession::handle(const SendRequest& m) {
  auto valid = checked_path(m.id, m.path);
  if (!valid) return;
  if (id_open(m.id)) {
    reply_error(m.id, ErrorCode::kDuplicateId, "id " + std::to_string(m.id) + " is still open");
    return;
  }
  if (files_.size() >= credit_) {
    sweep_closed_files();
    refresh_credit();
  }
  if (files_.size() >= credit_) {
    reply_error(m.id, ErrorCode::kTooManyOpen,
                "at most " + std::to_string(credit_) +
                    " files may be open at once in this session now (it grows by one per file "
                    "delivered, up to " +
                    std::to_string(kMaxOpenFilesPerSession) + ")");
    return;
  }
  const RelativePath& rel = *valid;
  ReceiverContext& ctx = worker_.ctx();
  if (ctx.discard) {
    // Memory-to-memory: a file with no temp file; its bytes are verified and dropped.
    ready(m, TempFile(), OpenFileSlot(), false);
    return;
  }
  // Every temp file is an fd: the receiver's total is bounded, whichever sessions hold them.
  OpenFileSlot slot = OpenFileSlot::take(ctx.open_files, ctx.max_open_files);
  if (!slot) {
    // This session's own finished one-chunk files may be what fills the budget.
    sweep_closed_files();
    slot = OpenFileSlot::take(ctx.open_files, ctx.max_open_files);
  }
  if (!slot) {
    ctx.stats.files_refused_busy.fetch_add(1, std::memory_order_relaxed);
    reply_error(m.id, ErrorCode::kBusy,
                "the receiver has its maximum of " + std::to_string(ctx.max_open_files) +
                    " files open across all sessions; try again shortly");
    return;
  }
  if (!enter_parent(m.id, m.path, rel)) return;
  if (m.skip != SkipPolicy::kNever && !fresh_dirs_.count(directory_hash(dir_key_of(m.path))) &&
      try_skip(m, rel, slot))
    return;
  open_file(m, rel, std::move(slot));
}

bool ControlSession::try_skip(const SendRequest& m, const RelativePath& rel, OpenFileSlot& slot) {
  // Opened, not stat'ed by name: what we compare (and chmod) is the file itself, never what a
  // symlink put there meanwhile points to.
  const std::string name(rel.components.back());
  UniqueFd fd(openat(cached_dir_->get(), name.c_str(),
                     O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st {};
  if (fd && fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) {
    // Publishing could only fail (a file cannot replace a directory): say so before any byte
    // moves. (Without skip=, the same error comes from publishing, after the data.)
    refuse(m.id, ErrorCode::kIsDirectory, quote_name(m.path) + " is a directory on the receiver");
    return true;
  }
  if (!fd || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) != m.size)
    return false;
  ReceiverContext& ctx = worker_.ctx();
  if (m.skip == SkipPolicy::kSizeMtime) {
    if (st.st_mtim.tv_sec != m.mtime.sec || st.st_mtim.tv_nsec != static_cast<long>(m.mtime.nsec))
      return false;
    // Same content as far as size and mtime tell; bring the mode in line if it differs. Not
    // through another name: a hard link's inode may be a file outside --dir (someone with a
    // shell there linked it in), and its mode is not the sender's to set. Such a file is sent
    // instead, and publishing replaces this name with a file of its own.
    if ((st.st_mode & 0777) != (m.mode & 0777)) {
      if (st.st_nlink != 1) return false;
      fchmod(fd.get(), m.mode & 0777);
    }
    reply_skipped(m.id);
    return true;
  }
  // skip=xxh3: a file checked before and unchanged since is not read again.
  const DigestCache::Key key = DigestCache::key_of(st, m.chunk);
  if (auto known = ctx.digests.find(key)) {
    ctx.stats.digests_remembered.fetch_add(1, std::memory_order_relaxed);
    if (*known != m.digest) return false;  // different content: send it
    reply_skipped(m.id);
    return true;
  }
  // Read this version of the file enough times already (another chunk size, a moved ctime):
  // the peer sends the data instead (digest_cache.h).
  if (!ctx.digests.may_read(st)) {
    ctx.stats.digest_reads_declined.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // Otherwise hash the existing file on the work queue, in slices; the loop carries on.
  timespec started{};
  clock_gettime(CLOCK_REALTIME, &started);
  auto shared_fd = std::make_shared<UniqueFd>(std::move(fd));
  auto hasher = std::make_shared<FileHasher>(shared_fd->get(), ChunkPlan(m.size, m.chunk));
  auto result = std::make_shared<std::optional<Digest128>>();
  SessionFile f;
  f.stage = SessionFile::Stage::kChecking;
  f.request = m;
  f.slot = std::move(slot);
  f.job = start_job(
      m.id, m.size,
      [shared_fd, hasher, result, key, started, &cache = ctx.digests](LocalJob& j) {
        if (!hasher->step(kLocalWorkSliceBytes)) return false;  // unreadable: not the same
        j.done.store(hasher->hashed(), std::memory_order_relaxed);
        if (!hasher->done()) return true;
        *result = hasher->digest();
        struct stat after {};
        if (fstat(shared_fd->get(), &after) == 0) cache.remember(key, after, started, **result);
        return false;
      },
      [this, id = m.id, want = m.digest, result](LocalJob&) {
        checked(id, *result && **result == want);
      });
  files_.emplace(m.id, std::move(f));
  return true;
}

void ControlSession::reply_skipped(std::uint64_t id) {
  worker_.ctx().stats.files_skipped.fetch_add(1, std::memory_order_relaxed);
  ++skipped_;
  reply(OkReply{id, true});
}

void ControlSession::checked(std::uint64_t id, bool same) {
  auto it = files_.find(id);
  if (it == files_.end() || it->second.stage != SessionFile::Stage::kChecking ||
      state_ != State::kActive)
    return;
  SessionFile f = std::move(it->second);
  files_.erase(it);
  if (same) {
    reply_skipped(id);
    return;
  }
  auto valid = validate_relative_path(f.request.path);
  const auto& rel = std::get<RelativePath>(valid);
  if (enter_parent(id, f.request.path, rel)) open_file(f.request, rel, std::move(f.slot));
}

std::shared_ptr<ControlSession::LocalJob> ControlSession::start_job(
    std::uint64_t /*id*/, std::uint64_t total, std::function<bool(LocalJob&)> slice,
    std::function<void(LocalJob&)> done) {
  auto job = std::make_shared<LocalJob>();
  job->total = total;
  Loop* loop = &loop_;
  worker_.ctx().work.submit(
      [this, job, loop, alive = alive_, slice = std::move(slice),
       done = std::move(done)]() -> bool {
        if (job->cancelled.load(std::memory_order_relaxed)) return false;
        if (slice(*job)) return true;
        loop->post([this, job, alive, done] {
          if (*alive && !job->cancelled.load(std::memory_order_relaxed)) done(*job);
        });
        return false;
      },
      this);
  return job;
}

bool ControlSession::report_local_work() {
  bool moved = false;
  for (auto& [id, f] : files_) {
    if (f.stage == SessionFile::Stage::kPublishing) {
      // Flushing (recv --fsync): the verdict is on its way; the sender must not give up.
      moved = true;
      if (negotiated(Feature::kProgress)) reply(ProgressNote{id, f.file->size(), f.file->size()});
      continue;
    }
    if (!f.job) continue;
    std::uint64_t done = f.job->done.load(std::memory_order_relaxed);
    if (done == f.job->reported) continue;
    f.job->reported = done;
    moved = true;
    if (negotiated(Feature::kProgress)) reply(ProgressNote{id, done, f.job->total});
  }
  return moved;
}

void ControlSession::open_file(const SendRequest& m, const RelativePath& rel, OpenFileSlot slot) {
  ReceiverContext& ctx = worker_.ctx();
  // The first chunk is allocated now, later ones as they arrive (IncomingFile::reserve_chunk).
  // Small files are not allocated ahead at all: their one write allocates as much, and says
  // ENOSPC just as clearly, for one syscall less per file.
  std::uint64_t reserve_now = m.size < kReserveMinBytes ? 0 : m.chunk;
  // A one-chunk file is written once and published when its frame verifies: an anonymous
  // temp file spares a directory update; larger files keep a named, resumable partial.
  bool anonymous = m.size <= m.chunk || ctx.keep_partials_s == 0;
  if (anonymous) {
    auto temp = ctx.destination.create_temp(cached_dir_, rel.components.back(), m.size, reserve_now,
                                            true, m.mode);
    if (auto* e = std::get_if<FsError>(&temp)) {
      refuse(m.id, error_code_from_errno(e->err), e->what);
      return;
    }
    ready(m, std::move(std::get<TempFile>(temp)), std::move(slot), false);
    return;
  }
  auto p = ctx.destination.open_partial(cached_dir_, rel.components.back(), m.size, m.mtime,
                                        m.chunk, reserve_now);
  if (auto* e = std::get_if<FsError>(&p)) {
    refuse(m.id, error_code_from_errno(e->err), e->what);
    return;
  }
  auto& part = std::get<Destination::Partial>(p);
  if (part.have.empty()) {
    ready(m, std::move(part.temp), std::move(slot), part.resumable);
    return;
  }
  // The journal says which chunks were verified. They are offered at once, and read back
  // before the file is published (after DONE: read_back()), so that a disk error, or anyone
  // writing into the partial since, cannot end up in a published file, and a peer that resumes
  // and leaves makes the receiver read nothing. Those read back before and found as the
  // journal says, with the partial unchanged since, are not read again
  // (ReceiverContext::read_backs).
  auto kept = std::make_shared<KeptClaims>();
  kept->claims = std::move(part.have);
  kept->digest = claims_digest(kept->claims, m.size, m.chunk);
  struct stat st {};
  if (fstat(part.temp.fd(), &st) == 0) {
    kept->at_send = ReadBackMemory::key_of(st, m.chunk);
    if (auto seen = ctx.read_backs.find(*kept->at_send); seen && seen->claims == kept->digest)
      kept->trusted = std::min(seen->verified, kept->claims.size());
  }
  ready(m, std::move(part.temp), std::move(slot), true, std::move(kept));
}

void ControlSession::ready(const SendRequest& m, TempFile temp, OpenFileSlot slot, bool resumable,
                           std::shared_ptr<const KeptClaims> kept) {
  ReceiverContext& ctx = worker_.ctx();
  Token token = Token::random();
  static const std::vector<JournalEntry> none;
  const std::vector<JournalEntry>& have = kept ? kept->claims : none;
  auto file = std::make_shared<IncomingFile>(m, token, std::move(temp), totals_, std::move(slot),
                                             have, resumable);
  if (!have.empty()) {
    ctx.stats.files_resumed.fetch_add(1, std::memory_order_relaxed);
    ctx.stats.bytes_resumed.fetch_add(file->resumed_bytes(), std::memory_order_relaxed);
    ctx.log.info("resuming " + quote_name(m.path) + ": " + std::to_string(file->resumed_bytes()) +
                 " of " + std::to_string(m.size) +
                 " bytes kept (read back before it is published)");
  }
  ctx.registry.add(file);
  SessionFile f;  // open: the file itself holds what the request said
  f.stage = SessionFile::Stage::kOpen;
  f.file = std::move(file);
  f.kept = std::move(kept);
  files_.emplace(m.id, std::move(f));
  reply(ReadyReply{m.id, token, to_ranges(have)});
}

void ControlSession::handle(const DoneRequest& m) {
  auto it = files_.find(m.id);
  if (it == files_.end()) {
    reply_error(m.id, ErrorCode::kUnknownId, "no open file has id " + std::to_string(m.id));
    return;
  }
  if (it->second.stage != SessionFile::Stage::kOpen) {
    // The file is there, and will get its one verdict: this line is out of order, said about
    // the session (ERR -) so that it is not taken for that verdict; the file goes on.
    worker_.ctx().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    const std::string what = "DONE " + std::to_string(m.id);
    reply_error(std::nullopt, ErrorCode::kBadLine,
                it->second.stage == SessionFile::Stage::kChecking
                    ? what + " before its READY; the file goes on"
                    : what + " again, while its first DONE is being answered");
    return;
  }
  std::shared_ptr<IncomingFile> file = it->second.file;
  ReceiverContext& ctx = worker_.ctx();
  ctx.registry.remove(file->token());
  std::string name = quote_name(file->path());
  switch (file->verify(m.digest)) {
    case IncomingFile::Verdict::kVerified:
      publish(m.id);
      return;
    case IncomingFile::Verdict::kReadBack:
      read_back(m.id);
      return;
    case IncomingFile::Verdict::kAlreadyClosed:
      // A one-chunk file is published (or failed) when its frame is verified; no DONE needed.
      files_.erase(it);
      reply_error(m.id, ErrorCode::kUnknownId, finished_by_its_frame(*file));
      return;
    case IncomingFile::Verdict::kIncomplete:
      files_.erase(it);
      reply_error(m.id, ErrorCode::kIncomplete, name + ": DONE before every chunk was verified");
      break;
    case IncomingFile::Verdict::kMismatch:
      files_.erase(it);
      reply_error(m.id, ErrorCode::kMismatch,
                  name + ": file digest does not match the chunks received");
      break;
  }
  ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
}

void ControlSession::publish(std::uint64_t id) {
  SessionFile& f = files_.at(id);
  ReceiverContext& ctx = worker_.ctx();
  if (!ctx.publisher || f.file->discarding()) {
    published(id, f.file->publish(false));
    return;
  }
  // Durably, on the publisher's thread; the verdict waits for it.
  f.stage = SessionFile::Stage::kPublishing;
  Loop* loop = &loop_;
  ctx.publisher->submit(DurablePublisher::Job::publishing(
      f.file, [this, loop, alive = alive_, id](DurablePublisher::Result r) {
        loop->post([this, alive, id, r = std::move(r)] {
          if (*alive) published(id, r);
        });
      }));
}

void ControlSession::published(std::uint64_t id, const std::variant<std::monostate, FsError>& r) {
  auto it = files_.find(id);
  if (it == files_.end()) return;
  std::shared_ptr<IncomingFile> file = std::move(it->second.file);
  files_.erase(it);
  ReceiverContext& ctx = worker_.ctx();
  if (auto* e = std::get_if<FsError>(&r)) {
    ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning(
        [&] { return "session from " + peer_ + ": could not publish: " + cut_for_log(e->what); });
    reply_error(id, error_code_from_errno(e->err), e->what);
  } else {
    ctx.stats.files_published.fetch_add(1, std::memory_order_relaxed);
    ctx.stats.bytes_published.fetch_add(file->size(), std::memory_order_relaxed);
    reply(OkReply{id, false});
  }
  refresh_credit();
}

void ControlSession::handle(const CancelRequest& m) {
  auto it = files_.find(m.id);
  if (it == files_.end()) {
    reply_error(m.id, ErrorCode::kUnknownId, "no open file has id " + std::to_string(m.id));
    return;
  }
  SessionFile& f = it->second;
  // Verified and being flushed: too late to cancel; its verdict answers.
  if (f.stage == SessionFile::Stage::kPublishing) return;
  if (f.stage == SessionFile::Stage::kOpen && f.file->closed()) {
    // A one-chunk file: its frame's ack gave the verdict (published, or not), and nothing is
    // left to cancel. It used to be answered "cancelled ... nothing was published" even when
    // it had been published.
    worker_.ctx().registry.remove(f.file->token());
    const std::string why = finished_by_its_frame(*f.file);
    files_.erase(it);
    reply_error(m.id, ErrorCode::kUnknownId, why);
    return;
  }
  if (f.job) f.job->cancelled = true;
  if (f.file) {
    worker_.ctx().registry.remove(f.file->token());
    f.file->abandon(false);
  }
  files_.erase(it);
  reply_error(m.id, ErrorCode::kCancelled, "cancelled by the sender; nothing was published");
}

void ControlSession::handle(const ProgressNote&) {
  // The sender is hashing a file before it can go on: the line itself was the activity. From a
  // sender whose HELLO did not agree on it, it is a line outside the protocol, said as such
  // (as the sender does with a receiver's); like any bad line, it does not end the session.
  if (!negotiated(Feature::kProgress)) {
    worker_.ctx().stats.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    reply_error(std::nullopt, ErrorCode::kBadLine,
                "PROGRESS, but 'progress' was not agreed on in HELLO");
  }
}

void ControlSession::refresh_credit() {
  if (state_ != State::kActive) return;
  std::uint64_t earned = totals_->files.load(std::memory_order_relaxed) + skipped_;
  credit_ = static_cast<std::size_t>(
      std::min<std::uint64_t>(kMaxOpenFilesPerSession, kInitialOpenFiles + earned));
  // Announce in steps of a quarter: a few dozen CREDIT lines take a session to the maximum.
  if (negotiated(Feature::kCredit) && credit_ > credit_announced_ &&
      (credit_ == kMaxOpenFilesPerSession ||
       credit_ >= credit_announced_ + credit_announced_ / 4)) {
    credit_announced_ = credit_;
    reply(CreditReply{static_cast<std::uint32_t>(credit_)});
  }
}

void ControlSession::sweep_closed_files() {
  verdicts_swept_ = verdicts();
  std::erase_if(files_, [](const auto& kv) {
    return kv.second.stage == SessionFile::Stage::kOpen && kv.second.file->closed();
  });
}

void ControlSession::abandon_files(bool keep) {
  ReceiverContext& ctx = worker_.ctx();
  keep = keep && ctx.keep_partials_s > 0;
  for (auto& [id, f] : files_) {
    if (f.job) f.job->cancelled = true;
    // Being read back after DONE: kept or removed as before DONE (so a BYE, which only a peer
    // that did not wait for the verdict sends then, removes it).
    if (f.file &&
        (f.stage == SessionFile::Stage::kOpen || f.stage == SessionFile::Stage::kReadingBack)) {
      ctx.registry.remove(f.file->token());
      if (f.file->abandon(keep)) {
        ctx.stats.partials_kept.fetch_add(1, std::memory_order_relaxed);
        ctx.log.info("kept the partial file of " + quote_name(f.file->path()) +
                     " for resuming (see --keep-partials)");
      }
    }
  }
  files_.clear();
}

void ControlSession::run_checkpoints() {
  if (fsync_armed_ || !checkpoints_.empty()) return;
  for (auto& [id, f] : files_) {
    if (f.stage != SessionFile::Stage::kOpen || !f.file->resumable()) continue;
    auto entries = f.file->take_unjournaled();
    if (!entries.empty()) checkpoints_.push_back(Checkpoint{f.file, std::move(entries)});
  }
  next_checkpoint();
}

void ControlSession::next_checkpoint() {
  if (fsync_armed_ || checkpoints_.empty() || closing()) return;
  fsync_armed_ = true;
  arm_fdatasync(checkpoints_.front().file->fd(), kFsync);
}

}  // namespace ackxfer
