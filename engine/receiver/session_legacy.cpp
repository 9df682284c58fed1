// ControlSession, recv --legacy: a classic client's `SEND <name>` (receiver/legacy_uploads.h).
#include "display.h"
#include "protocol/limits.h"
#include "receiver/control_session.h"

namespace ackxfer {

bool ControlSession::looks_like_unterminated_legacy_send() const {
  return worker_.ctx().legacy_enabled && state_ == State::kAwaitHello && in_start_ == 0 &&
         in_.starts_with("SEND ") && in_.size() <= kMaxLineBytes &&
         in_.find('\n') == std::string::npos;
}

void ControlSession::handle_legacy_send(std::string_view name) {
  ReceiverContext& ctx = worker_.ctx();
  state_ = State::kLegacy;
  stop_awaiting();
  auto refuse_legacy = [&](ErrorCode code, const std::string& why) {
    ctx.stats.legacy_refused.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning([&] { return "legacy client " + peer_ + ": " + cut_for_log(why); });
    reply_error(std::nullopt, code, why);
    close_after_flush();
  };
  // The classic protocol sends the name as it is: no escapes. It still meets the path rule.
  std::string path(name);
  auto checked = validate_relative_path(path);
  if (auto* why = std::get_if<std::string>(&checked))
    return refuse_legacy(ErrorCode::kBadPath, "refused SEND " + quote_name_cut(path) + ": " + *why);
  OpenFileSlot slot = OpenFileSlot::take(ctx.open_files, ctx.max_open_files);
  if (!slot)
    return refuse_legacy(ErrorCode::kBusy,
                         "the receiver has its maximum of files open; try "
                         "again later");
  const RelativePath& rel = std::get<RelativePath>(checked);
  auto parent = ctx.destination.open_parent(rel);
  if (auto* e = std::get_if<FsError>(&parent))
    return refuse_legacy(error_code_from_errno(e->err), e->what);
  auto dir = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(parent)));
  // Size unknown: nothing to reserve; the bytes allocate as they are written.
  auto temp = ctx.destination.create_temp(dir, rel.components.back(), 0, 0, true, 0644);
  if (auto* e = std::get_if<FsError>(&temp))
    return refuse_legacy(error_code_from_errno(e->err), e->what);
  legacy_ = std::make_shared<LegacyUpload>();
  legacy_->path = path;
  legacy_->peer = peer_;
  legacy_->temp = std::move(std::get<TempFile>(temp));
  legacy_->slot = std::move(slot);
  Loop* loop = &loop_;
  auto offered = ctx.legacy.offer(
      peer_host_, legacy_,
      [this, loop, alive = alive_] {
        loop->post([this, alive] {
          if (*alive) legacy_turn();
        });
      },
      loop_.now_ms());
  switch (offered) {
    case LegacyUploads::Offer::kReady:
      legacy_turn();
      return;
    case LegacyUploads::Offer::kQueued:
      ctx.log.info("legacy client " + peer_ + ": 'SEND " + printable(path) +
                   "' waits until the previous legacy file from " + peer_host_ +
                   " has its data connection");
      return;
    case LegacyUploads::Offer::kRefused:
      legacy_.reset();
      return refuse_legacy(ErrorCode::kBusy,
                           "too many classic SENDs wait for their turn (at most " +
                               std::to_string(kMaxLegacyQueuedPerAddress) + " per address, " +
                               std::to_string(kMaxLegacyUploads) + " in all); try again later");
  }
}

void ControlSession::legacy_turn() {
  if (!legacy_ || closing() || state_ != State::kLegacy) return;
  ReceiverContext& ctx = worker_.ctx();
  ctx.log.info("legacy client " + peer_ + ": READY for " + quote_name(legacy_->path) +
               "; it is published unverified when its data connection closes (the classic "
               "protocol carries no digest)");
  legacy_.reset();          // LegacyUploads holds it until its data connection claims it
  replies_.write("READY");  // exactly these five bytes, as the classic clients expect
}

}  // namespace ackxfer
