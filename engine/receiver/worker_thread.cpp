// WorkerThread: thread body, and the drain that keeps freed memory out of the kernel's reach.
#include "receiver/worker_thread.h"

#include <memory>

#include "error.h"
#include "receiver/listener.h"

namespace ackxfer {
namespace {
// After a forced shutdown, how long the loop may take to deliver its last completions.
constexpr std::int64_t kDrainMs = 2'000;
}  // namespace

WorkerThread::WorkerThread(ReceiverContext& ctx, unsigned index, UniqueFd control_listener,
                           UniqueFd data_listener)
    : ctx_(ctx),
      index_(index),
      control_listener_fd_(std::move(control_listener)),
      data_listener_fd_(std::move(data_listener)) {}

WorkerThread::~WorkerThread() {
  stop();
  join();
}

void WorkerThread::start() {
  auto started = started_.get_future();
  thread_ = std::thread([this] { thread_main(); });
  started.get();  // rethrows the thread's start-up failure
}

void WorkerThread::thread_main() {
  try {
    loop_ = std::make_unique<UringLoop>();
    worker_ = std::make_unique<Worker>(ctx_, *loop_, index_);
    // Data listener first: by the time a control session can answer READY, every worker is
    // accepting data connections.
    worker_->add(
        std::make_unique<Listener>(*worker_, std::move(data_listener_fd_), Listener::Kind::kData));
    worker_->add(std::make_unique<Listener>(*worker_, std::move(control_listener_fd_),
                                            Listener::Kind::kControl));
    worker_->start_housekeeping();
  } catch (...) {
    worker_.reset();
    loop_.reset();
    started_.set_exception(std::current_exception());
    return;
  }
  started_.set_value();
  try {
    loop_->run();
  } catch (const std::exception& e) {
    ctx_.fail("worker " + std::to_string(index_) + " stopped: " + e.what());
  }
  try {
    drain();
  } catch (const std::exception& e) {
    ctx_.fail("worker " + std::to_string(index_) + " could not drain: " + e.what());
    if (worker_) worker_->abandon_undrained();
  }
  counters_ = loop_->counters();
  // Objects that drained are destroyed here, while their ring still exists; the ring goes
  // with this object (stop() may still post to it meanwhile: posts are dropped).
  worker_.reset();
}

void WorkerThread::drain() {
  if (worker_->drained()) return;
  worker_->close_everything();
  loop_->cancel_all();
  loop_->run_until([this] { return worker_->drained(); }, kDrainMs);
  if (std::size_t n = worker_->abandon_undrained())
    ctx_.log.error("worker " + std::to_string(index_) + ": " + std::to_string(n) +
                   " connections still had operations in flight at exit; their memory is "
                   "left allocated rather than freed under the kernel");
}

void WorkerThread::stop() {
  if (!loop_) return;
  loop_->post([this] { worker_->begin_shutdown(); });
}

void WorkerThread::hand_connection(UniqueFd fd, ReceiverContext::Handed what) {
  if (!loop_) return;
  // A posted task must be copyable; the fd closes with the last copy if it is never run.
  auto conn = std::make_shared<UniqueFd>(std::move(fd));
  loop_->post([this, conn, what] {
    if (!worker_) return;
    if (what == ReceiverContext::Handed::kData)
      worker_->adopt_data_connection(std::move(*conn), /*handed=*/true);
    else
      worker_->adopt_control_connection(std::move(*conn));
  });
}

void WorkerThread::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace ackxfer
