// What every receiver worker shares: the destination, the token registry, counters, options,
// and the receiver-wide limits' counts.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fs/destination.h"
#include "io/work_queue.h"
#include "log.h"
#include "receiver/digest_cache.h"
#include "receiver/durable_publisher.h"
#include "receiver/file_registry.h"
#include "receiver/legacy_uploads.h"
#include "receiver/receiver.h"
#include "receiver/writable_dirs.h"
#include "tls/tls_channel.h"
#include "unique_fd.h"

namespace ackxfer {

// The keys of live sessions' data connections (TlsChannel::session_data_key), by identity:
// added when a session's handshake is done, removed when the session ends. A data connection
// on any worker finds its key here, so it proves it belongs to a live session.
class DataKeys {
 public:
  void add(const TlsPsk& k) {
    std::lock_guard lock(mu_);
    keys_[k.identity] = k.key;
  }
  void remove(const std::string& identity) {
    std::lock_guard lock(mu_);
    keys_.erase(identity);
  }
  std::optional<TlsKey> find(std::string_view identity) const {
    std::lock_guard lock(mu_);
    auto it = keys_.find(std::string(identity));
    if (it == keys_.end()) return std::nullopt;
    return it->second;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return keys_.size();
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, TlsKey> keys_;
};

struct ReceiverContext {
  explicit ReceiverContext(const ReceiverOptions& o);

  Destination destination;
  FileRegistry registry;
  ReceiverStats stats;
  Logger log;
  std::uint16_t data_port = 0;  // announced in HELLO
  RecvPath recv_path = RecvPath::kBuffers;
  bool discard = false;
  std::chrono::milliseconds idle_timeout{300'000};
  unsigned max_sessions = 16384;
  std::int64_t keep_partials_s = 86400;  // 0: resumable partials are off
  // Set (from a secret or certificates): every connection must run TLS.
  std::shared_ptr<TlsContext> tls;
  // Data connections' TLS: keys from `data_keys`, never the secret or certificates.
  std::shared_ptr<TlsContext> data_tls;
  DataKeys data_keys;
  bool allow_plain_data = false;  // recv --allow-unencrypted
  // Sets tls, and data_tls beside it (the fixture of the unit tests calls it too).
  void use_tls(std::shared_ptr<TlsContext> control);
  bool legacy_enabled = false;  // recv --legacy
  LegacyUploads legacy;
  std::atomic<bool> stopping{false};
  std::atomic<bool> pipe_refusal_logged{false};  // said once per receiver, not per connection
  // recv --fsync: verdicts wait for the publisher (null without --fsync).
  std::unique_ptr<DurablePublisher> publisher;
  // What skip=xxh3 checks found (before `work`, whose jobs fill it: destroyed after it).
  DigestCache digests;
  // How far kept partials were read back with every claim of their journals found good, keyed
  // by the partial as it was (inode, size, mtime, ctime, chunk size): a partial that nothing
  // has changed since is not read again, and a read-back cut short goes on where it stopped.
  // A peer that resumes and leaves, over and over, used to have its kept partial read back at
  // every attempt (from the start, when it left before the end). Attempts that write nothing
  // leave the partial untouched (Destination::open_partial, IncomingFile::abandon), so the key
  // still matches.
  ReadBackMemory read_backs{4'096};
  // Long local work (skip=xxh3 checks, reading kept partials back), in fair slices.
  WorkQueue work{2};

  // Receiver-wide limits (protocol/limits.h) and what is in use.
  std::size_t max_open_files = kMaxOpenFilesTotal;
  std::atomic<std::size_t> open_files{0};  // temp files open (OpenFileSlot)
  // Bytes the control sessions that said HELLO buffer (all of them), and the limit beyond
  // which the big holders among them are not read from (kMaxSessionBuffersTotal; lowered by
  // tests).
  std::atomic<std::size_t> session_buffers{0};
  std::size_t max_session_buffers = kMaxSessionBuffersTotal;
  // What sessions that have not said HELLO hold (a TLS channel mid-handshake, a first line),
  // apart: bounded by max_sessions_awaiting_hello, never held against the sessions that have.
  // Anyone can open connections; counted in session_buffers, a few thousand bare TLS handshakes
  // would stop the receiver reading from every sender that pipelines much.
  std::atomic<std::size_t> handshake_buffers{0};
  std::size_t max_tls_data_buffers = kMaxTlsDataBuffersTotal;
  // kMaxUnprovenDataConnections; lowered by tests.
  std::size_t max_unproven_data_connections = kMaxUnprovenDataConnections;
  std::size_t max_data_connections = kMaxDataConnections;  // lowered by tests
  std::atomic<std::size_t> tls_data_buffers{0};  // full-size buffers of encrypted data conns
  // kMaxDirMetadataBytesTotal; lowered by tests.
  std::size_t max_dir_metadata_bytes = kMaxDirMetadataBytesTotal;
  std::atomic<std::size_t> dir_metadata_bytes{0};  // every session's directory bookkeeping
  // Takes `bytes` of the directory bookkeeping budget; false (nothing taken) if it is spent.
  bool take_dir_budget(std::size_t bytes) {
    std::size_t now = dir_metadata_bytes.load(std::memory_order_relaxed);
    do {
      if (now + bytes > max_dir_metadata_bytes) return false;
    } while (
        !dir_metadata_bytes.compare_exchange_weak(now, now + bytes, std::memory_order_relaxed));
    return true;
  }
  // Read-only directories made writable for the sessions writing in them (charged to the
  // budget above).
  WritableDirs writable_dirs{
      [this](std::size_t b) { return take_dir_budget(b); },
      [this](std::size_t b) { dir_metadata_bytes.fetch_sub(b, std::memory_order_relaxed); }};
  std::atomic<std::size_t> data_connections{0};
  std::atomic<std::size_t> unproven_data_connections{0};  // no frame for a known token yet
  // Control sessions that have not said HELLO, on every worker (Worker::track_awaiting), and
  // how many may be at once (recv --max-handshakes, kMaxSessionsAwaitingHello by default).
  std::atomic<std::size_t> sessions_awaiting_hello{0};
  std::size_t max_sessions_awaiting_hello = kMaxSessionsAwaitingHello;
  std::atomic<std::uint64_t> next_connection_id{1};  // names claims (IncomingFile)

  // Spreading connections over the workers (Worker::take_data_connection and
  // take_control_connection). SO_REUSEPORT places a connection by a hash of its addresses, so
  // one session's streams could all land on one worker while another idles, and a newcomer at a
  // limit could land on a worker with nothing to make room for it while another worker holds
  // connections that have proven nothing. `load`: one entry per worker (empty: nothing is
  // spread). `hand_over` posts a connection to worker i's loop; set by the Receiver, used once
  // `spreading` is true (every worker's loop runs).
  struct WorkerLoad {
    std::atomic<std::size_t> data{0};      // data connections it holds or has been handed
    std::atomic<std::size_t> unproven{0};  // of those, without a frame for an open file yet
    std::atomic<std::size_t> awaiting{0};  // control sessions that have not said HELLO
  };
  std::vector<WorkerLoad> load;
  enum class Handed { kData, kControl };
  std::function<void(unsigned i, UniqueFd fd, Handed what)> hand_over;
  std::atomic<bool> spreading{false};

  // Fault injection for the test that a dying worker loop makes the receiver fail (exit 9):
  // ACKXFER_INJECT_FAULT=worker-loop makes worker 0's loop throw at its first tick.
  bool inject_worker_loop_failure = false;

  // A worker's loop died: the receiver cannot serve its share of connections any more.
  void fail(const std::string& why);
  std::optional<std::string> failure() const;

 private:
  mutable std::mutex failure_mu_;
  std::optional<std::string> failure_;  // guarded by failure_mu_
};

}  // namespace ackxfer
