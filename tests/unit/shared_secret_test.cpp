// The key derived from --secret-file, and secret files (engine/auth/shared_secret.h).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "auth/shared_secret.h"
#include "error.h"
#include "hex.h"

namespace ackxfer {
namespace {

// Known answers computed independently (Python's hmac module, RFC 5869 by hand):
//   prk = hmac.new(b"ackxfer 2", b"correct horse battery staple", sha256).digest()
//   hmac.new(prk, b"ackxfer tls13 external psk" + b"\x01", sha256)
TEST(SharedSecret, TheTlsKeyAndItsIdentityAreHkdfSha256UnderTheirOwnLabels) {
  SharedSecret s("correct horse battery staple\n");
  auto key = s.tls_psk();
  EXPECT_EQ(to_hex(key.data(), key.size()),
            "14c7c7baef1257047d3624657db4205f5c627c39ec3d1171bd5edd405fed6cb1");
  EXPECT_EQ(s.tls_psk_identity(), "ackxfer2-df2e50fe4d72550b");
}

TEST(SharedSecret, OneTrailingNewlineIsNotPartOfTheSecret) {
  auto plain = SharedSecret("abc").tls_psk();
  EXPECT_EQ(SharedSecret("abc\n").tls_psk(), plain);
  EXPECT_EQ(SharedSecret("abc\r\n").tls_psk(), plain);
  EXPECT_NE(SharedSecret("abc\n\n").tls_psk(), plain);
}

TEST(SharedSecret, EmptyAndOverlongSecretsAreRefused) {
  EXPECT_THROW(SharedSecret(""), Failure);
  EXPECT_THROW(SharedSecret("\n"), Failure);
  EXPECT_THROW(SharedSecret(std::string(kMaxSecretBytes + 1, 'x')), Failure);
  EXPECT_NO_THROW(SharedSecret(std::string(kMaxSecretBytes, 'x')));
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

// Both at once: both are said (only the permissions were, and chmod left a weak secret).
TEST_F(SecretFile, AShortSecretOthersCanReadGetsBothWarnings) {
  std::optional<std::string> warning;
  load_secret_file(write("s", "hunter2", 0644), warning);
  ASSERT_TRUE(warning);
  EXPECT_NE(warning->find("chmod 600"), std::string::npos) << *warning;
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
