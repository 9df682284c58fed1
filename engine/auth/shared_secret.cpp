// Keys derived from a shared secret (HKDF-SHA256, OpenSSL's libcrypto) and secret files.
#include "auth/shared_secret.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "error.h"
#include "hex.h"
#include "unique_fd.h"

namespace ackxfer {

SharedSecret::SharedSecret(std::string bytes) : bytes_(std::move(bytes)) {
  if (bytes_.ends_with('\n')) bytes_.pop_back();
  if (bytes_.ends_with('\r')) bytes_.pop_back();
  if (bytes_.empty()) throw Failure("the secret is empty");
  if (bytes_.size() > kMaxSecretBytes) {
    OPENSSL_cleanse(bytes_.data(), bytes_.size());  // no destructor runs after a throw
    throw Failure("the secret is longer than " + std::to_string(kMaxSecretBytes) + " bytes");
  }
}

SharedSecret::~SharedSecret() {
  OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

void SharedSecret::derive(const char* label, std::uint8_t* out, std::size_t len) const {
  // HKDF-SHA256 (RFC 5869): salt fixed to the protocol's name, info the label.
  static const char kSalt[] = "ackxfer 2";
  EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  std::size_t out_len = len;
  bool ok = pctx && EVP_PKEY_derive_init(pctx) > 0 &&
            EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_salt(pctx, reinterpret_cast<const unsigned char*>(kSalt),
                                        sizeof kSalt - 1) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_key(pctx, reinterpret_cast<const unsigned char*>(bytes_.data()),
                                       static_cast<int>(bytes_.size())) > 0 &&
            EVP_PKEY_CTX_add1_hkdf_info(pctx, reinterpret_cast<const unsigned char*>(label),
                                        static_cast<int>(std::strlen(label))) > 0 &&
            EVP_PKEY_derive(pctx, out, &out_len) > 0 && out_len == len;
  EVP_PKEY_CTX_free(pctx);
  if (!ok) throw Failure("HKDF-SHA256 failed in libcrypto");
}

std::array<std::uint8_t, 32> SharedSecret::tls_psk() const {
  std::array<std::uint8_t, 32> key{};
  derive("ackxfer tls13 external psk", key.data(), key.size());
  return key;
}

std::string SharedSecret::tls_psk_identity() const {
  std::uint8_t id[8];
  derive("ackxfer tls13 psk identity", id, sizeof id);
  return "ackxfer2-" + to_hex(id, sizeof id);
}

std::shared_ptr<const SharedSecret> load_secret_file(const std::string& path,
                                                     std::optional<std::string>& warning) {
  warning.reset();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) throw Failure("--secret-file " + path + ": " + errno_text(errno));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) throw Failure("--secret-file " + path + ": " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) throw Failure("--secret-file " + path + ": not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > kMaxSecretBytes + 2)
    throw Failure("--secret-file " + path + ": " + std::to_string(st.st_size) +
                  " bytes; a secret is at most " + std::to_string(kMaxSecretBytes));
  std::string bytes(kMaxSecretBytes + 3, '\0');
  std::size_t got = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Failure("--secret-file " + path + ": read: " + errno_text(errno));
    if (n == 0 || (got += static_cast<std::size_t>(n)) == bytes.size()) break;
  }
  bytes.resize(got);
  std::shared_ptr<const SharedSecret> secret;
  try {
    secret = std::make_shared<const SharedSecret>(std::move(bytes));
  } catch (const Failure& e) {
    throw Failure("--secret-file " + path + ": " + e.what());
  }
  // Both problems when both hold: fixing the one named would leave the other unsaid.
  std::string problems;
  if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH))
    problems = "can be read or written by other users (chmod 600 it)";
  if (secret->size() < kWeakSecretBytes)
    problems += (problems.empty() ? "" : ", and ") + std::string("holds only ") +
                std::to_string(secret->size()) +
                " bytes (use a long random secret: head -c 32 /dev/urandom | base64 > FILE)";
  if (!problems.empty()) warning = "--secret-file " + path + " " + problems;
  return secret;
}

}  // namespace ackxfer
