// ControlSession, the tree: MKDIR, LINK, and the directory metadata applied after BYE.
#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "display.h"
#include "protocol/limits.h"
#include "receiver/control_session.h"

namespace ackxfer {
namespace {

// Directory metadata applied per turn of the loop after BYE, and within kSessionTurnMs: other
// sessions on this worker run between slices.
constexpr std::size_t kDirsPerSlice = 512;
// Hashes of directories this session created (their files need no "already there?" check).
constexpr std::size_t kMaxFreshDirs = 1 << 18;
constexpr std::size_t kFreshDirBytes = 48;  // a set node with its hash, and its bucket

}  // namespace

std::uint64_t ControlSession::directory_hash(std::string_view path) {
  Digest128 d = digest_of(path.data(), path.size());
  std::uint64_t h;
  std::memcpy(&h, d.bytes.data(), sizeof h);
  return h;
}

void ControlSession::handle(const MkdirRequest& m) {
  auto valid = checked_path(m.id, m.path);
  if (!valid) return;
  ReceiverContext& ctx = worker_.ctx();
  if (ctx.discard) {
    reply(OkReply{m.id, false});
    return;
  }
  bool created = false;
  auto r = ctx.destination.make_directory(*valid, &created);
  if (auto* e = std::get_if<FsError>(&r)) {
    refuse(m.id, error_code_from_errno(e->err), e->what);
    return;
  }
  UniqueFd existing;
  if (!created) {
    existing = ctx.destination.open_directory(*valid);  // not through a link at its end
    if (!existing && (errno == ENOTDIR || errno == ELOOP)) {
      // A symlink to a directory inside --dir (the receiver's own arrangement, or a LINK of
      // this sender's): its files go through it, as a file's parents may, but the mode and
      // mtime are not the link's to give to whatever it leads to (a link to "." would have
      // --dir itself made 0777).
      ctx.log.debug("session from " + peer_ + ": " + quote_name(m.path) +
                    " is a link to a directory here: its files go through it, its mode and "
                    "mtime are left alone");
      reply(OkReply{m.id, false});
      return;
    }
  }
  // A directory this session just created held nothing: its files need no "already there?"
  // check (one failed lookup per file, 5-10% of the small-file rate). Only hashes are kept; a
  // collision merely costs a file being sent again instead of skipped.
  // Both within the receiver-wide budget for this bookkeeping, charged to the session until
  // it ends.
  auto take_budget = [&](std::size_t bytes) {
    if (!ctx.take_dir_budget(bytes)) return false;
    dir_budget_taken_ += bytes;
    return true;
  };
  if (created && fresh_dirs_.size() < kMaxFreshDirs && take_budget(kFreshDirBytes))
    fresh_dirs_.insert(directory_hash(m.path));
  const auto added = dirs_.add(m.path, m.mode, m.mtime, take_budget);
  // A read-only directory from an earlier run cannot take new files for a receiver without
  // CAP_DAC_OVERRIDE: writable while this session (and any other) writes in it, its mode set
  // back by the last to end (WritableDirs). Not when its mode could not be kept: it would stay
  // writable.
  if (existing && added != DirectoryMetadata::Added::kOverLimit)
    hold_writable(existing.get(), m.path);
  if (added == DirectoryMetadata::Added::kOverLimit && dirs_.dropped() == 1)
    ctx.log.warn("session from " + peer_ + ": more than " + std::to_string(dirs_.size()) +
                 " directories (or every session's together beyond " +
                 std::to_string(ctx.max_dir_metadata_bytes >> 20) +
                 " MiB); the mode and mtime of " + quote_name(m.path) +
                 " and later new ones are not applied");
  if (created)
    reply_when_durable(nullptr, OkReply{m.id, false});
  else
    reply(OkReply{m.id, false});
}

void ControlSession::hold_writable(int dir, const std::string& path) {
  DirectoryMetadata::Entry* e = dirs_.find(path);
  if (!e || e->held) return;  // held already (a MKDIR sent twice)
  ReceiverContext& ctx = worker_.ctx();
  auto hold = ctx.writable_dirs.hold(dir, path);
  if (!hold) return;
  if (hold->tracked) e->held = hold->key;
  ctx.log.debug("holding " + quote_name(path) + " writable for this session (read-only)");
}

void ControlSession::release_writable_dirs() {
  ReceiverContext& ctx = worker_.ctx();
  for (const auto& e : dirs_.entries())
    if (e.held) ctx.writable_dirs.release_lost(*e.held, ctx.destination);
  for (std::size_t i = dirs_applied_; i < dirs_to_apply_.size(); ++i)
    if (dirs_to_apply_[i].held)
      ctx.writable_dirs.release_lost(*dirs_to_apply_[i].held, ctx.destination);
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
  reply_when_durable(cached_dir_, OkReply{m.id, false});
}

void ControlSession::reply_when_durable(std::shared_ptr<const UniqueFd> dir, ServerMessage m) {
  ReceiverContext& ctx = worker_.ctx();
  if (!ctx.publisher) {
    reply(m);
    return;
  }
  Loop* loop = &loop_;
  // Counted until answered: a peer pipelining MKDIRs cannot pile up jobs (and their directory
  // fds) behind a slow flush; its lines wait at kMaxDurableRepliesPerSession.
  ++durable_replies_;
  ctx.publisher->submit(DurablePublisher::Job::flushing(
      std::move(dir), [this, loop, alive = alive_, m = std::move(m)](DurablePublisher::Result r) {
        loop->post([this, alive, m, r = std::move(r)] {
          if (!*alive) return;
          const bool was_held = durable_replies_-- == kMaxDurableRepliesPerSession;
          if (state_ == State::kClosing) return;
          if (auto* e = std::get_if<FsError>(&r)) {
            const auto* ok = std::get_if<OkReply>(&m);
            reply_error(ok ? std::optional<std::uint64_t>(ok->id) : std::nullopt,
                        error_code_from_errno(e->err), e->what);
          } else {
            reply(m);
          }
          if (was_held) resume_read_if_clear();
        });
      }));
}

void ControlSession::handle(const ByeRequest&) {
  abandon_files(false);
  state_ = State::kFinishing;
  dirs_to_apply_ = dirs_.take_deepest_first();
  dirs_applied_ = 0;
  pause_read();
  apply_dirs_slice();
}

void ControlSession::apply_dirs_slice() {
  if (state_ != State::kFinishing) return;
  ReceiverContext& ctx = worker_.ctx();
  std::size_t end = std::min(dirs_to_apply_.size(), dirs_applied_ + kDirsPerSlice);
  const std::int64_t started_ms = loop_.now_ms();
  for (std::size_t n = 0; dirs_applied_ < end; ++dirs_applied_, ++n) {
    // Each resolves its path: through in-tree links to deep directories, milliseconds apiece.
    if (n > 0 && loop_.now_ms() - started_ms >= kSessionTurnMs) break;
    const DirectoryMetadata::Entry& d = dirs_to_apply_[dirs_applied_];
    // Held writable by another session too: its mode is left to the last of them.
    const bool mine = !d.held || ctx.writable_dirs.release_at_bye(*d.held, d.mode);
    auto valid = validate_relative_path(d.path);
    if (!std::holds_alternative<RelativePath>(valid)) continue;
    auto r = ctx.destination.set_directory_metadata(
        std::get<RelativePath>(valid), mine ? std::optional(d.mode) : std::nullopt, d.mtime);
    // A peer can make every one of its directories fail here (a link it made in the tree,
    // pointed elsewhere before BYE): within the worker's rate of such warnings.
    if (auto* e = std::get_if<FsError>(&r))
      worker_.peer_warning([&] { return "session from " + peer_ + ": " + cut_for_log(e->what); });
  }
  local_activity_ms_ = loop_.now_ms();
  if (dirs_applied_ < dirs_to_apply_.size()) {
    arm_yield(kApplyDirs);
    return;
  }
  std::vector<DirectoryMetadata::Entry>().swap(dirs_to_apply_);
  if (!ctx.publisher) {
    finish_bye();
    return;
  }
  Loop* loop = &loop_;
  ctx.publisher->submit(DurablePublisher::Job::flushing_everything(
      [this, loop, alive = alive_](DurablePublisher::Result) {
        loop->post([this, alive] {
          if (*alive && state_ == State::kFinishing) finish_bye();
        });
      }));
}

void ControlSession::finish_bye() {
  std::uint64_t files = totals_->files.load(), bytes = totals_->bytes.load();
  double secs = static_cast<double>(std::max<std::int64_t>(loop_.now_ms() - created_ms_, 1)) / 1000;
  char took[64];
  std::snprintf(took, sizeof took, "%.2f s, %.1f MB/s", secs,
                static_cast<double>(bytes) / secs / 1e6);
  std::uint64_t failed = totals_->failed.load();
  worker_.ctx().log.info("session from " + peer_ + " finished: " + counted(files, "file", "files") +
                         ", " + counted(bytes, "byte", "bytes") + " published in " + took + ", " +
                         std::to_string(failed) + " failed" +
                         (failed ? " (each named above)" : "") + "; encryption: control " +
                         encryption_ + ", data " + data_encryption());
  reply(ByeReply{files, bytes});
  close_after_flush();
}

}  // namespace ackxfer
