// The receiver's connections with encryption, as state machines on the loop test double: a
// TLS client in the test talks to a ControlSession or DataStream through the fake, so every
// handshake, refusal and deadline is seen byte by byte, with no socket and no clock.
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "auth/shared_secret.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "receiver_fixture.h"
#include "test_pki.h"
#include "tls/tls_channel.h"

namespace ackxfer::test {
namespace {

std::shared_ptr<const SharedSecret> secret_of(const std::string& s) {
  return std::make_shared<const SharedSecret>(s);
}

// The sender's side of one connection: a TLS client whose ciphertext goes through the fake.
class TlsPeer {
 public:
  TlsPeer(FakeLoop& loop, int fd, std::shared_ptr<const SharedSecret> secret)
      : TlsPeer(loop, fd, TlsContext::with_secret(TlsRole::kClient, std::move(secret))) {}
  TlsPeer(FakeLoop& loop, int fd, std::shared_ptr<TlsContext> ctx)
      : loop_(loop), fd_(fd), tls_(std::move(ctx)) {}

  // Moves bytes both ways until neither side has anything more to say.
  void pump() {
    for (int round = 0; round < 64; ++round) {
      bool moved = false;
      tls_.handshake();
      if (!pending_.empty()) {
        std::size_t taken = 0;
        tls_.write({reinterpret_cast<const std::uint8_t*>(pending_.data()), pending_.size()},
                   taken);
        pending_.erase(0, taken);
      }
      auto out = tls_.output();
      if (!out.empty()) {
        std::string bytes(reinterpret_cast<const char*>(out.data()), out.size());
        tls_.sent(out.size());
        loop_.feed(fd_, bytes);
        moved = true;
      }
      std::string in = loop_.take_sent(fd_);
      for (std::size_t at = 0; at < in.size();) {
        auto space = tls_.input_space();
        std::size_t k = std::min(space.size(), in.size() - at);
        std::memcpy(space.data(), in.data() + at, k);
        tls_.received(k);
        at += k;
        drain();
        moved = true;
      }
      if (!moved) return;
    }
  }
  void write(const std::string& plaintext) {
    pending_ += plaintext;
    pump();
  }
  std::string take_plaintext() { return std::exchange(plain_, {}); }
  TlsChannel& channel() { return tls_; }

 private:
  void drain() {
    std::uint8_t buf[16384];
    std::size_t got = 0;
    while (tls_.read(buf, got) == TlsChannel::Status::kOk && got > 0)
      plain_.append(reinterpret_cast<const char*>(buf), got);
  }
  FakeLoop& loop_;
  int fd_;
  TlsChannel tls_;
  std::string pending_, plain_;
};

class SessionTlsTest : public ReceiverFixture {
 protected:
  void SetUp() override {
    ReceiverFixture::SetUp();
    make_receiver([this](ReceiverOptions& o) {
      o.secret = secret_;
      o.idle_timeout = std::chrono::seconds(60);
    });
  }
  bool logged(const std::string& what) const {
    for (const auto& l : log_)
      if (l.find(what) != std::string::npos) return true;
    return false;
  }
  // On `control`, an encrypted session: HELLO, then SEND of a 5-byte file `f`. Its token, and
  // the key its data connections prove themselves with (only this session's two ends can
  // derive it); no token if READY did not come.
  std::pair<std::optional<Token>, std::optional<TlsPsk>> open_file(TlsPeer& control) {
    control.write("HELLO ackxfer 2\n");
    control.take_plaintext();
    control.write("SEND 1 f size=5 mode=0644 mtime=1.0 chunk=65536\n");
    std::string ready = control.take_plaintext();
    EXPECT_TRUE(ready.starts_with("READY 1 token=")) << ready;
    if (!ready.starts_with("READY 1 token=")) return {};
    return {Token::from_hex(ready.substr(ready.find("token=") + 6, 32)),
            control.channel().session_data_key()};
  }
  // The frame that carries all of `f`: "hello".
  static std::string hello_frame(const Token& t) {
    std::uint8_t h[kFrameHeaderBytes];
    encode_frame_header(FrameHeader{t, 0, 5}, h);
    Digest128 dg = digest_of("hello", 5);
    return std::string(reinterpret_cast<char*>(h), sizeof h) + "hello" +
           std::string(reinterpret_cast<const char*>(dg.bytes.data()), dg.bytes.size());
  }
  std::shared_ptr<const SharedSecret> secret_ = secret_of("0123456789abcdef0123456789abcdef");
};

TEST_F(SessionTlsTest, HelloIsAnsweredInsideTheHandshakesChannel) {
  int s = session();
  TlsPeer peer(loop_, s, secret_);
  peer.write("HELLO ackxfer 2 features=link,credit\n");
  ASSERT_TRUE(peer.channel().handshake_done()) << peer.channel().error();
  EXPECT_TRUE(peer.take_plaintext().starts_with("HELLO ackxfer 2 data-port=36250 "));
  // What crossed the fake was ciphertext only.
  for (const auto& [fd, bytes] : loop_.send_log())
    EXPECT_EQ(bytes.find("HELLO"), std::string::npos);
  EXPECT_EQ(ctx_->stats.auth_failures.load(), 0u);
}

// With certificates, the receiver's first flight (its certificate chain above all) can be
// larger than a control session's 8 KiB of TLS output. The rest of it used to wait for input
// that never came (the sender was waiting for the rest of the flight), and the session died at
// its first-line deadline: a site whose chain is larger than 8 KiB could not connect at all.
// The receiver's reason for closing is its last reply. With TLS, close_notify went into the
// channel at once, and OpenSSL writes nothing after it: a reply still queued behind a send in
// flight was dropped, and the sender saw the connection end without a word.
TEST_F(SessionTlsTest, TheLastReplyBeforeClosingStillReachesTheSender) {
  int s = session();
  TlsPeer c(loop_, s, secret_);
  c.write("HELLO ackxfer 2\n");
  ASSERT_TRUE(c.take_plaintext().starts_with("HELLO ackxfer 2 "));
  loop_.set_reading(s, false);  // the next reply's send stays in flight
  c.write("MKDIR 1 d mode=0755 mtime=1.0\n");
  c.write(std::string(kMaxLineBytes + 10, 'x'));  // a line that never ends: refused, then closed
  loop_.set_reading(s, true);
  loop_.run();
  c.pump();
  const std::string got = c.take_plaintext();
  EXPECT_NE(got.find("OK 1\n"), std::string::npos) << got;
  EXPECT_NE(got.find("ERR - line-too-long"), std::string::npos) << got;
}

TEST_F(SessionTlsTest, ACertificateChainLargerThanTheOutputStillHandshakes) {
  const std::filesystem::path pki_dir = dir_.string() + "-pki";
  std::filesystem::create_directories(pki_dir);
  test::TestPki pki(pki_dir, "site");
  test::TestPki::Leaf leaf{"receiver", {"IP:127.0.0.1"}};
  for (int i = 0; i < 200; ++i)  // about 12 KiB of names
    leaf.alt_names.push_back("DNS:host-" + std::to_string(i) +
                             ".a-rather-long-domain.example.test");
  auto receiver = pki.issue("receiver", leaf);
  auto sender = pki.issue("sender", {"sender", {"DNS:sender.test"}});
  ASSERT_GT(std::filesystem::file_size(receiver.cert), 8u * 1024);
  make_receiver();
  ctx_->use_tls(TlsContext::with_certificates(TlsRole::kServer, receiver));
  int fd = session();
  TlsPeer control(loop_, fd, TlsContext::with_certificates(TlsRole::kClient, sender));
  control.channel().expect_peer("127.0.0.1");
  control.write("HELLO ackxfer 2\n");
  EXPECT_TRUE(control.channel().handshake_done()) << control.channel().error();
  EXPECT_TRUE(control.take_plaintext().starts_with("HELLO ackxfer 2 "));
  std::filesystem::remove_all(pki_dir);
}

TEST_F(SessionTlsTest, AnotherSecretIsRefusedCountedAndClosed) {
  int s = session();
  TlsPeer peer(loop_, s, secret_of("a different secret, just as long!"));
  peer.write("HELLO ackxfer 2\n");
  EXPECT_FALSE(peer.channel().handshake_done());
  EXPECT_EQ(ctx_->stats.auth_failures.load(), 1u);
  EXPECT_TRUE(logged("different secret"));
  loop_.advance(kLingerMs + 1'000);
  EXPECT_TRUE(sessions().empty());
}

// A slowloris: the first bytes of a ClientHello, then nothing. The handshake is the first
// line's time: it ends then, however little it sent.
TEST_F(SessionTlsTest, AHandshakeThatNeverFinishesEndsByTheFirstLineDeadline) {
  int s = session();
  loop_.feed(s, std::string("\x16\x03\x01\x02", 4));
  loop_.advance(kFirstLineTimeoutMs - 1'000);
  EXPECT_EQ(sessions().size(), 1u);
  loop_.advance(2'000 + kMaxClosingMs);
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->stats.timeouts.load(), 1u);
  EXPECT_TRUE(logged("no TLS handshake after connecting"));
}

TEST_F(SessionTlsTest, PlainTextIsAnsweredInPlainTextAndClosed) {
  int s = session();
  std::string r = ask(s, "HELLO ackxfer 2\n");
  EXPECT_TRUE(r.starts_with("ERR - auth-required ")) << r;
  EXPECT_EQ(ctx_->stats.auth_failures.load(), 1u);
}

TEST_F(SessionTlsTest, DataInClearIsRefusedUnlessTheReceiverAllowsIt) {
  int s = session();
  TlsPeer peer(loop_, s, secret_);
  peer.write("HELLO ackxfer 2 data=plain\n");
  EXPECT_TRUE(peer.take_plaintext().starts_with("ERR - plain-data-refused "))
      << peer.take_plaintext();
  make_receiver([this](ReceiverOptions& o) {
    o.secret = secret_;
    o.allow_unencrypted = true;
  });
  int s2 = session();
  TlsPeer peer2(loop_, s2, secret_);
  peer2.write("HELLO ackxfer 2 data=plain\n");
  std::string r = peer2.take_plaintext();
  EXPECT_TRUE(r.starts_with("HELLO ackxfer 2 ") && r.find(" data=plain") != std::string::npos) << r;
}

// A whole file over an encrypted data connection: READY on the control channel, the frame on
// a data connection that handshakes first, an encrypted ack back, and the file published.
TEST_F(SessionTlsTest, AFrameOnAnEncryptedDataConnectionIsVerifiedAndAcked) {
  int s = session();
  TlsPeer control(loop_, s, secret_);
  auto [t, key] = open_file(control);
  ASSERT_TRUE(t && key);
  // The data connection proves itself with the key only this session's two ends can derive.
  int d = data_connection();
  TlsPeer data(loop_, d, TlsContext::with_psk(TlsRole::kClient, *key));
  data.write(hello_frame(*t));
  std::string ack = data.take_plaintext();
  ASSERT_EQ(ack.size(), kFrameAckBytes);
  FrameAck a;
  ASSERT_TRUE(
      decode_frame_ack(std::span<const std::uint8_t, kFrameAckBytes>(
                           reinterpret_cast<const std::uint8_t*>(ack.data()), kFrameAckBytes),
                       a));
  EXPECT_EQ(a.status, AckStatus::kPublished);
  EXPECT_TRUE(fs::exists(dir_ / "f"));
}

// Neither the secret's own key nor the key of a session that has ended opens a data
// connection: each needs a live session's key.
TEST_F(SessionTlsTest, DataConnectionsNeedALiveSessionsKeyNotTheSecret) {
  int d1 = data_connection();
  TlsPeer with_secret(loop_, d1, secret_);
  with_secret.write("x");
  EXPECT_FALSE(with_secret.channel().handshake_done());
  EXPECT_EQ(ctx_->stats.auth_failures.load(), 1u);

  int s = session();
  TlsPeer control(loop_, s, secret_);
  control.write("HELLO ackxfer 2\n");
  auto key = control.channel().session_data_key();
  ASSERT_TRUE(key);
  EXPECT_EQ(ctx_->data_keys.size(), 1u);
  loop_.peer_closes(s);
  loop_.run();
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->data_keys.size(), 0u);
  int d2 = data_connection();
  TlsPeer late(loop_, d2, TlsContext::with_psk(TlsRole::kClient, *key));
  late.write("x");
  EXPECT_FALSE(late.channel().handshake_done());
  EXPECT_EQ(ctx_->stats.auth_failures.load(), 2u);
}

// Every encrypted session's channel is counted, from its first byte to its end: among the
// handshakes in progress until its HELLO is accepted, then in the receiver's session memory.
TEST_F(SessionTlsTest, AnEncryptedSessionsChannelIsCountedInTheSessionBudget) {
  EXPECT_EQ(ctx_->session_buffers.load(), 0u);
  int s = session();
  EXPECT_EQ(ctx_->session_buffers.load(), 0u);
  EXPECT_GE(ctx_->handshake_buffers.load(), kOpenSslChannelBytes);
  // Until the handshake is done, a connection anyone can open holds a small input buffer.
  EXPECT_EQ(loop_.recv_room(s), ControlSession::kTlsHandshakeInputBytes);
  EXPECT_LE(ctx_->handshake_buffers.load(),
            kOpenSslChannelBytes + ControlSession::kTlsHandshakeInputBytes + 8 * 1024 + 64)
      << "its channel, and an empty line buffer";
  TlsPeer control(loop_, s, secret_);
  control.write("HELLO ackxfer 2\n");
  ASSERT_TRUE(control.channel().handshake_done());
  ASSERT_EQ(sessions().size(), 1u);
  EXPECT_EQ(ctx_->handshake_buffers.load(), 0u);
  // Once it is, room for a whole record in one receive.
  EXPECT_EQ(loop_.recv_room(s), ControlSession::kTlsInputBytes);
  EXPECT_GE(ctx_->session_buffers.load(), kOpenSslChannelBytes + 17 * 1024);
  EXPECT_LT(ctx_->session_buffers.load(), kSessionBufferFloor + 2 * kOpenSslChannelBytes);
  loop_.peer_closes(s);
  loop_.run();
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->session_buffers.load(), 0u);
  EXPECT_EQ(ctx_->handshake_buffers.load(), 0u);
}

// A sender that pipelines much (its replies pile up past the floor) is read from as long as
// the sessions that said HELLO hold less than the limit together, however many connections
// sit in their handshake beside it: anyone can open those, and counted with the sessions, a
// few thousand of them (the default limit is 256 MiB, a bare handshake about 62 KiB) would
// stop the receiver reading from every such sender. Those with HELLO still count: past the
// limit, the big holder waits.
TEST_F(SessionTlsTest, HandshakesInProgressDoNotStopSessionsThatSaidHelloFromBeingRead) {
  ctx_->max_session_buffers = 256 * 1024;
  int s = session();
  TlsPeer peer(loop_, s, secret_);
  peer.write("HELLO ackxfer 2\n");
  ASSERT_TRUE(peer.take_plaintext().starts_with("HELLO ackxfer 2 "));
  std::vector<int> bare;
  for (int i = 0; i < 8; ++i)
    bare.push_back(session());
  ASSERT_EQ(sessions().size(), 9u);
  ASSERT_GT(ctx_->handshake_buffers.load(), ctx_->max_session_buffers);
  // Replies the peer does not take yet: more than the floor, within the reply queue's limit.
  loop_.set_reading(s, false);
  std::string burst;
  while (burst.size() < 24 * 1024)
    burst += "CANCEL 1\n";
  peer.write(burst);
  loop_.run();
  ASSERT_GT(ctx_->session_buffers.load(), kSessionBufferFloor + kOpenSslChannelBytes);
  EXPECT_LT(ctx_->session_buffers.load(), ctx_->max_session_buffers);
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kRecv, s), 1u) << "still read";
  // The sessions' own total over the limit: the big holder waits, the bare ones are not
  // affected (they buffer less than the floor).
  ctx_->max_session_buffers = kSessionBufferFloor;
  peer.write("CANCEL 1\n");
  loop_.run();
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kRecv, s), 0u) << "paused over the limit";
  for (int b : bare)
    EXPECT_EQ(loop_.pending(FakeLoop::Kind::kRecv, b), 1u);
  // Once the peer reads its replies, the session holds little again and is read.
  loop_.set_reading(s, true);
  loop_.run();
  peer.take_plaintext();
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kRecv, s), 1u) << "read again";
}

// Full-size buffers for encrypted data connections are for connections that carried a frame,
// from one receiver-wide budget: a connection that finds it spent reads a record at a time,
// and still delivers.
TEST_F(SessionTlsTest, EncryptedDataConnectionsBeyondTheBufferBudgetStillDeliver) {
  ctx_->max_tls_data_buffers = kTlsBufferBytes;  // one connection's worth
  int s = session();
  TlsPeer control(loop_, s, secret_);
  control.write("HELLO ackxfer 2\n");
  control.take_plaintext();
  auto key = control.channel().session_data_key();
  ASSERT_TRUE(key);

  // A connection that has only handshaken holds small buffers: the key alone is no proof
  // that it will carry anything.
  int idle = data_connection();
  TlsPeer handshake_only(loop_, idle, TlsContext::with_psk(TlsRole::kClient, *key));
  handshake_only.write("");
  ASSERT_TRUE(handshake_only.channel().handshake_done());
  EXPECT_EQ(ctx_->tls_data_buffers.load(), 0u);

  const std::string body = std::string(100'000, 'a') + std::string(100'000, 'b');
  std::vector<std::unique_ptr<TlsPeer>> conns;
  std::vector<std::size_t> in_use;
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    control.write("SEND " + std::to_string(i + 1) + " f" + std::to_string(i) +
                  " size=200000 mode=0644 mtime=1.0 chunk=1048576\n");
    std::string ready = control.take_plaintext();
    ASSERT_TRUE(ready.starts_with("READY " + std::to_string(i + 1) + " token=")) << ready;
    Token t = *Token::from_hex(ready.substr(ready.find("token=") + 6, 32));
    int d = data_connection();
    fds.push_back(d);
    auto& data = conns.emplace_back(
        std::make_unique<TlsPeer>(loop_, d, TlsContext::with_psk(TlsRole::kClient, *key)));
    std::uint8_t h[kFrameHeaderBytes];
    encode_frame_header(FrameHeader{t, 0, body.size()}, h);
    Digest128 dg = digest_of(body.data(), body.size());
    data->write(std::string(reinterpret_cast<char*>(h), sizeof h) + body +
                std::string(reinterpret_cast<const char*>(dg.bytes.data()), dg.bytes.size()));
    std::string ack = data->take_plaintext();
    ASSERT_EQ(ack.size(), kFrameAckBytes) << "connection " << i;
    FrameAck a;
    ASSERT_TRUE(
        decode_frame_ack(std::span<const std::uint8_t, kFrameAckBytes>(
                             reinterpret_cast<const std::uint8_t*>(ack.data()), kFrameAckBytes),
                         a));
    EXPECT_EQ(a.status, AckStatus::kPublished) << "connection " << i;
    std::ifstream published(dir_ / ("f" + std::to_string(i)), std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(published), {}), body);
    in_use.push_back(ctx_->tls_data_buffers.load());
  }
  EXPECT_GT(in_use[0], 0u) << "the first connection gets full-size buffers";
  EXPECT_LE(in_use[0], ctx_->max_tls_data_buffers);
  EXPECT_EQ(in_use[1], in_use[0]) << "the budget is spent: the second keeps small buffers";
  EXPECT_EQ(in_use[2], in_use[0]);
  EXPECT_EQ(ctx_->data_connections.load(), 4u);
  fds.push_back(idle);
  for (int d : fds)
    loop_.peer_closes(d);
  loop_.run();
  EXPECT_EQ(ctx_->data_connections.load(), 0u);
  EXPECT_EQ(ctx_->tls_data_buffers.load(), 0u) << "every grant is returned";
}

// A data connection that sends frames in clear where encryption is required: nothing of it is
// read, and it is gone at once.
TEST_F(SessionTlsTest, APlainDataConnectionIsClosedUnread) {
  int d = data_connection();
  std::uint8_t h[kFrameHeaderBytes];
  encode_frame_header(FrameHeader{Token::random(), 0, 5}, h);
  loop_.feed(d, std::string(reinterpret_cast<char*>(h), sizeof h));
  EXPECT_EQ(loop_.take_sent(d), "");
  EXPECT_EQ(ctx_->stats.auth_failures.load(), 1u);
  EXPECT_EQ(ctx_->data_connections.load(), 0u);
}

// A peer that never reads its replies and keeps asking: its lines wait once its replies fill
// the channel's output, reading it stops, what it holds stays within a session's limits, and
// the idle limit ends it (the lines it is not read for are no activity).
TEST_F(SessionTlsTest, AnEncryptedSessionWhosePeerNeverReadsStopsAndEndsByItsDeadline) {
  int s = session();
  TlsPeer peer(loop_, s, secret_);
  peer.write("HELLO ackxfer 2\n");
  ASSERT_TRUE(peer.take_plaintext().starts_with("HELLO ackxfer 2 "));
  loop_.set_reading(s, false);
  std::string burst;
  while (burst.size() < (1 << 20))
    burst += "CANCEL 1\n";
  peer.write(burst);
  loop_.run();
  ASSERT_EQ(sessions().size(), 1u);
  // Its unhandled lines and unread replies, each to its limit, and its channel. Past the
  // input limit it holds what the receive that crossed it and one still in flight decrypted,
  // not twice the limit (std::string's doubling would make it 256 KiB).
  EXPECT_LE(ctx_->session_buffers.load(),
            kMaxUnhandledInputBytes + 2 * ControlSession::kTlsInputBytes + kMaxQueuedReplyBytes +
                kMaxLineBytes + 2 * kOpenSslChannelBytes);
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kRecv, s), 0u) << "reading stopped";
  loop_.advance(59'000);
  EXPECT_EQ(sessions().size(), 1u);
  loop_.advance(2'000 + kMaxClosingMs + 1'000);
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->stats.timeouts.load(), 1u);
  EXPECT_EQ(ctx_->session_buffers.load(), 0u);
}

// A sender played by OpenSSL itself, so that it can ask for key updates at will: its
// ciphertext goes through the fake, as TlsPeer's does.
class RawTlsPeer {
 public:
  RawTlsPeer(FakeLoop& loop, int fd, std::shared_ptr<TlsContext> ctx)
      : loop_(loop), fd_(fd), ctx_(std::move(ctx)), ssl_(SSL_new(ctx_->ctx()), SSL_free) {
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_.get(), rbio_, wbio_);
    SSL_set_connect_state(ssl_.get());
  }
  // Runs the handshake, then sends `plaintext`; returns what came back.
  std::string handshake_and_write(const std::string& plaintext) {
    std::string reply;
    bool said = false;
    for (int i = 0; i < 10; ++i) {
      SSL_do_handshake(ssl_.get());
      if (SSL_is_init_finished(ssl_.get()) && !std::exchange(said, true))
        SSL_write(ssl_.get(), plaintext.data(), static_cast<int>(plaintext.size()));
      loop_.feed(fd_, take_output());
      reply += read();
    }
    return reply;
  }
  // `n` records, each asking the other side to update its keys too.
  std::string key_update_requests(int n) {
    std::string flood;
    for (int k = 0; k < n; ++k) {
      EXPECT_EQ(SSL_key_update(ssl_.get(), SSL_KEY_UPDATE_REQUESTED), 1);
      EXPECT_EQ(SSL_do_handshake(ssl_.get()), 1);
      flood += take_output();
    }
    return flood;
  }
  // Takes in what the receiver sent (its key updates, acks); returns its plaintext.
  std::string read() {
    std::string in = loop_.take_sent(fd_);
    BIO_write(rbio_, in.data(), static_cast<int>(in.size()));
    std::string plain;
    char buf[4096];
    for (int n; (n = SSL_read(ssl_.get(), buf, sizeof buf)) > 0;)
      plain.append(buf, static_cast<std::size_t>(n));
    return plain;
  }

 private:
  std::string take_output() {
    std::string out(BIO_ctrl_pending(wbio_), '\0');
    if (!out.empty()) BIO_read(wbio_, out.data(), static_cast<int>(out.size()));
    return out;
  }
  FakeLoop& loop_;
  int fd_;
  std::shared_ptr<TlsContext> ctx_;
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl_;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;
};

// The same peer, asking for a TLS KeyUpdate in every record instead of sending lines: each
// request makes the session write a KeyUpdate of its own, which the peer never reads. The
// session reads no further once its channel's output is full, and a flood of key updates is
// no activity: the idle limit ends the session.
TEST_F(SessionTlsTest, AKeyUpdateFloodStopsAtTheChannelsOutputAndIsNoActivity) {
  int s = session();
  RawTlsPeer peer(loop_, s, TlsContext::with_secret(TlsRole::kClient, secret_));
  std::string reply = peer.handshake_and_write("HELLO ackxfer 2\n");
  ASSERT_TRUE(reply.starts_with("HELLO ackxfer 2 ")) << reply;
  loop_.set_reading(s, false);
  loop_.feed(s, peer.key_update_requests(20'000));
  ASSERT_EQ(sessions().size(), 1u);
  EXPECT_LE(ctx_->session_buffers.load(), kSessionBufferFloor + 2 * kOpenSslChannelBytes);
  EXPECT_EQ(loop_.pending(FakeLoop::Kind::kRecv, s), 0u) << "reading stopped";
  loop_.advance(59'000);
  EXPECT_EQ(sessions().size(), 1u);
  loop_.advance(2'000 + kMaxClosingMs + 1'000);
  EXPECT_TRUE(sessions().empty());
  EXPECT_EQ(ctx_->stats.timeouts.load(), 1u);
}

// On a data connection too, key updates are no activity, even from a peer that reads every
// answer: after its frame, a connection that carries nothing but key updates is idle, and
// goes by the idle limit (it used to stay as long as the updates came).
TEST_F(SessionTlsTest, ADataConnectionCarryingOnlyKeyUpdatesIsIdle) {
  int s = session();
  TlsPeer control(loop_, s, secret_);
  auto [t, key] = open_file(control);
  ASSERT_TRUE(t && key);
  int d = data_connection();
  RawTlsPeer data(loop_, d, TlsContext::with_psk(TlsRole::kClient, *key));
  std::string ack = data.handshake_and_write(hello_frame(*t));
  ASSERT_EQ(ack.size(), kFrameAckBytes);
  ASSERT_EQ(ctx_->data_connections.load(), 1u);
  // 70 s of key updates, 20 a second, every answer read; the session stays busy meanwhile.
  for (int second = 0; second < 70; ++second) {
    loop_.feed(d, data.key_update_requests(20));
    data.read();
    control.write("MKDIR " + std::to_string(100 + second) + " dir mode=0755 mtime=1.0\n");
    loop_.advance(1'000);
  }
  EXPECT_EQ(ctx_->data_connections.load(), 0u);
  EXPECT_GE(ctx_->stats.timeouts.load(), 1u);
}

}  // namespace
}  // namespace ackxfer::test
