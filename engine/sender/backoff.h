// Exponential backoff with jitter for reconnects: pure, so the schedule is unit-tested.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>

namespace ackxfer {

// Connection errors worth retrying: the peer is not (yet, or no longer) there, or the path to
// it is down for a moment. Anything else (EACCES, EINVAL, ...) fails at once.
bool is_retryable_connect_error(int err);

class Backoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kFirstDelay{50};
  static constexpr std::chrono::milliseconds kMaxDelay{1000};

  // Retries are allowed until `retry_for` after the first failure.
  explicit Backoff(std::chrono::milliseconds retry_for,
                   std::uint64_t seed = std::random_device{}());

  // The delay before the next attempt, or nullopt once the deadline has passed (or would pass
  // before the attempt). `now` is a parameter so tests control time.
  std::optional<std::chrono::milliseconds> next_delay(Clock::time_point now);
  // A success resets the schedule: the next failure starts over with a fresh deadline.
  void reset();
  int attempts() const { return attempts_; }

 private:
  std::chrono::milliseconds retry_for_;
  std::optional<Clock::time_point> deadline_;
  std::chrono::milliseconds ceiling_ = kFirstDelay;
  int attempts_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace ackxfer
