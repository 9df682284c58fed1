// The TLS 1.3 record layer (engine/tls/tls_channel.h) between two channels in memory: the key
// from the secret, the handshake, data both ways, and what a hostile or broken peer gets.
#include "tls/tls_channel.h"

#include "test_pki.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace ackxfer {
namespace {

std::shared_ptr<const SharedSecret> secret(const std::string& s) {
  return std::make_shared<const SharedSecret>(s);
}

// Moves whatever `from` has to send into `to`'s input, as the network would. Returns bytes moved.
std::size_t carry(TlsChannel& from, TlsChannel& to, std::string* recording = nullptr) {
  std::size_t moved = 0;
  for (;;) {
    auto out = from.output();
    auto space = to.input_space();
    std::size_t n = std::min(out.size(), space.size());
    if (n == 0) return moved;
    std::memcpy(space.data(), out.data(), n);
    if (recording) recording->append(reinterpret_cast<const char*>(out.data()), n);
    to.received(n);
    from.sent(n);
    moved += n;
  }
}

// Runs both handshakes to the end (or until neither side moves).
void handshake(TlsChannel& c, TlsChannel& s, std::string* recording = nullptr) {
  for (int i = 0; i < 20; ++i) {
    auto a = c.handshake();
    auto b = s.handshake();
    std::size_t moved = carry(c, s, recording) + carry(s, c, recording);
    if ((a == TlsChannel::Status::kOk && b == TlsChannel::Status::kOk) ||
        (a == TlsChannel::Status::kFailed && b == TlsChannel::Status::kFailed) || moved == 0)
      return;
  }
}

// Sends `data` from `w` to `r` through the channels; returns what `r` read.
std::string transfer(TlsChannel& w, TlsChannel& r, const std::string& data,
                     std::string* recording = nullptr) {
  std::string got;
  std::size_t off = 0;
  std::vector<std::uint8_t> buf(100000);
  for (int guard = 0; guard < 100000 && got.size() < data.size(); ++guard) {
    if (off < data.size()) {
      std::size_t taken = 0;
      auto st = w.write(
          {reinterpret_cast<const std::uint8_t*>(data.data()) + off, data.size() - off}, taken);
      EXPECT_TRUE(st == TlsChannel::Status::kOk || st == TlsChannel::Status::kWantOutput);
      off += taken;
    }
    carry(w, r, recording);
    std::size_t n = 0;
    auto st = r.read(buf, n);
    got.append(reinterpret_cast<const char*>(buf.data()), n);
    if (st == TlsChannel::Status::kFailed) break;
    carry(r, w, recording);  // anything the reader has to say (a KeyUpdate, an alert)
  }
  return got;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((i * 2654435761u) >> 13);
  return s;
}

struct Pair {
  explicit Pair(const std::string& cs = "correct horse battery staple 42",
                const std::string& ss = "correct horse battery staple 42",
                std::uint64_t records_per_key = kRecordsPerKey)
      : client(TlsContext::with_secret(TlsRole::kClient, secret(cs)), kTlsBufferBytes,
               records_per_key),
        server(TlsContext::with_secret(TlsRole::kServer, secret(ss)), kTlsBufferBytes,
               records_per_key) {}
  TlsChannel client, server;
};

TEST(TlsKey, IsDerivedFromTheSecretNeverTheSecretItself) {
  auto a = secret("0123456789abcdef0123456789abcdef");
  auto b = secret("0123456789abcdef0123456789abcdeg");
  auto ka = a->tls_psk();
  EXPECT_EQ(ka, secret("0123456789abcdef0123456789abcdef")->tls_psk()) << "deterministic";
  EXPECT_NE(ka, b->tls_psk());
  EXPECT_NE(std::memcmp(ka.data(), "0123456789abcdef0123456789abcdef", 32), 0);
  EXPECT_EQ(a->tls_psk_identity().rfind("ackxfer2-", 0), 0u);
  EXPECT_EQ(a->tls_psk_identity().size(), 9u + 16u);
  EXPECT_NE(a->tls_psk_identity(), b->tls_psk_identity());
  // The identity is not the key: neither contains the other.
  std::string id = a->tls_psk_identity();
  EXPECT_EQ(std::search(ka.begin(), ka.end(), id.begin() + 9, id.end()), ka.end());
}

TEST(TlsChannel, SameSecretHandshakesAndCarriesDataBothWays) {
  Pair p;
  handshake(p.client, p.server);
  ASSERT_TRUE(p.client.handshake_done()) << p.client.error();
  ASSERT_TRUE(p.server.handshake_done()) << p.server.error();
  auto ctx = TlsContext::with_secret(TlsRole::kClient, secret("x"));
  EXPECT_EQ(p.client.cipher(), ctx->preferred_cipher());
  EXPECT_EQ(p.server.cipher(), p.client.cipher());
  std::string up = pattern(3 << 20), down = pattern(70000);
  EXPECT_EQ(transfer(p.client, p.server, up), up);
  EXPECT_EQ(transfer(p.server, p.client, down), down);
}

TEST(TlsChannel, ADifferentSecretFailsOnBothSidesAndTheReceiverSaysWhy) {
  Pair p("the sender's secret, long enough", "the receiver's secret, also long");
  handshake(p.client, p.server);
  EXPECT_FALSE(p.client.handshake_done());
  EXPECT_FALSE(p.server.handshake_done());
  EXPECT_EQ(p.server.handshake(), TlsChannel::Status::kFailed);
  // The cause first, OpenSSL's wording for it after.
  EXPECT_EQ(p.server.error().find("TLS handshake failed: the peer's key is derived from a "
                                  "different secret ("),
            0u)
      << p.server.error();
  carry(p.server, p.client);  // the alert
  EXPECT_EQ(p.client.handshake(), TlsChannel::Status::kFailed);
  EXPECT_FALSE(p.client.error().empty());
}

TEST(TlsChannel, AFlippedCiphertextByteEndsTheConnectionWithAnAlert) {
  Pair p;
  handshake(p.client, p.server);
  ASSERT_TRUE(p.server.handshake_done());
  std::string data = pattern(40000);
  std::size_t taken = 0;
  ASSERT_EQ(
      p.client.write({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()}, taken),
      TlsChannel::Status::kOk);
  auto out = p.client.output();
  ASSERT_GT(out.size(), 1000u);
  std::vector<std::uint8_t> wire(out.begin(), out.end());
  p.client.sent(out.size());
  wire[500] ^= 0x01;  // inside the first record's ciphertext
  auto space = p.server.input_space();
  std::memcpy(space.data(), wire.data(), wire.size());
  p.server.received(wire.size());
  std::vector<std::uint8_t> buf(65536);
  std::size_t n = 0;
  EXPECT_EQ(p.server.read(buf, n), TlsChannel::Status::kFailed);
  EXPECT_EQ(n, 0u) << "not one byte of a forged record is handed on";
  EXPECT_FALSE(p.server.error().empty());
  EXPECT_GT(p.server.output().size(), 0u) << "an alert for the peer";
  carry(p.server, p.client);
  EXPECT_EQ(p.client.read(buf, n), TlsChannel::Status::kFailed);
}

TEST(TlsChannel, GarbageOrPlaintextInsteadOfAClientHelloFailsCleanly) {
  for (std::string junk : {std::string("HELLO ackxfer 2 features=link\n"), pattern(5000),
                           std::string("\x16\x03\x01\xff\xff", 5) + pattern(2000)}) {
    TlsChannel server(TlsContext::with_secret(TlsRole::kServer, secret("s3cret s3cret s3cret")));
    auto space = server.input_space();
    std::memcpy(space.data(), junk.data(), junk.size());
    server.received(junk.size());
    EXPECT_EQ(server.handshake(), TlsChannel::Status::kFailed) << junk.substr(0, 20);
    EXPECT_FALSE(server.error().empty());
    std::vector<std::uint8_t> buf(100);
    std::size_t n = 0;
    EXPECT_EQ(server.read(buf, n), TlsChannel::Status::kFailed);
  }
}

TEST(TlsChannel, AHandshakeThatNeverFinishesOnlyWaits) {
  // The deadline is the caller's (the session's); the channel neither fails nor grows.
  Pair p;
  p.client.handshake();
  auto hello = p.client.output();
  ASSERT_GT(hello.size(), 10u);
  auto space = p.server.input_space();
  std::memcpy(space.data(), hello.data(), hello.size() / 2);
  p.server.received(hello.size() / 2);
  EXPECT_EQ(p.server.handshake(), TlsChannel::Status::kWantInput);
  EXPECT_EQ(p.server.handshake(), TlsChannel::Status::kWantInput);
  EXPECT_EQ(p.server.output().size(), 0u);
}

TEST(TlsChannel, InputIsBounded) {
  TlsChannel server(TlsContext::with_secret(TlsRole::kServer, secret("bounded bounded")));
  auto space = server.input_space();
  EXPECT_EQ(space.size(), kTlsBufferBytes);
  server.received(space.size());
  EXPECT_TRUE(server.input_space().empty());
  // Claiming more than there was room for is a bug in the caller: the channel fails rather
  // than pretend bytes arrived.
  server.received(1);
  EXPECT_EQ(server.handshake(), TlsChannel::Status::kFailed);
  EXPECT_NE(server.error().find("more ciphertext"), std::string::npos) << server.error();
}

TEST(TlsChannel, WithoutAesInstructionsChaChaIsChosenAndTheReceiverPreferenceWins) {
  auto key = secret("cipher order cipher order");
  for (auto [client_order, server_order, want] :
       {std::tuple{TlsCipherOrder::kChaChaFirst, TlsCipherOrder::kChaChaFirst,
                   "TLS_CHACHA20_POLY1305_SHA256"},
        std::tuple{TlsCipherOrder::kAesFirst, TlsCipherOrder::kChaChaFirst,
                   "TLS_CHACHA20_POLY1305_SHA256"},
        std::tuple{TlsCipherOrder::kChaChaFirst, TlsCipherOrder::kAesFirst,
                   "TLS_AES_128_GCM_SHA256"}}) {
    TlsChannel c(TlsContext::with_secret(TlsRole::kClient, key, client_order));
    TlsChannel s(TlsContext::with_secret(TlsRole::kServer, key, server_order));
    handshake(c, s);
    ASSERT_TRUE(c.handshake_done()) << c.error();
    EXPECT_EQ(c.cipher(), want);
    std::string data = pattern(100000);
    EXPECT_EQ(transfer(c, s, data), data);
  }
}

TEST(TlsChannel, SmallBuffersStillCarryLargeWrites) {
  auto key = secret("small buffers small buffers");
  TlsChannel c(TlsContext::with_secret(TlsRole::kClient, key), kMinTlsBufferBytes);
  TlsChannel s(TlsContext::with_secret(TlsRole::kServer, key), kMinTlsBufferBytes);
  handshake(c, s);
  ASSERT_TRUE(s.handshake_done()) << s.error();
  std::string data = pattern(300000);
  EXPECT_EQ(transfer(c, s, data), data);
}

// One write fills the output with as many records as it holds (one send carries them all),
// not one 16 KiB record per call; a record cut off by the full output goes out whole with the
// next call, which starts with the same bytes, and the reader gets every byte in order.
TEST(TlsChannel, AWriteTakesAsManyRecordsAsTheOutputHolds) {
  Pair p;
  handshake(p.client, p.server);
  ASSERT_TRUE(p.server.handshake_done()) << p.server.error();
  const std::string data = pattern(3 << 20);
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(data.data());
  std::string got;
  std::vector<std::uint8_t> buf(1 << 20);
  std::size_t off = 0, writes = 0;
  while (got.size() < data.size() && writes < 100) {
    if (off < data.size()) {
      std::size_t taken = 0;
      const std::size_t left = data.size() - off;
      ASSERT_EQ(p.client.write({bytes + off, left}, taken), TlsChannel::Status::kOk)
          << p.client.error();
      ++writes;
      if (left > kTlsBufferBytes) {
        // A full output less at most the record it could not finish, and that record.
        EXPECT_GE(p.client.output_pending(), kTlsBufferBytes - 2 * (16 * 1024 + 256)) << writes;
        EXPECT_GE(taken, kTlsBufferBytes - 3 * 16 * 1024) << writes;
      } else {
        EXPECT_EQ(taken, left) << writes;
      }
      off += taken;
    }
    carry(p.client, p.server);
    std::size_t n = 0;
    do {
      ASSERT_NE(p.server.read(buf, n), TlsChannel::Status::kFailed) << p.server.error();
      got.append(reinterpret_cast<const char*>(buf.data()), n);
    } while (n > 0);
  }
  EXPECT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
  EXPECT_LE(writes, data.size() / (kTlsBufferBytes - 3 * 16 * 1024) + 1);
}

TEST(TlsChannel, SendingKeysAreUpdatedAfterTheRecordLimit) {
  Pair p("key update key update", "key update key update", 8);
  handshake(p.client, p.server);
  ASSERT_TRUE(p.client.handshake_done());
  std::string up = pattern(2 << 20), down = pattern(1 << 20);  // 128 and 64 records
  EXPECT_EQ(transfer(p.client, p.server, up), up);
  EXPECT_EQ(transfer(p.server, p.client, down), down);
  EXPECT_GE(p.client.key_updates_sent(), 10u);
  EXPECT_GE(p.server.key_updates_sent(), 5u);
  // Every update sent was received and applied: the data after it still decrypted. (The
  // last one follows the last data record: one more read takes it in.)
  std::vector<std::uint8_t> buf(100);
  std::size_t n = 0;
  EXPECT_EQ(p.server.read(buf, n), TlsChannel::Status::kWantInput);
  EXPECT_EQ(p.client.read(buf, n), TlsChannel::Status::kWantInput);
  EXPECT_EQ(p.server.key_updates_received(), p.client.key_updates_sent());
  EXPECT_EQ(p.client.key_updates_received(), p.server.key_updates_sent());
}

TEST(TlsChannel, TheWireCarriesNoPlaintext) {
  Pair p;
  std::string recording;
  handshake(p.client, p.server, &recording);
  ASSERT_TRUE(p.server.handshake_done());
  std::string name = "SEND 7 payroll/2026-salaries.xlsx size=123456";
  std::string body = "CONFIDENTIAL: " + pattern(50000) + " END OF CONFIDENTIAL";
  EXPECT_EQ(transfer(p.client, p.server, name, &recording), name);
  EXPECT_EQ(transfer(p.client, p.server, body, &recording), body);
  EXPECT_GT(recording.size(), name.size() + body.size());
  EXPECT_EQ(recording.find("payroll"), std::string::npos);
  EXPECT_EQ(recording.find("CONFIDENTIAL"), std::string::npos);
  EXPECT_EQ(recording.find(body.substr(20000, 64)), std::string::npos);
  EXPECT_EQ(recording.find("correct horse"), std::string::npos) << "nor the secret";
}

TEST(TlsChannel, CloseNotifyEndsTheSessionCleanly) {
  Pair p;
  handshake(p.client, p.server);
  p.client.close();
  carry(p.client, p.server);
  std::vector<std::uint8_t> buf(100);
  std::size_t n = 0;
  EXPECT_EQ(p.server.read(buf, n), TlsChannel::Status::kClosed);
}

// A peer that asks for a KeyUpdate in every record it sends and never reads the answers: each
// request makes the receiving side write a KeyUpdate of its own. OpenSSL itself plays the
// peer, so that it can ask at will. Runs `requests` of them into a channel whose output ring
// is `out_bytes`, then lets the peer read; returns how much more malloc holds at the stall
// than before the flood (0 under the sanitizers, whose allocator mallinfo2 does not see).
std::size_t key_update_flood(std::size_t out_bytes, int requests) {
  const std::string pw = "correct horse battery staple 42";
  auto cctx = TlsContext::with_secret(TlsRole::kClient, secret(pw));
  TlsChannel server(TlsContext::with_secret(TlsRole::kServer, secret(pw)), 32 * 1024,
                    kRecordsPerKey, out_bytes);
  SSL* ssl = SSL_new(cctx->ctx());
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_connect_state(ssl);
  std::unique_ptr<SSL, decltype(&SSL_free)> owner(ssl, SSL_free);
  auto to_server = [&] {
    std::size_t moved = 0;
    for (;;) {
      auto space = server.input_space();
      int n = space.empty() ? 0 : BIO_read(wbio, space.data(), static_cast<int>(space.size()));
      if (n <= 0) return moved;
      server.received(static_cast<std::size_t>(n));
      moved += static_cast<std::size_t>(n);
    }
  };
  std::vector<std::uint8_t> buf(4096);
  std::size_t got = 0;
  auto to_client = [&] {
    auto out = server.output();
    if (!out.empty()) {
      BIO_write(rbio, out.data(), static_cast<int>(out.size()));
      server.sent(out.size());
    }
    SSL_read(ssl, buf.data(), static_cast<int>(buf.size()));
  };
  auto ask = [&] {
    EXPECT_EQ(SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    EXPECT_EQ(SSL_do_handshake(ssl), 1);
  };
  for (int i = 0; i < 20 && !server.handshake_done(); ++i) {
    SSL_do_handshake(ssl);
    to_server();
    server.handshake();
    to_client();
  }
  EXPECT_TRUE(SSL_is_init_finished(ssl) && server.handshake_done()) << server.error();
  // A few requests answered and read first, so that what OpenSSL allocates once (its write
  // buffer) is in place before memory is counted.
  constexpr int kWarmUp = 3;
  for (int k = 0; k < kWarmUp; ++k) {
    ask();
    to_server();
    server.read(buf, got);
    to_client();
  }
  EXPECT_EQ(server.key_updates_received(), std::uint64_t{kWarmUp});
  // The flood, all of it written before the receiving side sees any of it.
  for (int k = 0; k < requests; ++k)
    ask();
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  const std::size_t before = mallinfo2().uordblks;
#endif
  TlsChannel::Status st = TlsChannel::Status::kOk;
  for (int round = 0; round < 100000; ++round) {
    const std::size_t moved = to_server();
    st = server.read(buf, got);
    if (st == TlsChannel::Status::kWantInput ? moved == 0 : st != TlsChannel::Status::kOk) break;
  }
  EXPECT_EQ(st, TlsChannel::Status::kWantOutput) << server.error();
  EXPECT_EQ(server.output_pending(), out_bytes);
  EXPECT_LT(server.key_updates_received(), std::uint64_t(kWarmUp + requests));
  // It takes what fits in its input and no more: the loop stops receiving from the peer.
  to_server();
  EXPECT_TRUE(server.input_space().empty());
  EXPECT_GT(BIO_ctrl_pending(wbio), 0u) << "the peer still has requests to send";
  EXPECT_EQ(server.read(buf, got), TlsChannel::Status::kWantOutput);
  std::size_t grown = 0;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  grown = mallinfo2().uordblks - before;
#endif
  // Once the peer reads, every request is answered and the connection carries data again.
  for (int round = 0;
       round < 100000 && server.key_updates_received() < std::uint64_t(kWarmUp + requests);
       ++round) {
    to_client();
    to_server();
    server.read(buf, got);
  }
  EXPECT_EQ(server.key_updates_received(), std::uint64_t(kWarmUp + requests));
  EXPECT_EQ(SSL_write(ssl, "after the flood", 15), 15);
  std::string text;
  for (int i = 0; i < 10 && text.size() < 15; ++i) {
    to_client();
    to_server();
    if (server.read(buf, got) == TlsChannel::Status::kOk)
      text.append(reinterpret_cast<const char*>(buf.data()), got);
  }
  EXPECT_EQ(text, "after the flood");
  return grown;
}

// What the flood can make a channel hold is its output ring: once that is full the channel
// reads no further (kWantOutput), its input fills, and the loop stops receiving from the peer.
// At the stall OpenSSL holds a record being written and the records not yet read (about 30 KiB
// more than when idle, with OpenSSL 3.0): the same however many requests came before it, and
// less than the kOpenSslChannelBytes the receiver's budgets count for it.
TEST(TlsChannel, AKeyUpdateFloodFromAPeerThatNeverReadsIsBoundedByTheOutputRing) {
  const std::size_t small = key_update_flood(16 * 1024, 5000);
  const std::size_t large = key_update_flood(128 * 1024, 20000);  // 8 times the answers held
  EXPECT_LE(small, kOpenSslChannelBytes);
  EXPECT_LE(large, small + 4096) << "OpenSSL holds something for every request";
}

// A client made with OpenSSL itself, with the secret, offering key exchange `groups`: runs its
// handshake against a receiver's channel. Returns the group it negotiated (0: none, the
// handshake failed) and leaves the receiver's first answer in `first_record_type`.
int handshake_offering(const char* groups, TlsChannel& server, int& first_record_type) {
  auto cctx = TlsContext::with_secret(TlsRole::kClient, secret("correct horse battery staple 42"));
  SSL* ssl = SSL_new(cctx->ctx());
  std::unique_ptr<SSL, decltype(&SSL_free)> owner(ssl, SSL_free);
  EXPECT_EQ(SSL_set1_groups_list(ssl, groups), 1) << groups;
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_connect_state(ssl);
  first_record_type = -1;
  for (int i = 0; i < 20 && !SSL_is_init_finished(ssl); ++i) {
    SSL_do_handshake(ssl);
    for (;;) {
      auto space = server.input_space();
      int n = space.empty() ? 0 : BIO_read(wbio, space.data(), static_cast<int>(space.size()));
      if (n <= 0) break;
      server.received(static_cast<std::size_t>(n));
    }
    if (server.handshake() == TlsChannel::Status::kFailed && server.output().empty()) break;
    auto out = server.output();
    if (!out.empty()) {
      if (first_record_type < 0) first_record_type = out[0];
      BIO_write(rbio, out.data(), static_cast<int>(out.size()));
      server.sent(out.size());
    }
  }
  return SSL_is_init_finished(ssl) ? SSL_get_negotiated_group(ssl) : 0;
}

// OpenSSL's default groups include ffdhe2048 to ffdhe8192, and a server takes the first the
// client offers: an ffdhe8192 key share (random bytes will do) cost the receiver's worker about
// 140 ms of CPU, 400 times X25519, before the peer had proven anything. Elliptic curves only.
TEST(TlsChannel, TheReceiverNeverDoesFiniteFieldKeyExchange) {
  const std::string pw = "correct horse battery staple 42";
  {
    TlsChannel server(TlsContext::with_secret(TlsRole::kServer, secret(pw)));
    int first = 0;
    EXPECT_EQ(handshake_offering("ffdhe8192", server, first), 0);
    EXPECT_FALSE(server.handshake_done());
    EXPECT_EQ(first, 0x15) << "its first answer is an alert, not a ServerHello";
  }
  {
    TlsChannel server(TlsContext::with_secret(TlsRole::kServer, secret(pw)));
    int first = 0;
    EXPECT_EQ(handshake_offering("ffdhe2048:X25519", server, first), NID_X25519);
    EXPECT_TRUE(server.handshake_done()) << server.error();
  }
}

// The loop receives into input_space() while OpenSSL may read what is already there (a
// handshake driven from a send's completion). Once OpenSSL had read everything, the channel
// moved its input back to the front, and the receive then outstanding landed where the channel
// no longer looked: the peer's next bytes were read as whatever was there before.
TEST(TlsChannel, BytesReceivedWhileOpenSslReadsTheEarlierOnesStayInOrder) {
  Pair p;
  ASSERT_EQ(p.client.handshake(), TlsChannel::Status::kWantInput);
  auto hello = p.client.output();
  const std::vector<std::uint8_t> bytes(hello.begin(), hello.end());
  p.client.sent(hello.size());
  ASSERT_GT(bytes.size(), 100u);
  auto first = p.server.input_space();
  std::memcpy(first.data(), bytes.data(), 100);
  p.server.received(100);
  auto outstanding = p.server.input_space();                        // the next receive, armed
  EXPECT_EQ(p.server.handshake(), TlsChannel::Status::kWantInput);  // OpenSSL reads all 100
  std::memcpy(outstanding.data(), bytes.data() + 100, bytes.size() - 100);  // it completes
  p.server.received(bytes.size() - 100);
  handshake(p.client, p.server);
  EXPECT_TRUE(p.server.handshake_done()) << p.server.error();
  EXPECT_TRUE(p.client.handshake_done()) << p.client.error();
}

// Nine bytes from anyone: a record holding only a ClientHello's header, claiming 131,392 bytes.
// OpenSSL reserved (and zeroed) that much at once and held it until the handshake deadline:
// about three times what the receiver's budgets count per connection. Refused now, before
// OpenSSL sees the header, however the peer splits it.
TEST(TlsChannel, AHandshakeMessageClaimingMoreThanAnyHelloNeedsIsRefusedBeforeOpenSslSeesIt) {
  const std::vector<std::uint8_t> hello_header = {0x16, 0x03, 0x01, 0x00, 0x04,
                                                  0x01, 0x02, 0x01, 0x40};
  // The same header over two records, its length split between them.
  const std::vector<std::uint8_t> split = {0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x02,
                                           0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x40};
  for (const auto* bytes : {&hello_header, &split}) {
    for (std::size_t piece : {bytes->size(), std::size_t{1}}) {
      TlsChannel server(
          TlsContext::with_secret(TlsRole::kServer, secret("correct horse battery staple 42")));
      server.handshake();
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
      const std::size_t before = mallinfo2().uordblks;
#endif
      for (std::size_t off = 0; off < bytes->size(); off += piece) {
        auto space = server.input_space();
        const std::size_t n = std::min(piece, bytes->size() - off);
        std::memcpy(space.data(), bytes->data() + off, n);
        server.received(n);
        server.handshake();
      }
      EXPECT_EQ(server.handshake(), TlsChannel::Status::kFailed);
      EXPECT_NE(server.error().find("claims 131392 bytes"), std::string::npos) << server.error();
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
      EXPECT_LT(mallinfo2().uordblks - before, 8u * 1024) << "piece " << piece;
#endif
    }
  }
}

TEST(HandshakeGuard, FollowsRecordsAndMessagesHoweverTheyAreSplit) {
  // A 3-byte alert, a ClientHello of 6 000 bytes over two records, a change_cipher_spec: within
  // bounds, byte by byte or whole.
  std::vector<std::uint8_t> wire = {0x15, 0x03, 0x03, 0x00, 0x03, 0x01, 0xff, 0xff};
  std::vector<std::uint8_t> body = {0x01, 0x00, 0x17, 0x70};  // 6 000
  body.resize(4 + 6000, 0xee);
  for (std::size_t at : {std::size_t{0}, std::size_t{3000}}) {
    const std::size_t len = at == 0 ? 3000 : body.size() - 3000;
    wire.insert(wire.end(), {0x16, 0x03, 0x03, static_cast<std::uint8_t>(len >> 8),
                             static_cast<std::uint8_t>(len & 0xff)});
    wire.insert(wire.end(), body.begin() + static_cast<std::ptrdiff_t>(at),
                body.begin() + static_cast<std::ptrdiff_t>(at + len));
  }
  wire.insert(wire.end(), {0x14, 0x03, 0x03, 0x00, 0x01, 0x01});
  for (std::size_t piece : {wire.size(), std::size_t{1}, std::size_t{7}}) {
    HandshakeGuard g;
    for (std::size_t off = 0; off < wire.size(); off += piece)
      EXPECT_FALSE(g.feed({wire.data() + off, std::min(piece, wire.size() - off)}));
    EXPECT_FALSE(g.standing_down());
    // The next message claims 8 KiB + 1: refused.
    const std::uint8_t big[] = {0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x20, 0x01};
    auto why = g.feed(big);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("claims 8193 bytes"), std::string::npos) << *why;
  }
  // An encrypted record: the plaintext phase is over, and what follows is not ours to parse.
  HandshakeGuard g;
  const std::uint8_t encrypted[] = {0x17, 0x03, 0x03, 0x00, 0x04, 0x16, 0xff, 0xff, 0xff};
  EXPECT_FALSE(g.feed(encrypted));
  EXPECT_TRUE(g.standing_down());
}

// ---- X.509 (--tls-cert, --tls-key, --tls-ca) ----

// The receiver counts every encrypted session's memory (TlsChannel::held_bytes) against its
// session budget; OpenSSL's share is an estimate, checked here against what malloc says a
// channel holds after a handshake and data both ways.
TEST(TlsChannel, HeldBytesCoverWhatOpenSslReallyHolds) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "mallinfo2 does not see the sanitizer's allocator";
#else
  auto cctx = TlsContext::with_secret(TlsRole::kClient, secret("correct horse battery staple 42"));
  auto sctx = TlsContext::with_secret(TlsRole::kServer, secret("correct horse battery staple 42"));
  const std::string data = pattern(200000);
  std::vector<std::unique_ptr<TlsChannel> > channels;
  constexpr int kPairs = 20;
  std::size_t held = 0;
  const std::size_t before = mallinfo2().uordblks;
  for (int i = 0; i < kPairs; ++i) {
    TlsChannel* c =
        channels.emplace_back(std::make_unique<TlsChannel>(cctx, kTlsBufferBytes, kRecordsPerKey))
            .get();
    TlsChannel* s =
        channels.emplace_back(std::make_unique<TlsChannel>(sctx, kTlsBufferBytes, kRecordsPerKey))
            .get();
    handshake(*c, *s);
    ASSERT_TRUE(c->handshake_done() && s->handshake_done());
    ASSERT_EQ(transfer(*c, *s, data).size(), data.size());
    ASSERT_EQ(transfer(*s, *c, data).size(), data.size());
    held += c->held_bytes() + s->held_bytes();
  }
  const std::size_t used = mallinfo2().uordblks - before;
  const std::size_t per_channel = used / (2 * kPairs);
  const std::size_t estimated = held / (2 * kPairs);
  EXPECT_LE(per_channel, estimated + estimated / 8)
      << "a channel holds " << per_channel << " bytes; held_bytes() says " << estimated
      << ": raise kOpenSslChannelBytes";
  EXPECT_GE(per_channel + kOpenSslChannelBytes / 2, estimated)
      << "a channel holds " << per_channel << " bytes; held_bytes() says " << estimated;
#endif
}

class TlsCertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ackxfer-pki-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    dir_ = tmpl;
    pki_ = std::make_unique<test::TestPki>(dir_, "site");
    other_ = std::make_unique<test::TestPki>(dir_, "elsewhere");
    receiver_ = pki_->issue("receiver", {"receiver", {"DNS:receiver.test", "IP:127.0.0.1"}});
    sender_ = pki_->issue("sender", {"sender", {"DNS:sender.test"}});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs a handshake between a sender using `s` and a receiver using `r`; the sender dials
  // `name`. Returns whether both sides finished.
  bool connect(const TlsCertificates& s, const TlsCertificates& r, const std::string& name) {
    client_ = std::make_unique<TlsChannel>(TlsContext::with_certificates(TlsRole::kClient, s));
    server_ = std::make_unique<TlsChannel>(TlsContext::with_certificates(TlsRole::kServer, r));
    client_->expect_peer(name);
    handshake(*client_, *server_);
    // Whatever alert the failing side has left still reaches the other.
    carry(*client_, *server_);
    carry(*server_, *client_);
    client_->handshake();
    server_->handshake();
    return client_->handshake_done() && server_->handshake_done();
  }

  std::filesystem::path dir_;
  std::unique_ptr<test::TestPki> pki_, other_;
  TlsCertificates receiver_, sender_;
  std::unique_ptr<TlsChannel> client_, server_;
};

TEST_F(TlsCertTest, MutualCertificatesFromOneCaConnectByNameOrAddress) {
  for (std::string name : {"127.0.0.1", "receiver.test"}) {
    ASSERT_TRUE(connect(sender_, receiver_, name))
        << name << ": " << client_->error() << " / " << server_->error();
    std::string data = pattern(200000);
    EXPECT_EQ(transfer(*client_, *server_, data), data);
  }
}

TEST_F(TlsCertTest, AReceiverCertificateForAnotherNameIsRefused) {
  EXPECT_FALSE(connect(sender_, receiver_, "elsewhere.test"));
  EXPECT_NE(client_->error().find("certificate"), std::string::npos) << client_->error();
  EXPECT_FALSE(connect(sender_, receiver_, "127.0.0.2"));
  EXPECT_FALSE(client_->error().empty());
}

TEST_F(TlsCertTest, ACertificateFromAnotherCaIsRefusedBySender) {
  auto foreign = other_->issue("foreign-receiver", {"r", {"IP:127.0.0.1"}});
  foreign.ca = receiver_.ca;  // the receiver trusts our CA; its own certificate is foreign
  EXPECT_FALSE(connect(sender_, foreign, "127.0.0.1"));
  EXPECT_NE(client_->error().find("local issuer"), std::string::npos) << client_->error();
}

TEST_F(TlsCertTest, ASenderCertificateFromAnotherCaIsRefusedByTheReceiver) {
  auto foreign = other_->issue("foreign-sender", {"s", {"DNS:sender.test"}});
  foreign.ca = sender_.ca;  // the sender trusts the receiver
  EXPECT_FALSE(connect(foreign, receiver_, "127.0.0.1"));
  EXPECT_FALSE(server_->handshake_done());
  EXPECT_NE(server_->error().find("certificate"), std::string::npos) << server_->error();
}

// OpenSSL reserves what a Certificate message claims as soon as it reads its header, before
// the chain is checked: a chain beyond kMaxPeerCertificateChainBytes is refused, whoever it
// claims to be, on either side (OpenSSL's default let anyone make a receiver hold 100 KiB).
TEST_F(TlsCertTest, ACertificateChainHeavierThanTheLimitIsRefused) {
  std::vector<std::string> names;
  while (names.size() < 2000)
    names.push_back("DNS:host-" + std::to_string(names.size()) + ".sender.test");
  auto heavy = pki_->issue("heavy-sender", {"sender", names});
  const auto bytes = std::filesystem::file_size(heavy.cert);  // PEM: 4/3 of the DER
  ASSERT_GT(bytes * 3 / 4, kMaxPeerCertificateChainBytes + 4096);
  ASSERT_LT(bytes * 3 / 4, std::size_t{100 * 1024} - 4096) << "within OpenSSL's default";
  EXPECT_FALSE(connect(heavy, receiver_, "receiver.test"));
  EXPECT_FALSE(server_->handshake_done());
  EXPECT_NE(server_->error().find("excessive message size"), std::string::npos) << server_->error();
  auto heavy_receiver = pki_->issue("heavy-receiver", {"receiver", names});
  EXPECT_FALSE(connect(sender_, heavy_receiver, "receiver.test"));
  EXPECT_NE(client_->error().find("excessive message size"), std::string::npos) << client_->error();
  // A usual chain still connects.
  EXPECT_TRUE(connect(sender_, receiver_, "receiver.test")) << server_->error();
}

TEST_F(TlsCertTest, AnExpiredCertificateIsRefused) {
  auto expired = pki_->issue("expired", {"receiver", {"IP:127.0.0.1"}, -30, -1});
  EXPECT_FALSE(connect(sender_, expired, "127.0.0.1"));
  EXPECT_NE(client_->error().find("expired"), std::string::npos) << client_->error();
}

TEST_F(TlsCertTest, ASenderWithASecretRefusesAnImpostorWithACertificate) {
  // Someone without the secret answers with a certificate (even a valid one): a sender with a
  // pre-shared key must not talk to it.
  TlsChannel c(TlsContext::with_secret(TlsRole::kClient, secret("the real secret, long one")));
  TlsChannel impostor(TlsContext::with_certificates(TlsRole::kServer, receiver_));
  handshake(c, impostor);
  EXPECT_FALSE(c.handshake_done()) << "a sender with a secret accepted a certificate instead";
  EXPECT_NE(c.error().find("certificate"), std::string::npos) << c.error();
  EXPECT_FALSE(impostor.handshake_done()) << "and it has no certificate for the receiver";
  std::size_t taken = 0;
  std::string data = "SEND 1 secret-plans.txt";
  EXPECT_EQ(c.write({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()}, taken),
            TlsChannel::Status::kFailed);
  EXPECT_EQ(taken, 0u);
}

TEST_F(TlsCertTest, ASenderThatDoesNotSayWhoItDialledDoesNotStart) {
  TlsChannel c(TlsContext::with_certificates(TlsRole::kClient, sender_));
  EXPECT_EQ(c.handshake(), TlsChannel::Status::kFailed);
  EXPECT_NE(c.error().find("no receiver name"), std::string::npos) << c.error();
}

TEST_F(TlsCertTest, BadFilesAreNamedInTheError) {
  auto missing = receiver_;
  missing.cert = (dir_ / "nope.pem").string();
  try {
    TlsContext::with_certificates(TlsRole::kServer, missing);
    ADD_FAILURE() << "a missing certificate was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("--tls-cert " + missing.cert), std::string::npos)
        << e.what();
  }
  auto mismatched = receiver_;
  mismatched.key = sender_.key;
  try {
    TlsContext::with_certificates(TlsRole::kServer, mismatched);
    ADD_FAILURE() << "a key of another certificate was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("is not the key of the certificate in --tls-cert"),
              std::string::npos)
        << e.what();
  }
  auto no_ca = receiver_;
  no_ca.ca = (dir_ / "no-ca.pem").string();
  EXPECT_THROW(TlsContext::with_certificates(TlsRole::kServer, no_ca), std::exception);
}

}  // namespace
}  // namespace ackxfer
