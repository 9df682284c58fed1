// ControlClient, the window: walking, opening, hashing for --checksum, SEND/MKDIR/LINK.
#include <fcntl.h>
#include <sys/stat.h>

#include "display.h"
#include "error.h"
#include "fs/file_digest.h"
#include "protocol/limits.h"
#include "sender/control_client.h"

namespace ackxfer {
namespace {

// Whole-file hashing for --checksum runs in slices of this many bytes on the work queue.
constexpr std::uint64_t kChecksumSliceBytes = 16 << 20;
// Files opened per turn of the loop: the first SENDs are on the wire (and the receiver busy)
// while we open the rest, instead of after the whole window is open.
constexpr int kFeedSlice = 64;
// --checksum: files hashed at once (each must be read whole before its SEND can go).
constexpr std::size_t kChecksumsAtOnce = 4;

}  // namespace

std::size_t ControlClient::in_window() const {
  // Files waiting to go again (the receiver was busy) keep their places: walking on past them
  // would only meet the same busy receiver, with the rest of the tree piling up in resend_.
  return open_files_.size() + checksums_.size() + open_dirs_.size() + open_links_.size() +
         resend_.size();
}

void ControlClient::feed() {
  int opened = 0;
  const std::int64_t now = loop_.now_ms();
  while (state_ == State::kActive && !lines_.backlogged() &&
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
    if (!resend_.empty() && resend_.front().not_before_ms <= now) {
      Resend r = std::move(resend_.front());
      resend_.pop_front();
      // Keeps its place in the window.
      open_next_file(r.entry, r.history);
      continue;
    }
    if (in_window() >= window_files_ || walk_done_) break;
    if (ctx_.options.checksum && checksums_.size() >= kChecksumsAtOnce) break;
    auto e = walker_.next();
    collect_walk_problems();
    if (!e) {
      walk_done_ = true;
      milestone("walk finished");
      break;
    }
    if (e->kind == SourceEntry::Kind::kDirectory) {
      MkdirRequest req{next_id_++, e->wire_path, e->mode, e->mtime};
      expect_reply();
      open_dirs_.emplace(req.id, OpenDir{e->source_path, req});
      send_line(req);
    } else if (e->kind == SourceEntry::Kind::kSymlink) {
      send_link(OpenLink{e->source_path, LinkRequest{0, e->wire_path, e->link_target, e->mtime}});
    } else {
      open_next_file(*e);
    }
  }
  if (state_ == State::kActive && walk_done_ && resend_.empty() && in_window() == 0 &&
      resend_links_.empty()) {
    state_ = State::kBye;
    milestone("every file has its verdict; BYE");
    expect_reply();
    send_line(ByeRequest{});
  }
}

void ControlClient::send_link(OpenLink link) {
  if (!links_supported_) {
    record_failure(link.source_path,
                   "not sent: the receiver does not take symlinks (it predates symlink support "
                   "or feature negotiation); upgrade ackxfer-fast there to send symlinks");
    return;
  }
  link.request.id = next_id_++;
  expect_reply();
  send_line(link.request);
  open_links_.emplace(link.request.id, std::move(link));
}

bool ControlClient::open_next_file(const SourceEntry& e, const FileHistory& history) {
  if (e.synthetic) return open_synthetic(e, history);
  // Relative to its directory when the walk kept it open: one path component to resolve
  // instead of the whole path (a tenth of the sender's CPU on small files), and never through
  // a symlink swapped in since the walk saw a regular file there (O_NOFOLLOW). A PATH argument
  // is opened by its path, following symlinks, like cp.
  UniqueFd fd(e.dir ? ::openat(e.dir->get(), e.name.c_str(),
                               O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK)
                    : ::open(e.source_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) {
    record_failure(e.source_path, errno == ELOOP ? "is no longer a regular file (a symlink now)"
                                                 : "cannot open: " + errno_text(errno));
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
  f->wire_path = e.wire_path;
  f->source_path = e.source_path;
  f->dir = e.dir;
  f->name = e.name;
  f->fd = std::move(fd);
  std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  std::uint64_t preferred =
      ctx_.options.chunk_bytes ? ctx_.options.chunk_bytes : kDefaultChunkBytes;
  f->plan = ChunkPlan(size, ChunkPlan::choose_chunk_bytes(size, preferred));
  f->mode = st.st_mode & 07777;
  f->mtime = Mtime{st.st_mtim.tv_sec, static_cast<std::uint32_t>(st.st_mtim.tv_nsec)};
  f->ctime = st.st_ctim;
  send_file(std::move(f), history);
  return true;
}

bool ControlClient::open_synthetic(const SourceEntry& e, const FileHistory& history) {
  auto f = std::make_shared<OutgoingFile>();
  f->synthetic = true;
  f->wire_path = e.wire_path;
  f->source_path = e.source_path;
  std::uint64_t preferred =
      ctx_.options.chunk_bytes ? ctx_.options.chunk_bytes : kDefaultChunkBytes;
  f->plan = ChunkPlan(e.size, ChunkPlan::choose_chunk_bytes(e.size, preferred));
  f->mode = e.mode;
  f->mtime = e.mtime;
  send_file(std::move(f), history);
  return true;
}

// Names the file and sends its SEND (after hashing it, with --checksum).
void ControlClient::send_file(std::shared_ptr<OutgoingFile> f, const FileHistory& history) {
  f->id = next_id_++;
  f->history = history;
  const int attempt = history.attempt;
  SendRequest req{f->id,    f->wire_path,          f->size(),          f->mode,
                  f->mtime, f->plan.chunk_bytes(), SkipPolicy::kNever, Digest128{}};
  // A re-sent file (its first attempt failed) is never skipped: whatever is there now is not
  // what we mean to deliver. Generated files (benchmarks) are never skipped either.
  if (!ctx_.options.force && attempt == 1 && !f->synthetic) {
    req.skip = SkipPolicy::kSizeMtime;
    f->may_skip = true;
    if (ctx_.options.checksum) {
      start_checksum(std::move(f), std::move(req));
      return;
    }
  }
  open_bytes_ += f->size();
  expect_reply();
  send_line(req);
  open_files_.emplace(f->id, std::move(f));
}

void ControlClient::start_checksum(std::shared_ptr<OutgoingFile> f, SendRequest req) {
  // --checksum reads the whole file before it is named (like rsync -c): on the work queue, so
  // the control loop keeps answering, and with PROGRESS so the receiver knows we are busy.
  Checksum c;
  c.file = f;
  c.request = std::move(req);
  c.cancelled = std::make_shared<std::atomic<bool>>(false);
  c.done = std::make_shared<std::atomic<std::uint64_t>>(0);
  auto hasher = std::make_shared<FileHasher>(f->fd.get(), f->plan);
  Loop* loop = &loop_;
  ctx_.work.submit(
      [this, loop, f, hasher, cancelled = c.cancelled, done = c.done, id = f->id]() -> bool {
        if (cancelled->load()) return false;
        if (!hasher->step(kChecksumSliceBytes)) {
          int err = errno;
          loop->post([this, id, err, cancelled] {
            if (!cancelled->load()) checksummed(id, std::nullopt, err);
          });
          return false;
        }
        done->store(hasher->hashed());
        if (!hasher->done()) return true;
        loop->post([this, id, d = hasher->digest(), cancelled] {
          if (!cancelled->load()) checksummed(id, d, 0);
        });
        return false;
      });
  ctx_.local_check_total.fetch_add(f->size(), std::memory_order_relaxed);
  checksums_.emplace(f->id, std::move(c));
}

void ControlClient::show_local_checks() {
  // Only this client writes the figures; Sender::progress() reads them from another thread.
  for (auto& [id, c] : checksums_) {
    std::uint64_t done = c.done->load(std::memory_order_relaxed);
    ctx_.local_check_done.fetch_add(done - c.shown, std::memory_order_relaxed);
    c.shown = done;
  }
}

void ControlClient::forget_checksum(Checksum& c) {
  c.cancelled->store(true);
  ctx_.local_check_done.fetch_sub(c.shown, std::memory_order_relaxed);
  ctx_.local_check_total.fetch_sub(c.file->size(), std::memory_order_relaxed);
  c.shown = 0;
}

void ControlClient::forget_all_checksums() {
  for (auto& [id, c] : checksums_)
    forget_checksum(c);
  checksums_.clear();
}

void ControlClient::checksummed(std::uint64_t id, std::optional<Digest128> d, int err) {
  auto it = checksums_.find(id);
  if (it == checksums_.end() || state_ != State::kActive) return;
  Checksum c = std::move(it->second);
  forget_checksum(c);
  checksums_.erase(it);
  if (!d) {
    record_failure(c.file->source_path, "cannot read it: " + errno_text(err));
    feed();
    return;
  }
  c.request.skip = SkipPolicy::kDigest;
  c.request.digest = *d;
  open_bytes_ += c.file->size();
  expect_reply();
  send_line(c.request);
  open_files_.emplace(id, std::move(c.file));
}

SourceEntry ControlClient::entry_of(const OutgoingFile& f) {
  SourceEntry e;
  e.kind = SourceEntry::Kind::kFile;
  e.source_path = f.source_path;
  e.wire_path = f.wire_path;
  e.dir = f.dir;
  e.name = f.name;
  e.synthetic = f.synthetic;
  e.size = f.size();
  e.mode = f.mode;
  e.mtime = f.mtime;
  return e;
}

}  // namespace ackxfer
