// The shared chunk queue: order, retries, failure after too many attempts, waiters.
#include <gtest/gtest.h>

#include "protocol/limits.h"
#include "sender/chunk_scheduler.h"

namespace ackxfer {
namespace {

struct Recorder {
  std::vector<std::shared_ptr<OutgoingFile>> done;
  std::vector<std::string> failed;
  ChunkScheduler::Callbacks callbacks() {
    return {
        [this](std::shared_ptr<OutgoingFile> f) { done.push_back(f); },
        [this](std::shared_ptr<OutgoingFile>, std::string why, bool) { failed.push_back(why); }};
  }
};

struct CountingWaiter : ChunkWaiter {
  int wakes = 0;
  void wake() override { ++wakes; }
};

std::shared_ptr<OutgoingFile> make_file(std::uint64_t size, std::uint64_t chunk) {
  auto f = std::make_shared<OutgoingFile>();
  f->plan = ChunkPlan(size, chunk);
  return f;
}

TEST(ChunkScheduler, HandsOutChunksInOrderAndReportsCompletion) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  auto f = make_file(3 * 65536 + 1, 65536);
  s.add_file(f);
  for (std::uint32_t i = 0; i < 4; ++i) {
    auto j = s.next(nullptr);
    ASSERT_TRUE(j);
    EXPECT_EQ(j->index, i);
    s.acked(*j, digest_of(&i, sizeof i));
  }
  EXPECT_EQ(f->plan.length(3), 1u);
  ASSERT_EQ(r.done.size(), 1u);
  EXPECT_FALSE(s.next(nullptr));
}

TEST(ChunkScheduler, RetriedChunkGoesFirst) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  s.add_file(make_file(4 * 65536, 65536));
  auto a = s.next(nullptr);
  auto b = s.next(nullptr);
  s.retry(*a, "digest mismatch");
  EXPECT_EQ(s.next(nullptr)->index, a->index);
  EXPECT_EQ(s.retries(), 1u);
  (void)b;
}

TEST(ChunkScheduler, FailsTheFileAfterMaxAttempts) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  auto f = make_file(65536, 65536);
  s.add_file(f);
  for (int i = 0; i < kMaxChunkAttempts; ++i) {
    auto j = s.next(nullptr);
    ASSERT_TRUE(j) << i;
    s.retry(*j, "digest mismatch");
  }
  ASSERT_EQ(r.failed.size(), 1u);
  EXPECT_NE(r.failed[0].find("digest mismatch"), std::string::npos);
  EXPECT_NE(r.failed[0].find("damaged every time"), std::string::npos) << r.failed[0];
  EXPECT_FALSE(s.next(nullptr));
}

TEST(ChunkScheduler, ChunksOfAFailedFileAreDropped) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  auto f = make_file(3 * 65536, 65536);
  auto g = make_file(65536, 65536);
  s.add_file(f);
  s.add_file(g);
  auto j = s.next(nullptr);
  s.fail(*j, "read error", false);
  auto next = s.next(nullptr);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->file, g);
  s.acked(*j, Digest128{});  // a late ack for the failed file changes nothing
  EXPECT_TRUE(r.done.empty());
}

TEST(ChunkScheduler, WakesWaitersOnNewWorkAndOnClose) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  CountingWaiter w;
  EXPECT_FALSE(s.next(&w));
  s.add_file(make_file(65536, 65536));
  EXPECT_EQ(w.wakes, 1);
  ASSERT_TRUE(s.next(&w));
  EXPECT_FALSE(s.next(&w));
  s.close();
  EXPECT_EQ(w.wakes, 2);
  EXPECT_FALSE(s.next(&w));
  EXPECT_TRUE(s.closed());
}

// Idle streams are woken one per queued chunk, longest waiting first: waking every idle stream
// for every small file cost the sender a cross-thread post and a context switch per stream per
// file (docs/PERFORMANCE.md, "Lock contention").
TEST(ChunkScheduler, WakesOneWaiterPerQueuedChunk) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  CountingWaiter a, b, c;
  EXPECT_FALSE(s.next(&a));
  EXPECT_FALSE(s.next(&b));
  EXPECT_FALSE(s.next(&c));
  s.add_file(make_file(100, 65536));  // one chunk: one waiter
  EXPECT_EQ(a.wakes + b.wakes + c.wakes, 1);
  EXPECT_EQ(a.wakes, 1);
  ASSERT_TRUE(s.next(&a));
  EXPECT_FALSE(s.next(&a));                 // a waits again, now behind b and c
  s.add_file(make_file(2 * 65536, 65536));  // two chunks: b and c, not a
  EXPECT_EQ(a.wakes, 1);
  EXPECT_EQ(b.wakes, 1);
  EXPECT_EQ(c.wakes, 1);
  // b cannot take work (its connection is down): it hands the wake-up on to a.
  s.pass_wake();
  EXPECT_EQ(a.wakes, 2);
  ASSERT_TRUE(s.next(&c));
  ASSERT_TRUE(s.next(&a));
  s.pass_wake();  // nothing queued: nobody is woken
  EXPECT_EQ(a.wakes + b.wakes + c.wakes, 4);
  EXPECT_FALSE(s.next(&a));
  EXPECT_FALSE(s.next(&b));
  s.put_back(ChunkJob{make_file(100, 65536), 0, false});  // a retry wakes one
  EXPECT_EQ(a.wakes, 3);
  EXPECT_EQ(b.wakes, 1);
  s.close();  // every waiter, so that idle streams can finish
  EXPECT_EQ(b.wakes, 2);
}

TEST(ChunkScheduler, PutBackGoesFirstWithoutCountingARetry) {
  Recorder r;
  ChunkScheduler s(r.callbacks());
  auto f = make_file(3 * 65536, 65536);
  s.add_file(f);
  auto first = s.next(nullptr);
  ASSERT_TRUE(first);
  s.put_back(*first);
  auto again = s.next(nullptr);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->index, first->index);
  EXPECT_EQ(s.retries(), 0u);
}

}  // namespace
}  // namespace ackxfer
