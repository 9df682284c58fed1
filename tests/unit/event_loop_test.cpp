// The io_uring loop: ops complete on the loop thread, posted tasks run, timers fire, closing an
// object waits for its in-flight ops.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "io/event_loop.h"

namespace ackxfer {
namespace {

#define REQUIRE_IO_URING()                                              \
  do {                                                                  \
    if (auto why = io_uring_unavailable_reason()) GTEST_SKIP() << *why; \
  } while (0)

class Echo final : public LoopObject {
 public:
  Echo(EventLoop& loop, int fd) : LoopObject(loop), fd_(fd) {}
  void start() { arm_recv(fd_, buf_, sizeof buf_, 1); }
  void close() { begin_close(fd_); }
  std::string got;
  bool drained = false;
  int last_res = 0;

 private:
  void on_complete(unsigned op, int res, unsigned) override {
    last_res = res;
    if (op == 1 && res > 0) {
      got.append(buf_, static_cast<std::size_t>(res));
      if (got == "ping")
        loop_.stop();
      else
        arm_recv(fd_, buf_, sizeof buf_, 1);
    }
    if (op == 2) loop_.stop();
  }
  void on_drained() override {
    drained = true;
    loop_.stop();
  }
  int fd_;
  char buf_[64];
};

TEST(EventLoop, RecvCompletesOnTheLoopThread) {
  REQUIRE_IO_URING();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  EventLoop loop;
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

TEST(EventLoop, PostedTasksRunOnTheLoop) {
  REQUIRE_IO_URING();
  EventLoop loop;
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

TEST(EventLoop, CloseWaitsForCancelledOpsBeforeDraining) {
  REQUIRE_IO_URING();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  EventLoop loop;
  Echo e(loop, sv[0]);
  e.start();  // a recv that will never complete by itself
  loop.post([&] { e.close(); });
  loop.run();
  EXPECT_TRUE(e.drained);
  EXPECT_EQ(e.inflight(), 0);
  close(sv[0]);
  close(sv[1]);
}

class Timer final : public LoopObject {
 public:
  using LoopObject::LoopObject;
  void start(std::uint64_t ns) { arm_timer(ns, 3); }
  int res = 1;

 private:
  void on_complete(unsigned, int r, unsigned) override {
    res = r;
    loop_.stop();
  }
  void on_drained() override {}
};

TEST(EventLoop, TimerFires) {
  REQUIRE_IO_URING();
  EventLoop loop;
  Timer t(loop);
  auto t0 = std::chrono::steady_clock::now();
  t.start(20'000'000);
  loop.run();
  EXPECT_EQ(t.res, -ETIME);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(15));
}

TEST(EventLoop, SetupDescribesTheRingFlags) {
  REQUIRE_IO_URING();
  EventLoop loop;
  EXPECT_FALSE(loop.setup_description().empty());
}

}  // namespace
}  // namespace ackxfer
