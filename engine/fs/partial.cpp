// Partial-file names, the journal format, and the sweep of abandoned partials.
#include "fs/partial.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <map>

#include "fs/destination.h"
#include "unique_fd.h"

namespace ackxfer {

std::string partial_base_name(std::string_view final_name) {
  // The first 8 bytes of the name's XXH3-128: 64 bits make two names in one directory sharing
  // a partial file negligible, and the journal header names the file, so even then the
  // journal of one is never taken for the other's.
  Digest128 d = digest_of(final_name.data(), final_name.size());
  return std::string(kTempPrefix) + d.hex().substr(0, 16);
}

std::string journal_header(std::string_view final_name, std::uint64_t size, const Mtime& mtime,
                           std::uint64_t chunk) {
  return "ackxfer-partial 1 name=" + escape_bytes(final_name) + " size=" + std::to_string(size) +
         " mtime=" + format_mtime(mtime) + " chunk=" + std::to_string(chunk) + "\n";
}

std::string journal_line(const JournalEntry& e) {
  return std::to_string(e.index) + " " + e.digest.hex() + "\n";
}

std::string journal_forget_line(std::uint32_t index) {
  return "x " + std::to_string(index) + "\n";
}

namespace {

std::optional<std::uint32_t> parse_index(std::string_view s, std::uint32_t limit) {
  std::uint32_t v = 0;
  if (s.empty() || s.size() > 10) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v >= limit) return std::nullopt;
  return v;
}

}  // namespace

std::optional<std::vector<JournalEntry>> parse_journal(std::string_view text,
                                                       std::string_view header,
                                                       std::uint32_t chunk_count) {
  if (!text.starts_with(header)) return std::nullopt;
  text.remove_prefix(header.size());
  std::map<std::uint32_t, Digest128> have;
  while (true) {
    std::size_t nl = text.find('\n');
    if (nl == std::string_view::npos) break;  // nothing left, or a torn last line
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    std::size_t sp = line.find(' ');
    if (sp == std::string_view::npos) continue;
    std::string_view a = line.substr(0, sp), b = line.substr(sp + 1);
    if (a == "x") {
      if (auto i = parse_index(b, chunk_count)) have.erase(*i);
      continue;
    }
    auto i = parse_index(a, chunk_count);
    auto d = Digest128::from_hex(b);
    if (i && d && b.size() == 32) have[*i] = *d;
  }
  std::vector<JournalEntry> out;
  out.reserve(have.size());
  for (auto& [i, d] : have)
    out.push_back(JournalEntry{i, d});
  return out;
}

std::vector<ChunkRange> to_ranges(const std::vector<JournalEntry>& entries) {
  std::vector<ChunkRange> out;
  for (const JournalEntry& e : entries) {
    if (!out.empty() && out.back().last + 1 == e.index)
      out.back().last = e.index;
    else
      out.push_back(ChunkRange{e.index, e.index});
  }
  return out;
}

bool is_partial_name(std::string_view name) {
  if (!name.starts_with(kTempPrefix)) return false;
  return name.ends_with(kTempSuffix) || name.ends_with(kJournalSuffix);
}

namespace {

constexpr int kMaxSweepDepth = 256;

void sweep_dir(int dir_fd, int depth, std::int64_t cutoff, const std::atomic<bool>& stop,
               SweepResult& out) {
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = fdopendir(fd);
  if (!d) {
    close(fd);
    return;
  }
  std::vector<std::string> subdirs;
  while (dirent* e = readdir(d)) {
    if (stop.load(std::memory_order_relaxed)) break;
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (e->d_type == DT_DIR || (e->d_type == DT_UNKNOWN && !is_partial_name(name))) {
      subdirs.emplace_back(name);
      continue;
    }
    if (!is_partial_name(name)) continue;
    // Lock it, so a transfer that is using it right now is left alone (its fd holds the lock),
    // and no transfer can start using it while we decide.
    UniqueFd f(openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!f) continue;
    struct stat st {};
    if (fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (flock(f.get(), LOCK_EX | LOCK_NB) != 0) continue;
    if (st.st_mtim.tv_sec > cutoff) continue;
    if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
      ++out.removed;
      out.bytes += static_cast<std::uint64_t>(st.st_size);
    }
  }
  int self = dirfd(d);
  if (depth < kMaxSweepDepth) {
    for (const std::string& s : subdirs) {
      if (stop.load(std::memory_order_relaxed)) break;
      // O_NOFOLLOW: a symlink to a directory (inside --dir or not) is not walked.
      UniqueFd sub(openat(self, s.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) sweep_dir(sub.get(), depth + 1, cutoff, stop, out);
    }
  }
  closedir(d);
}

}  // namespace

SweepResult sweep_stale_partials(int root_fd, std::int64_t max_age_s,
                                 const std::atomic<bool>& stop) {
  SweepResult out;
  std::int64_t cutoff = static_cast<std::int64_t>(std::time(nullptr)) - max_age_s;
  UniqueFd root(openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root) sweep_dir(root.get(), 0, cutoff, stop, out);
  return out;
}

}  // namespace ackxfer
