// TreeWalker: opendir/readdir with fstatat (and readlinkat for symlinks), depth-first, lazily.
#include "sender/tree_walker.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "error.h"
#include "fs/relative_path.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

Mtime mtime_of(const struct stat& st) {
  return Mtime{st.st_mtim.tv_sec, static_cast<std::uint32_t>(st.st_mtim.tv_nsec)};
}

const char* kind_name(mode_t m) {
  if (S_ISLNK(m)) return "symbolic link";
  if (S_ISFIFO(m)) return "FIFO";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "character device";
  if (S_ISBLK(m)) return "block device";
  return "special file";
}

constexpr const char* kReservedShape =
    "the name has the shape receivers reserve for their temporary files "
    "(.ackxfer-*.part, .ackxfer-*.journal)";

// Inside a tree, such entries are skipped with a warning; named as a PATH, they are failures,
// and the words say which (a PATH is followed if it is a symlink, so it is never one itself).
std::string reserved_shape(bool named) {
  return named ? std::string(kReservedShape) + "; rename it to send it"
               : std::string("skipped: ") + kReservedShape;
}

std::string not_sent_kind(mode_t m, bool named) {
  if (named)
    return std::string("a ") + kind_name(m) +
           " cannot be sent (only regular files and directories, or symlinks to them)";
  return std::string("skipped: a ") + kind_name(m) +
         " is not sent (only regular files, directories and symlinks)";
}

}  // namespace

TreeWalker::TreeWalker(std::vector<std::string> roots) {
  // Every PATH argument is looked at now, before any receiver is: one that cannot be sent (a
  // typo, most often) is a problem at once, whether or not a receiver is ever reached, and a
  // walk left with none has nothing to do. Each is looked at again when its turn comes.
  for (auto& arg : roots) {
    struct stat st;
    std::string name;
    if (auto why = unusable_root(arg, st, name))
      problems_.push_back({arg, *why});
    else
      roots_.push_back(std::move(arg));
  }
}

TreeWalker::~TreeWalker() {
  for (auto& d : stack_)
    closedir(d.dir);
}

std::vector<WalkProblem> TreeWalker::take_problems() {
  return std::exchange(problems_, {});
}

std::optional<std::string> TreeWalker::wire_name_of(const std::string& arg) {
  std::string p = arg;
  while (p.size() > 1 && p.back() == '/')
    p.pop_back();
  auto slash = p.rfind('/');
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    // "." or "dir/..": use the directory's real name, like scp does.
    char resolved[PATH_MAX];
    if (!realpath(p.c_str(), resolved)) return std::nullopt;
    std::string r = resolved;
    if (r == "/") return std::nullopt;
    base = r.substr(r.rfind('/') + 1);
  }
  return base;
}

std::optional<SourceEntry> TreeWalker::from_stat(const struct stat& st, std::string source,
                                                 std::string wire) {
  if (wire.size() > kMaxPathBytes) {
    problems_.push_back({source, "its path is longer than the protocol's " +
                                     std::to_string(kMaxPathBytes) + "-byte limit"});
    return std::nullopt;
  }
  SourceEntry e;
  e.source_path = std::move(source);
  e.wire_path = std::move(wire);
  e.mode = st.st_mode & 07777;
  e.mtime = mtime_of(st);
  if (S_ISREG(st.st_mode)) {
    e.kind = SourceEntry::Kind::kFile;
    e.size = static_cast<std::uint64_t>(st.st_size);
    return e;
  }
  if (S_ISDIR(st.st_mode)) {
    e.kind = SourceEntry::Kind::kDirectory;
    return e;
  }
  problems_.push_back({e.source_path, not_sent_kind(st.st_mode, false), false});
  return std::nullopt;
}

std::optional<SourceEntry> TreeWalker::link_entry(int dir_fd, const char* name,
                                                  const struct stat& st, std::string source,
                                                  std::string wire) {
  if (wire.size() > kMaxPathBytes) {
    problems_.push_back({source, "its path is longer than the protocol's " +
                                     std::to_string(kMaxPathBytes) + "-byte limit"});
    return std::nullopt;
  }
  // One byte more than the limit, so a target that is too long shows as too long, not cut.
  // Relative to the walk's directory fd: the link read is the one that was lstat'ed.
  std::string target(kMaxLinkTargetBytes + 1, '\0');
  ssize_t n = readlinkat(dir_fd, name, target.data(), target.size());
  if (n < 0) {
    problems_.push_back({source, "cannot read symlink: " + errno_text(errno)});
    return std::nullopt;
  }
  target.resize(static_cast<std::size_t>(n));
  if (auto why = link_target_problem(wire, target)) {
    problems_.push_back({source, "cannot send this symlink: " + *why});
    return std::nullopt;
  }
  SourceEntry e;
  e.kind = SourceEntry::Kind::kSymlink;
  e.source_path = std::move(source);
  e.wire_path = std::move(wire);
  e.mode = st.st_mode & 07777;
  e.mtime = mtime_of(st);
  e.link_target = std::move(target);
  return e;
}

void TreeWalker::push_dir(int parent_fd, const char* name, const struct stat& st,
                          const std::string& source, const std::string& wire) {
  // Relative to the directory the walk is in, never through a symlink: a directory swapped
  // for a link since fstatat looked at it cannot lead the walk (or any open) outside the tree.
  UniqueFd fd(parent_fd >= 0
                  ? openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                  : ::open(source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    problems_.push_back({source, errno == ELOOP || errno == ENOTDIR
                                     ? "changed while being walked (no longer a directory)"
                                     : "cannot read directory: " + errno_text(errno)});
    return;
  }
  struct stat now {};
  if (fstat(fd.get(), &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
    problems_.push_back({source, "changed while being walked (another directory now)"});
    return;
  }
  auto held = std::make_shared<const UniqueFd>(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!held->valid()) {
    // Its files must be opened relative to it (never by path, through symlinks): without a
    // descriptor to hold, the directory is not walked.
    problems_.push_back({source, "cannot read directory: " + errno_text(errno)});
    return;
  }
  DIR* d = fdopendir(fd.get());
  if (!d) {
    problems_.push_back({source, "cannot read directory: " + errno_text(errno)});
    return;
  }
  (void)fd.release();  // the DIR owns it now
  stack_.push_back({d, source + "/", wire + "/", std::move(held)});
}

bool TreeWalker::reserved(std::string_view name, const std::string& source) {
  if (!is_reserved_name(name)) return false;
  problems_.push_back({source, reserved_shape(false), false});
  return true;
}

std::optional<std::string> TreeWalker::unusable_root(const std::string& arg, struct stat& st,
                                                     std::string& name) {
  if (::stat(arg.c_str(), &st) != 0) return errno_text(errno);  // follows symlinks, like cp
  auto wire = wire_name_of(arg);
  if (!wire) return "has no name to send it under; name a directory inside it";
  name = std::move(*wire);
  if (is_reserved_name(name)) return reserved_shape(true);
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return not_sent_kind(st.st_mode, true);
  // What the walk will need: to read a file; to list and enter a directory. Checked with the
  // credentials the walk opens with (AT_EACCESS: effective ids and capabilities, so a sender
  // with CAP_DAC_READ_SEARCH is not turned away from what it can read).
  if (faccessat(AT_FDCWD, arg.c_str(), S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK, AT_EACCESS) != 0)
    return errno_text(errno);
  return std::nullopt;
}

std::optional<SourceEntry> TreeWalker::start_root(const std::string& arg) {
  struct stat st;
  std::string name;
  if (auto why = unusable_root(arg, st, name)) {
    problems_.push_back({arg, *why});
    return std::nullopt;
  }
  // A regular file or a directory, readable, with a name that is not reserved: what is named
  // on the command line and cannot be sent is a failure (unusable_root), not a skip.
  std::string source = arg;
  while (source.size() > 1 && source.back() == '/')
    source.pop_back();
  auto e = from_stat(st, source, std::move(name));
  if (e && e->kind == SourceEntry::Kind::kDirectory)
    push_dir(-1, "", st, e->source_path, e->wire_path);
  return e;
}

std::optional<SourceEntry> TreeWalker::next() {
  while (true) {
    if (stack_.empty()) {
      if (next_root_ == roots_.size()) return std::nullopt;
      if (auto e = start_root(roots_[next_root_++])) return e;
      continue;
    }
    OpenDir& top = stack_.back();
    errno = 0;
    dirent* de = readdir(top.dir);
    if (!de) {
      if (errno != 0)
        problems_.push_back({top.source_prefix, "error reading directory: " + errno_text(errno)});
      closedir(top.dir);
      stack_.pop_back();
      continue;
    }
    std::string_view name = de->d_name;
    if (name == "." || name == "..") continue;
    std::string source = top.source_prefix + de->d_name;
    std::string wire = top.wire_prefix + de->d_name;
    if (reserved(name, source)) continue;
    if (de->d_type == DT_REG && !ignore_types_) {
      // Saves a stat per file: the sender learns size, mode and mtime from the fd it opens.
      if (wire.size() > kMaxPathBytes) {
        problems_.push_back({source, "its path is longer than the protocol's " +
                                         std::to_string(kMaxPathBytes) + "-byte limit"});
        continue;
      }
      SourceEntry e;
      e.kind = SourceEntry::Kind::kFile;
      e.source_path = std::move(source);
      e.wire_path = std::move(wire);
      e.stat_known = false;
      e.dir = top.fd;  // valid: push_dir walks no directory it cannot hold
      e.name = de->d_name;
      return e;
    }
    struct stat st;
    if (fstatat(dirfd(top.dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      problems_.push_back({source, errno_text(errno)});
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      // Sent as a link, never followed: what it points to may be outside the tree, or nowhere.
      if (auto e = link_entry(dirfd(top.dir), de->d_name, st, std::move(source), std::move(wire)))
        return e;
      continue;
    }
    auto e = from_stat(st, std::move(source), std::move(wire));
    if (!e) continue;
    // Opened relative to the directory held open, without following a symlink, like a file
    // readdir typed (above); without it the file would be opened by its whole path, through
    // any symlink swapped in for it or a parent since.
    if (e->kind == SourceEntry::Kind::kFile) {
      e->dir = top.fd;
      e->name = de->d_name;
    }
    // push_dir may reallocate stack_: `top` is not used after this.
    if (e->kind == SourceEntry::Kind::kDirectory)
      push_dir(dirfd(top.dir), de->d_name, st, e->source_path, e->wire_path);
    return e;
  }
}

SyntheticTree::SyntheticTree(std::string name, std::uint64_t files, std::uint64_t file_bytes)
    : name_(std::move(name)), files_(files), file_bytes_(file_bytes) {}

std::optional<SourceEntry> SyntheticTree::next() {
  SourceEntry e;
  e.synthetic = true;
  e.mode = 0755;
  e.mtime = Mtime{1700000000, 0};
  if (!root_done_) {
    root_done_ = true;
    e.kind = SourceEntry::Kind::kDirectory;
    e.source_path = e.wire_path = name_;
    return e;
  }
  if (next_file_ == files_) return std::nullopt;
  bool in_subdirs = files_ > 1000;
  std::string dir = in_subdirs ? name_ + "/d" + std::to_string(next_file_ / 1000) : name_;
  if (in_subdirs && next_file_ % 1000 == 0 && !dir_pending_) {
    dir_pending_ = true;
    e.kind = SourceEntry::Kind::kDirectory;
    e.source_path = e.wire_path = dir;
    return e;
  }
  dir_pending_ = false;
  e.kind = SourceEntry::Kind::kFile;
  e.mode = 0644;
  e.size = file_bytes_;
  e.source_path = e.wire_path = dir + "/f" + std::to_string(next_file_++);
  return e;
}

}  // namespace ackxfer
