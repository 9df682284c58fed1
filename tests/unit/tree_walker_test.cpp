// The sender's walk: wire names, pre-order, empty directories, symlinks, what is skipped and why.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "sender/tree_walker.h"

namespace fs = std::filesystem;

namespace ackxfer {
namespace {

class TreeWalkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ackxfer-walk-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    base_ = tmpl;
  }
  void TearDown() override { fs::remove_all(base_); }
  void write(const fs::path& p, const std::string& s) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << s;
  }
  std::map<std::string, SourceEntry> walk_all(std::vector<std::string> roots,
                                              std::vector<WalkProblem>* problems = nullptr) {
    TreeWalker w(std::move(roots));
    std::map<std::string, SourceEntry> out;
    std::vector<std::string> order;
    while (auto e = w.next()) {
      order.push_back(e->wire_path);
      out[e->wire_path] = *e;
    }
    // Pre-order: every entry's parent directory came before it.
    for (std::size_t i = 0; i < order.size(); ++i) {
      auto slash = order[i].rfind('/');
      if (slash == std::string::npos) continue;
      auto parent = order[i].substr(0, slash);
      EXPECT_NE(std::find(order.begin(), order.begin() + static_cast<long>(i), parent),
                order.begin() + static_cast<long>(i))
          << order[i];
    }
    if (problems) *problems = w.take_problems();
    return out;
  }
  fs::path base_;
};

TEST_F(TreeWalkerTest, FileArgumentIsItsBasenameDirectoryIsItsName) {
  write(base_ / "top/file.txt", "abc");
  write(base_ / "dir/sub/x", "1");
  fs::create_directories(base_ / "dir/empty");
  write(base_ / "dir/zero", "");
  auto got = walk_all({(base_ / "top/file.txt").string(), (base_ / "dir").string() + "/"});
  ASSERT_TRUE(got.count("file.txt"));
  EXPECT_EQ(got["file.txt"].size, 3u);
  EXPECT_EQ(got["dir"].kind, SourceEntry::Kind::kDirectory);
  EXPECT_TRUE(got.count("dir/sub"));
  EXPECT_TRUE(got.count("dir/sub/x"));
  EXPECT_EQ(got["dir/empty"].kind, SourceEntry::Kind::kDirectory);
  EXPECT_TRUE(got["file.txt"].stat_known);
  EXPECT_TRUE(got["dir/sub"].stat_known);
  if (got["dir/zero"].stat_known) {
    EXPECT_EQ(got["dir/zero"].size, 0u);
  }
  EXPECT_EQ(got.size(), 6u);
}

TEST_F(TreeWalkerTest, KeepsModeAndMtime) {
  write(base_ / "f", "x");
  chmod((base_ / "f").c_str(), 0751);
  timespec t[2] = {{0, UTIME_OMIT}, {1234567890, 987654321}};
  utimensat(AT_FDCWD, (base_ / "f").c_str(), t, 0);
  auto got = walk_all({(base_ / "f").string()});
  EXPECT_EQ(got["f"].mode, 0751u);
  EXPECT_EQ(got["f"].mtime, (Mtime{1234567890, 987654321}));
}

TEST_F(TreeWalkerTest, SkipsFifosInsideTreesWithAWarning) {
  write(base_ / "d/real", "x");
  mkfifo((base_ / "d/fifo").c_str(), 0644);
  std::vector<WalkProblem> problems;
  auto got = walk_all({(base_ / "d").string()}, &problems);
  EXPECT_TRUE(got.count("d/real"));
  EXPECT_FALSE(got.count("d/fifo"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_FALSE(problems[0].is_failure);
  EXPECT_NE(problems[0].reason.find("FIFO"), std::string::npos) << problems[0].reason;
}

TEST_F(TreeWalkerTest, SymlinksInsideTreesAreEntriesWithTheirTargetNeverFollowed) {
  write(base_ / "d/real", "x");
  fs::create_directories(base_ / "elsewhere/deep");
  write(base_ / "elsewhere/deep/not-sent", "y");
  fs::create_symlink("real", base_ / "d/rel");
  fs::create_directory_symlink(base_ / "elsewhere", base_ / "d/abs-dir");
  fs::create_symlink("../../no/such", base_ / "d/dangling");
  timespec t[2] = {{0, UTIME_OMIT}, {1234567890, 5}};
  ASSERT_EQ(utimensat(AT_FDCWD, (base_ / "d/rel").c_str(), t, AT_SYMLINK_NOFOLLOW), 0);
  std::vector<WalkProblem> problems;
  auto got = walk_all({(base_ / "d").string()}, &problems);
  EXPECT_TRUE(problems.empty());
  EXPECT_EQ(got.size(), 5u);  // d, d/real and the three links: nothing under abs-dir
  for (const char* l : {"d/rel", "d/abs-dir", "d/dangling"})
    EXPECT_EQ(got[l].kind, SourceEntry::Kind::kSymlink) << l;
  EXPECT_EQ(got["d/rel"].link_target, "real");
  EXPECT_EQ(got["d/abs-dir"].link_target, (base_ / "elsewhere").string());
  EXPECT_EQ(got["d/dangling"].link_target, "../../no/such");
  EXPECT_EQ(got["d/rel"].mtime, (Mtime{1234567890, 5}));  // the link's own, not its target's
}

TEST_F(TreeWalkerTest, ASymlinkTooLongForALinkLineIsAFailureNamingIt) {
  write(base_ / "d/ok", "x");
  // 4,095 bytes that each take 4 escaped: with its path, over what one LINK line may carry.
  std::string target(4095, '\xe9');
  ASSERT_EQ(symlink(target.c_str(), (base_ / "d/long").c_str()), 0) << strerror(errno);
  std::vector<WalkProblem> problems;
  auto got = walk_all({(base_ / "d").string()}, &problems);
  EXPECT_TRUE(got.count("d/ok"));
  EXPECT_FALSE(got.count("d/long"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(problems[0].is_failure);
  EXPECT_NE(problems[0].path.find("d/long"), std::string::npos);
  EXPECT_NE(problems[0].reason.find("path and target"), std::string::npos) << problems[0].reason;
}

TEST_F(TreeWalkerTest, ASymlinkArgumentIsFollowed) {
  write(base_ / "real/f", "x");
  fs::create_directory_symlink("real", base_ / "arg");
  auto got = walk_all({(base_ / "arg").string()});
  EXPECT_EQ(got["arg"].kind, SourceEntry::Kind::kDirectory);
  EXPECT_TRUE(got.count("arg/f"));
}

TEST_F(TreeWalkerTest, MissingArgumentIsAFailureNamingIt) {
  write(base_ / "ok", "x");
  std::vector<WalkProblem> problems;
  auto got = walk_all({(base_ / "nope").string(), (base_ / "ok").string()}, &problems);
  EXPECT_TRUE(got.count("ok"));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_TRUE(problems[0].is_failure);
  EXPECT_NE(problems[0].path.find("nope"), std::string::npos);
}

// PATH arguments are looked at when the walker is made, so the sender can name one it cannot
// send before it reaches any receiver, and not start at all when none is left.
TEST_F(TreeWalkerTest, UnusableArgumentsAreProblemsFromTheStart) {
  write(base_ / "ok", "x");
  TreeWalker some({(base_ / "nope").string(), "/", (base_ / "ok").string()});
  EXPECT_TRUE(some.has_roots());
  auto problems = some.take_problems();
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].path, (base_ / "nope").string());
  EXPECT_EQ(problems[1].path, "/");
  EXPECT_NE(problems[1].reason.find("has no name"), std::string::npos) << problems[1].reason;
  auto e = some.next();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->wire_path, "ok");
  EXPECT_FALSE(some.next());
  EXPECT_TRUE(some.take_problems().empty()) << "each named once";
  TreeWalker none({(base_ / "nope").string()});
  EXPECT_FALSE(none.has_roots());
  // Nor one that is no regular file or directory, or has a name receivers reserve.
  ASSERT_EQ(mkfifo((base_ / "fifo").c_str(), 0600), 0);
  write(base_ / ".ackxfer-0123456789abcdef.part", "x");
  TreeWalker odd({(base_ / "fifo").string(), (base_ / ".ackxfer-0123456789abcdef.part").string()});
  EXPECT_FALSE(odd.has_roots());
  problems = odd.take_problems();
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_TRUE(problems[0].is_failure);
  EXPECT_TRUE(problems[1].is_failure);
  EXPECT_NE(problems[0].reason.find("a FIFO cannot be sent"), std::string::npos)
      << problems[0].reason;
  EXPECT_NE(problems[1].reason.find("reserve"), std::string::npos) << problems[1].reason;
  // They are failures, and the words must not say "skipped" (exit 1, not a warning).
  for (const auto& p : problems)
    EXPECT_EQ(p.reason.find("skipped"), std::string::npos) << p.reason;
}

// On file systems whose readdir gives no types (DT_UNKNOWN), every entry is stat'ed. Its files
// must still be opened relative to the directory the walk holds, without following symlinks:
// they used to be opened by their whole path, through any symlink swapped in for the file or
// a parent directory since (a file outside the tree sent under the tree's name).
TEST_F(TreeWalkerTest, WithoutEntryTypesFilesAreStillOpenedRelativeToTheirDirectory) {
  write(base_ / "t" / "a", "1");
  write(base_ / "t" / "sub" / "b", "2");
  TreeWalker w({(base_ / "t").string()});
  w.ignore_entry_types();
  int files = 0;
  while (auto e = w.next()) {
    if (e->kind != SourceEntry::Kind::kFile) continue;
    ++files;
    ASSERT_TRUE(e->dir) << e->wire_path << ": would be opened by its path";
    EXPECT_EQ(e->name, fs::path(e->wire_path).filename().string());
  }
  EXPECT_EQ(files, 2);
  EXPECT_TRUE(w.take_problems().empty());
}

TEST_F(TreeWalkerTest, WireNames) {
  EXPECT_EQ(TreeWalker::wire_name_of("a/b/c"), "c");
  EXPECT_EQ(TreeWalker::wire_name_of("a/b/c///"), "c");
  EXPECT_EQ(TreeWalker::wire_name_of("c"), "c");
  EXPECT_FALSE(TreeWalker::wire_name_of("/"));
  std::string here = fs::current_path().filename().string();
  if (fs::current_path() != "/") {
    EXPECT_EQ(TreeWalker::wire_name_of("."), here);
  }
}

}  // namespace
}  // namespace ackxfer
