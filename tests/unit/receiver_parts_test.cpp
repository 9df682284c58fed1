// The receiver's pure parts: the chunk plan, feature lists, directory metadata, chunk claims of
// one file, remembered digests, and names made printable.
#include <gtest/gtest.h>

#include "display.h"
#include "protocol/chunk_plan.h"
#include "protocol/features.h"
#include "protocol/limits.h"
#include "receiver/digest_cache.h"
#include "receiver/directory_metadata.h"
#include "receiver/incoming_file.h"

namespace ackxfer {
namespace {

TEST(ChunkPlan, CutsAFileIntoWholeChunks) {
  ChunkPlan p(3 * 65536 + 1, 65536);
  EXPECT_EQ(p.count(), 4u);
  EXPECT_EQ(p.offset(3), 3u * 65536);
  EXPECT_EQ(p.length(3), 1u);
  EXPECT_EQ(p.length(0), 65536u);
  EXPECT_EQ(p.chunk_at(65536, 65536), 1u);
  EXPECT_EQ(p.chunk_at(3 * 65536, 1), 3u);
  EXPECT_FALSE(p.chunk_at(1, 65536));      // not aligned
  EXPECT_FALSE(p.chunk_at(0, 65535));      // not whole
  EXPECT_FALSE(p.chunk_at(3 * 65536, 2));  // past the end
  EXPECT_FALSE(p.chunk_at(4 * 65536, 0));  // no such chunk
  EXPECT_EQ(ChunkPlan(0, 65536).count(), 0u);
  EXPECT_TRUE(p.within(2, 3 * 65536));
  EXPECT_FALSE(p.within(3, 3 * 65536));
}

TEST(ChunkPlan, ChunkSizeGrowsForHugeFilesAndLimitsHold) {
  EXPECT_EQ(ChunkPlan::choose_chunk_bytes(1 << 20, kDefaultChunkBytes), kDefaultChunkBytes);
  std::uint64_t huge = 1ull << 47;  // 128 TiB
  std::uint64_t c = ChunkPlan::choose_chunk_bytes(huge, kDefaultChunkBytes);
  EXPECT_TRUE(ChunkPlan::within_limits(huge, c));
  EXPECT_EQ(ChunkPlan::choose_chunk_bytes(10, 1), kMinChunkBytes);
  // Counts that would overflow 32 bits are refused, not wrapped.
  EXPECT_FALSE(ChunkPlan::within_limits(kMaxFileBytes, kMinChunkBytes));
  EXPECT_FALSE(ChunkPlan::within_limits(100, kMinChunkBytes - 1));
}

TEST(Features, NamesRoundTripAndUnknownOnesAreIgnored) {
  EXPECT_EQ(Features::all().to_string(), "link,progress,credit");
  auto f = Features::parse("credit,some-future-feature,link");
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->has(Feature::kLink));
  EXPECT_TRUE(f->has(Feature::kCredit));
  EXPECT_FALSE(f->has(Feature::kProgress));
  EXPECT_EQ(f->to_string(), "link,credit");
  EXPECT_TRUE(Features::parse("") && Features::parse("")->empty());
  for (const char* bad : {",", "link,", "LINK", "a b", "x=y"})
    EXPECT_FALSE(Features::parse(bad)) << bad;
  std::string many;
  for (std::size_t i = 0; i <= kMaxFeatures; ++i)
    many += (i ? ",f" : "f") + std::to_string(i);
  EXPECT_FALSE(Features::parse(many));
}

TEST(DirectoryMetadata, KeepsEachPathOnceWithinABudgetAndAppliesDeepestFirst) {
  DirectoryMetadata d(1000);
  EXPECT_EQ(d.add("a", 0755, Mtime{1, 0}), DirectoryMetadata::Added::kNew);
  for (int i = 0; i < 10000; ++i)
    EXPECT_EQ(d.add("a", 0700, Mtime{2, 0}), DirectoryMetadata::Added::kUpdated);
  EXPECT_EQ(d.add("a/b/c", 0755, Mtime{3, 0}), DirectoryMetadata::Added::kNew);
  EXPECT_EQ(d.add("a/b", 0755, Mtime{4, 0}), DirectoryMetadata::Added::kNew);
  EXPECT_EQ(d.size(), 3u);
  EXPECT_EQ(d.add(std::string(1000, 'x'), 0755, Mtime{}), DirectoryMetadata::Added::kOverLimit);
  EXPECT_EQ(d.dropped(), 1u);
  auto order = d.take_deepest_first();
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0].path, "a/b/c");
  EXPECT_EQ(order[1].path, "a/b");
  EXPECT_EQ(order[2].path, "a");
  EXPECT_EQ(order[2].mode, 0700u);  // the last one sent wins
  EXPECT_EQ(d.size(), 0u);
}

// An IncomingFile in discard mode (no temp file): claims and their state, without a disk.
class IncomingFileTest : public ::testing::Test {
 protected:
  std::shared_ptr<IncomingFile> file(std::uint64_t size, std::uint64_t chunk) {
    SendRequest r{1, "f", size, 0644, Mtime{}, chunk, SkipPolicy::kNever, {}};
    return std::make_shared<IncomingFile>(r, Token::random(), TempFile(),
                                          std::make_shared<SessionTotals>());
  }
};

TEST_F(IncomingFileTest, RemembersOnlyChunksThatArrived) {
  auto f = file(kMaxChunksPerFile * kMinChunkBytes, kMinChunkBytes);
  EXPECT_EQ(f->chunk_entries(), 0u);
  auto c = f->claim(5 * kMinChunkBytes, kMinChunkBytes, 1, 0);
  EXPECT_EQ(c.status, AckStatus::kOk);
  EXPECT_EQ(f->chunk_entries(), 1u);
  f->finish_chunk(c, false, {});  // failed: missing again, forgotten
  EXPECT_EQ(f->chunk_entries(), 0u);
}

TEST_F(IncomingFileTest, AClaimPassesOnlyFromAConnectionThatWentQuiet) {
  auto f = file(2 * kMinChunkBytes, kMinChunkBytes);
  auto a = f->claim(0, kMinChunkBytes, 1, 1000);
  ASSERT_EQ(a.status, AckStatus::kOk);
  EXPECT_EQ(f->claim(0, kMinChunkBytes, 2, 1000 + kStaleClaimMs - 1).status, AckStatus::kBusy);
  f->touch(a, 1000 + kStaleClaimMs - 1);  // still receiving: fresh again
  EXPECT_EQ(f->claim(0, kMinChunkBytes, 2, 1000 + kStaleClaimMs + 5).status, AckStatus::kBusy);
  // Mid-write a claim never passes, however long the write takes.
  ASSERT_TRUE(f->begin_write(a));
  EXPECT_EQ(f->claim(0, kMinChunkBytes, 2, 1000 + 10 * kStaleClaimMs).status, AckStatus::kBusy);
  f->end_write(a, 1000);
  auto b = f->claim(0, kMinChunkBytes, 2, 1000 + 10 * kStaleClaimMs);
  ASSERT_EQ(b.status, AckStatus::kOk);
  EXPECT_TRUE(b.taken_over);
  // The old holder can no longer write, finish or verify it.
  EXPECT_FALSE(f->begin_write(a));
  f->finish_chunk(a, true, Digest128{});
  auto c = f->claim(kMinChunkBytes, kMinChunkBytes, 2, 1000 + 10 * kStaleClaimMs);
  f->finish_chunk(c, true, digest_of("c", 1));
  f->finish_chunk(b, true, digest_of("b", 1));
  EXPECT_EQ(f->verify(file_digest_from_chunks(std::vector{digest_of("b", 1), digest_of("c", 1)})),
            IncomingFile::Verdict::kVerified);
}

TEST_F(IncomingFileTest, BadRangesAndClosedFilesAreRefused) {
  auto f = file(3 * kMinChunkBytes, kMinChunkBytes);
  EXPECT_EQ(f->claim(1, kMinChunkBytes, 1, 0).status, AckStatus::kBadRange);
  EXPECT_EQ(f->claim(0, 5, 1, 0).status, AckStatus::kBadRange);
  f->abandon();
  EXPECT_EQ(f->claim(0, kMinChunkBytes, 1, 0).status, AckStatus::kUnknownToken);
}

TEST(Printable, KeepsNamesReadableAndNeverLetsAControlCharacterThrough) {
  EXPECT_EQ(printable("plain name.txt"), "plain name.txt");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 stays
  EXPECT_EQ(printable("a\nb"), "a\\x0ab");
  EXPECT_EQ(printable("back\\slash"), "back\\\\slash");
  EXPECT_EQ(printable("\x1b[2J"), "\\x1b[2J");
  EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");                                 // not UTF-8
  EXPECT_EQ(printable("rtl\xe2\x80\xaeoverride"), "rtl\\xe2\\x80\\xaeoverride");  // U+202E
  EXPECT_EQ(printable("\xc2\x85"), "\\xc2\\x85");                                 // C1 NEL
  EXPECT_EQ(printable("\xc0\x80"), "\\xc0\\x80");                                 // overlong NUL
  std::string all;
  for (int c = 0; c < 256; ++c)
    all.push_back(static_cast<char>(c));
  for (unsigned char c : printable(all))
    EXPECT_TRUE(c >= 0x20 && c != 0x7f) << int(c);
  EXPECT_EQ(control_free("a\nb\\x"), "a\\x0ab\\x");
}

// A digest is remembered only for a file that did not change while it was hashed and whose
// ctime was over a second old when hashing began; the least recently used entry makes room.
TEST(DigestCache, RemembersOnlyWhatCannotHaveChangedUnseen) {
  DigestCache cache(2);
  struct stat st {};
  st.st_dev = 1;
  st.st_ino = 10;
  st.st_size = 100;
  st.st_mtim = {1000, 5};
  st.st_ctim = {1000, 7};
  const timespec started{2000, 0};
  Digest128 d = digest_of("x", 1);
  auto key = DigestCache::key_of(st, 65536);
  struct stat changed = st;
  changed.st_ctim.tv_nsec = 8;  // written to while it was hashed
  EXPECT_FALSE(cache.remember(key, changed, started, d));
  EXPECT_FALSE(cache.remember(key, st, timespec{1001, 0}, d));  // ctime too recent to trust
  EXPECT_FALSE(cache.find(key));
  EXPECT_TRUE(cache.remember(key, st, started, d));
  EXPECT_EQ(cache.find(key), d);
  EXPECT_FALSE(cache.find(DigestCache::key_of(st, 131072))) << "another chunk size";
  EXPECT_FALSE(cache.find(DigestCache::key_of(changed, 65536)));
  // Two more files: the least recently used (not the first, which was just looked up) goes.
  struct stat b = st, c = st;
  b.st_ino = 11;
  c.st_ino = 12;
  EXPECT_TRUE(cache.remember(DigestCache::key_of(b, 65536), b, started, d));
  EXPECT_TRUE(cache.find(key));
  EXPECT_TRUE(cache.remember(DigestCache::key_of(c, 65536), c, started, d));
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_TRUE(cache.find(key));
  EXPECT_FALSE(cache.find(DigestCache::key_of(b, 65536)));
}

// Each version of a file (inode, size, mtime) of 1 MiB or more may be read for checks twice;
// smaller files always; a new mtime or size is a new version; the least recently read version
// makes room for a new one.
TEST(DigestCache, ReadsEachVersionOfALargeFileAtMostTwice) {
  DigestCache cache(2);
  struct stat st {};
  st.st_dev = 1;
  st.st_ino = 10;
  st.st_size = DigestCache::kReadsCountedFromBytes;
  st.st_mtim = {1000, 5};
  st.st_ctim = {1000, 7};
  EXPECT_TRUE(cache.may_read(st));
  st.st_ctim.tv_sec = 2000;  // a chmod: the same version
  EXPECT_TRUE(cache.may_read(st));
  EXPECT_FALSE(cache.may_read(st));
  EXPECT_FALSE(cache.may_read(st));
  struct stat small = st;
  small.st_size = DigestCache::kReadsCountedFromBytes - 1;
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(cache.may_read(small));
  struct stat newer = st;
  newer.st_mtim.tv_nsec = 6;
  EXPECT_TRUE(cache.may_read(newer));
  EXPECT_TRUE(cache.may_read(newer));
  EXPECT_FALSE(cache.may_read(newer));
  EXPECT_FALSE(cache.may_read(st)) << "still counted: two versions fit";
  struct stat other = st;
  other.st_ino = 11;
  EXPECT_TRUE(cache.may_read(other));  // pushes out `newer`, the least recently read
  EXPECT_FALSE(cache.may_read(st));
  EXPECT_TRUE(cache.may_read(newer)) << "forgotten, counted afresh";
}

}  // namespace
}  // namespace ackxfer
