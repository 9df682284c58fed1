// Encryption in transit (docs/SECURITY.md): with --secret-file, or certificates, every
// connection runs TLS 1.3 and both sides prove themselves inside the handshake. Refusals are
// clear, exit 7, and write nothing; an observer on the path sees neither names nor contents.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "harness.h"
#include "protocol/control_codec.h"
#include "test_pki.h"

namespace ackxfer::test {
namespace {

class Encryption : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(src_ / "tree/sub");
    write_file(src_ / "tree/a.bin", 3 << 20, 90);
    write_file(src_ / "tree/sub/b.bin", 20 << 20, 91);
    write_text(src_ / "tree/sub/c.txt", "c");
    secret_ = write_secret("right", "k7Q2mYbVt0x3JrLp9sWfZ1eHcN5uGdA8\n");
    wrong_ = write_secret("wrong", "mA9vC3tL0pQ7xR2sK8dF1gH5jB6nW4zE\n");
  }
  fs::path write_secret(const std::string& name, const std::string& content) {
    fs::path p = keys_ / name;
    write_text(p, content);
    chmod(p.c_str(), 0600);
    return p;
  }
  ProcessResult send_tree(const std::string& to, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--to", to, "--retry-for", "10", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back((src_ / "tree").string());
    return send(args);
  }
  std::vector<std::string> secret_args(const fs::path& p) { return {"--secret-file", p.string()}; }
  static std::vector<std::string> cert_args(const TlsCertificates& c) {
    return {"--tls-cert", c.cert, "--tls-key", c.key, "--tls-ca", c.ca};
  }

  TempDir src_{"src"}, dst_{"dst"}, keys_{"keys"};
  fs::path secret_, wrong_;
};

std::string read_all_recordings(const fs::path& dir) {
  std::string all;
  for (const auto& e : fs::directory_iterator(dir))
    all += read_text(e.path());
  return all;
}

// An explicit --send-path that cannot apply to encrypted data is replaced by copy, and said so
// (it used to be replaced silently; only --json's send_path showed it).
TEST_F(Encryption, ASendPathThatCannotApplyIsReplacedByCopyWithAWarning) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  auto res = send_tree(r.to(), {"--secret-file", secret_.string(), "--send-path", "splice"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "send_path"), "copy") << res.out;
  EXPECT_NE(res.err.find("--send-path splice does not apply to encrypted data"), std::string::npos)
      << res.err;
}

TEST_F(Encryption, SameSecretOnBothSidesTransfersEverythingEncrypted) {
  for (int i = 0; i < 4; ++i)  // more than the socket buffers hold: sends are cut short
    write_file(src_ / "tree" / ("big-" + std::to_string(i)), 24 << 20, 93 + i);
  for (int i = 0; i < 200; ++i)  // and many small frames batched into one send
    write_text(src_ / "tree/sub" / ("small-" + std::to_string(i)), std::string(i * 37, 'x'));
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  auto res = send_tree(r.to(), {"--secret-file", secret_.string(), "--streams", "2"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "files"), "207") << res.out;
  auto enc = json_field(res.out, "encryption");
  ASSERT_TRUE(enc) << res.out;
  EXPECT_TRUE(*enc == "TLS_AES_128_GCM_SHA256" || *enc == "TLS_CHACHA20_POLY1305_SHA256") << *enc;
  EXPECT_EQ(json_field(res.out, "control_encryption"), enc) << res.out;
  // Nothing had to go twice: every frame arrived whole through TLS the first time (a send
  // cut short by a full socket once made the sender encrypt part of a batch twice, which
  // retries then hid).
  EXPECT_EQ(json_field(res.out, "retries"), "0") << res.err;
  EXPECT_EQ(res.err.find("warning"), std::string::npos) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("encryption: control " + *enc + ", data " + *enc), std::string::npos)
      << rs.err;
}

TEST_F(Encryption, WithoutASecretNothingIsEncryptedAndTheSummarySaysSo) {
  ReceiverProcess r(dst_.path(), 2);
  auto res = send_tree(r.to(), {});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "encryption"), "none") << res.out;
  auto human = send({"--to", r.to(), "--force", (src_ / "tree").string()});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.err.find("unencrypted"), std::string::npos) << human.err;
}

TEST_F(Encryption, Receiver_RefusesASenderWithoutASecretAndWritesNothing) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  auto res = send_tree(r.to(), {});
  EXPECT_EQ(res.exit_code, 7) << res.err;
  EXPECT_NE(res.err.find("accepts only encrypted sessions"), std::string::npos) << res.err;
  EXPECT_EQ(json_field(res.out, "outcome"), "auth-failed") << res.out;
  EXPECT_EQ(count_entries(dst_.path()), 0u);
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("did not start TLS"), std::string::npos) << rs.err;
}

TEST_F(Encryption, Receiver_RefusesAWrongSecretAndWritesNothing) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  auto res = send_tree(r.to(), secret_args(wrong_));
  EXPECT_EQ(res.exit_code, 7) << res.err;
  EXPECT_NE(res.err.find("same --secret-file"), std::string::npos) << res.err;
  // Nothing calls a refused encrypted transfer "unencrypted"; the error stands alone, with no
  // summary of zeros after it.
  auto human = send({"--to", r.to(), "--secret-file", wrong_.string(), (src_ / "tree").string()});
  EXPECT_EQ(human.exit_code, 7) << human.err;
  EXPECT_EQ(human.err.find("sent 0 files"), std::string::npos) << human.err;
  EXPECT_EQ(human.err.find("unencrypted"), std::string::npos) << human.err;
  EXPECT_EQ(count_entries(dst_.path()), 0u);
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("different secret"), std::string::npos) << rs.err;
}

TEST_F(Encryption, Sender_SendsNothingToAReceiverThatCannotEncrypt) {
  ReceiverProcess r(dst_.path(), 2);  // no secret: it cannot take part in TLS
  auto res = send_tree(r.to(), secret_args(secret_));
  EXPECT_EQ(res.exit_code, 7) << res.err;
  EXPECT_NE(res.err.find("cannot encrypt"), std::string::npos) << res.err;
  EXPECT_EQ(count_entries(dst_.path()), 0u);
}

TEST_F(Encryption, AMissingSecretFileIsASetupErrorNamingIt) {
  auto res = send({"--to", "127.0.0.1:1", "--secret-file", (keys_ / "nope").string(),
                   (src_ / "tree").string()});
  EXPECT_EQ(res.exit_code, 6) << res.err;
  EXPECT_NE(res.err.find((keys_ / "nope").string()), std::string::npos) << res.err;
  auto rr = run({binary_path(), "recv", "--dir", dst_.path().string(), "--port", "0", "--data-port",
                 "0", "--secret-file", (keys_ / "nope").string()},
                10s);
  EXPECT_EQ(rr.exit_code, 6) << rr.err;
  EXPECT_NE(rr.err.find("No such file"), std::string::npos) << rr.err;
}

// By hand, as an old or plain client would: the refusal comes in plain text it can read.
TEST_F(Encryption, Receiver_APlaintextHelloGetsAPlainRefusal) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  RawClient c(r.port());
  c.send_bytes("HELLO ackxfer 2 features=link\nSEND 1 y size=1 mode=0644 mtime=1.0 chunk=65536\n");
  auto refused = c.read_line();
  EXPECT_TRUE(refused && refused->starts_with("ERR - auth-required")) << refused.value_or("EOF");
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(count_entries(dst_.path()), 0u);
}

// Garbage after a TLS record header, and a handshake that never finishes: each ends (the
// second by the first-line deadline), and the receiver serves a real sender meanwhile.
TEST_F(Encryption, Receiver_GarbageAndAStalledHandshakeEndWhileOthersAreServed) {
  ReceiverProcess r(dst_.path(), 2, {"--secret-file", secret_.string(), "--idle-timeout", "2"});
  RawClient garbage(r.port());
  garbage.send_bytes(std::string("\x16\x03\x01\x00\x30", 5) + std::string(48, 'G'));
  RawClient stalled(r.port());
  stalled.send_bytes(std::string("\x16\x03\x01", 3));  // and nothing more
  RawClient stalled_data(r.data_port());
  stalled_data.send_bytes(std::string("\x16\x03", 2));
  EXPECT_TRUE(garbage.closed_by_peer(5s));
  auto res = send_tree(r.to(), secret_args(secret_));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  EXPECT_TRUE(stalled.closed_by_peer(8s));
  EXPECT_TRUE(stalled_data.closed_by_peer(8s));
}

// A recording of both ports (control and data, both directions) holds no name and no byte
// of any file: the same recording without encryption holds all of them.
TEST_F(Encryption, AnObserverSeesNeitherNamesNorContents) {
  write_text(src_ / "tree/payroll-2026-confidential.txt", "SALARY TABLE: alice 1, bob 2\n");
  TempDir rec("rec");
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  FaultProxy proxy(r, {"--record", rec.path().string()});
  auto res = send_tree(proxy.to(), secret_args(secret_));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  std::string wire = read_all_recordings(rec.path());
  EXPECT_GT(wire.size(), 23u << 20) << "both files' bytes crossed the proxy";
  EXPECT_EQ(wire.find("payroll-2026-confidential"), std::string::npos);
  EXPECT_EQ(wire.find("SALARY TABLE"), std::string::npos);
  EXPECT_EQ(wire.find("sub/b.bin"), std::string::npos);
  std::string b = read_text(src_ / "tree/sub/b.bin");
  for (std::size_t at : {std::size_t{12345}, std::size_t{7} << 20, b.size() - 100})
    EXPECT_EQ(wire.find(b.substr(at, 32)), std::string::npos) << "bytes at " << at;
  EXPECT_EQ(wire.find("k7Q2mYbVt0x3JrLp9sWfZ1eHcN5uGdA8"), std::string::npos);
}

TEST_F(Encryption, NoEncryptionKeepsNamesSecretAndSendsDataInClearWhereAllowed) {
  write_text(src_ / "tree/payroll-2026-confidential.txt", "SALARY TABLE: alice 1, bob 2\n");
  TempDir rec("rec");
  ReceiverProcess r(dst_.path(), 2, {"--secret-file", secret_.string(), "--allow-unencrypted"});
  FaultProxy proxy(r, {"--record", rec.path().string()});
  auto res = send_tree(proxy.to(), {"--secret-file", secret_.string(), "--no-encryption"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  EXPECT_EQ(json_field(res.out, "encryption"), "none") << res.out;
  EXPECT_NE(json_field(res.out, "control_encryption").value_or("none"), "none") << res.out;
  std::string wire = read_all_recordings(rec.path());
  EXPECT_EQ(wire.find("payroll-2026-confidential"), std::string::npos) << "names stay secret";
  EXPECT_NE(wire.find("SALARY TABLE"), std::string::npos) << "contents went in clear";
}

TEST_F(Encryption, NoEncryptionIsRefusedByAReceiverThatDoesNotAllowIt) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  auto res = send_tree(r.to(), {"--secret-file", secret_.string(), "--no-encryption"});
  EXPECT_EQ(res.exit_code, 7) << res.err;
  EXPECT_NE(res.err.find("--allow-unencrypted"), std::string::npos) << res.err;
  EXPECT_EQ(count_entries(dst_.path()), 0u);
}

// A frame in clear on the data port of a receiver that requires TLS is not read.
TEST_F(Encryption, Receiver_APlainDataConnectionIsRefused) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  RawClient d(r.data_port());
  d.send_bytes(std::string("AXD1") + std::string(44, '\0'));
  EXPECT_TRUE(d.closed_by_peer());
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("did not start TLS"), std::string::npos) << rs.err;
}

// A byte flipped in the ciphertext: the record fails its tag, that connection ends, and the
// chunk goes again on a new one. On the control connection, the session is re-established.
TEST_F(Encryption, AFlippedByteOnADataConnectionCostsARetryNotTheFile) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  FaultProxy proxy(r, {"--flip", std::to_string(r.data_port()) + ":5000000"});
  auto res = send_tree(proxy.to(), {"--secret-file", secret_.string(), "--streams", "1"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  EXPECT_GE(std::stoull(json_field(res.out, "retries").value_or("0")), 1u) << res.out;
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("TLS record rejected"), std::string::npos) << rs.err;
}

TEST_F(Encryption, AFlippedByteOnTheControlConnectionCostsAReconnect) {
  // Enough files that the control connection carries a few KiB after its handshake.
  for (int i = 0; i < 100; ++i)
    write_text(src_ / "tree/sub" / ("small-" + std::to_string(i)), std::to_string(i));
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  FaultProxy proxy(r, {"--flip", std::to_string(r.port()) + ":4000"});
  auto res = send_tree(proxy.to(), secret_args(secret_));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  EXPECT_GE(std::stoull(json_field(res.out, "retries").value_or("0")), 1u) << res.out;
  EXPECT_NE(res.err.find("lost the session"), std::string::npos) << res.err;
}

// A receiver at --max-sessions answers a newcomer `busy` before any handshake, in plain text:
// an encrypted sender reads that as busy and waits within --retry-for, not as a receiver that
// cannot encrypt (exit 7). The place is held by another encrypted sender, slowed to about 3 s.
TEST_F(Encryption, Sender_WaitsForABusyEncryptedReceiverWithinRetryFor) {
  TempDir slow_src("slow");
  write_file(slow_src / "slow.bin", 12 << 20, 5);
  ReceiverProcess r(dst_.path(), 2, {"--secret-file", secret_.string(), "--max-sessions", "1"});
  FaultProxy proxy(r, {"--throttle", std::to_string(r.data_port()) + ":4000:every"});
  Process holder({binary_path(), "send", "--to", proxy.to(), "--secret-file", secret_.string(),
                  "--streams", "1", (slow_src / "slow.bin").string()});
  std::this_thread::sleep_for(1s);  // its session holds the one place
  auto res = send({"--to", r.to(), "--secret-file", secret_.string(), "--retry-for", "30",
                   "--log-level", "info", (src_ / "tree/sub/c.txt").string()},
                  60s);
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst_ / "c.txt"), "c");
  EXPECT_NE(res.err.find("the receiver is busy"), std::string::npos) << res.err;
  auto held = holder.wait(60s);
  EXPECT_EQ(held.exit_code, 0) << held.err;
}

// A byte damaged on the way during a handshake, in the ClientHello or in the receiver's
// answer, is not a refusal: the sender connects again (on the control connection it used to
// exit 7, "both sides need the same --secret-file"). A path that damages every control
// handshake is refused after a few, and says so.
TEST_F(Encryption, AByteFlippedInAHandshakeCostsAReconnectNotARefusal) {
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  for (const char* where : {":100", ":100:down"}) {
    SCOPED_TRACE(where);
    fs::remove_all(dst_ / "tree");
    FaultProxy proxy(r, {"--flip", std::to_string(r.port()) + where});
    auto res = send_tree(proxy.to(), secret_args(secret_));
    ASSERT_EQ(res.exit_code, 0) << res.err;
    EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
    EXPECT_GE(std::stoull(json_field(res.out, "retries").value_or("0")), 1u) << res.out;
  }
  // The same on a data connection's handshake: that connection is made again.
  for (const char* where : {":100", ":100:down"}) {
    SCOPED_TRACE(std::string("data") + where);
    fs::remove_all(dst_ / "tree");
    FaultProxy proxy(r, {"--flip", std::to_string(r.data_port()) + where});
    auto res = send_tree(proxy.to(), secret_args(secret_));
    ASSERT_EQ(res.exit_code, 0) << res.err;
    EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  }
  FaultProxy always(r, {"--flip", std::to_string(r.port()) + ":100:every"});
  auto res = send_tree(always.to(), secret_args(secret_));
  EXPECT_EQ(res.exit_code, 7) << res.err;
  EXPECT_NE(res.err.find("handshakes in a row failed on damaged bytes"), std::string::npos)
      << res.err;
}

// Encryption under everything else the tool does: directories and symlinks, a re-run that
// finds everything unchanged, a cut data connection (retried), and an interrupted large file
// resumed from what the receiver verified.
TEST_F(Encryption, EveryFeatureWorksEncrypted) {
  fs::create_symlink("sub/c.txt", src_ / "tree/link-to-c");
  fs::create_directories(src_ / "tree/empty-dir");
  constexpr std::uint64_t kChunk = 8 << 20;
  write_file(src_ / "tree/big.bin", 6 * kChunk + 777, 92);
  ReceiverProcess r(dst_.path(), 2, secret_args(secret_));
  {
    // The data connection is cut twice: each cut costs a retry on a new (encrypted) one.
    FaultProxy proxy(r, {"--cut", std::to_string(r.data_port()) + ":30000000:every"});
    auto res = send_tree(proxy.to(), {"--secret-file", secret_.string(), "--streams", "1"});
    ASSERT_EQ(res.exit_code, 0) << res.err;
    EXPECT_GE(std::stoull(json_field(res.out, "retries").value_or("0")), 1u) << res.out;
  }
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  EXPECT_TRUE(fs::is_symlink(dst_ / "tree/link-to-c"));
  auto again = send_tree(r.to(), secret_args(secret_));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json_field(again.out, "unchanged"), "4") << again.out;

  // Interrupted mid-file (the sender killed while its data connection stalls), then resumed.
  fs::remove(dst_ / "tree/big.bin");
  FaultProxy stall(
      r, {"--stall", std::to_string(r.data_port()) + ":" + std::to_string(4 * kChunk) + ":60000"});
  Process sender({binary_path(), "send", "--to", stall.to(), "--secret-file", secret_.string(),
                  "--streams", "1", "--retry-for", "0", (src_ / "tree/big.bin").string()});
  ASSERT_TRUE(wait_until([&] { return journaled_chunks_under(dst_.path()) >= 2; }, 20s));
  sender.signal(SIGKILL);
  sender.wait(5s);
  ASSERT_TRUE(wait_until(
      [&] {
        return r.process().stderr_so_far().find("kept the partial file") != std::string::npos;
      },
      5s));
  auto resumed = send({"--to", r.to(), "--secret-file", secret_.string(), "--json",
                       (src_ / "tree/big.bin").string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_GE(std::stoull(json_field(resumed.out, "resumed_bytes").value_or("0")), 2 * kChunk)
      << resumed.out;
  EXPECT_EQ(read_text(dst_ / "big.bin"), read_text(src_ / "tree/big.bin"));
}

class Certificates : public Encryption {
 protected:
  TestPki pki_{keys_.path(), "site"};
  TestPki other_{keys_.path(), "elsewhere"};
};

TEST_F(Certificates, MutualX509TransfersEverythingEncrypted) {
  auto server = pki_.issue("receiver", {"receiver", {"IP:127.0.0.1"}});
  auto client = pki_.issue("sender", {"sender", {"DNS:sender.test"}});
  ReceiverProcess r(dst_.path(), 2, cert_args(server));
  auto res = send_tree(r.to(), cert_args(client));
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(json_field(res.out, "encryption").value_or("none"), "none") << res.out;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
}

TEST_F(Certificates, WrongNameExpiredAndForeignCertificatesAreRefused) {
  auto server = pki_.issue("receiver", {"receiver", {"IP:127.0.0.1"}});
  auto misnamed = pki_.issue("misnamed", {"receiver", {"DNS:other.test"}});
  auto client = pki_.issue("sender", {"sender", {"DNS:sender.test"}});
  auto expired = pki_.issue("expired", {"sender", {"DNS:sender.test"}, -30, -1});
  auto foreign = other_.issue("foreign", {"sender", {"DNS:sender.test"}});
  foreign.ca = pki_.ca_file();  // it trusts the receiver's CA; the receiver does not trust its
  {
    ReceiverProcess r(dst_.path(), 2, cert_args(misnamed));
    auto res = send_tree(r.to(), cert_args(client));
    EXPECT_EQ(res.exit_code, 7) << res.err;
    EXPECT_NE(res.err.find("--tls-cert"), std::string::npos) << res.err;
  }
  ReceiverProcess r(dst_.path(), 2, cert_args(server));
  for (const auto& bad : {expired, foreign}) {
    auto res = send_tree(r.to(), cert_args(bad));
    EXPECT_EQ(res.exit_code, 7) << res.err;
  }
  EXPECT_EQ(count_entries(dst_.path()), 0u);
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("expired"), std::string::npos) << rs.err;
}

TEST_F(Certificates, IncompleteOrConflictingOptionsAreUsageErrors) {
  auto client = pki_.issue("sender", {"sender", {"DNS:sender.test"}});
  auto res = send({"--to", "127.0.0.1:1", "--tls-cert", client.cert, (src_ / "tree").string()});
  EXPECT_EQ(res.exit_code, 2) << res.err;
  EXPECT_NE(res.err.find("missing --tls-key and --tls-ca"), std::string::npos) << res.err;
  auto both = cert_args(client);
  both.insert(both.end(), {"--secret-file", secret_.string(), "--to", "127.0.0.1:1"});
  both.push_back((src_ / "tree").string());
  EXPECT_EQ(send(both).exit_code, 2);
  EXPECT_EQ(send({"--to", "127.0.0.1:1", "--no-encryption", (src_ / "tree").string()}).exit_code,
            2);
}

}  // namespace
}  // namespace ackxfer::test
