// Worker: thread body, object ownership and orderly shutdown.
#include "receiver/worker.h"

#include "error.h"
#include "receiver/control_session.h"
#include "receiver/data_stream.h"
#include "receiver/listener.h"

namespace ackxfer {
namespace {

// Receive buffers, shared by all connections of a worker. Control lines are small; a control
// line may still span buffers. Data: the payload is written from these buffers directly, so
// they should stay in L2 between the kernel's copy into them and pwrite's copy out: 8 x 256 KiB
// measured as good as 4 x 512 KiB and better than 16 x 128 KiB or 8 x 1 MiB (a 2 GiB file,
// docs/PERFORMANCE.md). Memory stays the same however many connections a worker has.
constexpr std::uint16_t kControlBufferGroup = 1;
constexpr unsigned kControlBuffers = 32;
constexpr std::size_t kControlBufferBytes = 16 * 1024;
constexpr std::uint16_t kDataBufferGroup = 2;
constexpr unsigned kDataBuffers = 8;
constexpr std::size_t kDataBufferBytes = 256 * 1024;

// How long a stopping worker waits for sessions to send their last words before it closes
// whatever is left.
constexpr std::uint64_t kShutdownGraceNs = 2'000'000'000;

// Bounds shutdown: after the grace period, closes whatever is still open (cancelling its
// ops); if even that has not drained half a second later, ends the loop.
class ShutdownDeadline final : public WorkerObject {
 public:
  explicit ShutdownDeadline(Worker& w) : WorkerObject(w.loop()), worker_(w) {}
  void start() override { arm_timer(kShutdownGraceNs, 1); }
  void shutdown() override {}

 private:
  void on_complete(unsigned, int, unsigned) override {
    if (++expiries_ == 1) {
      worker_.force_close_all();
      arm_timer(500'000'000, 1);
    } else {
      worker_.loop().stop();
    }
  }
  void on_drained() override {}
  Worker& worker_;
  int expiries_ = 0;
};

// Calls Worker::tick_all() once a second.
class Housekeeper final : public WorkerObject {
 public:
  explicit Housekeeper(Worker& w) : WorkerObject(w.loop()), worker_(w) {}
  void start() override { arm_timer(1'000'000'000, 1); }
  void shutdown() override { begin_close(-1); }

 private:
  void on_complete(unsigned, int, unsigned) override {
    worker_.tick_all();
    arm_timer(1'000'000'000, 1);
  }
  void on_drained() override { worker_.release(this); }
  Worker& worker_;
};

}  // namespace

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Worker::Worker(ReceiverContext& ctx, unsigned index, UniqueFd control_listener,
               UniqueFd data_listener)
    : ctx_(ctx),
      index_(index),
      control_listener_fd_(std::move(control_listener)),
      data_listener_fd_(std::move(data_listener)) {}

Worker::~Worker() {
  stop();
  join();
}

void Worker::start() {
  auto started = started_.get_future();
  thread_ = std::thread([this] { thread_main(); });
  started.get();  // rethrows the thread's start-up failure
}

void Worker::thread_main() {
  try {
    loop_ = std::make_unique<EventLoop>();
    control_buffers_ = std::make_unique<BufferRing>(*loop_, kControlBufferGroup, kControlBuffers,
                                                    kControlBufferBytes);
    data_buffers_ =
        std::make_unique<BufferRing>(*loop_, kDataBufferGroup, kDataBuffers, kDataBufferBytes);
    // Data listener first: by the time a control session can answer READY, every worker is
    // accepting data connections.
    add(std::make_unique<Listener>(*this, std::move(data_listener_fd_), Listener::Kind::kData));
    add(std::make_unique<Listener>(*this, std::move(control_listener_fd_),
                                   Listener::Kind::kControl));
    add(std::make_unique<Housekeeper>(*this));
  } catch (...) {
    started_.set_exception(std::current_exception());
    return;
  }
  started_.set_value();
  try {
    loop_->run();
  } catch (const std::exception& e) {
    ctx_.log.error("worker " + std::to_string(index_) + " stopped: " + e.what());
  }
  // Destroy connections while the loop's ring still exists; their fds close with them.
  objects_.clear();
  data_buffers_.reset();
  control_buffers_.reset();
}

void Worker::stop() {
  if (!loop_) return;
  loop_->post([this] { begin_shutdown(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::add(std::unique_ptr<WorkerObject> obj) {
  WorkerObject* raw = obj.get();
  objects_.emplace(raw, std::move(obj));
  raw->start();
}

void Worker::adopt_control_connection(UniqueFd fd) {
  if (shutting_down_) return;  // fd closes here
  add(std::make_unique<ControlSession>(*this, std::move(fd)));
}

void Worker::adopt_data_connection(UniqueFd fd) {
  if (shutting_down_) return;
  add(std::make_unique<DataStream>(*this, std::move(fd)));
}

void Worker::release(WorkerObject* obj) {
  objects_.erase(obj);
  // Only the deadline timer left: everything closed in time.
  if (shutting_down_ && objects_.size() <= 1) loop_->stop();
}

void Worker::tick_all() {
  std::int64_t now = steady_ms();
  if (ctx_.legacy_enabled)
    for (auto& u : ctx_.legacy.expire(now))
      ctx_.log.warn("legacy client " + u->peer + " got READY for '" + escape_bytes(u->path) +
                    "' but no data connection came from its address within " +
                    std::to_string(kLegacyConnectTimeoutMs / 1000) + " s; dropped it");
  // tick() may close an object, but closing only defers its release: iterating is safe.
  for (auto& [raw, obj] : objects_)
    raw->tick(now);
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
  if (objects_.size() <= 1) loop_->stop();
}

}  // namespace ackxfer
