// DataStream, recv --legacy: a classic client's data connection carries one file's raw bytes
// to EOF (receiver/legacy_uploads.h; docs/PROTOCOL.md, "Legacy clients").
#include <cstring>
#include <ctime>

#include "display.h"
#include "error.h"
#include "io/socket.h"
#include "receiver/data_stream.h"
#include "receiver/durable_publisher.h"

namespace ackxfer {

bool DataStream::legacy_ended(int res) {
  if (res == 0 && legacy_undecided_ && staged_len_ > 0)
    try_legacy(staged_.data(), staged_len_);  // a legacy file of fewer than 4 bytes
  if (!legacy_) return false;
  finish_legacy(res == 0, res == 0 ? "" : errno_text(-res));
  begin_close(fd_.get());
  return true;
}

bool DataStream::try_legacy(const std::uint8_t* first, std::size_t n) {
  legacy_undecided_ = false;
  // Every ackxfer data connection opens with the frame magic; a legacy file that happens to
  // start with it cannot be told apart (docs/PROTOCOL.md, "Legacy clients").
  std::uint8_t magic[4];
  for (int i = 0; i < 4; ++i)
    magic[i] = static_cast<std::uint8_t>(kFrameMagic >> (8 * i));
  if (std::memcmp(first, magic, n) == 0) return false;
  ReceiverContext& ctx = worker_.ctx();
  legacy_ = ctx.legacy.claim(peer_endpoint(fd_.get()).host_string(), loop_.now_ms());
  if (!legacy_) return false;  // no legacy file waits for this address: a bad frame, then
  framed_ = true;              // not a silent connection
  proven();                    // it carries a file a control session opened
  digest_.reset();
  ctx.log.debug("data connection from " + peer_ + " carries legacy file " +
                quote_name(legacy_->path));
  legacy_write(first, n);
  return true;
}

void DataStream::legacy_write(const std::uint8_t* p, std::size_t n) {
  if (!legacy_ || n == 0) return;
  std::size_t done = 0;
  while (done < n) {
    ssize_t w =
        ::pwrite(legacy_->temp.fd(), p + done, n - done, static_cast<off_t>(legacy_bytes_ + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      finish_legacy(false, "write: " + errno_text(w < 0 ? errno : EIO));
      begin_close(fd_.get());
      return;
    }
    done += static_cast<std::size_t>(w);
  }
  digest_.update(p, n);
  legacy_bytes_ += n;
  worker_.ctx().stats.payload_bytes_received.fetch_add(n, std::memory_order_relaxed);
}

void DataStream::finish_legacy(bool clean_eof, const std::string& why) {
  std::shared_ptr<LegacyUpload> u = std::move(legacy_);
  if (!u) return;
  ReceiverContext& ctx = worker_.ctx();
  if (!clean_eof) {
    ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
    worker_.peer_warning([&] {
      return "legacy file " + quote_name_cut(u->path) + " from " + peer_ +
             " not published: " + why + " after " + std::to_string(legacy_bytes_) + " bytes";
    });
    return;  // the temp file goes with `u`
  }
  std::string name = quote_name(u->path);
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const Mtime mtime{now.tv_sec, static_cast<std::uint32_t>(now.tv_nsec)};
  const bool durable = ctx.publisher != nullptr;
  // No verdict waits for it (a classic client is told nothing), so this runs wherever the
  // publish does: on this loop, or on the publisher's thread with --fsync.
  auto report = [&ctx, name, bytes = legacy_bytes_, digest = digest_.finish(), peer = peer_,
                 durable](const DurablePublisher::Result& r) {
    if (auto* e = std::get_if<FsError>(&r)) {
      ctx.stats.files_failed.fetch_add(1, std::memory_order_relaxed);
      ctx.log.warn("legacy file " + name + " from " + peer + " not published: " + e->what);
      return;
    }
    ctx.stats.files_published.fetch_add(1, std::memory_order_relaxed);
    ctx.stats.bytes_published.fetch_add(bytes, std::memory_order_relaxed);
    ctx.log.info("published legacy file " + name + " (" + std::to_string(bytes) + " bytes" +
                 (durable ? ", flushed" : "") + ") from " + peer +
                 " UNVERIFIED: the classic protocol has no digest, so a connection that ended "
                 "early cannot be told from a complete file (xxh3 of what arrived: " +
                 digest.hex() + ")");
  };
  if (!durable) {
    report(u->temp.publish(0644, mtime));
    return;
  }
  // recv --fsync: its data before its name, then its directory, as for every file.
  DurablePublisher::Job job;
  job.dir = u->temp.directory();
  job.done = report;
  job.publish_self = [u, mtime] { return u->temp.publish(0644, mtime, /*durable=*/true); };
  ctx.publisher->submit(std::move(job));
}

}  // namespace ackxfer
