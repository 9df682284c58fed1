// Receiver: binds listeners in the right order and runs the workers.
#include "receiver/receiver.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "display.h"
#include "error.h"
#include "fs/partial.h"
#include "io/uring_loop.h"
#include "receiver/receiver_context.h"
#include "receiver/worker_thread.h"

namespace ackxfer {
namespace {

// Connections the kernel completes before a worker accepts them: senders open several data
// streams at once, and many senders may start together.
constexpr int kListenBacklog = 4096;

unsigned online_cpus() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

// One SO_REUSEPORT listener per worker on the same address. With port 0 the first socket
// picks a free port and the rest join it.
std::vector<UniqueFd> bind_listeners(Endpoint& ep, unsigned count) {
  std::vector<UniqueFd> fds;
  for (unsigned i = 0; i < count; ++i) {
    fds.push_back(make_reuseport_listener(ep, kListenBacklog));
    if (i == 0 && ep.port() == 0) ep.set_port(local_endpoint(fds[0].get()).port());
  }
  return fds;
}

// Temp files the receiver may hold open in all: a share of the fd limit, so that sockets,
// listeners and rings always have room.
std::size_t open_file_limit() {
  rlimit rl{};
  std::size_t fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                        ? static_cast<std::size_t>(rl.rlim_cur)
                        : kMaxOpenFilesTotal;
  return std::clamp<std::size_t>(fds / kOpenFilesShareOfFdLimit, 16, kMaxOpenFilesTotal);
}

}  // namespace

const char* recv_path_name(RecvPath p) {
  return p == RecvPath::kSplice ? "splice" : "buffers";
}

ReceiverContext::ReceiverContext(const ReceiverOptions& o)
    : destination(o.dir, o.discard), log(o.log) {}

void ReceiverContext::use_tls(std::shared_ptr<TlsContext> control) {
  tls = std::move(control);
  if (!tls) return;
  data_tls = TlsContext::with_psk_lookup(
      TlsRole::kServer, [this](std::string_view identity) { return data_keys.find(identity); });
}

void ReceiverContext::fail(const std::string& why) {
  {
    std::lock_guard lock(failure_mu_);
    if (!failure_) failure_ = why;
  }
  log.error(why);
}

std::optional<std::string> ReceiverContext::failure() const {
  std::lock_guard lock(failure_mu_);
  return failure_;
}

Receiver::Receiver(ReceiverOptions options) : options_(std::move(options)) {}

Receiver::~Receiver() {
  stop();
  wait();
}

const ReceiverStats& Receiver::stats() const {
  return ctx_->stats;
}

std::optional<std::string> Receiver::failure() const {
  return ctx_ ? ctx_->failure() : std::nullopt;
}

void Receiver::start() {
  if (auto why = io_uring_unavailable_reason()) throw Failure(*why, FailureKind::kSetup);
  if (options_.legacy && (options_.secret || options_.certificates))
    throw Failure(
        "--legacy cannot be combined with --secret-file or --tls-cert: classic clients can "
        "neither authenticate nor encrypt",
        FailureKind::kUsage);
  auto tls = TlsContext::from_options(TlsRole::kServer, options_.secret, options_.certificates,
                                      "--allow-unencrypted", options_.allow_unencrypted);
  threads_ = options_.threads ? options_.threads : online_cpus();
  ctx_ = std::make_unique<ReceiverContext>(options_);

  data_ep_ = resolve_endpoint(options_.listen, options_.data_port, true);
  control_ep_ = resolve_endpoint(options_.listen, options_.control_port, true);
  if (data_ep_.port() != 0 && data_ep_.port() == control_ep_.port())
    throw Failure(
        "--port and --data-port must differ (both are " + std::to_string(data_ep_.port()) + ")",
        FailureKind::kUsage);
  check_port_available(data_ep_, "data port");
  check_port_available(control_ep_, "control port");

  // Data listeners first, so they are accepting before any control connection can be.
  std::vector<UniqueFd> data = bind_listeners(data_ep_, threads_);
  std::vector<UniqueFd> control = bind_listeners(control_ep_, threads_);
  ctx_->data_port = data_ep_.port();
  ctx_->recv_path = options_.recv_path;
  ctx_->discard = options_.discard;
  ctx_->idle_timeout = options_.idle_timeout;
  ctx_->max_sessions = options_.max_sessions;
  ctx_->max_sessions_awaiting_hello = options_.max_handshakes;
  ctx_->keep_partials_s = options_.keep_partials.count();
  ctx_->use_tls(std::move(tls));
  ctx_->allow_plain_data = options_.allow_unencrypted;
  ctx_->legacy_enabled = options_.legacy;
  ctx_->max_open_files = open_file_limit();
  if (const char* f = std::getenv("ACKXFER_INJECT_FAULT"); f && std::string(f) == "worker-loop")
    ctx_->inject_worker_loop_failure = true;
  if (options_.fsync && !options_.discard) {
    ctx_->destination.track_created_directories(true);
    ctx_->publisher = std::make_unique<DurablePublisher>(ctx_->destination);
  }
  if (!options_.discard) {
    // Partials abandoned long ago (see fs/partial.h): removed in the background, so a large
    // --dir does not delay the start. Partials in use are locked and left alone.
    sweeper_ = std::thread([this] {
      auto r =
          sweep_stale_partials(ctx_->destination.root_fd(), ctx_->keep_partials_s, sweep_stop_);
      if (r.removed)
        ctx_->log.info("removed " + counted(r.removed, "partial file", "partial files") + " (" +
                       std::to_string(r.bytes) + " bytes) older than " +
                       std::to_string(ctx_->keep_partials_s) + " s (--keep-partials)");
      if (r.left_unproven)
        ctx_->log.info("left " + counted(r.left_unproven, "file", "files") +
                       " named like this receiver's temp files (.ackxfer-*.part, "
                       ".journal) alone: no journal of ours proves they are ours");
    });
  }

  ctx_->load = std::vector<ReceiverContext::WorkerLoad>(threads_);
  for (unsigned i = 0; i < threads_; ++i)
    workers_.push_back(
        std::make_unique<WorkerThread>(*ctx_, i, std::move(control[i]), std::move(data[i])));
  ctx_->hand_over = [this](unsigned i, UniqueFd fd, ReceiverContext::Handed what) {
    workers_[i]->hand_connection(std::move(fd), what);
  };
  try {
    for (auto& w : workers_)
      w->start();
    // Every loop runs: connections may be handed between workers from here on.
    ctx_->spreading.store(threads_ > 1, std::memory_order_release);
  } catch (...) {
    stop();
    wait();
    workers_.clear();
    throw;
  }
}

std::vector<LoopCounters> Receiver::loop_counters() const {
  std::vector<LoopCounters> out;
  for (auto& w : workers_)
    out.push_back(w->counters());
  return out;
}

void Receiver::stop() {
  sweep_stop_ = true;
  if (ctx_) {
    ctx_->stopping = true;
    ctx_->spreading.store(false, std::memory_order_release);
    // Before the workers: their jobs post results to the workers' loops. The publisher
    // finishes what it was given (those files are verified; publishing them is right).
    ctx_->work.stop();
    if (ctx_->publisher) ctx_->publisher->stop();
  }
  for (auto& w : workers_)
    w->stop();
}

void Receiver::wait() {
  for (auto& w : workers_)
    w->join();
  if (sweeper_.joinable()) sweeper_.join();
}

}  // namespace ackxfer
