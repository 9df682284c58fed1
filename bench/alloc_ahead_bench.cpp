// Writing one large new file on tmpfs, the receiver's hottest path: can reserving its space
// (fallocate) ahead, on another thread, take work off the writing thread?
//
//   build/bench/alloc_ahead_bench [DIR] [REPETITIONS]     (DIR default /dev/shm)
//
// Writes 2 GiB in 256 KiB pwrites (what the receiver's worker does with its buffer ring) in
// three ways, interleaved REPETITIONS times, and prints the median wall time and CPU time of
// the writing thread and of the helper:
//   none:   pwrite only; the page cache allocates as it writes
//   inline: fallocate each 8 MiB chunk, then write it (the receiver today)
//   ahead:  a helper thread fallocates up to two chunks ahead of the writer
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::uint64_t kTotal = 2ull << 30;
constexpr std::uint64_t kChunk = 8ull << 20;
constexpr std::uint64_t kChunks = kTotal / kChunk;
constexpr std::size_t kWrite = 256 << 10;
constexpr unsigned kAhead = 2;

double clock_s(clockid_t id) {
  timespec t{};
  clock_gettime(id, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

struct Result {
  double wall = 0, writer_cpu = 0, helper_cpu = 0;
};

enum class Mode { kNone, kInline, kAhead };

Result run(Mode mode, const std::string& path, const std::vector<char>& buf) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  // Chunk states: 0 free, 1 being reserved, 2 reserved. Whoever moves 0 -> 1 reserves it.
  std::vector<std::atomic<int>> state(kChunks);
  std::atomic<std::uint64_t> allowed{0};  // the helper may reserve chunks below this
  std::atomic<bool> done{false};
  Result r;
  auto reserve = [&](std::uint64_t i) {
    int expect = 0;
    if (state[i].compare_exchange_strong(expect, 1)) {
      ::fallocate(fd, 0, static_cast<off_t>(i * kChunk), static_cast<off_t>(kChunk));
      state[i].store(2);
      state[i].notify_all();
    } else {
      while (state[i].load() != 2)
        state[i].wait(1);
    }
  };
  std::thread helper;
  double t0 = clock_s(CLOCK_MONOTONIC);
  if (mode == Mode::kAhead)
    helper = std::thread([&] {
      for (std::uint64_t i = 0; i < kChunks && !done.load(); ++i) {
        std::uint64_t a;
        while ((a = allowed.load()) <= i && !done.load())
          allowed.wait(a);
        if (!done.load()) reserve(i);
      }
      r.helper_cpu = clock_s(CLOCK_THREAD_CPUTIME_ID);
    });
  double w0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
  for (std::uint64_t off = 0; off < kTotal; off += kWrite) {
    if (off % kChunk == 0) {
      std::uint64_t i = off / kChunk;
      if (mode == Mode::kInline) {
        ::fallocate(fd, 0, static_cast<off_t>(off), static_cast<off_t>(kChunk));
      } else if (mode == Mode::kAhead) {
        allowed.store(i + 1 + kAhead);
        allowed.notify_all();
        reserve(i);
      }
    }
    if (::pwrite(fd, buf.data(), kWrite, static_cast<off_t>(off)) != static_cast<ssize_t>(kWrite)) {
      std::perror("pwrite");
      std::exit(1);
    }
  }
  r.wall = clock_s(CLOCK_MONOTONIC) - t0;
  r.writer_cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - w0;
  done.store(true);
  allowed.store(kChunks + kAhead + 1);
  allowed.notify_all();
  if (helper.joinable()) helper.join();
  ::close(fd);
  ::unlink(path.c_str());
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/dev/shm";
  int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  std::string path = dir + "/ackxfer-alloc-ahead-bench";
  std::vector<char> buf(kWrite);
  for (std::size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<char>(i * 131);
  const char* names[] = {"none", "inline", "ahead"};
  std::vector<double> wall[3], wcpu[3], hcpu[3];
  for (int rep = 0; rep < reps; ++rep)
    for (int m = 0; m < 3; ++m) {
      Result r = run(static_cast<Mode>(m), path, buf);
      wall[m].push_back(r.wall);
      wcpu[m].push_back(r.writer_cpu);
      hcpu[m].push_back(r.helper_cpu);
      std::printf("rep %d %-6s wall %.3f s, writer CPU %.3f s, helper CPU %.3f s\n", rep, names[m],
                  r.wall, r.writer_cpu, r.helper_cpu);
    }
  std::printf("\n2 GiB in %zu KiB pwrites on %s, median of %d:\n", kWrite >> 10, dir.c_str(), reps);
  for (int m = 0; m < 3; ++m)
    std::printf("%-6s wall %.3f s (%.2f GB/s), writer CPU %.3f s, helper CPU %.3f s\n", names[m],
                median(wall[m]), static_cast<double>(kTotal) / median(wall[m]) / 1e9,
                median(wcpu[m]), median(hcpu[m]));
  return 0;
}
