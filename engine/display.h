// Names and peer-supplied text made safe to print: a file name may hold a newline, an escape
// sequence or a right-to-left override, and printed as it is it could forge a log line or
// rewrite the user's terminal. Every name and peer string the engine or the CLI prints goes
// through printable() first (like `ls -b` and rsync's \#ooo escapes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ackxfer {

// Printable ASCII and space stay; '\' becomes "\\"; well-formed UTF-8 stays, except C1
// controls, line and paragraph separators and bidirectional controls; every other byte is
// "\xHH". The result holds no byte below 0x20 and no DEL.
std::string printable(std::string_view raw);

// Only the control bytes (below 0x20, and DEL) escaped as "\xHH": for whole messages whose names
// were made printable already, as the net under them.
std::string control_free(std::string_view text);

// Appends "\xHH" for byte `c`: the escape printable(), control_free() and the control
// protocol's escape_bytes() share.
void append_hex_escape(std::string& out, unsigned char c);

// "1 file", "2 files", "0 files": a count and the noun that goes with it.
std::string counted(std::uint64_t n, std::string_view one, std::string_view many);

// printable() in single quotes, for messages: 'a\x0ab'.
inline std::string quote_name(std::string_view raw) {
  return "'" + printable(raw) + "'";
}

// `text` cut to `max` bytes with "..." after: for log lines a peer can cause many of, whose
// text holds names (quote_name) or the peer's own words.
inline std::string cut_for_log(std::string text, std::size_t max = 2048) {
  if (text.size() > max) text = text.substr(0, max) + "...";
  return text;
}

// quote_name() of at most the first `max` bytes, then how long the name is: for log lines a
// peer can cause many of (a path may be 4,095 bytes, and four times that escaped).
inline std::string quote_name_cut(std::string_view raw, std::size_t max = 256) {
  if (raw.size() <= max) return quote_name(raw);
  return quote_name(raw.substr(0, max)) + "... (" + std::to_string(raw.size()) + " bytes)";
}

}  // namespace ackxfer
