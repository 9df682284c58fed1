// A throwaway certificate authority for tests: keys and certificates made with libcrypto and
// written as PEM files, so X.509 tests need no openssl command and no fixtures to expire.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tls/tls_channel.h"

namespace ackxfer::test {

class TestPki {
 public:
  // Makes a CA named `name` and writes <dir>/<name>-ca.pem.
  TestPki(std::filesystem::path dir, std::string name);
  ~TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  struct Leaf {
    std::string common_name;
    std::vector<std::string> alt_names;  // "DNS:receiver.test", "IP:127.0.0.1"
    long valid_from_days = -1;           // relative to now
    long valid_until_days = 30;
  };
  // Issues a certificate signed by this CA and writes <dir>/<file>.pem and <file>.key; returns
  // them with this CA's file as `ca`.
  TlsCertificates issue(const std::string& file, const Leaf& leaf);
  std::string ca_file() const;

 private:
  std::filesystem::path dir_;
  std::string name_;
  void* ca_key_ = nullptr;   // EVP_PKEY*
  void* ca_cert_ = nullptr;  // X509*
  long serial_ = 1;
};

}  // namespace ackxfer::test
