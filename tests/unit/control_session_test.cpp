// ControlSession as a state machine on the loop test double: every state ends by its deadline,
// what a session holds grows with what it delivers, long work stays visible, and one session's
// big job does not stall the others.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <thread>

#include "fs/file_digest.h"
#include "fs/partial.h"
#include "protocol/limits.h"
#include "receiver_fixture.h"

namespace ackxfer::test {
namespace {

using namespace std::chrono_literals;

class ControlSessionTest : public ReceiverFixture {
 protected:
  // recv --threads 2 as worker 0 sees it: what it hands to another worker is recorded in
  // handed_ (the connection is closed at the end).
  void spread_over_two_workers() {
    ctx_->load = std::vector<ReceiverContext::WorkerLoad>(2);
    ctx_->spreading = true;
    ctx_->hand_over = [this](unsigned i, UniqueFd fd, ReceiverContext::Handed what) {
      EXPECT_EQ(what, ReceiverContext::Handed::kControl);
      handed_.push_back(i);
      peers_.push_back(fd.release());
    };
  }
  // A control connection accepted by worker 0 (Worker::take_control_connection, which may hand
  // it over); returns its fd.
  int take() {
    return connected([this](UniqueFd fd) { worker_->take_control_connection(std::move(fd)); });
  }
  // A session with `dirs` directories made says BYE, and a new session says HELLO, in the same
  // run of the loop, with the clock moving `ms_per_clock_read` at every look (slow work).
  // Whether the new session was answered before the BYE, that is, while the first session's
  // directory metadata was still being applied.
  bool hello_answered_before_bye(int dirs, std::int64_t ms_per_clock_read) {
    int a = session();
    ask(a, "HELLO ackxfer 2\n");
    std::string lines;
    for (int i = 1; i <= dirs; ++i)
      lines += "MKDIR " + std::to_string(i) + " d" + std::to_string(i) + " mode=0755 mtime=1.0\n";
    ask(a, lines);
    int b = session();
    loop_.feed_later(a, "BYE\n");
    loop_.feed_later(b, "HELLO ackxfer 2\n");
    loop_.ms_per_clock_read = ms_per_clock_read;
    loop_.run();
    loop_.ms_per_clock_read = 0;
    std::optional<std::size_t> hello_b, bye_a;
    const auto& log = loop_.send_log();
    for (std::size_t i = 0; i < log.size(); ++i) {
      if (log[i].first == b && log[i].second.starts_with("HELLO")) hello_b = i;
      if (log[i].first == a && log[i].second.starts_with("BYE")) bye_a = i;
    }
    EXPECT_TRUE(hello_b && bye_a) << "both answered";
    return hello_b && bye_a && *hello_b < *bye_a;
  }
  std::vector<unsigned> handed_;
};

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
    ++n;
  return n;
}

TEST_F(ControlSessionTest, AnswersHelloWithItsFeaturesAndTheInitialCredit) {
  int s = session();
  std::string r = ask(s, "HELLO ackxfer 2 features=link,credit,some-future-thing\n");
  EXPECT_EQ(r, "HELLO ackxfer 2 data-port=36250 max-open=" + std::to_string(kInitialOpenFiles) +
                   " features=link,credit\n");
}

// A PROGRESS from a sender whose HELLO did not agree on `progress` was taken silently; it is a
// line outside the protocol, and the sender hears so (the sender does the same with a
// receiver's). Agreed on, it is taken without a reply.
TEST_F(ControlSessionTest, ProgressNotAgreedOnInHelloIsABadLine) {
  int s = session();
  ask(s, "HELLO ackxfer 2 features=link\n");
  EXPECT_EQ(ask(s, "PROGRESS 1 done=1 total=2\n"),
            "ERR - bad-line PROGRESS, but 'progress' was not agreed on in HELLO\n");
  EXPECT_EQ(ctx_->stats.protocol_errors.load(), 1u);
  int agreed = session();
  ask(agreed, "HELLO ackxfer 2 features=progress\n");
  EXPECT_EQ(ask(agreed, "PROGRESS 1 done=1 total=2\n"), "");
  EXPECT_EQ(ctx_->stats.protocol_errors.load(), 1u);
}

// A peer that does not read its replies used to keep its session (and its place under
// --max-sessions) forever once the session decided to close: the linger timer was only armed
// after the last reply went out, and tick() skipped closing sessions.
TEST_F(ControlSessionTest, AClosingSessionWhosePeerNeverReadsIsGoneByItsDeadline) {
  make_receiver([](ReceiverOptions& o) {
    o.idle_timeout = 2s;
    o.max_sessions = 1;
  });
  int s = session();
  loop_.set_reading(s, false);
  loop_.feed(s, "HELLO ackxfer 2\n");
  ASSERT_EQ(sessions().size(), 1u);
  loop_.advance(3'000);  // idle: the session says timeout and starts closing; nothing is read
  EXPECT_EQ(sessions().size(), 1u);
  EXPECT_EQ(ctx_->stats.timeouts.load(), 1u);
  loop_.advance(kMaxClosingMs + 1'500);
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->stats.sessions_active.load(), 0u);
  // Its place is free: the next sender is served, not told `busy`.
  int next = session();
  EXPECT_TRUE(ask(next, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
}

TEST_F(ControlSessionTest, ARefusedSessionThatNeverReadsIsGoneByItsDeadlineToo) {
  make_receiver([](ReceiverOptions& o) { o.max_sessions = 1; });
  int first = session();
  ask(first, "HELLO ackxfer 2\n");
  int refused = session();
  loop_.set_reading(refused, false);
  loop_.run();
  EXPECT_EQ(sessions().size(), 2u);
  loop_.advance(kMaxClosingMs + 1'500);
  EXPECT_EQ(sessions().size(), 1u);
}

// At --max-sessions, a session that has not said HELLO gives its place to a newer one, oldest
// first: a peer that connects and sits could otherwise keep every sender out, renewing its
// connections as each times out. Sessions that said HELLO keep theirs.
TEST_F(ControlSessionTest, AtMaxSessionsTheOldestSilentSessionMakesRoom) {
  make_receiver([](ReceiverOptions& o) { o.max_sessions = 3; });
  int served = session();
  ASSERT_TRUE(ask(served, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  int silent1 = session();
  int silent2 = session();
  ASSERT_EQ(sessions().size(), 3u);
  // A fourth: the older silent one goes (no reply: it never spoke), the newcomer is served.
  int fresh = session();
  EXPECT_EQ(ctx_->stats.sessions_evicted.load(), 1u);
  EXPECT_EQ(ctx_->stats.sessions_refused_busy.load(), 0u);
  EXPECT_EQ(ctx_->stats.sessions_active.load(), 3u);
  EXPECT_TRUE(ask(fresh, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_EQ(loop_.take_sent(silent1), "");
  EXPECT_TRUE(ask(silent2, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_EQ(sessions().size(), 3u);
  // Now every place is held by a session that said HELLO: the next one is told busy.
  int late = session();
  EXPECT_TRUE(loop_.take_sent(late).starts_with("ERR - busy ")) << "nobody to make room";
  EXPECT_EQ(ctx_->stats.sessions_evicted.load(), 1u);
  EXPECT_EQ(ctx_->stats.sessions_refused_busy.load(), 1u);
  EXPECT_TRUE(ask(served, "MKDIR 1 d mode=0755 mtime=1.0\n").starts_with("OK 1")) << "served";
}

// Below --max-sessions, sessions that have not said HELLO are bounded apart: anyone can open
// connections, and with encryption each that begins a handshake and sits holds up to 73 KiB
// (16,384 of them, the default --max-sessions, 1.2 GiB). Beyond the bound the oldest of them
// makes room; sessions that said HELLO are never counted, nor pushed out.
TEST_F(ControlSessionTest, SessionsThatHaveNotSaidHelloAreBoundedApartOldestFirst) {
  make_receiver([](ReceiverOptions& o) { o.max_sessions = 100; });
  ctx_->max_sessions_awaiting_hello = 2;
  int served = session();
  ASSERT_TRUE(ask(served, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 0u);
  int silent1 = session();
  int silent2 = session();
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 2u);
  int fresh = session();  // the oldest silent one goes, with no reply: it never spoke
  EXPECT_EQ(ctx_->stats.sessions_evicted.load(), 1u);
  EXPECT_EQ(ctx_->stats.sessions_refused_busy.load(), 0u);
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 2u);
  EXPECT_EQ(ctx_->stats.sessions_active.load(), 3u);
  EXPECT_EQ(loop_.take_sent(silent1), "");
  EXPECT_TRUE(ask(silent2, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_TRUE(ask(fresh, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 0u);
  // Sessions that said HELLO hold no such place: two more newcomers wait beside them.
  int next1 = session();
  int next2 = session();
  EXPECT_EQ(ctx_->stats.sessions_evicted.load(), 1u);
  EXPECT_EQ(sessions().size(), 5u);
  EXPECT_TRUE(ask(next1, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_TRUE(ask(next2, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_TRUE(ask(served, "MKDIR 1 d mode=0755 mtime=1.0\n").starts_with("OK 1")) << "served";
  // A session closed before HELLO gives its place back.
  int gone = session();
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 1u);
  loop_.peer_closes(gone);
  loop_.run();
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 0u);
}

// recv --threads N: SO_REUSEPORT places control connections by a hash, so at --max-sessions a
// newcomer may land on a worker with no session awaiting HELLO while the other worker holds
// all of them. It goes to the worker holding the most such sessions, to make room there; a
// worker that holds one keeps its newcomers and makes room itself.
TEST_F(ControlSessionTest, AtMaxSessionsANewcomerGoesWhereASilentSessionCanMakeRoom) {
  make_receiver([](ReceiverOptions& o) { o.max_sessions = 2; });
  spread_over_two_workers();
  int served = session();
  ASSERT_TRUE(ask(served, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_EQ(ctx_->load[0].awaiting.load(), 0u);
  // Worker 1 holds the other place, with a session that has not said HELLO.
  ctx_->load[1].awaiting = 1;
  ctx_->stats.sessions_active += 1;
  take();
  EXPECT_EQ(handed_, std::vector<unsigned>{1});
  EXPECT_EQ(ctx_->stats.sessions_refused_busy.load(), 0u);
  EXPECT_EQ(sessions().size(), 1u);
  // Below the limit a newcomer stays where it landed.
  ctx_->load[1].awaiting = 0;
  ctx_->stats.sessions_active -= 1;
  int silent = take();
  EXPECT_EQ(handed_.size(), 1u);
  EXPECT_EQ(ctx_->load[0].awaiting.load(), 1u);
  // At the limit with a silent session of its own, this worker makes room itself.
  int fresh = take();
  EXPECT_EQ(handed_.size(), 1u);
  EXPECT_EQ(ctx_->stats.sessions_evicted.load(), 1u);
  EXPECT_EQ(loop_.take_sent(silent), "");
  EXPECT_TRUE(ask(fresh, "HELLO ackxfer 2\n").starts_with("HELLO ackxfer 2 "));
  EXPECT_EQ(ctx_->load[0].awaiting.load(), 0u);
  // Every place held by a session that said HELLO, here and there: busy, and nothing handed.
  int late = take();
  EXPECT_TRUE(loop_.take_sent(late).starts_with("ERR - busy ")) << "nobody to make room";
  EXPECT_EQ(handed_.size(), 1u);
}

// The same for the limit on sessions that have not said HELLO: a newcomer that finds it on a
// worker holding none of them goes where one can make room.
TEST_F(ControlSessionTest, AtTheLimitWithoutHelloANewcomerGoesWhereASilentSessionCanMakeRoom) {
  make_receiver([](ReceiverOptions& o) { o.max_sessions = 100; });
  ctx_->max_sessions_awaiting_hello = 1;
  spread_over_two_workers();
  ctx_->load[1].awaiting = 1;  // worker 1 holds the one allowed
  ctx_->sessions_awaiting_hello += 1;
  ctx_->stats.sessions_active += 1;
  take();
  EXPECT_EQ(handed_, std::vector<unsigned>{1});
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->stats.sessions_refused_busy.load(), 0u);
  // Nobody anywhere to make room (a race: the other worker's went meanwhile, or this one's
  // count is stale): the newcomer is told busy, and why.
  ctx_->load[1].awaiting = 0;
  int late = take();
  EXPECT_EQ(handed_.size(), 1u);
  EXPECT_TRUE(
      loop_.take_sent(late).starts_with("ERR - busy the receiver holds its maximum of 1 "
                                        "connections that have not said HELLO"));
  EXPECT_EQ(ctx_->stats.sessions_refused_busy.load(), 1u);
  EXPECT_EQ(ctx_->sessions_awaiting_hello.load(), 1u) << "a refused session takes no place";
}

TEST_F(ControlSessionTest, EveryStateEndsByItsDeadline) {
  make_receiver([](ReceiverOptions& o) {
    o.idle_timeout = 5s;
    o.legacy = true;
  });
  int silent = session();  // never says HELLO
  int half = session();    // a line without its newline
  int active = session();  // HELLO, then nothing
  loop_.feed(half, "HELLO ackxfer");
  ask(active, "HELLO ackxfer 2\n");
  int holder = session();  // a legacy client with READY
  EXPECT_EQ(ask(holder, "SEND held.txt\n"), "READY");
  int waiter = session();  // queued behind it, same address
  loop_.feed(waiter, "SEND waits.txt\n");
  EXPECT_EQ(loop_.take_sent(waiter), "");
  // 5 s idle limit; legacy READY-holders have their own 30 s; plus the closing grace.
  loop_.advance(5'000 + kMaxClosingMs + 2'000);
  EXPECT_NE(loop_.take_sent(silent).find("ERR - timeout no HELLO"), std::string::npos);
  EXPECT_NE(loop_.take_sent(half).find("ERR - timeout no HELLO"), std::string::npos);
  EXPECT_NE(loop_.take_sent(active).find("ERR - timeout no activity"), std::string::npos);
  EXPECT_NE(loop_.take_sent(waiter).find("ERR - timeout"), std::string::npos);
  EXPECT_TRUE(sessions().empty());
}

// Repeating one MKDIR used to store it again each time (100,000 repeats: 400 MB, then a long
// stall of every other session on the worker at BYE).
TEST_F(ControlSessionTest, RepeatedMkdirIsKeptOnce) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  std::string lines;
  for (int i = 1; i <= 20'000; ++i)
    lines += "MKDIR " + std::to_string(i) + " same mode=0750 mtime=" + std::to_string(i) + ".0\n";
  std::string replies = ask(s, lines);
  EXPECT_EQ(count(replies, "\nOK "), 19'999u);
  ASSERT_EQ(sessions().size(), 1u);
  EXPECT_EQ(sessions()[0]->directories_kept(), 1u);
  ask(s, "BYE\n");
  struct stat st {};
  ASSERT_EQ(stat((dir_ / "same").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
  EXPECT_EQ(st.st_mtim.tv_sec, 20'000);  // the last one sent wins
}

// recv --fsync: each new directory's OK waits for its flush, holding a job and a directory fd.
// Those replies bypassed the reply backlog, so a peer pipelining MKDIRs behind a slow flush
// made the receiver hold one fd per directory, without limit. Its lines now wait at
// kMaxDurableRepliesPerSession, and every MKDIR is still answered once the flushes come.
std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

TEST_F(ControlSessionTest, WithFsyncMkdirsWaitingForTheirFlushAreBounded) {
  make_receiver([](ReceiverOptions& o) { o.fsync = true; });
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  ctx_->publisher->hold(true);
  const std::size_t before = open_fds();
  constexpr int kDirs = 2'000;
  std::string lines;
  for (int i = 1; i <= kDirs; ++i)
    lines += "MKDIR " + std::to_string(i) + " d" + std::to_string(i) + " mode=0755 mtime=1.0\n";
  std::string replies = ask(s, lines);
  EXPECT_EQ(count(replies, "OK "), 0u) << "nothing is flushed yet";
  EXPECT_LE(open_fds(), before + kMaxDurableRepliesPerSession + 8);
  ctx_->publisher->hold(false);
  ASSERT_TRUE(loop_.run_until([&] {
    replies += loop_.take_sent(s);
    return count(replies, "OK ") == static_cast<std::size_t>(kDirs);
  })) << count(replies, "OK ");
  EXPECT_TRUE(fs::is_directory(dir_ / ("d" + std::to_string(kDirs))));
}

// Each session keeps its directories' metadata (for BYE) within its own budget, and all of
// them together within the receiver's: many sessions each naming their 16 MiB of directories
// used to hold gigabytes between them. Beyond it, a new directory's mode and mtime are not
// kept (warned); the budget comes back when a session ends.
TEST_F(ControlSessionTest, DirectoryMetadataOfAllSessionsStaysWithinTheReceiversBudget) {
  ctx_->max_dir_metadata_bytes = 2'000;  // about eight short directories, with what they cost
  auto mkdirs = [&](int s, const std::string& prefix, int n) {
    std::string lines;
    for (int i = 1; i <= n; ++i)
      lines += "MKDIR " + std::to_string(i) + " " + prefix + std::to_string(i) +
               " mode=0750 mtime=7.0\n";
    return ask(s, lines);
  };
  int a = session();
  ask(a, "HELLO ackxfer 2\n");
  EXPECT_EQ(count(mkdirs(a, "a", 20), "OK "), 20u);  // every directory is made
  ASSERT_EQ(sessions().size(), 1u);
  const std::size_t kept_a = sessions()[0]->directories_kept();
  EXPECT_GE(kept_a, 5u);
  EXPECT_LT(kept_a, 20u);
  EXPECT_LE(ctx_->dir_metadata_bytes.load(), 2'000u);
  int b = session();
  ask(b, "HELLO ackxfer 2\n");
  EXPECT_EQ(count(mkdirs(b, "b", 3), "OK "), 3u);
  ASSERT_EQ(sessions().size(), 2u);
  EXPECT_EQ(sessions()[0]->directories_kept() + sessions()[1]->directories_kept(), kept_a)
      << "the receiver's budget is spent";
  EXPECT_TRUE(std::any_of(log_.begin(), log_.end(), [](const std::string& l) {
    return l.find("the mode and mtime of") != std::string::npos;
  }));
  // The first session ends: what it held comes back, and the second keeps its next ones.
  loop_.peer_closes(a);
  loop_.advance(kMaxClosingMs + 1'500);
  ASSERT_EQ(sessions().size(), 1u);
  EXPECT_EQ(count(ask(b, "MKDIR 9 b9 mode=0750 mtime=7.0\n"), "OK "), 1u);
  EXPECT_EQ(sessions()[0]->directories_kept(), 1u);
  loop_.peer_closes(b);
  loop_.advance(kMaxClosingMs + 1'500);
  EXPECT_EQ(ctx_->dir_metadata_bytes.load(), 0u);
}

// Directory metadata is applied after BYE in slices: another session is served in between
// instead of waiting for all of it.
TEST_F(ControlSessionTest, ByeAppliesDirectoryMetadataInSlicesWhileOthersAreServed) {
  EXPECT_TRUE(hello_answered_before_bye(3'000, 0));
}

// A turn ends after 64 lines or 5 ms, whichever comes first. Lines that each take a
// millisecond (here the fake clock moves 1 ms at every look; a real one through deep paths and
// in-tree links takes a few) used to run 64 to a turn while every other session on the worker
// waited; now a turn handles a few, and another session is answered in between. What one turn
// answers goes out in one send, so the largest send to the first session is its longest turn.
TEST_F(ControlSessionTest, SlowLinesEndTheirTurnWithinItsTimeBudget) {
  int a = session();
  ask(a, "HELLO ackxfer 2\n");
  int b = session();
  std::string lines;
  for (int i = 1; i <= 20; ++i)
    lines += "MKDIR " + std::to_string(i) + " d" + std::to_string(i) + " mode=0755 mtime=1.0\n";
  loop_.feed_later(a, lines);
  loop_.feed_later(b, "HELLO ackxfer 2\n");
  loop_.ms_per_clock_read = 1;
  loop_.run();
  loop_.ms_per_clock_read = 0;
  std::size_t hello_b = 0, last_a = 0, longest_turn = 0, answered = 0;
  const auto& log = loop_.send_log();
  for (std::size_t i = 0; i < log.size(); ++i) {
    if (log[i].first == b && log[i].second.starts_with("HELLO")) hello_b = i;
    if (log[i].first != a) continue;
    if (log[i].second.find("OK 20") != std::string::npos) last_a = i;
    longest_turn = std::max(longest_turn, count(log[i].second, "OK "));
    answered += count(log[i].second, "OK ");
  }
  ASSERT_GT(last_a, 0u);
  EXPECT_LT(hello_b, last_a);
  EXPECT_LE(longest_turn, 6u) << "lines answered in one turn";
  EXPECT_EQ(answered, 20u) << "every line answered in the end";
  loop_.advance(1'000);  // the clock moved 1 ms a look: deadlines have not passed
  EXPECT_EQ(sessions().size(), 2u);
}

// The same budget for the directory metadata applied after BYE, which resolves each path
// again: 100 slow directories used to be applied in one slice of up to 512, everyone else on
// the worker waiting; now the other session's HELLO is answered before the BYE.
TEST_F(ControlSessionTest, SlowDirectoryMetadataAfterByeEndsItsTurnWithinItsTimeBudget) {
  EXPECT_TRUE(hello_answered_before_bye(100, 1));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "d100").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1) << "every directory's metadata applied in the end";
}

TEST_F(ControlSessionTest, DeclaredChunksCostNothingUntilTheirBytesArrive) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  // The largest file a SEND may declare with the smallest chunks: 16,384 chunks each.
  std::string lines;
  for (std::size_t i = 1; i <= kInitialOpenFiles + 10; ++i)
    lines += "SEND " + std::to_string(i) + " f" + std::to_string(i) +
             " size=" + std::to_string(kMaxChunksPerFile * kMinChunkBytes) +
             " mode=0644 mtime=1.0 chunk=" + std::to_string(kMinChunkBytes) + "\n";
  std::string replies = ask(s, lines);
  EXPECT_EQ(count(replies, "READY "), kInitialOpenFiles);
  EXPECT_EQ(count(replies, "too-many-open"), 10u);
  EXPECT_EQ(ctx_->open_files.load(), kInitialOpenFiles);
  ASSERT_EQ(sessions().size(), 1u);
  EXPECT_EQ(sessions()[0]->open_file_count(), kInitialOpenFiles);
  ctx_->registry.size();
}

TEST_F(ControlSessionTest, BeyondTheReceiversOpenFileLimitSendIsBusyAndOtherSessionsGoOn) {
  ctx_->max_open_files = 3;
  int a = session();
  ask(a, "HELLO ackxfer 2\n");
  std::string r = ask(a,
                      "SEND 1 a1 size=5 mode=0644 mtime=1.0 chunk=65536\n"
                      "SEND 2 a2 size=5 mode=0644 mtime=1.0 chunk=65536\n"
                      "SEND 3 a3 size=5 mode=0644 mtime=1.0 chunk=65536\n"
                      "SEND 4 a4 size=5 mode=0644 mtime=1.0 chunk=65536\n");
  EXPECT_EQ(count(r, "READY "), 3u);
  EXPECT_NE(r.find("ERR 4 busy"), std::string::npos) << r;
  // Another session: MKDIR and LINK need no temp file and go on.
  int b = session();
  ask(b, "HELLO ackxfer 2\n");
  EXPECT_EQ(ask(b, "MKDIR 1 d mode=0755 mtime=1.0\n"), "OK 1\n");
  // A's session ends: its places come back.
  loop_.peer_closes(a);
  EXPECT_EQ(ctx_->open_files.load(), 0u);
  EXPECT_TRUE(ask(b, "SEND 2 b1 size=5 mode=0644 mtime=1.0 chunk=65536\n").starts_with("READY 2"));
}

// A skip=xxh3 check of a big file runs on the work queue in slices; the session tells the
// sender (PROGRESS) and counts as active meanwhile, however long the idle limit is.
TEST_F(ControlSessionTest, LongLocalWorkIsVisibleAsProgressAndKeepsTheSessionAlive) {
  make_receiver([](ReceiverOptions& o) { o.idle_timeout = 1s; });
  const std::uint64_t size = 2ull << 30;  // sparse: reads back as zeros, fast, but not instant
  {
    int fd = ::open((dir_ / "big").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
  }
  int s = session();
  ask(s, "HELLO ackxfer 2 features=progress\n");
  std::string digest(32, '0');  // not the file's: the check runs to the end and says "send it"
  loop_.feed(s, "SEND 1 big size=" + std::to_string(size) +
                    " mode=0644 mtime=1.0 chunk=8388608 skip=xxh3 xxh3=" + digest + "\n");
  std::string replies;
  bool ready = loop_.run_until(
      [&] {
        // The loop's clock runs five times as fast as the real work: the 1 s idle limit
        // passes many times over before the check is done.
        std::this_thread::sleep_for(10ms);
        loop_.advance(50);
        replies += loop_.take_sent(s);
        return replies.find("READY 1") != std::string::npos;
      },
      60'000);
  ASSERT_TRUE(ready) << replies;
  EXPECT_NE(replies.find("PROGRESS 1 done="), std::string::npos) << replies;
  EXPECT_EQ(replies.find("timeout"), std::string::npos) << replies;
}

// skip=xxh3 reads and hashes the receiver's copy; the same unchanged file is not read again.
// A peer repeating SEND ... skip=xxh3 and CANCEL (200 bytes a round) used to make the receiver
// read the whole file every time.
TEST_F(ControlSessionTest, AFileCheckedOnceIsNotReadAgainWhileUnchanged) {
  const std::string content(300'000, 'c');
  {
    std::ofstream out(dir_ / "f", std::ios::binary);
    out << content;
  }
  // Its ctime must be over a second old before it may be remembered (a write in the same
  // timestamp tick as the check would not show).
  std::this_thread::sleep_for(2100ms);
  std::string right;
  {
    int fd = ::open((dir_ / "f").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto d = file_digest_of(fd, content.size(), 65536);  // the chunk size below
    ::close(fd);
    ASSERT_TRUE(d);
    right = d->hex();
  }
  const std::string wrong(32, '0');
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  auto check = [&](int id, const std::string& digest) {
    return ask_and_wait(s, "SEND " + std::to_string(id) + " f size=300000 mode=0644 mtime=1.0 " +
                               "chunk=65536 skip=xxh3 xxh3=" + digest + "\n");
  };
  EXPECT_TRUE(check(1, wrong).starts_with("READY 1 ")) << "read and hashed: not the same";
  ask(s, "CANCEL 1\n");
  EXPECT_EQ(ctx_->stats.digests_remembered.load(), 0u);
  EXPECT_TRUE(check(2, wrong).starts_with("READY 2 "));
  EXPECT_EQ(ctx_->stats.digests_remembered.load(), 1u) << "answered without reading it again";
  ask(s, "CANCEL 2\n");
  EXPECT_EQ(check(3, right), "OK 3 skipped=1\n");
  EXPECT_EQ(ctx_->stats.digests_remembered.load(), 2u);
  // Changed since (ctime moves): read again.
  {
    std::ofstream out(dir_ / "f", std::ios::binary | std::ios::in);
    out << 'd';
  }
  EXPECT_TRUE(check(4, right).starts_with("READY 4 "));
  EXPECT_EQ(ctx_->stats.digests_remembered.load(), 2u);
}

// A DONE before READY (the receiver still checking its copy for skip=xxh3) is a line out of
// order, said about the session; the file goes on to its READY. It used to be answered
// `ERR 1 unknown-id` ("no open file has id 1"), a verdict for a file that was open.
TEST_F(ControlSessionTest, ADoneBeforeReadyIsABadLineAndTheFileGoesOn) {
  {
    std::ofstream out(dir_ / "f", std::ios::binary);
    out << std::string(300'000, 'c');
  }
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const std::string digest(32, '0');
  loop_.feed(s, "SEND 1 f size=300000 mode=0644 mtime=1.0 chunk=65536 skip=xxh3 xxh3=" + digest +
                    "\nDONE 1 xxh3=" + digest + "\n");
  std::string replies;
  ASSERT_TRUE(loop_.run_until([&] {
    replies += loop_.take_sent(s);
    return replies.find("READY 1 ") != std::string::npos;
  })) << replies;
  EXPECT_TRUE(replies.starts_with("ERR - bad-line DONE 1 before its READY; the file goes on\n"))
      << replies;
  EXPECT_EQ(ctx_->stats.protocol_errors.load(), 1u);
}

// The remembered digest is keyed by chunk size and ctime, so a peer varying `chunk=` (or
// moving the ctime with a skip=size-mtime chmod) missed it every round and made the receiver
// read the whole file again each time. Each version of a file (inode, size, mtime) is now read
// at most twice; then a check is answered READY (send the data) without reading, even when the
// digest it names is right.
TEST_F(ControlSessionTest, AFileIsReadForChecksAtMostTwiceWhateverTheChunkSizeOrMode) {
  const std::uint64_t size = 2 << 20;
  const std::string content(size, 'e');
  {
    std::ofstream out(dir_ / "f", std::ios::binary);
    out << content;
  }
  struct timespec times[2] = {{0, UTIME_OMIT}, {1, 0}};  // the mtime the SENDs below name
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ / "f").c_str(), times, 0), 0);
  auto digest = [&](std::uint64_t chunk) {
    int fd = ::open((dir_ / "f").c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    auto d = file_digest_of(fd, size, chunk);
    ::close(fd);
    return d ? d->hex() : std::string();
  };
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  auto check = [&](int id, std::uint64_t chunk, const std::string& how, const char* mode = "0644") {
    return ask_and_wait(s, "SEND " + std::to_string(id) + " f size=" + std::to_string(size) +
                               " mode=" + mode + " mtime=1.0 chunk=" + std::to_string(chunk) + " " +
                               how + "\n");
  };
  const std::string wrong = "skip=xxh3 xxh3=" + std::string(32, '0');
  EXPECT_TRUE(check(1, 65536, wrong).starts_with("READY 1 "));
  ask(s, "CANCEL 1\n");
  // The mode differs: skip=size-mtime brings it in line, and the ctime moves.
  EXPECT_EQ(check(2, 65536, "skip=size-mtime", "0600"), "OK 2 skipped=1\n");
  EXPECT_EQ(check(3, 65536, "skip=xxh3 xxh3=" + digest(65536)), "OK 3 skipped=1\n")
      << "read a second time";
  EXPECT_EQ(ctx_->stats.digest_reads_declined.load(), 0u);
  EXPECT_TRUE(check(4, 131072, "skip=xxh3 xxh3=" + digest(131072)).starts_with("READY 4 "))
      << "not read a third time, though the digest is right";
  ask(s, "CANCEL 4\n");
  EXPECT_EQ(ctx_->stats.digest_reads_declined.load(), 1u);
  // A new version (the mtime moves with a write) may be read again.
  {
    std::ofstream out(dir_ / "f", std::ios::binary | std::ios::in);
    out << 'e';
  }
  times[1] = {12345, 0};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ / "f").c_str(), times, 0), 0);
  EXPECT_EQ(check(5, 131072, "skip=xxh3 xxh3=" + digest(131072)), "OK 5 skipped=1\n");
  EXPECT_EQ(ctx_->stats.digest_reads_declined.load(), 1u);
}

// A session keeps its last parent directory open, for speed. A local user moving that
// directory out of --dir (or removing it) mid-session used to have every later file of the
// session written into it, wherever it went, or fail into the removed one on every retry. The
// directory is resolved again within a second.
TEST_F(ControlSessionTest, AParentDirectoryMovedAwayIsResolvedAgainWithinASecond) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  EXPECT_TRUE(ask(s, "LINK 1 a/one target=x mtime=1.0\n").starts_with("OK 1")) << "made";
  const fs::path away = dir_.string() + "-away";
  fs::rename(dir_ / "a", away);
  loop_.advance(1'500);
  EXPECT_TRUE(ask(s, "LINK 2 a/two target=x mtime=1.0\n").starts_with("OK 2"));
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir_ / "a/two")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(away / "two")));
  fs::remove_all(away);
}

TEST_F(ControlSessionTest, ASendNamedLikeTheReceiversTempFilesIsRefused) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  std::string part = partial_base_name("big") + ".part";
  std::string r = ask(s, "SEND 1 " + part +
                             " size=64 mode=0644 mtime=1.0 chunk=65536\n"
                             "LINK 2 sub/" +
                             part +
                             " target=x mtime=1.0\n"
                             "MKDIR 3 .ackxfer-x.journal mode=0755 mtime=1.0\n");
  EXPECT_NE(r.find("ERR 1 bad-path"), std::string::npos) << r;
  EXPECT_NE(r.find("ERR 2 bad-path"), std::string::npos) << r;
  EXPECT_NE(r.find("ERR 3 bad-path"), std::string::npos) << r;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}

// A name carrying a newline cannot forge a line in the receiver's log.
// A skip by size and mtime brings the mode in line with the sender's in place. Through a hard
// link, that changed a file outside --dir (a local user can link one in): such a file is sent
// instead, and publishing gives the name a file of its own; the other name keeps its mode.
TEST_F(ControlSessionTest, ASkipDoesNotChangeTheModeOfAFileThroughAHardLink) {
  const fs::path outside = dir_.string() + "-outside";
  {
    std::ofstream out(outside, std::ios::binary);
    out << "12345";
  }
  ASSERT_EQ(::chmod(outside.c_str(), 0600), 0);
  timespec times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, outside.c_str(), times, 0), 0);
  ASSERT_EQ(::link(outside.c_str(), (dir_ / "f").c_str()), 0);
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const std::string r = ask(s, "SEND 1 f size=5 mode=0644 mtime=1.0 chunk=65536 skip=size-mtime\n");
  EXPECT_TRUE(r.starts_with("READY 1 ")) << r;
  struct stat st {};
  ASSERT_EQ(::stat(outside.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  fs::remove(outside);
  // A file with one name is brought in line and skipped, as before.
  ASSERT_EQ(::unlink((dir_ / "f").c_str()), 0);
  {
    std::ofstream out(dir_ / "g", std::ios::binary);
    out << "12345";
  }
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ / "g").c_str(), times, 0), 0);
  EXPECT_EQ(ask(s, "SEND 2 g size=5 mode=0604 mtime=1.0 chunk=65536 skip=size-mtime\n"),
            "OK 2 skipped=1\n");
  ASSERT_EQ(::stat((dir_ / "g").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0604u);
}

// A name in a log line a peer can cause is cut short: a classic client's `SEND <name>` with a
// name too long for the path rule (the classic line has no escapes, and no line limit of its
// own before this check) used to be logged whole, up to four times its 33 KB escaped.
TEST_F(ControlSessionTest, ALongNameIsCutShortInTheLog) {
  make_receiver([](ReceiverOptions& o) { o.legacy = true; });
  int s = session();
  ask(s, "SEND " + std::string(5000, '\x01') + "\n");
  ASSERT_FALSE(warnings_.empty());
  EXPECT_LT(warnings_.back().size(), 2500u);
  EXPECT_NE(warnings_.back().find("(5000 bytes)"), std::string::npos) << warnings_.back();
}

TEST_F(ControlSessionTest, PeerNamesInTheLogAreEscaped) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  fs::create_directories(dir_ / "x\nackxfer-fast: error: FORGED");
  ask(s,
      "SEND 1 x\\x0aackxfer-fast:\\x20error:\\x20FORGED size=5 mode=0644 mtime=1.0 "
      "chunk=65536 skip=size-mtime\n");
  bool refused = false;
  for (const std::string& line : log_) {
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    refused = refused || line.find("refused") != std::string::npos;
  }
  EXPECT_TRUE(refused);
}

}  // namespace
}  // namespace ackxfer::test
