// Reconnect schedule: grows, jitters, and stops at the deadline.
#include <gtest/gtest.h>

#include "sender/backoff.h"

namespace ackxfer {
namespace {

using namespace std::chrono_literals;

TEST(Backoff, DelaysGrowWithJitterUpToTheCap) {
  Backoff b(60s, 7);
  auto now = Backoff::Clock::time_point{} + 1h;
  std::chrono::milliseconds ceiling = Backoff::kFirstDelay;
  for (int i = 0; i < 20; ++i) {
    auto d = b.next_delay(now);
    ASSERT_TRUE(d);
    EXPECT_GE(*d, ceiling / 2);
    EXPECT_LE(*d, ceiling);
    ceiling = std::min(ceiling * 2, Backoff::kMaxDelay);
    now += *d;
  }
}

TEST(Backoff, StopsAtTheDeadline) {
  Backoff b(2s, 1);
  auto start = Backoff::Clock::time_point{} + 1h;
  auto now = start;
  int attempts = 0;
  while (auto d = b.next_delay(now)) {
    now += *d;
    ++attempts;
    ASSERT_LT(attempts, 1000);
  }
  EXPECT_GE(now - start, 2s);
  EXPECT_LE(now - start, 2s + Backoff::kMaxDelay);
  EXPECT_GT(attempts, 3);
}

TEST(Backoff, ZeroRetryForMeansNoRetry) {
  Backoff b(0ms);
  EXPECT_FALSE(b.next_delay(Backoff::Clock::now()));
}

TEST(Backoff, ResetGivesAFreshDeadline) {
  Backoff b(1s, 3);
  auto t = Backoff::Clock::time_point{} + 1h;
  ASSERT_TRUE(b.next_delay(t));
  EXPECT_FALSE(b.next_delay(t + 5s));
  b.reset();
  EXPECT_TRUE(b.next_delay(t + 5s));
}

TEST(Backoff, DifferentSeedsDoNotMoveInLockstep) {
  Backoff a(60s, 1), b(60s, 2);
  auto t = Backoff::Clock::time_point{} + 1h;
  bool differ = false;
  for (int i = 0; i < 10; ++i)
    differ |= a.next_delay(t) != b.next_delay(t);
  EXPECT_TRUE(differ);
}

}  // namespace
}  // namespace ackxfer
