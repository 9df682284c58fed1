// FakeLoop: completions delivered in order, on demand, with a clock the test moves.
#include "fake_loop.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

namespace ackxfer::test {

void FakeLoop::recv(int fd, void* buf, std::size_t len, IoHandler* h, unsigned op) {
  Op o{Kind::kRecv, fd, h, op};
  o.buf = buf;
  o.len = len;
  add(o);
}

void FakeLoop::recv_multishot(int fd, std::uint16_t pool, IoHandler* h, unsigned op) {
  Op o{Kind::kRecvMultishot, fd, h, op};
  auto it = pools_.find(pool);
  o.len = it == pools_.end() ? 4096 : it->second;
  add(o);
}

void FakeLoop::send(int fd, const void* buf, std::size_t len, int, IoHandler* h, unsigned op) {
  Op o{Kind::kSend, fd, h, op};
  o.data = buf;
  o.len = len;
  add(o);
}

void FakeLoop::timeout(std::uint64_t ns, IoHandler* h, unsigned op) {
  Op o{Kind::kTimeout, -1, h, op};
  o.due_ms = now_ms_ + static_cast<std::int64_t>(ns / 1'000'000);
  add(o);
}

void FakeLoop::remove_timeout(IoHandler* h, unsigned op) {
  for (Op& o : ops_)
    if (o.kind == Kind::kTimeout && o.h == h && o.op == op) o.cancelled = true;
}

void FakeLoop::cancel(IoHandler* h, unsigned op) {
  for (Op& o : ops_)
    if (o.h == h && o.op == op && o.kind != Kind::kTimeout) o.cancelled = true;
}

void FakeLoop::cancel_fd(int fd) {
  for (Op& o : ops_)
    if (o.fd == fd && fd >= 0) o.cancelled = true;
}

void FakeLoop::deliver(std::size_t i, int res, bool more, std::span<const std::uint8_t> data) {
  Op o = ops_[i];
  if (!more) ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(i));
  Completion c{res, more, data};
  o.h->on_io(o.op, c);
}

bool FakeLoop::deliver_ready() {
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    Op& o = ops_[i];
    if (o.cancelled && !slow_cancel) {
      deliver(i, -ECANCELED, false);
      return true;
    }
    switch (o.kind) {
      case Kind::kNop:
        deliver(i, 0, false);
        return true;
      case Kind::kFsync:
        deliver(i, fsync_result, false);
        return true;
      case Kind::kTimeout:
        if (o.due_ms <= now_ms_) {
          deliver(i, -ETIME, false);
          return true;
        }
        break;
      case Kind::kSend:
        if (!not_reading_.count(o.fd)) {
          std::string bytes(static_cast<const char*>(o.data), o.len);
          sent_[o.fd] += bytes;
          send_log_.emplace_back(o.fd, bytes);
          deliver(i, static_cast<int>(o.len), false);
          return true;
        }
        break;
      case Kind::kRecv:
      case Kind::kRecvMultishot:
        if (waiting_.count(o.fd) || closing_.count(o.fd)) {
          if (feed_waiting(o.fd)) return true;
        }
        break;
      default:
        break;
    }
  }
  return false;
}

bool FakeLoop::feed_waiting(int fd) {
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    Op& o = ops_[i];
    if (o.fd != fd || o.cancelled || (o.kind != Kind::kRecv && o.kind != Kind::kRecvMultishot))
      continue;
    auto w = waiting_.find(fd);
    if (w != waiting_.end() && !w->second.empty()) {
      std::string& bytes = w->second;
      std::size_t n = std::min(bytes.size(), o.len);
      std::string piece = bytes.substr(0, n);
      bytes.erase(0, n);
      if (bytes.empty()) waiting_.erase(w);
      if (o.kind == Kind::kRecv) {
        std::memcpy(o.buf, piece.data(), n);
        deliver(i, static_cast<int>(n), false);
      } else {
        deliver(i, static_cast<int>(n), true,
                {reinterpret_cast<const std::uint8_t*>(piece.data()), n});
      }
      return true;
    }
    auto c = closing_.find(fd);
    if (c != closing_.end()) {
      int res = c->second;
      closing_.erase(c);
      deliver(i, res, false);
      return true;
    }
    return false;
  }
  return false;
}

int FakeLoop::run(int max_rounds) {
  int delivered = 0;
  for (int round = 0; round < max_rounds; ++round) {
    bool moved = false;
    std::vector<std::function<void()>> tasks;
    {
      std::lock_guard lock(post_mu_);
      tasks.swap(posted_);
    }
    if (!tasks.empty()) {
      for (auto& t : tasks)
        t();
      moved = true;
    }
    while (deliver_ready()) {
      ++delivered;
      moved = true;
      if (!deferred_.empty()) break;
    }
    if (!deferred_.empty()) {
      auto tasks = std::move(deferred_);
      deferred_.clear();
      for (auto& t : tasks)
        t();
      moved = true;
    }
    if (!moved) break;
  }
  return delivered;
}

bool FakeLoop::run_until(const std::function<bool()>& pred, int real_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(real_ms);
  while (true) {
    run();
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void FakeLoop::advance(std::int64_t ms) {
  // In steps, so that timers fire in order and each sees its own time.
  std::int64_t target = now_ms_ + ms;
  while (true) {
    run();
    std::int64_t next = target;
    for (const Op& o : ops_)
      if (o.kind == Kind::kTimeout && !o.cancelled && o.due_ms > now_ms_)
        next = std::min(next, o.due_ms);
    if (next <= now_ms_ || now_ms_ >= target) break;
    now_ms_ = next;
  }
  now_ms_ = target;
  run();
}

void FakeLoop::feed(int fd, std::string_view bytes) {
  waiting_[fd].append(bytes);
  run();
}

void FakeLoop::peer_closes(int fd, int res) {
  closing_[fd] = res;
  run();
}

void FakeLoop::set_reading(int fd, bool reading) {
  if (reading)
    not_reading_.erase(fd);
  else
    not_reading_.insert(fd);
}

std::string FakeLoop::take_sent(int fd) {
  return std::exchange(sent_[fd], std::string());
}

bool FakeLoop::complete(Kind kind, int fd, int res) {
  for (std::size_t i = 0; i < ops_.size(); ++i)
    if (ops_[i].kind == kind && (fd < 0 || ops_[i].fd == fd)) {
      deliver(i, res, false);
      run();
      return true;
    }
  return false;
}

std::size_t FakeLoop::pending(Kind kind, int fd) const {
  return static_cast<std::size_t>(std::count_if(ops_.begin(), ops_.end(), [&](const Op& o) {
    return o.kind == kind && (fd == -2 || o.fd == fd);
  }));
}

}  // namespace ackxfer::test
