// Our XXH3-128 kernels against Debian's libxxhash, and the file digest definition.
#include <gtest/gtest.h>

#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>

#include <random>
#include <vector>

#include "digest/digest.h"
#include "fs/file_digest.h"

namespace ackxfer {
namespace {

Digest128 reference(const void* p, std::size_t n) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
  Digest128 d;
  std::memcpy(d.bytes.data(), c.digest, 16);
  return d;
}

std::vector<std::uint8_t> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v)
    b = static_cast<std::uint8_t>(rng());
  return v;
}

TEST(Digest, MatchesLibxxhashForManySizes) {
  auto data = random_bytes(1 << 20, 1);
  for (std::size_t n : {0, 1, 3, 16, 17, 128, 129, 240, 241, 1000, 4096, 65537, 1 << 20}) {
    EXPECT_EQ(digest_of(data.data(), n), reference(data.data(), n)) << n;
  }
  std::printf("XXH3 kernel in use: %s\n", digest_kernel_name());
}

TEST(Digest, StreamingEqualsOneShotForAnySplit) {
  auto data = random_bytes(300000, 2);
  Digest128 want = reference(data.data(), data.size());
  for (std::size_t step : {1, 7, 64, 1000, 65536, 299999}) {
    StreamingDigest s;
    for (std::size_t off = 0; off < data.size(); off += step)
      s.update(data.data() + off, std::min(step, data.size() - off));
    EXPECT_EQ(s.finish(), want) << step;
  }
}

TEST(Digest, ResetStartsOver) {
  StreamingDigest s;
  s.update("abc", 3);
  s.reset();
  s.update("xyz", 3);
  EXPECT_EQ(s.finish(), reference("xyz", 3));
}

TEST(Digest, FileDigestIsXxh3OverChunkDigests) {
  std::vector<Digest128> chunks = {digest_of("a", 1), digest_of("b", 1)};
  std::uint8_t concat[32];
  std::memcpy(concat, chunks[0].bytes.data(), 16);
  std::memcpy(concat + 16, chunks[1].bytes.data(), 16);
  EXPECT_EQ(file_digest_from_chunks(chunks), reference(concat, 32));
  EXPECT_EQ(file_digest_from_chunks({}), reference(nullptr, 0));
  // Order matters: swapping chunks changes the file digest.
  std::swap(chunks[0], chunks[1]);
  EXPECT_NE(file_digest_from_chunks(chunks), reference(concat, 32));
}

TEST(Digest, HexRoundTrips) {
  Digest128 d = digest_of("hello", 5);
  EXPECT_EQ(d.hex().size(), 32u);
  EXPECT_EQ(Digest128::from_hex(d.hex()), d);
  EXPECT_FALSE(Digest128::from_hex("abc"));
  EXPECT_FALSE(Digest128::from_hex(std::string(31, '0') + "g"));
}

// A session may start 64 checks of files the sender asks about (`skip=xxh3`), each a hasher
// stepped a slice at a time on the work queue, every one given its first slice before any its
// second. Each kept its own 1 MiB read buffer from its first step to its last: 64 MiB a session
// that declared them, 1 GiB for 16 sessions. Hashers waiting between steps hold none.
TEST(Digest, HashersBetweenStepsHoldNoReadBuffer) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  auto bytes = random_bytes(3 << 20, 7);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fflush(f);
  const int fd = fileno(f);
  std::size_t before = RangeHasher::read_buffers();
  std::vector<RangeHasher> hashers;
  for (int i = 0; i < 64; ++i)
    hashers.emplace_back(fd, 0, bytes.size());
  for (auto& h : hashers)
    ASSERT_TRUE(h.step(1 << 20));
  EXPECT_LE(RangeHasher::read_buffers(), before + 1) << "one for this thread at most";
  for (auto& h : hashers) {
    while (!h.done())
      ASSERT_TRUE(h.step(1 << 20));
    EXPECT_EQ(h.finish(), reference(bytes.data(), bytes.size())) << "the same digest as before";
  }
  std::fclose(f);
}

}  // namespace
}  // namespace ackxfer
