// Kept partial files, for resuming an interrupted transfer (docs/RELIABILITY.md, "Resume").
//
// A file of several chunks is received into `.ackxfer-<16 hex>.part` next to its final name,
// where the hex is a hash of the final name, so a later attempt at the same file finds it. Next
// to it, `.ackxfer-<16 hex>.journal` lists the chunks that were verified and are on disk:
//
//   ackxfer-partial 1 name=<escaped final name> size=<bytes> mtime=<sec.nsec> chunk=<bytes>
//   <index> <32 hex XXH3-128 of the chunk>
//   x <index>                    (the chunk is being written again: forget it)
//
// A chunk is only journaled after an fdatasync of the partial file completed, so the journal
// never claims bytes a crash could have lost. The pure parts (names, format, parsing) are here;
// the receiver's use of them is in fs/destination.cpp and receiver/incoming_file.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "digest/digest.h"
#include "protocol/control_codec.h"

namespace ackxfer {

struct JournalEntry {
  std::uint32_t index = 0;
  Digest128 digest;
  friend bool operator==(const JournalEntry&, const JournalEntry&) = default;
};

// ".ackxfer-<16 hex>": the partial file's name without its suffix (fs/relative_path.h reserves
// the shape for the receiver).
std::string partial_base_name(std::string_view final_name);
// A journal longer than this is not read (the longest legitimate one is under 1 MiB).
inline constexpr std::int64_t kMaxJournalBytes = 4 << 20;

// What a journal must start with to belong to this file (same name, size, mtime and chunk
// size; anything else means the source changed and the partial is useless). Ends with '\n'.
std::string journal_header(std::string_view final_name, std::uint64_t size, const Mtime& mtime,
                           std::uint64_t chunk);
std::string journal_line(const JournalEntry& e);
std::string journal_forget_line(std::uint32_t index);

// The verified chunks a journal records, in index order, or nullopt when it does not start
// with `header`. Lines after the header that are malformed, torn (no final '\n') or name an
// index >= chunk_count are ignored: the worst a damaged journal can do is offer fewer chunks.
std::optional<std::vector<JournalEntry>> parse_journal(std::string_view text,
                                                       std::string_view header,
                                                       std::uint32_t chunk_count);

// The final name a journal's header names, or nullopt if `text` does not start with a header
// of ours.
std::optional<std::string> journal_header_name(std::string_view text);

// What a read-back of a partial checks, as one digest: the declared size and chunk size (they
// decide each chunk's range) and every entry's index and digest, in order.
Digest128 claims_digest(const std::vector<JournalEntry>& entries, std::uint64_t size,
                        std::uint64_t chunk);

// Journal entries as READY's have= ranges.
std::vector<ChunkRange> to_ranges(const std::vector<JournalEntry>& entries);

// Removes the partials and journals under `root_fd` that the receiver can prove it made and
// that were last modified more than `max_age_s` seconds ago and are not in use (a partial in
// use is locked with flock). The proof: a journal `.ackxfer-<16 hex>.journal` that starts with
// our header, whose named file hashes to those 16 hex digits; its partial `.part` goes with it.
// Any other file of that shape (a user's own, or a crash leftover without a journal) is left
// alone and counted. Does not follow symlinks; stops early when `stop` becomes true.
struct SweepResult {
  std::uint64_t removed = 0;
  std::uint64_t bytes = 0;
  std::uint64_t left_unproven = 0;  // named like ours, but nothing proves we made them
};
SweepResult sweep_stale_partials(int root_fd, std::int64_t max_age_s,
                                 const std::atomic<bool>& stop);

}  // namespace ackxfer
