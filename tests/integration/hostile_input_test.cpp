// Hostile and malformed input on both ports: each gets a clear error or a closed connection,
// the receiver stays up, and nothing is ever written outside --dir.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "harness.h"
#include "protocol/control_codec.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"

namespace ackxfer::test {
namespace {

class HostileInput : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = std::make_unique<TempDir>("hostile");
    dest_ = base_->path() / "dest";
    outside_ = base_->path() / "outside";
    fs::create_directories(dest_);
    fs::create_directories(outside_);
    receiver_ = std::make_unique<ReceiverProcess>(dest_, 2);
  }

  // After each test: the receiver still serves a real transfer and nothing leaked outside.
  void TearDown() override {
    fs::path probe = base_->path() / "probe.txt";
    write_text(probe, "probe");
    auto res = send({"--to", receiver_->to(), probe.string()});
    EXPECT_EQ(res.exit_code, 0) << "receiver stopped serving: " << res.err;
    EXPECT_EQ(read_text(dest_ / "probe.txt"), "probe");
    EXPECT_EQ(count_entries(outside_), 0u);
    std::size_t top = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator(base_->path()))
      ++top;
    EXPECT_EQ(top, 3u);  // dest, outside, probe.txt
    EXPECT_TRUE(temp_files_under(dest_).empty());
    auto rs = receiver_->stop();
    EXPECT_EQ(rs.exit_code, 0) << rs.err;
  }

  std::unique_ptr<RawClient> hello() {
    auto c = std::make_unique<RawClient>(receiver_->port());
    EXPECT_TRUE(c->connected());
    c->send_bytes("HELLO ackxfer 2\n");
    auto line = c->read_line();
    EXPECT_TRUE(line && line->starts_with("HELLO ackxfer 2 data-port=")) << line.value_or("EOF");
    return c;
  }

  std::string send_line(std::uint64_t id, const std::string& escaped_path, std::uint64_t size = 5) {
    return "SEND " + std::to_string(id) + " " + escaped_path + " size=" + std::to_string(size) +
           " mode=0644 mtime=1.0 chunk=65536\n";
  }

  std::unique_ptr<TempDir> base_;
  fs::path dest_, outside_;
  std::unique_ptr<ReceiverProcess> receiver_;
};

TEST_F(HostileInput, Receiver_RejectsPathsEscapingTheDestination) {
  auto c = hello();
  std::string outside_abs = escape_bytes(outside_.string() + "/abs");
  std::vector<std::string> paths = {
      "..",
      "../x",
      "../outside/x",
      "a/../../x",
      "a/..",
      outside_abs,
      "/etc/passwd-ackxfer",
      ".",
      "./x",
      "a//b",
      "a/",
      "\\x2e\\x2e/x",         // ".." spelled with escapes
      "\\x2e\\x2e\\x2fx",     // "../x" entirely escaped
      "a\\x00b",              // NUL
      "\\x2fabs",             // leading '/' escaped
      std::string(300, 'n'),  // component over NAME_MAX
  };
  for (std::size_t i = 0; i < paths.size(); ++i) {
    ASSERT_TRUE(c->send_bytes(send_line(i + 1, paths[i])));
    auto line = c->read_line();
    ASSERT_TRUE(line) << paths[i];
    EXPECT_TRUE(line->starts_with("ERR " + std::to_string(i + 1) + " bad-path")) << *line;
  }
  EXPECT_EQ(count_entries(dest_), 0u);
}

TEST_F(HostileInput, Receiver_NeverFollowsASymlinkInDirOutside) {
  fs::create_directory_symlink(outside_, dest_ / "link");
  fs::create_directory_symlink("../outside", dest_ / "rel");
  auto c = hello();
  for (std::string p : {"link/pwned", "rel/pwned", "link/sub/pwned"}) {
    c->send_bytes(send_line(1, p));
    auto line = c->read_line();
    ASSERT_TRUE(line);
    EXPECT_TRUE(line->starts_with("ERR 1 ")) << p << ": " << *line;
  }
  // And through the real sender: a directory called "link" must not land in outside/.
  TempDir src("src");
  write_text(src / "link/pwned", "x");
  auto res = send({"--to", receiver_->to(), (src / "link").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_NE(res.err.find("link"), std::string::npos);
  fs::remove(dest_ / "link");
  fs::remove(dest_ / "rel");
}

TEST_F(HostileInput, Receiver_ReplacesASymlinkAtTheFinalNameInsteadOfWritingThroughIt) {
  write_text(outside_ / "target", "precious");
  fs::create_symlink(outside_ / "target", dest_ / "f.txt");
  TempDir src("src");
  write_text(src / "f.txt", "new");
  ASSERT_EQ(send({"--to", receiver_->to(), (src / "f.txt").string()}).exit_code, 0);
  EXPECT_EQ(read_text(outside_ / "target"), "precious");
  EXPECT_FALSE(fs::is_symlink(dest_ / "f.txt"));
  fs::remove(outside_ / "target");
  fs::remove(dest_ / "f.txt");
}

TEST_F(HostileInput, Receiver_AnswersGarbageOnTheControlPortAndCloses) {
  std::mt19937 rng(5);
  for (int round = 0; round < 20; ++round) {
    RawClient c(receiver_->port());
    std::string junk(1 + rng() % 2000, '\0');
    for (auto& ch : junk)
      ch = static_cast<char>(rng());
    junk += "\n";
    c.send_bytes(junk);
    auto line = c.read_line();
    if (line) {
      EXPECT_TRUE(line->starts_with("ERR - ")) << *line;
    }
    EXPECT_TRUE(c.closed_by_peer());
  }
}

TEST_F(HostileInput, Receiver_RequiresHelloAndAMatchingVersion) {
  {
    RawClient c(receiver_->port());
    c.send_bytes("SEND 1 x size=1 mode=0644 mtime=1.0 chunk=65536\n");
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_TRUE(line->starts_with("ERR - hello-expected")) << *line;
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    RawClient c(receiver_->port());
    c.send_bytes("HELLO ackxfer 99\n");
    auto line = c.read_line();
    ASSERT_TRUE(line);
    EXPECT_TRUE(line->starts_with("ERR - version")) << *line;
    EXPECT_TRUE(c.closed_by_peer());
  }
}

TEST_F(HostileInput, Receiver_ClosesANeverEndingLine) {
  auto c = hello();
  std::string endless(100000, 'A');
  c->send_bytes(endless);
  auto line = c->read_line();
  ASSERT_TRUE(line);
  EXPECT_TRUE(line->starts_with("ERR - line-too-long")) << *line;
  EXPECT_TRUE(c->closed_by_peer());
}

TEST_F(HostileInput, Receiver_RepliesToEachBadLineAndKeepsTheSession) {
  auto c = hello();
  c->send_bytes(
      "FROB 1\n"
      "SEND 2 x size=99999999999999999999 mode=0644 mtime=1.0 chunk=65536\n"
      "SEND 3 x size=1 mode=9999 mtime=1.0 chunk=65536\n"
      "SEND 4 x size=1 mode=0644 mtime=1.0\n"
      "DONE 77 xxh3=00000000000000000000000000000000\n"
      "CANCEL 78\n");
  std::vector<std::string> want = {"ERR - unknown-verb", "ERR 2 bad-number",  "ERR 3 bad-number",
                                   "ERR 4 bad-field",    "ERR 77 unknown-id", "ERR 78 unknown-id"};
  for (auto& w : want) {
    auto line = c->read_line();
    ASSERT_TRUE(line) << w;
    EXPECT_TRUE(line->starts_with(w)) << *line;
  }
  c->send_bytes("BYE\n");
  auto bye = c->read_line();
  ASSERT_TRUE(bye);
  EXPECT_EQ(*bye, "BYE files=0 bytes=0");
}

TEST_F(HostileInput, Receiver_ClosesDataConnectionsCarryingGarbage) {
  std::mt19937 rng(9);
  for (int round = 0; round < 10; ++round) {
    RawClient d(receiver_->data_port());
    std::string junk(1 + rng() % 5000, '\0');
    for (auto& ch : junk)
      ch = static_cast<char>(rng());
    d.send_bytes(junk);
    if (junk.size() >= kFrameHeaderBytes) {
      EXPECT_TRUE(d.closed_by_peer()) << round;
    }
  }
}

std::string frame(const Token& token, std::uint64_t offset, const std::string& payload,
                  std::uint64_t announced) {
  std::uint8_t hdr[kFrameHeaderBytes];
  encode_frame_header(FrameHeader{token, offset, announced}, hdr);
  Digest128 d = digest_of(payload.data(), payload.size());
  return std::string(reinterpret_cast<char*>(hdr), sizeof hdr) + payload +
         std::string(reinterpret_cast<const char*>(d.bytes.data()), 16);
}

AckStatus read_ack(RawClient& d) {
  int s = read_ack_status(d);
  EXPECT_GE(s, 0);
  return s < 0 ? AckStatus::kProtocol : static_cast<AckStatus>(s);
}

TEST_F(HostileInput, Receiver_RejectsUnknownAndReusedTokens) {
  {
    RawClient d(receiver_->data_port());
    d.send_bytes(frame(Token::random(), 0, "hello", 5));
    EXPECT_EQ(read_ack(d), AckStatus::kUnknownToken);
    EXPECT_TRUE(d.closed_by_peer());
  }
  // A real file: send it, get OK, then try to reuse its token.
  auto c = hello();
  c->send_bytes(send_line(1, "once.txt", 5));
  auto ready = c->read_line();
  ASSERT_TRUE(ready && ready->starts_with("READY 1 token=")) << ready.value_or("EOF");
  Token token = *Token::from_hex(ready->substr(ready->find('=') + 1));
  {
    // A one-chunk file is published as soon as its frame verifies; no DONE is needed.
    RawClient d(receiver_->data_port());
    d.send_bytes(frame(token, 0, "hello", 5));
    EXPECT_EQ(read_ack(d), AckStatus::kPublished);
  }
  EXPECT_EQ(read_text(dest_ / "once.txt"), "hello");
  RawClient d(receiver_->data_port());
  d.send_bytes(frame(token, 0, "EVIL!", 5));
  EXPECT_EQ(read_ack(d), AckStatus::kUnknownToken);
  EXPECT_EQ(read_text(dest_ / "once.txt"), "hello");
  fs::remove(dest_ / "once.txt");
}

// Names that meet at one place: the same path twice in flight, a path spelled with escapes,
// a file and a directory under one name. Each file lands whole (one version or the other,
// never a mix), the loser of a type clash gets a clear error, and nothing is left behind.
TEST_F(HostileInput, Receiver_NamesThatCollideLandWholeOrFailClearly) {
  auto c = hello();
  // "same.txt" and its escaped spelling "\x73ame.txt" are one name: two files in flight to it.
  c->send_bytes(send_line(1, "same.txt", 5) + send_line(2, "\\x73ame.txt", 5));
  std::map<std::string, Token> tokens;
  for (int i = 0; i < 2; ++i) {
    auto ready = c->read_line();
    ASSERT_TRUE(ready && ready->starts_with("READY ")) << ready.value_or("EOF");
    tokens[ready->substr(6, 1)] = *Token::from_hex(ready->substr(ready->find('=') + 1));
  }
  {
    RawClient d(receiver_->data_port());
    d.send_bytes(frame(tokens["2"], 0, "22222", 5));
    EXPECT_EQ(read_ack(d), AckStatus::kPublished);
    d.send_bytes(frame(tokens["1"], 0, "11111", 5));
    EXPECT_EQ(read_ack(d), AckStatus::kPublished);
  }
  EXPECT_EQ(read_text(dest_ / "same.txt"), "11111");  // the last to verify wins, whole

  // A directory where a file is, and a file where a directory is.
  c->send_bytes("MKDIR 3 same.txt mode=0755 mtime=1.0\n");
  auto dir_over_file = c->read_line();
  EXPECT_TRUE(dir_over_file && dir_over_file->starts_with("ERR 3 "))
      << dir_over_file.value_or("EOF");
  c->send_bytes(send_line(4, "same.txt/inner", 5));
  auto under_file = c->read_line();
  EXPECT_TRUE(under_file && under_file->starts_with("ERR 4 not-a-directory"))
      << under_file.value_or("EOF");
  c->send_bytes("MKDIR 5 adir mode=0755 mtime=1.0\n");
  auto ok = c->read_line();
  EXPECT_TRUE(ok && *ok == "OK 5") << ok.value_or("EOF");
  // With skip= (what senders send unless --force) the receiver looks first and says so at once.
  std::string skipping = send_line(6, "adir", 5);
  skipping.insert(skipping.size() - 1, " skip=size-mtime");
  c->send_bytes(skipping);
  auto file_over_dir = c->read_line();
  EXPECT_TRUE(file_over_dir && file_over_dir->starts_with("ERR 6 is-a-directory"))
      << file_over_dir.value_or("EOF");
  // Without it, publishing fails once the bytes are in, and the temp file goes.
  c->send_bytes(send_line(7, "adir", 5));
  auto ready = c->read_line();
  ASSERT_TRUE(ready && ready->starts_with("READY 7 ")) << ready.value_or("EOF");
  {
    RawClient d(receiver_->data_port());
    d.send_bytes(frame(*Token::from_hex(ready->substr(ready->find('=') + 1)), 0, "77777", 5));
    EXPECT_EQ(read_ack(d), AckStatus::kPublishFailed);
  }
  c->send_bytes("BYE\n");
  EXPECT_TRUE(c->read_line());
  EXPECT_EQ(read_text(dest_ / "same.txt"), "11111");
  EXPECT_TRUE(fs::is_directory(dest_ / "adir"));
  EXPECT_TRUE(temp_files_under(dest_).empty());
  fs::remove(dest_ / "same.txt");
  fs::remove(dest_ / "adir");
}

TEST_F(HostileInput, Receiver_RejectsFramesLongerOrShorterThanTheChunk) {
  auto c = hello();
  c->send_bytes(send_line(1, "sized.txt", 5));
  auto ready = c->read_line();
  ASSERT_TRUE(ready && ready->starts_with("READY 1 token="));
  Token token = *Token::from_hex(ready->substr(ready->find('=') + 1));
  {
    RawClient d(receiver_->data_port());
    d.send_bytes(frame(token, 0, "toolong", 7));  // more than announced
    EXPECT_EQ(read_ack(d), AckStatus::kBadRange);
    EXPECT_TRUE(d.closed_by_peer());
  }
  {
    RawClient d(receiver_->data_port());
    d.send_bytes(frame(token, 65536, "x", 1));  // past the end
    EXPECT_EQ(read_ack(d), AckStatus::kBadRange);
  }
  {
    // Fewer bytes than announced, then the connection drops: nothing is published.
    RawClient d(receiver_->data_port());
    std::string f = frame(token, 0, "hello", 5);
    d.send_bytes(f.substr(0, kFrameHeaderBytes + 3));
  }
  Digest128 chunk = digest_of("hello", 5);
  c->send_bytes("DONE 1 xxh3=" + file_digest_from_chunks({&chunk, 1}).hex() + "\n");
  auto verdict = c->read_line();
  ASSERT_TRUE(verdict);
  EXPECT_TRUE(verdict->starts_with("ERR 1 incomplete")) << *verdict;
  EXPECT_FALSE(fs::exists(dest_ / "sized.txt"));
}

TEST_F(HostileInput, Receiver_WrongFileDigestIsAMismatchAndNothingIsPublished) {
  auto c = hello();
  // Two chunks (65,536 + 5 bytes), so that the file digest is what DONE checks.
  c->send_bytes(send_line(1, "m.txt", 65536 + 5));
  auto ready = c->read_line();
  ASSERT_TRUE(ready && ready->starts_with("READY 1 token="));
  Token token = *Token::from_hex(ready->substr(ready->find('=') + 1));
  RawClient d(receiver_->data_port());
  d.send_bytes(frame(token, 0, std::string(65536, 'x'), 65536));
  EXPECT_EQ(read_ack(d), AckStatus::kOk);
  d.send_bytes(frame(token, 65536, "hello", 5));
  EXPECT_EQ(read_ack(d), AckStatus::kOk);
  c->send_bytes("DONE 1 xxh3=" + std::string(32, '0') + "\n");
  auto verdict = c->read_line();
  ASSERT_TRUE(verdict);
  EXPECT_TRUE(verdict->starts_with("ERR 1 mismatch")) << *verdict;
  EXPECT_FALSE(fs::exists(dest_ / "m.txt"));
}

// What a session may hold (temp files, fds, reserved space) grows with what it delivers, not
// with what it declares: a session that has delivered nothing gets kInitialOpenFiles files open,
// each file delivered earns one more (up to kMaxOpenFilesPerSession), and a sender that
// negotiated `credit` hears of the raises. Beyond it: a clear, retryable too-many-open.
TEST_F(HostileInput, Receiver_OpenFilesGrowWithWhatASessionDelivers) {
  RawClient c(receiver_->port());
  c.send_bytes("HELLO ackxfer 2 features=credit,link\n");
  auto h = c.read_line();
  ASSERT_TRUE(h);
  EXPECT_NE(h->find(" max-open=" + std::to_string(kInitialOpenFiles)), std::string::npos) << *h;
  EXPECT_NE(h->find(" features=link,credit"), std::string::npos) << *h;
  const int first = static_cast<int>(kInitialOpenFiles), over = 44;
  std::string burst;
  for (int i = 1; i <= first + over; ++i)
    burst += send_line(static_cast<std::uint64_t>(i), "flood/f" + std::to_string(i), 5);
  c.send_bytes(burst);
  std::vector<Token> tokens;
  int too_many = 0;
  for (int i = 0; i < first + over; ++i) {
    auto line = c.read_line();
    ASSERT_TRUE(line);
    if (line->starts_with("READY "))
      tokens.push_back(*Token::from_hex(line->substr(line->find('=') + 1)));
    if (line->find("too-many-open") != std::string::npos) ++too_many;
  }
  EXPECT_EQ(tokens.size(), kInitialOpenFiles);
  EXPECT_EQ(too_many, over);
  // Deliver half of them: the session earns that many more places.
  RawClient d(receiver_->data_port());
  for (std::size_t i = 0; i < tokens.size() / 2; ++i) {
    d.send_bytes(frame(tokens[i], 0, "12345", 5));
    ASSERT_EQ(read_ack(d), AckStatus::kPublished);
  }
  const int more = 60;  // 32 still open + 60 new <= 64 + 32
  std::string next;
  for (int i = 1000; i < 1000 + more; ++i)
    next += send_line(static_cast<std::uint64_t>(i), "flood/g" + std::to_string(i), 5);
  c.send_bytes(next);
  int ready = 0;
  bool credit = false;
  while (ready < more) {
    auto line = c.read_line();
    ASSERT_TRUE(line) << ready;
    if (line->starts_with("READY ")) ++ready;
    if (line->starts_with("CREDIT open=")) credit = true;
    ASSERT_FALSE(line->starts_with("ERR")) << *line;
  }
  EXPECT_TRUE(credit);
  // Closing the session discards every unfinished file (TearDown checks no temp is left).
}

TEST_F(HostileInput, Receiver_CorruptPayloadGetsABadDigestAck) {
  auto c = hello();
  c->send_bytes(send_line(1, "c.txt", 5));
  auto ready = c->read_line();
  ASSERT_TRUE(ready && ready->starts_with("READY 1 token="));
  Token token = *Token::from_hex(ready->substr(ready->find('=') + 1));
  RawClient d(receiver_->data_port());
  std::string f = frame(token, 0, "hello", 5);
  f[kFrameHeaderBytes + 1] ^= 1;
  d.send_bytes(f);
  EXPECT_EQ(read_ack(d), AckStatus::kBadDigest);
  EXPECT_FALSE(fs::exists(dest_ / "c.txt"));
  // The connection stays usable: the good frame is accepted next and publishes the file.
  d.send_bytes(frame(token, 0, "hello", 5));
  EXPECT_EQ(read_ack(d), AckStatus::kPublished);
  EXPECT_EQ(read_text(dest_ / "c.txt"), "hello");
  fs::remove(dest_ / "c.txt");
}

TEST_F(HostileInput, Receiver_SurvivesConnectAndCloseStorms) {
  for (int i = 0; i < 300; ++i) {
    RawClient c(i % 2 ? receiver_->port() : receiver_->data_port());
    EXPECT_TRUE(c.connected());
  }
}

}  // namespace
}  // namespace ackxfer::test
