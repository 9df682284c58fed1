// DurablePublisher: fsync or syncfs, then rename, then the directories, then the verdicts.
#include "receiver/durable_publisher.h"

#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <utility>

#include "display.h"
#include "error.h"

namespace ackxfer {

DurablePublisher::DurablePublisher(const Destination& destination) : destination_(destination) {}

DurablePublisher::~DurablePublisher() {
  stop();
}

void DurablePublisher::submit(Job job) {
  std::lock_guard lock(mu_);
  if (!thread_.joinable() && !stop_) thread_ = std::thread([this] { run(); });
  jobs_.push_back(std::move(job));
  cv_.notify_one();
}

void DurablePublisher::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DurablePublisher::hold(bool held) {
  {
    std::lock_guard lock(mu_);
    held_ = held;
  }
  cv_.notify_all();
}

void DurablePublisher::run() {
  while (true) {
    std::vector<Job> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (!held_ && !jobs_.empty()); });
      if (jobs_.empty()) return;  // stopping, and nothing left
      batch.swap(jobs_);
    }
    publish_batch(batch);
  }
}

void DurablePublisher::publish_batch(std::vector<Job>& batch) {
  std::vector<Result> results(batch.size());
  std::size_t files = 0;
  bool whole_fs = false;
  for (const Job& j : batch) {
    files += j.file ? 1 : 0;
    whole_fs = whole_fs || j.whole_fs;
  }
  whole_fs = whole_fs || files >= kSyncfsMinFiles;
  const int root = destination_.root_fd();
  // 1. Each file's data and inode.
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].publish_self) results[i] = batch[i].publish_self();
    if (!batch[i].file) continue;
    results[i] = whole_fs ? batch[i].file->prepare_publish() : batch[i].file->publish(true);
  }
  if (whole_fs) {
    int e = sync_file_system(root);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].file || std::holds_alternative<FsError>(results[i])) continue;
      if (e != 0) {
        batch[i].file->fail_publish();
        results[i] =
            FsError{e, "flush " + quote_name(batch[i].file->path()) + ": " + errno_text(e)};
        continue;
      }
      results[i] = batch[i].file->place();  // 2. the names
    }
  }
  // 3. The directories that hold the new names, and the parents of new directories.
  std::vector<std::shared_ptr<const UniqueFd>> dirs = destination_.take_created_parents();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].dir) dirs.push_back(batch[i].dir);
    if (batch[i].file && std::holds_alternative<std::monostate>(results[i]))
      if (auto d = batch[i].file->directory()) dirs.push_back(std::move(d));
  }
  int dir_err = 0;
  if (whole_fs) {
    dir_err = sync_file_system(root);
  } else {
    std::set<std::pair<dev_t, ino_t>> done;
    for (const auto& d : dirs) {
      struct stat st {};
      if (!d || fstat(d->get(), &st) != 0 || !done.insert({st.st_dev, st.st_ino}).second) continue;
      if (int e = sync_directory(d->get())) dir_err = e;
    }
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Result r = std::move(results[i]);
    if (dir_err && std::holds_alternative<std::monostate>(r))
      r = FsError{dir_err, "flush the directory: " + errno_text(dir_err) +
                               " (the file is in place but may not survive a power loss)"};
    if (batch[i].done) batch[i].done(std::move(r));
  }
}

}  // namespace ackxfer
