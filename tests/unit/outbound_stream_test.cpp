// OutboundStream (one sender data connection) on the loop test double: a chunk the receiver
// calls busy backs off before it goes again, and gives up after the idle timeout.
#include <gtest/gtest.h>

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
  void ack(AckStatus status) {
    FrameAck a;
    a.status = status;
    a.token = file_->token;
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
  ack(AckStatus::kOk);
  EXPECT_EQ(done_, 1);
  EXPECT_TRUE(failed_.empty());
  EXPECT_EQ(ctx_->scheduler->retries(), 0u);  // waiting is not an attempt
}

TEST_F(OutboundStreamTest, AChunkBusyForLongerThanTheIdleTimeoutFailsItsFile) {
  for (int i = 0; i < 100 && failed_.empty(); ++i) {
    if (frames() == 1) ack(AckStatus::kBusy);
    loop_.advance(kBusyMaxDelayMs);
  }
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_NE(failed_[0].find("busy"), std::string::npos) << failed_[0];
}

}  // namespace
}  // namespace ackxfer::test
