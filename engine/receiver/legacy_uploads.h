// `recv --legacy`: files from the classic SEND/READY clients this design grew from (a client
// sends `SEND <name>`, reads `READY`, connects to the data port, sends the bytes and closes).
// Their data connections carry nothing that names the file, so the only clue is the address
// they come from. To match them without guessing, at most one legacy file per client address
// is answered READY at a time: further SENDs from that address wait for their READY until the
// previous file's data connection has arrived (or its deadline passed). The next data
// connection from that address that does not open with a valid ackxfer frame header is then
// that file's. docs/PROTOCOL.md, "Legacy clients", says what this costs and where it stops.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/destination.h"
#include "protocol/limits.h"
#include "receiver/incoming_file.h"

namespace ackxfer {

// One legacy file between its SEND and its data connection's end.
struct LegacyUpload {
  std::string path;           // as stored under --dir, for logs
  std::string peer;           // the control connection's address:port, for logs
  TempFile temp;              // open before READY, like every file
  OpenFileSlot slot;          // its place in the receiver's count of open temp files
  std::int64_t ready_ms = 0;  // when it became its address's turn (READY), for the deadline
};

class LegacyUploads {
 public:
  // Called when a queued upload's turn comes, on whichever thread freed the slot: it must only
  // post to the owner's loop (which then sends READY).
  using OnTurn = std::function<void()>;

  // kReady: `u` is its address's READY-ed upload now. kQueued: it waits behind the current one
  // and `on_turn` runs when it becomes so. kRefused: its address already has
  // kMaxLegacyQueuedPerAddress waiting, or the receiver kMaxLegacyUploads in all.
  enum class Offer { kReady, kQueued, kRefused };
  // `now_ms` is the caller's loop clock (Loop::now_ms()), the clock expire() is given too.
  Offer offer(const std::string& address, std::shared_ptr<LegacyUpload> u, OnTurn on_turn,
              std::int64_t now_ms);
  // Whether `address` has an upload waiting for its data connection.
  bool expecting(const std::string& address) const;
  // A data connection from `address` that is not ackxfer framing: the upload it carries (the
  // next one's turn begins), or null if none is waiting.
  std::shared_ptr<LegacyUpload> claim(const std::string& address, std::int64_t now_ms);
  // The control connection of `u` closed before its READY went out: forget it.
  void withdraw(const std::string& address, const LegacyUpload* u, std::int64_t now_ms);
  // READY-ed uploads whose data connection did not come within kLegacyConnectTimeoutMs: removed
  // (the next ones' turns begin) and returned, for the log. Their temp files go with them.
  std::vector<std::shared_ptr<LegacyUpload>> expire(std::int64_t now_ms);

 private:
  struct Queued {
    std::shared_ptr<LegacyUpload> upload;
    OnTurn on_turn;
  };
  struct PerAddress {
    std::shared_ptr<LegacyUpload> ready;
    std::deque<Queued> queued;
  };
  // `ready` was cleared: the next queued upload (if any) gets the turn; its callback is
  // returned to be called without the lock.
  OnTurn promote_locked(const std::string& address, std::int64_t now_ms);

  mutable std::mutex mu_;
  std::unordered_map<std::string, PerAddress> by_address_;
  std::size_t total_ = 0;  // READY-ed and queued uploads, all addresses
};

}  // namespace ackxfer
