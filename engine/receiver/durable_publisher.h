// recv --fsync: publishes verified files so that a verdict means "on stable storage". Off the
// network loops, on one thread, in batches: every file's data and inode, then its name, then
// the directories that hold new names (and new directories' parents) are flushed before any
// verdict of the batch is sent. A batch of a few files flushes each one (fsync); a larger one
// flushes the whole file system twice (syncfs), which costs the same for 10 files or 10,000
// (docs/PERFORMANCE.md, "recv --fsync").
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <variant>
#include <vector>

#include "fs/destination.h"
#include "receiver/incoming_file.h"

namespace ackxfer {

class DurablePublisher {
 public:
  using Result = std::variant<std::monostate, FsError>;
  struct Job {
    std::shared_ptr<IncomingFile> file;   // verified, to publish; or null: only flush `dir`
    std::shared_ptr<const UniqueFd> dir;  // a directory that holds a new entry (LINK, MKDIR)
    bool whole_fs = false;                // flush everything (directory metadata applied at BYE)
    // Called on the publisher's thread once the batch is durable: post to the owner's loop.
    std::function<void(Result)> done;
    // Instead of `file`: a file that publishes itself with its own fsync (recv --legacy's
    // uploads), whatever the batch's way of flushing. Put its directory in `dir`.
    std::function<Result()> publish_self;

    // The usual jobs, by what they do.
    static Job publishing(std::shared_ptr<IncomingFile> f, std::function<void(Result)> done) {
      Job j;
      j.file = std::move(f);
      j.done = std::move(done);
      return j;
    }
    static Job flushing(std::shared_ptr<const UniqueFd> dir, std::function<void(Result)> done) {
      Job j;
      j.dir = std::move(dir);
      j.done = std::move(done);
      return j;
    }
    static Job flushing_everything(std::function<void(Result)> done) {
      Job j;
      j.whole_fs = true;
      j.done = std::move(done);
      return j;
    }
  };

  explicit DurablePublisher(const Destination& destination);
  ~DurablePublisher();
  DurablePublisher(const DurablePublisher&) = delete;
  DurablePublisher& operator=(const DurablePublisher&) = delete;

  void submit(Job job);
  // Finishes what was submitted, then stops the thread.
  void stop();
  // Tests: while held, submitted jobs wait, as behind a flush that takes long.
  void hold(bool held);

  // At or above this many files, a batch is flushed with syncfs instead of one fsync each.
  static constexpr std::size_t kSyncfsMinFiles = 4;

 private:
  void run();
  void publish_batch(std::vector<Job>& batch);

  const Destination& destination_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Job> jobs_;  // guarded by mu_
  bool stop_ = false;      // guarded by mu_
  bool held_ = false;      // guarded by mu_
  std::thread thread_;
};

}  // namespace ackxfer
