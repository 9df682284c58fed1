// The two yardsticks tools/compare-peers measures the engine against (tools/naive_loop.cpp,
// tools/least_work.cpp): they must deliver the tree exactly, and they must verify what they
// claim to verify, or the comparison would flatter them.
#include <gtest/gtest.h>

#include <regex>

#include "harness.h"

namespace ackxfer::test {
namespace {

struct Yardstick {
  const char* name;
  const char* path;
};

class Yardsticks : public ::testing::TestWithParam<Yardstick> {
 protected:
  // Starts the yardstick's receiver into `dst`; returns its control and data ports.
  std::unique_ptr<Process> start_receiver(const fs::path& dst, std::uint16_t port,
                                          std::uint16_t* control, std::uint16_t* data) {
    auto rx = std::make_unique<Process>(std::vector<std::string>{
        GetParam().path, "recv", "--dir", dst.string(), "--port", std::to_string(port)});
    auto line = rx->read_line(10s);
    EXPECT_TRUE(line) << "no listening line";
    std::smatch m;
    std::string l = line.value_or("");
    EXPECT_TRUE(std::regex_search(l, m, std::regex("control=[^ ]*:(\\d+)"))) << l;
    *control = m.empty() ? 0 : static_cast<std::uint16_t>(std::stoi(m[1]));
    std::smatch d;
    *data = std::regex_search(l, d, std::regex("data=[^ ]*:(\\d+)"))
                ? static_cast<std::uint16_t>(std::stoi(d[1]))
                : 0;
    return rx;
  }
};

TEST_P(Yardsticks, DeliverTheTreeWithModesAndMtimes) {
  TempDir src("src"), dst("dst");
  write_file(src / "t/big", (3 << 20) + 17, 1);
  write_file(src / "t/a/one", 100, 2);
  write_file(src / "t/a/b/two", 70'000, 3);
  write_file(src / "t/empty", 0, 4);
  fs::permissions(src / "t/a/one", fs::perms::owner_read | fs::perms::owner_write);
  std::uint16_t control = 0, data = 0;
  auto rx = start_receiver(dst.path(), 0, &control, &data);
  ProcessResult tx = run({GetParam().path, "send", "--to", "127.0.0.1:" + std::to_string(control),
                          (src / "t").string()},
                         60s);
  EXPECT_EQ(tx.exit_code, 0) << tx.err;
  EXPECT_EQ(rx->wait(30s).exit_code, 0) << rx->stderr_so_far();
  EXPECT_EQ(compare_trees(src / "t", dst / "t"), "");
}

// A byte flipped on the way: the file is refused, nothing is published under its name, and
// both sides say so with a non-zero exit.
TEST_P(Yardsticks, RefuseAFlippedByteAndPublishNothing) {
  TempDir src("src"), dst("dst");
  write_file(src / "t/big", 3 << 20, 5);
  std::uint16_t control = 0, data = 0;
  auto rx = start_receiver(dst.path(), free_port(), &control, &data);
  // The naive loop's bytes go on its data connection; least work has only the one.
  std::uint16_t bytes_port = data ? data : control;
  std::vector<std::string> proxy_argv = {
      faultproxy_path(),      "--listen", "127.0.0.2", "--target", "127.0.0.1", "--port",
      std::to_string(control)};
  if (data) proxy_argv.insert(proxy_argv.end(), {"--port", std::to_string(data)});
  proxy_argv.insert(proxy_argv.end(), {"--flip", std::to_string(bytes_port) + ":200000"});
  Process proxy(proxy_argv);
  ASSERT_EQ(proxy.read_line(10s).value_or(""), "ready");
  ProcessResult tx = run({GetParam().path, "send", "--to", "127.0.0.2:" + std::to_string(control),
                          (src / "t").string()},
                         60s);
  EXPECT_NE(tx.exit_code, 0);
  EXPECT_NE(rx->wait(30s).exit_code, 0);
  EXPECT_FALSE(fs::exists(dst / "t/big"));
}

INSTANTIATE_TEST_SUITE_P(, Yardsticks,
                         ::testing::Values(Yardstick{"naive_loop", ACKXFER_NAIVE_LOOP},
                                           Yardstick{"least_work", ACKXFER_LEAST_WORK}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace ackxfer::test
