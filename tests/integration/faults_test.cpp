// Faults with the real binary: corrupted bytes, refused connections, a receiver stopped or
// killed mid-transfer, missing inputs, a source that changes while it is sent. Each must end in a
// clear report and no wrong file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "harness.h"

namespace ackxfer::test {
namespace {

TEST(Faults, CorruptedPayloadIsDetectedAndTheChunkSentAgain) {
  TempDir src("src"), dst("dst");
  write_file(src / "data.bin", 20 << 20, 42);
  ReceiverProcess r(dst.path());
  // 48-byte frame header first, so offset 100000 lands in the first chunk's payload.
  FaultProxy proxy(r, {"--flip", std::to_string(r.data_port()) + ":100000"});
  auto res = send({"--to", proxy.to(), "--json", "--streams", "1", (src / "data.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  auto retries = json_field(res.out, "retries");
  ASSERT_TRUE(retries);
  EXPECT_GE(std::stoull(*retries), 1u);
  EXPECT_NE(res.err.find("digest mismatch"), std::string::npos) << res.err;
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("digest mismatch"), std::string::npos) << rs.err;
}

TEST(Faults, CorruptedFrameHeaderResetsTheStreamAndStillDelivers) {
  TempDir src("src"), dst("dst");
  write_file(src / "data.bin", 5 << 20, 43);
  ReceiverProcess r(dst.path());
  FaultProxy proxy(r, {"--flip", std::to_string(r.data_port()) + ":30"});
  auto res = send({"--to", proxy.to(), "--streams", "1", (src / "data.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Faults, DataConnectionCutMidFileIsResumedOnANewConnection) {
  TempDir src("src"), dst("dst");
  write_file(src / "data.bin", 30 << 20, 44);
  ReceiverProcess r(dst.path());
  FaultProxy proxy(r, {"--cut", std::to_string(r.data_port()) + ":10000000"});
  auto res = send({"--to", proxy.to(), "--json", "--streams", "1", (src / "data.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

// --dir replaced under a running receiver (renamed or removed and made again, or a volume
// mounted over it after the receiver started): its files used to go on landing in the old
// directory, out of sight. It stops within a second or two and says why; a service manager
// (Restart=on-failure) starts it again on the new one.
TEST(Faults, ADirReplacedUnderTheReceiverStopsItWithTheReason) {
  TempDir src("src"), dst("dst");
  write_text(src / "f", "x");
  const fs::path dir = dst / "in";
  ReceiverProcess r(dir);
  ASSERT_EQ(send({"--to", r.to(), (src / "f").string()}).exit_code, 0);
  fs::rename(dir, dst / "old");
  fs::create_directory(dir);
  auto res = r.process().wait(10s);
  EXPECT_FALSE(res.timed_out) << "still running with its --dir replaced";
  EXPECT_EQ(res.exit_code, 9) << res.err;
  EXPECT_NE(res.err.find("now names another directory than the one opened at start"),
            std::string::npos)
      << res.err;
  EXPECT_TRUE(fs::exists(dst / "old/f"));
}

TEST(Faults, NoReceiverIsACleanErrorAfterRetryFor) {
  TempDir src("src");
  write_text(src / "f", "x");
  auto t0 = std::chrono::steady_clock::now();
  auto res = send({"--to", "127.0.0.1:" + std::to_string(free_port()), "--retry-for", "1",
                   (src / "f").string()});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(res.exit_code, 3) << res.err;
  EXPECT_NE(res.err.find("no receiver listening"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("is `ackxfer-fast recv` running there"), std::string::npos) << res.err;
  // While it waits it says why (it used to sit silent), and no summary of zeros follows.
  EXPECT_NE(res.err.find("warning: cannot reach the receiver at 127.0.0.1:"), std::string::npos)
      << res.err;
  EXPECT_NE(res.err.find("retrying for up to 1 s (--retry-for)"), std::string::npos) << res.err;
  EXPECT_EQ(res.err.find("sent 0 files"), std::string::npos) << res.err;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 10s);
}

TEST(Faults, MissingPathIsNamedAndTheRestIsStillSent) {
  TempDir src("src"), dst("dst");
  write_text(src / "real.txt", "r");
  ReceiverProcess r(dst.path());
  auto res = send({"--to", r.to(), (src / "real.txt").string(), (src / "no-such-file").string()});
  EXPECT_EQ(res.exit_code, 1);
  EXPECT_NE(res.err.find("no-such-file"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("No such file"), std::string::npos) << res.err;
  EXPECT_EQ(read_text(dst / "real.txt"), "r");
}

// A PATH that cannot be read is named whether or not a receiver is reached (it went unsaid
// when none was), and when no PATH can be, send says so at once instead of spending
// --retry-for on a receiver first.
TEST(Faults, UnreadablePathsAreNamedEvenWithNoReceiver) {
  TempDir src("src");
  write_text(src / "f", "x");
  const std::string to = "127.0.0.1:" + std::to_string(free_port());
  auto res = send({"--to", to, "--retry-for", "1", (src / "typo").string(), (src / "f").string()});
  EXPECT_EQ(res.exit_code, 3) << res.err;
  EXPECT_NE(res.err.find("failed: " + (src / "typo").string() + ": No such file"),
            std::string::npos)
      << res.err;
  auto t0 = std::chrono::steady_clock::now();
  res = send({"--to", to, "--retry-for", "30", "--json", (src / "typo").string(),
              (src / "other-typo").string()});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "waited for a receiver first";
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_NE(res.err.find("failed: " + (src / "other-typo").string() + ": No such file"),
            std::string::npos)
      << res.err;
  EXPECT_NE(res.err.find("nothing to send: no PATH can be sent"), std::string::npos) << res.err;
  EXPECT_EQ(res.err.find("cannot reach the receiver"), std::string::npos) << res.err;
  EXPECT_NE(res.out.find("\"started\":false"), std::string::npos) << res.out;
  // A bad option is still said first: it is the user's to fix whatever the paths.
  res = send({"--to", to, "--no-encryption", (src / "typo").string()});
  EXPECT_EQ(res.exit_code, 2) << res.err;
}

TEST(Faults, ReceiverSigtermMidTransferExitsPromptlyAndPublishesNothingPartial) {
  TempDir src("src"), dst("dst");
  write_file(src / "huge.bin", 1ull << 30, 45);
  ReceiverProcess r(dst.path(), 2);
  // Throttle the sender through a stalling proxy so the transfer is surely in flight.
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":50000000:20000"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--retry-for", "0",
                  (src / "huge.bin").string()});
  std::this_thread::sleep_for(1500ms);
  auto t0 = std::chrono::steady_clock::now();
  auto rs = r.stop(15s);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(rs.timed_out);
  EXPECT_EQ(rs.exit_code, 0) << rs.err;
  EXPECT_LT(took, 5s);
  EXPECT_FALSE(fs::exists(dst / "huge.bin"));
  // At most the kept, clearly named partial and its journal (for a resume), nothing else.
  EXPECT_TRUE(only_kept_partials(dst.path()))
      << ::testing::PrintToString(temp_files_under(dst.path()));
  auto res = sender.wait(30s);
  EXPECT_EQ(res.exit_code, 4) << res.err;
  EXPECT_NE(res.err.find("shutting down"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("huge.bin"), std::string::npos) << res.err;
  // The same send against a restarted receiver finishes the file, byte for byte.
  ReceiverProcess again(dst.path(), 2);
  auto res2 = send({"--to", again.to(), "--json", (src / "huge.bin").string()});
  ASSERT_EQ(res2.exit_code, 0) << res2.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

TEST(Faults, ReceiverKilledMidTransferIsReportedAndLeavesNoFinalFile) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 256 << 20, 46);
  ReceiverProcess r(dst.path(), 2);
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":20000000:20000"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--retry-for", "1",
                  (src / "big.bin").string()});
  std::this_thread::sleep_for(1000ms);
  r.process().signal(SIGKILL);
  r.process().wait(5s);
  auto res = sender.wait(30s);
  EXPECT_EQ(res.exit_code, 4) << res.err;
  EXPECT_NE(res.err.find("big.bin"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("could not reconnect"), std::string::npos) << res.err;
  EXPECT_FALSE(fs::exists(dst / "big.bin"));
}

// Only the control connection breaks (a middlebox resets it); the receiver stays up. The
// sender re-establishes the session and sends again what had no verdict (a large file resumes
// from whatever the receiver had journaled), and the result is exact.
TEST(Faults, ACutControlConnectionIsReestablishedAndTheTransferFinishes) {
  TempDir src("src"), dst("dst");
  fs::create_directories(src / "tree");
  write_file(src / "big.bin", 96 << 20, 47);
  for (int i = 0; i < 20; ++i)
    write_file(src / "tree" / ("small-" + std::to_string(i)), 1000 + i, 200 + i);
  ReceiverProcess r(dst.path(), 2);
  // Slow the data down so that big.bin (sent first) is mid-flight when the control connection
  // is reset, 1,500 bytes in: after some of the small files' SENDs, before big.bin's DONE.
  FaultProxy proxy(r, {"--throttle", std::to_string(r.data_port()) + ":40000:every", "--cut",
                       std::to_string(r.port()) + ":1500"});
  auto res = send({"--to", proxy.to(), "--streams", "2", "--retry-for", "20", "--json",
                   (src / "big.bin").string(), (src / "tree").string()},
                  60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.err.find("lost the session"), std::string::npos) << res.err;
  EXPECT_NE(res.err.find("reconnected"), std::string::npos) << res.err;
  EXPECT_EQ(json_field(res.out, "failed"), "0") << res.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("unfinished"), std::string::npos) << rs.err;
}

TEST(Faults, SenderSigintReportsInterruption) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 256 << 20, 47);
  ReceiverProcess r(dst.path(), 2);
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":20000000:20000"});
  Process sender(
      {binary_path(), "send", "--to", proxy.to(), "--streams", "1", (src / "big.bin").string()});
  std::this_thread::sleep_for(1000ms);
  sender.signal(SIGINT);
  auto res = sender.wait(10s);
  EXPECT_FALSE(res.timed_out);
  EXPECT_EQ(res.exit_code, 4) << res.err;
  EXPECT_NE(res.err.find("cancelled"), std::string::npos) << res.err;
  // The receiver publishes nothing, keeps at most a partial for a resume, and keeps serving.
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(fs::exists(dst / "big.bin"));
  EXPECT_TRUE(only_kept_partials(dst.path()));
  write_text(src / "after.txt", "still alive");
  EXPECT_EQ(send({"--to", r.to(), (src / "after.txt").string()}).exit_code, 0);
}

class ShrinkingSource : public ::testing::TestWithParam<const char*> {};

// The source shrinks while it is being read: every send path must notice (the mmap paths catch
// the SIGBUS of reading past the new end), fail that file clearly and publish nothing.
TEST_P(ShrinkingSource, IsReportedAndNeverPublishedTorn) {
  TempDir src("src"), dst("dst");
  write_file(src / "shrinks.bin", 64 << 20, 48);
  write_text(src / "steady.txt", "steady");
  ReceiverProcess r(dst.path());
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":12000000:1500"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--send-path",
                  GetParam(), (src / "shrinks.bin").string(), (src / "steady.txt").string()});
  std::this_thread::sleep_for(700ms);
  fs::resize_file(src / "shrinks.bin", 1 << 20);
  auto res = sender.wait(60s);
  EXPECT_EQ(res.term_signal, 0) << "the sender crashed";
  EXPECT_EQ(res.exit_code, 1) << res.err;
  EXPECT_TRUE(res.err.find("shrank") != std::string::npos ||
              res.err.find("changed") != std::string::npos)
      << res.err;
  EXPECT_FALSE(fs::exists(dst / "shrinks.bin"));
  EXPECT_EQ(read_text(dst / "steady.txt"), "steady");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

INSTANTIATE_TEST_SUITE_P(Faults, ShrinkingSource, ::testing::Values("copy", "mmap", "splice"));

// Overwrites `p` in place (no truncation, so its size never changes) with the bytes of `with`.
void overwrite_in_place(const fs::path& p, const fs::path& with) {
  std::ifstream in(with, std::ios::binary);
  std::fstream out(p, std::ios::in | std::ios::out | std::ios::binary);
  out << in.rdbuf();
}

// The source is rewritten in place while it is being sent: same size, new bytes, and a new
// mtime (or, `keep_mtime`, the old one put back, as `cp -p` or `touch -r` would). Chunks sent
// before the change hold old bytes, later ones new bytes, and each verifies on its own: only
// the sender's look at the file before DONE can tell. The file must arrive whole, as one
// version or the other (the sender sends it again), or fail by name and not exist: never a mix.
void rewrite_while_sending(const std::string& send_path, bool keep_mtime) {
  TempDir src("src"), dst("dst"), next("next");
  constexpr std::uint64_t kSize = 64 << 20;  // 8 chunks
  write_file(src / "changes.bin", kSize, 49);
  write_file(next / "changes.bin", kSize, 50);
  const std::string old_bytes = read_text(src / "changes.bin");
  const std::string new_bytes = read_text(next / "changes.bin");
  write_text(src / "steady.txt", "steady");
  ReceiverProcess r(dst.path());
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":12000000:4000"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--json",
                  "--send-path", send_path, (src / "changes.bin").string(),
                  (src / "steady.txt").string()});
  // Mid-flight: the first chunk is verified (journaled), the rest waits behind the stall.
  ASSERT_TRUE(wait_until([&] { return journaled_chunks_under(dst.path()) >= 1; }, 20s));
  struct stat st {};
  ASSERT_EQ(stat((src / "changes.bin").c_str(), &st), 0);
  overwrite_in_place(src / "changes.bin", next / "changes.bin");
  timespec mtime = st.st_mtim;
  if (!keep_mtime) mtime.tv_sec += 7;
  timespec times[2] = {{0, UTIME_OMIT}, mtime};
  ASSERT_EQ(utimensat(AT_FDCWD, (src / "changes.bin").c_str(), times, 0), 0);
  auto res = sender.wait(60s);
  EXPECT_EQ(res.term_signal, 0) << "the sender crashed";
  EXPECT_NE(res.err.find((src / "changes.bin").string() + "': it changed while being sent"),
            std::string::npos)
      << res.err;
  if (fs::exists(dst / "changes.bin")) {
    std::string got = read_text(dst / "changes.bin");
    EXPECT_TRUE(got == new_bytes || got == old_bytes) << "published torn";
  }
  if (res.exit_code == 0) {
    EXPECT_EQ(json_field(res.out, "failed"), "0") << res.out;
    EXPECT_EQ(compare_trees(src.path(), dst.path()), "");  // the new version, with its mtime
  } else {
    EXPECT_EQ(res.exit_code, 1) << res.err;
    EXPECT_FALSE(fs::exists(dst / "changes.bin"));
  }
  EXPECT_EQ(read_text(dst / "steady.txt"), "steady");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

class ChangingSource : public ::testing::TestWithParam<const char*> {};

TEST_P(ChangingSource, SameSizeNewContentAndMtimeMidSendIsNeverPublishedTorn) {
  rewrite_while_sending(GetParam(), false);
}

// Only the ctime (which nobody can set back) shows this one. The check does not depend on the
// send path, so one path will do.
TEST(Faults, SameSizeNewContentBehindARestoredMtimeIsNeverPublishedTorn) {
  rewrite_while_sending("copy", true);
}

INSTANTIATE_TEST_SUITE_P(Faults, ChangingSource, ::testing::Values("copy", "mmap", "splice"));

}  // namespace
}  // namespace ackxfer::test
