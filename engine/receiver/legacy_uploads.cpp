// LegacyUploads: one READY-ed legacy file per client address, the rest queued behind it.
#include "receiver/legacy_uploads.h"

#include "io/loop.h"

namespace ackxfer {

LegacyUploads::Offer LegacyUploads::offer(const std::string& address,
                                          std::shared_ptr<LegacyUpload> u, OnTurn on_turn,
                                          std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  if (total_ >= kMaxLegacyUploads) return Offer::kRefused;
  PerAddress& a = by_address_[address];
  if (!a.ready) {
    u->ready_ms = now_ms;
    a.ready = std::move(u);
    ++total_;
    return Offer::kReady;
  }
  if (a.queued.size() >= kMaxLegacyQueuedPerAddress) return Offer::kRefused;
  a.queued.push_back(Queued{std::move(u), std::move(on_turn)});
  ++total_;
  return Offer::kQueued;
}

bool LegacyUploads::expecting(const std::string& address) const {
  std::lock_guard lock(mu_);
  auto it = by_address_.find(address);
  return it != by_address_.end() && it->second.ready;
}

LegacyUploads::OnTurn LegacyUploads::promote_locked(const std::string& address,
                                                    std::int64_t now_ms) {
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return {};
  PerAddress& a = it->second;
  if (a.queued.empty()) {
    if (!a.ready) by_address_.erase(it);
    return {};
  }
  Queued next = std::move(a.queued.front());
  a.queued.pop_front();
  next.upload->ready_ms = now_ms;
  a.ready = std::move(next.upload);
  return std::move(next.on_turn);
}

std::shared_ptr<LegacyUpload> LegacyUploads::claim(const std::string& address,
                                                   std::int64_t now_ms) {
  std::shared_ptr<LegacyUpload> u;
  OnTurn turn;
  {
    std::lock_guard lock(mu_);
    auto it = by_address_.find(address);
    if (it == by_address_.end() || !it->second.ready) return nullptr;
    u = std::move(it->second.ready);
    --total_;
    turn = promote_locked(address, now_ms);
  }
  if (turn) turn();
  return u;
}

void LegacyUploads::withdraw(const std::string& address, const LegacyUpload* u,
                             std::int64_t now_ms) {
  OnTurn turn;
  {
    std::lock_guard lock(mu_);
    auto it = by_address_.find(address);
    if (it == by_address_.end()) return;
    PerAddress& a = it->second;
    if (a.ready.get() == u) {
      a.ready.reset();
      --total_;
      turn = promote_locked(address, now_ms);
    } else {
      total_ -= std::erase_if(a.queued, [u](const Queued& q) { return q.upload.get() == u; });
      if (!a.ready && a.queued.empty()) by_address_.erase(it);
    }
  }
  if (turn) turn();
}

std::vector<std::shared_ptr<LegacyUpload>> LegacyUploads::expire(std::int64_t now_ms) {
  std::vector<std::shared_ptr<LegacyUpload>> gone;
  std::vector<OnTurn> turns;
  {
    std::lock_guard lock(mu_);
    std::vector<std::string> addresses;
    for (auto& [address, a] : by_address_)
      if (a.ready && now_ms - a.ready->ready_ms > kLegacyConnectTimeoutMs)
        addresses.push_back(address);
    for (const std::string& address : addresses) {
      gone.push_back(std::move(by_address_[address].ready));
      --total_;
      if (OnTurn t = promote_locked(address, now_ms)) turns.push_back(std::move(t));
    }
  }
  for (OnTurn& t : turns)
    t();
  return gone;
}

}  // namespace ackxfer
