// End-to-end transfers with the real binary over loopback: what arrives is exactly what was
// sent, names and metadata included, and nothing else is left in --dir.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "harness.h"

namespace ackxfer::test {
namespace {

std::uint64_t env_bytes(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

void set_mtime(const fs::path& p, long sec, long nsec) {
  timespec t[2] = {{0, UTIME_OMIT}, {sec, nsec}};
  ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << p;
}

TEST(Transfer, TreeWithOddNamesEmptyFilesAndEmptyDirectoriesArrivesExactly) {
  TempDir src("src"), dst("dst");
  fs::path root = src / "tree";
  write_text(root / "plain.txt", "hello\n");
  write_text(root / "with space.txt", "s");
  write_text(root / "-leading-dash", "d");
  write_text(root / "--help", "h");
  write_text(root / "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac.txt", "unicode");
  write_text(root / "not-utf8-\xff\xfe", "bytes");
  write_text(root / "tab\there", "t");
  write_text(root / "new\nline", "n");
  write_text(root / "back\\slash \"quotes\" 'single'", "q");
  write_text(root / ".hidden", "dot");
  write_text(root / "empty-file", "");
  write_file(root / "nested/deeper/deepest/blob.bin", 3 * 1024 * 1024 + 17, 7);
  fs::create_directories(root / "empty-dir");
  fs::create_directories(root / "nested/empty-inner");
  chmod((root / "plain.txt").c_str(), 0600);
  chmod((root / "--help").c_str(), 0755);
  chmod((root / "nested/empty-inner").c_str(), 0700);
  set_mtime(root / "plain.txt", 1000000000, 123456789);
  set_mtime(root / "nested/deeper/deepest/blob.bin", 1500000000, 1);

  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), root.string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  EXPECT_EQ(r.stop().exit_code, 0);
}

TEST(Transfer, FileArrivesAsBasenameAndDirectoryAsItsName) {
  TempDir src("src"), dst("dst");
  write_text(src / "a/b/file.txt", "f");
  write_text(src / "dir/x", "x");
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), (src / "a/b/file.txt").string(), (src / "dir").string() + "/"});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "file.txt"), "f");
  EXPECT_EQ(read_text(dst / "dir/x"), "x");
  EXPECT_EQ(count_entries(dst.path()), 3u);
}

// What a tree holds that is not sent: special files, and names shaped like the receiver's
// temp files (it would refuse them). Each is named in a warning, counted, and the summary says
// how many (it used to say nothing, beside an exit 0).
TEST(Transfer, SkippedEntriesAreNamedCountedAndSummarized) {
  TempDir src("src"), dst("dst");
  write_text(src / "tree/kept.txt", "k");
  write_text(src / "tree/.ackxfer-0123456789abcdef.part", "someone's");
  ASSERT_EQ(mkfifo((src / "tree/fifo").c_str(), 0644), 0);
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), (src / "tree").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.err.find((src / "tree/fifo").string() + "': skipped: a FIFO"), std::string::npos)
      << res.err;
  EXPECT_NE(res.err.find(".ackxfer-0123456789abcdef.part': skipped: the name has the shape"),
            std::string::npos)
      << res.err;
  EXPECT_NE(res.err.find(", 2 skipped (named above)"), std::string::npos) << res.err;
  EXPECT_EQ(read_text(dst / "tree/kept.txt"), "k");
  EXPECT_EQ(count_entries(dst.path()), 2u);  // tree/ and kept.txt
  auto json = send({"--to", r.to(), "--json", (src / "tree").string()});
  EXPECT_EQ(json_u64(json.out, "skipped"), 2u) << json.out;
}

TEST(Transfer, OneGibibyteFileIsByteIdentical) {
  TempDir src("src"), dst("dst");
  std::uint64_t size = env_bytes("ACKXFER_TEST_BIG_BYTES", 1ull << 30);
  write_file(src / "big.bin", size, 99);
  ReceiverProcess r(dst.path());
  // Four streams: chunks of one file arrive on several connections and workers at once.
  auto res = send({"--to", r.to(), "--json", "--streams", "4", (src / "big.bin").string()}, 300s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "bytes"), std::to_string(size));
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Transfer, FiveThousandSmallFiles) {
  TempDir src("src"), dst("dst");
  for (int i = 0; i < 5000; ++i)
    write_file(src / "many" / ("d" + std::to_string(i / 500)) / ("f" + std::to_string(i)),
               static_cast<std::uint64_t>(i % 7 == 0 ? 0 : 100 + i), static_cast<std::uint64_t>(i));
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", "--streams", "4", (src / "many").string()}, 300s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "files"), "5000");
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

TEST(Transfer, ThirtyTwoSendersAtOnceToOneReceiverWithTwoThreads) {
  TempDir src("src"), dst("dst");
  constexpr int kSenders = 32;
  for (int s = 0; s < kSenders; ++s)
    for (int f = 0; f < 20; ++f)
      write_file(src / ("sender" + std::to_string(s)) / ("f" + std::to_string(f)),
                 static_cast<std::uint64_t>(1000 * f + s), static_cast<std::uint64_t>(s * 100 + f));
  write_file(src / "sender0" / "large", 64 << 20, 5);
  ReceiverProcess r(dst.path(), 2);
  std::vector<std::thread> threads;
  std::vector<ProcessResult> results(kSenders);
  for (int s = 0; s < kSenders; ++s)
    threads.emplace_back([&, s] {
      results[static_cast<std::size_t>(s)] =
          send({"--to", r.to(), "--streams", "2", (src / ("sender" + std::to_string(s))).string()},
               300s);
    });
  for (auto& t : threads)
    t.join();
  for (int s = 0; s < kSenders; ++s)
    EXPECT_EQ(results[static_cast<std::size_t>(s)].exit_code, 0)
        << s << ": " << results[static_cast<std::size_t>(s)].err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Transfer, SendStartedBeforeTheReceiverRetriesUntilItListens) {
  TempDir src("src"), dst("dst");
  write_file(src / "early.bin", 100000, 3);
  std::uint16_t port = free_port(), data_port = free_port();
  std::vector<std::string> argv = {binary_path(),
                                   "send",
                                   "--to",
                                   "127.0.0.1:" + std::to_string(port),
                                   "--retry-for",
                                   "20",
                                   (src / "early.bin").string()};
  Process sender(argv);
  std::this_thread::sleep_for(1500ms);
  ReceiverProcess r(dst.path(), 2, {}, port, data_port);
  auto res = sender.wait(60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Transfer, ResendingReplacesTheExistingFileAtomically) {
  TempDir src("src"), dst("dst");
  write_text(src / "f.txt", "first version");
  ReceiverProcess r(dst.path());
  ASSERT_EQ(send({"--to", r.to(), (src / "f.txt").string()}).exit_code, 0);
  write_text(src / "f.txt", "second, longer version");
  ASSERT_EQ(send({"--to", r.to(), (src / "f.txt").string()}).exit_code, 0);
  EXPECT_EQ(read_text(dst / "f.txt"), "second, longer version");
  EXPECT_EQ(count_entries(dst.path()), 1u);
}

class SendPaths : public ::testing::TestWithParam<const char*> {};

TEST_P(SendPaths, DeliverTheSameBytes) {
  TempDir src("src"), dst("dst");
  write_file(src / "d/a.bin", 20 << 20, 11);
  write_file(src / "d/b.bin", (3 << 20) + 5, 12);
  write_file(src / "d/exactly-one-window", 1 << 20, 14);
  write_file(src / "d/small", 100, 13);
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--send-path", GetParam(), "--json", (src / "d").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "send_path"), GetParam());
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

INSTANTIATE_TEST_SUITE_P(Transfer, SendPaths, ::testing::Values("copy", "mmap", "splice"));

TEST(Transfer, AutoSendPathIsReported) {
  TempDir src("src"), dst("dst");
  write_file(src / "x", 2 << 20, 15);
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", (src / "x").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "send_path"), "copy");  // loopback: the cheapest there
}

TEST(Transfer, SpliceReceivePathDeliversTheSameBytes) {
  TempDir src("src"), dst("dst");
  write_file(src / "d/a.bin", 20 << 20, 31);
  write_file(src / "d/b.bin", 70000, 32);  // just over the splice threshold
  write_file(src / "d/c.bin", 100, 33);    // read, not spliced
  fs::create_directories(src / "d/empty");
  ReceiverProcess r(dst.path(), 2, {"--recv-path", "splice"});
  auto res = send({"--to", r.to(), "--streams", "2", (src / "d").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Transfer, DiscardingReceiverVerifiesAndWritesNothing) {
  TempDir src("src"), dst("dst");
  write_file(src / "d/a.bin", 9 << 20, 34);
  write_file(src / "d/b", 10, 35);
  ReceiverProcess r(dst.path(), 2, {"--discard"});
  auto res = send({"--to", r.to(), "--json", (src / "d").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "files"), "2");
  EXPECT_EQ(count_entries(dst.path()), 0u);
}

TEST(Transfer, ManyStreamsAndSmallChunksStillVerify) {
  TempDir src("src"), dst("dst");
  write_file(src / "x.bin", 50 << 20, 21);
  ReceiverProcess r(dst.path(), 2);
  auto res = send({"--to", r.to(), "--streams", "16", "--threads", "2", (src / "x.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

}  // namespace
}  // namespace ackxfer::test
