// What a person watching sees: send's progress (plain lines off a terminal, one line redrawn in
// place on one, nothing with --quiet), its summary, and recv's periodic stats.
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>

#include "harness.h"

namespace ackxfer::test {
namespace {

std::size_t count_of(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1))
    ++n;
  return n;
}

// 24 MiB at 8 MB/s through the proxy: about three seconds in flight.
class Progress : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(src_ / "tree");
    write_file(src_ / "tree/big.bin", 24 << 20, 400);
    for (int i = 0; i < 10; ++i)
      write_file(src_ / "tree" / ("s" + std::to_string(i)), 1000, 401 + i);
    r_ = std::make_unique<ReceiverProcess>(dst_.path(), 2);
    proxy_ = std::make_unique<FaultProxy>(
        *r_,
        std::vector<std::string>{"--throttle", std::to_string(r_->data_port()) + ":8000:every"});
  }
  std::vector<std::string> send_args(std::vector<std::string> extra) {
    std::vector<std::string> argv = {binary_path(), "send", "--to", proxy_->to()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back((src_ / "tree").string());
    return argv;
  }
  TempDir src_{"src"}, dst_{"dst"};
  std::unique_ptr<ReceiverProcess> r_;
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(Progress, OffATerminalSendPrintsPlainPeriodicLinesAndASummary) {
  auto res = run(send_args({"--progress-interval", "0.5"}), 60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_GE(count_of(res.err, "ackxfer-fast: progress: "), 3u) << res.err;
  // "12.58 MB of 25.18 MB (49%), 4 of 11 files, 8.00 MB/s, ETA 0:01"
  EXPECT_TRUE(std::regex_search(
      res.err,
      std::regex(
          R"(progress: [0-9.]+ [kMG]?B of [0-9.]+ [kMG]?B \(\d+%\), \d+ of 11 files, [0-9.]+ [kMG]?B/s)")))
      << res.err;
  EXPECT_EQ(res.err.find('\r'), std::string::npos) << "no redrawing off a terminal";
  EXPECT_NE(res.err.find("sent 11 files"), std::string::npos) << res.err;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
}

TEST_F(Progress, QuietPrintsNothingButStillSends) {
  auto res = run(send_args({"--progress-interval", "0.5", "--quiet"}), 60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(res.err, "");
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
}

TEST_F(Progress, OnATerminalOneLineIsRedrawnInPlace) {
  if (access("/usr/bin/script", X_OK) != 0) GTEST_SKIP() << "script(1) is needed for a pty";
  std::string cmd;
  for (const std::string& a : send_args({}))
    cmd += "'" + a + "' ";
  // script(1) runs the command on a pseudo-terminal and copies what it wrote to our stdout.
  auto res = run({"/usr/bin/script", "-qefc", cmd, "/dev/null"}, 60s);
  ASSERT_EQ(res.exit_code, 0) << res.out << res.err;
  EXPECT_GE(count_of(res.out, "\r\033[K"), 3u) << res.out;
  EXPECT_NE(res.out.find("ETA"), std::string::npos) << res.out;
  EXPECT_EQ(res.out.find("progress: "), std::string::npos) << "plain lines are for non-terminals";
  EXPECT_NE(res.out.find("sent 11 files"), std::string::npos) << res.out;
  EXPECT_EQ(compare_trees(src_.path(), dst_.path()), "");
}

TEST_F(Progress, RecvStatsIntervalReportsThroughputAcrossSessions) {
  ReceiverProcess r(dst_ / "second", 2, {"--stats-interval", "0.3"});
  FaultProxy proxy(r, {"--throttle", std::to_string(r.data_port()) + ":8000:every"});
  auto res = send({"--to", proxy.to(), "--quiet", (src_ / "tree").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  // The next report after the last file counts it.
  EXPECT_TRUE(wait_until(
      [&] { return r.process().stderr_so_far().find("since start 11 files") != std::string::npos; },
      5s));
  auto rs = r.stop();
  EXPECT_GE(count_of(rs.err, "stats: "), 3u) << rs.err;
  EXPECT_TRUE(std::regex_search(rs.err, std::regex(R"(stats: [0-9.]+ [kMG]B/s received)")))
      << rs.err;
}

}  // namespace
}  // namespace ackxfer::test
