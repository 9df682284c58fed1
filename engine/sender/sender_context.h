// What the sender's control client and data streams share for one transfer.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "io/loop.h"
#include "io/socket.h"
#include "io/work_queue.h"
#include "sender/chunk_scheduler.h"
#include "sender/sender.h"
#include "tls/tls_channel.h"

namespace ackxfer {

class ControlClient;
class OutboundStream;

struct SenderContext {
  explicit SenderContext(const SenderOptions& o);
  ~SenderContext();  // in sender.cpp, where OutboundStream is complete

  const SenderOptions& options;
  Logger log;
  Endpoint control_ep;                       // the address being tried, then the one that answered
  std::vector<Endpoint> control_candidates;  // every address of --to's host, in order
  Endpoint data_ep;  // control_ep's host at the data port from the receiver's HELLO
  SendPath send_path = SendPath::kCopy;
  // Set with a secret or certificates: the control connection runs TLS, and so do the data
  // connections (with a key from each session: ControlClient hands it to the streams) unless
  // HELLO agreed on them in clear.
  std::shared_ptr<TlsContext> tls;
  std::string tls_host;  // the name or address dialled: a receiver's certificate must name it
  std::unique_ptr<ChunkScheduler> scheduler;

  // loops[i] runs on sender thread i; loops[0] also runs the control client.
  std::vector<Loop*> loops;
  std::vector<int> live_objects;  // per loop, touched only on that loop's thread
  ControlClient* control = nullptr;
  std::vector<std::unique_ptr<OutboundStream>> streams;

  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> payload_bytes_sent{0};
  // Chunks the receiver had (hashed, not sent) of files delivered: an attempt that ends in a
  // retry (a kept chunk found changed on the receiver's disk) counts again in the next one.
  std::atomic<std::uint64_t> resumed_bytes_delivered{0};
  // For Sender::progress(): what the control client has concluded so far.
  std::atomic<std::uint64_t> files_done{0};  // delivered and verified, or already there
  std::atomic<std::uint64_t> bytes_done{0};  // their sizes
  std::atomic<std::uint64_t> files_failed{0};
  // The receiver's own work on the files open now, as its PROGRESS last told: checking one
  // before READY (skip=xxh3), reading a resumed one's kept chunks back or flushing one after
  // DONE. Bytes done and to do.
  std::atomic<std::uint64_t> receiver_work_done{0};
  std::atomic<std::uint64_t> receiver_work_total{0};
  // --checksum: the files being hashed here before their SEND, bytes hashed (as of the last
  // tick) and their sizes.
  std::atomic<std::uint64_t> local_check_done{0};
  std::atomic<std::uint64_t> local_check_total{0};
  std::atomic<std::uint64_t> file_resends{0};
  std::atomic<bool> cancelled{false};
  // A stream could not get a pipe worth splicing through and sent from a mapping instead.
  std::atomic<bool> splice_refused{false};
  // When a data stream last heard from the receiver (an ack; steady ms): the control client's
  // deadline counts it as the receiver answering.
  std::atomic<std::int64_t> last_ack_ms{0};
  // Whole-file hashing for --checksum, off the loops, in slices.
  WorkQueue work{1};

  // Loop thread only: an object on loop `i` has finished for good.
  void object_finished(unsigned loop_index) {
    if (--live_objects[loop_index] == 0) loops[loop_index]->stop();
  }
};

}  // namespace ackxfer
