// ControlClient against receivers that break their promises: answers that look right but are
// not (a READY with a token of zeros, PROGRESS while no byte moves, DONE never answered, every
// frame busy). Each must end in a verdict within the sender's deadlines, and never in a file
// counted delivered that the receiver did not prove it holds.
#include "control_client_fixture.h"

namespace ackxfer::test {
namespace {

class ClientHostileTest : public ControlClientTest {
 protected:
  // A session sending one 5-byte file, its directory made, gets `line`: a protocol error
  // whose message says `why`.
  void expect_refused_after(const std::string& line, const std::string& why) {
    start(1, 5);
    int fd = accept();
    loop_.feed(fd, hello_reply());
    loop_.feed(fd, "OK 1\n" + line);
    ASSERT_TRUE(client_->done());
    EXPECT_EQ(report_.outcome, SendReport::Outcome::kProtocolError);
    EXPECT_NE(report_.error.find(why), std::string::npos) << report_.error;
  }
};

// The sender told "READY for the first time" by the token not being all zeros, and a receiver
// may send any token: a READY of zeros, repeated, queued every chunk of the file again each
// time (one 50-byte line: up to 16,384 queued jobs), and its file was re-sent without end.
TEST_F(ClientHostileTest, AReadyWithATokenOfZerosIsStillTakenOnce) {
  int fd = one_file_session(3);
  const std::string id = next_send_id(fd);
  ASSERT_FALSE(id.empty());
  const std::string zeros(Token::random().hex().size(), '0');
  std::string lines;
  for (int i = 0; i < 100; ++i)
    lines += "READY " + id + " token=" + zeros + "\n";
  loop_.feed(fd, lines);
  EXPECT_EQ(ctx_->scheduler->queued(), 3u);
  EXPECT_FALSE(client_->done()) << report_.error;
}

// Every chunk acknowledged counts as progress (and a receiver holding them all answers READY
// with have= for the whole file, costing it nothing). One that then never answers DONE kept
// the sender going round for ever: a session lost at each --idle-timeout, a new one, the
// retry budget reset by the acks. After kMaxFileAttempts such sessions the file fails.
TEST_F(ClientHostileTest, AReceiverThatNeverAnswersDoneFailsTheFileAfterSoManySessions) {
  options_.idle_timeout = 2s;
  options_.retry_for = 60s;
  int fd = one_file_session(2);
  int dones = 0;
  for (int session = 0; session < 10 && report_.failed.empty(); ++session) {
    const std::string id = next_send_id(fd);
    ASSERT_FALSE(id.empty()) << "session " << session;
    loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
    ack_every_chunk();
    ASSERT_NE(loop_.take_sent(fd).find("DONE " + id + " "), std::string::npos);
    ++dones;
    loop_.advance(2'500);  // no verdict: lost at --idle-timeout
    if (!report_.failed.empty()) break;
    fd = reconnected();
    ASSERT_GE(fd, 0);
  }
  EXPECT_EQ(dones, kMaxFileAttempts);
  ASSERT_EQ(report_.failed.size(), 1u);
  EXPECT_NE(report_.failed[0].reason.find("never gave its verdict"), std::string::npos)
      << report_.failed[0].reason;
  EXPECT_EQ(report_.files, 0u);
}

// But a session lost once while DONE waits (a cut connection) costs the file nothing: it goes
// again, may be skipped, and counts as delivered.
TEST_F(ClientHostileTest, ADoneLostWithItsSessionOnceIsNoFailure) {
  options_.chunk_bytes = kMinChunkBytes;
  options_.retry_for = 30s;
  listed_ =
      std::make_unique<ListedEntries>(std::vector<SourceEntry>{temp_file("f", 2 * kMinChunkBytes)});
  start();
  int fd = accept();
  loop_.feed(fd, hello_reply());
  std::string id = next_send_id(fd);
  ASSERT_FALSE(id.empty());
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  ack_every_chunk();
  loop_.peer_closes(fd);
  fd = reconnected();
  ASSERT_GE(fd, 0);
  std::string sent = loop_.take_sent(fd);
  ASSERT_NE(sent.find("SEND "), std::string::npos) << sent;
  EXPECT_EQ(sent.find("skip=never"), std::string::npos) << sent;
  const auto p = sent.find("SEND ") + 5;
  id = sent.substr(p, sent.find(' ', p) - p);
  loop_.feed(fd, "OK " + id + " skipped=1\n");
  EXPECT_EQ(report_.files, 1u);
  EXPECT_TRUE(report_.failed.empty()) << report_.failed[0].reason;
}

// PROGRESS is the receiver saying it works on a file alone (checking it, reading back its
// partial, flushing it). Between READY and DONE the file's bytes are on their way: PROGRESS
// there, rising each second while the receiver reads no data, held the sender for ever.
TEST_F(ClientHostileTest, ProgressBetweenReadyAndDoneIsNoAnswer) {
  options_.idle_timeout = 3s;
  options_.retry_for = 1s;
  int fd = one_file_session(2);
  const std::string id = next_send_id(fd);
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  bool lost = false;
  for (int s = 1; s <= 60 && !client_->done(); ++s) {
    lost = lost || (loop_.pending(FakeLoop::Kind::kRecv, fd) == 0 &&
                    loop_.pending(FakeLoop::Kind::kRecvMultishot, fd) == 0);
    if (!lost) loop_.feed(fd, "PROGRESS " + id + " done=" + std::to_string(s) + " total=131072\n");
    if (loop_.fd_of(FakeLoop::Kind::kConnect) >= 0) {
      lost = true;
      accept();
    }
    loop_.advance(1'000);
  }
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut) << report_.error;
}

TEST_F(ClientHostileTest, ProgressBeyondItsTotalIsAProtocolError) {
  expect_refused_after("PROGRESS 2 done=6 total=5\n", "progress of 6 of 5 bytes");
}

TEST_F(ClientHostileTest, ProgressOnMoreBytesThanTheFileHasIsAProtocolError) {
  expect_refused_after("PROGRESS 2 done=1 total=6\n", "a file of 5");
}

// A flush (--fsync) after DONE is reported as done=total each second: the first counts, even
// when a check before READY had reported the same figures.
TEST_F(ClientHostileTest, AFlushAfterACheckStillCountsOnce) {
  options_.idle_timeout = 3s;
  int fd = one_file_session(2);
  const std::string id = next_send_id(fd);
  const std::string whole = " done=131072 total=131072\n";
  loop_.feed(fd, "PROGRESS " + id + whole);  // checked: not the same
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  ack_every_chunk();  // DONE goes: its answer is owed from now
  loop_.advance(2'500);
  loop_.feed(fd, "PROGRESS " + id + whole);  // flushing: an answer
  loop_.advance(2'500);
  EXPECT_EQ(ctx_->reconnects.load(), 0u) << "the flush's first report counted";
  loop_.feed(fd, "PROGRESS " + id + whole);  // the same again: no answer
  loop_.advance(1'000);
  EXPECT_EQ(ctx_->reconnects.load(), 1u) << "lost at --idle-timeout after the first report";
}

// A receiver that READYs every file and answers each of its frames busy: each chunk gave up
// after --idle-timeout and its file went again, READY came again (an answer), so the sender
// took as many --idle-timeouts as the tree has windows of files, times three. Busy acks are
// no answer now, and the first file given up that way with nothing delivered ends it.
TEST_F(ClientHostileTest, AReceiverBusyForEveryFrameEndsTheSessionAtTheIdleTimeout) {
  options_.idle_timeout = 3s;
  int fd = established(500);
  std::string sent = loop_.take_sent(fd);
  std::string lines;
  for (std::size_t p = sent.find("SEND "); p != std::string::npos; p = sent.find("SEND ", p + 1))
    lines += "READY " + sent.substr(p + 5, sent.find(' ', p + 5) - p - 5) +
             " token=" + Token::random().hex() + "\n";
  loop_.feed(fd, lines);
  const std::int64_t since = loop_.now_ms();
  auto job = ctx_->scheduler->next(nullptr);
  ASSERT_TRUE(job);
  loop_.advance(3'100);
  ctx_->scheduler->fail(*job, "the receiver kept a chunk busy for longer than --idle-timeout", true,
                        since);
  loop_.run();
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kTimedOut) << report_.error;
  EXPECT_NE(report_.error.find("answered busy to the data"), std::string::npos) << report_.error;
}

// While another file's chunks are acknowledged, a file whose chunk stayed busy only goes again.
TEST_F(ClientHostileTest, ABusyChunkBesideAcknowledgedOnesFailsOnlyItsFile) {
  options_.idle_timeout = 3s;
  int fd = established(2);
  std::string id = next_send_id(fd);
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  const std::int64_t since = loop_.now_ms();
  auto job = ctx_->scheduler->next(nullptr);
  ASSERT_TRUE(job);
  loop_.advance(1'000);
  ctx_->last_ack_ms = loop_.now_ms();  // another file's chunk acknowledged
  loop_.advance(2'100);
  ctx_->scheduler->fail(*job, "the receiver kept a chunk busy for longer than --idle-timeout", true,
                        since);
  loop_.run();
  EXPECT_FALSE(client_->done()) << report_.error;
  EXPECT_NE(loop_.take_sent(fd).find("SEND "), std::string::npos) << "it goes again";
}

// After BYE every file has its verdict. A receiver that then closes its data port (every
// stream gives up) used to turn a whole, verified transfer into exit 8 "interrupted".
TEST_F(ClientHostileTest, DataConnectionsLostAfterByeAreNoFailure) {
  int fd = established(1);
  const std::string id = next_send_id(fd);
  loop_.feed(fd, "READY " + id + " token=" + Token::random().hex() + "\n");
  while (auto job = ctx_->scheduler->next(nullptr))
    ctx_->scheduler->acked(*job, Digest128{});  // `published`: a one-chunk file
  loop_.run();
  ASSERT_NE(loop_.take_sent(fd).find("BYE"), std::string::npos);
  client_->stream_gave_up("connection refused");
  loop_.advance(3'000);  // well past the grace the control connection has to say why
  EXPECT_FALSE(client_->done()) << report_.error;
  loop_.feed(fd, "BYE files=1 bytes=5\n");
  ASSERT_TRUE(client_->done());
  EXPECT_EQ(report_.outcome, SendReport::Outcome::kOk) << report_.error;
  EXPECT_EQ(report_.files, 1u);
}

}  // namespace
}  // namespace ackxfer::test
