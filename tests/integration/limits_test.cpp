// Idle and slow peers, and too many of them: every phase has a deadline, sessions have a cap
// with a clear "busy", and none of it gets in the way of a real transfer.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "harness.h"

namespace ackxfer::test {
namespace {

// A receiver with a 2-second idle limit, so the deadlines are quick to observe.
std::unique_ptr<ReceiverProcess> quick_receiver(const fs::path& dir,
                                                std::vector<std::string> extra = {}) {
  extra.insert(extra.end(), {"--idle-timeout", "2"});
  return std::make_unique<ReceiverProcess>(dir, 2, extra);
}

TEST(Limits, Receiver_DropsAControlConnectionThatNeverSaysHello) {
  TempDir dst("dst");
  auto r = quick_receiver(dst.path());
  RawClient c(r->port());
  auto t0 = std::chrono::steady_clock::now();
  auto line = c.read_line(10s);
  ASSERT_TRUE(line);
  EXPECT_TRUE(line->starts_with("ERR - timeout")) << *line;
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 6s);
}

TEST(Limits, Receiver_DropsADataConnectionThatSendsNothing) {
  TempDir dst("dst");
  auto r = quick_receiver(dst.path());
  RawClient d(r->data_port());
  EXPECT_TRUE(d.closed_by_peer(8s));
}

TEST(Limits, Receiver_ClosesAnIdleSession) {
  TempDir dst("dst");
  auto r = quick_receiver(dst.path());
  RawClient c(r->port());
  c.send_bytes("HELLO ackxfer 2\n");
  ASSERT_TRUE(c.read_line());
  auto line = c.read_line(10s);
  ASSERT_TRUE(line);
  EXPECT_TRUE(line->starts_with("ERR - timeout")) << *line;
}

TEST(Limits, Receiver_ASlowlorisLineDoesNotKeepASessionAlive) {
  TempDir dst("dst");
  auto r = quick_receiver(dst.path());
  RawClient c(r->port());
  c.send_bytes("HELLO ackxfer 2\n");
  ASSERT_TRUE(c.read_line());
  // One byte every 200 ms and never a newline: bytes are not progress, lines are.
  std::string drip = "SEND 1 a-very-slow-line";
  bool closed = false;
  for (std::size_t i = 0; i < drip.size() * 3 && !closed; ++i) {
    if (!c.send_bytes(std::string(1, drip[i % drip.size()]))) closed = true;
    auto line = c.read_line(200ms);
    if (line) {
      EXPECT_TRUE(line->starts_with("ERR - timeout")) << *line;
      closed = true;
    }
  }
  EXPECT_TRUE(closed);
}

TEST(Limits, Receiver_RefusesSessionsBeyondItsLimitWithBusy) {
  TempDir dst("dst");
  ReceiverProcess r(dst.path(), 2, {"--max-sessions", "3"});
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawClient>(r.port()));
    held.back()->send_bytes("HELLO ackxfer 2\n");
    auto line = held.back()->read_line();
    ASSERT_TRUE(line && line->starts_with("HELLO ")) << line.value_or("EOF");
  }
  RawClient extra(r.port());
  auto line = extra.read_line();
  ASSERT_TRUE(line);
  EXPECT_TRUE(line->starts_with("ERR - busy")) << *line;
  EXPECT_TRUE(extra.closed_by_peer());
  // A place frees up: the next session is served.
  held.pop_back();
  std::this_thread::sleep_for(200ms);
  RawClient next(r.port());
  next.send_bytes("HELLO ackxfer 2\n");
  auto ok = next.read_line();
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->starts_with("HELLO ")) << *ok;
}

// Connections that never say HELLO used to hold --max-sessions places for their 10 s, so a
// peer renewing them kept every sender out. The oldest of them now makes room for a new one.
TEST(Limits, Receiver_SilentConnectionsCannotKeepSendersOut) {
  TempDir src("src"), dst("dst");
  write_text(src / "f.txt", "got in");
  ReceiverProcess r(dst.path(), 2, {"--max-sessions", "4"});
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 16; ++i)
    silent.push_back(std::make_unique<RawClient>(r.port()));
  std::this_thread::sleep_for(200ms);
  auto res = send({"--to", r.to(), "--retry-for", "5", (src / "f.txt").string()}, 30s);
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "f.txt"), "got in");
  std::this_thread::sleep_for(1500ms);  // evictions are logged once a second
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("that had not said HELLO"), std::string::npos) << rs.err;
}

// --max-handshakes bounds the connections that have not said HELLO apart from --max-sessions:
// the fourth silent connection closes the first (one worker: the oldest is the first), while
// sessions that said HELLO are neither counted nor closed, and a sender still gets in.
TEST(Limits, Receiver_MaxHandshakesClosesTheOldestSilentConnection) {
  TempDir src("src"), dst("dst");
  write_text(src / "f.txt", "through");
  ReceiverProcess r(dst.path(), 1, {"--max-handshakes", "3", "--log-level", "debug"});
  std::vector<std::unique_ptr<RawClient>> said_hello;
  for (int i = 0; i < 5; ++i) {
    said_hello.push_back(std::make_unique<RawClient>(r.port()));
    ASSERT_TRUE(said_hello.back()->send_bytes("HELLO ackxfer 2\n"));
    ASSERT_TRUE(said_hello.back()->read_line());
  }
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 3; ++i) {
    silent.push_back(std::make_unique<RawClient>(r.port()));
    std::this_thread::sleep_for(50ms);
  }
  for (auto& c : silent)
    EXPECT_FALSE(c->closed_by_peer(300ms));
  silent.push_back(std::make_unique<RawClient>(r.port()));
  EXPECT_TRUE(silent[0]->closed_by_peer(2s));
  for (std::size_t i = 1; i < silent.size(); ++i)
    EXPECT_FALSE(silent[i]->closed_by_peer(300ms)) << "silent connection " << i;
  for (auto& c : said_hello)
    EXPECT_FALSE(c->closed_by_peer(100ms));
  auto res = send({"--to", r.to(), "--retry-for", "5", (src / "f.txt").string()}, 30s);
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "f.txt"), "through");
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("--max-handshakes 3"), std::string::npos) << rs.err;
}

TEST(Limits, Receiver_MaxHandshakesOutOfRangeIsAUsageError) {
  TempDir dst("dst");
  for (const char* bad : {"0", "1048577", "-1", "many"}) {
    auto res = run({binary_path(), "recv", "--dir", dst.path().string(), "--port", "0",
                    "--data-port", "0", "--max-handshakes", bad});
    EXPECT_EQ(res.exit_code, 2) << bad << ": " << res.err;
    EXPECT_NE(res.err.find("max-handshakes"), std::string::npos) << bad << ": " << res.err;
  }
}

// Two workers: at --max-sessions, a newcomer that SO_REUSEPORT's hash puts on the worker with
// no silent session used to be told busy while the other worker's silent session sat on its
// place. Now it goes to that worker, which makes room. Twenty newcomers in a row, each landing
// on a worker by the hash of its port: every one gets in, each pushing out the one before.
TEST(Limits, Receiver_AtMaxSessionsANewcomerGetsInOnEitherWorker) {
  TempDir dst("dst");
  ReceiverProcess r(dst.path(), 2, {"--max-sessions", "2"});
  RawClient holder(r.port());
  ASSERT_TRUE(holder.send_bytes("HELLO ackxfer 2\n"));
  ASSERT_TRUE(holder.read_line());
  std::vector<std::unique_ptr<RawClient>> newcomers;
  for (int i = 0; i < 20; ++i) {
    newcomers.push_back(std::make_unique<RawClient>(r.port()));
    std::this_thread::sleep_for(50ms);
  }
  for (int i = 0; i + 1 < 20; ++i) {
    auto line = newcomers[i]->read_line(2s);
    EXPECT_FALSE(line) << "newcomer " << i << " was told: " << *line;
    EXPECT_TRUE(newcomers[i]->closed_by_peer(2s)) << "newcomer " << i;
  }
  ASSERT_TRUE(newcomers.back()->send_bytes("HELLO ackxfer 2\n"));
  auto hello = newcomers.back()->read_line();
  ASSERT_TRUE(hello);
  EXPECT_TRUE(hello->starts_with("HELLO ackxfer 2 ")) << *hello;
  std::this_thread::sleep_for(1500ms);  // evictions are logged once a second
  auto rs = r.stop();
  EXPECT_EQ(rs.err.find("busy"), std::string::npos) << rs.err;
}

TEST(Limits, Sender_WaitsForABusyReceiverWithinRetryFor) {
  TempDir src("src"), dst("dst");
  write_text(src / "f.txt", "patience");
  ReceiverProcess r(dst.path(), 2, {"--max-sessions", "1"});
  auto holder = std::make_unique<RawClient>(r.port());
  holder->send_bytes("HELLO ackxfer 2\n");
  ASSERT_TRUE(holder->read_line());
  Process sender(
      {binary_path(), "send", "--to", r.to(), "--retry-for", "20", (src / "f.txt").string()});
  std::this_thread::sleep_for(1500ms);
  holder.reset();  // frees the one place
  auto res = sender.wait(30s);
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "f.txt"), "patience");
}

TEST(Limits, Sender_ReportsABusyReceiverClearlyAfterRetryFor) {
  TempDir src("src"), dst("dst");
  write_text(src / "f.txt", "x");
  ReceiverProcess r(dst.path(), 2, {"--max-sessions", "1"});
  RawClient holder(r.port());
  holder.send_bytes("HELLO ackxfer 2\n");
  ASSERT_TRUE(holder.read_line());
  auto res = send({"--to", r.to(), "--retry-for", "1", (src / "f.txt").string()});
  EXPECT_EQ(res.exit_code, 3) << res.err;
  EXPECT_NE(res.err.find("busy"), std::string::npos) << res.err;
}

TEST(Limits, IdleConnectionsNeverBlockARealTransfer) {
  TempDir src("src"), dst("dst");
  for (int i = 0; i < 50; ++i)
    write_file(src / "tree" / ("f" + std::to_string(i)), 10000, i);
  write_file(src / "tree" / "big", 30 << 20, 99);
  ReceiverProcess r(dst.path(), 2);
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 200; ++i)
    idle.push_back(std::make_unique<RawClient>(r.port()));
  for (int i = 0; i < 200; ++i)
    idle.push_back(std::make_unique<RawClient>(r.data_port()));
  for (auto& c : idle)
    ASSERT_TRUE(c->connected());
  auto res = send({"--to", r.to(), "--streams", "2", (src / "tree").string()}, 60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Limits, AQuietControlConnectionDuringASlowTransferIsNotIdle) {
  // 24 MiB at 4 MB/s: about 6 s with no control line, three times the idle limit. Data
  // progress keeps the session alive.
  TempDir src("src"), dst("dst");
  write_file(src / "slow.bin", 24 << 20, 7);
  auto r = quick_receiver(dst.path());
  FaultProxy proxy(*r, {"--throttle", std::to_string(r->data_port()) + ":4000:every"});
  auto res = send({"--to", proxy.to(), "--streams", "1", (src / "slow.bin").string()}, 60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

// Once a user's pipes hold fs.pipe-user-pages-soft pages (64 MiB by default), that user's new
// pipes get two pages and cannot grow, and splicing through them crawls. Both splice paths
// must notice, say so once, and move the data another way; the transfer still verifies.
TEST(Limits, ASpentPipeBudgetMakesBothSplicePathsCopyInsteadAndSaySo) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "needs root, to run both sides as a user whose pipe budget it can spend";
  long soft = 0;
  std::ifstream("/proc/sys/fs/pipe-user-pages-soft") >> soft;
  if (soft <= 0 || soft > (1 << 20))
    GTEST_SKIP() << "fs.pipe-user-pages-soft is " << soft << ": no budget to spend";
  const std::vector<std::string> as_nobody = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                              "--clear-groups", "--"};
  auto with = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), as_nobody.begin(), as_nobody.end());
    return argv;
  };
  auto probe = run(with({binary_path(), "--version"}), 10s);
  if (probe.exit_code != 0)
    GTEST_SKIP() << "user nobody cannot run " << binary_path() << " here: " << probe.err;

  TempDir src("src"), dst("dst");
  fs::permissions(dst.path(), fs::perms::all);  // TempDirs are private (mkdtemp)
  fs::permissions(src.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  write_file(src / "big.bin", 24 << 20, 7);  // three 8 MiB chunks

  // A child running as nobody takes pipes of 1 MiB until the kernel refuses to grow one, and
  // holds them until the test ends.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    ::close(ready[0]);
    char spent = 0;
    if (::setgid(65534) == 0 && ::setuid(65534) == 0) {
      for (int i = 0; i < 4096; ++i) {
        int p[2];
        if (::pipe(p) != 0) break;
        if (::fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0) {
          spent = errno == EPERM;
          break;
        }
      }
    }
    (void)!::write(ready[1], &spent, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{holder};
  char spent = 0;
  ASSERT_EQ(::read(ready[0], &spent, 1), 1);
  ::close(ready[0]);
  if (!spent) GTEST_SKIP() << "could not spend the pipe budget of user nobody";

  ReceiverProcess r(dst.path(), 2, {"--recv-path", "splice"}, 0, 0, "127.0.0.1", as_nobody);
  auto res = run(with({binary_path(), "send", "--to", r.to(), "--send-path", "splice", "--streams",
                       "2", "--json", (src / "big.bin").string()}),
                 120s);
  auto rr = r.stop();
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "send_path"), "splice+mmap");
  EXPECT_NE(res.err.find("fs.pipe-user-pages-soft"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("sending from a mapping instead"), std::string::npos) << res.err;
  // Said once, not once per stream.
  EXPECT_EQ(res.err.find("splice send path"), res.err.rfind("splice send path")) << res.err;
  EXPECT_NE(rr.err.find("splice receive path"), std::string::npos) << rr.err;
  EXPECT_NE(rr.err.find("through a buffer instead"), std::string::npos) << rr.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path(), false), "");
}

// A receiver whose fd limit is 4,096 (2,048 temp files open across sessions) and two senders
// of many small files at once. A one-chunk file published by its frame kept its fd and budget
// place until its session reached its credit (up to 2,048): the two sessions' finished files
// filled the budget, and both senders were answered busy until their --idle-timeout (exit 8,
// some 4,000 of 6,000 files delivered).
TEST(Limits, TwoSendersOfSmallFilesShareALowFdLimit) {
  TempDir src("src"), dst("dst");
  for (const char* tree : {"a", "b"})
    for (int i = 0; i < 3000; ++i)
      write_text(src.path() / tree / ("f" + std::to_string(i)), std::to_string(i));
  ReceiverProcess r(dst.path(), 2, {}, 0, 0, "127.0.0.1",
                    {"/usr/bin/prlimit", "--nofile=4096:4096", "--"});
  auto sender = [&](const char* tree) {
    return std::make_unique<Process>(std::vector<std::string>{binary_path(), "send", "--to", r.to(),
                                                              "--idle-timeout", "10", "-q",
                                                              (src.path() / tree).string()});
  };
  auto a = sender("a");
  auto b = sender("b");
  auto ra = a->wait(120s);
  auto rb = b->wait(120s);
  auto rr = r.stop();
  EXPECT_EQ(ra.exit_code, 0) << ra.err;
  EXPECT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path(), false), "");
}

}  // namespace
}  // namespace ackxfer::test
