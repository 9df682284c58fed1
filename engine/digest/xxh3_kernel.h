// Declarations of the per-instruction-set XXH3 kernels (see xxh3_kernel.inc).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ackxfer {

inline constexpr std::size_t kXxh3StateBytes = 576;

#define ACKXFER_DECLARE_XXH3_KERNEL(ns)                                  \
  namespace ns {                                                         \
  void reset(void* state);                                               \
  void update(void* state, const void* data, std::size_t len);           \
  void finish(const void* state, std::uint8_t out[16]);                  \
  void oneshot(const void* data, std::size_t len, std::uint8_t out[16]); \
  }

ACKXFER_DECLARE_XXH3_KERNEL(xxh3_sse2)
ACKXFER_DECLARE_XXH3_KERNEL(xxh3_avx2)
ACKXFER_DECLARE_XXH3_KERNEL(xxh3_avx512)

#undef ACKXFER_DECLARE_XXH3_KERNEL

}  // namespace ackxfer
