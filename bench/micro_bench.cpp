// Micro-benchmarks of the engine's CPU hot spots: digests, the control codec, frame headers,
// the chunk scheduler and the TLS record layer. Run: build/bench/micro_bench
// [--benchmark_filter=Digest]
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <xxhash.h>

#include <cstring>
#include <vector>

#include "digest/digest.h"
#include "protocol/control_codec.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "sender/chunk_scheduler.h"
#include "tls/tls_channel.h"

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

// The TLS record layer both ways in one thread: encrypt `range(0)` bytes of plaintext per
// write on one channel, carry the records, decrypt them on the other; every copy the
// TlsChannel design makes is in it (plaintext into the record, record into the output buffer,
// the "network" copy into the peer's input, into OpenSSL's record buffer, plaintext out).
// Against BM_AeadInPlaceRoundTrip (the same AEAD work with no copies) it shows what the
// layer's buffers cost. Per byte, both sides' CPU: a transfer does this once per byte moved.
// Moves what `from` has sent into `to`'s input (the network, in one thread).
void carry(TlsChannel& from, TlsChannel& to) {
  for (;;) {
    auto out = from.output();
    auto space = to.input_space();
    std::size_t n = std::min(out.size(), space.size());
    if (n == 0) return;
    std::memcpy(space.data(), out.data(), n);
    to.received(n);
    from.sent(n);
  }
}

bool handshake(TlsChannel& c, TlsChannel& s) {
  for (int i = 0; i < 10 && !(c.handshake_done() && s.handshake_done()); ++i) {
    c.handshake();
    s.handshake();
    carry(c, s);
    carry(s, c);
  }
  return c.handshake_done() && s.handshake_done();
}

void BM_TlsRoundTrip(benchmark::State& state) {
  auto key = std::make_shared<const SharedSecret>(std::string("benchmark benchmark benchmark"));
  TlsChannel c(TlsContext::with_secret(TlsRole::kClient, key));
  TlsChannel s(TlsContext::with_secret(TlsRole::kServer, key));
  if (!handshake(c, s)) {
    state.SkipWithError("handshake failed");
    return;
  }
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  auto data = bytes(n);
  std::vector<std::uint8_t> out(n);
  for (auto _ : state) {
    std::size_t off = 0, got = 0;
    while (got < n) {
      std::size_t taken = 0;
      if (off < n) c.write({data.data() + off, n - off}, taken);
      off += taken;
      carry(c, s);
      std::size_t r = 0;
      s.read({out.data() + got, n - got}, r);
      got += r;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetLabel(c.cipher());
}
BENCHMARK(BM_TlsRoundTrip)->Arg(16 << 10)->Arg(1 << 20);

// What a connection's set-up costs, both sides in one thread: the pre-shared key's handshake
// with its X25519 exchange, as every control and data connection does with --secret-file
// (channels of a control connection's size).
void BM_TlsHandshake(benchmark::State& state) {
  auto key = std::make_shared<const SharedSecret>(std::string("benchmark benchmark benchmark"));
  auto client = TlsContext::with_secret(TlsRole::kClient, key);
  auto server = TlsContext::with_secret(TlsRole::kServer, key);
  for (auto _ : state) {
    TlsChannel c(client, 18 * 1024), s(server, 18 * 1024);
    if (!handshake(c, s)) {
      state.SkipWithError("handshake failed");
      return;
    }
  }
}
BENCHMARK(BM_TlsHandshake);

// The copy-free alternative (PERFORMANCE.md, "Encryption"): AES-128-GCM records of 16 KiB
// sealed and opened in place in one 1 MiB buffer, as a data path holding the bytes it hashes
// would do with keys exported from a TLS session. No record layer around it: the floor for
// what an encrypted byte costs both ways here.
void BM_AeadInPlaceRoundTrip(benchmark::State& state) {
  constexpr std::size_t kRecord = 16 << 10, kTag = 16;
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const std::size_t records = (n + kRecord - 1) / kRecord;
  std::vector<std::uint8_t> buf(n + records * kTag);  // records and their tags, back to back
  auto data = bytes(n);
  unsigned char key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  EVP_CIPHER_CTX* seal = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* open = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(seal, EVP_aes_128_gcm(), nullptr, key, nullptr);
  EVP_DecryptInit_ex(open, EVP_aes_128_gcm(), nullptr, key, nullptr);
  std::uint64_t seq = 0;
  bool ok = true;
  std::memcpy(buf.data(), data.data(), n);  // opened in place each round: plaintext again
  for (auto _ : state) {
    std::uint64_t first = seq;
    for (std::size_t r = 0, at = 0; r < records; ++r) {
      std::size_t len = std::min(kRecord, n - r * kRecord);
      unsigned char iv[12] = {};
      std::memcpy(iv + 4, &seq, 8);
      ++seq;
      int out = 0;
      EVP_EncryptInit_ex(seal, nullptr, nullptr, nullptr, iv);
      EVP_EncryptUpdate(seal, buf.data() + at, &out, buf.data() + at, static_cast<int>(len));
      EVP_EncryptFinal_ex(seal, buf.data() + at + len, &out);
      EVP_CIPHER_CTX_ctrl(seal, EVP_CTRL_GCM_GET_TAG, kTag, buf.data() + at + len);
      at += len + kTag;
    }
    for (std::size_t r = 0, at = 0; r < records; ++r) {
      std::size_t len = std::min(kRecord, n - r * kRecord);
      unsigned char iv[12] = {};
      std::uint64_t s = first + r;
      std::memcpy(iv + 4, &s, 8);
      int out = 0;
      EVP_DecryptInit_ex(open, nullptr, nullptr, nullptr, iv);
      EVP_DecryptUpdate(open, buf.data() + at, &out, buf.data() + at, static_cast<int>(len));
      EVP_CIPHER_CTX_ctrl(open, EVP_CTRL_GCM_SET_TAG, kTag, buf.data() + at + len);
      ok = ok && EVP_DecryptFinal_ex(open, buf.data() + at + len, &out) == 1;
      at += len + kTag;
    }
    benchmark::DoNotOptimize(buf.data());
  }
  EVP_CIPHER_CTX_free(seal);
  EVP_CIPHER_CTX_free(open);
  if (!ok) state.SkipWithError("a record did not open");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_AeadInPlaceRoundTrip)->Arg(1 << 20);

}  // namespace
}  // namespace ackxfer

BENCHMARK_MAIN();
