// TestPki: EC P-256 keys, SHA-256 signatures, subjectAltName for names and addresses.
#include "test_pki.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <stdexcept>

namespace ackxfer::test {
namespace {

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("TestPki: ") + what);
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(e != nullptr, "extension");
  check(X509_add_ext(cert, e, -1) == 1, "add extension");
  X509_EXTENSION_free(e);
}

X509* make_cert(EVP_PKEY* key, const std::string& cn, long serial, long from_days,
                long until_days) {
  X509* x = X509_new();
  check(x != nullptr, "X509_new");
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(x), until_days * 86400);
  X509_set_pubkey(x, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return x;
}

void write_pem(const std::filesystem::path& p, X509* cert, EVP_PKEY* key) {
  FILE* f = std::fopen(p.c_str(), "w");
  check(f != nullptr, "open output");
  bool ok = cert ? PEM_write_X509(f, cert) == 1
                 : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  std::fclose(f);
  check(ok, "write PEM");
}

}  // namespace

TestPki::TestPki(std::filesystem::path dir, std::string name)
    : dir_(std::move(dir)), name_(std::move(name)) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  check(key != nullptr, "CA key");
  X509* ca = make_cert(key, name_ + " test CA", serial_++, -1, 365);
  X509_set_issuer_name(ca, X509_get_subject_name(ca));
  add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(ca, ca, NID_subject_key_identifier, "hash");
  check(X509_sign(ca, key, EVP_sha256()) > 0, "sign CA");
  ca_key_ = key;
  ca_cert_ = ca;
  write_pem(ca_file(), ca, nullptr);
}

TestPki::~TestPki() {
  X509_free(static_cast<X509*>(ca_cert_));
  EVP_PKEY_free(static_cast<EVP_PKEY*>(ca_key_));
}

std::string TestPki::ca_file() const {
  return (dir_ / (name_ + "-ca.pem")).string();
}

TlsCertificates TestPki::issue(const std::string& file, const Leaf& leaf) {
  auto* ca = static_cast<X509*>(ca_cert_);
  EVP_PKEY* key = EVP_EC_gen("P-256");
  check(key != nullptr, "leaf key");
  X509* x =
      make_cert(key, leaf.common_name, serial_++, leaf.valid_from_days, leaf.valid_until_days);
  X509_set_issuer_name(x, X509_get_subject_name(ca));
  add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(x, ca, NID_authority_key_identifier, "keyid:always");
  if (!leaf.alt_names.empty()) {
    std::string san;
    for (const auto& n : leaf.alt_names)
      san += (san.empty() ? "" : ",") + n;
    add_ext(x, ca, NID_subject_alt_name, san);
  }
  check(X509_sign(x, static_cast<EVP_PKEY*>(ca_key_), EVP_sha256()) > 0, "sign leaf");
  TlsCertificates out{(dir_ / (file + ".pem")).string(), (dir_ / (file + ".key")).string(),
                      ca_file()};
  write_pem(out.cert, x, nullptr);
  write_pem(out.key, nullptr, key);
  X509_free(x);
  EVP_PKEY_free(key);
  return out;
}

}  // namespace ackxfer::test
