// The control-line codec: pure functions from text lines to messages and back. No I/O here;
// the grammar is specified in docs/PROTOCOL.md and each rule has a test in
// tests/unit/control_codec_test.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "digest/digest.h"
#include "protocol/error_codes.h"
#include "protocol/features.h"
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
  // What the sender supports (protocol/features.h); nullopt: a sender that predates feature
  // negotiation (no features= field).
  std::optional<Features> features;
  // In an encrypted session: the sender asks for its data connections in clear (send
  // --no-encryption, data=plain). Said inside TLS, so nobody on the path can set it.
  bool plain_data = false;
  friend bool operator==(const HelloRequest&, const HelloRequest&) = default;
};
// When the receiver may skip a SEND because the file is already there (re-running a finished
// transfer): never (the sender's --force, and senders that predate the field), when size and
// mtime match, or when size and the file digest match.
enum class SkipPolicy : std::uint8_t { kNever, kSizeMtime, kDigest };

struct SendRequest {
  std::uint64_t id = 0;
  std::string path;  // decoded bytes, relative to the transfer root
  std::uint64_t size = 0;
  std::uint32_t mode = 0;
  Mtime mtime;
  std::uint64_t chunk = 0;  // bytes per data frame; the last frame may be shorter
  SkipPolicy skip = SkipPolicy::kNever;
  Digest128 digest;  // the file digest, with SkipPolicy::kDigest
  friend bool operator==(const SendRequest&, const SendRequest&) = default;
};
struct MkdirRequest {
  std::uint64_t id = 0;
  std::string path;
  std::uint32_t mode = 0;
  Mtime mtime;
  friend bool operator==(const MkdirRequest&, const MkdirRequest&) = default;
};
// A symlink inside a sent tree. `target` is data: the receiver stores it as it is (absolute, or
// with ".." components) and never resolves it.
struct LinkRequest {
  std::uint64_t id = 0;
  std::string path;    // decoded bytes, relative to the transfer root, like SEND's
  std::string target;  // decoded bytes, verbatim
  Mtime mtime;         // of the link itself (lstat), not of what it points to
  friend bool operator==(const LinkRequest&, const LinkRequest&) = default;
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
// Either direction, feature `progress`: long local work for file `id` is going on at the side
// that sends it (the receiver checking or reading back a file, the sender hashing one): `done`
// of `total` bytes so far. It only tells the peer that this side is busy for it, not silent.
struct ProgressNote {
  std::uint64_t id = 0;
  std::uint64_t done = 0;
  std::uint64_t total = 0;
  friend bool operator==(const ProgressNote&, const ProgressNote&) = default;
};
using ClientMessage = std::variant<HelloRequest, SendRequest, MkdirRequest, DoneRequest,
                                   CancelRequest, ByeRequest, LinkRequest, ProgressNote>;

// Receiver -> sender.
struct HelloReply {
  int version = 0;
  std::uint16_t data_port = 0;
  std::uint32_t max_open = 0;
  // The features of the sender's list that the receiver supports too; nullopt: a receiver that
  // predates feature negotiation.
  std::optional<Features> features;
  // The receiver runs with --fsync: a verdict means the file is on stable storage.
  bool durable = false;
  // The receiver agreed to data connections in clear (data=plain): only ever in answer to a
  // sender that asked for it, in an encrypted session.
  bool plain_data = false;
  friend bool operator==(const HelloReply&, const HelloReply&) = default;
};
// Chunk indexes [first, last] of a file.
struct ChunkRange {
  std::uint32_t first = 0;
  std::uint32_t last = 0;
  friend bool operator==(const ChunkRange&, const ChunkRange&) = default;
};

struct ReadyReply {
  std::uint64_t id = 0;
  Token token;
  // Chunks the receiver already holds, verified, from an earlier attempt (a kept partial
  // file): the sender does not send them. Ascending, disjoint.
  std::vector<ChunkRange> have;
  friend bool operator==(const ReadyReply&, const ReadyReply&) = default;
};
struct OkReply {
  std::uint64_t id = 0;
  bool skipped = false;  // the file was already there, identical: nothing was sent
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
// Feature `credit`: the session may now have `open` files open at once (it only ever grows).
struct CreditReply {
  std::uint32_t open = 0;
  friend bool operator==(const CreditReply&, const CreditReply&) = default;
};
using ServerMessage =
    std::variant<HelloReply, ReadyReply, OkReply, ErrReply, ByeReply, ProgressNote, CreditReply>;

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
// escape_bytes(raw).size(), without building it.
std::size_t escaped_size(std::string_view raw);

// What is wrong with a symlink `target` at `path` for a LINK line, or nullopt if nothing: empty,
// a NUL byte, over kMaxLinkTargetBytes, or path and target escaped over kMaxLinkEscapedBytes.
// The receiver's parser and the sender's walk apply the same rule.
std::optional<std::string> link_target_problem(std::string_view path, std::string_view target);

std::string format_mtime(const Mtime& t);

// "0-3,7,9-12". Formatting stops before `max_bytes` (later ranges are left out: the sender
// then sends those chunks again, which is always correct). Parsing checks order, overlap and
// that every index is below `chunk_count`.
std::string format_ranges(const std::vector<ChunkRange>& ranges, std::size_t max_bytes);
std::optional<std::vector<ChunkRange>> parse_ranges(std::string_view s, std::uint64_t chunk_count);
// The longest `have=` value a receiver sends (the line limit leaves room for much more).
inline constexpr std::size_t kMaxRangesText = 8192;
std::optional<Mtime> parse_mtime(std::string_view s);

}  // namespace ackxfer
