// The receiver's file-system layer: never outside --dir, temp files cleaned, atomic publish.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>

#include "fs/destination.h"

namespace fs = std::filesystem;

namespace ackxfer {
namespace {

class DestinationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ackxfer-dest-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    base_ = tmpl;
    root_ = base_ / "root";
    outside_ = base_ / "outside";
    fs::create_directories(outside_);
    dest_ = std::make_unique<Destination>(root_);
  }
  void TearDown() override { fs::remove_all(base_); }

  RelativePath rel(const std::string& p) {
    storage_.push_back(p);
    return std::get<RelativePath>(validate_relative_path(storage_.back()));
  }

  // Writes `content` to `path` through the receiver's normal path; returns the error, if any.
  std::optional<FsError> receive(const std::string& path, const std::string& content) {
    auto r = rel(path);
    auto parent = dest_->open_parent(r);
    if (auto* e = std::get_if<FsError>(&parent)) return *e;
    auto dir = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(parent)));
    auto t =
        dest_->create_temp(dir, r.components.back(), content.size(), content.size(), anonymous_);
    if (auto* e = std::get_if<FsError>(&t)) return *e;
    TempFile& tf = std::get<TempFile>(t);
    EXPECT_EQ(pwrite(tf.fd(), content.data(), content.size(), 0),
              static_cast<ssize_t>(content.size()));
    auto p = tf.publish(0640, Mtime{1000000000, 123});
    if (auto* e = std::get_if<FsError>(&p)) return *e;
    return std::nullopt;
  }

  std::string read(const fs::path& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  std::size_t entries(const fs::path& p) {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : fs::recursive_directory_iterator(p))
      ++n;
    return n;
  }

  fs::path base_, root_, outside_;
  std::unique_ptr<Destination> dest_;
  std::deque<std::string> storage_;
  bool anonymous_ = false;
};

// The same rules hold for anonymous (O_TMPFILE) temp files, used for one-chunk files.
class AnonymousDestinationTest : public DestinationTest {
 protected:
  void SetUp() override {
    DestinationTest::SetUp();
    anonymous_ = true;
    if (!dest_->anonymous_temps_supported()) GTEST_SKIP() << "no O_TMPFILE + linkat here";
  }
};

TEST_F(AnonymousDestinationTest, PublishesAndReplacesAtomically) {
  ASSERT_FALSE(receive("a/b.txt", "one"));
  EXPECT_EQ(read(root_ / "a/b.txt"), "one");
  ASSERT_FALSE(receive("a/b.txt", "two, longer"));
  EXPECT_EQ(read(root_ / "a/b.txt"), "two, longer");
  EXPECT_EQ(entries(root_), 2u);  // a, a/b.txt: no temp name left behind
  struct stat st;
  ASSERT_EQ(stat((root_ / "a/b.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
}

TEST_F(AnonymousDestinationTest, DiscardedAnonymousFileLeavesNothing) {
  auto r = rel("x/y");
  auto parent = dest_->open_parent(r);
  auto dir = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(parent)));
  {
    auto t = dest_->create_temp(dir, "y", 100, 100, true);
    ASSERT_EQ(t.index(), 0u);
    EXPECT_EQ(entries(root_ / "x"), 0u);  // nameless while being written
  }
  EXPECT_EQ(entries(root_ / "x"), 0u);
}

TEST_F(AnonymousDestinationTest, NeverFollowsASymlinkOutOfTheRoot) {
  fs::create_directory_symlink(outside_, root_ / "escape");
  EXPECT_TRUE(receive("escape/pwned", "x"));
  EXPECT_EQ(entries(outside_), 0u);
  fs::create_symlink(outside_ / "target", root_ / "link");
  std::ofstream(outside_ / "target") << "precious";
  ASSERT_FALSE(receive("link", "new"));
  EXPECT_EQ(read(outside_ / "target"), "precious");
  EXPECT_FALSE(fs::is_symlink(root_ / "link"));
}

TEST_F(DestinationTest, PublishesWithModeAndMtimeAndNoTempLeft) {
  ASSERT_FALSE(receive("a/b/c.txt", "hello"));
  EXPECT_EQ(read(root_ / "a/b/c.txt"), "hello");
  struct stat st;
  ASSERT_EQ(stat((root_ / "a/b/c.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123);
  EXPECT_EQ(entries(root_), 3u);  // a, a/b, a/b/c.txt
}

TEST_F(DestinationTest, ReplacesAnExistingFileAtomically) {
  ASSERT_FALSE(receive("f", "old"));
  ASSERT_FALSE(receive("f", "new content"));
  EXPECT_EQ(read(root_ / "f"), "new content");
  EXPECT_EQ(entries(root_), 1u);
}

TEST_F(DestinationTest, DiscardedTempFileLeavesNothing) {
  auto r = rel("x/y");
  auto parent = dest_->open_parent(r);
  auto dir = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(parent)));
  {
    auto t = dest_->create_temp(dir, "y", 100, 100, false);
    ASSERT_EQ(t.index(), 0u);
    EXPECT_EQ(entries(root_ / "x"), 1u);  // the temp file
  }
  EXPECT_EQ(entries(root_ / "x"), 0u);
}

TEST_F(DestinationTest, NeverFollowsASymlinkOutOfTheRoot) {
  fs::create_directories(root_);
  fs::create_directory_symlink(outside_, root_ / "escape");
  fs::create_directory_symlink("../outside", root_ / "relative-escape");
  auto e1 = receive("escape/pwned", "x");
  auto e2 = receive("relative-escape/pwned", "x");
  auto e3 = receive("escape/deeper/pwned", "x");
  EXPECT_TRUE(e1);
  EXPECT_TRUE(e2);
  EXPECT_TRUE(e3);
  EXPECT_EQ(entries(outside_), 0u);
}

TEST_F(DestinationTest, ASymlinkInsideTheRootStaysInside) {
  fs::create_directories(root_ / "real");
  fs::create_directory_symlink("real", root_ / "alias");
  ASSERT_FALSE(receive("alias/f", "ok"));
  EXPECT_EQ(read(root_ / "real/f"), "ok");
}

// A link to another directory of the tree, through "..", leads nowhere outside: a file below
// it arrived, but creating a directory below it (MKDIR, or a file's missing parents) resolved
// each component beneath the one before and refused it as "leading outside --dir".
// A peer's MKDIR of a deep path (up to 4,095 bytes: 2,048 one-letter components) used to
// resolve every prefix from the root, one per component, each through all before it: some 2
// million components for the deepest path (4 million to create it), about 0.1 s of a worker's
// loop per MKDIR, 64 such lines to a turn. Now one lookup of the whole path if it exists, and
// halving to the deepest directory that does if not. (1,000 deep here, so that the test's own
// absolute paths stay within PATH_MAX.)
TEST_F(DestinationTest, ADeepPathCostsLookupsInProportionToItsDepthNotItsSquare) {
  constexpr std::size_t kDepth = 1000;
  std::string deep = "a";
  for (std::size_t i = 1; i < kDepth; ++i)
    deep += "/a";
  auto resolved = [] { return Destination::components_resolved_on_this_thread(); };
  std::uint64_t before = resolved();
  bool created = false;
  auto r = dest_->make_directory(rel(deep), &created);
  ASSERT_FALSE(std::holds_alternative<FsError>(r)) << std::get<FsError>(r).what;
  EXPECT_TRUE(created);
  EXPECT_TRUE(fs::is_directory(root_ / deep));
  EXPECT_LE(resolved() - before, 12 * kDepth) << "the whole path once, then 10 halvings";
  // It exists: one lookup.
  before = resolved();
  ASSERT_FALSE(std::holds_alternative<FsError>(dest_->make_directory(rel(deep), &created)));
  EXPECT_FALSE(created);
  EXPECT_EQ(resolved() - before, kDepth);
  // Half of it exists: what is missing is made below the deepest directory that does.
  std::string half = deep.substr(0, deep.size() / 2) + "/b";
  while (half.size() < deep.size())
    half += "/b";
  before = resolved();
  ASSERT_FALSE(std::holds_alternative<FsError>(dest_->make_directory(rel(half), &created)));
  EXPECT_TRUE(created);
  EXPECT_TRUE(fs::is_directory(root_ / half));
  EXPECT_LE(resolved() - before, 12 * kDepth);
}

TEST_F(DestinationTest, ALinkUpAndAcrossTheTreeStaysInsideForNewDirectoriesToo) {
  fs::create_directories(root_ / "a");
  fs::create_directories(root_ / "b");
  fs::create_directory_symlink("../b", root_ / "a/link");
  auto made = dest_->make_directory(rel("a/link/new/deeper"));
  ASSERT_EQ(made.index(), 0u) << std::get<FsError>(made).what;
  EXPECT_TRUE(fs::is_directory(root_ / "b/new/deeper"));
  ASSERT_FALSE(receive("a/link/other/f", "ok"));
  EXPECT_EQ(read(root_ / "b/other/f"), "ok");
  // One more ".." is outside: refused, by name.
  fs::create_directory_symlink("../../..", root_ / "a/out");
  auto out = dest_->make_directory(rel("a/out/pwned"));
  ASSERT_EQ(out.index(), 1u);
  EXPECT_NE(std::get<FsError>(out).what.find("leads outside"), std::string::npos)
      << std::get<FsError>(out).what;
  EXPECT_EQ(entries(outside_), 0u);
}

TEST_F(DestinationTest, PublishingOverASymlinkReplacesTheLinkNotItsTarget) {
  fs::create_directories(root_);
  std::ofstream(outside_ / "target") << "precious";
  fs::create_symlink(outside_ / "target", root_ / "link");
  ASSERT_FALSE(receive("link", "new"));
  EXPECT_EQ(read(outside_ / "target"), "precious");
  EXPECT_FALSE(fs::is_symlink(root_ / "link"));
  EXPECT_EQ(read(root_ / "link"), "new");
}

TEST_F(DestinationTest, ParentThatIsAFileIsNotADirectory) {
  ASSERT_FALSE(receive("file", "x"));
  auto e = receive("file/child", "y");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->err, ENOTDIR);
}

TEST_F(DestinationTest, FileOverADirectoryFails) {
  ASSERT_EQ(dest_->make_directory(rel("d/e")).index(), 0u);
  auto e = receive("d", "x");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->err, EISDIR);
  EXPECT_TRUE(fs::is_directory(root_ / "d/e"));
  EXPECT_EQ(entries(root_), 2u);
}

TEST_F(DestinationTest, DirectoryMetadataIsApplied) {
  ASSERT_EQ(dest_->make_directory(rel("m/n")).index(), 0u);
  ASSERT_EQ(dest_->set_directory_metadata(rel("m/n"), 0700u, Mtime{12345, 6}).index(), 0u);
  struct stat st;
  ASSERT_EQ(stat((root_ / "m/n").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(st.st_mtim.tv_sec, 12345);
}

TEST_F(DestinationTest, SymlinkIsMadeWithItsTargetVerbatimAndItsOwnMtime) {
  auto r = rel("d/up");
  auto parent = dest_->open_parent(r);
  ASSERT_EQ(parent.index(), 0u);
  int dir = std::get<UniqueFd>(parent).get();
  // Neither target exists; neither is resolved or normalised.
  ASSERT_EQ(dest_->make_symlink(dir, "up", "../../x/./y", Mtime{1234, 56}).index(), 0u);
  ASSERT_EQ(dest_->make_symlink(dir, "abs", (outside_ / "nothing").string(), Mtime{7, 0}).index(),
            0u);
  EXPECT_EQ(fs::read_symlink(root_ / "d/up"), "../../x/./y");
  EXPECT_EQ(fs::read_symlink(root_ / "d/abs"), outside_ / "nothing");
  struct stat st;
  ASSERT_EQ(lstat((root_ / "d/up").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1234);
  EXPECT_EQ(st.st_mtim.tv_nsec, 56);
  EXPECT_EQ(entries(root_), 3u);  // d, d/up, d/abs: no temp link left
  EXPECT_EQ(entries(outside_), 0u);
}

TEST_F(DestinationTest, SymlinkReplacesAFileOrALinkButNeverWritesThroughIt) {
  std::ofstream(outside_ / "target") << "precious";
  ASSERT_FALSE(receive("f", "old file"));
  fs::create_symlink(outside_ / "target", root_ / "old-link");
  UniqueFd dir(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_EQ(dest_->make_symlink(dir.get(), "f", "new", Mtime{1, 0}).index(), 0u);
  ASSERT_EQ(dest_->make_symlink(dir.get(), "old-link", "other", Mtime{1, 0}).index(), 0u);
  EXPECT_EQ(fs::read_symlink(root_ / "f"), "new");
  EXPECT_EQ(fs::read_symlink(root_ / "old-link"), "other");
  EXPECT_EQ(read(outside_ / "target"), "precious");
  EXPECT_EQ(entries(root_), 2u);
}

TEST_F(DestinationTest, SymlinkOverADirectoryFailsAndLeavesNoTempLink) {
  ASSERT_EQ(dest_->make_directory(rel("d/e")).index(), 0u);
  UniqueFd dir(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto r = dest_->make_symlink(dir.get(), "d", "x", Mtime{1, 0});
  ASSERT_EQ(r.index(), 1u);
  EXPECT_EQ(std::get<FsError>(r).err, EISDIR);
  EXPECT_NE(std::get<FsError>(r).what.find("is a directory"), std::string::npos);
  EXPECT_TRUE(fs::is_directory(root_ / "d/e"));
  EXPECT_EQ(entries(root_), 2u);
}

TEST_F(DestinationTest, SetIdBitsAreNotApplied) {
  auto r = rel("s");
  auto parent = dest_->open_parent(r);
  auto dir = std::make_shared<const UniqueFd>(std::move(std::get<UniqueFd>(parent)));
  auto t = dest_->create_temp(dir, "s", 0, 0, anonymous_);
  ASSERT_EQ(std::get<TempFile>(t).publish(06755, Mtime{}).index(), 0u);
  struct stat st;
  ASSERT_EQ(stat((root_ / "s").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

}  // namespace
}  // namespace ackxfer
