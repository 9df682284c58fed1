// BufferRing: registered by hand (liburing 2.3 has no io_uring_setup_buf_ring).
#include "io/buffer_ring.h"

#include <sys/mman.h>

#include <cstdlib>

#include "error.h"

namespace ackxfer {

BufferRing::BufferRing(EventLoop& loop, std::uint16_t group, unsigned count,
                       std::size_t buffer_bytes)
    : loop_(loop), group_(group), count_(count), buffer_bytes_(buffer_bytes) {
  if (count == 0 || (count & (count - 1)) != 0 || count > 32768)
    throw Failure("buffer ring size must be a power of two up to 32768");
  ring_bytes_ = sizeof(io_uring_buf) * count;
  void* r = mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) throw SystemError("mmap buffer ring", errno);
  ring_ = static_cast<io_uring_buf_ring*>(r);
  // The buffers themselves: pages are touched (and become resident) only as data lands in
  // them, so a ring that is never filled costs address space, not memory.
  void* s = mmap(nullptr, buffer_bytes * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (s == MAP_FAILED) {
    munmap(ring_, ring_bytes_);
    throw SystemError("mmap receive buffers", errno);
  }
  storage_ = static_cast<std::uint8_t*>(s);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(ring_);
  reg.ring_entries = count;
  reg.bgid = group;
  if (int r2 = loop.register_buffer_ring(&reg)) {
    munmap(storage_, buffer_bytes * count);
    munmap(ring_, ring_bytes_);
    throw Failure("io_uring cannot register a provided-buffer ring (" + errno_text(-r2) +
                  "); ackxfer-fast needs Linux 6.0 or newer");
  }
  io_uring_buf_ring_init(ring_);
  int mask = io_uring_buf_ring_mask(count);
  for (unsigned i = 0; i < count; ++i)
    io_uring_buf_ring_add(ring_, buffer(static_cast<std::uint16_t>(i)),
                          static_cast<unsigned>(buffer_bytes), static_cast<std::uint16_t>(i), mask,
                          static_cast<int>(i));
  io_uring_buf_ring_advance(ring_, static_cast<int>(count));
}

BufferRing::~BufferRing() {
  loop_.unregister_buffer_ring(group_);
  munmap(storage_, buffer_bytes_ * count_);
  munmap(ring_, ring_bytes_);
}

void BufferRing::give_back(std::uint16_t id) {
  io_uring_buf_ring_add(ring_, buffer(id), static_cast<unsigned>(buffer_bytes_), id,
                        io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(ring_, 1);
}

}  // namespace ackxfer
