// Reading files back to hash them, one 1 MiB buffer at a time.
#include "fs/file_digest.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

namespace ackxfer {
namespace {
constexpr std::size_t kReadBytes = 1 << 20;
}

std::optional<Digest128> chunk_digest_of(int fd, std::uint64_t offset, std::uint64_t length) {
  auto buf = std::make_unique_for_overwrite<std::uint8_t[]>(kReadBytes);
  StreamingDigest d;
  std::uint64_t done = 0;
  while (done < length) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kReadBytes, length - done));
    ssize_t n = ::pread(fd, buf.get(), want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) {
      errno = ENODATA;
      return std::nullopt;
    }
    d.update(buf.get(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
  }
  return d.finish();
}

std::optional<Digest128> file_digest_of(int fd, std::uint64_t size, std::uint64_t chunk,
                                        const std::atomic<bool>* cancel) {
  posix_fadvise(fd, 0, static_cast<off_t>(size), POSIX_FADV_SEQUENTIAL);
  FileDigestBuilder file;
  for (std::uint64_t off = 0; off < size; off += chunk) {
    if (cancel && cancel->load(std::memory_order_relaxed)) {
      errno = ECANCELED;
      return std::nullopt;
    }
    auto c = chunk_digest_of(fd, off, std::min(chunk, size - off));
    if (!c) return std::nullopt;
    file.add_chunk(*c);
  }
  return file.finish();
}

}  // namespace ackxfer
