// One receiver worker's connections on one loop: it owns every connection and listener its
// loop serves, starts and releases them, ticks their deadlines once a second and shuts them down
// in order. It has no thread of its own (receiver/worker_thread.h runs one on an io_uring), so
// unit tests drive it, and the connections in it, on the test double.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "io/loop.h"
#include "receiver/receiver_context.h"
#include "unique_fd.h"

namespace ackxfer {

class ControlSession;
class DataStream;
class Worker;

// A connection, listener or timer owned by a worker.
class WorkerObject : public LoopObject {
 public:
  explicit WorkerObject(Worker& worker);
  virtual void start() = 0;
  // The receiver is stopping. The first call finishes up (last words to the peer, within a
  // deadline); a second call closes at once.
  virtual void shutdown() = 0;
  // Once a second: check deadlines. `now_ms`: the loop's clock.
  virtual void tick(std::int64_t /*now_ms*/) {}
  // Last resort of a forced shutdown: cancel whatever is still in flight (timers included).
  void force_close() { begin_close(-1); }

 protected:
  Worker& worker_;
};

class Worker {
 public:
  // Provided-buffer pools of the worker's loop, shared by its connections: control lines are
  // small; data payloads are hashed and written straight from these buffers. 4 x 1 MiB: on the
  // AMD host (2026-12-02) 1 MiB receives cost the receiver a fifth less CPU per GB than 256 KiB
  // ones, and 4 buffers ran as fast as 8 (on the Intel host of 2026-11-25, 8 x 256 KiB had
  // measured best; docs/PERFORMANCE.md, "Cycles per byte"). Memory stays the same however many
  // connections a worker has.
  static constexpr std::uint16_t kControlPool = 1;
  static constexpr unsigned kControlBuffers = 32;
  static constexpr std::size_t kControlBufferBytes = 16 * 1024;
  static constexpr std::uint16_t kDataPool = 2;
  static constexpr unsigned kDataBuffers = 4;
  static constexpr std::size_t kDataBufferBytes = 1024 * 1024;

  // Registers the buffer pools on `loop` (throws Failure if the kernel refuses).
  Worker(ReceiverContext& ctx, Loop& loop, unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Where encrypted data connections decrypt records to, to be hashed and written before the
  // call returns: one buffer for all of the worker's connections, as the data pool is. Null
  // while another connection holds it (never expected: the caller then uses one of its own).
  static constexpr std::size_t kTlsPlainBytes = 256 * 1024;
  std::span<std::uint8_t> take_tls_plain();
  void give_back_tls_plain() { tls_plain_taken_ = false; }

  ReceiverContext& ctx() { return ctx_; }
  Loop& loop() { return loop_; }

  // Warnings a peer can cause once per connection, frame or line (a refused connection, a
  // digest mismatch, a refused SEND): at most kPeerWarningsPerSecond from this worker each
  // second; the rest are counted and summed up in one line at the next tick. A peer sending
  // 65-byte frames with wrong digests for a file with a long name used to have the receiver
  // log a line of up to 16 KB for each, flooding the log and holding every worker on its lock.
  static constexpr unsigned kPeerWarningsPerSecond = 20;
  template <typename MakeText>
  void peer_warning(MakeText&& make_text) {
    if (peer_warnings_ < kPeerWarningsPerSecond) {
      ++peer_warnings_;
      ctx_.log.warn(make_text());  // built only when it is logged
    } else {
      ++peer_warnings_dropped_;
    }
  }
  unsigned index() const { return index_; }
  bool stopping() const { return shutting_down_; }

  // Takes `obj` and starts it.
  void add(std::unique_ptr<WorkerObject> obj);
  // Starts the once-a-second tick of every object's deadlines.
  void start_housekeeping();
  // An accepted control connection: adopted here, unless the receiver is at --max-sessions,
  // this worker has no session awaiting HELLO to make room and another worker has: then it goes
  // there (ReceiverContext::load).
  void take_control_connection(UniqueFd fd);
  void adopt_control_connection(UniqueFd fd);
  // An accepted data connection: adopted here, or handed to the worker with the fewest data
  // connections when that one has fewer than this one. At the limit of connections that have
  // proven nothing, it goes where one of those can make room for it: this worker if it holds
  // any, else the worker holding the most (ReceiverContext::load).
  void take_data_connection(UniqueFd fd);
  // At the maximum of connections that have not carried a frame for a known file yet, this
  // worker's oldest such connection makes room (a sender's connection proves itself within a
  // round trip or two, so only peers that sit on theirs lose them). At the maximum in all, the
  // connection this worker holds that has been quiet longest makes room: one token is enough
  // to prove any number of connections, and a peer that trickled a byte into each before its
  // deadline used to hold every place for as long as it liked, keeping every sender's data
  // connections out. A connection that has received bytes within kStaleClaimMs is never made to
  // room: `fd` closes at once if this worker has nothing else to make room with. `handed`:
  // another worker counted it in this one's load (take_data_connection).
  void adopt_data_connection(UniqueFd fd, bool handed = false);
  // A data connection of this worker's is gone (DataStream's destructor).
  void data_connection_gone() { count(&ReceiverContext::WorkerLoad::data, -1); }
  // This worker's data connections that have proven nothing yet, oldest first.
  using UnprovenList = std::list<DataStream*>;
  UnprovenList::iterator track_unproven(DataStream* d) {
    count(&ReceiverContext::WorkerLoad::unproven, +1);
    return unproven_.insert(unproven_.end(), d);
  }
  void untrack_unproven(UnprovenList::iterator it) {
    count(&ReceiverContext::WorkerLoad::unproven, -1);
    unproven_.erase(it);
  }
  // This worker's data connections that have proven themselves, in the order they last
  // received bytes, quietest first: at the limit of data connections in all, a quiet one makes
  // room for a newcomer.
  using ProvenList = std::list<DataStream*>;
  ProvenList::iterator track_proven(DataStream* d) { return proven_.insert(proven_.end(), d); }
  void untrack_proven(ProvenList::iterator it) { proven_.erase(it); }
  void heard_from(ProvenList::iterator it) { proven_.splice(proven_.end(), proven_, it); }
  // This worker's control sessions that have not said HELLO yet, oldest first: at
  // --max-sessions, or at the receiver's limit of such sessions, the oldest of them makes room
  // for a new session.
  using AwaitingList = std::list<ControlSession*>;
  AwaitingList::iterator track_awaiting(ControlSession* s) {
    count(&ReceiverContext::WorkerLoad::awaiting, +1);
    ctx_.sessions_awaiting_hello.fetch_add(1, std::memory_order_relaxed);
    return awaiting_.insert(awaiting_.end(), s);
  }
  void untrack_awaiting(AwaitingList::iterator it) {
    count(&ReceiverContext::WorkerLoad::awaiting, -1);
    ctx_.sessions_awaiting_hello.fetch_sub(1, std::memory_order_relaxed);
    awaiting_.erase(it);
  }
  // Whether a newcomer finds the receiver at one of its limits on sessions (--max-sessions, or
  // the sessions that have not said HELLO): one must make room for it, or it is refused.
  bool sessions_at_limit() const {
    return ctx_.stats.sessions_active.load(std::memory_order_relaxed) >= ctx_.max_sessions ||
           ctx_.sessions_awaiting_hello.load(std::memory_order_relaxed) >=
               ctx_.max_sessions_awaiting_hello;
  }
  ControlSession* oldest_awaiting() { return awaiting_.empty() ? nullptr : awaiting_.front(); }
  void tick_all();
  // Called by an object once all its ops have drained; destroys it.
  void release(WorkerObject* obj);
  // Every object finishes up; after kShutdownGraceMs whatever is left is closed, and 0.5 s
  // later the loop is stopped whatever remains (the thread then drains it: close_everything).
  void begin_shutdown();
  void force_close_all();
  std::size_t object_count() const { return objects_.size(); }
  // What the worker holds now (for tests and diagnostics).
  std::vector<WorkerObject*> objects() const;

  // After the loop stopped with objects still open: close them all, cancelling their ops. The
  // caller runs the loop until drained(), for a bounded time.
  void close_everything();
  bool drained() const { return objects_.empty(); }
  // Objects whose ops never completed: released without being destroyed (the kernel might
  // still write into them), so nothing in flight can touch freed memory. Returns how many.
  std::size_t abandon_undrained();

 private:
  using LoadCounter = std::atomic<std::size_t> ReceiverContext::WorkerLoad::*;
  // This worker's entry in ReceiverContext::load, if there is one.
  void count(LoadCounter which, int delta) {
    if (index_ >= ctx_.load.size()) return;
    if (delta > 0)
      (ctx_.load[index_].*which).fetch_add(1, std::memory_order_relaxed);
    else
      (ctx_.load[index_].*which).fetch_sub(1, std::memory_order_relaxed);
  }
  bool spreading() const;
  // At the limit of data connections in all: this worker's oldest connection that has proven
  // nothing, else a proven one that has received nothing for kStaleClaimMs or more (the
  // quietest, or among the few quietest one that owes its sender no acks); null if none.
  DataStream* quietest_data_connection() const;
  // The worker whose `which` is the highest (`most`) or lowest; this one on a tie with it.
  unsigned pick(LoadCounter which, bool most) const;

  ReceiverContext& ctx_;
  Loop& loop_;
  const unsigned index_;
  // Before objects_: the connections in it leave this list as they are destroyed.
  UnprovenList unproven_;
  ProvenList proven_;
  AwaitingList awaiting_;
  std::unordered_map<WorkerObject*, std::unique_ptr<WorkerObject>> objects_;
  bool shutting_down_ = false;
  std::uint64_t refused_logged_ = 0;  // data connections refused, as of the last warning
  std::uint64_t evicted_logged_ = 0;
  std::uint64_t displaced_logged_ = 0;
  unsigned peer_warnings_ = 0;                 // logged since the last tick
  std::uint64_t peer_warnings_dropped_ = 0;    // not logged since the last tick
  std::uint64_t reads_declined_logged_ = 0;    // skip=xxh3 checks not read again, likewise
  std::uint64_t sessions_evicted_logged_ = 0;  // unproven ones closed for newer ones, likewise
  std::vector<std::uint8_t> tls_plain_;        // sized on first use
  bool tls_plain_taken_ = false;
};

}  // namespace ackxfer
