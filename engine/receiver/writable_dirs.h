// Read-only directories of the tree that the receiver made writable while sessions put files in
// them (a receiver without CAP_DAC_OVERRIDE could not, once an earlier session set their mode;
// rsync does the same). Kept receiver-wide, by inode, with how many sessions hold each: the
// last session to let go sets the mode back, however it ended. A session ending while another
// still writes into the directory leaves it writable for that one.
//   - At BYE the session applies its MKDIR's mode itself if it was the last holder; otherwise
//     that mode is left here for the last one.
//   - A session lost before BYE (cut, timed out, evicted, the receiver stopping): the last
//     holder restores the mode kept here (the directory's own, or one a BYE left).
// What each entry keeps is charged to the receiver's directory bookkeeping budget; beyond it a
// directory is still made writable, untracked, and only a BYE sets its mode back (as before
// this registry existed).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ackxfer {

class Destination;

struct DirKey {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  bool operator==(const DirKey&) const = default;
};

class WritableDirs {
 public:
  // `take_budget(bytes)`: false when the bookkeeping budget is spent; `give_back(bytes)` returns
  // what an entry took.
  WritableDirs(std::function<bool(std::size_t)> take_budget,
               std::function<void(std::size_t)> give_back);
  WritableDirs(const WritableDirs&) = delete;
  WritableDirs& operator=(const WritableDirs&) = delete;

  struct Hold {
    DirKey key;
    bool tracked = false;  // false: made writable, but nobody will set the mode back but a BYE
  };
  // `dir`: an existing directory of the tree, opened (O_RDONLY) beneath --dir at `path`. If
  // another session holds it, this one holds it too; if the receiver's user owns it and may not
  // add entries to it, it gets u+wx and is held. Nothing (not held) otherwise.
  std::optional<Hold> hold(int dir, std::string_view path);
  // Lets go of a directory at BYE. True: this was the last holder, and the caller applies `mode`
  // (with the mtime). False: others still write in it; `mode` is left for the last of them,
  // and the caller must leave the mode alone (the mtime is its to set).
  bool release_at_bye(const DirKey& key, std::uint32_t mode);
  // Lets go of a directory of a session that ended without BYE; the last holder sets the mode
  // kept back, if the directory at that path is still the one held and still has the mode given.
  void release_lost(const DirKey& key, const Destination& dest);

  std::size_t size() const;

 private:
  struct KeyHash {
    std::size_t operator()(const DirKey& k) const { return k.ino * 0x9E3779B97F4A7C15ULL ^ k.dev; }
  };
  struct Held {
    std::size_t holders = 0;
    std::uint32_t mode_after = 0;  // what the last holder sets back (lost sessions)
    std::uint32_t mode_given = 0;  // what we set: a directory chmod'ed since is left alone
    std::string path;              // where to find it again
    std::size_t cost = 0;
  };
  static std::size_t cost_of(std::string_view path) { return path.size() + 128; }
  // One entry fewer; its bytes given back. Called with mu_ held.
  void forget(std::unordered_map<DirKey, Held, KeyHash>::iterator it);

  std::function<bool(std::size_t)> take_budget_;
  std::function<void(std::size_t)> give_back_;
  mutable std::mutex mu_;
  std::unordered_map<DirKey, Held, KeyHash> held_;  // guarded by mu_
};

}  // namespace ackxfer
