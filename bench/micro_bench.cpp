// Micro-benchmarks of the engine's CPU hot spots: digests, the control codec, frame headers
// and the chunk scheduler. Run: build/bench/micro_bench [--benchmark_filter=Digest]
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <vector>

#include "digest/digest.h"
#include "protocol/control_codec.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "sender/chunk_scheduler.h"

namespace ackxfer {
namespace {

std::vector<std::uint8_t> bytes(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return v;
}

// Our runtime-dispatched kernel, streaming as the data path uses it.
void BM_DigestStreaming(benchmark::State& state) {
  auto data = bytes(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    StreamingDigest d;
    d.update(data.data(), data.size());
    benchmark::DoNotOptimize(d.finish());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetLabel(digest_kernel_name());
}
BENCHMARK(BM_DigestStreaming)->Arg(4096)->Arg(256 << 10)->Arg(8 << 20);

// Debian's shared libxxhash (SSE2 build), for comparison.
void BM_DigestLibxxhash(benchmark::State& state) {
  auto data = bytes(static_cast<std::size_t>(state.range(0)));
  XXH3_state_t* s = XXH3_createState();
  for (auto _ : state) {
    XXH3_128bits_reset(s);
    XXH3_128bits_update(s, data.data(), data.size());
    benchmark::DoNotOptimize(XXH3_128bits_digest(s));
  }
  XXH3_freeState(s);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_DigestLibxxhash)->Arg(4096)->Arg(256 << 10)->Arg(8 << 20);

void BM_ParseSendLine(benchmark::State& state) {
  SendRequest r{123456,
                "datasets/train/shard-00042/image_0001234.jpg",
                4096,
                0644,
                Mtime{1732531200, 123456789},
                kDefaultChunkBytes,
                SkipPolicy::kSizeMtime,
                {}};
  std::string line = format_line(r);
  line.pop_back();
  for (auto _ : state)
    benchmark::DoNotOptimize(parse_client_line(line));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ParseSendLine);

void BM_FormatSendLine(benchmark::State& state) {
  SendRequest r{123456,
                "datasets/train/shard-00042/image_0001234.jpg",
                4096,
                0644,
                Mtime{1732531200, 123456789},
                kDefaultChunkBytes,
                SkipPolicy::kSizeMtime,
                {}};
  for (auto _ : state)
    benchmark::DoNotOptimize(format_line(r));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_FormatSendLine);

void BM_FrameHeaderRoundTrip(benchmark::State& state) {
  FrameHeader h{Token::random(), 1 << 20, 1 << 23};
  std::uint8_t raw[kFrameHeaderBytes];
  FrameHeader out;
  for (auto _ : state) {
    encode_frame_header(h, raw);
    benchmark::DoNotOptimize(
        decode_frame_header(std::span<const std::uint8_t, kFrameHeaderBytes>(raw), out));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_FrameHeaderRoundTrip);

// Plan, hand out and acknowledge the chunks of a file: the per-chunk scheduling cost.
void BM_ChunkSchedulerCycle(benchmark::State& state) {
  ChunkScheduler s({[](std::shared_ptr<OutgoingFile>) {},
                    [](std::shared_ptr<OutgoingFile>, std::string, bool) {}});
  const std::uint32_t chunks = static_cast<std::uint32_t>(state.range(0));
  Digest128 d{};
  for (auto _ : state) {
    auto f = std::make_shared<OutgoingFile>();
    f->plan = ChunkPlan(chunks * kMinChunkBytes, kMinChunkBytes);
    s.add_file(f);
    while (auto j = s.next(nullptr))
      s.acked(*j, d);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_ChunkSchedulerCycle)->Arg(1)->Arg(256);

}  // namespace
}  // namespace ackxfer

BENCHMARK_MAIN();
