// Per-file cost of creating small files on the receiver: plain system calls against the same
// work batched through io_uring (issue 3 asked for the ring "where that measures faster").
//
//   build/bench/small_file_bench [--benchmark_filter=Ring] [--benchmark_repetitions=5]
//   ACKXFER_BENCH_DIR=/var/tmp build/bench/small_file_bench   # default: /dev/shm
//
// Each benchmark creates 4 KiB files in directories of 1,000 files beneath a fresh directory,
// removed afterwards (not timed). items_per_second is files per second of wall time;
// cpu_us_per_file counts the whole process, io_uring's worker threads included:
//   BM_Plain_CreateWriteClose   openat(O_CREAT|O_EXCL) + write + close
//   BM_Ring_CreateWriteClose    the same three as a linked chain per file (OPENAT into a direct
//                               descriptor, WRITE and CLOSE on it), BATCH files per submit
//   BM_Receiver_Publish         what the receiver does for a one-chunk file: O_TMPFILE, pwrite,
//                               futimens, linkat, close (io_uring has no op for futimens)
//   BM_Named_TempRename         the other atomic publish: named temp, pwrite, futimens, rename
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// CPU seconds of the whole process: io_uring's io-wq workers (where the ring punts file
// creation on tmpfs) count here, not in the benchmark thread's CPU time.
double process_cpu() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Files/s by wall time, and microseconds of process CPU per file.
void report(benchmark::State& state, long files, double cpu0) {
  state.SetItemsProcessed(files);
  if (files > 0)
    state.counters["cpu_us_per_file"] = (process_cpu() - cpu0) * 1e6 / static_cast<double>(files);
}
constexpr std::size_t kFileBytes = 4096;
constexpr int kFilesPerDir = 1000;

// A scratch tree for one benchmark run, and the directory fd files go into.
class Scratch {
 public:
  Scratch() {
    const char* base = std::getenv("ACKXFER_BENCH_DIR");
    std::string tmpl = std::string(base ? base : "/dev/shm") + "/ackxfer-smallfile-XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    root_ = tmpl;
    data_.assign(kFileBytes, 'x');
  }
  ~Scratch() {
    if (dir_ >= 0) close(dir_);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // The directory for file number n (a new one every kFilesPerDir files).
  int dir_for(long n) {
    if (n % kFilesPerDir == 0 || dir_ < 0) {
      if (dir_ >= 0) close(dir_);
      fs::path d = root_ / std::to_string(n / kFilesPerDir);
      fs::create_directory(d);
      dir_ = open(d.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    return dir_;
  }
  const char* data() const { return data_.data(); }

 private:
  fs::path root_;
  int dir_ = -1;
  std::string data_;
};

void BM_Plain_CreateWriteClose(benchmark::State& state) {
  Scratch s;
  long n = 0;
  double cpu0 = process_cpu();
  for (auto _ : state) {
    int dir = s.dir_for(n);
    std::string name = "f" + std::to_string(n++);
    int fd = openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, s.data(), kFileBytes) != static_cast<ssize_t>(kFileBytes))
      state.SkipWithError("create/write failed");
    close(fd);
  }
  report(state, n, cpu0);
}
BENCHMARK(BM_Plain_CreateWriteClose)->UseRealTime();

void BM_Ring_CreateWriteClose(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  io_uring ring;
  // Three SQEs per file; SINGLE_ISSUER|DEFER_TASKRUN as the engine's loops use.
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(static_cast<unsigned>(batch * 3), &ring, &p) < 0 &&
      io_uring_queue_init(static_cast<unsigned>(batch * 3), &ring, 0) < 0) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  if (io_uring_register_files_sparse(&ring, static_cast<unsigned>(batch)) < 0) {
    state.SkipWithError("cannot register direct descriptors");
    io_uring_queue_exit(&ring);
    return;
  }
  Scratch s;
  long n = 0;
  std::vector<std::string> names(static_cast<std::size_t>(batch));
  double cpu0 = process_cpu();
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      int dir = s.dir_for(n);
      names[static_cast<std::size_t>(i)] = "f" + std::to_string(n++);
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_openat_direct(sqe, dir, names[static_cast<std::size_t>(i)].c_str(),
                                  O_WRONLY | O_CREAT | O_EXCL, 0644, static_cast<unsigned>(i));
      sqe->flags |= IOSQE_IO_LINK;
      sqe = io_uring_get_sqe(&ring);
      io_uring_prep_write(sqe, i, s.data(), kFileBytes, 0);
      sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
      sqe = io_uring_get_sqe(&ring);
      io_uring_prep_close_direct(sqe, static_cast<unsigned>(i));
    }
    io_uring_submit_and_wait(&ring, static_cast<unsigned>(batch * 3));
    io_uring_cqe* cqe;
    for (int i = 0; i < batch * 3; ++i) {
      if (io_uring_wait_cqe(&ring, &cqe) < 0) break;
      if (cqe->res < 0) state.SkipWithError("a ring op failed");
      io_uring_cqe_seen(&ring, cqe);
    }
  }
  report(state, n, cpu0);
  io_uring_queue_exit(&ring);
}
BENCHMARK(BM_Ring_CreateWriteClose)->Arg(1)->Arg(16)->Arg(64)->UseRealTime();

void BM_Receiver_Publish(benchmark::State& state) {
  Scratch s;
  long n = 0;
  timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000, 0}};
  double cpu0 = process_cpu();
  for (auto _ : state) {
    int dir = s.dir_for(n);
    std::string name = "f" + std::to_string(n++);
    // O_TMPFILE needs a real directory fd, not O_PATH.
    int fd = openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && pwrite(fd, s.data(), kFileBytes, 0) == static_cast<ssize_t>(kFileBytes) &&
              futimens(fd, times) == 0 && linkat(fd, "", dir, name.c_str(), AT_EMPTY_PATH) == 0;
    if (!ok) state.SkipWithError("O_TMPFILE publish failed");
    close(fd);
  }
  report(state, n, cpu0);
}
BENCHMARK(BM_Receiver_Publish)->UseRealTime();

// The other atomic publish: a named temp file renamed over the final name (what the receiver
// does for files of several chunks).
void BM_Named_TempRename(benchmark::State& state) {
  Scratch s;
  long n = 0;
  timespec times[2] = {{0, UTIME_OMIT}, {1'700'000'000, 0}};
  double cpu0 = process_cpu();
  for (auto _ : state) {
    int dir = s.dir_for(n);
    std::string name = "f" + std::to_string(n), temp = ".t" + std::to_string(n++);
    int fd = openat(dir, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && pwrite(fd, s.data(), kFileBytes, 0) == static_cast<ssize_t>(kFileBytes) &&
              futimens(fd, times) == 0 && renameat(dir, temp.c_str(), dir, name.c_str()) == 0;
    if (!ok) state.SkipWithError("temp + rename failed");
    close(fd);
  }
  report(state, n, cpu0);
}
BENCHMARK(BM_Named_TempRename)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
