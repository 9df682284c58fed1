// Receiver-wide map from token to the file it opens: how a data connection accepted on any
// worker finds the file whose READY went out on another worker's control session.
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>

#include "protocol/token.h"
#include "receiver/incoming_file.h"

namespace ackxfer {

class FileRegistry {
 public:
  void add(const std::shared_ptr<IncomingFile>& file);
  void remove(const Token& token);
  std::shared_ptr<IncomingFile> find(const Token& token) const;
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<Token, std::shared_ptr<IncomingFile>, TokenHash> files_;
};

}  // namespace ackxfer
