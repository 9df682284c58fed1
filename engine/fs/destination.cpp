// Destination and TempFile: mkdir-beneath, temp creation with space reservation, publish.
#include "fs/destination.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "display.h"
#include "error.h"
#include "protocol/chunk_plan.h"
#include "protocol/token.h"

namespace ackxfer {
namespace {

std::string describe(std::string_view op, std::string_view path, int err) {
  // openat2(RESOLVE_BENEATH) says EXDEV ("Invalid cross-device link") for a symlink that would
  // lead out of --dir: say that instead.
  std::string why =
      err == EXDEV ? "a symlink on the way leads outside the receiver's --dir" : errno_text(err);
  return std::string(op) + " " + quote_name(path) + ": " + why;
}

// Path components make_directory asked the kernel to resolve, on this thread (for tests).
thread_local std::uint64_t t_components_resolved = 0;

std::string join(const RelativePath& p, std::size_t count) {
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    if (i) out.push_back('/');
    out.append(p.components[i]);
  }
  return out;
}

timespec to_timespec(const Mtime& t) {
  timespec ts{};
  ts.tv_sec = t.sec;
  ts.tv_nsec = t.nsec;
  return ts;
}

// Gives the file behind `fd` the name `name` in `dirfd` (failing if the name exists).
// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc/self/fd path works for everyone where
// /proc is mounted.
int link_from_fd(int fd, int dirfd, const char* name) {
  if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0) return 0;
  if (errno != ENOENT && errno != EPERM && errno != EINVAL) return errno;
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  if (linkat(AT_FDCWD, proc.c_str(), dirfd, name, AT_SYMLINK_FOLLOW) == 0) return 0;
  return errno;
}

std::string random_temp_name() {
  // 64 random bits make a collision with a concurrent transfer or a leftover negligible;
  // O_EXCL (or linkat's EEXIST) makes it impossible to take someone else's file.
  return std::string(kTempPrefix) + Token::random().hex().substr(0, 16) + std::string(kTempSuffix);
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Whether `name` in `dirfd` is (still) the file `st` describes.
bool names_file(int dirfd, const std::string& name, const struct stat& st) {
  struct stat now {};
  return fstatat(dirfd, name.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 && same_file(now, st);
}

}  // namespace

int open_beneath(int dirfd, const std::string& path, int flags, unsigned mode) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.mode = mode;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  // EAGAIN: a concurrent rename raced the lookup; the kernel asks us to retry. A few times is
  // plenty; a directory renamed in a tight loop by someone else gets an error, not a hang.
  for (int attempt = 0; attempt < 64; ++attempt) {
    long fd = syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != EAGAIN) return static_cast<int>(fd);
  }
  return -1;
}

int sync_directory(int dir_fd) {
  // fsync needs a real open file; O_PATH fds refuse it.
  UniqueFd d(openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return errno;
  return fsync(d.get()) == 0 ? 0 : errno;
}

int sync_file_system(int dir_fd) {
  UniqueFd d(openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return errno;
  return syncfs(d.get()) == 0 ? 0 : errno;
}

TempFile::TempFile(std::shared_ptr<const UniqueFd> dir, std::string temp_name,
                   std::string final_name, UniqueFd fd)
    : dir_(std::move(dir)),
      temp_name_(std::move(temp_name)),
      final_name_(std::move(final_name)),
      fd_(std::move(fd)) {}

TempFile& TempFile::operator=(TempFile&& o) noexcept {
  if (this != &o) {
    discard();
    dir_ = std::move(o.dir_);
    temp_name_ = std::move(o.temp_name_);
    final_name_ = std::move(o.final_name_);
    fd_ = std::move(o.fd_);
    linked_ = std::exchange(o.linked_, false);
    created_mode_ = o.created_mode_;
    journal_name_ = std::move(o.journal_name_);
    journal_fd_ = std::move(o.journal_fd_);
  }
  return *this;
}

void TempFile::discard() {
  if (!linked_ || !dir_) return;
  // An anonymous temp file has no name to remove: closing its fd frees it. A named one is
  // removed only if the name is still ours.
  if (!temp_name_.empty()) {
    struct stat st {};
    if (fstat(fd_.get(), &st) == 0 && names_file(dir_->get(), temp_name_, st))
      unlinkat(dir_->get(), temp_name_.c_str(), 0);
  }
  drop_journal();
  linked_ = false;
}

void TempFile::keep() {
  linked_ = false;
}

void TempFile::unlock() {
  if (fd_) flock(fd_.get(), LOCK_UN);
}

void TempFile::drop_journal() {
  if (journal_name_.empty()) return;
  // Ours by name: the reserved namespace keeps senders from putting anything there.
  unlinkat(dir_->get(), journal_name_.c_str(), 0);
  journal_name_.clear();
  journal_fd_.reset();
}

void TempFile::set_journal(std::string name) {
  journal_name_ = std::move(name);
}

int TempFile::append_journal(std::string_view lines) {
  if (journal_name_.empty() || !linked_) return EINVAL;
  if (!journal_fd_) {
    // O_NONBLOCK: a FIFO swapped in under the name must not block the worker's thread.
    journal_fd_.reset(openat(dir_->get(), journal_name_.c_str(),
                             O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!journal_fd_) return errno;
    struct stat st {};
    if (fstat(journal_fd_.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
      journal_fd_.reset();
      return EINVAL;  // not the journal we wrote: it no longer vouches for anything
    }
  }
  // One write: O_APPEND keeps lines whole against our own earlier writes, and a crash in the
  // middle leaves a torn last line, which the parser ignores.
  std::size_t done = 0;
  while (done < lines.size()) {
    ssize_t n = ::write(journal_fd_.get(), lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

std::variant<std::monostate, FsError> TempFile::publish(std::uint32_t mode, const Mtime& mtime,
                                                        bool durable) {
  auto r = prepare(mode, mtime);
  if (std::holds_alternative<FsError>(r)) return r;
  if (durable && fsync(fd_.get()) != 0) {
    int e = errno;
    discard();
    return FsError{e, describe("flush", final_name_, e)};
  }
  return place();
}

std::variant<std::monostate, FsError> TempFile::prepare(std::uint32_t mode, const Mtime& mtime) {
  auto fail = [&](std::string_view op, int e) {
    discard();
    return FsError{e, describe(op, final_name_, e)};
  };
  if (!linked_)
    return FsError{ENOENT, "publish " + quote_name(final_name_) + ": temp file already gone"};
  // Only permission bits: a receiver running as root must not create set-id files for a peer.
  if (static_cast<int>(mode & 0777) != created_mode_ && fchmod(fd_.get(), mode & 0777) != 0)
    return fail("chmod", errno);
  timespec times[2] = {{0, UTIME_OMIT}, to_timespec(mtime)};
  if (futimens(fd_.get(), times) != 0) return fail("set mtime of", errno);
  return std::monostate{};
}

std::variant<std::monostate, FsError> TempFile::place() {
  auto fail = [&](std::string_view op, int e) {
    discard();
    return FsError{e, describe(op, final_name_, e)};
  };
  if (!linked_)
    return FsError{ENOENT, "publish " + quote_name(final_name_) + ": temp file already gone"};
  const int dir = dir_->get();
  if (temp_name_.empty()) {
    // Anonymous: link it in under its final name. If that name exists, link it under a temp
    // name and rename that over it, which replaces atomically.
    int e = link_from_fd(fd_.get(), dir, final_name_.c_str());
    if (e == 0) {
      linked_ = false;
      return std::monostate{};
    }
    if (e != EEXIST) return fail("link into place", e);
    std::string fresh = random_temp_name();
    if (int e2 = link_from_fd(fd_.get(), dir, fresh.c_str())) return fail("link into place", e2);
    if (renameat(dir, fresh.c_str(), dir, final_name_.c_str()) != 0) {
      int e3 = errno;
      unlinkat(dir, fresh.c_str(), 0);
      return fail("rename into place", e3);
    }
    linked_ = false;
    return std::monostate{};
  }
  // Named: publish the inode we wrote and verified, not whatever the temp name points to by
  // now. Link our fd under a fresh, unguessable name and rename that over the final name.
  struct stat ours {};
  if (fstat(fd_.get(), &ours) != 0) return fail("stat", errno);
  std::string fresh = random_temp_name();
  int e = link_from_fd(fd_.get(), dir, fresh.c_str());
  if (e == 0) {
    if (renameat(dir, fresh.c_str(), dir, final_name_.c_str()) != 0) {
      int e2 = errno;
      unlinkat(dir, fresh.c_str(), 0);
      return fail("rename into place", e2);
    }
    if (names_file(dir, temp_name_, ours)) unlinkat(dir, temp_name_.c_str(), 0);
  } else {
    // No way to link an fd here (no /proc): rename the temp name, after checking that it is
    // still our file.
    if (!names_file(dir, temp_name_, ours))
      return fail("publish (the temp file was replaced by someone else)", ESTALE);
    if (renameat(dir, temp_name_.c_str(), dir, final_name_.c_str()) != 0)
      return fail("rename into place", errno);
  }
  linked_ = false;
  // The file is in place; its journal is history. (If we die between the two, the journal
  // names a partial that is gone, and the next start's sweep removes it.)
  drop_journal();
  return std::monostate{};
}

std::optional<std::string> Destination::root_replaced() const {
  struct stat opened {
  }, now{};
  if (fstat(root_.get(), &opened) != 0) return std::nullopt;  // cannot tell
  if (::stat(root_path_.c_str(), &now) != 0)
    return "'" + root_path_.string() + "' is gone (" + errno_text(errno) + ")";
  if (now.st_dev != opened.st_dev || now.st_ino != opened.st_ino)
    return "'" + root_path_.string() +
           "' now names another directory than the one opened at start (renamed or removed "
           "and made again, or a file system mounted over it)";
  return std::nullopt;
}

Destination::Destination(const std::filesystem::path& root, bool discard) : root_path_(root) {
  mode_t old = umask(0);
  umask(old);
  umask_ = old;
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec)
    throw Failure("cannot create destination directory '" + root.string() + "': " + ec.message());
  int fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw SystemError("open destination directory '" + root.string() + "'", errno);
  root_.reset(fd);
  if (discard) return;
  // Probe O_TMPFILE + linkat once: NFS and some FUSE file systems lack them, and /proc may be
  // missing in a container. Without them every temp file is a named one.
  UniqueFd probe(openat(root_.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  int probe_err = probe ? 0 : errno;
  if (probe) {
    std::string name = random_temp_name();
    if (link_from_fd(probe.get(), root_.get(), name.c_str()) == 0) {
      unlinkat(root_.get(), name.c_str(), 0);
      anonymous_ok_ = true;
    }
  }
  if (!anonymous_ok_) {
    // A --dir we cannot write into is a set-up error now, not a failure of every file later.
    std::string name = random_temp_name();
    UniqueFd f(openat(root_.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!f) {
      int e = errno;
      if (e == EACCES || e == EPERM || e == EROFS || e == ENOSPC || e == EDQUOT ||
          probe_err == EACCES || probe_err == EROFS)
        throw Failure("cannot write into --dir '" + root.string() + "': " + errno_text(e));
    } else {
      unlinkat(root_.get(), name.c_str(), 0);
    }
  }
}

std::vector<std::shared_ptr<const UniqueFd>> Destination::take_created_parents() const {
  std::lock_guard lock(created_mu_);
  return std::exchange(created_parents_, {});
}

void Destination::created_in(int parent_fd) const {
  if (!track_created_) return;
  int fd = fcntl(parent_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return;
  std::lock_guard lock(created_mu_);
  created_parents_.push_back(std::make_shared<const UniqueFd>(fd));
}

std::variant<UniqueFd, FsError> Destination::open_parent(const RelativePath& path) const {
  std::size_t n = path.components.size() - 1;  // directories above the final name
  if (n == 0) {
    int fd = fcntl(root_.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return FsError{errno, describe("dup root of", root_path_.string(), errno)};
    return UniqueFd(fd);
  }
  // Fast path: the directory usually exists already; one openat2 resolves it all.
  std::string dir = join(path, n);
  int fd = open_beneath(root_.get(), dir, O_PATH | O_DIRECTORY);
  if (fd >= 0) return UniqueFd(fd);
  if (errno != ENOENT) return FsError{errno, describe("open directory", dir, errno)};
  // Slow path: create what is missing below the deepest directory that exists.
  auto made = make_directory(RelativePath{{path.components.begin(), path.components.end() - 1}});
  if (auto* e = std::get_if<FsError>(&made)) return *e;
  fd = open_beneath(root_.get(), dir, O_PATH | O_DIRECTORY);
  if (fd < 0) return FsError{errno, describe("open directory", dir, errno)};
  return UniqueFd(fd);
}

UniqueFd Destination::open_directory(const RelativePath& path) const {
  return UniqueFd(open_beneath(root_.get(), join(path, path.components.size()),
                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
}

std::uint64_t Destination::components_resolved_on_this_thread() {
  return t_components_resolved;
}

std::variant<std::monostate, FsError> Destination::make_directory(const RelativePath& path,
                                                                  bool* created) const {
  if (created) *created = false;
  const std::size_t n = path.components.size();
  // Every lookup resolves beneath the root, not beneath the previous component: a symlink in
  // the tree may lead up and across it (a/link -> ../b), as it may for a file's parents.
  auto resolve = [&](std::size_t count) {
    t_components_resolved += count;
    return open_beneath(root_.get(), join(path, count), O_PATH | O_DIRECTORY);
  };
  // Usually it exists: one openat2 resolves it all.
  UniqueFd cur(resolve(n));
  if (cur) return std::monostate{};
  // The deepest directory above it that exists (a prefix resolves only if every shorter one
  // does), found by halves: a path of 2,048 components costs some 20 lookups, not one per
  // component, each resolving all before it (2 million components, a worker busy for 0.1 s
  // per MKDIR).
  std::size_t have = 0, missing = n;  // prefix `have` resolves (0: the root), `missing` not
  while (missing - have > 1) {
    std::size_t mid = have + (missing - have) / 2;
    UniqueFd fd(resolve(mid));
    if (fd) {
      have = mid;
      cur = std::move(fd);
    } else {
      missing = mid;
    }
  }
  int cur_fd = have == 0 ? root_.get() : cur.get();
  for (std::size_t i = have; i < n; ++i) {
    std::string name(path.components[i]);
    // 0755 less the umask, like mkdir -p; a MKDIR's own mode is applied at BYE.
    bool made = mkdirat(cur_fd, name.c_str(), 0755) == 0;
    if (!made && errno != EEXIST)
      return FsError{errno, describe("create directory", join(path, i + 1), errno)};
    if (made) created_in(cur_fd);
    if (created && i + 1 == n) *created = made;
    // What it made opens beneath its parent, following no link; what someone made meanwhile
    // (or a link that names nothing yet) resolves beneath the root like every other path.
    int fd = made ? openat(cur_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                  : resolve(i + 1);
    if (fd < 0) return FsError{errno, describe("open directory", join(path, i + 1), errno)};
    cur.reset(fd);
    cur_fd = fd;
  }
  return std::monostate{};
}

std::variant<TempFile, FsError> Destination::create_temp(std::shared_ptr<const UniqueFd> parent,
                                                         std::string_view final_name,
                                                         std::uint64_t size,
                                                         std::uint64_t reserve_now, bool anonymous,
                                                         std::uint32_t mode) const {
  std::string temp;
  int fd;
  int created_mode = -1;
  if (anonymous && anonymous_ok_) {
    // Nobody can open a nameless file, so it may carry its final mode from the start (less the
    // umask); when the umask takes nothing from it, publish needs no chmod.
    std::uint32_t create_mode = mode & 0777;
    // O_RDWR, not O_WRONLY: the splice receive path reads written ranges back to hash them.
    fd = openat(parent->get(), ".", O_TMPFILE | O_RDWR | O_CLOEXEC, create_mode);
    created_mode = static_cast<int>(create_mode & ~umask_);
  } else {
    temp = random_temp_name();
    fd = openat(parent->get(), temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  }
  if (fd < 0) return FsError{errno, describe("create temp file for", final_name, errno)};
  TempFile tf(std::move(parent), std::move(temp), std::string(final_name), UniqueFd(fd));
  tf.set_created_mode(created_mode);
  auto r = check_and_reserve(fd, final_name, size, reserve_now);
  if (auto* e = std::get_if<FsError>(&r)) return *e;
  return tf;
}

std::variant<std::monostate, FsError> Destination::check_and_reserve(int fd,
                                                                     std::string_view final_name,
                                                                     std::uint64_t size,
                                                                     std::uint64_t reserve_now,
                                                                     bool check_only) const {
  // Refuse at once what cannot fit, rather than after most of it has been sent. (Files not
  // reserved ahead are small; their one write says ENOSPC just as clearly.) Space the file
  // already holds (a resumed partial) counts as available.
  struct statvfs sv {};
  struct stat st {};
  if (reserve_now > 0 && size > reserve_now && fstatvfs(fd, &sv) == 0 && sv.f_frsize > 0 &&
      fstat(fd, &st) == 0) {
    std::uint64_t free_bytes = static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize;
    std::uint64_t held = static_cast<std::uint64_t>(st.st_blocks) * 512;
    std::uint64_t need = size > held ? size - held : 0;
    if (free_bytes < need)
      return FsError{ENOSPC, "no space: " + quote_name(final_name) + " needs " +
                                 std::to_string(need) +
                                 " more bytes; the receiver's file system has " +
                                 std::to_string(free_bytes) + " free"};
  }
  if (check_only) return std::monostate{};
  if (int e = reserve_range(fd, 0, std::min(size, reserve_now)))
    return FsError{e, describe("reserve space for", final_name, e)};
  return std::monostate{};
}

std::variant<Destination::Partial, FsError> Destination::open_partial(
    std::shared_ptr<const UniqueFd> parent, std::string_view final_name, std::uint64_t size,
    const Mtime& mtime, std::uint64_t chunk, std::uint64_t reserve_now) const {
  auto fallback = [&]() -> std::variant<Partial, FsError> {
    // Not resumable: a nameless temp file where possible, so nothing is ever left behind.
    auto t = create_temp(parent, final_name, size, reserve_now, true);
    if (auto* e = std::get_if<FsError>(&t)) return *e;
    return Partial{std::move(std::get<TempFile>(t)), {}, false};
  };
  std::string base = partial_base_name(final_name);
  std::string part_name = base + std::string(kTempSuffix);
  std::string journal_name = base + std::string(kJournalSuffix);
  int dir = parent->get();
  UniqueFd fd(openat(dir, part_name.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == ENOSPC || errno == EDQUOT || errno == EACCES || errno == EROFS)
      return FsError{errno, describe("create temp file for", final_name, errno)};
    return fallback();  // a symlink or something else odd has the name: leave it alone
  }
  // In use by another transfer of the same file, or not a plain file of ours (another user's
  // file of that name, made to be published as ours, or a hard link): do not touch.
  struct stat st {};
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0 || fstat(fd.get(), &st) != 0 ||
      !S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != geteuid())
    return fallback();

  ChunkPlan plan(size, chunk);
  std::string header = journal_header(final_name, size, mtime, chunk);
  std::vector<JournalEntry> have;
  // O_NONBLOCK here and below: a FIFO of that name must not block the worker's thread.
  UniqueFd jfd(openat(dir, journal_name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat jst {};
  if (jfd && fstat(jfd.get(), &jst) == 0 && S_ISREG(jst.st_mode) && jst.st_nlink == 1 &&
      jst.st_size <= kMaxJournalBytes) {
    std::string text(static_cast<std::size_t>(jst.st_size), '\0');
    ssize_t n = pread(jfd.get(), text.data(), text.size(), 0);
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    if (auto entries = parse_journal(text, header, plan.count())) {
      // Only chunks the partial file really extends over (a truncated file loses the rest).
      for (const JournalEntry& e : *entries)
        if (plan.within(e.index, static_cast<std::uint64_t>(st.st_size))) have.push_back(e);
    }
  }
  jfd.reset();
  if (have.empty() && ftruncate(fd.get(), 0) != 0)
    return FsError{errno, describe("truncate temp file for", final_name, errno)};
  int raw = fd.get();
  TempFile tf(parent, std::move(part_name), std::string(final_name), std::move(fd));
  tf.set_journal(journal_name);
  // Room first, before the journal is touched: a partial that cannot be finished for want of
  // space now keeps its verified chunks for an attempt when there is room (it used to be
  // removed with them). A reopened partial is only checked: a reservation would move its
  // ctime, so an attempt that wrote nothing would still make the next one read it all back
  // (its first chunk is reserved when a frame for it arrives, like every other).
  auto r = check_and_reserve(raw, final_name, size, reserve_now, !have.empty());
  if (auto* e = std::get_if<FsError>(&r)) {
    if (!have.empty()) tf.keep();
    return *e;
  }
  // The journal is (re)written now, header first: it is what proves to a later sweep that the
  // partial is ours, and it carries the chunks we keep, so a crash right now loses nothing.
  UniqueFd wfd(openat(dir, journal_name.c_str(),
                      O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                      0600));
  struct stat wst {};
  if (!wfd || fstat(wfd.get(), &wst) != 0 || !S_ISREG(wst.st_mode) || wst.st_nlink != 1) {
    int e = wfd ? EINVAL : errno;
    if (e == ENOSPC || e == EDQUOT || e == EACCES || e == EROFS) {
      if (!have.empty()) tf.keep();  // the journal is as it was: the partial stays resumable
      return FsError{e, describe("create journal for", final_name, e)};
    }
    // Not a journal of ours under that name (a FIFO, a hard link): this transfer is not
    // resumable. The partial goes with `tf`; the thing at the journal's name is left alone.
    tf.set_journal("");
    return fallback();
  }
  std::string lines = header;
  for (const JournalEntry& e : have)
    lines += journal_line(e);
  for (std::size_t done = 0; done < lines.size();) {
    ssize_t n = ::write(wfd.get(), lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      return FsError{e, describe("write journal of", final_name, e)};  // ~TempFile removes both
    }
    done += static_cast<std::size_t>(n);
  }
  wfd.reset();
  return Partial{std::move(tf), std::move(have), true};
}

int reserve_range(int fd, std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return 0;
  // tmpfs has no blocks to reserve: its fallocate allocates and zeroes the pages that the
  // writes then fill again, a pass over memory that cost the receiver a fifth of its CPU per
  // GB (docs/PERFORMANCE.md, "Cycles per byte"). There, a full file system shows up as a
  // write error instead, which fails the file just as cleanly; the free-space check at SEND
  // still refuses a file that cannot fit.
  struct statfs sfs {};
  if (fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC) return 0;
  if (fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) return 0;
  int e = errno;
  // A file system without fallocate still works; it just cannot promise the space up front.
  return e == EOPNOTSUPP || e == ENOSYS ? 0 : e;
}

void release_range(int fd, std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return;
  (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length));
}

std::variant<std::monostate, FsError> Destination::make_symlink(int parent,
                                                                std::string_view final_name,
                                                                const std::string& target,
                                                                const Mtime& mtime) const {
  std::string name(final_name);
  std::string temp = random_temp_name();
  if (symlinkat(target.c_str(), parent, temp.c_str()) != 0)
    return FsError{errno, describe("create symlink", name, errno)};
  auto fail = [&](std::string_view op) {
    int e = errno;
    unlinkat(parent, temp.c_str(), 0);
    if (e == EISDIR)
      return FsError{
          e, quote_name(name) + " is a directory on the receiver; a symlink cannot replace it"};
    return FsError{e, describe(op, name, e)};
  };
  // AT_SYMLINK_NOFOLLOW: the link's own time. Its target may be anywhere, or nowhere.
  timespec times[2] = {{0, UTIME_OMIT}, to_timespec(mtime)};
  if (utimensat(parent, temp.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    return fail("set mtime of symlink");
  // rename(2) never follows a symlink at the new name: an old link is replaced, not written
  // through, and a directory there makes it fail with EISDIR.
  if (renameat(parent, temp.c_str(), parent, name.c_str()) != 0)
    return fail("rename symlink into place");
  return std::monostate{};
}

std::variant<std::monostate, FsError> Destination::set_directory_metadata(
    const RelativePath& path, std::optional<std::uint32_t> mode, const Mtime& mtime,
    bool durable) const {
  std::string p = join(path, path.components.size());
  UniqueFd fd(open_beneath(root_.get(), p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  if (!fd) return FsError{errno, describe("open directory", p, errno)};
  if (mode && fchmod(fd.get(), *mode & 0777) != 0)
    return FsError{errno, describe("chmod", p, errno)};
  timespec times[2] = {{0, UTIME_OMIT}, to_timespec(mtime)};
  if (futimens(fd.get(), times) != 0) return FsError{errno, describe("set mtime of", p, errno)};
  if (durable && fsync(fd.get()) != 0) return FsError{errno, describe("flush", p, errno)};
  return std::monostate{};
}

}  // namespace ackxfer
