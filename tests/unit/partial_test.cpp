// Resumable partial files: names, the journal format and its parser, reopening a partial
// (fs/partial.h, Destination::open_partial), and the digests of bytes on disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>

#include "fs/destination.h"
#include "fs/file_digest.h"
#include "fs/partial.h"
#include "fs/relative_path.h"

namespace fs = std::filesystem;

namespace ackxfer {
namespace {

Digest128 d(char c) {
  return digest_of(&c, 1);
}

TEST(Journal, NamesAreStableHiddenAndPerFile) {
  std::string a = partial_base_name("model.ckpt");
  EXPECT_EQ(a, partial_base_name("model.ckpt"));
  EXPECT_NE(a, partial_base_name("model.ckpt2"));
  EXPECT_EQ(a.size(), 9u + 16u);
  EXPECT_TRUE(a.starts_with(".ackxfer-"));
  EXPECT_TRUE(is_reserved_name(a + ".part"));
  EXPECT_TRUE(is_reserved_name(a + ".journal"));
  EXPECT_FALSE(is_reserved_name("model.ckpt"));
  EXPECT_FALSE(is_reserved_name(".ackxfer-notes"));
  EXPECT_EQ(journal_header_name(journal_header("dir x", 1, Mtime{1, 0}, 65536)), "dir x");
  EXPECT_FALSE(journal_header_name("something else\n"));
}

TEST(Journal, ParsesVerifiedChunksAndForgets) {
  std::string h = journal_header("f", 100 << 20, Mtime{5, 6}, 8 << 20);
  std::string text = h + journal_line({0, d('a')}) + journal_line({3, d('b')}) +
                     journal_line({1, d('c')}) + journal_forget_line(3) +
                     journal_line({0, d('z')});  // written again: the later line wins
  auto e = parse_journal(text, h, 13);
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<JournalEntry>{{0, d('z')}, {1, d('c')}}));
}

TEST(Journal, AnotherFileOrVersionIsNotResumed) {
  std::string h = journal_header("f", 100, Mtime{5, 6}, 65536);
  std::string text = h + journal_line({0, d('a')});
  EXPECT_FALSE(parse_journal(text, journal_header("g", 100, Mtime{5, 6}, 65536), 1));
  EXPECT_FALSE(parse_journal(text, journal_header("f", 101, Mtime{5, 6}, 65536), 1));
  EXPECT_FALSE(parse_journal(text, journal_header("f", 100, Mtime{5, 7}, 65536), 1));
  EXPECT_FALSE(parse_journal(text, journal_header("f", 100, Mtime{5, 6}, 131072), 1));
  EXPECT_FALSE(parse_journal("", h, 1));
}

TEST(Journal, DamageOnlyEverOffersFewerChunks) {
  std::string h = journal_header("f", 10 << 20, Mtime{1, 0}, 1 << 20);
  std::string good = journal_line({2, d('a')});
  std::string torn = journal_line({4, d('b')});
  torn.pop_back();  // a crash in the middle of the last write
  std::string text = h + good + "7 nothex\n" + "99 " + d('c').hex() + "\n" + "garbage\n" + "5 " +
                     d('c').hex().substr(0, 31) + "\n" + "x 99\n" + torn;
  auto e = parse_journal(text, h, 10);
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, (std::vector<JournalEntry>{{2, d('a')}}));
}

// What a remembered read-back stands for: every entry, its place, and the ranges they cover.
TEST(Journal, TheClaimsDigestChangesWithAnythingAReadBackChecks) {
  const std::vector<JournalEntry> two{{0, d('a')}, {1, d('b')}};
  const Digest128 base = claims_digest(two, 3 << 20, 1 << 20);
  EXPECT_EQ(base, claims_digest(two, 3 << 20, 1 << 20));
  EXPECT_NE(base, claims_digest({{0, d('a')}}, 3 << 20, 1 << 20));
  EXPECT_NE(base, claims_digest({{0, d('a')}, {2, d('b')}}, 3 << 20, 1 << 20));
  EXPECT_NE(base, claims_digest({{0, d('a')}, {1, d('c')}}, 3 << 20, 1 << 20));
  EXPECT_NE(base, claims_digest(two, (3 << 20) - 1, 1 << 20));  // the last chunk's length
  EXPECT_NE(base, claims_digest(two, 3 << 20, 2 << 20));
}

TEST(Journal, EntriesBecomeRanges) {
  std::vector<JournalEntry> e = {{0, {}}, {1, {}}, {2, {}}, {5, {}}, {7, {}}, {8, {}}};
  EXPECT_EQ(to_ranges(e), (std::vector<ChunkRange>{{0, 2}, {5, 5}, {7, 8}}));
  EXPECT_TRUE(to_ranges({}).empty());
}

class PartialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ackxfer-partial-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    root_ = tmpl;
    dest_ = std::make_unique<Destination>(root_);
    dir_ = std::make_shared<const UniqueFd>(::open(root_.c_str(), O_PATH | O_DIRECTORY));
  }
  void TearDown() override { fs::remove_all(root_); }

  Destination::Partial open(std::uint64_t size = kSize, Mtime m = Mtime{100, 0}) {
    auto p = dest_->open_partial(dir_, "big", size, m, kChunk, kChunk);
    EXPECT_TRUE(std::holds_alternative<Destination::Partial>(p));
    return std::move(std::get<Destination::Partial>(p));
  }
  static void fill(int fd, std::uint32_t index, char c) {
    std::string bytes(kChunk, c);
    ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(index * kChunk)),
              static_cast<ssize_t>(kChunk));
  }
  std::vector<std::string> names() {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator(root_))
      out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  static constexpr std::uint64_t kChunk = 65536;
  static constexpr std::uint64_t kSize = 4 * kChunk;
  fs::path root_;
  std::unique_ptr<Destination> dest_;
  std::shared_ptr<const UniqueFd> dir_;
};

TEST_F(PartialTest, KeptChunksAreOfferedToTheNextAttemptThenCleanedOnPublish) {
  std::string base = partial_base_name("big");
  {
    auto p = open();
    EXPECT_TRUE(p.resumable);
    EXPECT_TRUE(p.have.empty());
    fill(p.temp.fd(), 0, 'a');
    fill(p.temp.fd(), 2, 'c');
    auto da = chunk_digest_of(p.temp.fd(), 0, kChunk);
    auto dc = chunk_digest_of(p.temp.fd(), 2 * kChunk, kChunk);
    ASSERT_TRUE(da && dc);
    ASSERT_EQ(p.temp.append_journal(journal_line({0, *da}) + journal_line({2, *dc})), 0);
    p.temp.keep();
  }
  EXPECT_EQ(names(), (std::vector<std::string>{base + ".journal", base + ".part"}));
  auto p = open();
  ASSERT_TRUE(p.resumable);
  ASSERT_EQ(p.have.size(), 2u);
  EXPECT_EQ(p.have[0].index, 0u);
  EXPECT_EQ(p.have[1].index, 2u);
  fill(p.temp.fd(), 1, 'b');
  fill(p.temp.fd(), 3, 'd');
  ASSERT_TRUE(std::holds_alternative<std::monostate>(p.temp.publish(0644, Mtime{100, 0})));
  EXPECT_EQ(names(), std::vector<std::string>{"big"});
}

TEST_F(PartialTest, APartialInUseIsNotSharedAndAChangedSourceStartsOver) {
  auto first = open();
  ASSERT_EQ(first.temp.append_journal(journal_line({0, d('a')})), 0);
  fill(first.temp.fd(), 0, 'a');
  // Locked by `first`: a second attempt gets an ordinary temp file of its own.
  auto second = open();
  EXPECT_FALSE(second.resumable);
  EXPECT_TRUE(second.have.empty());
  EXPECT_NE(second.temp.temp_name(), first.temp.temp_name());
  second.temp.discard();
  first.temp.keep();
  first.temp.unlock();
  // Same name, new mtime: the journal does not match; the partial is reused from scratch.
  auto third = open(kSize, Mtime{200, 0});
  EXPECT_TRUE(third.resumable);
  EXPECT_TRUE(third.have.empty());
  struct stat st {};
  ASSERT_EQ(fstat(third.temp.fd(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kChunk));  // truncated, then the first chunk reserved
  third.temp.discard();
  EXPECT_TRUE(names().empty());
}

TEST_F(PartialTest, JournaledChunksBeyondATruncatedPartialAreNotOffered) {
  {
    auto p = open();
    fill(p.temp.fd(), 0, 'a');
    fill(p.temp.fd(), 3, 'd');
    ASSERT_EQ(p.temp.append_journal(journal_line({0, d('a')}) + journal_line({3, d('d')})), 0);
    ASSERT_EQ(ftruncate(p.temp.fd(), static_cast<off_t>(2 * kChunk)), 0);
    p.temp.keep();
  }
  auto p = open();
  ASSERT_EQ(p.have.size(), 1u);
  EXPECT_EQ(p.have[0].index, 0u);
}

TEST_F(PartialTest, ASymlinkAtThePartialNameIsNeitherFollowedNorRemoved) {
  fs::path outside = root_.string() + "-outside";
  std::ofstream(outside) << "precious";
  fs::create_symlink(outside, root_ / (partial_base_name("big") + ".part"));
  auto p = open();
  EXPECT_FALSE(p.resumable);
  fill(p.temp.fd(), 0, 'a');
  p.temp.discard();
  std::ifstream in(outside);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "precious");
  EXPECT_TRUE(fs::is_symlink(root_ / (partial_base_name("big") + ".part")));
  fs::remove(outside);
}

// Another user's file at the partial's name (a shared directory): it used to be truncated,
// filled and published as the verified file, owned by that user, who could rewrite it at will.
TEST_F(PartialTest, AnotherUsersFileAtThePartialNameIsLeftAlone) {
  const fs::path part = root_ / (partial_base_name("big") + ".part");
  std::ofstream(part) << "theirs";
  ASSERT_EQ(chown(part.c_str(), 65534, 65534), 0) << "tests run as root";
  ASSERT_EQ(chmod(part.c_str(), 0666), 0);
  auto p = open();
  EXPECT_FALSE(p.resumable);
  fill(p.temp.fd(), 0, 'a');
  p.temp.discard();
  std::ifstream in(part);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "theirs");
}

// A FIFO at the journal's name used to block the receiver's worker thread in open().
TEST_F(PartialTest, AFifoAtTheJournalNameDoesNotBlock) {
  const fs::path journal = root_ / (partial_base_name("big") + ".journal");
  ASSERT_EQ(mkfifo(journal.c_str(), 0666), 0);
  auto done = std::async(std::launch::async, [this] { return open().resumable; });
  if (done.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    // Let the blocked open go (a writer unblocks a reader, a reader a writer) before failing.
    int r = ::open(journal.c_str(), O_RDWR | O_NONBLOCK);
    done.wait();
    if (r >= 0) ::close(r);
    FAIL() << "open_partial blocked on a FIFO";
  }
  EXPECT_FALSE(done.get());
  EXPECT_TRUE(fs::is_fifo(fs::symlink_status(journal)));
}

// Resuming a kept partial when the file system cannot hold the rest: the file is refused for
// want of space, and its verified chunks stay for a later attempt (they used to be removed).
TEST_F(PartialTest, AKeptPartialSurvivesARefusalForWantOfSpace) {
  struct statvfs sv {};
  ASSERT_EQ(statvfs(root_.c_str(), &sv), 0);
  const std::uint64_t huge = std::uint64_t{sv.f_bavail} * sv.f_frsize + (std::uint64_t{1} << 30);
  {
    auto p = dest_->open_partial(dir_, "big", huge, Mtime{100, 0}, kChunk, 0);
    ASSERT_TRUE(std::holds_alternative<Destination::Partial>(p));
    auto& part = std::get<Destination::Partial>(p);
    fill(part.temp.fd(), 0, 'a');
    auto da = chunk_digest_of(part.temp.fd(), 0, kChunk);
    ASSERT_TRUE(da);
    ASSERT_EQ(part.temp.append_journal(journal_line({0, *da})), 0);
    part.temp.keep();
  }
  const auto kept = names();
  ASSERT_EQ(kept.size(), 2u);
  auto refused = dest_->open_partial(dir_, "big", huge, Mtime{100, 0}, kChunk, kChunk);
  ASSERT_TRUE(std::holds_alternative<FsError>(refused));
  EXPECT_EQ(std::get<FsError>(refused).err, ENOSPC);
  EXPECT_EQ(names(), kept);
  auto again = dest_->open_partial(dir_, "big", huge, Mtime{100, 0}, kChunk, 0);
  ASSERT_TRUE(std::holds_alternative<Destination::Partial>(again));
  EXPECT_EQ(std::get<Destination::Partial>(again).have.size(), 1u);
}

void age(const fs::path& root, int seconds) {
  timespec past[2] = {{time(nullptr) - seconds, 0}, {time(nullptr) - seconds, 0}};
  for (auto& e : fs::directory_iterator(root))
    utimensat(AT_FDCWD, e.path().c_str(), past, AT_SYMLINK_NOFOLLOW);
}

TEST_F(PartialTest, SweepRemovesOnlyStaleUnlockedPartialsItCanProveAreOurs) {
  auto in_use = open();  // locked, and fresh
  {
    auto p = dest_->open_partial(dir_, "other", kSize, Mtime{1, 0}, kChunk, kChunk);
    auto& kept = std::get<Destination::Partial>(p);
    kept.temp.keep();  // an abandoned partial of ours: a journal with our header proves it
  }
  std::ofstream(root_ / "keep.txt") << "user data";
  std::atomic<bool> stop{false};
  // Everything is 10 s old and the limit is 5 s: only the lock protects the partial in use.
  age(root_, 10);
  auto r = sweep_stale_partials(dir_->get(), 5, stop);
  EXPECT_EQ(r.removed, 2u);  // `other`'s partial and journal
  EXPECT_FALSE(fs::exists(root_ / (partial_base_name("other") + ".part")));
  EXPECT_FALSE(fs::exists(root_ / (partial_base_name("other") + ".journal")));
  EXPECT_TRUE(fs::exists(root_ / (partial_base_name("big") + ".part")));
  EXPECT_TRUE(fs::exists(root_ / "keep.txt"));
  in_use.temp.discard();
}

// The sweep used to delete any file named .ackxfer-*.part or .journal, a user's own included.
TEST_F(PartialTest, Sweep_LeavesFilesNamedLikeOursAloneWhenNothingProvesThem) {
  const std::string base = ".ackxfer-00000000000000aa";
  std::ofstream(root_ / (base + ".part")) << "a user's own file";
  std::ofstream(root_ / ".ackxfer-notes.journal") << "notes";
  // A journal that is not ours, and one that names a file of another partial name.
  std::ofstream(root_ / (base + ".journal")) << "my diary\n";
  const std::string other = partial_base_name("elsewhere");
  std::ofstream(root_ / (".ackxfer-00000000000000bb.journal"))
      << journal_header("elsewhere", 1, Mtime{1, 0}, 65536);
  std::ofstream(root_ / ".ackxfer-00000000000000bb.part") << "x";
  ASSERT_NE(other, ".ackxfer-00000000000000bb");
  std::atomic<bool> stop{false};
  age(root_, 1000);
  auto r = sweep_stale_partials(dir_->get(), 5, stop);
  EXPECT_EQ(r.removed, 0u);
  EXPECT_EQ(r.left_unproven, 5u);
  EXPECT_EQ(names().size(), 5u);
}

// A journal proves a partial ours by a header anyone can write (a hash of the name), so the
// sweep also asks what open_partial asks before resuming one: a plain file of the receiver's
// user with no other name. It used to remove another user's files of that shape wherever the
// receiver could (a sticky directory, or a receiver running as root), and a name of a hard link.
TEST_F(PartialTest, Sweep_LeavesAnotherUsersFilesAndHardLinksAlone) {
  auto keep = [&](const std::string& name) {
    auto p = dest_->open_partial(dir_, name, kSize, Mtime{1, 0}, kChunk, kChunk);
    std::get<Destination::Partial>(p).temp.keep();
    return root_ / partial_base_name(name);
  };
  const fs::path linked = keep("linked");
  ASSERT_EQ(::link((linked.string() + ".part").c_str(), (root_ / "a-users-link").c_str()), 0);
  const fs::path mine = keep("mine");
  std::size_t others = 0;
  if (geteuid() == 0) {  // only root can give a file to another user
    const fs::path theirs = keep("theirs");
    for (const char* suffix : {".part", ".journal"})
      ASSERT_EQ(::chown((theirs.string() + suffix).c_str(), 65534, 65534), 0);
    others = 1;
  }
  std::atomic<bool> stop{false};
  age(root_, 1000);
  auto r = sweep_stale_partials(dir_->get(), 5, stop);
  EXPECT_EQ(r.removed, 2u) << "mine, and nothing else";
  EXPECT_EQ(r.left_unproven, 2u + 2 * others);  // files, each journal and partial
  EXPECT_FALSE(fs::exists(mine.string() + ".part"));
  EXPECT_TRUE(fs::exists(linked.string() + ".part"));
  EXPECT_TRUE(fs::exists(linked.string() + ".journal"));
  EXPECT_EQ(names().size(), 3u + 2 * others);  // linked's two, the link, theirs' two
}

// A partial's name is predictable. Whatever is put at it, publish never puts that under the
// final name: what gets there is the file this receiver wrote (and verified), or nothing.
TEST_F(PartialTest, Publish_NeverPublishesAFileThatReplacedItsTempName) {
  auto p = open();
  fill(p.temp.fd(), 0, 'a');
  const fs::path temp = root_ / p.temp.temp_name();
  fs::path evil = root_ / "evil";
  std::ofstream(evil) << "EVIL";
  ASSERT_EQ(rename(evil.c_str(), temp.c_str()), 0);
  auto r = p.temp.publish(0644, Mtime{100, 0});
  ASSERT_TRUE(std::holds_alternative<FsError>(r));
  EXPECT_EQ(std::get<FsError>(r).err, ESTALE);
  EXPECT_FALSE(fs::exists(root_ / "big"));
  // The file someone put at the temp name is theirs: left where it is.
  EXPECT_TRUE(fs::exists(temp));
}

TEST_F(PartialTest, Publish_PutsTheVerifiedFileInPlaceEvenIfAnotherNameLinksToIt) {
  auto p = open();
  for (std::uint32_t i = 0; i < 4; ++i)
    fill(p.temp.fd(), i, static_cast<char>('a' + i));
  auto r = p.temp.publish(0640, Mtime{100, 0});
  ASSERT_TRUE(std::holds_alternative<std::monostate>(r)) << std::get<FsError>(r).what;
  EXPECT_EQ(names(), std::vector<std::string>{"big"});
  struct stat st {};
  ASSERT_EQ(stat((root_ / "big").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kSize));
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(st.st_nlink, 1u);
}

TEST(FileDigest, MatchesTheChunkedDefinitionAndReportsShortFiles) {
  char tmpl[] = "/tmp/ackxfer-fd-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  std::string bytes(200000, 'q');
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<char>(i * 7);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  const std::uint64_t chunk = 65536;
  std::vector<Digest128> chunks;
  for (std::uint64_t off = 0; off < bytes.size(); off += chunk)
    chunks.push_back(
        digest_of(bytes.data() + off, std::min<std::uint64_t>(chunk, bytes.size() - off)));
  auto whole = file_digest_of(fd, bytes.size(), chunk);
  ASSERT_TRUE(whole);
  EXPECT_EQ(*whole, file_digest_from_chunks(chunks));
  EXPECT_FALSE(file_digest_of(fd, bytes.size() + 1, chunk));
  EXPECT_EQ(errno, ENODATA);
  close(fd);
  unlink(tmpl);
}

}  // namespace
}  // namespace ackxfer
