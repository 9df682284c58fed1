// The io_uring loop: ops complete on the loop thread, posted tasks run, timers fire (several
// at once, and replaced), closing an object waits for its in-flight ops, a full submission
// queue never spins, and provided buffers arrive as data.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "io/uring_loop.h"

namespace ackxfer {
namespace {

#define REQUIRE_IO_URING()                                              \
  do {                                                                  \
    if (auto why = io_uring_unavailable_reason()) GTEST_SKIP() << *why; \
  } while (0)

class Echo final : public LoopObject {
 public:
  Echo(Loop& loop, int fd) : LoopObject(loop), fd_(fd) {}
  void start() { arm_recv(fd_, buf_, sizeof buf_, 1); }
  void close() { begin_close(fd_); }
  std::string got;
  bool drained = false;

 private:
  void on_complete(unsigned op, const Completion& c) override {
    if (op == 1 && c.res > 0) {
      got.append(buf_, static_cast<std::size_t>(c.res));
      if (got == "ping")
        loop_.stop();
      else
        arm_recv(fd_, buf_, sizeof buf_, 1);
    }
  }
  void on_drained() override {
    drained = true;
    loop_.stop();
  }
  int fd_;
  char buf_[64];
};

TEST(UringLoop, RecvCompletesOnTheLoopThread) {
  REQUIRE_IO_URING();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UringLoop loop;
  Echo e(loop, sv[0]);
  e.start();
  std::thread writer([&] {
    (void)!write(sv[1], "pi", 2);
    usleep(10000);
    (void)!write(sv[1], "ng", 2);
  });
  loop.run();
  writer.join();
  EXPECT_EQ(e.got, "ping");
  close(sv[0]);
  close(sv[1]);
}

TEST(UringLoop, PostedTasksRunOnTheLoop) {
  REQUIRE_IO_URING();
  UringLoop loop;
  std::atomic<int> ran{0};
  std::thread::id loop_thread = std::this_thread::get_id(), seen;
  std::thread poster([&] {
    for (int i = 0; i < 1000; ++i)
      loop.post([&] { ++ran; });
    loop.post([&] {
      seen = std::this_thread::get_id();
      loop.stop();
    });
  });
  loop.run();
  poster.join();
  EXPECT_EQ(ran.load(), 1000);
  EXPECT_EQ(seen, loop_thread);
}

TEST(UringLoop, CloseWaitsForCancelledOpsBeforeDraining) {
  REQUIRE_IO_URING();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UringLoop loop;
  Echo e(loop, sv[0]);
  e.start();  // a recv that will never complete by itself
  loop.post([&] { e.close(); });
  loop.run();
  EXPECT_TRUE(e.drained);
  EXPECT_EQ(e.inflight(), 0);
  close(sv[0]);
  close(sv[1]);
}

// Arms timers by tag and records which fired, with what result, in order.
class Timers final : public LoopObject {
 public:
  using LoopObject::LoopObject;
  void arm(unsigned tag, std::uint64_t ns) { arm_timer(ns, tag); }
  void disarm(unsigned tag) { disarm_timer(tag); }
  std::vector<std::pair<unsigned, int>> fired;
  std::size_t stop_after = 1;

 private:
  void on_complete(unsigned op, const Completion& c) override {
    fired.emplace_back(op, c.res);
    if (fired.size() == stop_after) loop_.stop();
  }
  void on_drained() override {}
};

TEST(UringLoop, TimerFires) {
  REQUIRE_IO_URING();
  UringLoop loop;
  Timers t(loop);
  auto t0 = std::chrono::steady_clock::now();
  t.arm(3, 20'000'000);
  loop.run();
  ASSERT_EQ(t.fired.size(), 1u);
  EXPECT_EQ(t.fired[0].second, -ETIME);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(15));
}

// A second timer on the same object used to be dropped silently (one timer per object): a
// short timer then hid a longer deadline, which never fired.
TEST(UringLoop, TwoTimersOfOneObjectBothFire) {
  REQUIRE_IO_URING();
  UringLoop loop;
  Timers t(loop);
  t.stop_after = 2;
  t.arm(6, 50'000'000);
  t.arm(3, 10'000'000);
  loop.run();
  ASSERT_EQ(t.fired.size(), 2u);
  EXPECT_EQ(t.fired[0].first, 3u);
  EXPECT_EQ(t.fired[1].first, 6u);
}

TEST(UringLoop, ArmingAnArmedTimerReplacesIt) {
  REQUIRE_IO_URING();
  UringLoop loop;
  Timers t(loop);
  auto t0 = std::chrono::steady_clock::now();
  t.arm(2, 5'000'000'000);  // would hold the test for 5 s
  t.arm(2, 10'000'000);
  loop.run();
  ASSERT_EQ(t.fired.size(), 1u);  // the replaced one is not reported
  EXPECT_EQ(t.fired[0].second, -ETIME);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(UringLoop, DisarmedTimerCompletesCancelled) {
  REQUIRE_IO_URING();
  UringLoop loop;
  Timers t(loop);
  t.arm(4, 5'000'000'000);
  t.disarm(4);
  loop.run();
  ASSERT_EQ(t.fired.size(), 1u);
  EXPECT_EQ(t.fired[0].second, -ECANCELED);
}

class Yielder final : public LoopObject {
 public:
  using LoopObject::LoopObject;
  void go(int n) {
    for (int i = 0; i < n; ++i)
      arm_yield(1);
    want = n;
  }
  int done = 0, want = 0;

 private:
  void on_complete(unsigned, const Completion&) override {
    if (++done == want) loop_.stop();
  }
  void on_drained() override {}
};

// More ops than the submission queue holds: they wait in user space, none is lost, and the
// loop never spins on a full queue.
TEST(UringLoop, MoreOpsThanTheQueueHoldsAllComplete) {
  REQUIRE_IO_URING();
  UringLoop loop(8);
  Yielder y(loop);
  y.go(1000);
  loop.run();
  EXPECT_EQ(y.done, 1000);
  EXPECT_GT(loop.counters().submitted, 999u);
}

class PoolReader final : public LoopObject {
 public:
  PoolReader(Loop& loop, int fd) : LoopObject(loop), fd_(fd) {}
  void start() { arm_recv_multishot(fd_, 5, 1); }
  std::string got;

 private:
  void on_complete(unsigned, const Completion& c) override {
    got.append(reinterpret_cast<const char*>(c.data.data()), c.data.size());
    if (got.size() >= 6) loop_.stop();
  }
  void on_drained() override {}
  int fd_;
};

TEST(UringLoop, MultishotReceiveDeliversTheBytesFromThePool) {
  REQUIRE_IO_URING();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UringLoop loop;
  loop.add_buffer_pool(5, 4, 4096);
  PoolReader r(loop, sv[0]);
  r.start();
  (void)!write(sv[1], "abc", 3);
  std::thread later([&] {
    usleep(10000);
    (void)!write(sv[1], "def", 3);
  });
  loop.run();
  later.join();
  EXPECT_EQ(r.got, "abcdef");
  close(sv[0]);
  close(sv[1]);
}

TEST(UringLoop, SetupDescribesTheRingFlags) {
  REQUIRE_IO_URING();
  UringLoop loop;
  EXPECT_FALSE(loop.setup_description().empty());
}

}  // namespace
}  // namespace ackxfer
