// StreamingDigest and helpers; picks the fastest XXH3 kernel the CPU supports.
#include "digest/digest.h"

#include "digest/xxh3_kernel.h"
#include "hex.h"

namespace ackxfer {
namespace {

struct Kernel {
  const char* name;
  void (*reset)(void*);
  void (*update)(void*, const void*, std::size_t);
  void (*finish)(const void*, std::uint8_t*);
  void (*oneshot)(const void*, std::size_t, std::uint8_t*);
};

Kernel pick_kernel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return {"avx512", xxh3_avx512::reset, xxh3_avx512::update, xxh3_avx512::finish,
            xxh3_avx512::oneshot};
  if (__builtin_cpu_supports("avx2"))
    return {"avx2", xxh3_avx2::reset, xxh3_avx2::update, xxh3_avx2::finish, xxh3_avx2::oneshot};
  return {"sse2", xxh3_sse2::reset, xxh3_sse2::update, xxh3_sse2::finish, xxh3_sse2::oneshot};
}

const Kernel& kernel() {
  static const Kernel k = pick_kernel();
  return k;
}

}  // namespace

static_assert(sizeof(StreamingDigest) >= kXxh3StateBytes);

std::string Digest128::hex() const {
  return to_hex(bytes.data(), bytes.size());
}

std::optional<Digest128> Digest128::from_hex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  Digest128 d;
  for (std::size_t i = 0; i < 16; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    d.bytes[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return d;
}

StreamingDigest::StreamingDigest() {
  reset();
}
void StreamingDigest::reset() {
  kernel().reset(state_);
}
void StreamingDigest::update(const void* data, std::size_t len) {
  kernel().update(state_, data, len);
}
Digest128 StreamingDigest::finish() const {
  Digest128 d;
  kernel().finish(state_, d.bytes.data());
  return d;
}

Digest128 digest_of(const void* data, std::size_t len) {
  Digest128 d;
  kernel().oneshot(data, len, d.bytes.data());
  return d;
}

const char* digest_kernel_name() {
  return kernel().name;
}

Digest128 file_digest_from_chunks(std::span<const Digest128> chunks) {
  FileDigestBuilder b;
  for (const auto& c : chunks)
    b.add_chunk(c);
  return b.finish();
}

}  // namespace ackxfer
