// libFuzzer target: the control-line codec and the path rule. Any input must parse or be
// refused without crashing; whatever parses must format back to a line that parses to the
// same message; a SEND, MKDIR or LINK path that passes the rule must not escape (no "..", no
// leading '/') nor name the receiver's temp files, and a LINK target that parses is
// non-empty, NUL-free and within its limits.
//
//   build-fuzz/fuzz/control_line_fuzzer fuzz/corpus/control -max_total_time=60
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/relative_path.h"
#include "protocol/control_codec.h"

using namespace ackxfer;

namespace {

[[noreturn]] void fail(const char* what) {
  __builtin_fprintf(stderr, "control_line_fuzzer: %s\n", what);
  std::abort();
}

void check_path(const std::string& path) {
  auto r = validate_relative_path(path);
  if (r.index() != 0) return;
  if (path.empty() || path.front() == '/') fail("accepted an absolute or empty path");
  for (auto c : std::get<RelativePath>(r).components)
    if (c.empty() || c == "." || c == ".." || c.find('/') != std::string_view::npos ||
        c.find('\0') != std::string_view::npos)
      fail("accepted a bad component");
    else if (is_reserved_name(c))
      fail("accepted a name in the receiver's temp namespace");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto c = parse_client_line(line);
  if (c.ok()) {
    std::string again = format_line(c.value());
    again.pop_back();  // '\n'
    auto back = parse_client_line(again);
    if (!back.ok() || !(back.value() == c.value())) fail("client message does not round-trip");
    if (auto* s = std::get_if<SendRequest>(&c.value())) check_path(s->path);
    if (auto* m = std::get_if<MkdirRequest>(&c.value())) check_path(m->path);
    if (auto* l = std::get_if<LinkRequest>(&c.value())) {
      check_path(l->path);
      // The target is data, but it must obey its limits: symlinkat() gets it as a C string.
      if (link_target_problem(l->path, l->target)) fail("accepted a bad link target");
    }
  }
  auto s = parse_server_line(line);
  if (s.ok() && !std::holds_alternative<ErrReply>(s.value())) {
    std::string again = format_line(s.value());
    again.pop_back();
    auto back = parse_server_line(again);
    if (!back.ok() || !(back.value() == s.value())) fail("server message does not round-trip");
  }
  if (auto raw = unescape_bytes(line)) {
    if (escape_bytes(*raw).size() < raw->size()) fail("escaping lost bytes");
    if (unescape_bytes(escape_bytes(*raw)) != *raw) fail("escaping does not round-trip");
  }
  return 0;
}
