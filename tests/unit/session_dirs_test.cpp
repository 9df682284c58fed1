// ControlSession and WritableDirs: a read-only directory of the tree is writable while sessions
// put files in it, and gets a read-only mode back when the last of them ends, however it ends.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "receiver_fixture.h"

namespace ackxfer::test {
namespace {

class SessionDirsTest : public ReceiverFixture {
 protected:
  void SetUp() override {
    ReceiverFixture::SetUp();
    fs::create_directory(dir_ / "ro");
    ::chmod((dir_ / "ro").c_str(), 0555);  // as an earlier session's BYE left it
  }
  void TearDown() override {
    ctx_->work.stop();
    worker_.reset();                       // sessions still open let go first
    ::chmod((dir_ / "ro").c_str(), 0755);  // so that the temp dir can be removed
    ReceiverFixture::TearDown();
  }
  unsigned mode_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  }
  int said_hello() {
    int s = session();
    EXPECT_TRUE(ask(s, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
    return s;
  }
  void lose(int s) {
    loop_.peer_closes(s);
    loop_.run();
  }
};

// A session cut before BYE used to leave the directory it had opened up as u+wx, more open than
// its source, until some later session completed.
TEST_F(SessionDirsTest, ASessionLostBeforeByeSetsTheModeItOpenedUpBack) {
  int s = said_hello();
  EXPECT_EQ(ask(s, "MKDIR 1 ro mode=0555 mtime=1.0\n"), "OK 1\n");
  EXPECT_EQ(mode_of(dir_ / "ro"), 0755u);
  EXPECT_EQ(ctx_->writable_dirs.size(), 1u);
  lose(s);
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(mode_of(dir_ / "ro"), 0555u);
  EXPECT_EQ(ctx_->writable_dirs.size(), 0u);
  EXPECT_EQ(ctx_->dir_metadata_bytes.load(), 0u) << "the registry's budget is given back";
}

TEST_F(SessionDirsTest, TheReceiverStoppingSetsItBackToo) {
  int s = said_hello();
  EXPECT_EQ(ask(s, "MKDIR 1 ro mode=0555 mtime=1.0\n"), "OK 1\n");
  worker_.reset();  // every session destroyed, as when the receiver stops
  EXPECT_EQ(mode_of(dir_ / "ro"), 0555u);
}

// The first session to end used to set the read-only mode under a session still writing in the
// directory (at BYE), so that session's files failed. The last one to end sets it now.
TEST_F(SessionDirsTest, TheDirectoryStaysWritableUntilTheLastSessionInItEnds) {
  int a = said_hello();
  int b = said_hello();
  EXPECT_EQ(ask(a, "MKDIR 1 ro mode=0555 mtime=1.0\n"), "OK 1\n");
  EXPECT_EQ(ask(b, "MKDIR 1 ro mode=0550 mtime=2.0\n"), "OK 1\n");
  EXPECT_EQ(mode_of(dir_ / "ro"), 0755u);
  lose(a);
  EXPECT_EQ(mode_of(dir_ / "ro"), 0755u) << "b still writes in it";
  EXPECT_TRUE(ask(b, "BYE\n").starts_with("BYE "));
  EXPECT_EQ(mode_of(dir_ / "ro"), 0550u) << "the last session's own mode, at its BYE";
  EXPECT_EQ(ctx_->writable_dirs.size(), 0u);
}

TEST_F(SessionDirsTest, AByeWhileAnotherSessionWritesLeavesItsModeForTheLastOne) {
  int a = said_hello();
  int b = said_hello();
  EXPECT_EQ(ask(a, "MKDIR 1 ro mode=0500 mtime=7.0\n"), "OK 1\n");
  EXPECT_EQ(ask(b, "MKDIR 1 ro mode=0555 mtime=1.0\n"), "OK 1\n");
  EXPECT_TRUE(ask(a, "BYE\n").starts_with("BYE "));
  EXPECT_EQ(mode_of(dir_ / "ro"), 0755u) << "b still writes in it";
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 7) << "a's mtime is applied all the same";
  // b can still put a file there, then is cut: the mode a's BYE asked for is applied.
  EXPECT_EQ(ask(b, "MKDIR 2 ro/sub mode=0755 mtime=1.0\n"), "OK 2\n");
  lose(b);
  EXPECT_EQ(mode_of(dir_ / "ro"), 0500u);
}

// A MKDIR sent twice holds the directory once: one end lets it go.
TEST_F(SessionDirsTest, AMkdirSentTwiceHoldsItOnce) {
  int s = said_hello();
  EXPECT_EQ(ask(s, "MKDIR 1 ro mode=0555 mtime=1.0\nMKDIR 2 ro mode=0555 mtime=1.0\n"),
            "OK 1\nOK 2\n");
  lose(s);
  EXPECT_EQ(mode_of(dir_ / "ro"), 0555u);
  EXPECT_EQ(ctx_->writable_dirs.size(), 0u);
}

// What the receiver gives back is only ever what it changed: a directory chmod'ed by someone
// else meanwhile, or another directory now at that path, is left as it is.
TEST_F(SessionDirsTest, ADirectoryChangedOrReplacedMeanwhileIsLeftAlone) {
  int s = said_hello();
  EXPECT_EQ(ask(s, "MKDIR 1 ro mode=0555 mtime=1.0\n"), "OK 1\n");
  fs::rename(dir_ / "ro", dir_ / "moved");
  fs::create_directory(dir_ / "ro");
  ::chmod((dir_ / "ro").c_str(), 0700);
  lose(s);
  EXPECT_EQ(mode_of(dir_ / "ro"), 0700u);
  EXPECT_EQ(mode_of(dir_ / "moved"), 0755u);

  ::chmod((dir_ / "ro").c_str(), 0555);
  int t = said_hello();
  EXPECT_EQ(ask(t, "MKDIR 1 ro mode=0555 mtime=1.0\n"), "OK 1\n");
  ::chmod((dir_ / "ro").c_str(), 0750);
  lose(t);
  EXPECT_EQ(mode_of(dir_ / "ro"), 0750u);
}

// Directories this session created, and writable ones, are not held.
TEST_F(SessionDirsTest, OnlyReadOnlyDirectoriesThatExistedAreHeld) {
  fs::create_directory(dir_ / "open");
  int s = said_hello();
  EXPECT_EQ(ask(s, "MKDIR 1 new mode=0555 mtime=1.0\nMKDIR 2 open mode=0555 mtime=1.0\n"),
            "OK 1\nOK 2\n");
  EXPECT_EQ(ctx_->writable_dirs.size(), 0u);
  lose(s);
  EXPECT_EQ(mode_of(dir_ / "open"), 0755u) << "a lost session applies no MKDIR's mode";
}

// A directory of the sender's tree that is a symlink to another directory of the receiver's
// tree (the receiver's own arrangement, or a LINK the sender made): its files go through the
// link, as a file's parents may, but the sender's mode and mtime for it are not applied to
// whatever the link leads to (a link to "." would have had --dir itself chmod'ed), not even
// opened up writable, and BYE has no warning about it.
TEST_F(SessionDirsTest, AMkdirOfALinkToADirectoryGoesThroughItAndLeavesItsTargetAlone) {
  fs::create_directory(dir_ / "real");
  ::chmod((dir_ / "real").c_str(), 0750);
  fs::create_directory_symlink("real", dir_ / "alias");
  fs::create_directory_symlink(".", dir_ / "top");
  struct stat before {};
  ASSERT_EQ(::stat(dir_.c_str(), &before), 0);
  int s = said_hello();
  EXPECT_EQ(ask(s, "MKDIR 1 alias mode=0777 mtime=1.0\n"), "OK 1\n");
  EXPECT_EQ(ask(s, "MKDIR 2 top mode=0777 mtime=1.0\n"), "OK 2\n");
  EXPECT_EQ(ask(s, "MKDIR 3 alias/sub mode=0700 mtime=2.0\n"), "OK 3\n");
  EXPECT_TRUE(fs::is_directory(dir_ / "real" / "sub")) << "made through the link";
  EXPECT_TRUE(ask(s, "BYE\n").starts_with("BYE "));
  EXPECT_EQ(mode_of(dir_ / "real"), 0750u);
  EXPECT_EQ(mode_of(dir_ / "real" / "sub"), 0700u) << "a real directory beyond the link";
  struct stat after {};
  ASSERT_EQ(::stat(dir_.c_str(), &after), 0);
  EXPECT_EQ(after.st_mode, before.st_mode) << "--dir itself, through top -> .";
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_TRUE(fs::is_symlink(dir_ / "alias"));
  for (const std::string& w : warnings_)
    ADD_FAILURE() << w;
  EXPECT_EQ(ctx_->writable_dirs.size(), 0u);
}

}  // namespace
}  // namespace ackxfer::test
