// The receiver's side of the file system: the --dir root, directories created beneath it, temp
// files and the verified publish. Every path is resolved with openat2(RESOLVE_BENEATH), so no
// name and no symlink already in --dir can lead a write outside it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fs/partial.h"
#include "fs/relative_path.h"
#include "protocol/control_codec.h"
#include "unique_fd.h"

namespace ackxfer {

// errno plus a sentence naming the operation and the path (made printable), for logs and ERR
// replies.
struct FsError {
  int err = 0;
  std::string what;
};

// A file being received: a temp file in the final directory. Until publish() succeeds,
// destroying it removes the temp file, so no error path leaves one behind. The fd stays open
// for the object's whole life (data streams may still hold it), even after publish() or
// discard().
class TempFile {
 public:
  TempFile() = default;
  // A named temp file (`temp_name` in `dir`), or, with an empty `temp_name`, an anonymous one
  // (O_TMPFILE) that gets its first and only name when it is published.
  TempFile(std::shared_ptr<const UniqueFd> dir, std::string temp_name, std::string final_name,
           UniqueFd fd);
  TempFile(TempFile&&) noexcept = default;
  TempFile& operator=(TempFile&&) noexcept;
  ~TempFile() { discard(); }

  int fd() const { return fd_.get(); }
  const std::string& temp_name() const { return temp_name_; }
  const std::string& final_name() const { return final_name_; }
  const std::shared_ptr<const UniqueFd>& directory() const { return dir_; }

  // Sets mode and mtime, then puts the bytes this object wrote under the final name
  // (atomically replacing any file there). What is published is the file behind our fd, never
  // whatever the temp name points to by then: a named temp file is linked afresh from the fd.
  // `durable`: its data and inode are flushed (fsync) before it gets the name; the caller
  // flushes the directory. On failure the temp file is removed and the error returned.
  std::variant<std::monostate, FsError> publish(std::uint32_t mode, const Mtime& mtime,
                                                bool durable = false);
  // publish() in two steps, for callers that flush many files at once (syncfs) between them:
  // prepare() sets mode and mtime, place() gives the file its final name.
  std::variant<std::monostate, FsError> prepare(std::uint32_t mode, const Mtime& mtime);
  std::variant<std::monostate, FsError> place();
  // Removes the temp file (and its journal) if it is still there (idempotent).
  void discard();
  // Leaves the partial file and its journal in place for a later attempt to resume (see
  // fs/partial.h); the object no longer owns them. The fd stays open (and locked) until the
  // object dies.
  void keep();
  // Releases the partial's flock (taken by open_partial), so another attempt can take it.
  void unlock();

  // Resumable partial files: the journal, already created with its header (open_partial). It
  // is opened again (append only) at the first append: an idle partial holds one fd, not two.
  void set_journal(std::string name);
  bool has_journal() const { return !journal_name_.empty(); }
  // Appends `lines` to the journal. Returns 0 or the errno.
  int append_journal(std::string_view lines);
  // Removes the journal: the partial can no longer be resumed.
  void drop_journal();
  // The file was created with exactly these permission bits: publish() skips the chmod when
  // they are the ones asked for.
  void set_created_mode(int mode) { created_mode_ = mode; }

 private:
  std::shared_ptr<const UniqueFd> dir_;  // shared with other files in the same directory
  std::string temp_name_;
  std::string final_name_;
  UniqueFd fd_;
  bool linked_ = true;     // the temp name still exists (or an anonymous file is unpublished)
  int created_mode_ = -1;  // permission bits the file has had since creation, or -1
  std::string journal_name_;
  UniqueFd journal_fd_;
};

class Destination {
 public:
  // Creates `root` (and parents, as `mkdir -p` would: the process's umask applies) if missing,
  // and checks that files can be created in it (unless `discard`: nothing will be). Throws
  // Failure (kSetup) naming the problem.
  explicit Destination(const std::filesystem::path& root, bool discard = false);

  int root_fd() const { return root_.get(); }
  const std::filesystem::path& root_path() const { return root_path_; }
  // Why the path given as --dir no longer names the directory opened at start (removed,
  // renamed, or a file system mounted over it), or nullopt while it still does. Files would
  // otherwise go on landing in the old directory, out of sight.
  std::optional<std::string> root_replaced() const;

  // Opens the directory that contains `path`'s last component, creating missing directories
  // (mode 0755 less the umask) on the way. Returns an O_PATH directory fd.
  std::variant<UniqueFd, FsError> open_parent(const RelativePath& path) const;

  // Creates a temp file in `parent` for `final_name`, after checking that the file system has
  // `size` bytes free; allocates (fallocate) the first `reserve_now` bytes. The rest is
  // allocated chunk by chunk as data arrives (reserve_range), so a large file's allocation
  // overlaps its transfer instead of delaying READY (docs/PERFORMANCE.md).
  //
  // `anonymous` asks for an O_TMPFILE file where the file system supports it: it has no name
  // until publish() links it in (one directory update instead of create + rename), and it
  // vanishes by itself if the receiver dies.
  std::variant<TempFile, FsError> create_temp(std::shared_ptr<const UniqueFd> parent,
                                              std::string_view final_name, std::uint64_t size,
                                              std::uint64_t reserve_now, bool anonymous,
                                              std::uint32_t mode = 0600) const;
  bool anonymous_temps_supported() const { return anonymous_ok_; }

  // A resumable partial file for `final_name` (fs/partial.h): reopens the one an earlier
  // attempt left, with the chunks its journal lists as verified (`have`), or starts a new one
  // (with a journal from the start: what proves the partial is ours). When the partial is in
  // use by another transfer (it is locked), or is not a plain file, this falls back to an
  // ordinary temp file that cannot be resumed (`resumable` false). A partial reopened with
  // chunks to offer is not written to here (only checked for room): what a read-back of it
  // finds stays true while nothing else changes it (ReceiverContext::read_backs).
  struct Partial {
    TempFile temp;
    std::vector<JournalEntry> have;
    bool resumable = false;
  };
  std::variant<Partial, FsError> open_partial(std::shared_ptr<const UniqueFd> parent,
                                              std::string_view final_name, std::uint64_t size,
                                              const Mtime& mtime, std::uint64_t chunk,
                                              std::uint64_t reserve_now) const;

  // Creates directory `path` (and parents) if missing; existing directories are kept.
  // `created`, if given, tells whether `path` itself was created by this call (so it was empty).
  std::variant<std::monostate, FsError> make_directory(const RelativePath& path,
                                                       bool* created = nullptr) const;
  // Path components make_directory has had the kernel resolve on the calling thread (its cost
  // grows with them: a peer's deep path must not cost the square of its depth). For tests.
  static std::uint64_t components_resolved_on_this_thread();
  // The existing directory at `path`, opened O_RDONLY beneath the root, never through a
  // symlink at its last component; an invalid fd (errno set) if there is none.
  UniqueFd open_directory(const RelativePath& path) const;
  // Makes `final_name` in `parent` a symlink to `target` with modification time `mtime`: created
  // under a temp name, its own mtime set (never its target's), then renamed over the final name,
  // which atomically replaces a file or symlink already there. An existing directory is left
  // alone (EISDIR). `target` is stored verbatim and never resolved. On failure the temp link is
  // removed.
  std::variant<std::monostate, FsError> make_symlink(int parent, std::string_view final_name,
                                                     const std::string& target,
                                                     const Mtime& mtime) const;
  // Applies mode (unless none is given) and mtime to an existing directory beneath the root;
  // with `durable`, flushes it.
  std::variant<std::monostate, FsError> set_directory_metadata(const RelativePath& path,
                                                               std::optional<std::uint32_t> mode,
                                                               const Mtime& mtime,
                                                               bool durable = false) const;

  // recv --fsync: directories this object creates are remembered until take_created_parents()
  // hands over the directories that now hold a new entry, to be flushed.
  void track_created_directories(bool on) { track_created_ = on; }
  std::vector<std::shared_ptr<const UniqueFd>> take_created_parents() const;

 private:
  // Refuses at once what cannot fit, then allocates the first `reserve_now` bytes (unless
  // `check_only`).
  std::variant<std::monostate, FsError> check_and_reserve(int fd, std::string_view final_name,
                                                          std::uint64_t size,
                                                          std::uint64_t reserve_now,
                                                          bool check_only = false) const;
  void created_in(int parent_fd) const;

  std::filesystem::path root_path_;
  UniqueFd root_;
  bool anonymous_ok_ = false;  // O_TMPFILE + linkat work in --dir (probed at start)
  mode_t umask_ = 022;         // the process's umask, read at start
  bool track_created_ = false;
  mutable std::mutex created_mu_;
  mutable std::vector<std::shared_ptr<const UniqueFd>> created_parents_;  // guarded
};

// Allocates [offset, offset + length) of fd (fallocate). 0, or the errno (ENOSPC...); file
// systems without fallocate, and tmpfs (where allocating means zeroing pages the writes then
// overwrite), count as success.
int reserve_range(int fd, std::uint64_t offset, std::uint64_t length);
// Frees the blocks of [offset, offset + length) of fd, keeping its size (a hole reads as
// zeros). Best effort: file systems that cannot punch holes keep the blocks.
void release_range(int fd, std::uint64_t offset, std::uint64_t length);

// openat2(dirfd, path, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); -1 and errno on failure.
int open_beneath(int dirfd, const std::string& path, int flags, unsigned mode = 0);

// fsync of the directory behind an O_PATH (or any) directory fd. 0 or the errno.
int sync_directory(int dir_fd);
// syncfs of the file system that holds the directory behind `dir_fd`. 0 or the errno.
int sync_file_system(int dir_fd);

}  // namespace ackxfer
