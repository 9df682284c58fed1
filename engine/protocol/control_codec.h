// The control-line codec: pure functions from text lines to messages and back. No I/O here;
// the grammar is specified in docs/PROTOCOL.md and each rule has a test in
// tests/unit/control_codec_test.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "digest/digest.h"
#include "protocol/error_codes.h"
#include "protocol/token.h"

namespace ackxfer {

struct Mtime {
  std::int64_t sec = 0;
  std::uint32_t nsec = 0;  // < 1e9
  friend bool operator==(const Mtime&, const Mtime&) = default;
};

// Sender -> receiver.
struct HelloRequest {
  int version = 0;
  friend bool operator==(const HelloRequest&, const HelloRequest&) = default;
};
struct SendRequest {
  std::uint64_t id = 0;
  std::string path;  // decoded bytes, relative to the transfer root
  std::uint64_t size = 0;
  std::uint32_t mode = 0;
  Mtime mtime;
  std::uint64_t chunk = 0;  // bytes per data frame; the last frame may be shorter
  friend bool operator==(const SendRequest&, const SendRequest&) = default;
};
struct MkdirRequest {
  std::uint64_t id = 0;
  std::string path;
  std::uint32_t mode = 0;
  Mtime mtime;
  friend bool operator==(const MkdirRequest&, const MkdirRequest&) = default;
};
struct DoneRequest {
  std::uint64_t id = 0;
  Digest128 digest;
  friend bool operator==(const DoneRequest&, const DoneRequest&) = default;
};
struct CancelRequest {
  std::uint64_t id = 0;
  friend bool operator==(const CancelRequest&, const CancelRequest&) = default;
};
struct ByeRequest {
  friend bool operator==(const ByeRequest&, const ByeRequest&) = default;
};
using ClientMessage =
    std::variant<HelloRequest, SendRequest, MkdirRequest, DoneRequest, CancelRequest, ByeRequest>;

// Receiver -> sender.
struct HelloReply {
  int version = 0;
  std::uint16_t data_port = 0;
  std::uint32_t max_open = 0;
  friend bool operator==(const HelloReply&, const HelloReply&) = default;
};
struct ReadyReply {
  std::uint64_t id = 0;
  Token token;
  friend bool operator==(const ReadyReply&, const ReadyReply&) = default;
};
struct OkReply {
  std::uint64_t id = 0;
  friend bool operator==(const OkReply&, const OkReply&) = default;
};
struct ErrReply {
  std::optional<std::uint64_t> id;  // none: about the session, not one file
  ErrorCode code = ErrorCode::kBadLine;
  std::string message;  // human-readable, printable ASCII (escaped like a path)
  friend bool operator==(const ErrReply&, const ErrReply&) = default;
};
struct ByeReply {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  friend bool operator==(const ByeReply&, const ByeReply&) = default;
};
using ServerMessage = std::variant<HelloReply, ReadyReply, OkReply, ErrReply, ByeReply>;

struct ParseError {
  ErrorCode code;
  std::string message;
  std::optional<std::uint64_t> id;  // set when the id was readable before the error
};

template <class T>
class Parsed {
 public:
  Parsed(T value) : v_(std::move(value)) {}           // NOLINT: implicit by design
  Parsed(ParseError error) : v_(std::move(error)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  const T& value() const { return std::get<0>(v_); }
  T& value() { return std::get<0>(v_); }
  const ParseError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, ParseError> v_;
};

// `line` excludes the terminating '\n' (a trailing '\r' is tolerated for nc users).
Parsed<ClientMessage> parse_client_line(std::string_view line);
Parsed<ServerMessage> parse_server_line(std::string_view line);

// Each result ends with '\n'.
std::string format_line(const ClientMessage& msg);
std::string format_line(const ServerMessage& msg);

// Path escaping: bytes 0x21..0x7E other than '\' stand for themselves; every other byte is
// written \xHH. So any Linux name fits in one space-free field and round-trips exactly.
std::string escape_bytes(std::string_view raw);
std::optional<std::string> unescape_bytes(std::string_view escaped);

std::string format_mtime(const Mtime& t);
std::optional<Mtime> parse_mtime(std::string_view s);

}  // namespace ackxfer
