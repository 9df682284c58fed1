// The receiver engine: N workers, each with its own io_uring and its own SO_REUSEPORT
// listeners on the control and data ports. Embeddable: the CLI, the bench and the tests all
// run this same class.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "io/loop.h"
#include "io/socket.h"
#include "log.h"
#include "protocol/limits.h"
#include "tls/tls_channel.h"

namespace ackxfer {

class SharedSecret;

// How data connections receive payloads (both hash every byte and verify every frame).
//   kBuffers: multishot recv into the worker's provided-buffer ring, pwrite from there (the
//             default: measured faster, docs/PERFORMANCE.md).
//   kSplice:  splice socket -> pipe -> file for large payloads, then hash the written range
//             read back from the page cache. Kept selectable for benchmarks.
enum class RecvPath { kBuffers, kSplice };
const char* recv_path_name(RecvPath p);

struct ReceiverOptions {
  std::filesystem::path dir = ".";
  std::string listen = "0.0.0.0";
  std::uint16_t control_port = 36258;  // 0: any free port
  std::uint16_t data_port = 36250;     // 0: any free port
  unsigned threads = 0;                // 0: one per online CPU
  RecvPath recv_path = RecvPath::kBuffers;
  // Receive and verify every byte, but write nothing: the memory-to-memory mode for measuring a
  // link (`recv --discard`, `bench --mem`). Nothing is created under `dir`.
  bool discard = false;
  // A control session with no line and no data progress for this long is closed (so is a
  // data connection that sends nothing); see also the fixed first-line limits in worker.h.
  std::chrono::seconds idle_timeout{300};
  // Control sessions beyond this get `ERR - busy` and are closed.
  unsigned max_sessions = 16384;
  // Of those, how many may be connections that have not said HELLO yet (nor finished their TLS
  // handshake): beyond it the oldest of them makes room (kMaxSessionsAwaitingHello).
  std::size_t max_handshakes = kMaxSessionsAwaitingHello;
  // How long a partial file kept for resuming (docs/RELIABILITY.md) survives: partials older
  // than this are removed when the receiver starts. 0: never keep partial files.
  std::chrono::seconds keep_partials{86400};
  // With a secret (--secret-file) or certificates (--tls-cert/--tls-key/--tls-ca), every
  // connection runs TLS 1.3 and only senders that hold the secret, or a certificate the CA
  // signed, get a session (docs/SECURITY.md); without either, anyone who can connect may
  // send, and everything crosses the network in clear.
  std::shared_ptr<const SharedSecret> secret;
  std::optional<TlsCertificates> certificates;
  // With encryption: a sender may ask for its data connections in clear (send
  // --no-encryption); the control connection stays encrypted.
  bool allow_unencrypted = false;
  // Also accept the classic SEND/READY clients (no HELLO, no framing, no digest); see
  // receiver/legacy_uploads.h. Incompatible with `secret`: they cannot authenticate.
  bool legacy = false;
  // A verdict (OK, or a one-chunk file's `published` ack) is sent only once the file's data,
  // its name and its directory are on stable storage (receiver/durable_publisher.h).
  bool fsync = false;
  Logger log;
};

// Counters across all workers, updated as things happen; read them at any time.
struct ReceiverStats {
  std::atomic<std::uint64_t> sessions{0};
  std::atomic<std::uint64_t> sessions_active{0};
  std::atomic<std::uint64_t> sessions_refused_busy{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> data_connections{0};
  std::atomic<std::uint64_t> files_published{0};
  std::atomic<std::uint64_t> bytes_published{0};
  std::atomic<std::uint64_t> files_failed{0};
  std::atomic<std::uint64_t> files_skipped{0};       // already there and identical
  std::atomic<std::uint64_t> digests_remembered{0};  // skip=xxh3 checks answered without reading
  // skip=xxh3 checks answered "send it" without reading: that version of the file was read
  // DigestCache::kReadsPerVersion times already.
  std::atomic<std::uint64_t> digest_reads_declined{0};
  std::atomic<std::uint64_t> files_resumed{0};  // continued from a kept partial
  std::atomic<std::uint64_t> bytes_resumed{0};  // verified bytes not received again
  // Journaled bytes of kept partials read back and hashed before they were offered again.
  std::atomic<std::uint64_t> bytes_read_back{0};
  // Kept partials offered again without reading them back: unchanged since a read-back.
  std::atomic<std::uint64_t> read_backs_remembered{0};
  std::atomic<std::uint64_t> partials_kept{0};  // left for a later attempt to resume
  std::atomic<std::uint64_t> payload_bytes_received{0};
  std::atomic<std::uint64_t> chunk_digest_mismatches{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  std::atomic<std::uint64_t> auth_failures{0};  // sessions refused: no or wrong secret
  // What peers were refused or had taken from them by a limit (protocol/limits.h).
  std::atomic<std::uint64_t> data_connections_refused{0};  // beyond the data connection limits
  // Unproven data connections closed to make room for newer ones (Worker::adopt_data_connection).
  std::atomic<std::uint64_t> data_connections_evicted{0};
  // At the limit of data connections in all: the quietest closed to make room for a newcomer.
  std::atomic<std::uint64_t> data_connections_displaced{0};
  // Sessions that had not said HELLO, closed to make room under --max-sessions.
  std::atomic<std::uint64_t> sessions_evicted{0};
  std::atomic<std::uint64_t> files_refused_busy{0};  // beyond the open-file limits
  std::atomic<std::uint64_t> claims_taken_over{0};   // chunks taken from a connection gone quiet
  std::atomic<std::uint64_t> legacy_refused{0};      // recv --legacy: beyond the queue limits
};

class WorkerThread;
struct ReceiverContext;

class Receiver {
 public:
  explicit Receiver(ReceiverOptions options);
  ~Receiver();
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Binds the data listeners, then the control listeners, starts the workers and returns once
  // every worker's accepts are armed: from then on a READY always means "connect now".
  // Throws Failure/SystemError with a message fit for the user.
  void start();
  // Thread-safe. Stops accepting, tells each control session the receiver is shutting down,
  // abandons in-flight files (their temp files are removed) and lets the workers exit.
  void stop();
  // Waits for the workers to exit.
  void wait();

  const Endpoint& control_endpoint() const { return control_ep_; }
  const Endpoint& data_endpoint() const { return data_ep_; }
  unsigned threads() const { return threads_; }
  const ReceiverStats& stats() const;
  // Per-worker loop counters; complete once wait() has returned.
  std::vector<LoopCounters> loop_counters() const;
  // Why the receiver failed while running (a worker's loop died), or nothing. Once set, the
  // receiver is stopping: the embedding program should wait() and report it.
  std::optional<std::string> failure() const;

 private:
  ReceiverOptions options_;
  unsigned threads_ = 0;
  Endpoint control_ep_, data_ep_;
  std::unique_ptr<ReceiverContext> ctx_;
  std::vector<std::unique_ptr<WorkerThread>> workers_;
  std::thread sweeper_;  // removes stale partial files at start
  std::atomic<bool> sweep_stop_{false};
};

}  // namespace ackxfer
