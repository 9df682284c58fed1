// The receiver's side of the file system: the --dir root, directories created beneath it, temp
// files and the verified publish. Every path is resolved with openat2(RESOLVE_BENEATH), so no
// name and no symlink already in --dir can lead a write outside it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fs/partial.h"
#include "fs/relative_path.h"
#include "protocol/control_codec.h"
#include "unique_fd.h"

namespace ackxfer {

// errno plus a sentence naming the operation and the path, for logs and ERR replies.
struct FsError {
  int err = 0;
  std::string what;
};

// A file being received: a uniquely named temp file in the final directory. Until publish()
// succeeds, destroying it removes the temp file, so no error path leaves one behind. The fd
// stays open for the object's whole life (data streams may still hold it), even after
// publish() or discard().
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

  // Sets mode and mtime, then renames over the final name (atomically replacing any file
  // already there). On failure the temp file is removed and the error returned.
  std::variant<std::monostate, FsError> publish(std::uint32_t mode, const Mtime& mtime);
  // Removes the temp file (and its journal) if it is still there (idempotent).
  void discard();
  // Leaves the partial file and its journal in place for a later attempt to resume (see
  // fs/partial.h); the object no longer owns them. The fd stays open (and locked) until the
  // object dies.
  void keep();
  // Releases the partial's flock (taken by open_partial), so another attempt can take it.
  void unlock();

  // Resumable partial files: the journal's name and the header it must start with. Appends
  // `lines` to the journal, creating it with its header first if it does not exist yet.
  // Returns 0 or the errno.
  void set_journal(std::string name, std::string header);
  bool has_journal() const { return !journal_name_.empty(); }
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
  bool linked_ = true;        // the temp name still exists
  int created_mode_ = -1;     // permission bits given at creation (exact: umask 0), or -1
  std::string journal_name_;  // resumable partials only
  std::string journal_header_;
  UniqueFd journal_fd_;  // opened at the first append
};

// Temp names start with this, so a partial file is never mistaken for a real one.
inline constexpr std::string_view kTempPrefix = ".ackxfer-";
inline constexpr std::string_view kTempSuffix = ".part";

class Destination {
 public:
  // Creates `root` (and parents) if missing. Throws SystemError if it cannot.
  explicit Destination(const std::filesystem::path& root);

  int root_fd() const { return root_.get(); }
  const std::filesystem::path& root_path() const { return root_path_; }

  // Opens the directory that contains `path`'s last component, creating missing directories
  // (mode 0755 before umask) on the way. Returns an O_PATH directory fd.
  std::variant<UniqueFd, FsError> open_parent(const RelativePath& path) const;

  // Creates a temp file in `parent` for `final_name`, after checking that the file system has
  // `size` bytes free; allocates (fallocate) the first `reserve_now` bytes. The rest is
  // allocated chunk by chunk as data arrives (reserve_range), so a large file's allocation
  // overlaps its transfer instead of delaying READY (docs/PERFORMANCE.md).
  //
  // `anonymous` asks for an O_TMPFILE file where the file system supports it: it has no name
  // until publish() links it in (one directory update instead of create + rename: the
  // receiver's cost per small file is mostly directory updates), and it vanishes by itself if
  // the receiver dies. Multi-chunk files stay named, so a later version can resume them.
  std::variant<TempFile, FsError> create_temp(std::shared_ptr<const UniqueFd> parent,
                                              std::string_view final_name, std::uint64_t size,
                                              std::uint64_t reserve_now, bool anonymous,
                                              std::uint32_t mode = 0600) const;
  bool anonymous_temps_supported() const { return anonymous_ok_; }

  // A resumable partial file for `final_name` (fs/partial.h): reopens the one an earlier
  // attempt left, with the chunks its journal lists as verified (`have`), or starts a new one.
  // When the partial is in use by another transfer (it is locked), or is not a plain file,
  // this falls back to an ordinary temp file that cannot be resumed (`resumable` false).
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
  // Makes `final_name` in `parent` a symlink to `target` with modification time `mtime`: created
  // under a temp name, its own mtime set (never its target's), then renamed over the final name,
  // which atomically replaces a file or symlink already there. An existing directory is left
  // alone (EISDIR). `target` is stored verbatim and never resolved. On failure the temp link is
  // removed.
  std::variant<std::monostate, FsError> make_symlink(int parent, std::string_view final_name,
                                                     const std::string& target,
                                                     const Mtime& mtime) const;
  // Applies mode and mtime to an existing directory beneath the root.
  std::variant<std::monostate, FsError> set_directory_metadata(const RelativePath& path,
                                                               std::uint32_t mode,
                                                               const Mtime& mtime) const;

 private:
  // Refuses at once what cannot fit, then allocates the first `reserve_now` bytes.
  std::variant<std::monostate, FsError> check_and_reserve(int fd, std::string_view final_name,
                                                          std::uint64_t size,
                                                          std::uint64_t reserve_now) const;

  std::filesystem::path root_path_;
  UniqueFd root_;
  bool anonymous_ok_ = false;  // O_TMPFILE + linkat work in --dir (probed at start)
  bool umask_zero_ = false;    // the process umask is 0: files can be created with their mode
};

// Allocates [offset, offset + length) of fd (fallocate). 0, or the errno (ENOSPC...); file
// systems without fallocate count as success.
int reserve_range(int fd, std::uint64_t offset, std::uint64_t length);

// openat2(dirfd, path, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS); -1 and errno on failure.
int open_beneath(int dirfd, const std::string& path, int flags, unsigned mode = 0);

}  // namespace ackxfer
