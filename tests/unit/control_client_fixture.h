// The sender's control session (ControlClient) on the loop test double, with a receiver
// played by the test: the fixture of control_client_test.cpp and client_hostile_test.cpp.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "fake_loop.h"
#include "protocol/limits.h"
#include "sender/control_client.h"
#include "sender/sender_context.h"
#include "sender/tree_walker.h"

namespace ackxfer::test {

using namespace std::chrono_literals;

inline std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
    ++n;
  return n;
}

// Entries from a list, with source paths unlike their wire paths, as a real walk's are.
class ListedEntries final : public EntrySource {
 public:
  explicit ListedEntries(std::vector<SourceEntry> entries) : entries_(std::move(entries)) {}
  std::optional<SourceEntry> next() override {
    if (next_ == entries_.size()) return std::nullopt;
    return entries_[next_++];
  }
  std::vector<WalkProblem> take_problems() override { return {}; }

 private:
  std::vector<SourceEntry> entries_;
  std::size_t next_ = 0;
};

inline SourceEntry directory_entry(const std::string& source, const std::string& wire) {
  SourceEntry e;
  e.kind = SourceEntry::Kind::kDirectory;
  e.source_path = source;
  e.wire_path = wire;
  e.mode = 0755;
  return e;
}

class ControlClientTest : public ::testing::Test {
 protected:
  void start(std::uint64_t files = 3, std::uint64_t bytes = 5) {
    options_.to = "127.0.0.1:9";
    ctx_ = std::make_unique<SenderContext>(options_);
    if (start_with_tls_)
      ctx_->tls = TlsContext::with_secret(
          TlsRole::kClient,
          std::make_shared<const SharedSecret>("0123456789abcdef0123456789abcdef"));
    ctx_->loops = {&loop_};
    ctx_->live_objects = {1};
    ctx_->control_candidates = resolve_endpoints("127.0.0.1", 9, false);
    ctx_->control_ep = ctx_->control_candidates.front();
    ChunkScheduler::Callbacks cb;
    cb.file_chunks_done = [this](std::shared_ptr<OutgoingFile> f) {
      loop_.post([this, f] { client_->file_chunks_done(f); });
    };
    cb.file_failed = [this](std::shared_ptr<OutgoingFile> f, std::string why, bool retryable) {
      loop_.post([this, f, why, retryable] { client_->file_failed(f, why, retryable); });
    };
    ctx_->scheduler = std::make_unique<ChunkScheduler>(std::move(cb));
    walker_ = std::make_unique<SyntheticTree>("tree", files, bytes);
    EntrySource& entries = listed_ ? static_cast<EntrySource&>(*listed_) : *walker_;
    client_ = std::make_unique<ControlClient>(*ctx_, entries, report_);
    ctx_->control = client_.get();
    client_->start();
    loop_.run();
  }
  void TearDown() override {
    if (ctx_) ctx_->work.stop();
    loop_.forget_all();
    if (!temp_dir_.empty()) std::filesystem::remove_all(temp_dir_);
  }
  // A file of `bytes` bytes in a directory of the test's own (gone at its end), listed as a
  // walk would list it, under its name.
  SourceEntry temp_file(const std::string& name, std::uint64_t bytes) {
    if (temp_dir_.empty()) {
      char tmpl[] = "/tmp/ackxfer-client-XXXXXX";
      EXPECT_TRUE(mkdtemp(tmpl));
      temp_dir_ = tmpl;
    }
    std::ofstream out(temp_dir_ / name, std::ios::binary);
    const std::string block(1 << 20, 'x');
    for (std::uint64_t left = bytes; left > 0;) {
      const std::uint64_t n = std::min<std::uint64_t>(left, block.size());
      out.write(block.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
    SourceEntry e;
    e.source_path = (temp_dir_ / name).string();
    e.wire_path = name;
    return e;
  }
  // Completes the pending connect (the receiver accepts) and returns the connection's fd.
  int accept() {
    int fd = loop_.fd_of(FakeLoop::Kind::kConnect);
    EXPECT_GE(fd, 0);
    loop_.complete(FakeLoop::Kind::kConnect, fd, 0);
    return fd;
  }
  // Accepts every connection and lets time pass, second by second, until the session ends.
  void accept_and_wait(std::int64_t max_ms) {
    for (std::int64_t t = 0; t < max_ms && !client_->done(); t += 500) {
      if (loop_.fd_of(FakeLoop::Kind::kConnect) >= 0) accept();
      loop_.advance(500);
    }
  }
  // After a lost session: waits out the backoff until the sender connects again, accepts and
  // answers HELLO. Returns the new connection's fd, or -1 if it never came.
  int reconnected() {
    int fd = -1;
    for (int i = 0; i < 100 && fd < 0; ++i) {
      loop_.advance(500);
      fd = loop_.fd_of(FakeLoop::Kind::kConnect);
    }
    if (fd < 0) return -1;
    loop_.complete(FakeLoop::Kind::kConnect, fd, 0);
    loop_.feed(fd, hello_reply());
    return fd;
  }
  // A session past HELLO, its tree's directory made, sending `files` files; returns its fd.
  int established(std::uint64_t files) {
    start(files);
    int fd = accept();
    loop_.feed(fd, hello_reply(64));
    loop_.feed(fd, "OK 1\n");  // MKDIR's answer
    return fd;
  }
  // Answers every SEND sent on `fd` since the last call with `busy`; returns their paths.
  std::vector<std::string> answer_sends_busy(int fd) {
    std::vector<std::string> paths;
    std::string sent = loop_.take_sent(fd);
    for (std::size_t p = sent.find("SEND "); p != std::string::npos;
         p = sent.find("SEND ", p + 1)) {
      std::size_t id_end = sent.find(' ', p + 5);
      paths.push_back(sent.substr(id_end + 1, sent.find(' ', id_end + 1) - id_end - 1));
      loop_.feed(fd, "ERR " + sent.substr(p + 5, id_end - p - 5) + " busy at its maximum\n");
    }
    return paths;
  }
  // A session on `fd` past HELLO whose tree's directory is made: the SEND's id, or "" if none.
  std::string next_send_id(int fd) {
    std::string sent = loop_.take_sent(fd);
    auto p = sent.find("SEND ");
    if (p == std::string::npos) return "";
    return sent.substr(p + 5, sent.find(' ', p + 5) - p - 5);
  }
  // A session past HELLO, its tree's directory made, sending one file of `chunks` chunks of
  // kMinChunkBytes; returns its fd. Options other than the chunk size are set before.
  int one_file_session(std::uint64_t chunks) {
    options_.chunk_bytes = kMinChunkBytes;
    start(1, chunks * kMinChunkBytes);
    int fd = accept();
    loop_.feed(fd, hello_reply());
    loop_.feed(fd, "OK 1\n");
    return fd;
  }
  // Acknowledges every queued chunk as a receiver would (as if the streams had sent them).
  void ack_every_chunk() {
    while (auto job = ctx_->scheduler->next(nullptr))
      ctx_->scheduler->acked(*job, Digest128{});
    loop_.run();
  }
  std::string hello_reply(std::uint32_t max_open = 64,
                          const std::string& features = "link,progress,credit") {
    return "HELLO ackxfer 2 data-port=9 max-open=" + std::to_string(max_open) +
           " features=" + features + "\n";
  }

  FakeLoop loop_;
  bool start_with_tls_ = false;  // the sender runs TLS on the control connection
  SenderOptions options_;
  std::unique_ptr<SenderContext> ctx_;
  std::unique_ptr<SyntheticTree> walker_;
  std::unique_ptr<ListedEntries> listed_;  // set before start(): used instead of walker_
  SendReport report_;
  std::unique_ptr<ControlClient> client_;
  std::filesystem::path temp_dir_;  // temp_file()'s
};

}  // namespace ackxfer::test
