// The command line other tools script against: output streams, formats and exit codes.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <thread>

#include "harness.h"
#include "io/socket.h"

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
  // Every field is documented (the man page's JSON OUTPUT section), so scripts know what it is.
  std::ifstream in(ACKXFER_MAN_PAGE);
  const std::string page((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string section = page.substr(page.find(".SH \"JSON OUTPUT\""));
  const std::regex key(R"re("([a-z_]+)":)re");
  std::size_t keys = 0;
  for (auto it = std::sregex_iterator(res.out.begin(), res.out.end(), key);
       it != std::sregex_iterator(); ++it, ++keys)
    EXPECT_NE(section.find(".BR " + (*it)[1].str() + " \""), std::string::npos)
        << (*it)[1] << " is not in the man page's JSON OUTPUT section";
  EXPECT_GE(keys, 15u);
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
  EXPECT_NE(res.out.find("protocol 2"), std::string::npos);
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

// `recv /data` for `recv --dir /data` used to be taken as `recv`: a receiver listening on every
// address, unauthenticated, writing into the current directory. `bench large` ran every data set.
TEST(Cli, AWordWhereOnlyOptionsBelongIsAUsageError) {
  TempDir dst("dst");
  auto recv = run({binary_path(), "recv", dst.path().string(), "--port", "0", "--data-port", "0",
                   "--listen", "127.0.0.1"},
                  10s);
  EXPECT_EQ(recv.exit_code, 2) << recv.err;
  EXPECT_EQ(recv.out, "") << "it must not have started listening";
  EXPECT_NE(recv.err.find("did you mean --dir " + dst.path().string()), std::string::npos)
      << recv.err;
  auto bench = run({binary_path(), "bench", "large"}, 10s);
  EXPECT_EQ(bench.exit_code, 2) << bench.err;
  EXPECT_NE(bench.err.find("did you mean --dataset large"), std::string::npos) << bench.err;
}

// `--to` naming the data port (it is printed beside the control port): the receiver answers
// the HELLO with a line that says so. The sender used to wait 10 s for an answer and report the
// receiver as not responding (exit 8).
TEST(Cli, SendingToTheDataPortIsToldSoAtOnce) {
  TempDir src("src"), dst("dst");
  write_text(src / "f", "x");
  ReceiverProcess r(dst.path());
  auto t0 = std::chrono::steady_clock::now();
  auto res = send({"--to", "127.0.0.1:" + std::to_string(r.data_port()), (src / "f").string()});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(res.exit_code, 5) << res.err;
  EXPECT_NE(res.err.find("this is the data port of an ackxfer-fast receiver"), std::string::npos)
      << res.err;
  EXPECT_FALSE(fs::exists(dst / "f"));
}

// Errors that name the cause and the fix.
TEST(Cli, AnUnknownHostIsNamedWithWhatToCheck) {
  TempDir src("src");
  write_text(src / "f", "x");
  auto res = send({"--to", "no-such-host.invalid", "--retry-for", "0", (src / "f").string()}, 30s);
  EXPECT_EQ(res.exit_code, 3) << res.err;
  EXPECT_NE(res.err.find("cannot resolve host 'no-such-host.invalid'"), std::string::npos)
      << res.err;
  EXPECT_NE(res.err.find("check the name"), std::string::npos) << res.err;
}

TEST(Cli, AReceiverOfAnotherProtocolVersionIsExplained) {
  // A stand-in receiver from the future: it answers HELLO with version 3.
  std::uint16_t port = 0;
  int lfd = listen_on_loopback(port);
  ASSERT_GE(lfd, 0);
  std::thread server([lfd] {
    int c = ::accept(lfd, nullptr, nullptr);
    if (c < 0) return;
    char buf[256];
    (void)::read(c, buf, sizeof buf);
    const char reply[] = "HELLO ackxfer 3 data-port=9 max-open=1\n";
    (void)::write(c, reply, sizeof reply - 1);
    (void)::read(c, buf, sizeof buf);  // until the sender hangs up
    ::close(c);
  });
  TempDir src("src");
  write_text(src / "f", "x");
  auto res = send(
      {"--to", "127.0.0.1:" + std::to_string(port), "--retry-for", "0", (src / "f").string()}, 30s);
  ::shutdown(lfd, SHUT_RDWR);
  server.join();
  ::close(lfd);
  EXPECT_EQ(res.exit_code, 5) << res.err;
  EXPECT_NE(res.err.find("protocol version 3, this sender 2"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("upgrade the older side"), std::string::npos) << res.err;
}

// A receiver listening only on IPv6 loopback, or nothing if this machine has none.
std::unique_ptr<ReceiverProcess> ipv6_receiver(const fs::path& dir, std::string& why) {
  try {
    return std::make_unique<ReceiverProcess>(dir, 2, std::vector<std::string>{}, 0, 0, "::1");
  } catch (const std::exception& e) {
    why = e.what();
    return nullptr;
  }
}

TEST(Cli, AnIpv6LiteralReachesAReceiverListeningOnIpv6) {
  TempDir src("src"), dst("dst");
  write_text(src / "f", "over ipv6");
  std::string why;
  auto r = ipv6_receiver(dst.path(), why);
  if (!r) GTEST_SKIP() << "no IPv6 loopback here: " << why;
  EXPECT_NE(r->listening_line().find("control=[::1]:"), std::string::npos) << r->listening_line();
  auto res = send({"--to", "[::1]:" + std::to_string(r->port()), (src / "f").string()}, 30s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "f"), "over ipv6");
}

// A name with an IPv4 and an IPv6 address, IPv4 first, and a receiver on IPv6 only: the sender
// tries each address of a name in turn and still finds it. The name is made in a private mount
// namespace (a hosts file bound over /etc/hosts for the sender alone).
TEST(Cli, AHostNameWithSeveralAddressesIsTriedAddressByAddress) {
  TempDir src("src"), dst("dst");
  write_text(src / "f", "by name");
  write_text(src / "hosts", "127.0.0.1 ackxfer-dual\n::1 ackxfer-dual\n");
  std::string why;
  auto r = ipv6_receiver(dst.path(), why);
  if (!r) GTEST_SKIP() << "no IPv6 loopback here: " << why;
  std::string cmd = "mount --bind '" + (src / "hosts").string() + "' /etc/hosts && exec '" +
                    binary_path() + "' send --to ackxfer-dual:" + std::to_string(r->port()) +
                    " --retry-for 2 '" + (src / "f").string() + "'";
  auto res = run({"/usr/bin/unshare", "--mount", "/bin/sh", "-c", cmd}, 30s);
  if (res.exit_code != 0 && res.err.find("ackxfer-fast") == std::string::npos)
    GTEST_SKIP() << "cannot make a private /etc/hosts here (needs root and unshare): " << res.err;
  EXPECT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(read_text(dst / "f"), "by name");
}

// `bench` in-process: a cut-down data set is generated, sent, compared byte for byte, reported.
TEST(Bench, InProcessRunIsVerifiedAndReported) {
  TempDir work("bench");
  auto res = run({binary_path(), "bench", "--dataset", "small", "--files", "300", "--runs", "2",
                  "--warmup", "0", "--warm-gib", "0", "--work-dir", work.path().string(), "--json"},
                 120s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "files"), "300");
  EXPECT_EQ(json_field(res.out, "verified"), "byte-for-byte");
  EXPECT_EQ(json_field(res.out, "runs_timed"), "2");
  EXPECT_EQ(count_entries(work.path()), 0u) << "bench leaves nothing behind without --keep";
}

// bench exits with the code send would have for the same failure: here 7 for a receiver that
// holds another secret (it used to exit 1 for everything, against its own --help).
TEST(Bench, AFailedRunExitsWithSendsCodeForIt) {
  TempDir work("bench"), dst("dst"), keys("keys");
  write_text(keys / "recv", "k7Q2mYbVt0x3JrLp9sWfZ1eHcN5uGdA8\n");
  write_text(keys / "bench", "mA9vC3tL0pQ7xR2sK8dF1gH5jB6nW4zE\n");
  chmod((keys / "recv").c_str(), 0600);
  chmod((keys / "bench").c_str(), 0600);
  ReceiverProcess r(dst.path(), 2, {"--secret-file", (keys / "recv").string()});
  auto res = run({binary_path(), "bench", "--to", r.to(), "--secret-file",
                  (keys / "bench").string(), "--dataset", "small", "--files", "10", "--runs", "1",
                  "--warmup", "0", "--warm-gib", "0", "--work-dir", work.path().string()},
                 60s);
  EXPECT_EQ(res.exit_code, 7) << res.err;
}

// Against a running receiver the previous run's copies are still there: every run must send
// the whole data set again, not skip it as unchanged (which once failed every run after the
// first with "sent 0 files").
TEST(Bench, EveryRunAgainstAReceiverSendsTheWholeDataSet) {
  TempDir work("bench"), dst("dst");
  ReceiverProcess r(dst.path());
  auto res = run(
      {binary_path(), "bench", "--dataset", "medium", "--files", "12", "--runs", "2", "--warmup",
       "1", "--warm-gib", "0", "--to", r.to(), "--work-dir", work.path().string(), "--json"},
      120s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_field(res.out, "runs_timed"), "2");
  EXPECT_EQ(json_field(res.out, "files"), "12");
  EXPECT_EQ(count_entries(dst / "medium"), 12u);
  EXPECT_EQ(fs::file_size(dst / "medium" / "f11"), 1u << 20);
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
