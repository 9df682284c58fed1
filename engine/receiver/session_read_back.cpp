// ControlSession, reading kept chunks back: a file resumed from a kept partial is offered its
// journaled chunks at once (READY have=...), and they are read back once DONE has verified
// the file by its digests, before it is published. Nothing is read for a peer that has not
// delivered the whole file and its digest, so resuming and leaving, over and over, costs the
// receiver nothing to read, however the peer writes into the partial meanwhile.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <optional>

#include "display.h"
#include "error.h"
#include "fs/file_digest.h"
#include "fs/partial.h"
#include "protocol/limits.h"
#include "receiver/control_session.h"

namespace ackxfer {

void ControlSession::read_back(std::uint64_t id) {
  SessionFile& f = files_.at(id);
  ReceiverContext& ctx = worker_.ctx();
  const KeptClaims& kept = *f.kept;
  // Its own fd: the file's may close under it as the session ends (which also lets go of the
  // partial's lock, and cancels this job: a slice under way may still finish reading).
  UniqueFd dup(fcntl(f.file->fd(), F_DUPFD_CLOEXEC, 0));
  if (!dup) {
    const int err = errno;
    std::shared_ptr<IncomingFile> file = std::move(f.file);
    files_.erase(id);
    ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
    if (file->abandon(true))  // as good as before DONE
      ctx.stats.partials_kept.fetch_add(1, std::memory_order_relaxed);
    reply_error(id, ErrorCode::kBusy,
                quote_name(file->path()) +
                    ": cannot read back the chunks it resumed with: dup: " + errno_text(err));
    return;
  }
  struct ReadBack {
    UniqueFd fd;
    ChunkPlan plan;
    std::shared_ptr<const KeptClaims> kept;
    std::size_t base = 0;               // claims known good (the memory's, still valid)
    std::vector<JournalEntry> to_read;  // the claims after those, not received again
    std::vector<std::uint32_t> bad;
    std::size_t next = 0;  // in to_read
    std::optional<RangeHasher> hasher;
    std::uint64_t hashed = 0;
    std::optional<ReadBackMemory::Key> key;  // the partial before reading, if fstat could say
    timespec started{};
    bool synced = false;
  };
  auto rb = std::make_shared<ReadBack>();
  rb->fd = std::move(dup);
  rb->plan = f.file->plan();
  rb->kept = f.kept;
  // What the memory vouched for at SEND holds only if the partial is still as it was then: this
  // attempt wrote nothing, and nor did anyone else. Otherwise every claim is read.
  struct stat st {};
  if (fstat(rb->fd.get(), &st) == 0 && clock_gettime(CLOCK_REALTIME, &rb->started) == 0)
    rb->key = ReadBackMemory::key_of(st, rb->plan.chunk_bytes());
  if (rb->key && rb->key == kept.at_send) rb->base = kept.trusted;
  if (rb->base == kept.claims.size())
    ctx.stats.read_backs_remembered.fetch_add(1, std::memory_order_relaxed);
  rb->to_read = f.file->still_kept(std::vector<JournalEntry>(
      kept.claims.begin() + static_cast<std::ptrdiff_t>(rb->base), kept.claims.end()));
  // How far it gets is remembered as a count of the claims, in order: only while none was
  // received again (then the journal has changed anyway, and no later attempt would match).
  if (rb->to_read.size() != kept.claims.size() - rb->base) rb->key.reset();
  f.stage = SessionFile::Stage::kReadingBack;
  if (rb->to_read.empty()) {  // nothing to read: known good, or received again
    read_back_finished(id, {}, false);
    return;
  }
  std::uint64_t total = 0;
  for (const JournalEntry& e : rb->to_read)
    total += rb->plan.length(e.index);
  f.job = start_job(
      id, total,
      [rb, &ctx](LocalJob& j) {
        const std::vector<JournalEntry>& claims = rb->to_read;
        std::uint64_t budget = kLocalWorkSliceBytes;
        while (budget > 0 && rb->next < claims.size()) {
          const JournalEntry& e = claims[rb->next];
          if (!rb->hasher)
            rb->hasher.emplace(rb->fd.get(), rb->plan.offset(e.index), rb->plan.length(e.index));
          std::uint64_t before = rb->hasher->hashed();
          bool ok = rb->hasher->step(budget);
          std::uint64_t n = rb->hasher->hashed() - before;
          rb->hashed += n;
          ctx.stats.bytes_read_back.fetch_add(n, std::memory_order_relaxed);
          budget -= std::min(budget, n);
          if (!ok || rb->hasher->done()) {
            if (!ok || rb->hasher->finish() != e.digest) rb->bad.push_back(e.index);
            rb->hasher.reset();
            ++rb->next;
          }
        }
        j.done.store(rb->hashed, std::memory_order_relaxed);
        // Every claim so far as the journal says, and the partial as it was before reading (and
        // old enough then that a write in the same timestamp tick would have shown): how far
        // this got is remembered after each slice, so that a session gone before the end does
        // not make the next attempt start over.
        struct stat after {};
        if (rb->key && rb->next > 0 && rb->bad.empty() && fstat(rb->fd.get(), &after) == 0)
          ctx.read_backs.remember(*rb->key, after, rb->started,
                                  ReadBackProgress{rb->kept->digest, rb->base + rb->next});
        if (rb->next < claims.size()) return true;
        // Chunks found bad are received again: what this transfer verified is journaled first,
        // once on disk, so that the next attempt needs only those.
        if (!rb->bad.empty()) rb->synced = fdatasync(rb->fd.get()) == 0;
        return false;
      },
      [this, id, rb](LocalJob&) { read_back_finished(id, rb->bad, rb->synced); });
}

void ControlSession::read_back_finished(std::uint64_t id, const std::vector<std::uint32_t>& bad,
                                        bool synced) {
  auto it = files_.find(id);
  if (it == files_.end() || it->second.stage != SessionFile::Stage::kReadingBack ||
      state_ != State::kActive)
    return;
  it->second.job.reset();
  if (bad.empty()) {
    if (it->second.file->read_back_done({}, false))
      publish(id);
    else
      files_.erase(it);  // abandoned meanwhile: nothing to answer
    return;
  }
  std::shared_ptr<IncomingFile> file = std::move(it->second.file);
  files_.erase(it);
  ReceiverContext& ctx = worker_.ctx();
  ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
  const std::string name = quote_name(file->path());
  file->read_back_done(bad, synced);
  const bool kept = file->state() == IncomingFile::State::kAbandoned;
  if (kept) ctx.stats.partials_kept.fetch_add(1, std::memory_order_relaxed);
  ctx.log.warn(name + ": " + std::to_string(bad.size()) +
               " chunks of the kept partial no longer match their journal; " +
               (kept ? "the journal forgets them, and the sender's next attempt sends them again"
                     : "its journal could not say so, so the partial is removed"));
  // Retryable: the sender tries the file again, and resumes it without those chunks.
  reply_error(id, ErrorCode::kMismatch,
              name + ": " + std::to_string(bad.size()) +
                  " of the chunks it resumed with no longer match the kept partial's journal "
                  "(changed on the receiver's disk); they are sent again at the next attempt");
}

}  // namespace ackxfer
