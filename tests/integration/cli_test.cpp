// The command line other tools script against: output streams, formats and exit codes.
#include <gtest/gtest.h>

#include <regex>

#include "harness.h"

namespace ackxfer::test {
namespace {

TEST(Cli, RecvPrintsExactlyOneListeningLineOnStdout) {
  TempDir dst("dst");
  ReceiverProcess r(dst / "created/on/demand", 3);
  EXPECT_TRUE(std::regex_match(
      r.listening_line(),
      std::regex(R"(listening control=127\.0\.0\.1:\d+ data=127\.0\.0\.1:\d+ threads=3)")))
      << r.listening_line();
  EXPECT_TRUE(fs::is_directory(dst / "created/on/demand"));
  auto res = r.stop();
  EXPECT_EQ(res.exit_code, 0);
  EXPECT_EQ(res.out, "") << "stdout must hold only the listening line";
}

TEST(Cli, SecondReceiverOnTheSamePortFailsClearly) {
  TempDir dst("dst");
  ReceiverProcess r(dst.path());
  auto res = run({binary_path(), "recv", "--dir", dst.path().string(), "--listen", "127.0.0.1",
                  "--port", std::to_string(r.port()), "--data-port", "0"},
                 10s);
  EXPECT_EQ(res.exit_code, 6);
  EXPECT_NE(res.err.find("already in use"), std::string::npos) << res.err;
}

TEST(Cli, JsonIsExactlyOneObjectOnStdout) {
  TempDir src("src"), dst("dst");
  write_text(src / "a", "1");
  write_text(src / "b", "22");
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), "--json", (src / "a").string(), (src / "b").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  ASSERT_FALSE(res.out.empty());
  EXPECT_EQ(res.out.front(), '{');
  EXPECT_EQ(res.out.substr(res.out.size() - 2), "}\n");
  EXPECT_EQ(std::count(res.out.begin(), res.out.end(), '\n'), 1);
  EXPECT_EQ(json_field(res.out, "files"), "2");
  EXPECT_EQ(json_field(res.out, "bytes"), "3");
  EXPECT_EQ(json_field(res.out, "failed"), "0");
  EXPECT_TRUE(json_field(res.out, "seconds"));
  EXPECT_EQ(json_field(res.out, "retries"), "0");
}

TEST(Cli, EverySubcommandHasHelpWithExamples) {
  for (std::string cmd : {"recv", "send", "bench"}) {
    auto res = run({binary_path(), cmd, "--help"}, 10s);
    EXPECT_EQ(res.exit_code, 0) << cmd;
    EXPECT_NE(res.out.find("Usage: ackxfer-fast " + cmd), std::string::npos) << res.out;
    EXPECT_NE(res.out.find("Examples:"), std::string::npos) << cmd;
    EXPECT_NE(res.out.find("Exit status:"), std::string::npos) << cmd;
  }
}

TEST(Cli, VersionNamesTheRevisionAndProtocol) {
  auto res = run({binary_path(), "--version"}, 10s);
  EXPECT_EQ(res.exit_code, 0);
  EXPECT_TRUE(std::regex_search(res.out, std::regex(R"(^ackxfer-fast \d+\.\d+\.\d+ \(git )")))
      << res.out;
  EXPECT_NE(res.out.find("protocol 1"), std::string::npos);
}

TEST(Cli, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run({binary_path()}, 10s).exit_code, 2);
  EXPECT_EQ(run({binary_path(), "frobnicate"}, 10s).exit_code, 2);
  auto no_to = run({binary_path(), "send", "x"}, 10s);
  EXPECT_EQ(no_to.exit_code, 2);
  EXPECT_NE(no_to.err.find("--to"), std::string::npos);
  EXPECT_EQ(run({binary_path(), "send", "--to", "h"}, 10s).exit_code, 2);
  EXPECT_EQ(run({binary_path(), "send", "--to", "h", "--streams", "x", "p"}, 10s).exit_code, 2);
  EXPECT_EQ(run({binary_path(), "recv", "--port", "70000"}, 10s).exit_code, 2);
  EXPECT_EQ(run({binary_path(), "send", "--to", "h:99999", "p"}, 10s).exit_code, 2);
}

// io_uring refused by a seccomp filter, as in a container with Docker's default profile: each
// command says so, and what to do, and exits 6 without doing anything.
TEST(Cli, IoUringBlockedBySeccompIsDetectedAndExplained) {
  TempDir dst("dst"), src("src");
  write_text(src / "f", "x");
  std::vector<std::vector<std::string>> commands = {
      {"recv", "--dir", dst.path().string(), "--port", "0", "--data-port", "0"},
      {"send", "--to", "127.0.0.1:1", (src / "f").string()},
      {"bench", "--dataset", "small", "--runs", "1", "--warmup", "0"}};
  for (auto& args : commands) {
    std::vector<std::string> argv = {ACKXFER_NO_IO_URING, binary_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto res = run(argv, 30s);
    EXPECT_EQ(res.exit_code, 6) << args[0] << ": " << res.err;
    EXPECT_NE(res.err.find("io_uring is unavailable"), std::string::npos) << res.err;
    EXPECT_NE(res.err.find("seccomp"), std::string::npos) << res.err;
  }
  EXPECT_EQ(count_entries(dst.path()), 0u);
}

}  // namespace
}  // namespace ackxfer::test
