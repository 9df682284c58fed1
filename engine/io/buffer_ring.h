// A ring of provided buffers (io_uring "buffer select"): the kernel picks a buffer only when
// data arrives, so a connection that is idle holds no receive buffer at all. Shared by every
// connection of one loop; memory is the ring's, whatever the number of connections.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/event_loop.h"

namespace ackxfer {

class BufferRing {
 public:
  // `count` must be a power of two. Throws Failure if the kernel refuses the ring.
  BufferRing(EventLoop& loop, std::uint16_t group, unsigned count, std::size_t buffer_bytes);
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  std::uint16_t group() const { return group_; }
  std::size_t buffer_bytes() const { return buffer_bytes_; }
  std::uint8_t* buffer(std::uint16_t id) { return storage_ + std::size_t{id} * buffer_bytes_; }
  // Hands buffer `id` back to the kernel once its bytes have been used.
  void give_back(std::uint16_t id);

  // How many times a multishot receive ran out of buffers (-ENOBUFS) and was re-armed.
  std::uint64_t exhausted = 0;

 private:
  EventLoop& loop_;
  std::uint16_t group_;
  unsigned count_;
  std::size_t buffer_bytes_;
  io_uring_buf_ring* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  std::uint8_t* storage_ = nullptr;
};

}  // namespace ackxfer
