// Reading files back to hash them, through one 1 MiB buffer per thread.
#include "fs/file_digest.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ackxfer {
namespace {
constexpr std::size_t kReadBytes = 1 << 20;
constexpr std::uint64_t kBlockingStep = 64 << 20;

std::atomic<std::size_t> g_read_buffers{0};

// This thread's read buffer, made at its first use and freed when the thread ends.
std::uint8_t* read_buffer() {
  struct Buffer {
    std::unique_ptr<std::uint8_t[]> bytes;
    ~Buffer() {
      if (bytes) g_read_buffers.fetch_sub(1, std::memory_order_relaxed);
    }
  };
  thread_local Buffer buf;
  if (!buf.bytes) {
    buf.bytes = std::make_unique_for_overwrite<std::uint8_t[]>(kReadBytes);
    g_read_buffers.fetch_add(1, std::memory_order_relaxed);
  }
  return buf.bytes.get();
}
}  // namespace

std::size_t RangeHasher::read_buffers() {
  return g_read_buffers.load(std::memory_order_relaxed);
}

RangeHasher::RangeHasher(int fd, std::uint64_t offset, std::uint64_t length)
    : fd_(fd), offset_(offset), length_(length) {}

bool RangeHasher::step(std::uint64_t budget) {
  if (done_ == length_) return true;
  std::uint8_t* buf = read_buffer();
  std::uint64_t stop = std::min(length_, done_ + std::max<std::uint64_t>(budget, 1));
  while (done_ < stop) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kReadBytes, stop - done_));
    ssize_t n = ::pread(fd_, buf, want, static_cast<off_t>(offset_ + done_));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = ENODATA;
      return false;
    }
    digest_.update(buf, static_cast<std::size_t>(n));
    done_ += static_cast<std::uint64_t>(n);
  }
  return true;
}

FileHasher::FileHasher(int fd, const ChunkPlan& plan) : fd_(fd), plan_(plan) {
  posix_fadvise(fd, 0, static_cast<off_t>(plan.size()), POSIX_FADV_SEQUENTIAL);
}

bool FileHasher::step(std::uint64_t budget) {
  while (budget > 0 && !done()) {
    if (!chunk_) {
      chunk_.emplace(fd_, plan_.offset(next_), plan_.length(next_));
      ++next_;
    }
    std::uint64_t before = chunk_->hashed();
    if (!chunk_->step(budget)) return false;
    std::uint64_t n = chunk_->hashed() - before;
    hashed_ += n;
    budget -= std::min(budget, n);
    if (chunk_->done()) {
      file_.add_chunk(chunk_->finish());
      chunk_.reset();
    }
  }
  return true;
}

std::optional<Digest128> chunk_digest_of(int fd, std::uint64_t offset, std::uint64_t length) {
  RangeHasher h(fd, offset, length);
  if (!h.step(length)) return std::nullopt;
  return h.finish();
}

std::optional<Digest128> file_digest_of(int fd, std::uint64_t size, std::uint64_t chunk,
                                        const std::atomic<bool>* cancel) {
  FileHasher h(fd, ChunkPlan(size, chunk));
  while (!h.done()) {
    if (cancel && cancel->load(std::memory_order_relaxed)) {
      errno = ECANCELED;
      return std::nullopt;
    }
    if (!h.step(kBlockingStep)) return std::nullopt;
  }
  return h.digest();
}

}  // namespace ackxfer
