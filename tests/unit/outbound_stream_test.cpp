// OutboundStream (one sender data connection) on the loop test double: a chunk the receiver
// calls busy backs off before it goes again, and gives up after the idle timeout.
#include <gtest/gtest.h>
#include <unistd.h>

#include "fake_loop.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "sender/control_client.h"
#include "sender/outbound_stream.h"
#include "sender/sender_context.h"

namespace ackxfer::test {
namespace {

using namespace std::chrono_literals;

class OutboundStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.idle_timeout = 5s;
    ctx_ = std::make_unique<SenderContext>(options_);
    ctx_->loops = {&loop_};
    ctx_->live_objects = {1};
    ChunkScheduler::Callbacks cb;
    cb.file_chunks_done = [this](std::shared_ptr<OutgoingFile>) { ++done_; };
    cb.file_failed = [this](std::shared_ptr<OutgoingFile>, std::string why, bool) {
      failed_.push_back(why);
    };
    ctx_->scheduler = std::make_unique<ChunkScheduler>(std::move(cb));
    ctx_->send_path = SendPath::kCopy;
    stream_ = std::make_unique<OutboundStream>(*ctx_, 0, 0);
    file_ = std::make_shared<OutgoingFile>();
    file_->synthetic = true;
    file_->plan = ChunkPlan(kMinChunkBytes, kMinChunkBytes);
    file_->token = Token::random();
    stream_->start(resolve_endpoints("127.0.0.1", 9, false).front(), nullptr);
    fd_ = loop_.fd_of(FakeLoop::Kind::kConnect);
    loop_.complete(FakeLoop::Kind::kConnect, fd_, 0);
    ctx_->scheduler->add_file(file_);
    loop_.run();
  }
  void TearDown() override { loop_.forget_all(); }
  // Frames sent since the last call.
  std::size_t frames() {
    std::string sent = loop_.take_sent(fd_);
    return sent.size() / (kFrameHeaderBytes + kMinChunkBytes + kFrameTrailerBytes);
  }
  void ack(AckStatus status, const OutgoingFile* f = nullptr) {
    FrameAck a;
    a.status = status;
    a.token = (f ? f : file_.get())->token;
    a.offset = 0;
    std::uint8_t raw[kFrameAckBytes];
    encode_frame_ack(a, raw);
    loop_.feed(fd_, std::string(reinterpret_cast<char*>(raw), sizeof raw));
  }

  FakeLoop loop_;
  SenderOptions options_;
  std::unique_ptr<SenderContext> ctx_;
  std::unique_ptr<OutboundStream> stream_;
  std::shared_ptr<OutgoingFile> file_;
  int fd_ = -1;
  int done_ = 0;
  std::vector<std::string> failed_;
};

// What counts as the receiver answering on a data connection is an ack for the frame sent
// next; bytes alone, say one every second that never makes an ack, must not keep the session
// from its --idle-timeout.
TEST_F(OutboundStreamTest, OnlyAWholeMatchingAckCountsAsAnAnswer) {
  EXPECT_EQ(frames(), 1u);
  ctx_->last_ack_ms = 0;
  loop_.advance(1'000);
  FrameAck a;
  a.status = AckStatus::kPublished;  // the verdict on a file of one chunk
  a.token = file_->token;
  std::uint8_t raw[kFrameAckBytes];
  encode_frame_ack(a, raw);
  loop_.feed(fd_, std::string(reinterpret_cast<char*>(raw), 1));  // a byte, and no more
  EXPECT_EQ(ctx_->last_ack_ms.load(), 0);
  loop_.advance(1'000);
  loop_.feed(fd_, std::string(reinterpret_cast<char*>(raw) + 1, sizeof raw - 1));
  EXPECT_EQ(ctx_->last_ack_ms.load(), loop_.now_ms());
  EXPECT_EQ(done_, 1);
}

// `busy` used to send the chunk again at once, eight times, then fail the file for good.
TEST_F(OutboundStreamTest, ABusyChunkBacksOffBeforeItGoesAgain) {
  EXPECT_EQ(frames(), 1u);
  ack(AckStatus::kBusy);
  EXPECT_EQ(frames(), 0u);  // not at once
  loop_.advance(kBusyFirstDelayMs + 10);
  EXPECT_EQ(frames(), 1u);
  ack(AckStatus::kBusy);
  loop_.advance(kBusyFirstDelayMs + 10);
  EXPECT_EQ(frames(), 0u);  // the second wait is twice as long
  loop_.advance(kBusyFirstDelayMs);
  EXPECT_EQ(frames(), 1u);
  ack(AckStatus::kPublished);
  EXPECT_EQ(done_, 1);
  EXPECT_TRUE(failed_.empty());
  EXPECT_EQ(ctx_->scheduler->retries(), 0u);  // waiting is not an attempt
}

TEST_F(OutboundStreamTest, AChunkBusyForLongerThanTheIdleTimeoutFailsItsFile) {
  const std::int64_t first = loop_.now_ms();
  ctx_->last_ack_ms = 0;
  for (int i = 0; i < 100 && failed_.empty(); ++i) {
    if (frames() == 1) ack(AckStatus::kBusy);
    loop_.advance(kBusyMaxDelayMs);
  }
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_NE(failed_[0].find("busy"), std::string::npos) << failed_[0];
  // Busy is no answer (the control client's --idle-timeout runs on), and the file says since
  // when it was busy, for the control client to tell a receiver busy for everything.
  EXPECT_EQ(ctx_->last_ack_ms.load(), 0);
  EXPECT_EQ(file_->chunk_busy_since_ms, first);
}

// A file of one chunk gets no DONE: only `published` says it is there. `ok` for it (verified,
// not published) was counted as delivered; so would `published` for one chunk of many.
TEST_F(OutboundStreamTest, AnOkForTheOnlyChunkOfAFileIsNoDelivery) {
  ASSERT_EQ(frames(), 1u);
  ack(AckStatus::kOk);
  EXPECT_EQ(done_, 0);
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_NE(failed_[0].find("as verified only"), std::string::npos) << failed_[0];
}

TEST_F(OutboundStreamTest, PublishedForOneChunkOfManyIsNoDelivery) {
  ASSERT_EQ(frames(), 1u);
  ack(AckStatus::kPublished);
  auto big = std::make_shared<OutgoingFile>();
  big->synthetic = true;
  big->plan = ChunkPlan(2 * kMinChunkBytes, kMinChunkBytes);
  big->token = Token::random();
  ctx_->scheduler->add_file(big);
  loop_.run();
  ASSERT_EQ(frames(), 2u);
  ack(AckStatus::kPublished, big.get());
  EXPECT_EQ(done_, 1);  // the first file only
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_NE(failed_[0].find("a chunk of a larger file as published"), std::string::npos)
      << failed_[0];
}

// A receiver that no longer knows a token (the file was published before its ack was lost)
// says so at the frame's header, before the sender has finished sending the frame. That
// answer once read as "acknowledged a frame that was not sent next": the connection reset,
// the chunk went again, the same answer came back, eight times, and a delivered file was
// reported failed.
TEST_F(OutboundStreamTest, ARefusalAtTheHeaderOfAFrameStillBeingSentIsThatFramesVerdict) {
  ASSERT_EQ(frames(), 1u);
  ack(AckStatus::kPublished);
  ASSERT_EQ(done_, 1);
  loop_.set_reading(fd_, false);  // the frame below stays half sent
  auto big = std::make_shared<OutgoingFile>();
  big->synthetic = true;
  big->plan = ChunkPlan(4 << 20, 4 << 20);  // one chunk, larger than a send buffer
  big->token = Token::random();
  ctx_->scheduler->add_file(big);
  loop_.run();
  ASSERT_EQ(loop_.pending(FakeLoop::Kind::kSend, fd_), 1u);
  ack(AckStatus::kUnknownToken, big.get());
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0], "the receiver no longer had the file open");
  EXPECT_EQ(ctx_->scheduler->retries(), 0u);  // the verdict is the receiver's, not a retry
  // The rest of the frame has nowhere to go: the connection starts again.
  loop_.advance(1000);
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kConnect), 1u);
}

// --send-path mmap: a connection failing while a send of the mapped window was in flight
// unmapped the window at once, under the kernel still reading it (a fault at best; at worst a
// new mapping at that address sent in its place). The mapping now lasts until the ring has
// returned every op of the connection.
TEST_F(OutboundStreamTest, AMappedWindowOutlivesTheSendsStillReadingIt) {
  ASSERT_EQ(frames(), 1u);
  ack(AckStatus::kPublished);
  char tmpl[] = "/tmp/ackxfer-mapped-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  const std::string content(2 << 20, 'm');  // streamed from the mapping: 1 MiB and more
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::unlink(tmpl);
  auto mapped = std::make_shared<OutgoingFile>();
  mapped->fd = UniqueFd(fd);
  mapped->plan = ChunkPlan(content.size(), content.size());
  mapped->token = Token::random();
  ctx_->send_path = SendPath::kMmap;
  loop_.set_reading(fd_, false);  // the window's send stays in flight
  loop_.slow_cancel = true;       // and is still reading the window after the cancel
  ctx_->scheduler->add_file(mapped);
  loop_.run();
  // The frame's header goes out; the window's send stays in flight.
  ASSERT_TRUE(loop_.complete(FakeLoop::Kind::kSend, fd_, static_cast<int>(kFrameHeaderBytes)));
  loop_.run();
  loop_.feed(fd_, std::string(kFrameAckBytes, 'x'));  // a malformed ack: the connection fails
  bool window_seen = false;
  for (const auto& [data, len] : loop_.send_buffers(fd_)) {
    if (len != 1u << 20) continue;  // the header's send, not the window's
    window_seen = true;
    // Read it, as the kernel would: a fault here is the bug.
    EXPECT_EQ(std::string(static_cast<const char*>(data), len), content.substr(0, len));
  }
  EXPECT_TRUE(window_seen);
  // Once the ring has returned it, the stream starts again on a new connection.
  ASSERT_TRUE(loop_.complete(FakeLoop::Kind::kSend, fd_, -ECANCELED));
  loop_.advance(2'000);
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kConnect), 1u);
}

}  // namespace
}  // namespace ackxfer::test
