// Backoff: "full jitter" between half the ceiling and the ceiling, doubling up to 1 s, so that
// many senders restarted together do not reconnect in lockstep.
#include "sender/backoff.h"

#include <algorithm>
#include <cerrno>

namespace ackxfer {

bool is_retryable_connect_error(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPIPE:
    case EAGAIN:
      return true;
    default:
      return false;
  }
}

Backoff::Backoff(std::chrono::milliseconds retry_for, std::uint64_t seed)
    : retry_for_(retry_for), rng_(seed) {}

std::optional<std::chrono::milliseconds> Backoff::next_delay(Clock::time_point now) {
  if (!deadline_) deadline_ = now + retry_for_;
  if (now >= *deadline_) return std::nullopt;
  auto ceiling = ceiling_.count();
  std::uniform_int_distribution<long> dist(ceiling / 2, ceiling);
  std::chrono::milliseconds delay(dist(rng_));
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline_ - now);
  delay = std::min(delay, left);
  ceiling_ = std::min(ceiling_ * 2, kMaxDelay);
  ++attempts_;
  return delay;
}

void Backoff::reset() {
  deadline_.reset();
  ceiling_ = kFirstDelay;
}

}  // namespace ackxfer
