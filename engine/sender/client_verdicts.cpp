// ControlClient, verdicts: READY, OK, ERR, CREDIT, PROGRESS, and what becomes of each file.
#include "display.h"
#include "error.h"
#include "protocol/limits.h"
#include "sender/control_client.h"

namespace ackxfer {

bool ControlClient::never_issued(std::uint64_t id) {
  if (id != 0 && id < next_id_) return false;
  finish_session(SendReport::Outcome::kProtocolError,
                 "the receiver answered about id " + std::to_string(id) +
                     ", which this sender never sent; is it a compatible ackxfer-fast?");
  return true;
}

void ControlClient::on_ready(const ReadyReply& m) {
  if (never_issued(m.id)) return;
  auto it = open_files_.find(m.id);
  if (it == open_files_.end()) return;  // cancelled meanwhile: not an answer we wait for
  std::shared_ptr<OutgoingFile> f = it->second;
  if (f->readied) return;  // a second READY for the same file: ignored
  heard_from_receiver();
  if (f->chunk_count() == 1 && !m.have.empty()) {
    // A one-chunk file is never kept partly (it has no partial to resume): a receiver that
    // claims to hold its chunk would have it "delivered" with no byte sent and no verdict.
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver claimed to hold the only chunk of " + quote_name(f->wire_path) +
                       " already; is it a compatible ackxfer-fast?");
    return;
  }
  f->token = m.token;
  f->readied = true;
  f->remote_progress = 0;  // a check before READY counted to its size; a flush counts anew
  show_receiver_work(*f, 0, 0);
  if (++readies_ == 1) milestone("first READY");
  if (f->chunk_count() == 0) {
    f->done_sent = true;
    send_line(DoneRequest{f->id, file_digest_from_chunks({})});
    return;
  }
  ctx_.scheduler->add_file(f, m.have);
}

void ControlClient::on_credit(const CreditReply& m) {
  // Not an answer to anything we wait for: a receiver that sends only CREDIT must not hold the
  // session past --idle-timeout.
  window_files_ = std::max(window_files_, std::min<std::size_t>(kMaxOpenFilesPerSession, m.open));
  feed();
}

void ControlClient::on_progress(const ProgressNote& m) {
  if (never_issued(m.id)) return;
  // The receiver is checking or flushing one of our files: it is there, just busy. Only while
  // the work moves: a PROGRESS that repeats itself is no answer, or a receiver could hold the
  // session forever with one line a second. (A flush is reported as done=total: the first one
  // counts, and the flush has --idle-timeout from there.)
  auto it = open_files_.find(m.id);
  if (it == open_files_.end()) return;
  OutgoingFile& f = *it->second;
  if (m.done > m.total || m.total > f.size()) {
    finish_session(SendReport::Outcome::kProtocolError,
                   "the receiver reported progress of " + std::to_string(m.done) + " of " +
                       std::to_string(m.total) + " bytes on " + quote_name(f.wire_path) +
                       ", a file of " + std::to_string(f.size()) +
                       "; is it a compatible ackxfer-fast?");
    return;
  }
  // Only where a receiver works on a file alone: checking it or reading its partial back
  // (before READY), flushing it (after DONE). Between the two its bytes are on their way, and
  // the acks tell how that goes: PROGRESS there would hold the session while no byte moves.
  if (f.readied && !f.done_sent) return;
  show_receiver_work(f, m.done, m.total);
  if (m.done <= f.remote_progress) return;
  f.remote_progress = m.done;
  heard_from_receiver();
}

void ControlClient::file_chunks_done(const std::shared_ptr<OutgoingFile>& f) {
  auto it = open_files_.find(f->id);
  if (it == open_files_.end() || it->second != f || state_ != State::kActive) return;
  made_progress();
  if (f->chunk_count() == 1) {
    // The receiver published it when its one frame verified (the stream checked that the
    // source had not changed before sending the frame's digest).
    file_delivered(it);
    feed();
    return;
  }
  // A file that changed while it was read may have been sent torn: check before DONE.
  if (f->changed_since_opened()) {
    send_line(CancelRequest{f->id});
    close_file(it);
    retry_or_fail(f, "it changed while being sent", true);
    feed();
    return;
  }
  heard_from_receiver();  // the last ack just came: DONE's answer is owed from now
  f->done_sent = true;
  send_line(DoneRequest{f->id, file_digest_from_chunks(f->chunk_digests)});
}

void ControlClient::file_delivered(OpenFiles::iterator it) {
  if (report_.files == 0) milestone("first file delivered");
  const std::uint64_t size = it->second->size();
  ++report_.files;
  report_.bytes += size;
  ctx_.resumed_bytes_delivered.fetch_add(it->second->resumed.load(std::memory_order_relaxed),
                                         std::memory_order_relaxed);
  // Out of the in-flight figure before its size counts as done: a progress read in between
  // then shows a moment less, not the file twice.
  close_file(it);
  ctx_.files_done.fetch_add(1, std::memory_order_relaxed);
  ctx_.bytes_done.fetch_add(size, std::memory_order_relaxed);
  made_progress();
}

void ControlClient::close_file(OpenFiles::iterator it) {
  // Its chunks are no longer wanted (a file delivered has none left): its settled bytes leave
  // the in-flight figure, as they join bytes_done if it was delivered.
  ctx_.scheduler->drop_file(it->second);
  show_receiver_work(*it->second, 0, 0);
  open_bytes_ -= it->second->size();
  open_files_.erase(it);
}

void ControlClient::close_all_files() {
  for (auto& [id, f] : open_files_) {
    ctx_.scheduler->drop_file(f);
    show_receiver_work(*f, 0, 0);
  }
  open_files_.clear();
  open_bytes_ = 0;
}

void ControlClient::show_receiver_work(OutgoingFile& f, std::uint64_t done, std::uint64_t total) {
  // Only this client writes them; Sender::progress() reads them from another thread. Most
  // files never had any (every small file closes through here).
  if (done == f.receiver_done_shown && total == f.receiver_total_shown) return;
  ctx_.receiver_work_done.fetch_add(done - f.receiver_done_shown, std::memory_order_relaxed);
  ctx_.receiver_work_total.fetch_add(total - f.receiver_total_shown, std::memory_order_relaxed);
  f.receiver_done_shown = done;
  f.receiver_total_shown = total;
}

void ControlClient::file_failed(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                                bool retryable) {
  auto it = open_files_.find(f->id);
  if (it == open_files_.end() || it->second != f) return;
  if (state_ == State::kActive) send_line(CancelRequest{f->id});
  close_file(it);
  if (busy_for_everything(f->chunk_busy_since_ms)) {
    // As for files refused busy (retry_later): waiting out each file's --idle-timeout in turn
    // would take as long as the tree has windows of files.
    record_failure(f->source_path, reason);
    finish_session(SendReport::Outcome::kTimedOut,
                   "the receiver has answered busy to the data for " +
                       std::to_string(ctx_.options.idle_timeout.count() / 1000) +
                       " s (--idle-timeout) and delivered nothing meanwhile: " + reason);
    return;
  }
  retry_or_fail(f, reason, retryable);
  feed();
}

bool ControlClient::busy_for_everything(std::int64_t busy_since_ms) const {
  // Nothing delivered, no chunk acknowledged but as busy, since then.
  return busy_since_ms > 0 &&
         std::max(last_progress_ms_, ctx_.last_ack_ms.load(std::memory_order_relaxed)) <=
             busy_since_ms;
}

void ControlClient::on_ok(const OkReply& m) {
  if (never_issued(m.id)) return;
  if (auto d = open_dirs_.find(m.id); d != open_dirs_.end()) {
    heard_from_receiver();
    ++report_.directories;
    open_dirs_.erase(d);
  } else if (auto l = open_links_.find(m.id); l != open_links_.end()) {
    heard_from_receiver();
    ++report_.symlinks;
    open_links_.erase(l);
  } else if (auto it = open_files_.find(m.id); it != open_files_.end()) {
    heard_from_receiver();
    if (m.skipped && (!it->second->may_skip || it->second->readied)) {
      // Skipping answers a SEND that allowed it, instead of READY: after READY, or for a SEND
      // that said skip=never (--force, a re-send), it would pass off whatever is there as ours.
      finish_session(SendReport::Outcome::kProtocolError,
                     "the receiver skipped " + quote_name(it->second->wire_path) +
                         ", which this sender did not let it skip; is it a compatible "
                         "ackxfer-fast?");
      return;
    }
    if (m.skipped && it->second->history.readied_before) {
      // Not there when a lost session said READY for it, and there now with its size and
      // mtime: what that session sent was published before its verdict could come back.
      file_delivered(it);
    } else if (m.skipped) {
      // Already there and identical: nothing was sent, nothing to count as delivered.
      ++report_.unchanged;
      report_.unchanged_bytes += it->second->size();
      ctx_.files_done.fetch_add(1, std::memory_order_relaxed);
      ctx_.bytes_done.fetch_add(it->second->size(), std::memory_order_relaxed);
      close_file(it);
      made_progress();
    } else if (!it->second->done_sent) {
      // OK answers DONE, once the receiver has checked the whole file against its digest.
      // Before DONE it vouches for bytes the receiver cannot have had: counting the file as
      // delivered would report a file that never arrived, and leave its chunks queued.
      finish_session(SendReport::Outcome::kProtocolError,
                     "the receiver said OK for " + quote_name(it->second->wire_path) +
                         " before this sender sent DONE for it; is it a compatible ackxfer-fast?");
      return;
    } else {
      file_delivered(it);
    }
  }
  feed();
}

void ControlClient::on_session_err(const ErrReply& m) {
  if (m.code == ErrorCode::kBusy && state_ == State::kHello) {
    // Too many sessions on the receiver right now: like a refused connection, retry.
    connect_failed(ECONNREFUSED, "the receiver is busy: " + m.message);
    return;
  }
  if (m.code == ErrorCode::kAuthRequired || m.code == ErrorCode::kNoEncryption ||
      m.code == ErrorCode::kPlainRefused) {
    finish_session(SendReport::Outcome::kAuthFailed,
                   "the receiver at " + ctx_.control_ep.to_string() + " refused us: " + m.message);
    return;
  }
  if (plain_answer_) {
    // We started TLS and it answered in plain text, without one of the codes above.
    finish_session(SendReport::Outcome::kAuthFailed,
                   "the receiver at " + ctx_.control_ep.to_string() +
                       " does not speak TLS (it answered: " + std::string(wire_name(m.code)) +
                       ": " + m.message +
                       "); it runs an older ackxfer-fast, or is not an ackxfer-fast receiver; "
                       "nothing was sent");
    return;
  }
  std::string why = "the receiver says: " + std::string(wire_name(m.code)) + ": " + m.message;
  if (m.code == ErrorCode::kTimeout) timed_out_ = true;
  if (m.code == ErrorCode::kShutdown || m.code == ErrorCode::kTimeout) {
    session_lost(why);
    return;
  }
  finish_session(SendReport::Outcome::kProtocolError, why);
}

void ControlClient::on_err(const ErrReply& m) {
  if (!m.id) return on_session_err(m);
  if (never_issued(*m.id)) return;
  if (auto d = open_dirs_.find(*m.id); d != open_dirs_.end()) {
    heard_from_receiver();
    record_failure(d->second.source_path,
                   "the receiver could not create the directory: " + m.message);
    open_dirs_.erase(d);
    feed();
    return;
  }
  if (auto l = open_links_.find(*m.id); l != open_links_.end()) {
    heard_from_receiver();
    OpenLink link = std::move(l->second);
    open_links_.erase(l);
    if (is_retryable(m.code) && link.attempt < kMaxFileAttempts) {
      ++file_resends_;
      ctx_.log.warn(quote_name(link.source_path) + ": the receiver could not make the symlink (" +
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
  heard_from_receiver();
  std::shared_ptr<OutgoingFile> f = it->second;
  close_file(it);  // chunks still queued for it are dropped by the scheduler
  std::string reason =
      "the receiver refused it: " + std::string(wire_name(m.code)) + ": " + m.message;
  if (m.code == ErrorCode::kBusy || m.code == ErrorCode::kTooManyOpen)
    retry_later(f, reason);
  else
    retry_or_fail(f, reason, is_retryable(m.code));
  feed();
}

void ControlClient::retry_or_fail(const std::shared_ptr<OutgoingFile>& f, const std::string& reason,
                                  bool retryable) {
  if (retryable && f->history.attempt < kMaxFileAttempts) {
    ++file_resends_;
    ctx_.file_resends.fetch_add(1, std::memory_order_relaxed);
    ctx_.log.warn(quote_name(f->source_path) + ": " + reason + "; sending it again (attempt " +
                  std::to_string(f->history.attempt + 1) + " of " +
                  std::to_string(kMaxFileAttempts) + ")");
    resend_.push_back(
        Resend{entry_of(*f),
               FileHistory{f->history.attempt + 1, 0, false, f->history.dones_unanswered}, 0});
    return;
  }
  record_failure(f->source_path, reason);
}

void ControlClient::retry_later(const std::shared_ptr<OutgoingFile>& f, const std::string& reason) {
  const std::int64_t now = loop_.now_ms();
  Resend r{entry_of(*f), f->history, 0};
  // How long this file has been refused as busy, across its re-sends.
  FileHistory& h = r.history;
  if (!h.busy_since_ms) h.busy_since_ms = now;
  if (now - h.busy_since_ms > ctx_.options.idle_timeout.count()) {
    record_failure(f->source_path, reason + " (for longer than --idle-timeout)");
    if (busy_for_everything(h.busy_since_ms))
      // Nothing delivered, no chunk acknowledged, all that time: the receiver is busy for
      // everything, not just this file, and waiting out each file's --idle-timeout in turn, a
      // window at a time, would take as many times as long as the tree has windows of files.
      finish_session(SendReport::Outcome::kTimedOut,
                     "the receiver has answered busy for " +
                         std::to_string(ctx_.options.idle_timeout.count() / 1000) +
                         " s (--idle-timeout) and delivered nothing meanwhile: " + reason);
    return;
  }
  std::int64_t waited = now - h.busy_since_ms;
  std::int64_t delay = std::clamp(waited, kBusyFirstDelayMs, kBusyMaxDelayMs);  // doubles
  r.not_before_ms = now + delay;
  ++file_resends_;
  ctx_.file_resends.fetch_add(1, std::memory_order_relaxed);
  ctx_.log.debug(quote_name(f->source_path) + ": " + reason + "; trying again in " +
                 std::to_string(delay) + " ms");
  resend_.push_back(std::move(r));
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
      ctx_.log.warn(quote_name(p.path) + ": " + p.reason);
    }
  }
}

void ControlClient::stream_recovered() {
  if (streams_given_up_ > 0) --streams_given_up_;
  streams_lost_reason_.clear();
}

void ControlClient::stream_gave_up(const std::string& why) {
  if (state_ == State::kDone) return;
  if (++streams_given_up_ < ctx_.streams.size()) return;
  // Re-establishing the session retargets the streams; no verdict on them meanwhile. After BYE
  // every file has its verdict: the data connections have nothing left to carry.
  if (state_ != State::kActive) return;
  // Every data connection is gone. The control connection usually says why a moment later
  // (the receiver is shutting down, say): the tick gives it that moment before concluding.
  streams_lost_reason_ = "lost every data connection to " + ctx_.data_ep.to_string() + ": " + why;
  streams_lost_ms_ = loop_.now_ms();
}

}  // namespace ackxfer
