// Symlinks inside a sent tree arrive as symlinks (LINK): same target bytes, same mtime, never
// followed on either side; nothing a link says can lead a write outside the receiver's --dir.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "harness.h"
#include "protocol/control_codec.h"
#include "protocol/limits.h"

namespace ackxfer::test {
namespace {

void set_link_mtime(const fs::path& p, long sec, long nsec) {
  timespec t[2] = {{0, UTIME_OMIT}, {sec, nsec}};
  ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << p;
}

std::string target_of(const fs::path& p) {
  std::string buf(PATH_MAX, '\0');
  ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
  buf.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
  return buf;
}

// tree/ with a file, a subdirectory and six links: relative, relative leaving the tree,
// absolute (to `outside`, which must stay empty), dangling, to a directory in the tree, and
// one whose name and target need escaping. Each link has its own mtime.
void make_tree_with_links(const fs::path& root, const fs::path& outside) {
  write_text(root / "file.txt", "f");
  write_text(root / "sub/inner.txt", "i");
  fs::create_symlink("file.txt", root / "relative");
  fs::create_symlink("../../outside-the-tree/x", root / "sub/up-and-out");
  fs::create_symlink(outside / "abs-target", root / "absolute");
  fs::create_symlink("no/such/thing", root / "dangling");
  fs::create_directory_symlink("sub", root / "to-dir");
  fs::create_symlink("odd target\\with\tbytes\xff", root / "caf\xc3\xa9 link");
  long sec = 1600000000;
  for (const char* l :
       {"relative", "sub/up-and-out", "absolute", "dangling", "to-dir", "caf\xc3\xa9 link"})
    set_link_mtime(root / l, sec++, 123456789);
}
constexpr std::uint64_t kLinksInTree = 6;

TEST(Symlinks, RelativeAbsoluteDanglingAndDirectoryLinksArriveAsIdenticalLinks) {
  TempDir src("src"), dst("dst"), outside("outside");
  make_tree_with_links(src / "tree", outside.path());
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", (src / "tree").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_u64(res.out, "symlinks"), kLinksInTree) << res.out;
  EXPECT_EQ(json_u64(res.out, "files"), 2u) << res.out;
  EXPECT_EQ(json_u64(res.out, "skipped"), 0u) << res.out;
  // Same names, types, contents, modes and mtimes; links by target bytes and their own mtime.
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_EQ(target_of(dst / "tree/absolute"), (outside / "abs-target").string());
  EXPECT_EQ(target_of(dst / "tree/sub/up-and-out"), "../../outside-the-tree/x");
  EXPECT_EQ(target_of(dst / "tree/caf\xc3\xa9 link"), "odd target\\with\tbytes\xff");
  // The link to a directory was not followed by the sender: sub/ arrived once, as itself.
  EXPECT_TRUE(fs::is_symlink(dst / "tree/to-dir"));
  EXPECT_EQ(count_entries(outside.path()), 0u);
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  EXPECT_EQ(r.stop().exit_code, 0);
}

TEST(Symlinks, ReRunningIsIdempotent) {
  TempDir src("src"), dst("dst"), outside("outside");
  make_tree_with_links(src / "tree", outside.path());
  ReceiverProcess r(dst.path());
  ASSERT_EQ(send({"--to", r.to(), (src / "tree").string()}).exit_code, 0);
  std::size_t entries = count_entries(dst.path());
  for (const char* force : {"--retry-for=10", "--force"}) {
    auto again = send({"--to", r.to(), "--json", force, (src / "tree").string()});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    // Links are cheap: they are made again (replaced atomically), never duplicated or nested.
    EXPECT_EQ(json_u64(again.out, "symlinks"), kLinksInTree) << again.out;
    EXPECT_EQ(count_entries(dst.path()), entries) << force;
    EXPECT_EQ(compare_trees(src.path(), dst.path()), "") << force;
  }
  EXPECT_FALSE(fs::exists(dst / "tree/to-dir/sub"));
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

TEST(Symlinks, ALinkReplacesAFileOrALinkAtItsNameWithoutWritingThroughIt) {
  TempDir src("src"), dst("dst"), outside("outside");
  write_text(outside / "precious", "precious");
  write_text(dst / "tree/was-a-file", "old");
  fs::create_symlink(outside / "precious", dst / "tree/was-a-link");
  fs::create_directories(src / "tree");
  fs::create_symlink("new-target", src / "tree/was-a-file");
  fs::create_symlink("other-target", src / "tree/was-a-link");
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), (src / "tree").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(target_of(dst / "tree/was-a-file"), "new-target");
  EXPECT_EQ(target_of(dst / "tree/was-a-link"), "other-target");
  EXPECT_EQ(read_text(outside / "precious"), "precious");
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Symlinks, ALinkOverADirectoryFailsClearlyAndTheRestArrives) {
  TempDir src("src"), dst("dst");
  write_text(dst / "tree/d/keep.txt", "keep");
  write_text(src / "tree/a.txt", "a");
  write_text(src / "tree/sub/b.txt", "b");
  fs::create_symlink("sub", src / "tree/d");
  fs::create_symlink("a.txt", src / "tree/fine");
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", (src / "tree").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_NE(res.err.find("failed: " + (src / "tree/d").string() +
                         ": the receiver could not make the symlink: is-a-directory"),
            std::string::npos)
      << res.err;
  EXPECT_EQ(json_u64(res.out, "failed"), 1u) << res.out;
  EXPECT_EQ(json_u64(res.out, "symlinks"), 1u) << res.out;
  EXPECT_EQ(json_u64(res.out, "files"), 2u) << res.out;
  EXPECT_EQ(read_text(dst / "tree/d/keep.txt"), "keep");
  EXPECT_EQ(read_text(dst / "tree/sub/b.txt"), "b");
  EXPECT_EQ(target_of(dst / "tree/fine"), "a.txt");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

TEST(Symlinks, PathArgumentsThatAreSymlinksAreFollowedLikeCp) {
  TempDir src("src"), dst("dst");
  write_text(src / "real-dir/f.txt", "f");
  fs::create_directory_symlink("real-dir", src / "dir-link");
  fs::create_symlink("real-dir/f.txt", src / "file-link");
  ReceiverProcess r(dst.path());
  auto res =
      send({"--to", r.to(), "--json", (src / "dir-link").string(), (src / "file-link").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_u64(res.out, "symlinks"), 0u) << res.out;
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(dst / "dir-link")));
  EXPECT_EQ(read_text(dst / "dir-link/f.txt"), "f");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(dst / "file-link")));
  EXPECT_EQ(read_text(dst / "file-link"), "f");
}

// A stand-in for a receiver that does not take LINK: HELLO, MKDIR and BYE as usual, and a LINK
// would get `ERR - unknown-verb`. With `with_features`, its HELLO lists features, but not
// `link`; without, it predates feature negotiation (no features= at all). Either way the
// sender must not send it a LINK. Its data port accepts and holds connections.
class PreLinkReceiver {
 public:
  explicit PreLinkReceiver(bool with_features) : with_features_(with_features) {
    control_ = listen_on_loopback(control_port_);
    data_ = listen_on_loopback(data_port_);
    thread_ = std::thread([this] { serve(); });
  }
  ~PreLinkReceiver() {
    stop_ = true;
    thread_.join();
    ::close(control_);
    ::close(data_);
  }
  std::string to() const { return "127.0.0.1:" + std::to_string(control_port_); }
  int links_seen() const { return links_; }

 private:
  std::string answer(const std::string& line) {
    std::string verb = line.substr(0, line.find(' '));
    std::string id = line.size() > verb.size() ? line.substr(verb.size() + 1) : "";
    id = id.substr(0, id.find(' '));
    if (verb == "HELLO")
      return "HELLO ackxfer 2 data-port=" + std::to_string(data_port_) + " max-open=2048" +
             (with_features_ ? " features=progress" : "") + "\n";
    if (verb == "MKDIR") return "OK " + id + "\n";
    if (verb == "BYE") return "BYE files=0 bytes=0\n";
    if (verb == "LINK") ++links_;
    return "ERR - unknown-verb unknown verb '" + verb + "'\n";
  }

  void serve() {
    int conn = -1;
    std::vector<int> held;
    std::string in;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      std::vector<pollfd> fds = {{control_, POLLIN, 0}, {data_, POLLIN, 0}};
      if (conn >= 0) fds.push_back({conn, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = accept4(control_, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0)
          conn = c;
        else if (c >= 0)
          ::close(c);
      }
      if (fds[1].revents & POLLIN) {
        int c = accept4(data_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) held.push_back(c);
      }
      if (conn < 0 || fds.size() < 3 || !fds[2].revents) continue;
      char buf[4096];
      ssize_t n = ::recv(conn, buf, sizeof buf, 0);
      if (n <= 0) {
        ::close(conn);
        conn = -1;
        continue;
      }
      in.append(buf, static_cast<std::size_t>(n));
      for (auto nl = in.find('\n'); nl != std::string::npos; nl = in.find('\n')) {
        std::string reply = answer(in.substr(0, nl));
        in.erase(0, nl + 1);
        ::send(conn, reply.data(), reply.size(), MSG_NOSIGNAL);
      }
    }
    if (conn >= 0) ::close(conn);
    for (int fd : held)
      ::close(fd);
  }

  bool with_features_;
  int control_ = -1, data_ = -1;
  std::uint16_t control_port_ = 0, data_port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> links_{0};
  std::thread thread_;
};

void expect_links_fail_as_not_taken(bool with_features) {
  TempDir src("src");
  fs::create_directories(src / "tree/sub");
  fs::create_symlink("sub", src / "tree/l1");
  fs::create_symlink("x", src / "tree/sub/l2");
  fs::create_symlink("y", src / "tree/sub/l3");
  PreLinkReceiver old(with_features);
  auto res = send({"--to", old.to(), "--json", (src / "tree").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_EQ(old.links_seen(), 0);  // known from HELLO: no LINK is sent, none is refused
  EXPECT_EQ(json_u64(res.out, "directories"), 2u) << res.out;
  EXPECT_EQ(json_u64(res.out, "symlinks"), 0u) << res.out;
  EXPECT_EQ(json_u64(res.out, "failed"), 3u) << res.out;
  for (const char* l : {"tree/l1", "tree/sub/l2", "tree/sub/l3"})
    EXPECT_NE(res.err.find("failed: " + (src / l).string() +
                           ": not sent: the receiver does not take symlinks"),
              std::string::npos)
        << l << "\n"
        << res.err;
}

TEST(Symlinks, AReceiverThatPredatesFeatureNegotiationFailsOnlyTheLinks) {
  expect_links_fail_as_not_taken(false);
}

TEST(Symlinks, AReceiverThatDoesNotListLinkFailsOnlyTheLinks) {
  expect_links_fail_as_not_taken(true);
}

// Raw LINK lines, as a hostile or broken sender might send them.
class SymlinkHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = std::make_unique<TempDir>("links-hostile");
    dest_ = base_->path() / "dest";
    outside_ = base_->path() / "outside";
    fs::create_directories(dest_);
    fs::create_directories(outside_);
    receiver_ = std::make_unique<ReceiverProcess>(dest_, 2);
  }
  // After each test: nothing was written outside --dir, and the receiver still serves.
  void TearDown() override {
    EXPECT_EQ(count_entries(outside_), 0u);
    fs::path probe = base_->path() / "probe.txt";
    write_text(probe, "probe");
    auto res = send({"--to", receiver_->to(), probe.string()});
    EXPECT_EQ(res.exit_code, 0) << "receiver stopped serving: " << res.err;
    EXPECT_TRUE(temp_files_under(dest_).empty());
    EXPECT_EQ(receiver_->stop().exit_code, 0);
  }
  std::unique_ptr<RawClient> hello() {
    auto c = std::make_unique<RawClient>(receiver_->port());
    EXPECT_TRUE(c->connected());
    c->send_bytes("HELLO ackxfer 2\n");
    auto line = c->read_line();
    EXPECT_TRUE(line && line->starts_with("HELLO ackxfer 2 data-port=")) << line.value_or("EOF");
    return c;
  }
  // Sends `line` and returns the reply (or "EOF").
  static std::string ask(RawClient& c, const std::string& line) {
    EXPECT_TRUE(c.send_bytes(line + "\n"));
    return c.read_line().value_or("EOF");
  }

  std::unique_ptr<TempDir> base_;
  fs::path dest_, outside_;
  std::unique_ptr<ReceiverProcess> receiver_;
};

TEST_F(SymlinkHostile, Receiver_RefusesLinksWithBadTargetsOrEscapingPaths) {
  auto c = hello();
  std::string too_long(kMaxLinkTargetBytes + 1, 't');
  std::vector<std::pair<std::string, std::string>> cases = {
      {"LINK 1 a target= mtime=1.0", "ERR 1 bad-field"},
      {"LINK 2 a target=x\\x00y mtime=1.0", "ERR 2 bad-field"},
      {"LINK 3 a target=" + too_long + " mtime=1.0", "ERR 3 bad-field"},
      {"LINK 4 a mtime=1.0", "ERR 4 bad-field"},
      {"LINK 5 a target=x\\q mtime=1.0", "ERR 5 bad-field"},
      {"LINK 6 a target=x mtime=soon", "ERR 6 bad-number"},
      {"LINK 7 ../escape target=x mtime=1.0", "ERR 7 bad-path"},
      {"LINK 8 " + escape_bytes(outside_.string() + "/abs") + " target=x mtime=1.0",
       "ERR 8 bad-path"},
      {"LINK 9 \\x2e\\x2e/x target=x mtime=1.0", "ERR 9 bad-path"},
      {"LINK 10 a/../../x target=x mtime=1.0", "ERR 10 bad-path"},
      {"LINK 11 . target=x mtime=1.0", "ERR 11 bad-path"},
      {"LINK 12 a/ target=x mtime=1.0", "ERR 12 bad-path"},
  };
  for (const auto& [line, want] : cases)
    EXPECT_TRUE(ask(*c, line).starts_with(want)) << line.substr(0, 80);
  EXPECT_EQ(count_entries(dest_), 0u);
}

TEST_F(SymlinkHostile, Receiver_NeverWritesThroughALinkItWasSentThatLeadsOutside) {
  auto c = hello();
  // Links are data: one to an absolute directory outside, one relative, leaving --dir.
  EXPECT_EQ(ask(*c, "LINK 1 abs target=" + escape_bytes(outside_.string()) + " mtime=1.0"), "OK 1");
  EXPECT_EQ(ask(*c, "LINK 2 rel target=../outside mtime=1.0"), "OK 2");
  EXPECT_EQ(target_of(dest_ / "abs"), outside_.string());
  // Everything that would resolve through them is refused.
  for (std::string dir : {"abs", "rel"}) {
    for (std::string line :
         {"SEND 3 " + dir + "/pwned size=5 mode=0644 mtime=1.0 chunk=65536",
          "SEND 3 " + dir + "/deeper/pwned size=5 mode=0644 mtime=1.0 chunk=65536",
          "MKDIR 3 " + dir + "/sub mode=0755 mtime=1.0",
          "LINK 3 " + dir + "/l target=x mtime=1.0"}) {
      std::string reply = ask(*c, line);
      EXPECT_TRUE(reply.starts_with("ERR 3 bad-path ")) << line << " -> " << reply;
      EXPECT_NE(reply.find("leads outside the receiver's --dir"), std::string::npos) << reply;
    }
  }
  // And through the real sender: a directory called "abs" must not land in outside/.
  TempDir src("src");
  write_text(src / "abs/pwned", "x");
  auto res = send({"--to", receiver_->to(), (src / "abs").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_NE(res.err.find("failed: " + (src / "abs").string()), std::string::npos) << res.err;
  EXPECT_TRUE(fs::is_symlink(dest_ / "abs"));
  fs::remove(dest_ / "abs");
  fs::remove(dest_ / "rel");
}

TEST_F(SymlinkHostile, Receiver_ALinkToADirectoryInsideDirLeadsWritesOnlyThere) {
  auto c = hello();
  EXPECT_EQ(ask(*c, "MKDIR 1 tree/real mode=0755 mtime=1.0"), "OK 1");
  EXPECT_EQ(ask(*c, "LINK 2 tree/alias target=real mtime=1.0"), "OK 2");
  EXPECT_EQ(ask(*c, "BYE").substr(0, 4), "BYE ");
  // A later transfer with a real directory named "alias" writes through the in-tree link,
  // like through any symlink already in --dir that stays inside it (RESOLVE_BENEATH).
  TempDir src("src");
  write_text(src / "tree/alias/f.txt", "f");
  auto res = send({"--to", receiver_->to(), (src / "tree").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_TRUE(fs::is_symlink(dest_ / "tree/alias"));
  EXPECT_EQ(read_text(dest_ / "tree/real/f.txt"), "f");
}

TEST_F(SymlinkHostile, Receiver_RefusesALinkWhoseIdIsAnOpenFile) {
  auto c = hello();
  std::string ready = ask(*c, "SEND 7 f size=5 mode=0644 mtime=1.0 chunk=65536");
  ASSERT_TRUE(ready.starts_with("READY 7 ")) << ready;
  EXPECT_TRUE(ask(*c, "LINK 7 g target=x mtime=1.0").starts_with("ERR 7 duplicate-id"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "g")));
}

}  // namespace
}  // namespace ackxfer::test
