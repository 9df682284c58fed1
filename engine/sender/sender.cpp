// Sender::run: sets up the loops, threads, streams and control client, and collects the report.
#include "sender/sender.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <future>
#include <mutex>
#include <thread>

#include "error.h"
#include "io/socket.h"
#include "io/uring_loop.h"
#include "sender/control_client.h"
#include "sender/outbound_stream.h"
#include "sender/sender_context.h"

namespace ackxfer {
namespace {

constexpr std::uint16_t kDefaultControlPort = 36258;
constexpr unsigned kMaxStreams = 256;
constexpr unsigned kDefaultRemoteStreams = 4;

bool is_loopback(const Endpoint& ep) {
  if (ep.family() == AF_INET) {
    auto a = ntohl(reinterpret_cast<const sockaddr_in*>(&ep.addr)->sin_addr.s_addr);
    return (a >> 24) == 127;
  }
  if (ep.family() == AF_INET6) {
    const auto* a6 = &reinterpret_cast<const sockaddr_in6*>(&ep.addr)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(a6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(a6)) return a6->s6_addr[12] == 127;
  }
  return false;
}

unsigned online_cpus() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

}  // namespace

const char* send_path_name(SendPath p) {
  switch (p) {
    case SendPath::kAuto:
      return "auto";
    case SendPath::kCopy:
      return "copy";
    case SendPath::kMmap:
      return "mmap";
    case SendPath::kSplice:
      return "splice";
  }
  return "?";
}

std::optional<SendPath> parse_send_path(std::string_view name) {
  for (SendPath p : {SendPath::kAuto, SendPath::kCopy, SendPath::kMmap, SendPath::kSplice})
    if (name == send_path_name(p)) return p;
  return std::nullopt;
}

SenderContext::SenderContext(const SenderOptions& o) : options(o), log(o.log) {}
SenderContext::~SenderContext() = default;

Sender::Sender(SenderOptions options) : options_(std::move(options)) {}
Sender::~Sender() = default;

void Sender::cancel() {
  std::lock_guard lock(ctx_mu_);
  cancel_requested_ = true;
  if (!ctx_) return;
  ctx_->cancelled = true;
  SenderContext* ctx = ctx_;
  ctx->loops[0]->post([ctx] { ctx->control->cancel(); });
}

std::optional<SendProgress> Sender::progress() {
  std::lock_guard lock(ctx_mu_);
  if (!ctx_ || !ctx_->scheduler) return std::nullopt;
  SendProgress p;
  p.files_done = ctx_->files_done.load(std::memory_order_relaxed);
  p.bytes_done = ctx_->bytes_done.load(std::memory_order_relaxed);
  p.files_failed = ctx_->files_failed.load(std::memory_order_relaxed);
  p.bytes_sent = ctx_->payload_bytes_sent.load(std::memory_order_relaxed);
  p.bytes_in_flight = ctx_->scheduler->settled_in_flight();
  p.receiver_work_done = ctx_->receiver_work_done.load(std::memory_order_relaxed);
  p.receiver_work_total = ctx_->receiver_work_total.load(std::memory_order_relaxed);
  p.local_check_done = ctx_->local_check_done.load(std::memory_order_relaxed);
  p.local_check_total = ctx_->local_check_total.load(std::memory_order_relaxed);
  p.retries = ctx_->scheduler->retries() + ctx_->file_resends.load(std::memory_order_relaxed) +
              ctx_->reconnects.load(std::memory_order_relaxed);
  return p;
}

SendReport Sender::run() {
  if (options_.streams > kMaxStreams)
    throw Failure("--streams must be between 1 and " + std::to_string(kMaxStreams),
                  FailureKind::kUsage);
  if (options_.paths.empty() && !options_.synthetic)
    throw Failure("nothing to send: give at least one PATH", FailureKind::kUsage);
  HostPort hp = parse_host_port(options_.to);
  if (!hp.has_port) hp.port = kDefaultControlPort;
  if (hp.port == 0)
    throw Failure("--to: port 0 is not a port a receiver can listen on", FailureKind::kUsage);
  if (auto why = io_uring_unavailable_reason()) throw Failure(*why, FailureKind::kSetup);

  SenderContext ctx(options_);
  ctx.tls = TlsContext::from_options(TlsRole::kClient, options_.secret, options_.certificates,
                                     "--no-encryption", options_.no_encryption);
  std::unique_ptr<EntrySource> walker;
  if (options_.synthetic) {
    walker = std::make_unique<SyntheticTree>(options_.synthetic->name, options_.synthetic->files,
                                             options_.synthetic->file_bytes);
  } else {
    auto tree = std::make_unique<TreeWalker>(options_.paths);
    if (!tree->has_roots()) {
      // Not one PATH can be sent (a typo, most often): said now, not after a name lookup and
      // --retry-for spent on a receiver that may not be there. Bad options still come first.
      SendReport report;
      for (auto& p : tree->take_problems())
        report.failed.push_back(FailedFile{p.path, p.reason});
      report.outcome = SendReport::Outcome::kSomeFailed;
      report.error = "nothing to send: no PATH can be sent";
      return report;
    }
    walker = std::move(tree);
  }
  ctx.tls_host = hp.host;
  ctx.control_candidates = resolve_endpoints(hp.host, hp.port, false);
  ctx.control_ep = ctx.control_candidates.front();
  const bool loopback = is_loopback(ctx.control_ep);
  ctx.send_path = options_.send_path;
  if (ctx.send_path == SendPath::kAuto)
    // Over loopback the receiver copies out of whatever pages we hand the kernel: the copy
    // path (pread 1 MiB, hash it while hot, send it) costs half the sender CPU of mapping and
    // unmapping each chunk (docs/PERFORMANCE.md, "Cycles per byte"); towards a NIC, splice
    // lets it read the page cache directly.
    ctx.send_path = loopback ? SendPath::kCopy : SendPath::kSplice;
  // Encrypted data is read into the buffer it is encrypted from: a mapping could be cut
  // short under the cipher (SIGBUS), and nothing can be spliced through TLS in user space.
  // Data in clear (--no-encryption) keeps every path.
  if (ctx.tls && !options_.no_encryption) {
    if (ctx.send_path != SendPath::kCopy && options_.send_path != SendPath::kAuto)
      ctx.log.warn(std::string("--send-path ") + send_path_name(ctx.send_path) +
                   " does not apply to encrypted data, which is read, hashed and encrypted from "
                   "one buffer (copy); --no-encryption keeps it for the file data");
    ctx.send_path = SendPath::kCopy;
  }

  unsigned threads = options_.threads ? options_.threads : online_cpus();
  unsigned streams = options_.streams ? options_.streams : loopback ? 1 : kDefaultRemoteStreams;
  threads = std::max(1u, std::min(threads, streams));

  SendReport report;
  report.started = true;
  report.send_path = send_path_name(ctx.send_path);
  report.streams = streams;
  report.threads = threads;

  // Loop 0 belongs to this thread; each helper thread creates its own loop (a ring is bound
  // to the thread that submits to it) and waits for the go signal. The loops are destroyed
  // only after every thread has finished: any thread may post to any loop until then.
  UringLoop loop0;
  std::vector<std::unique_ptr<UringLoop>> helper_loops(threads);
  ctx.loops.assign(threads, nullptr);
  ctx.loops[0] = &loop0;
  std::vector<std::thread> helpers;
  std::mutex failure_mu;
  std::optional<std::string> loop_failure;  // guarded by failure_mu
  std::vector<std::promise<void>> ready(threads);
  std::promise<void> go;
  std::shared_future<void> go_signal = go.get_future().share();
  for (unsigned i = 1; i < threads; ++i) {
    helpers.emplace_back([&, i] {
      try {
        helper_loops[i] = std::make_unique<UringLoop>();
        ctx.loops[i] = helper_loops[i].get();
        ready[i].set_value();
      } catch (...) {
        ready[i].set_exception(std::current_exception());
        return;
      }
      go_signal.wait();
      try {
        helper_loops[i]->run();
      } catch (const std::exception& e) {
        // Its streams are gone: the transfer cannot finish as planned. End it, and say so.
        std::string why = std::string("a sender thread's loop failed: ") + e.what();
        ctx.log.error(why);
        {
          std::lock_guard lock(failure_mu);
          if (!loop_failure) loop_failure = why;
        }
        ctx.loops[0]->post([&ctx] {
          if (ctx.control) ctx.control->cancel();
        });
      }
    });
  }
  std::exception_ptr startup_error;
  for (unsigned i = 1; i < threads; ++i) {
    try {
      ready[i].get_future().get();
    } catch (...) {
      startup_error = std::current_exception();
    }
  }
  if (startup_error) {
    for (unsigned i = 1; i < threads; ++i)
      if (Loop* l = ctx.loops[i]) l->post([l] { l->stop(); });
    go.set_value();
    for (auto& t : helpers)
      t.join();
    std::rethrow_exception(startup_error);
  }

  ControlClient* control_ptr = nullptr;
  ChunkScheduler::Callbacks callbacks;
  callbacks.file_chunks_done = [&ctx, &control_ptr](std::shared_ptr<OutgoingFile> f) {
    ctx.loops[0]->post([&control_ptr, f = std::move(f)] { control_ptr->file_chunks_done(f); });
  };
  callbacks.file_failed = [&ctx, &control_ptr](std::shared_ptr<OutgoingFile> f, std::string reason,
                                               bool retryable) {
    ctx.loops[0]->post([&control_ptr, f = std::move(f), reason = std::move(reason), retryable] {
      control_ptr->file_failed(f, reason, retryable);
    });
  };
  ctx.scheduler = std::make_unique<ChunkScheduler>(std::move(callbacks));
  ctx.live_objects.assign(threads, 0);
  for (unsigned s = 0; s < streams; ++s) {
    unsigned loop_index = s % threads;
    ctx.streams.push_back(std::make_unique<OutboundStream>(ctx, loop_index, s));
    ++ctx.live_objects[loop_index];
  }
  ControlClient control(ctx, *walker, report);
  control_ptr = &control;
  ctx.control = &control;
  ++ctx.live_objects[0];

  auto t0 = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(ctx_mu_);
    ctx_ = &ctx;
    if (cancel_requested_) loop0.post([&control] { control.cancel(); });
  }
  control.start();
  go.set_value();
  try {
    loop0.run();
  } catch (const std::exception& e) {
    std::string why = std::string("the sender's loop failed: ") + e.what();
    ctx.log.error(why);
    {
      std::lock_guard lock(failure_mu);
      if (!loop_failure) loop_failure = why;
    }
    for (unsigned i = 1; i < threads; ++i)
      ctx.loops[i]->post([l = ctx.loops[i]] { l->stop(); });
  }
  // Its jobs post to loop 0: stopped before any loop goes.
  ctx.work.stop();
  for (auto& t : helpers)
    t.join();
  {
    std::lock_guard lock(ctx_mu_);
    ctx_ = nullptr;
  }
  for (unsigned i = 0; i < threads; ++i) {
    const LoopCounters& c = i == 0 ? loop0.counters() : helper_loops[i]->counters();
    report.cpu_seconds += static_cast<double>(c.cpu_ns) / 1e9;
    if (c.run_ns)
      report.busiest_thread = std::max(
          report.busiest_thread, static_cast<double>(c.cpu_ns) / static_cast<double>(c.run_ns));
    report.cq_overflow += c.cq_overflow;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.retries = ctx.scheduler->retries() + control.file_resends() + ctx.reconnects.load();
  report.resumed_bytes = ctx.resumed_bytes_delivered.load();
  // Which path ran: a stream the kernel refused a usable pipe sent from a mapping.
  if (ctx.splice_refused.load()) report.send_path = "splice+mmap";
  if (report.outcome == SendReport::Outcome::kOk && !report.failed.empty())
    report.outcome = SendReport::Outcome::kSomeFailed;
  std::lock_guard lock(failure_mu);
  if (loop_failure) throw Failure(*loop_failure, FailureKind::kInternal);
  return report;
}

}  // namespace ackxfer
