// Worker: object ownership, housekeeping and orderly shutdown.
#include "receiver/worker.h"

#include "display.h"
#include "error.h"
#include "receiver/control_session.h"
#include "receiver/data_stream.h"

namespace ackxfer {
namespace {

// How long a stopping worker waits for sessions to send their last words before it closes
// whatever is left, and how long after that it stops its loop regardless.
constexpr std::uint64_t kShutdownGraceNs = 2'000'000'000;
constexpr std::uint64_t kShutdownForceNs = 500'000'000;

class ShutdownDeadline final : public WorkerObject {
 public:
  using WorkerObject::WorkerObject;
  void start() override { arm_timer(kShutdownGraceNs, 1); }
  void shutdown() override {}

 private:
  void on_complete(unsigned, const Completion&) override {
    if (++expiries_ == 1) {
      worker_.force_close_all();
      arm_timer(kShutdownForceNs, 1);
    } else {
      loop_.stop();  // the worker's thread drains what is left (close_everything)
    }
  }
  void on_drained() override { worker_.release(this); }
  int expiries_ = 0;
};

// Calls Worker::tick_all() once a second.
class Housekeeper final : public WorkerObject {
 public:
  using WorkerObject::WorkerObject;
  void start() override { arm_timer(1'000'000'000, 1); }
  void shutdown() override { begin_close(-1); }

 private:
  void on_complete(unsigned, const Completion&) override {
    worker_.tick_all();
    arm_timer(1'000'000'000, 1);
  }
  void on_drained() override { worker_.release(this); }
};

}  // namespace

WorkerObject::WorkerObject(Worker& worker) : LoopObject(worker.loop()), worker_(worker) {}

Worker::Worker(ReceiverContext& ctx, Loop& loop, unsigned index)
    : ctx_(ctx), loop_(loop), index_(index) {
  loop_.add_buffer_pool(kControlPool, kControlBuffers, kControlBufferBytes);
  loop_.add_buffer_pool(kDataPool, kDataBuffers, kDataBufferBytes);
}

Worker::~Worker() = default;

void Worker::add(std::unique_ptr<WorkerObject> obj) {
  WorkerObject* raw = obj.get();
  objects_.emplace(raw, std::move(obj));
  raw->start();
}

void Worker::start_housekeeping() {
  add(std::make_unique<Housekeeper>(*this));
}

void Worker::adopt_control_connection(UniqueFd fd) {
  if (shutting_down_) return;  // fd closes here
  add(std::make_unique<ControlSession>(*this, std::move(fd)));
}

bool Worker::spreading() const {
  return index_ < ctx_.load.size() && ctx_.spreading.load(std::memory_order_acquire) &&
         !shutting_down_;
}

unsigned Worker::pick(LoadCounter which, bool most) const {
  unsigned best = index_;
  std::size_t best_count = (ctx_.load[index_].*which).load(std::memory_order_relaxed);
  for (unsigned i = 0; i < ctx_.load.size(); ++i) {
    std::size_t n = (ctx_.load[i].*which).load(std::memory_order_relaxed);
    if (most ? n > best_count : n < best_count) {
      best_count = n;
      best = i;
    }
  }
  return best;
}

void Worker::take_control_connection(UniqueFd fd) {
  // At the limit with nobody here to make room, but somebody elsewhere: the newcomer goes
  // there, so that silent peers on one worker cannot keep senders out on the other.
  if (spreading() && awaiting_.empty() && sessions_at_limit()) {
    unsigned target = pick(&ReceiverContext::WorkerLoad::awaiting, /*most=*/true);
    if (target != index_) {
      ctx_.hand_over(target, std::move(fd), ReceiverContext::Handed::kControl);
      return;
    }
  }
  adopt_control_connection(std::move(fd));
}

void Worker::take_data_connection(UniqueFd fd) {
  unsigned target = index_;
  if (spreading()) {
    bool at_limit = ctx_.unproven_data_connections.load(std::memory_order_relaxed) >=
                    ctx_.max_unproven_data_connections;
    bool full = ctx_.data_connections.load(std::memory_order_relaxed) >= ctx_.max_data_connections;
    if (at_limit && unproven_.empty())
      target = pick(&ReceiverContext::WorkerLoad::unproven, /*most=*/true);
    else if (full && unproven_.empty() && proven_.empty())
      target = pick(&ReceiverContext::WorkerLoad::data, /*most=*/true);  // one there makes room
    else if (!at_limit && !full)
      target = pick(&ReceiverContext::WorkerLoad::data, /*most=*/false);
  }
  if (target == index_) {
    adopt_data_connection(std::move(fd));
    return;
  }
  // Counted now, so that the next choice (on any worker) sees it before it arrives.
  ctx_.load[target].data.fetch_add(1, std::memory_order_relaxed);
  ctx_.hand_over(target, std::move(fd), ReceiverContext::Handed::kData);
}

void Worker::adopt_data_connection(UniqueFd fd, bool handed) {
  if (!handed) count(&ReceiverContext::WorkerLoad::data, +1);
  if (shutting_down_) {
    count(&ReceiverContext::WorkerLoad::data, -1);
    return;  // fd closes here
  }
  // Counted here, released by the DataStream's destructor (or when it makes room: evict).
  std::size_t all = ctx_.data_connections.fetch_add(1, std::memory_order_relaxed) + 1;
  std::size_t unproven = ctx_.unproven_data_connections.fetch_add(1, std::memory_order_relaxed) + 1;
  if (unproven > ctx_.max_unproven_data_connections && !unproven_.empty()) {
    // Room for it at the expense of this worker's oldest connection that has proven nothing:
    // a peer cannot keep every sender's data connections out by opening and sitting on them.
    unproven_.front()->evict();
    --unproven;
    --all;
  }
  if (all > ctx_.max_data_connections) {
    // Room at the expense of the quietest: a peer cannot keep every place by proving its
    // connections with one token and trickling a byte into each before its deadline.
    if (DataStream* quiet = quietest_data_connection()) {
      quiet->evict();
      --all;
    }
  }
  if (all > ctx_.max_data_connections || unproven > ctx_.max_unproven_data_connections) {
    ctx_.data_connections.fetch_sub(1, std::memory_order_relaxed);
    ctx_.unproven_data_connections.fetch_sub(1, std::memory_order_relaxed);
    ctx_.stats.data_connections_refused.fetch_add(1, std::memory_order_relaxed);
    count(&ReceiverContext::WorkerLoad::data, -1);
    return;  // closed at once; the count is logged at the next tick
  }
  add(std::make_unique<DataStream>(*this, std::move(fd)));
}

DataStream* Worker::quietest_data_connection() const {
  if (!unproven_.empty()) return unproven_.front();
  // Quietest first. One that owes acks (a sender waiting on a durable publish, say) would lose
  // them with the connection and send those chunks again: among the first few quiet ones, one
  // that owes none goes first. A bounded look, so that a newcomer costs no scan of thousands.
  constexpr int kLookAt = 16;
  const std::int64_t now = loop_.now_ms();
  DataStream* quietest = nullptr;
  int looked = 0;
  for (DataStream* d : proven_) {
    if (now - d->last_bytes_ms() < kStaleClaimMs || looked++ == kLookAt) break;
    if (!d->owes_acks()) return d;
    if (!quietest) quietest = d;
  }
  return quietest;
}

void Worker::release(WorkerObject* obj) {
  objects_.erase(obj);
  // Only the deadline timer left: everything closed in time.
  if (shutting_down_ && objects_.size() <= 1) loop_.stop();
}

void Worker::tick_all() {
  if (ctx_.inject_worker_loop_failure && index_ == 0)
    throw Failure("a fault injected for testing (ACKXFER_INJECT_FAULT=worker-loop)",
                  FailureKind::kInternal);
  std::int64_t now = loop_.now_ms();
  if (ctx_.legacy_enabled)
    for (auto& u : ctx_.legacy.expire(now))
      peer_warning([&] {
        return "legacy client " + u->peer + " got READY for " + quote_name_cut(u->path) +
               " but no data connection came from its address within " +
               std::to_string(kLegacyConnectTimeoutMs / 1000) + " s; dropped it";
      });
  if (index_ == 0 && !ctx_.discard && !ctx_.failure()) {
    // Files go where --dir was at start; if that path now names something else, they would go
    // on landing out of sight. Stop (a service manager starts it again on the new one).
    if (auto why = ctx_.destination.root_replaced())
      ctx_.fail("--dir " + *why +
                "; stopping so that no file goes to the old directory: start "
                "the receiver again");
  }
  if (index_ == 0) {
    // What the limits refused or closed since the last tick: one line a second, not one each
    // (the text is built only then).
    auto report = [this](const std::atomic<std::uint64_t>& count, std::uint64_t& logged,
                         const char* verb, const auto& what) {
      std::uint64_t n = count.load(std::memory_order_relaxed);
      if (n > logged) ctx_.log.warn(verb + (" " + std::to_string(n - logged)) + what());
      logged = n;
    };
    report(ctx_.stats.data_connections_refused, refused_logged_, "refused", [this] {
      return " data connections in the last second: the receiver holds its maximum (" +
             std::to_string(ctx_.max_data_connections) + " in all, " +
             std::to_string(ctx_.max_unproven_data_connections) +
             " that have not yet sent a frame for an open file)";
    });
    report(ctx_.stats.data_connections_evicted, evicted_logged_, "closed", [this] {
      return " data connections in the last second that had sent no frame for an open file, "
             "oldest first, to make room for newer ones (at most " +
             std::to_string(ctx_.max_unproven_data_connections) + " such at once)";
    });
    report(ctx_.stats.data_connections_displaced, displaced_logged_, "closed", [this] {
      return " data connections in the last second, the quietest first, to make room for newer "
             "ones: the receiver holds its maximum (" +
             std::to_string(ctx_.max_data_connections) + " in all)";
    });
    report(ctx_.stats.digest_reads_declined, reads_declined_logged_, "answered", [] {
      return " skip=xxh3 checks in the last second with 'send the data', without reading the "
             "file again: each had been read " +
             std::to_string(DigestCache::kReadsPerVersion) +
             " times already with the same size and mtime (checks with another chunk size, or "
             "after a mode change)";
    });
    report(ctx_.stats.sessions_evicted, sessions_evicted_logged_, "closed", [this] {
      return " control connections in the last second that had not said HELLO, oldest first, "
             "to make room for newer ones (--max-sessions " +
             std::to_string(ctx_.max_sessions) + ", --max-handshakes " +
             std::to_string(ctx_.max_sessions_awaiting_hello) + ")";
    });
  }
  if (peer_warnings_dropped_ > 0)
    ctx_.log.warn(counted(peer_warnings_dropped_, "more warning", "more warnings") +
                  " about peers' connections, frames or lines in the last second not logged (at "
                  "most " +
                  std::to_string(kPeerWarningsPerSecond) + " a second from each receiver thread)");
  peer_warnings_ = 0;
  peer_warnings_dropped_ = 0;
  // tick() may close an object, but closing only defers its release: iterating is safe.
  for (auto& [raw, obj] : objects_)
    raw->tick(now);
}

std::span<std::uint8_t> Worker::take_tls_plain() {
  if (tls_plain_taken_) return {};
  tls_plain_taken_ = true;
  if (tls_plain_.empty()) tls_plain_.resize(kTlsPlainBytes);
  return tls_plain_;
}

std::vector<WorkerObject*> Worker::objects() const {
  std::vector<WorkerObject*> out;
  for (auto& [raw, obj] : objects_)
    out.push_back(raw);
  return out;
}

void Worker::force_close_all() {
  std::vector<WorkerObject*> all;
  for (auto& [raw, obj] : objects_)
    all.push_back(raw);
  // A second shutdown() closes at once instead of waiting for replies to flush.
  for (WorkerObject* o : all)
    o->shutdown();
}

void Worker::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  std::vector<WorkerObject*> all;
  for (auto& [raw, obj] : objects_)
    all.push_back(raw);
  for (WorkerObject* o : all)
    o->shutdown();
  add(std::make_unique<ShutdownDeadline>(*this));
  if (objects_.size() <= 1) loop_.stop();
}

void Worker::close_everything() {
  shutting_down_ = true;
  std::vector<WorkerObject*> all;
  for (auto& [raw, obj] : objects_)
    all.push_back(raw);
  for (WorkerObject* o : all) {
    o->shutdown();
    o->shutdown();
  }
  // Timers and anything that ignored the above.
  std::vector<WorkerObject*> left;
  for (auto& [raw, obj] : objects_)
    if (!raw->closing()) left.push_back(raw);
  for (WorkerObject* o : left)
    o->force_close();
}

std::size_t Worker::abandon_undrained() {
  std::size_t n = 0;
  for (auto& [raw, obj] : objects_) {
    if (raw->inflight() == 0) continue;
    (void)obj.release();  // deliberately never freed: an op of it may still complete
    ++n;
  }
  objects_.clear();
  return n;
}

}  // namespace ackxfer
