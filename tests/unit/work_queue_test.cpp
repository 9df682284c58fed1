// WorkQueue: long jobs run in slices, so a short job submitted behind one finishes first; a
// cancelled job stops between slices.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "io/work_queue.h"

namespace ackxfer {
namespace {

using namespace std::chrono_literals;

TEST(WorkQueue, AShortJobIsNotHeldUpByALongOne) {
  WorkQueue q(1);  // one thread: only slicing can make this fair
  std::atomic<int> long_slices{0};
  std::atomic<bool> short_done{false};
  std::atomic<int> long_slices_when_short_done{-1};
  q.submit([&] {
    std::this_thread::sleep_for(2ms);
    return ++long_slices < 200;  // 200 slices: ~0.4 s
  });
  std::this_thread::sleep_for(10ms);
  q.submit([&] {
    long_slices_when_short_done = long_slices.load();
    short_done = true;
    return false;
  });
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!short_done && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(short_done);
  EXPECT_LT(long_slices_when_short_done.load(), 50);
  q.stop();
}

TEST(WorkQueue, ACancelledJobStopsBetweenSlices) {
  WorkQueue q(2);
  std::atomic<bool> cancelled{false};
  std::atomic<int> slices{0};
  q.submit([&] {
    if (cancelled) return false;
    ++slices;
    std::this_thread::sleep_for(1ms);
    return true;
  });
  std::this_thread::sleep_for(20ms);
  cancelled = true;
  std::this_thread::sleep_for(20ms);
  int seen = slices.load();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(slices.load(), seen);
  EXPECT_EQ(q.queued(), 0u);
}

}  // namespace
}  // namespace ackxfer
