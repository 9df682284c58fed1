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

#include "fs/relative_path.h"
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

Digest128 claims_digest(const std::vector<JournalEntry>& entries, std::uint64_t size,
                        std::uint64_t chunk) {
  std::string bytes;
  bytes.reserve(16 + entries.size() * 20);
  auto put = [&](std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      bytes.push_back(static_cast<char>(v >> (8 * i)));
  };
  put(size, 8);
  put(chunk, 8);
  for (const JournalEntry& e : entries) {
    put(e.index, 4);
    bytes.append(reinterpret_cast<const char*>(e.digest.bytes.data()), e.digest.bytes.size());
  }
  return digest_of(bytes.data(), bytes.size());
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

std::optional<std::string> journal_header_name(std::string_view text) {
  constexpr std::string_view kStart = "ackxfer-partial 1 name=";
  if (!text.starts_with(kStart)) return std::nullopt;
  text.remove_prefix(kStart.size());
  std::size_t end = text.find_first_of(" \n");
  if (end == std::string_view::npos || text[end] != ' ') return std::nullopt;
  return unescape_bytes(text.substr(0, end));
}

namespace {

constexpr int kMaxSweepDepth = 256;
constexpr std::size_t kHeaderReadBytes = 16 * 1024;

bool is_hex16(std::string_view s) {
  if (s.size() != 16) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// ".ackxfer-<16 hex>" from a reserved-shape name with `suffix`, or "".
std::string_view base_of(std::string_view name, std::string_view suffix) {
  if (!name.starts_with(kTempPrefix) || !name.ends_with(suffix)) return {};
  std::string_view base = name.substr(0, name.size() - suffix.size());
  return is_hex16(base.substr(kTempPrefix.size())) ? base : std::string_view();
}

// A plain file this receiver's user owns, with no other name: what the receiver itself makes
// (Destination::open_partial asks the same of a partial before it resumes one). The header is
// only a hash anyone can compute: another user's file of that shape, in a directory where the
// receiver may remove it (sticky, or the receiver running as root), is not ours to remove.
bool plainly_ours(const struct stat& st) {
  return S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_uid == geteuid();
}

// Whether `name` in `dir` is still the file `was` describes, unchanged since (same inode and
// mtime): what was decided about it still holds. A transfer that started on it meanwhile
// rewrites the journal (its mtime moves) or makes a new partial (another inode).
bool still(int dir, const std::string& name, const struct stat& was) {
  struct stat now {};
  return fstatat(dir, name.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == was.st_dev &&
         now.st_ino == was.st_ino && now.st_mtim.tv_sec == was.st_mtim.tv_sec &&
         now.st_mtim.tv_nsec == was.st_mtim.tv_nsec;
}

// Whether the journal `name` in `dir` is one of ours: our header, naming a file whose partial
// base is this journal's.
bool journal_is_ours(int dir, const std::string& name, std::string_view base, struct stat& st) {
  UniqueFd f(openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!f || fstat(f.get(), &st) != 0 || !plainly_ours(st)) return false;
  std::string head(kHeaderReadBytes, '\0');
  ssize_t n = pread(f.get(), head.data(), head.size(), 0);
  if (n <= 0) return false;
  head.resize(static_cast<std::size_t>(n));
  auto final_name = journal_header_name(head);
  return final_name && partial_base_name(*final_name) == base;
}

void sweep_dir(int dir_fd, int depth, std::int64_t cutoff, const std::atomic<bool>& stop,
               SweepResult& out) {
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = fdopendir(fd);
  if (!d) {
    close(fd);
    return;
  }
  std::vector<std::string> subdirs, journals;
  std::vector<std::string> parts;
  while (dirent* e = readdir(d)) {
    if (stop.load(std::memory_order_relaxed)) break;
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (!is_reserved_name(name)) {
      if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) subdirs.emplace_back(name);
      continue;
    }
    if (name.ends_with(kJournalSuffix))
      journals.emplace_back(name);
    else
      parts.emplace_back(name);
  }
  const int self = dirfd(d);
  std::vector<std::string> proven_parts;
  for (const std::string& j : journals) {
    if (stop.load(std::memory_order_relaxed)) break;
    std::string_view base = base_of(j, kJournalSuffix);
    struct stat jst {};
    if (base.empty() || !journal_is_ours(self, j, base, jst)) {
      ++out.left_unproven;
      continue;
    }
    std::string part = std::string(base) + std::string(kTempSuffix);
    proven_parts.push_back(part);
    // Lock the partial, so a transfer that is using it right now is left alone (its fd holds
    // the lock), and no transfer can start using it while we decide.
    UniqueFd p(openat(self, part.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat pst {};
    bool have_part = p && fstat(p.get(), &pst) == 0;
    if (have_part && !plainly_ours(pst)) {
      out.left_unproven += 2;  // not a file the receiver made: it and its journal stay
      continue;
    }
    if (have_part && flock(p.get(), LOCK_EX | LOCK_NB) != 0) continue;
    if (jst.st_mtim.tv_sec > cutoff || (have_part && pst.st_mtim.tv_sec > cutoff)) continue;
    // Removed by name: only if each name still holds what was judged (workers serve sessions
    // while this runs).
    if (have_part && still(self, part, pst) && unlinkat(self, part.c_str(), 0) == 0) {
      ++out.removed;
      out.bytes += static_cast<std::uint64_t>(pst.st_size);
    }
    if (still(self, j, jst) && unlinkat(self, j.c_str(), 0) == 0) ++out.removed;
  }
  for (const std::string& p : parts)
    if (std::find(proven_parts.begin(), proven_parts.end(), p) == proven_parts.end())
      ++out.left_unproven;
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
