// FakeLoop: the test double of io/loop.h. Nothing touches the kernel: ops wait in a list, the
// test completes them (or lets the fake do so: sends complete whole unless a peer is marked as
// not reading, nops and fsyncs complete on the next run), feeds bytes to receives, and moves
// the clock to fire timers. A connection under test sees exactly the completions a real ring
// would deliver, in order, on one thread. Usage:
//
//   FakeLoop loop;
//   Worker w(ctx, loop, 0);               // or any LoopObject
//   w.adopt_control_connection(...);
//   loop.feed(fd, "HELLO ackxfer 2\n");   // the peer says something
//   loop.run();                           // deliver completions until nothing moves
//   EXPECT_EQ(loop.take_sent(fd), "HELLO ackxfer 2 data-port=...\n");
//   loop.advance(3000);                   // 3 s later: timers fire, ticks run
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "io/loop.h"

namespace ackxfer::test {

class FakeLoop final : public Loop {
 public:
  enum class Kind {
    kAccept,
    kRecv,
    kRecvMultishot,
    kSend,
    kConnect,
    kSplice,
    kFsync,
    kTimeout,
    kNop
  };
  struct Op {
    Kind kind;
    int fd = -1;
    IoHandler* h = nullptr;
    unsigned op = 0;
    void* buf = nullptr;         // recv: where the bytes go
    const void* data = nullptr;  // send: what goes out
    std::size_t len = 0;
    std::int64_t due_ms = 0;  // timeout
    bool cancelled = false;
  };

  FakeLoop() = default;
  ~FakeLoop() override = default;

  // ---- Loop ----
  void accept(int fd, IoHandler* h, unsigned op) override { add({Kind::kAccept, fd, h, op}); }
  void recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op) override;
  void recv_multishot(int fd, std::uint16_t pool, IoHandler* h, unsigned op) override;
  void send(int fd, const void* buf, std::size_t len, int flags, IoHandler* h,
            unsigned op) override;
  void connect(int fd, const sockaddr*, socklen_t, IoHandler* h, unsigned op) override {
    add({Kind::kConnect, fd, h, op});
  }
  void splice(int, std::int64_t, int fd_out, std::int64_t, unsigned, IoHandler* h,
              unsigned op) override {
    add({Kind::kSplice, fd_out, h, op});
  }
  void fdatasync(int fd, IoHandler* h, unsigned op) override { add({Kind::kFsync, fd, h, op}); }
  void timeout(std::uint64_t ns, IoHandler* h, unsigned op) override;
  void remove_timeout(IoHandler* h, unsigned op) override;
  void nop(IoHandler* h, unsigned op) override { add({Kind::kNop, -1, h, op}); }
  void cancel(IoHandler* h, unsigned op) override;
  void cancel_fd(int fd) override;
  void add_buffer_pool(std::uint16_t pool, unsigned, std::size_t bytes) override {
    pools_[pool] = bytes;
  }
  // Thread-safe, as Loop::post must be: work-queue threads post results.
  void post(std::function<void()> task) override {
    std::lock_guard lock(post_mu_);
    posted_.push_back(std::move(task));
  }
  void defer(std::function<void()> task) override { deferred_.push_back(std::move(task)); }
  void stop() override { stopped_ = true; }
  bool stopping() const override { return stopped_; }
  // What fdatasync operations complete with (0, or -EIO for a disk that failed a write).
  int fsync_result = 0;
  // Cancelled ops complete only as their kind would (a send once its fd is read) or by
  // complete(): a real kernel may go on with an op it was asked to cancel for a while.
  bool slow_cancel = false;
  // Each look at the clock moves it by this much (timers fire at the next run): code between
  // two looks then seems to take that long.
  std::int64_t ms_per_clock_read = 0;
  std::int64_t now_ms() const override {
    const std::int64_t t = now_ms_;
    now_ms_ += ms_per_clock_read;
    return t;
  }

  // ---- the test's side ----
  // Delivers completions (sends, nops, fsyncs, cancellations, due timers, posted and deferred
  // tasks) until nothing is left to deliver. Returns how many were delivered.
  int run(int max_rounds = 100000);
  // Moves the clock by `ms` and runs (timers that come due fire in order).
  void advance(std::int64_t ms);
  // The peer of `fd` sends `bytes`: completes the receive armed on `fd` (a multishot one
  // delivers in pieces of at most its pool's buffer size), then runs. Bytes arriving while no
  // receive is armed wait until one is.
  void feed(int fd, std::string_view bytes);
  // As feed(), without running: several peers' bytes can then be delivered in one run, in
  // the order their receives were armed.
  void feed_later(int fd, std::string_view bytes) { waiting_[fd].append(bytes); }
  // Runs until `pred` holds, letting real time pass for other threads (work-queue jobs);
  // false after `real_ms` milliseconds.
  bool run_until(const std::function<bool()>& pred, int real_ms = 5000);
  // The peer of `fd` closes (res 0) or resets (res -ECONNRESET) the connection.
  void peer_closes(int fd, int res = 0);
  // While false, sends on `fd` stay in flight: a peer that does not read. Default true.
  void set_reading(int fd, bool reading);
  // What was sent on `fd` so far (and forget it).
  std::string take_sent(int fd);
  // Every send in order, for checking who was answered first: (fd, bytes).
  const std::vector<std::pair<int, std::string>>& send_log() const { return send_log_; }
  // Completes the (first) pending op of `kind` on `fd` with `res`; false if there is none.
  bool complete(Kind kind, int fd, int res);
  // Ops still in flight of `kind` (on `fd`, if given).
  std::size_t pending(Kind kind, int fd = -2) const;
  std::size_t in_flight() const { return ops_.size(); }
  // The buffers of sends still in flight on `fd`, cancelled ones included (a real kernel may
  // still be reading them until their completion comes).
  std::vector<std::pair<const void*, std::size_t>> send_buffers(int fd) const {
    std::vector<std::pair<const void*, std::size_t>> out;
    for (const Op& o : ops_)
      if (o.kind == Kind::kSend && o.fd == fd) out.emplace_back(o.data, o.len);
    return out;
  }
  // The room of the single-shot receive armed on `fd` (0 if there is none).
  std::size_t recv_room(int fd) const {
    for (const Op& o : ops_)
      if (o.kind == Kind::kRecv && o.fd == fd && !o.cancelled) return o.len;
    return 0;
  }
  // The fd of the first pending op of `kind`, or -1.
  int fd_of(Kind kind) const {
    for (const Op& o : ops_)
      if (o.kind == kind && !o.cancelled) return o.fd;
    return -1;
  }
  // Forgets every op in flight and every pending task (the objects behind them are about to
  // be destroyed without draining, as a test tears its receiver down).
  void forget_all() {
    ops_.clear();
    deferred_.clear();
    std::lock_guard lock(post_mu_);
    posted_.clear();
  }

 private:
  void add(Op o) { ops_.push_back(o); }
  bool deliver_ready();
  void deliver(std::size_t i, int res, bool more, std::span<const std::uint8_t> data = {});
  bool feed_waiting(int fd);

  std::deque<Op> ops_;
  std::map<std::uint16_t, std::size_t> pools_;
  std::map<int, std::string> waiting_;  // bytes fed while no receive was armed
  std::map<int, int> closing_;          // a close/reset fed while no receive was armed
  std::set<int> not_reading_;
  std::map<int, std::string> sent_;
  std::vector<std::pair<int, std::string>> send_log_;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mu_
  std::vector<std::function<void()>> deferred_;
  // Far from any real steady clock (~31 years of uptime): code that mixes steady_ms() with
  // the loop's clock sees every deadline long past, in every run, whatever the machine's uptime.
  mutable std::int64_t now_ms_ = 1'000'000'000'000;
  bool stopped_ = false;
};

}  // namespace ackxfer::test
