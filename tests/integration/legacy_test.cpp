// recv --legacy: the classic SEND/READY clients this design grew from (tests/legacy/
// classic_client.sh, a few lines of bash) are served beside ackxfer senders, several at once,
// without mixing their data; their names meet the same path rule.
#include <gtest/gtest.h>

#include <thread>

#include "harness.h"

namespace ackxfer::test {
namespace {

ProcessResult classic_send(const ReceiverProcess& r, const std::string& name, const fs::path& file,
                           bool newline = true) {
  std::vector<std::string> argv = {"/bin/bash",
                                   ACKXFER_LEGACY_CLIENT,
                                   "127.0.0.1",
                                   std::to_string(r.port()),
                                   std::to_string(r.data_port()),
                                   name,
                                   file.string()};
  if (!newline) argv.push_back("--no-newline");
  return run(argv, 90s);
}

TEST(Legacy, ManyClassicClientsAtOnceEachGetTheirOwnBytes) {
  TempDir src("src"), dst("dst");
  constexpr int kClients = 12;
  for (int i = 0; i < kClients; ++i)
    write_file(src / ("f" + std::to_string(i)), (i % 3 == 0) ? (3 << 20) + i : 1000 * i + 1,
               300 + i);
  ReceiverProcess r(dst.path(), 2, {"--legacy"});
  std::vector<std::thread> clients;
  std::vector<ProcessResult> results(kClients);
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      // Half without a newline after the name, as some classic clients do.
      results[i] =
          classic_send(r, "in/f" + std::to_string(i), src / ("f" + std::to_string(i)), i % 2 == 0);
    });
  for (auto& t : clients)
    t.join();
  for (int i = 0; i < kClients; ++i)
    EXPECT_EQ(results[i].exit_code, 0) << i << ": " << results[i].err;
  // Published when the data connection closes: give the last ones a moment.
  EXPECT_TRUE(wait_until([&] { return count_entries(dst / "in") == kClients; }, 10s));
  EXPECT_EQ(compare_trees(src.path(), dst / "in", /*metadata=*/false), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("UNVERIFIED"), std::string::npos) << rs.err;
  EXPECT_EQ(rs.err.find("flushed"), std::string::npos) << rs.err;  // no --fsync, no flush
}

TEST(Legacy, ClassicAndAckxferSendersShareOneReceiver) {
  TempDir src("src"), dst("dst");
  fs::create_directories(src / "tree/sub");
  write_file(src / "tree/a.bin", 20 << 20, 320);
  write_file(src / "tree/sub/b.bin", 5000, 321);
  write_file(src / "classic.bin", 4 << 20, 322);
  ReceiverProcess r(dst.path(), 2, {"--legacy"});
  ProcessResult modern, classic;
  std::thread t([&] { modern = send({"--to", r.to(), (src / "tree").string()}); });
  classic = classic_send(r, "classic.bin", src / "classic.bin");
  t.join();
  EXPECT_EQ(modern.exit_code, 0) << modern.err;
  EXPECT_EQ(classic.exit_code, 0) << classic.err;
  EXPECT_TRUE(wait_until([&] { return fs::exists(dst / "classic.bin"); }, 10s));
  EXPECT_EQ(compare_trees(src / "tree", dst / "tree"), "");
  EXPECT_EQ(read_text(dst / "classic.bin"), read_text(src / "classic.bin"));
}

// recv --fsync: a classic client is told nothing, but its file still gets its name only after
// its data is on stable storage, through the same publisher thread as everyone's (batches of
// four or more files flush with syncfs, smaller ones file by file: both happen here).
TEST(Legacy, WithFsyncClassicFilesAreFlushedBeforeTheyAreNamed) {
  TempDir src("src"), dst("dst");
  constexpr int kClients = 6;
  for (int i = 0; i < kClients; ++i)
    write_file(src / ("f" + std::to_string(i)), 70000 * i + 5, 340 + i);
  fs::create_directories(src / "tree");
  for (int i = 0; i < 20; ++i)
    write_file(src / "tree" / ("m" + std::to_string(i)), 4096, 360 + i);
  ReceiverProcess r(dst.path(), 2, {"--legacy", "--fsync"});
  ProcessResult modern;
  std::thread t([&] { modern = send({"--to", r.to(), (src / "tree").string()}); });
  std::vector<std::thread> clients;
  std::vector<ProcessResult> results(kClients);
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      results[i] = classic_send(r, "in/f" + std::to_string(i), src / ("f" + std::to_string(i)));
    });
  for (auto& c : clients)
    c.join();
  t.join();
  EXPECT_EQ(modern.exit_code, 0) << modern.err;
  for (int i = 0; i < kClients; ++i)
    EXPECT_EQ(results[i].exit_code, 0) << i << ": " << results[i].err;
  EXPECT_TRUE(wait_until([&] { return count_entries(dst / "in") == kClients; }, 10s));
  for (int i = 0; i < kClients; ++i) {
    auto name = "f" + std::to_string(i);
    EXPECT_EQ(read_text(dst / "in" / name), read_text(src / name)) << name;
  }
  EXPECT_EQ(compare_trees(src / "tree", dst / "tree"), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  auto rs = r.stop();
  std::size_t flushed = 0;
  for (auto at = rs.err.find(" bytes, flushed) from "); at != std::string::npos;
       at = rs.err.find(" bytes, flushed) from ", at + 1))
    ++flushed;
  EXPECT_EQ(flushed, static_cast<std::size_t>(kClients)) << rs.err;
}

TEST(Legacy, HostileClassicNamesAreRefusedAndNothingIsWrittenOutside) {
  TempDir base("legacy");
  fs::path dst = base / "dst";
  fs::create_directories(dst);
  write_text(base / "payload", "payload");
  ReceiverProcess r(dst, 2, {"--legacy"});
  for (std::string name : {"../escape", "/tmp/ackxfer-legacy-abs", "a/../../b", "", "a//b"}) {
    auto res = classic_send(r, name, base / "payload");
    EXPECT_NE(res.exit_code, 0) << "'" << name << "' was accepted";
  }
  EXPECT_FALSE(fs::exists("/tmp/ackxfer-legacy-abs"));
  EXPECT_EQ(count_entries(dst), 0u);
  EXPECT_EQ(count_entries(base.path()), 2u);  // dst and payload
  // Still serving.
  EXPECT_EQ(classic_send(r, "fine.txt", base / "payload").exit_code, 0);
  EXPECT_TRUE(wait_until([&] { return fs::exists(dst / "fine.txt"); }, 10s));
}

TEST(Legacy, WithoutTheFlagAClassicClientIsToldToSayHello) {
  TempDir src("src"), dst("dst");
  write_text(src / "x", "x");
  ReceiverProcess r(dst.path(), 2);
  auto res = classic_send(r, "x", src / "x");
  EXPECT_NE(res.exit_code, 0);
  EXPECT_NE(res.err.find("ERR -"), std::string::npos) << res.err;
  EXPECT_EQ(count_entries(dst.path()), 0u);
}

TEST(Legacy, CannotBeCombinedWithASecret) {
  TempDir dst("dst");
  write_text(dst / "secret", "0123456789abcdef0123456789abcdef");
  auto res = run({binary_path(), "recv", "--dir", dst.path().string(), "--port", "0", "--data-port",
                  "0", "--legacy", "--secret-file", (dst / "secret").string()},
                 10s);
  EXPECT_EQ(res.exit_code, 2) << res.err;
  EXPECT_NE(res.err.find("cannot be combined"), std::string::npos) << res.err;
}

// A client that got READY and never connected holds up the next one from its address only
// until the deadline (30 s); then that one gets READY and its file arrives.
TEST(Legacy, AClientThatNeverConnectsHoldsUpItsAddressOnlyUntilTheDeadline) {
  TempDir src("src"), dst("dst");
  write_text(src / "late.txt", "late");
  ReceiverProcess r(dst.path(), 2, {"--legacy"});
  RawClient stuck(r.port());
  stuck.send_bytes("SEND stuck.txt\n");
  ASSERT_EQ(stuck.read_exact(5, 5s), "READY");
  auto t0 = std::chrono::steady_clock::now();
  auto res = classic_send(r, "late.txt", src / "late.txt");
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 25s);
  EXPECT_TRUE(wait_until([&] { return fs::exists(dst / "late.txt"); }, 10s));
  EXPECT_FALSE(fs::exists(dst / "stuck.txt"));
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("no data connection came"), std::string::npos) << rs.err;
}

}  // namespace
}  // namespace ackxfer::test
