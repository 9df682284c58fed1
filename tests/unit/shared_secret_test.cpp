// The --secret-file handshake's proofs and secret files (engine/auth/shared_secret.h).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "auth/shared_secret.h"
#include "error.h"

namespace ackxfer {
namespace {

Nonce counting_nonce(std::uint8_t first) {
  Nonce n;
  for (std::size_t i = 0; i < n.bytes.size(); ++i)
    n.bytes[i] = static_cast<std::uint8_t>(first + i);
  return n;
}

// Known answers computed independently (Python's hmac module):
//   hmac.new(b"correct horse battery staple",
//            b"ackxfer-auth-1 sender\0" + bytes(range(16)) + bytes(range(16, 32)), sha256)
TEST(SharedSecret, ProofsAreHmacSha256OverLabelAndBothNonces) {
  SharedSecret s("correct horse battery staple\n");
  Nonce sender = counting_nonce(0), receiver = counting_nonce(16);
  EXPECT_EQ(s.sender_proof(sender, receiver).hex(),
            "902a8939db42ec7b256662a25ddd29a614544a9c80863eb1e7e8f13fbbad85a2");
  EXPECT_EQ(s.receiver_proof(sender, receiver).hex(),
            "f2b77ae3c9b7de655506f2aaa35476093f6d0bd6a4c883fbfa2e9b32da70dfc1");
}

TEST(SharedSecret, ProofsDependOnTheSecretBothNoncesAndTheSide) {
  SharedSecret a("secret-a-0123456789"), b("secret-b-0123456789");
  Nonce n1 = Nonce::random(), n2 = Nonce::random();
  EXPECT_NE(a.sender_proof(n1, n2), b.sender_proof(n1, n2));
  EXPECT_NE(a.sender_proof(n1, n2), a.sender_proof(n2, n1));
  EXPECT_NE(a.sender_proof(n1, n2), a.sender_proof(n1, Nonce::random()));
  // A receiver's answer cannot be reflected back as a sender's.
  EXPECT_NE(a.sender_proof(n1, n2), a.receiver_proof(n1, n2));
  EXPECT_TRUE(proofs_match(a.sender_proof(n1, n2), a.sender_proof(n1, n2)));
  EXPECT_FALSE(proofs_match(a.sender_proof(n1, n2), b.sender_proof(n1, n2)));
}

TEST(SharedSecret, OneTrailingNewlineIsNotPartOfTheSecret) {
  Nonce n1 = counting_nonce(1), n2 = counting_nonce(2);
  Proof plain = SharedSecret("abc").sender_proof(n1, n2);
  EXPECT_EQ(SharedSecret("abc\n").sender_proof(n1, n2), plain);
  EXPECT_EQ(SharedSecret("abc\r\n").sender_proof(n1, n2), plain);
  EXPECT_NE(SharedSecret("abc\n\n").sender_proof(n1, n2), plain);
}

TEST(SharedSecret, EmptyAndOverlongSecretsAreRefused) {
  EXPECT_THROW(SharedSecret(""), Failure);
  EXPECT_THROW(SharedSecret("\n"), Failure);
  EXPECT_THROW(SharedSecret(std::string(kMaxSecretBytes + 1, 'x')), Failure);
  EXPECT_NO_THROW(SharedSecret(std::string(kMaxSecretBytes, 'x')));
}

TEST(SharedSecret, NoncesAreFreshAndHexRoundTrips) {
  Nonce a = Nonce::random(), b = Nonce::random();
  EXPECT_NE(a, b);
  EXPECT_EQ(Nonce::from_hex(a.hex()), a);
  EXPECT_EQ(a.hex().size(), 32u);
  EXPECT_FALSE(Nonce::from_hex(a.hex() + "0"));
  EXPECT_FALSE(Proof::from_hex(std::string(63, 'a')));
  EXPECT_FALSE(Proof::from_hex(std::string(64, 'g')));
  Proof p;
  p.bytes.fill(0xfe);
  EXPECT_EQ(Proof::from_hex(p.hex()), p);
}

class SecretFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ackxfer-secret-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& content, mode_t mode) {
    std::string p = dir_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    chmod(p.c_str(), mode);
    return p;
  }
  std::string dir_;
};

TEST_F(SecretFile, AGoodFileLoadsWithoutWarning) {
  std::optional<std::string> warning;
  auto s = load_secret_file(write("s", "0123456789abcdef0123\n", 0600), warning);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->size(), 20u);
  EXPECT_FALSE(warning) << *warning;
}

TEST_F(SecretFile, AFileOthersCanReadLoadsWithAWarningThatSaysChmod) {
  std::optional<std::string> warning;
  load_secret_file(write("s", "0123456789abcdef0123", 0644), warning);
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("chmod 600"), std::string::npos) << *warning;
}

TEST_F(SecretFile, AShortSecretLoadsWithAWarning) {
  std::optional<std::string> warning;
  load_secret_file(write("s", "hunter2", 0600), warning);
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("only 7 bytes"), std::string::npos) << *warning;
}

TEST_F(SecretFile, MissingEmptyHugeAndNonRegularFilesFailNamingTheFile) {
  std::optional<std::string> warning;
  auto fails_with = [&](const std::string& path, const std::string& why) {
    try {
      load_secret_file(path, warning);
      ADD_FAILURE() << "loaded " << path;
    } catch (const Failure& e) {
      std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      EXPECT_NE(what.find(why), std::string::npos) << what;
    }
  };
  fails_with(dir_ + "/missing", "No such file");
  fails_with(write("empty", "", 0600), "empty");
  fails_with(write("huge", std::string(100000, 'x'), 0600), "at most");
  fails_with(dir_, "not a regular file");
}

}  // namespace
}  // namespace ackxfer
