// ControlClient (the sender's control session) as a state machine on the loop test double:
// every phase has a deadline, a receiver cannot keep it waiting or answering nonsense, busy
// files wait before they go again, and the window follows the receiver's credit.
#include <condition_variable>
#include <mutex>
#include <thread>

#include "control_client_fixture.h"

namespace ackxfer::test {
namespace {

TEST_F(ControlClientTest, SaysHelloWithItsFeatures) {
  start();
  int fd = accept();
  EXPECT_EQ(loop_.take_sent(fd), "HELLO ackxfer 2 features=link,progress,credit\n");
}

// A receiver that accepts and never answers used to keep the sender waiting forever.
TEST_F(ControlClientTest, AReceiverThatNeverAnswersHelloTimesOutWithinRetryFor) {
  options_.retry_for = 2s;
  start();
  accept_and_wait(120'000);
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut);
  EXPECT_NE(report_.error.find("did not answer HELLO within"), std::string::npos) << report_.error;
}

TEST_F(ControlClientTest, AConnectThatNeverCompletesTimesOut) {
  options_.retry_for = 2s;
  start();
  for (std::int64_t t = 0; t < 120'000 && !client_->done(); t += 500)
    loop_.advance(500);  // connects stay pending: a black hole
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut);
  EXPECT_NE(report_.error.find("did not complete within"), std::string::npos) << report_.error;
}

// One that answers HELLO and then only READY for ids it was never asked about used to count
// as busy talking, forever.
TEST_F(ControlClientTest, ReadyForAnIdNeverSentIsAProtocolError) {
  start();
  int fd = accept();
  loop_.feed(fd, hello_reply());
  loop_.feed(fd, "READY 999 token=" + Token::random().hex() + "\n");
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kProtocolError);
  EXPECT_NE(report_.error.find("never sent"), std::string::npos) << report_.error;
}

// A receiver that goes silent (stopped, or its host gone) while it owes answers: the session
// counts as lost after --idle-timeout, and reconnecting is bounded by --retry-for.
TEST_F(ControlClientTest, ASilentReceiverIsLeftAfterIdleTimeoutAndRetryFor) {
  options_.retry_for = 2s;
  options_.idle_timeout = 3s;
  start();
  int fd = accept();
  loop_.feed(fd, hello_reply());
  EXPECT_GE(count_of(loop_.take_sent(fd), "SEND "), 3u);
  loop_.advance(4'000);  // nothing answered
  accept_and_wait(120'000);
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut);
  EXPECT_NE(report_.error.find("has not answered for 3 s"), std::string::npos) << report_.error;
  EXPECT_EQ(report_.failed.size(), 4u);  // the three files and their directory, each by name
}

TEST_F(ControlClientTest, PeerStringsFromTheReceiverAreMadePrintable) {
  start();
  int fd = accept();
  loop_.feed(fd, hello_reply());
  loop_.feed(fd, "ERR 2 permission-denied \x1b[31mred\x07 and a bell\n");
  ASSERT_EQ(report_.failed.size(), 1u);
  const std::string& why = report_.failed[0].reason;
  for (char c : why)
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << why;
  EXPECT_NE(why.find("\\x1b[31mred\\x07"), std::string::npos) << why;
}

// A directory whose MKDIR was lost with a session goes again on the next one; what the sender
// reports about it afterwards names it by its source path, as it did the first time (it used
// to name the re-sent one by its wire path).
TEST_F(ControlClientTest, ADirectoryLostWithItsSessionIsStillReportedByItsSourcePath) {
  options_.retry_for = 30s;
  listed_ = std::make_unique<ListedEntries>(std::vector<SourceEntry>{
      directory_entry("/data/src/a", "a"), directory_entry("/data/src/b", "b")});
  start();
  int fd = accept();
  loop_.feed(fd, hello_reply());
  EXPECT_EQ(count_of(loop_.take_sent(fd), "MKDIR "), 2u);
  loop_.peer_closes(fd);  // lost before either was answered
  int again = reconnected();
  ASSERT_GE(again, 0);
  std::string sent = loop_.take_sent(again);
  ASSERT_EQ(count_of(sent, "MKDIR "), 2u) << sent;
  // The first re-sent MKDIR is refused; the session is then lost for good with the second.
  std::size_t id_at = sent.find("MKDIR ") + 6;
  std::string id = sent.substr(id_at, sent.find(' ', id_at) - id_at);
  loop_.feed(again, "ERR " + id + " permission-denied no\n");
  loop_.peer_closes(again);
  for (std::int64_t t = 0; t < 120'000 && !client_->done(); t += 500)
    loop_.advance(500);  // and nothing accepts any more: --retry-for runs out
  ASSERT_TRUE(client_->done());
  std::set<std::string> named;
  for (const auto& f : report_.failed)
    named.insert(f.path);
  EXPECT_EQ(named, (std::set<std::string>{"/data/src/a", "/data/src/b"}));
}

// A file READY'd in a session lost before its verdict, and found there, identical, when the
// next session offers it again: the lost session's bytes were published (a one-chunk file is
// as soon as its frame verifies), so it counts as delivered. It used to count as "unchanged",
// as if it had been there before the run. A file that was never READY'd still counts so.
TEST_F(ControlClientTest, AFileReadiedBeforeALostSessionAndSkippedAfterItCountsAsDelivered) {
  options_.retry_for = 30s;
  listed_ = std::make_unique<ListedEntries>(
      std::vector<SourceEntry>{temp_file("readied", 10), temp_file("unanswered", 10)});
  start();
  int fd = accept();
  loop_.feed(fd, hello_reply());
  std::string sent = loop_.take_sent(fd);
  EXPECT_EQ(count_of(sent, "SEND "), 2u) << sent;
  loop_.feed(fd, "READY 1 token=" + Token::random().hex() + "\n");
  loop_.peer_closes(fd);  // lost: the READY'd file's ack never comes
  int again = reconnected();
  ASSERT_GE(again, 0);
  sent = loop_.take_sent(again);
  ASSERT_EQ(count_of(sent, "SEND "), 2u) << sent;
  EXPECT_EQ(count_of(sent, "skip=never"), 0u) << sent;  // still first attempts: may be skipped
  loop_.feed(again, "OK 3 skipped=1\nOK 4 skipped=1\n");
  loop_.run();
  EXPECT_EQ(report_.files, 1u);
  EXPECT_EQ(report_.unchanged, 1u);
  EXPECT_TRUE(report_.failed.empty());
}

// `busy` (the receiver is out of room for open files just now): the file goes again after a
// delay, not at once, and without spending one of its attempts.
TEST_F(ControlClientTest, ABusyFileWaitsBeforeItGoesAgain) {
  start(1);
  int fd = accept();
  loop_.feed(fd, hello_reply());
  std::string sent = loop_.take_sent(fd);
  ASSERT_NE(sent.find("SEND 2 tree/f0 "), std::string::npos) << sent;
  loop_.feed(fd, "ERR 2 busy the receiver has its maximum of files open\n");
  EXPECT_EQ(count_of(loop_.take_sent(fd), "SEND "), 0u);
  loop_.advance(2'000);
  EXPECT_EQ(count_of(loop_.take_sent(fd), "SEND 3 tree/f0 "), 1u);
  EXPECT_TRUE(report_.failed.empty());
}

// A receiver that answers every SEND with busy (an honest one at its open-file budget does):
// the files waiting to go again keep their places in the window, so the walk does not go on
// past them, holding the whole tree (a path and a directory fd per file) in memory.
TEST_F(ControlClientTest, FilesWaitingOutABusyReceiverKeepTheirPlacesInTheWindow) {
  start(500);
  int fd = accept();
  loop_.feed(fd, hello_reply(64));
  std::set<std::string> paths;
  for (int t = 0; t < 40; ++t) {
    for (auto& p : answer_sends_busy(fd))
      paths.insert(p);
    loop_.advance(500);
  }
  EXPECT_LE(paths.size(), 64u) << "the walk went on past the window";
  EXPECT_GE(paths.size(), 63u);  // the window's worth (one place is the directory's MKDIR)
  EXPECT_TRUE(report_.failed.empty());
}

// A receiver that never answers a SEND but sends a CREDIT line, or a PROGRESS that does not
// move, every second: neither is an answer, and the session is lost at --idle-timeout (and then
// --retry-for ends it) instead of lasting as long as the receiver likes.
TEST_F(ControlClientTest, CreditAndProgressThatDoesNotMoveAreNoAnswer) {
  options_.retry_for = 2s;
  options_.idle_timeout = 3s;
  start(1);
  int fd = accept();
  loop_.feed(fd, hello_reply());
  ASSERT_NE(loop_.take_sent(fd).find("SEND 2 tree/f0 "), std::string::npos);
  loop_.feed(fd, "OK 1\n");  // the directory
  // Fed while the session reads its connection (a later connection may get the same fd).
  bool lost = false;
  for (std::int64_t t = 0; t < 60'000 && !client_->done(); t += 500) {
    lost = lost || (loop_.pending(FakeLoop::Kind::kRecv, fd) == 0 &&
                    loop_.pending(FakeLoop::Kind::kRecvMultishot, fd) == 0);
    if (t % 1'000 == 0 && !lost) loop_.feed(fd, "CREDIT open=64\nPROGRESS 2 done=0 total=5\n");
    if (loop_.fd_of(FakeLoop::Kind::kConnect) >= 0) {
      lost = true;
      accept();
    }
    loop_.advance(500);
  }
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut) << report_.error;
  EXPECT_NE(report_.error.find("has not answered for 3 s"), std::string::npos) << report_.error;
}

// PROGRESS that moves is an answer: the receiver is checking or flushing the file.
TEST_F(ControlClientTest, ProgressThatMovesIsAnAnswer) {
  options_.idle_timeout = 3s;
  start(1, 1'000'000);
  int fd = accept();
  loop_.feed(fd, hello_reply());
  loop_.feed(fd, "OK 1\n");
  for (int s = 1; s <= 10; ++s) {
    loop_.feed(fd, "PROGRESS 2 done=" + std::to_string(s * 1'000) + " total=1000000\n");
    loop_.advance(1'000);
  }
  EXPECT_FALSE(client_->done()) << report_.error;
}

// The receiver's own work on a file (checking it before READY, reading a resumed file's kept
// chunks back or flushing it after DONE) is what the progress figures show while the sender
// has nothing left to send: a big resumed file used to sit at 100% with no sign of it. Only
// while that work lasts: not between READY and DONE, not after the verdict.
TEST_F(ControlClientTest, TheReceiversOwnWorkShowsInProgressWhileItLasts) {
  int fd = one_file_session(2);
  const std::string id = next_send_id(fd);
  using Work = std::pair<std::uint64_t, std::uint64_t>;
  auto work = [this] {
    return Work(ctx_->receiver_work_done.load(), ctx_->receiver_work_total.load());
  };
  loop_.feed(fd, "PROGRESS " + id + " done=1000 total=131072\n");  // checking it
  EXPECT_EQ(work(), Work(1000, 131072));
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  EXPECT_EQ(work(), Work(0, 0));
  loop_.feed(fd, "PROGRESS " + id + " done=5 total=131072\n");  // ignored: bytes on their way
  EXPECT_EQ(work(), Work(0, 0));
  ack_every_chunk();
  ASSERT_NE(loop_.take_sent(fd).find("DONE " + id + " "), std::string::npos);
  loop_.feed(fd, "PROGRESS " + id + " done=65536 total=131072\n");  // reading it back
  EXPECT_EQ(work(), Work(65536, 131072));
  loop_.feed(fd, "PROGRESS " + id + " done=131072 total=131072\n");
  EXPECT_EQ(work(), Work(131072, 131072));
  loop_.feed(fd, "OK " + id + "\n");
  EXPECT_EQ(report_.files, 1u);
  EXPECT_EQ(work(), Work(0, 0));
}

// How far the transfer has come counts each byte once: chunks acknowledged in an attempt lost
// with its session count again only as the next attempt settles them (resumed, here), and a
// delivered file counts by its size alone. Bytes sent used to be added to resumed bytes over
// every attempt, and a big file on a flapping link showed 100% long before it was there.
TEST_F(ControlClientTest, TransferProgressCountsEachByteOnceAcrossAttempts) {
  options_.retry_for = 30s;
  int fd = one_file_session(3);
  std::string id = next_send_id(fd);
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  auto first = ctx_->scheduler->next(nullptr);
  ASSERT_TRUE(first);
  ctx_->scheduler->acked(*first, Digest128{});
  EXPECT_EQ(ctx_->scheduler->settled_in_flight(), kMinChunkBytes);
  loop_.peer_closes(fd);
  EXPECT_EQ(ctx_->scheduler->settled_in_flight(), 0u);
  int again = reconnected();
  ASSERT_GE(again, 0);
  id = next_send_id(again);
  ASSERT_FALSE(id.empty());
  loop_.feed(again, "READY " + id + " token=" + Token::random().hex() + " have=0\n");
  ack_every_chunk();  // the kept chunk hashed here, the other two sent
  EXPECT_EQ(ctx_->scheduler->settled_in_flight(), 3 * kMinChunkBytes);
  ASSERT_NE(loop_.take_sent(again).find("DONE " + id + " "), std::string::npos);
  loop_.feed(again, "OK " + id + "\n");
  EXPECT_EQ(report_.files, 1u);
  EXPECT_EQ(ctx_->scheduler->settled_in_flight(), 0u);
  EXPECT_EQ(ctx_->bytes_done.load(), 3 * kMinChunkBytes);
}

// Nor does it outlast the session it was reported in, or a file that failed.
TEST_F(ControlClientTest, TheReceiversOwnWorkGoesWithALostSessionOrAFailedFile) {
  options_.retry_for = 30s;
  int fd = one_file_session(2);
  std::string id = next_send_id(fd);
  loop_.feed(fd, "PROGRESS " + id + " done=1000 total=131072\n");
  EXPECT_EQ(ctx_->receiver_work_total.load(), 131072u);
  loop_.peer_closes(fd);
  EXPECT_EQ(ctx_->receiver_work_done.load(), 0u);
  EXPECT_EQ(ctx_->receiver_work_total.load(), 0u);
  int again = reconnected();
  ASSERT_GE(again, 0);
  loop_.feed(again, "OK 1\n");  // the directory, made again
  id = next_send_id(again);
  ASSERT_FALSE(id.empty());
  loop_.feed(again, "PROGRESS " + id + " done=7 total=131072\n");
  EXPECT_EQ(ctx_->receiver_work_done.load(), 7u);
  loop_.feed(again, "ERR " + id + " io-error the disk\n");
  EXPECT_EQ(ctx_->receiver_work_done.load(), 0u);
  EXPECT_EQ(ctx_->receiver_work_total.load(), 0u);
}

// A door a work-queue job waits at until the test opens it (and that opens when it goes, so
// that no job is left waiting when the queue stops).
class Gate {
 public:
  ~Gate() { open(); }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // A job that says it has started, then waits until the gate opens.
  std::function<bool()> job() {
    return [this] {
      std::unique_lock lock(mu_);
      started_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return open_; });
      return false;
    };
  }
  bool wait_started() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [this] { return started_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false, started_ = false;
};

// --checksum hashes a file whole before naming it: the progress figures show that while it
// lasts (the line used to sit at 0 B/s however big the file), and drop it once the file is
// named or its session lost.
TEST_F(ControlClientTest, HashingForChecksumShowsInProgressWhileItLasts) {
  options_.checksum = true;
  options_.retry_for = 30s;
  const std::uint64_t size = 24 << 20;  // two of the hashing's 16 MiB slices
  listed_ = std::make_unique<ListedEntries>(std::vector<SourceEntry>{temp_file("big", size)});
  using Work = std::pair<std::uint64_t, std::uint64_t>;
  auto work = [this] {
    return Work(ctx_->local_check_done.load(), ctx_->local_check_total.load());
  };
  // The work queue's one thread is held before the hashing, and again between its slices.
  Gate before, between, again;
  start();
  // However the test ends, no job outlives the gates it waits at: opened, then the queue
  // stopped (it drops what has not started) before they go.
  struct StopFirst {
    std::function<void()> stop;
    ~StopFirst() { stop(); }
  } stop_first{[&] {
    for (Gate* g : {&before, &between, &again})
      g->open();
    ctx_->work.stop();
  }};
  ctx_->work.submit(before.job());
  int fd = accept();
  loop_.feed(fd, hello_reply());
  EXPECT_EQ(work(), Work(0, size));
  ctx_->work.submit(between.job());
  before.open();
  ASSERT_TRUE(between.wait_started());  // the first slice is hashed
  loop_.advance(1'000);
  EXPECT_EQ(work(), Work(16 << 20, size));
  between.open();
  std::string sent;
  for (int i = 0; i < 1'000 && sent.find("SEND 1 big ") == std::string::npos; ++i) {
    std::this_thread::sleep_for(10ms);
    loop_.run();
    sent += loop_.take_sent(fd);
  }
  ASSERT_NE(sent.find("SEND 1 big "), std::string::npos) << sent;
  EXPECT_EQ(work(), Work(0, 0));
  // Lost while it is hashed again for the next session: it goes with the session.
  ctx_->work.submit(again.job());
  ASSERT_TRUE(again.wait_started());
  loop_.peer_closes(fd);
  int next = reconnected();
  ASSERT_GE(next, 0);
  EXPECT_EQ(work(), Work(0, size));
  loop_.peer_closes(next);
  EXPECT_EQ(work(), Work(0, 0));
  again.open();
}

// A receiver that answers busy to every file (its open-file budget held by others, or by
// nobody at all) for longer than --idle-timeout, delivering nothing meanwhile: the session ends
// then, instead of each window of files waiting out its own --idle-timeout in turn.
TEST_F(ControlClientTest, AReceiverBusyForEverythingEndsTheSessionAtTheIdleTimeout) {
  options_.idle_timeout = 3s;
  int fd = established(500);
  const std::int64_t start = loop_.now_ms();
  for (std::int64_t t = 0; t < 30'000 && !client_->done(); t += 500) {
    answer_sends_busy(fd);
    loop_.advance(500);
  }
  ASSERT_TRUE(client_->done());
  EXPECT_LT(loop_.now_ms() - start, 6'000);
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut);
  EXPECT_NE(report_.error.find("answered busy for 3 s"), std::string::npos) << report_.error;
  EXPECT_EQ(report_.failed.size(), 64u);  // the window's files, each named
}

// But while chunks of another file are acknowledged (a large file on its way, the receiver busy
// for new files because other sessions hold its open-file budget), the transfer goes on: only
// the files that stayed busy fail.
TEST_F(ControlClientTest, BusyFilesBesideAFileOnItsWayFailAloneAfterTheIdleTimeout) {
  options_.idle_timeout = 3s;
  int fd = established(500);
  for (std::int64_t t = 0; t < 10'000; t += 500) {
    answer_sends_busy(fd);
    ctx_->last_ack_ms = loop_.now_ms();  // another file's chunks are acknowledged
    loop_.advance(500);
  }
  EXPECT_FALSE(client_->done()) << report_.error;
  EXPECT_GE(report_.failed.size(), 64u);  // each busy file, after its own --idle-timeout
}

// With encryption, a HELLO (and anything but a refusal) in plain text where the TLS handshake
// should answer is someone on the path: with --no-encryption it used to be taken, as a
// receiver agreeing to data in clear, and the session went on without any TLS at all.
void expect_plain_hello_refused(FakeLoop& loop, SendReport& report, ControlClient& client, int fd,
                                bool plain_data) {
  loop.feed(fd, "HELLO ackxfer 2 data-port=9 max-open=64 features=link,progress,credit" +
                    std::string(plain_data ? " data=plain" : "") +
                    "\nREADY 2 token=" + Token::random().hex() + "\n");
  ASSERT_TRUE(client.done());
  EXPECT_EQ(report.outcome, SendReport::Outcome::kAuthFailed) << report.error;
  EXPECT_NE(report.error.find("plain text, outside the TLS"), std::string::npos) << report.error;
  EXPECT_EQ(report.files, 0u);
}

TEST_F(ControlClientTest, APlainTextHelloWhereTlsShouldAnswerIsRefusedWithNoEncryption) {
  options_.no_encryption = true;
  start_with_tls_ = true;
  start(2);
  expect_plain_hello_refused(loop_, report_, *client_, accept(), true);
}

TEST_F(ControlClientTest, APlainTextHelloWhereTlsShouldAnswerIsRefused) {
  start_with_tls_ = true;
  start(2);
  expect_plain_hello_refused(loop_, report_, *client_, accept(), false);
}

// A receiver that claims, in READY, to hold the only chunk of a one-chunk file (which is never
// kept partly) would have it counted as delivered with no byte sent and no verdict.
TEST_F(ControlClientTest, ReadyClaimingTheOnlyChunkOfAFileIsAProtocolError) {
  start(1);
  int fd = accept();
  loop_.feed(fd, hello_reply());
  loop_.feed(fd, "OK 1\n");
  loop_.feed(fd, "READY 2 token=" + Token::random().hex() + " have=0\n");
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kProtocolError);
  EXPECT_NE(report_.error.find("claimed to hold the only chunk"), std::string::npos)
      << report_.error;
  EXPECT_EQ(report_.files, 0u);
}

// `OK <id> skipped=1` answers a SEND that let the receiver skip the file, instead of READY.
// After READY, or for a SEND that said skip=never (--force, a re-send, generated files), it
// would pass off whatever is there as the file.
TEST_F(ControlClientTest, ASkipTheSenderDidNotAllowIsAProtocolError) {
  options_.force = true;
  start(1);
  int fd = accept();
  loop_.feed(fd, hello_reply());
  loop_.feed(fd, "OK 1\n");
  ASSERT_NE(loop_.take_sent(fd).find("SEND 2 tree/f0 "), std::string::npos);
  loop_.feed(fd, "OK 2 skipped=1\n");
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kProtocolError);
  EXPECT_NE(report_.error.find("did not let it skip"), std::string::npos) << report_.error;
  EXPECT_EQ(report_.unchanged, 0u);
}

// OK answers DONE. A receiver that says OK for a file of several chunks before DONE (here right
// after READY) vouches for bytes it cannot have had: a protocol error, not a delivered file.
TEST_F(ControlClientTest, AnOkBeforeDoneIsAProtocolError) {
  start(1, 3 * kDefaultChunkBytes);
  int fd = accept();
  loop_.feed(fd, hello_reply());
  loop_.feed(fd, "OK 1\n");  // the directory: MKDIR's answer
  ASSERT_NE(loop_.take_sent(fd).find("SEND 2 tree/f0 "), std::string::npos);
  loop_.feed(fd, "READY 2 token=" + Token::random().hex() + "\n");
  EXPECT_EQ(ctx_->scheduler->queued(), 3u);
  loop_.feed(fd, "OK 2\n");
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kProtocolError);
  EXPECT_NE(report_.error.find("before this sender sent DONE"), std::string::npos) << report_.error;
  EXPECT_EQ(report_.files, 0u);
  EXPECT_EQ(report_.failed.size(), 1u);
}

TEST_F(ControlClientTest, TheWindowFollowsTheReceiversCredit) {
  start(500);
  int fd = accept();
  loop_.feed(fd, hello_reply(64));
  std::string sent = loop_.take_sent(fd);
  EXPECT_EQ(count_of(sent, "SEND ") + count_of(sent, "MKDIR "), 64u);
  EXPECT_EQ(client_->window(), 64u);
  loop_.feed(fd, "CREDIT open=100\n");
  EXPECT_EQ(client_->window(), 100u);
  sent = loop_.take_sent(fd);
  EXPECT_EQ(count_of(sent, "SEND ") + count_of(sent, "MKDIR "), 36u);
}

// CREDIT and PROGRESS from a receiver that did not agree on them in HELLO: a protocol error
// naming the feature. (A CREDIT used to widen the window all the same, up to 2,048 files.)
class NotAgreedTest : public ControlClientTest {
 protected:
  void expect_refused(const std::string& features, const std::string& line,
                      const std::string& feature) {
    start(500);
    int fd = accept();
    loop_.feed(fd, hello_reply(64, features));
    loop_.take_sent(fd);
    loop_.feed(fd, line);
    EXPECT_EQ(report_.outcome, SendReport::Outcome::kProtocolError) << report_.error;
    EXPECT_NE(report_.error.find("feature '" + feature + "'"), std::string::npos) << report_.error;
    EXPECT_EQ(client_->window(), 64u);
  }
};

TEST_F(NotAgreedTest, CreditNotAgreedOnInHelloIsAProtocolError) {
  expect_refused("link,progress", "CREDIT open=100\n", "credit");
}

TEST_F(NotAgreedTest, ProgressNotAgreedOnInHelloIsAProtocolError) {
  expect_refused("link,credit", "PROGRESS 1 done=1 total=5\n", "progress");
}

TEST_F(ControlClientTest, AReceiverWithoutFeaturesGetsNoProgressLinesAndNoLinks) {
  start();
  int fd = accept();
  loop_.feed(fd, "HELLO ackxfer 2 data-port=9 max-open=2048\n");
  EXPECT_EQ(loop_.take_sent(fd).find("PROGRESS"), std::string::npos);
  EXPECT_EQ(client_->window(), kMaxOpenFilesPerSession);
}

}  // namespace
}  // namespace ackxfer::test
