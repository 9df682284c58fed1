// What every receiver worker shares: the destination, the token registry, counters, options.
#pragma once

#include <atomic>

#include "fs/destination.h"
#include "io/blocking_pool.h"
#include "log.h"
#include "receiver/file_registry.h"
#include "receiver/legacy_uploads.h"
#include "receiver/receiver.h"

namespace ackxfer {

struct ReceiverContext {
  ReceiverContext(const ReceiverOptions& o) : destination(o.dir), log(o.log) {}

  Destination destination;
  FileRegistry registry;
  ReceiverStats stats;
  Logger log;
  std::uint16_t data_port = 0;  // announced in HELLO
  RecvPath recv_path = RecvPath::kBuffers;
  bool discard = false;
  std::chrono::milliseconds idle_timeout{300'000};
  unsigned max_sessions = 16384;
  std::int64_t keep_partials_s = 86400;        // 0: resumable partials are off
  std::shared_ptr<const SharedSecret> secret;  // set: sessions must authenticate
  bool legacy_enabled = false;                 // recv --legacy
  LegacyUploads legacy;
  std::atomic<bool> stopping{false};
  std::atomic<bool> pipe_refusal_logged{false};  // said once per receiver, not per connection
  // Hashes existing files for `skip=xxh3` off the loops (see ControlSession).
  BlockingPool pool{1};
};

}  // namespace ackxfer
