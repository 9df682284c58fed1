// Control-line parsing and formatting. Strict: one space between fields, printable ASCII only,
// every number range-checked, unknown key=value fields ignored (forward compatibility) but
// duplicates rejected.
#include "protocol/control_codec.h"

#include <array>
#include <charconv>
#include <cstdio>
#include <vector>

#include "display.h"
#include "hex.h"
#include "protocol/chunk_plan.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

// The longest LINK line: "LINK <id> <path> target=<target> mtime=<-sec.nsec>". Path and target
// share kMaxLinkEscapedBytes, so it fits the line limit every receiver of version 1 enforces.
static_assert(5 + 16 + 1 + kMaxLinkEscapedBytes + 8 + 7 + 24 <= kMaxLineBytes);

std::string format_err_message(std::string_view m);

ParseError err(ErrorCode code, std::string message, std::optional<std::uint64_t> id = {}) {
  return ParseError{code, std::move(message), id};
}

bool is_plain(unsigned char c) {
  return c >= 0x21 && c <= 0x7e;
}

std::string clip(std::string_view s) {
  constexpr std::size_t kMax = 64;  // quote at most this much of bad input back
  std::string out = escape_bytes(s.substr(0, kMax));
  if (s.size() > kMax) out += "...";
  return out;
}

// Splits on single spaces. Empty fields (double spaces, leading/trailing space) are errors.
std::optional<std::vector<std::string_view>> split_fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    std::size_t sp = line.find(' ', start);
    std::string_view f = line.substr(start, sp == std::string_view::npos ? sp : sp - start);
    if (f.empty()) return std::nullopt;
    out.push_back(f);
    if (out.size() > kMaxFieldsPerLine) return std::nullopt;
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  return out;
}

std::optional<std::uint64_t> parse_u64(std::string_view s, std::uint64_t max, int base = 10) {
  if (s.empty() || s.size() > 22) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

// key=value fields after the positional ones.
class KeyValues {
 public:
  // Returns an error message, or empty on success.
  std::string load(const std::vector<std::string_view>& fields, std::size_t first) {
    for (std::size_t i = first; i < fields.size(); ++i) {
      auto eq = fields[i].find('=');
      if (eq == std::string_view::npos || eq == 0)
        return "expected key=value, got '" + clip(fields[i]) + "'";
      std::string_view key = fields[i].substr(0, eq);
      for (auto& [k, v] : kv_)
        if (k == key) return "field '" + clip(key) + "' given twice";
      kv_.emplace_back(key, fields[i].substr(eq + 1));
    }
    return {};
  }
  std::optional<std::string_view> get(std::string_view key) const {
    for (auto& [k, v] : kv_)
      if (k == key) return v;
    return std::nullopt;
  }

 private:
  std::vector<std::pair<std::string_view, std::string_view>> kv_;
};

// Reads a required numeric key=value field into `out`; returns false and sets `e` on error.
bool need_u64(const KeyValues& kv, std::string_view key, std::uint64_t max, std::uint64_t& out,
              std::optional<ParseError>& e, std::optional<std::uint64_t> id, int base = 10) {
  auto v = kv.get(key);
  if (!v) {
    e = err(ErrorCode::kBadField, "missing field '" + std::string(key) + "'", id);
    return false;
  }
  auto n = parse_u64(*v, max, base);
  if (!n) {
    e = err(ErrorCode::kBadNumber,
            std::string(key) + "='" + clip(*v) + "' is not a number in range (max " +
                std::to_string(max) + ")",
            id);
    return false;
  }
  out = *n;
  return true;
}

std::optional<std::uint64_t> parse_id(std::string_view s) {
  return parse_u64(s, kMaxFileId);
}

// Shared by SEND and MKDIR: "<id> <path>" then key=value fields.
struct Head {
  std::uint64_t id;
  std::string path;
  KeyValues kv;
};

std::variant<Head, ParseError> parse_head(std::string_view verb,
                                          const std::vector<std::string_view>& f) {
  if (f.size() < 3) return err(ErrorCode::kBadLine, std::string(verb) + " needs <id> <path>");
  auto id = parse_id(f[1]);
  if (!id) return err(ErrorCode::kBadNumber, "bad id '" + clip(f[1]) + "'");
  auto path = unescape_bytes(f[2]);
  if (!path) return err(ErrorCode::kBadPath, "bad escape in path '" + clip(f[2]) + "'", id);
  if (path->size() > kMaxPathBytes)
    return err(ErrorCode::kBadPath,
               "path is " + std::to_string(path->size()) + " bytes; the limit is " +
                   std::to_string(kMaxPathBytes),
               id);
  Head h{*id, std::move(*path), {}};
  if (auto m = h.kv.load(f, 3); !m.empty()) return err(ErrorCode::kBadField, m, id);
  return h;
}

bool need_mtime(const KeyValues& kv, Mtime& mtime, std::optional<ParseError>& e, std::uint64_t id) {
  auto t = kv.get("mtime");
  if (!t) {
    e = err(ErrorCode::kBadField, "missing field 'mtime'", id);
    return false;
  }
  auto parsed = parse_mtime(*t);
  if (!parsed) {
    e = err(ErrorCode::kBadNumber, "mtime='" + clip(*t) + "' is not <seconds>.<nanoseconds>", id);
    return false;
  }
  mtime = *parsed;
  return true;
}

bool need_mode_mtime(const KeyValues& kv, std::uint32_t& mode, Mtime& mtime,
                     std::optional<ParseError>& e, std::uint64_t id) {
  std::uint64_t m = 0;
  if (!need_u64(kv, "mode", kMaxMode, m, e, id, 8)) return false;
  mode = static_cast<std::uint32_t>(m);
  return need_mtime(kv, mtime, e, id);
}

Parsed<ClientMessage> parse_send(const std::vector<std::string_view>& f) {
  auto head = parse_head("SEND", f);
  if (auto* e = std::get_if<ParseError>(&head)) return *e;
  auto& h = std::get<Head>(head);
  SendRequest r;
  r.id = h.id;
  r.path = std::move(h.path);
  std::optional<ParseError> e;
  if (!need_u64(h.kv, "size", kMaxFileBytes, r.size, e, r.id) ||
      !need_mode_mtime(h.kv, r.mode, r.mtime, e, r.id) ||
      !need_u64(h.kv, "chunk", kMaxChunkBytes, r.chunk, e, r.id))
    return *e;
  if (r.chunk < kMinChunkBytes)
    return err(ErrorCode::kBadNumber,
               "chunk=" + std::to_string(r.chunk) + " is below the minimum " +
                   std::to_string(kMinChunkBytes),
               r.id);
  if (!ChunkPlan::within_limits(r.size, r.chunk))
    return err(ErrorCode::kBadNumber,
               "size/chunk gives more than " + std::to_string(kMaxChunksPerFile) + " chunks", r.id);
  if (auto skip = h.kv.get("skip")) {
    if (*skip == "size-mtime") {
      r.skip = SkipPolicy::kSizeMtime;
    } else if (*skip == "xxh3") {
      r.skip = SkipPolicy::kDigest;
      auto hex = h.kv.get("xxh3");
      auto d = hex ? Digest128::from_hex(*hex) : std::nullopt;
      if (!d) return err(ErrorCode::kBadField, "skip=xxh3 needs xxh3=<32 hex digits>", r.id);
      r.digest = *d;
    } else if (*skip != "never") {
      return err(ErrorCode::kBadField,
                 "skip='" + clip(*skip) + "' is not never, size-mtime or xxh3", r.id);
    }
  }
  return ClientMessage{std::move(r)};
}

Parsed<ClientMessage> parse_mkdir(const std::vector<std::string_view>& f) {
  auto head = parse_head("MKDIR", f);
  if (auto* e = std::get_if<ParseError>(&head)) return *e;
  auto& h = std::get<Head>(head);
  MkdirRequest r;
  r.id = h.id;
  r.path = std::move(h.path);
  std::optional<ParseError> e;
  if (!need_mode_mtime(h.kv, r.mode, r.mtime, e, r.id)) return *e;
  return ClientMessage{std::move(r)};
}

Parsed<ClientMessage> parse_link(const std::vector<std::string_view>& f) {
  auto head = parse_head("LINK", f);
  if (auto* e = std::get_if<ParseError>(&head)) return *e;
  auto& h = std::get<Head>(head);
  LinkRequest r;
  r.id = h.id;
  r.path = std::move(h.path);
  auto escaped = h.kv.get("target");
  if (!escaped) return err(ErrorCode::kBadField, "missing field 'target'", r.id);
  auto target = unescape_bytes(*escaped);
  if (!target)
    return err(ErrorCode::kBadField, "bad escape in target '" + clip(*escaped) + "'", r.id);
  if (auto why = link_target_problem(r.path, *target)) return err(ErrorCode::kBadField, *why, r.id);
  r.target = std::move(*target);
  std::optional<ParseError> e;
  if (!need_mtime(h.kv, r.mtime, e, r.id)) return *e;
  return ClientMessage{std::move(r)};
}

// "PROGRESS <id> done=<n> total=<n>", the same in both directions.
std::variant<ProgressNote, ParseError> parse_progress(const std::vector<std::string_view>& f) {
  if (f.size() < 2) return err(ErrorCode::kBadLine, "PROGRESS needs <id>");
  auto id = parse_id(f[1]);
  if (!id) return err(ErrorCode::kBadNumber, "bad id '" + clip(f[1]) + "'");
  KeyValues kv;
  if (auto m = kv.load(f, 2); !m.empty()) return err(ErrorCode::kBadField, m, id);
  ProgressNote p;
  p.id = *id;
  std::optional<ParseError> e;
  if (!need_u64(kv, "done", kMaxFileBytes, p.done, e, id) ||
      !need_u64(kv, "total", kMaxFileBytes, p.total, e, id))
    return *e;
  return p;
}

std::optional<Features> parse_features_field(const KeyValues& kv, std::optional<ParseError>& e) {
  auto text = kv.get("features");
  if (!text) return std::nullopt;
  auto f = Features::parse(*text);
  if (!f) e = err(ErrorCode::kBadField, "features='" + clip(*text) + "' is malformed");
  return f;
}

// data=plain (HELLO, both ways); absent means the data connections are like the control
// connection. Any other value is refused rather than read as the default: a peer that means
// something else must not be taken to mean encryption.
bool parse_data_field(const KeyValues& kv, bool& plain, std::optional<ParseError>& e) {
  auto text = kv.get("data");
  if (!text) return true;
  if (*text != "plain") {
    e = err(ErrorCode::kBadField, "data='" + clip(*text) + "' is not 'plain'");
    return false;
  }
  plain = true;
  return true;
}

std::optional<std::string> check_printable(std::string_view line) {
  for (unsigned char c : line)
    if (!is_plain(c) && c != ' ')
      return "byte 0x" + to_hex(&c, 1) + " is not allowed in a control line (escape it as \\xHH)";
  return std::nullopt;
}

// Common prologue: strip '\r', check length and bytes, split.
std::variant<std::vector<std::string_view>, ParseError> prepare(std::string_view& line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > kMaxLineBytes)
    return err(ErrorCode::kLineTooLong,
               "line is longer than " + std::to_string(kMaxLineBytes) + " bytes");
  if (line.empty()) return err(ErrorCode::kBadLine, "empty line");
  if (auto m = check_printable(line)) return err(ErrorCode::kBadLine, *m);
  auto f = split_fields(line);
  if (!f) return err(ErrorCode::kBadLine, "fields must be separated by exactly one space");
  return std::move(*f);
}

std::optional<int> parse_version(const std::vector<std::string_view>& f) {
  if (f.size() < 3 || f[1] != kProtocolName) return std::nullopt;
  auto v = parse_u64(f[2], 1000000);
  if (!v) return std::nullopt;
  return static_cast<int>(*v);
}

}  // namespace

std::string escape_bytes(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (unsigned char c : raw) {
    if (is_plain(c) && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      append_hex_escape(out, c);
    }
  }
  return out;
}

std::size_t escaped_size(std::string_view raw) {
  std::size_t n = 0;
  for (unsigned char c : raw)
    n += is_plain(c) && c != '\\' ? 1 : 4;
  return n;
}

std::optional<std::string> link_target_problem(std::string_view path, std::string_view target) {
  if (target.empty()) return "the link target is empty";
  if (target.find('\0') != std::string_view::npos) return "the link target has a NUL byte";
  if (target.size() > kMaxLinkTargetBytes)
    return "the link target is " + std::to_string(target.size()) + " bytes; the limit is " +
           std::to_string(kMaxLinkTargetBytes);
  std::size_t both = escaped_size(path) + escaped_size(target);
  if (both > kMaxLinkEscapedBytes)
    return "the link's path and target take " + std::to_string(both) +
           " bytes escaped; the limit for both together is " + std::to_string(kMaxLinkEscapedBytes);
  return std::nullopt;
}

std::optional<std::string> unescape_bytes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (!is_plain(c)) return std::nullopt;
    if (c != '\\') {
      out.push_back(static_cast<char>(c));
      continue;
    }
    if (s.size() - i < 4 || s[i + 1] != 'x') return std::nullopt;
    auto v = parse_u64(s.substr(i + 2, 2), 255, 16);
    if (!v) return std::nullopt;
    out.push_back(static_cast<char>(*v));
    i += 3;
  }
  return out;
}

std::string format_mtime(const Mtime& t) {
  // struct timespec form (sec may be negative, nsec always positive) to a signed decimal:
  // {-5, 999999999} is -4.000000001 seconds.
  const bool neg = t.sec < 0;
  std::uint64_t whole;
  std::uint32_t frac;
  if (!neg) {
    whole = static_cast<std::uint64_t>(t.sec);
    frac = t.nsec;
  } else if (t.nsec == 0) {
    whole = static_cast<std::uint64_t>(-t.sec);
    frac = 0;
  } else {
    whole = static_cast<std::uint64_t>(-(t.sec + 1));
    frac = 1000000000u - t.nsec;
  }
  std::array<char, 16> ns{};
  std::snprintf(ns.data(), ns.size(), "%09u", frac);
  return (neg ? "-" : "") + std::to_string(whole) + "." + ns.data();
}

std::optional<Mtime> parse_mtime(std::string_view s) {
  bool neg = !s.empty() && s[0] == '-';
  if (neg) s.remove_prefix(1);
  auto dot = s.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  std::string_view frac = s.substr(dot + 1);
  if (frac.empty() || frac.size() > 9) return std::nullopt;
  auto sec = parse_u64(s.substr(0, dot), static_cast<std::uint64_t>(kMaxMtimeSeconds));
  auto f = parse_u64(frac, 999999999);
  if (!sec || !f) return std::nullopt;
  std::uint32_t nsec = static_cast<std::uint32_t>(*f);
  for (std::size_t i = frac.size(); i < 9; ++i)
    nsec *= 10;
  Mtime t;
  t.sec = neg ? -static_cast<std::int64_t>(*sec) : static_cast<std::int64_t>(*sec);
  t.nsec = nsec;
  // "-0.5" would mean -0.5 s; represent it as sec=-1, nsec=5e8 like struct timespec.
  if (neg && nsec != 0) {
    t.sec -= 1;
    t.nsec = 1000000000u - nsec;
  }
  return t;
}

Parsed<ClientMessage> parse_client_line(std::string_view line) {
  auto prepared = prepare(line);
  if (auto* e = std::get_if<ParseError>(&prepared)) return *e;
  auto& f = std::get<std::vector<std::string_view>>(prepared);
  std::string_view verb = f[0];
  if (verb == "SEND") return parse_send(f);
  if (verb == "MKDIR") return parse_mkdir(f);
  if (verb == "LINK") return parse_link(f);
  if (verb == "DONE") {
    if (f.size() < 3) return err(ErrorCode::kBadLine, "DONE needs <id> xxh3=<digest>");
    auto id = parse_id(f[1]);
    if (!id) return err(ErrorCode::kBadNumber, "bad id '" + clip(f[1]) + "'");
    KeyValues kv;
    if (auto m = kv.load(f, 2); !m.empty()) return err(ErrorCode::kBadField, m, id);
    auto hex = kv.get("xxh3");
    if (!hex) return err(ErrorCode::kBadField, "missing field 'xxh3'", id);
    auto d = Digest128::from_hex(*hex);
    if (!d) return err(ErrorCode::kBadField, "xxh3 must be 32 hex digits", id);
    return ClientMessage{DoneRequest{*id, *d}};
  }
  if (verb == "CANCEL") {
    if (f.size() < 2) return err(ErrorCode::kBadLine, "CANCEL needs <id>");
    auto id = parse_id(f[1]);
    if (!id) return err(ErrorCode::kBadNumber, "bad id '" + clip(f[1]) + "'");
    return ClientMessage{CancelRequest{*id}};
  }
  if (verb == "BYE") return ClientMessage{ByeRequest{}};
  if (verb == "HELLO") {
    auto v = parse_version(f);
    if (!v) return err(ErrorCode::kBadLine, "expected 'HELLO ackxfer <version>'");
    KeyValues kv;
    if (auto m = kv.load(f, 3); !m.empty()) return err(ErrorCode::kBadField, m);
    HelloRequest r{*v, std::nullopt};
    std::optional<ParseError> e;
    r.features = parse_features_field(kv, e);
    if (e) return *e;
    if (!parse_data_field(kv, r.plain_data, e)) return *e;
    return ClientMessage{r};
  }
  if (verb == "PROGRESS") {
    auto p = parse_progress(f);
    if (auto* e = std::get_if<ParseError>(&p)) return *e;
    return ClientMessage{std::get<ProgressNote>(p)};
  }
  return err(ErrorCode::kUnknownVerb, "unknown verb '" + clip(verb) + "'");
}

Parsed<ServerMessage> parse_server_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // ERR's message is free text: parse it before the strict field split.
  if (line.starts_with("ERR ")) {
    if (line.size() > kMaxLineBytes) return err(ErrorCode::kLineTooLong, "ERR line too long");
    std::string_view rest = line.substr(4);
    auto sp = rest.find(' ');
    if (sp == std::string_view::npos) return err(ErrorCode::kBadLine, "ERR needs <id> <code>");
    ErrReply r;
    std::string_view id = rest.substr(0, sp);
    if (id != "-") {
      auto n = parse_id(id);
      if (!n) return err(ErrorCode::kBadNumber, "bad id in ERR");
      r.id = *n;
    }
    rest.remove_prefix(sp + 1);
    sp = rest.find(' ');
    std::string_view code = rest.substr(0, sp);
    auto c = error_code_from_wire(code);
    // An unknown code from a newer receiver is still an error; report it as an I/O error.
    r.code = c ? *c : ErrorCode::kIo;
    // Free text from the peer, shown to the user: anything but printable ASCII and spaces is
    // escaped here, so it cannot carry terminal control sequences or forged lines.
    std::string_view text = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    r.message = format_err_message(text);
    if (!c) r.message = clip(code) + ": " + r.message;
    return ServerMessage{std::move(r)};
  }
  auto prepared = prepare(line);
  if (auto* e = std::get_if<ParseError>(&prepared)) return *e;
  auto& f = std::get<std::vector<std::string_view>>(prepared);
  std::string_view verb = f[0];
  std::optional<ParseError> e;
  if (verb == "READY" || verb == "OK") {
    if (f.size() < 2) return err(ErrorCode::kBadLine, std::string(verb) + " needs <id>");
    auto id = parse_id(f[1]);
    if (!id) return err(ErrorCode::kBadNumber, "bad id '" + clip(f[1]) + "'");
    KeyValues kv;
    if (auto m = kv.load(f, 2); !m.empty()) return err(ErrorCode::kBadField, m, id);
    if (verb == "OK") {
      auto skipped = kv.get("skipped");
      if (skipped && *skipped != "0" && *skipped != "1")
        return err(ErrorCode::kBadField, "skipped must be 0 or 1", id);
      return ServerMessage{OkReply{*id, skipped && *skipped == "1"}};
    }
    auto hex = kv.get("token");
    auto token = hex ? Token::from_hex(*hex) : std::nullopt;
    if (!token) return err(ErrorCode::kBadField, "READY needs token=<32 hex digits>", id);
    ReadyReply r{*id, *token, {}};
    if (auto have = kv.get("have")) {
      auto ranges = parse_ranges(*have, kMaxChunksPerFile);
      if (!ranges) return err(ErrorCode::kBadField, "have='" + clip(*have) + "' is malformed", id);
      r.have = std::move(*ranges);
    }
    return ServerMessage{std::move(r)};
  }
  if (verb == "HELLO") {
    auto v = parse_version(f);
    if (!v) return err(ErrorCode::kBadLine, "expected 'HELLO ackxfer <version> ...'");
    KeyValues kv;
    if (auto m = kv.load(f, 3); !m.empty()) return err(ErrorCode::kBadField, m);
    HelloReply r;
    r.version = *v;
    std::uint64_t port = 0, max_open = 0;
    if (!need_u64(kv, "data-port", 65535, port, e, {}) ||
        !need_u64(kv, "max-open", 1u << 20, max_open, e, {}))
      return *e;
    if (port == 0 || max_open == 0) return err(ErrorCode::kBadNumber, "zero data-port/max-open");
    r.data_port = static_cast<std::uint16_t>(port);
    r.max_open = static_cast<std::uint32_t>(max_open);
    r.features = parse_features_field(kv, e);
    if (e) return *e;
    if (!parse_data_field(kv, r.plain_data, e)) return *e;
    if (auto d = kv.get("durable")) {
      if (*d != "0" && *d != "1") return err(ErrorCode::kBadField, "durable must be 0 or 1");
      r.durable = *d == "1";
    }
    return ServerMessage{r};
  }
  if (verb == "PROGRESS") {
    auto p = parse_progress(f);
    if (auto* pe = std::get_if<ParseError>(&p)) return *pe;
    return ServerMessage{std::get<ProgressNote>(p)};
  }
  if (verb == "CREDIT") {
    KeyValues kv;
    if (auto m = kv.load(f, 1); !m.empty()) return err(ErrorCode::kBadField, m);
    std::uint64_t open = 0;
    if (!need_u64(kv, "open", 1u << 20, open, e, {})) return *e;
    if (open == 0) return err(ErrorCode::kBadNumber, "CREDIT open=0");
    return ServerMessage{CreditReply{static_cast<std::uint32_t>(open)}};
  }
  if (verb == "BYE") {
    KeyValues kv;
    if (auto m = kv.load(f, 1); !m.empty()) return err(ErrorCode::kBadField, m);
    ByeReply r;
    if (!need_u64(kv, "files", UINT64_MAX, r.files, e, {}) ||
        !need_u64(kv, "bytes", UINT64_MAX, r.bytes, e, {}))
      return *e;
    return ServerMessage{r};
  }
  return err(ErrorCode::kUnknownVerb, "unknown reply '" + clip(verb) + "'");
}

namespace {

std::string format_err_message(std::string_view m) {
  // Free text, but still one printable line: anything but printable ASCII and spaces is
  // escaped (a backslash stays: the text is for people, not decoded).
  std::string out;
  for (unsigned char c : m) {
    if (c == ' ' || is_plain(c))
      out.push_back(static_cast<char>(c));
    else
      out += escape_bytes(std::string_view(reinterpret_cast<const char*>(&c), 1));
  }
  if (out.size() > 1024) out.resize(1024);
  return out;
}

std::string format_progress(const ProgressNote& m) {
  return "PROGRESS " + std::to_string(m.id) + " done=" + std::to_string(m.done) +
         " total=" + std::to_string(m.total) + "\n";
}

struct ClientFormatter {
  std::string operator()(const HelloRequest& m) const {
    std::string s = "HELLO " + std::string(kProtocolName) + " " + std::to_string(m.version);
    if (m.features) s += " features=" + m.features->to_string();
    if (m.plain_data) s += " data=plain";
    return s + "\n";
  }
  std::string operator()(const ProgressNote& m) const { return format_progress(m); }
  std::string operator()(const SendRequest& m) const {
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", m.mode);
    std::string s = "SEND " + std::to_string(m.id) + " " + escape_bytes(m.path) +
                    " size=" + std::to_string(m.size) + " mode=" + mode +
                    " mtime=" + format_mtime(m.mtime) + " chunk=" + std::to_string(m.chunk);
    if (m.skip == SkipPolicy::kSizeMtime) s += " skip=size-mtime";
    if (m.skip == SkipPolicy::kDigest) s += " skip=xxh3 xxh3=" + m.digest.hex();
    return s + "\n";
  }
  std::string operator()(const MkdirRequest& m) const {
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", m.mode);
    return "MKDIR " + std::to_string(m.id) + " " + escape_bytes(m.path) + " mode=" + mode +
           " mtime=" + format_mtime(m.mtime) + "\n";
  }
  std::string operator()(const LinkRequest& m) const {
    return "LINK " + std::to_string(m.id) + " " + escape_bytes(m.path) +
           " target=" + escape_bytes(m.target) + " mtime=" + format_mtime(m.mtime) + "\n";
  }
  std::string operator()(const DoneRequest& m) const {
    return "DONE " + std::to_string(m.id) + " xxh3=" + m.digest.hex() + "\n";
  }
  std::string operator()(const CancelRequest& m) const {
    return "CANCEL " + std::to_string(m.id) + "\n";
  }
  std::string operator()(const ByeRequest&) const { return "BYE\n"; }
};

struct ServerFormatter {
  std::string operator()(const HelloReply& m) const {
    std::string s = "HELLO " + std::string(kProtocolName) + " " + std::to_string(m.version) +
                    " data-port=" + std::to_string(m.data_port) +
                    " max-open=" + std::to_string(m.max_open);
    if (m.features) s += " features=" + m.features->to_string();
    if (m.durable) s += " durable=1";
    if (m.plain_data) s += " data=plain";
    return s + "\n";
  }
  std::string operator()(const ProgressNote& m) const { return format_progress(m); }
  std::string operator()(const CreditReply& m) const {
    return "CREDIT open=" + std::to_string(m.open) + "\n";
  }
  std::string operator()(const ReadyReply& m) const {
    std::string s = "READY " + std::to_string(m.id) + " token=" + m.token.hex();
    if (!m.have.empty()) {
      std::string have = format_ranges(m.have, kMaxRangesText);
      if (!have.empty()) s += " have=" + have;
    }
    return s + "\n";
  }
  std::string operator()(const OkReply& m) const {
    return "OK " + std::to_string(m.id) + (m.skipped ? " skipped=1\n" : "\n");
  }
  std::string operator()(const ErrReply& m) const {
    std::string s = "ERR " + (m.id ? std::to_string(*m.id) : std::string("-")) + " " +
                    std::string(wire_name(m.code));
    if (!m.message.empty()) s += " " + format_err_message(m.message);
    return s + "\n";
  }
  std::string operator()(const ByeReply& m) const {
    return "BYE files=" + std::to_string(m.files) + " bytes=" + std::to_string(m.bytes) + "\n";
  }
};

}  // namespace

std::string format_ranges(const std::vector<ChunkRange>& ranges, std::size_t max_bytes) {
  std::string out;
  for (const ChunkRange& r : ranges) {
    std::string one = std::to_string(r.first);
    if (r.last != r.first) one += "-" + std::to_string(r.last);
    if (out.size() + one.size() + 1 > max_bytes) break;
    if (!out.empty()) out.push_back(',');
    out += one;
  }
  return out;
}

std::optional<std::vector<ChunkRange>> parse_ranges(std::string_view s, std::uint64_t chunk_count) {
  std::vector<ChunkRange> out;
  std::uint64_t next_free = 0;  // the lowest index a following range may start at
  while (!s.empty()) {
    std::size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    s = comma == std::string_view::npos ? std::string_view() : s.substr(comma + 1);
    if (comma != std::string_view::npos && s.empty()) return std::nullopt;  // trailing comma
    std::size_t dash = item.find('-');
    auto first = parse_u64(item.substr(0, dash), UINT32_MAX);
    auto last =
        dash == std::string_view::npos ? first : parse_u64(item.substr(dash + 1), UINT32_MAX);
    if (!first || !last || *last < *first || *first < next_free || *last >= chunk_count)
      return std::nullopt;
    out.push_back(
        ChunkRange{static_cast<std::uint32_t>(*first), static_cast<std::uint32_t>(*last)});
    next_free = *last + 1;
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::string format_line(const ClientMessage& msg) {
  return std::visit(ClientFormatter{}, msg);
}
std::string format_line(const ServerMessage& msg) {
  return std::visit(ServerFormatter{}, msg);
}

}  // namespace ackxfer
