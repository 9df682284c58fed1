// File-system faults with the real binary: the receiver's disk fills up, a source file cannot be
// read, a destination directory cannot be written. Each must fail the files concerned by name,
// leave no temp file and no partial file at a final path, and let everything else through.
// docs/RELIABILITY.md lists what the user sees in each case.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "harness.h"

namespace ackxfer::test {
namespace {

constexpr std::uint64_t kChunk = 8 << 20;  // the protocol's default chunk size
// A whole frame of one default chunk on the wire: header, payload, digest.
constexpr std::uint64_t kFrameBytes = 48 + kChunk + 16;

// A mount the test made: a small tmpfs, or a read-only bind mount of a test directory. It is
// unmounted when the object dies, before the TempDir beneath it is removed.
class TestMount {
 public:
  // Empty `why` on success; otherwise why it could not be mounted (the test then skips).
  static std::unique_ptr<TestMount> tmpfs(const fs::path& at, std::uint64_t bytes,
                                          std::string& why) {
    std::string opts = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("ackxfer-test", at.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      why = "cannot mount a tmpfs on " + at.string() + ": " + std::strerror(errno) +
            " (these tests need root, or CAP_SYS_ADMIN)";
      return nullptr;
    }
    return std::unique_ptr<TestMount>(new TestMount(at));
  }

  static std::unique_ptr<TestMount> read_only(const fs::path& dir, std::string& why) {
    if (::mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      why = "cannot bind-mount " + dir.string() + ": " + std::strerror(errno) +
            " (these tests need root, or CAP_SYS_ADMIN)";
      return nullptr;
    }
    auto m = std::unique_ptr<TestMount>(new TestMount(dir));
    if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      why = "cannot remount " + dir.string() + " read-only: " + std::strerror(errno);
      return nullptr;  // ~TestMount unmounts the bind mount
    }
    return m;
  }

  ~TestMount() {
    // A lazy unmount if something (a killed child's last fd) still holds it busy.
    if (::umount2(at_.c_str(), 0) != 0) ::umount2(at_.c_str(), MNT_DETACH);
  }

 private:
  explicit TestMount(fs::path at) : at_(std::move(at)) {}
  fs::path at_;
};

// Writes `p` until the file system it is on is full. Returns the bytes written.
std::uint64_t fill_up(const fs::path& p) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return 0;
  std::vector<char> block(1 << 20, 'f');
  std::uint64_t total = 0;
  while (true) {
    ssize_t n = ::write(fd, block.data(), block.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  return total;
}

// Bytes the file system has allocated to our temp files under `p`.
std::uint64_t temp_bytes_allocated(const fs::path& p) {
  std::uint64_t n = 0;
  for (const std::string& t : temp_files_under(p)) {
    struct stat st {};
    if (::stat(t.c_str(), &st) == 0) n += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return n;
}

bool names_failure(const std::string& err, const fs::path& file) {
  return err.find("failed: " + file.string() + ": ") != std::string::npos;
}

// The receiver's --dir is a tmpfs of 64 MiB of its own, so the tests can fill it.
class FaultsDiskFull : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kDiskBytes = 64 << 20;

  void SetUp() override {
    std::string why;
    mount_ = TestMount::tmpfs(dst_.path(), kDiskBytes, why);
    if (!mount_) GTEST_SKIP() << why;
  }

  TempDir src_{"src"};
  TempDir dst_{"dst"};
  std::unique_ptr<TestMount> mount_;  // declared last: unmounted first
};

// bench in a directory without room for its data used to generate it until the disk was full,
// then fail the run: it now says so before it starts, and leaves nothing.
TEST_F(FaultsDiskFull, BenchWithoutRoomForItsDataSaysSoBeforeItStarts) {
  auto res = run({binary_path(), "bench", "--dataset", "large", "--runs", "1", "--warm-gib", "0",
                  "--work-dir", dst_.path().string()},
                 30s);
  EXPECT_EQ(res.exit_code, 6) << res.err;
  EXPECT_NE(res.err.find("free; the data sets asked for need"), std::string::npos) << res.err;
  EXPECT_EQ(std::distance(fs::directory_iterator(dst_.path()), fs::directory_iterator()), 0);
}

TEST_F(FaultsDiskFull, AFileLargerThanTheFreeSpaceIsRefusedByNameAndTheRestArrives) {
  fs::create_directories(src_ / "tree/sub");
  write_file(src_ / "tree/big.bin", 96 << 20, 80);  // more than the whole file system
  for (int i = 0; i < 8; ++i)
    write_file(src_ / "tree" / ("small-" + std::to_string(i)), 4000 + i, 81 + i);
  write_file(src_ / "tree/sub/medium.bin", 12 << 20, 90);  // two chunks; fits
  ReceiverProcess r(dst_.path());
  auto res = send({"--to", r.to(), "--json", (src_ / "tree").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_TRUE(names_failure(res.err, src_ / "tree/big.bin")) << res.err;
  EXPECT_NE(res.err.find("no-space: no space: 'big.bin' needs"), std::string::npos) << res.err;
  EXPECT_EQ(json_field(res.out, "failed"), "1") << res.out;
  EXPECT_EQ(json_field(res.out, "files"), "9") << res.out;
  EXPECT_FALSE(fs::exists(dst_ / "tree/big.bin"));
  EXPECT_TRUE(temp_files_under(dst_.path()).empty())
      << ::testing::PrintToString(temp_files_under(dst_.path()));
  fs::remove(src_ / "tree/big.bin");
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");

  // The receiver keeps serving: a later session delivers.
  write_file(src_ / "after.bin", 20 << 20, 91);
  auto again = send({"--to", r.to(), (src_ / "after.bin").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  // The receiver's log names the refusal and counts it.
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("refused: no-space: no space: 'big.bin'"), std::string::npos) << rs.err;
  EXPECT_NE(rs.err.find("9 files, "), std::string::npos) << rs.err;
  EXPECT_NE(rs.err.find(", 1 failed (each named above)"), std::string::npos) << rs.err;
}

// The file fits when it is announced, then someone else takes the space: the next chunk's
// allocation fails (engine/fs/destination.cpp, reserve_range), not the check at SEND; on tmpfs,
// which reserves nothing ahead, the write itself. With `--recv-path splice` the write is a
// splice from a pipe: its failure used to end the connection without an ack, and the sender
// reported a lost connection after sending the chunk eight times.
class FaultsDiskFullMidFile : public FaultsDiskFull,
                              public ::testing::WithParamInterface<std::string> {};

TEST_P(FaultsDiskFullMidFile, SpaceRunningOutMidFileFailsThatFileCleanlyAndTheReceiverCarriesOn) {
  write_file(src_ / "big.bin", 5 * kChunk, 92);  // 40 MiB of the 64
  ReceiverProcess r(dst_.path(), 2, {"--recv-path", GetParam()});
  // Hold the data connection inside the second frame's header: the first chunk (allocated at
  // SEND) is written, the second is not allocated yet.
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":" +
                                      std::to_string(kFrameBytes + 20) + ":3000"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--retry-for", "0",
                  "--json", (src_ / "big.bin").string()});
  ASSERT_TRUE(wait_until([&] { return temp_bytes_allocated(dst_.path()) >= kChunk; }, 10s));
  EXPECT_GT(fill_up(dst_ / "filler"), 0u);
  auto res = sender.wait(60s);
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_TRUE(names_failure(res.err, src_ / "big.bin")) << res.err;
  EXPECT_NE(res.err.find("the receiver could not write it: No space left on device"),
            std::string::npos)
      << res.err;
  EXPECT_FALSE(fs::exists(dst_ / "big.bin"));
  // The partial and its journal go with the failed file (the sender cancelled it).
  EXPECT_TRUE(wait_until([&] { return temp_files_under(dst_.path()).empty(); }, 5s))
      << ::testing::PrintToString(temp_files_under(dst_.path()));

  fs::remove(dst_ / "filler");
  auto again = send({"--to", r.to(), (src_ / "big.bin").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
  EXPECT_TRUE(temp_files_under(dst_.path()).empty());
}

INSTANTIATE_TEST_SUITE_P(RecvPaths, FaultsDiskFullMidFile, ::testing::Values("buffers", "splice"));

// Small files are not allocated ahead (their one write allocates); files of 1 MiB or more have
// their first chunk allocated at SEND. Both fail on a full disk, by name, leaving nothing.
TEST_F(FaultsDiskFull, OnAFullDiskEveryFileFailsByNameAndNothingIsLeftBehind) {
  fs::create_directories(src_ / "tree");
  std::vector<fs::path> files;
  for (int i = 0; i < 5; ++i) {
    files.push_back(src_ / "tree" / ("small-" + std::to_string(i)));
    write_file(files.back(), 3000 + i, 93 + i);
  }
  files.push_back(src_ / "tree/two-mib.bin");
  write_file(files.back(), 2 << 20, 99);
  ReceiverProcess r(dst_.path());
  fs::create_directories(dst_ / "tree");
  EXPECT_GT(fill_up(dst_ / "filler"), 0u);
  auto res = send({"--to", r.to(), "--json", (src_ / "tree").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  for (const fs::path& f : files)
    EXPECT_TRUE(names_failure(res.err, f)) << f << "\n" << res.err;
  EXPECT_NE(res.err.find("No space left on device"), std::string::npos) << res.err;
  EXPECT_EQ(json_field(res.out, "failed"), "6") << res.out;
  EXPECT_EQ(json_field(res.out, "files"), "0") << res.out;
  EXPECT_EQ(count_entries(dst_ / "tree"), 0u);
  EXPECT_TRUE(temp_files_under(dst_.path()).empty());

  fs::remove(dst_ / "filler");
  auto again = send({"--to", r.to(), (src_ / "tree").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
}

// Root reads and writes whatever the permission bits say. Dropping CAP_DAC_OVERRIDE and
// CAP_DAC_READ_SEARCH from the bounding set (setpriv, util-linux) makes a root process keep to
// them like anyone else; a non-root test run needs no help. Empty `why` when it works.
std::vector<std::string> bound_by_permission_bits(const fs::path& scratch, std::string& why) {
  std::vector<std::string> prefix;
  if (::geteuid() == 0) {
    const char* setpriv = "/usr/bin/setpriv";
    if (::access(setpriv, X_OK) != 0) {
      why =
          "running as root and /usr/bin/setpriv (util-linux) is missing: cannot make a file "
          "unreadable for the sender";
      return {};
    }
    prefix = {setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"};
  }
  // Probe: the prefixed command must be refused a mode-000 file.
  fs::path probe = scratch / "probe";
  write_text(probe, "x");
  ::chmod(probe.c_str(), 0);
  std::vector<std::string> cat = prefix;
  cat.insert(cat.end(), {"/bin/cat", probe.string()});
  auto r = run(cat, 10s);
  fs::remove(probe);
  if (r.exit_code == 0)
    why = "a mode-000 file stays readable here" +
          (prefix.empty() ? std::string() : " even through " + prefix[0]);
  return prefix;
}

TEST(FaultsPermission, AnUnreadableSourceFileOrDirectoryIsNamedAndTheRestIsStillSent) {
  TempDir src("src"), dst("dst");
  std::string why;
  auto prefix = bound_by_permission_bits(src.path(), why);
  if (!why.empty()) GTEST_SKIP() << why;
  fs::create_directories(src / "tree/sub");
  write_text(src / "tree/a.txt", "a");
  write_file(src / "tree/secret.bin", 3 << 20, 100);
  write_file(src / "tree/sub/b.bin", 12 << 20, 101);
  write_text(src / "tree/locked/inside.txt", "inside");
  ::chmod((src / "tree/secret.bin").c_str(), 0);
  ::chmod((src / "tree/locked").c_str(), 0);
  ReceiverProcess r(dst.path());
  std::vector<std::string> argv = prefix;
  argv.insert(argv.end(), {binary_path(), "send", "--to", r.to(), "--json", "--streams", "2",
                           (src / "tree").string()});
  auto res = run(argv, 60s);
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_TRUE(names_failure(res.err, src / "tree/secret.bin")) << res.err;
  EXPECT_NE(res.err.find("secret.bin: cannot open: Permission denied"), std::string::npos)
      << res.err;
  EXPECT_TRUE(names_failure(res.err, src / "tree/locked")) << res.err;
  EXPECT_NE(res.err.find("locked: cannot read directory: Permission denied"), std::string::npos)
      << res.err;
  EXPECT_EQ(json_field(res.out, "failed"), "2") << res.out;
  EXPECT_EQ(json_field(res.out, "files"), "2") << res.out;
  EXPECT_FALSE(fs::exists(dst / "tree/secret.bin"));
  EXPECT_FALSE(fs::exists(dst / "tree/locked/inside.txt"));
  EXPECT_EQ(read_text(dst / "tree/a.txt"), "a");
  EXPECT_EQ(compare_trees(src / "tree/sub", dst / "tree/sub"), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

// A file or directory named as a PATH that the sender cannot read is named before any
// receiver is tried; with nothing else to send, send ends there (it used to spend --retry-for
// on a receiver first, or, with none, never name them).
TEST(FaultsPermission, UnreadablePathsAloneEndTheSendBeforeAnyReceiver) {
  TempDir src("src");
  std::string why;
  auto prefix = bound_by_permission_bits(src.path(), why);
  if (!why.empty()) GTEST_SKIP() << why;
  write_text(src / "secret.bin", "s");
  write_text(src / "locked/inside.txt", "i");
  ::chmod((src / "secret.bin").c_str(), 0);
  ::chmod((src / "locked").c_str(), 0);
  std::vector<std::string> argv = prefix;
  argv.insert(argv.end(),
              {binary_path(), "send", "--to", "127.0.0.1:" + std::to_string(free_port()),
               "--retry-for", "30", (src / "secret.bin").string(), (src / "locked").string()});
  auto t0 = std::chrono::steady_clock::now();
  auto res = run(argv, 60s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "waited for a receiver first";
  ::chmod((src / "locked").c_str(), 0755);  // so that the temp dir can be removed
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_TRUE(names_failure(res.err, src / "secret.bin")) << res.err;
  EXPECT_TRUE(names_failure(res.err, src / "locked")) << res.err;
  EXPECT_NE(res.err.find("secret.bin: Permission denied"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("locked: Permission denied"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("nothing to send"), std::string::npos) << res.err;
}

// A sender given CAP_DAC_READ_SEARCH (a backup account's usual grant) reads what the
// permission bits alone would refuse it. Looking at the PATHs before the walk must judge them
// as the walk's open() will: access() uses the real uid without capabilities, and turned such
// a PATH away.
TEST(FaultsPermission, ASenderWithTheReadSearchCapabilitySendsWhatOnlyItCanRead) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to run the sender as nobody with a capability";
  const std::vector<std::string> as_nobody_who_reads = {"/usr/bin/setpriv",
                                                        "--reuid=65534",
                                                        "--regid=65534",
                                                        "--clear-groups",
                                                        "--inh-caps=+dac_read_search",
                                                        "--ambient-caps=+dac_read_search",
                                                        "--"};
  std::vector<std::string> probe = as_nobody_who_reads;
  probe.push_back(binary_path());
  probe.push_back("--version");
  if (auto p = run(probe, 10s); p.exit_code != 0)
    GTEST_SKIP() << "cannot run the sender as nobody with CAP_DAC_READ_SEARCH here: " << p.err;
  TempDir src("src"), dst("dst");
  write_text(src / "secret.bin", "only a capability reads this");
  ::chmod((src / "secret.bin").c_str(), 0);
  ReceiverProcess r(dst.path());
  std::vector<std::string> argv = as_nobody_who_reads;
  argv.insert(argv.end(), {binary_path(), "send", "--to", r.to(), (src / "secret.bin").string()});
  auto res = run(argv, 60s);
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "secret.bin"), "only a capability reads this");
}

// A receiver without CAP_DAC_OVERRIDE (the packaged service runs as its own user) sets a
// read-only directory's mode at the end of the first run; the second run could then put no
// file in it. The directory is writable while a session needs it, and read-only again after.
TEST(FaultsPermission, AReadOnlyDirectoryStillTakesChangedFilesOnTheNextRun) {
  TempDir src("src"), dst("dst");
  std::string why;
  auto prefix = bound_by_permission_bits(dst.path(), why);
  if (!why.empty()) GTEST_SKIP() << why;
  write_text(src / "tree/ro/a.txt", "first");
  ::chmod((src / "tree/ro").c_str(), 0555);
  ReceiverProcess r(dst.path(), 2, {}, 0, 0, "127.0.0.1", prefix);
  auto first = send({"--to", r.to(), (src / "tree").string()});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  struct stat st {};
  ASSERT_EQ(::stat((dst / "tree/ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0555u);
  ::chmod((src / "tree/ro").c_str(), 0755);
  write_text(src / "tree/ro/a.txt", "second, longer");
  write_text(src / "tree/ro/b.txt", "new");
  ::chmod((src / "tree/ro").c_str(), 0555);
  auto second = send({"--to", r.to(), (src / "tree").string()});
  EXPECT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(read_text(dst / "tree/ro/a.txt"), "second, longer");
  EXPECT_EQ(read_text(dst / "tree/ro/b.txt"), "new");
  ASSERT_EQ(::stat((dst / "tree/ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0555u);
  ::chmod((src / "tree/ro").c_str(), 0755);  // so that the temp dirs can be removed
  ::chmod((dst / "tree/ro").c_str(), 0755);
}

TEST(FaultsPermission, AFileWhereTheTreeNeedsADirectoryFailsThoseFilesAndTheRestArrives) {
  TempDir src("src"), dst("dst");
  fs::create_directories(src / "tree/sub");
  write_text(src / "tree/a.txt", "a");
  write_text(src / "tree/sub/x.txt", "x");
  write_file(src / "tree/sub/y.bin", 12 << 20, 102);
  write_file(src / "tree/z.bin", 2 << 20, 103);
  write_text(dst / "tree/sub", "a file, not a directory");
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", (src / "tree").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_TRUE(names_failure(res.err, src / "tree/sub")) << res.err;
  for (const char* f : {"tree/sub/x.txt", "tree/sub/y.bin"})
    EXPECT_TRUE(names_failure(res.err, src / f)) << f << "\n" << res.err;
  EXPECT_NE(res.err.find("not-a-directory"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("Not a directory"), std::string::npos) << res.err;
  EXPECT_EQ(json_field(res.out, "failed"), "3") << res.out;
  EXPECT_EQ(json_field(res.out, "files"), "2") << res.out;
  EXPECT_EQ(read_text(dst / "tree/sub"), "a file, not a directory");
  EXPECT_EQ(read_text(dst / "tree/a.txt"), "a");
  EXPECT_TRUE(read_text(dst / "tree/z.bin") == read_text(src / "tree/z.bin"));
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

TEST(FaultsPermission, AReadOnlyDestinationDirectoryRefusesItsFilesByNameAndTheRestArrives) {
  TempDir src("src"), dst("dst");
  fs::create_directories(src / "tree/ro");
  fs::create_directories(src / "tree/other");
  write_text(src / "tree/a.txt", "a");
  write_text(src / "tree/ro/old.txt", "new content");
  write_text(src / "tree/ro/small.txt", "small");
  write_file(src / "tree/ro/new.bin", 12 << 20, 104);
  write_file(src / "tree/other/b.bin", 3 << 20, 105);
  write_text(dst / "tree/ro/old.txt", "old");
  std::string why;
  auto ro = TestMount::read_only(dst / "tree/ro", why);
  if (!ro) GTEST_SKIP() << why;
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", (src / "tree").string()});
  EXPECT_EQ(res.exit_code, 1) << res.err;
  for (const char* f : {"tree/ro/old.txt", "tree/ro/small.txt", "tree/ro/new.bin"})
    EXPECT_TRUE(names_failure(res.err, src / f)) << f << "\n" << res.err;
  EXPECT_NE(res.err.find("permission-denied"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("Read-only file system"), std::string::npos) << res.err;
  EXPECT_EQ(json_field(res.out, "failed"), "3") << res.out;
  EXPECT_EQ(json_field(res.out, "files"), "2") << res.out;
  EXPECT_EQ(read_text(dst / "tree/ro/old.txt"), "old");
  EXPECT_EQ(count_entries(dst / "tree/ro"), 1u);
  EXPECT_EQ(read_text(dst / "tree/a.txt"), "a");
  EXPECT_EQ(compare_trees(src / "tree/other", dst / "tree/other"), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

}  // namespace
}  // namespace ackxfer::test
