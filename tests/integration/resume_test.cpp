// Interrupted transfers resume from what the receiver already verified (kept partial files
// and their journals), re-runs skip what is already there, and neither ever publishes a wrong
// file. docs/RELIABILITY.md describes the behaviour these tests pin down.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "fs/partial.h"
#include "harness.h"
#include "protocol/data_frame.h"

namespace ackxfer::test {
namespace {

constexpr std::uint64_t kChunk = 8 << 20;  // the protocol's default chunk size

// Starts a send of `file` through a proxy that stalls its data connection after `stall_at`
// bytes, and waits until the receiver's journal records at least `chunks` verified chunks.
// Returns the running sender.
std::unique_ptr<Process> start_stalled_send(const FaultProxy& proxy, const fs::path& file,
                                            const fs::path& dst, std::size_t chunks) {
  auto sender = std::make_unique<Process>(
      std::vector<std::string>{binary_path(), "send", "--to", proxy.to(), "--streams", "1",
                               "--retry-for", "0", file.string()});
  EXPECT_TRUE(wait_until([&] { return journaled_chunks_under(dst) >= chunks; }, 20s))
      << "journal has " << journaled_chunks_under(dst) << " chunks";
  return sender;
}

bool kept_partial_logged(ReceiverProcess& r) {
  return r.process().stderr_so_far().find("kept the partial file") != std::string::npos;
}

// Sends `file` until its first `stall_chunks` chunks are through and at least two are
// journaled, kills the sender, and waits until the receiver has kept the partial.
void interrupt_and_keep_partial(ReceiverProcess& r, const fs::path& file, const fs::path& dst,
                                std::uint64_t stall_chunks) {
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":" +
                                      std::to_string(stall_chunks * kChunk + 1000) + ":60000"});
  auto sender = start_stalled_send(proxy, file, dst, 2);
  sender->signal(SIGKILL);
  sender->wait(5s);
  ASSERT_TRUE(wait_until([&] { return kept_partial_logged(r); }, 5s));
}

TEST(Resume, SenderKilledThenTheSameSendResumes) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 8 * kChunk + 12345, 61);
  ReceiverProcess r(dst.path());
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":" +
                                      std::to_string(5 * kChunk + 1000) + ":60000"});
  auto sender = start_stalled_send(proxy, src / "big.bin", dst.path(), 3);
  sender->signal(SIGKILL);
  sender->wait(5s);
  EXPECT_FALSE(fs::exists(dst / "big.bin"));
  // The receiver notices the lost session and keeps the partial (clearly named).
  ASSERT_TRUE(wait_until([&] { return kept_partial_logged(r); }, 5s));
  EXPECT_TRUE(only_kept_partials(dst.path()));

  auto res = send({"--to", r.to(), "--json", (src / "big.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_GE(json_u64(res.out, "resumed_bytes"), 3 * kChunk) << res.out;
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("resuming"), std::string::npos) << rs.err;
}

TEST(Resume, ReceiverKilledAndRestartedThenTheSameSendResumes) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 8 * kChunk, 62);
  std::uint64_t resumed = 0;
  {
    ReceiverProcess r(dst.path());
    FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":" +
                                        std::to_string(4 * kChunk + 1000) + ":60000"});
    auto sender = start_stalled_send(proxy, src / "big.bin", dst.path(), 2);
    r.process().signal(SIGKILL);
    r.process().wait(5s);
    auto res = sender->wait(30s);
    EXPECT_EQ(res.exit_code, 4) << res.err;
    EXPECT_NE(res.err.find("big.bin"), std::string::npos) << res.err;
  }
  EXPECT_FALSE(fs::exists(dst / "big.bin"));
  EXPECT_TRUE(only_kept_partials(dst.path()));
  ReceiverProcess again(dst.path());
  auto res = send({"--to", again.to(), "--json", (src / "big.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  resumed = json_u64(res.out, "resumed_bytes");
  EXPECT_GE(resumed, 2 * kChunk) << res.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

// The receiver goes away mid-file and comes back on the same ports within --retry-for: the
// running sender reconnects, sends again only what had no verdict, and the receiver resumes it
// from the partial it kept. One sender run, exit 0, byte-identical result.
class ReceiverBack : public ::testing::TestWithParam<int> {};

TEST_P(ReceiverBack, WithinRetryForTheRunningSendReconnectsAndResumes) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 8 * kChunk + 777, 69);
  std::uint16_t port = free_port(), data_port = free_port();
  auto r =
      std::make_unique<ReceiverProcess>(dst.path(), 2, std::vector<std::string>{}, port, data_port);
  // Stalls only the first data connection: the one to the receiver about to go away.
  FaultProxy proxy(*r, {"--stall", std::to_string(data_port) + ":" +
                                       std::to_string(4 * kChunk + 1000) + ":60000"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--retry-for", "30",
                  "--json", (src / "big.bin").string()});
  ASSERT_TRUE(wait_until([&] { return journaled_chunks_under(dst.path()) >= 2; }, 20s));
  r->process().signal(GetParam());
  auto gone = r->process().wait(10s);
  EXPECT_FALSE(gone.timed_out);
  EXPECT_FALSE(fs::exists(dst / "big.bin"));
  // Right away, as systemd or a script would: the port the killed one held must be usable.
  r = std::make_unique<ReceiverProcess>(dst.path(), 2, std::vector<std::string>{}, port, data_port);
  auto res = sender.wait(60s);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_NE(res.err.find("reconnected"), std::string::npos) << res.err;
  EXPECT_GE(json_u64(res.out, "resumed_bytes"), 2 * kChunk) << res.out;
  EXPECT_EQ(json_u64(res.out, "files"), 1u) << res.out;
  EXPECT_EQ(json_u64(res.out, "failed"), 0u) << res.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

INSTANTIATE_TEST_SUITE_P(Resume, ReceiverBack, ::testing::Values(SIGTERM, SIGKILL),
                         [](const auto& info) {
                           return std::string(info.param == SIGTERM ? "Sigterm" : "Sigkill");
                         });

TEST(Resume, ASourceChangedSinceTheInterruptionStartsOver) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 6 * kChunk, 63);
  ReceiverProcess r(dst.path());
  interrupt_and_keep_partial(r, src / "big.bin", dst.path(), 3);
  if (HasFatalFailure()) return;
  // New content, new mtime: nothing of the partial may be reused.
  write_file(src / "big.bin", 6 * kChunk, 64);
  auto res = send({"--to", r.to(), "--json", (src / "big.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_u64(res.out, "resumed_bytes"), 0u) << res.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

// A kept chunk damaged on the receiver's disk is offered as kept, and caught when the kept
// chunks are read back at DONE: the file is not published, the journal forgets that chunk, and
// the sender's retry (within the same run) resumes without it.
TEST(Resume, ADamagedPartialIsCaughtAtDoneAndThoseChunksSentAgain) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 6 * kChunk, 65);
  ReceiverProcess r(dst.path());
  interrupt_and_keep_partial(r, src / "big.bin", dst.path(), 3);
  if (HasFatalFailure()) return;
  ASSERT_GE(journaled_chunks_under(dst.path()), 1u);
  // Someone scribbles over the first (journaled) chunk of the kept partial.
  for (const std::string& t : temp_files_under(dst.path()))
    if (t.ends_with(".part")) {
      std::fstream f(t, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(1000);
      f.write("garbage", 7);
    }
  auto res = send({"--to", r.to(), "--json", (src / "big.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_GE(json_u64(res.out, "retries"), 1u) << res.out;
  EXPECT_NE(res.err.find("no longer match the kept partial's journal"), std::string::npos)
      << res.err;
  // Resumed by the attempt that delivered it: every chunk but the damaged one (those the first
  // attempt sent were journaled when the damage was found, so they are not sent again).
  EXPECT_EQ(json_u64(res.out, "resumed_bytes"), 5 * kChunk) << res.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("no longer match their journal"), std::string::npos) << rs.err;
}

// A peer that resumes a kept partial and leaves, over and over (a SEND a round, some rounds
// writing a chunk into it), used to have the receiver read the whole partial back every round.
// Kept chunks are read back only once a DONE has verified the file by its digests: these rounds
// have nothing read (the receiver's stop line counts what it read back).
TEST(Resume, APeerThatResumesAndLeavesOverAndOverHasNothingReadBack) {
  TempDir dst("dst");
  ReceiverProcess r(dst.path());
  constexpr std::uint64_t chunk = 1 << 20;
  const std::string send_line = "SEND 1 big size=" + std::to_string(5 * chunk) +
                                " mode=0644 mtime=1.0 chunk=" + std::to_string(chunk) + "\n";
  auto kept = [&] {
    const std::string err = r.process().stderr_so_far();
    std::size_t n = 0;
    for (std::size_t at = err.find("kept the partial file"); at != std::string::npos;
         at = err.find("kept the partial file", at + 1))
      ++n;
    return n;
  };
  {  // Two chunks delivered and journaled, then the peer is gone.
    RawClient c(r.port());
    c.send_bytes("HELLO ackxfer 2\n");
    ASSERT_TRUE(c.read_line());
    c.send_bytes(send_line);
    auto ready = c.read_line();
    ASSERT_TRUE(ready && ready->starts_with("READY 1 ")) << ready.value_or("(none)");
    const std::string token = ready->substr(ready->find("token=") + 6, 32);
    RawClient d(r.data_port());
    d.send_bytes(frame_bytes(token, 0, std::string(chunk, 'a'), chunk) +
                 frame_bytes(token, chunk, std::string(chunk, 'b'), chunk));
    EXPECT_EQ(read_ack_status(d), static_cast<int>(AckStatus::kOk));
    EXPECT_EQ(read_ack_status(d), static_cast<int>(AckStatus::kOk));
    ASSERT_TRUE(wait_until([&] { return journaled_chunks_under(dst.path()) >= 2; }, 10s));
  }
  ASSERT_TRUE(wait_until([&] { return kept() == 1; }, 5s));
  for (std::size_t round = 1; round <= 4; ++round) {
    {
      RawClient c(r.port());
      c.send_bytes("HELLO ackxfer 2\n");
      ASSERT_TRUE(c.read_line());
      c.send_bytes(send_line);
      auto ready = c.read_line(10s);
      ASSERT_TRUE(ready && ready->find(" have=") != std::string::npos) << ready.value_or("(none)");
      if (round <= 2) {  // these rounds also write a chunk (2, then 3) and see it journaled
        const std::string token = ready->substr(ready->find("token=") + 6, 32);
        RawClient d(r.data_port());
        d.send_bytes(frame_bytes(token, (round + 1) * chunk, std::string(chunk, 'c'), chunk));
        EXPECT_EQ(read_ack_status(d), static_cast<int>(AckStatus::kOk));
        ASSERT_TRUE(
            wait_until([&] { return journaled_chunks_under(dst.path()) >= round + 2; }, 10s));
      }
    }  // gone without DONE or BYE: the partial is kept again
    ASSERT_TRUE(wait_until([&] { return kept() == round + 1; }, 5s))
        << round << r.process().stderr_so_far();
  }
  auto rs = r.stop();
  // Before kept chunks were read back at DONE (e2b326a), these rounds read 13.63 MB: the
  // partial whole at each (2, 3, 4 and 4 MiB), as a read-back was remembered only while
  // nothing wrote into the partial and the third round's was too soon after a write.
  EXPECT_NE(rs.err.find("4 resumed (0 B of kept partials read back"), std::string::npos) << rs.err;
}

// The source was rewritten with the same size and mtime: the sender's chunks no longer match
// what the receiver kept. The file digest in DONE catches it; the file is sent again whole.
TEST(Resume, ASourceRewrittenBehindAnUnchangedMtimeIsCaughtByTheFileDigest) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 6 * kChunk, 67);
  ReceiverProcess r(dst.path());
  interrupt_and_keep_partial(r, src / "big.bin", dst.path(), 3);
  if (HasFatalFailure()) return;
  struct stat st {};
  ASSERT_EQ(stat((src / "big.bin").c_str(), &st), 0);
  write_file(src / "big.bin", 6 * kChunk, 68);
  timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(utimensat(AT_FDCWD, (src / "big.bin").c_str(), times, 0), 0);
  auto res = send({"--to", r.to(), "--json", (src / "big.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_GE(json_u64(res.out, "retries"), 1u) << res.out;
  EXPECT_NE(res.err.find("mismatch"), std::string::npos) << res.err;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
}

TEST(Resume, KeepPartialsZeroKeepsNothing) {
  TempDir src("src"), dst("dst");
  write_file(src / "big.bin", 6 * kChunk, 66);
  ReceiverProcess r(dst.path(), 2, {"--keep-partials", "0"});
  FaultProxy proxy(r, {"--stall", std::to_string(r.data_port()) + ":" +
                                      std::to_string(3 * kChunk + 1000) + ":60000"});
  Process sender({binary_path(), "send", "--to", proxy.to(), "--streams", "1", "--retry-for", "0",
                  (src / "big.bin").string()});
  // Nothing to resume means nothing named: the file is received into a nameless O_TMPFILE
  // (held open by the receiver), and vanishes with it when the sender dies.
  ASSERT_TRUE(wait_until([&] { return holds_nameless_file(r.process().pid(), dst.path()); }, 10s));
  std::this_thread::sleep_for(1500ms);  // past a checkpoint, were there any
  EXPECT_TRUE(temp_files_under(dst.path()).empty());
  EXPECT_EQ(journaled_chunks_under(dst.path()), 0u);
  sender.signal(SIGKILL);
  sender.wait(5s);
  EXPECT_TRUE(wait_until([&] { return temp_files_under(dst.path()).empty(); }, 5s))
      << ::testing::PrintToString(temp_files_under(dst.path()));
}

TEST(Resume, StalePartialsAreSweptAtStartAndFreshOnesKept) {
  TempDir dst("dst");
  fs::create_directories(dst / "sub/deeper");
  // A partial is provably ours when its journal starts with our header naming a file whose
  // partial name it has.
  auto partial_of = [&](const fs::path& dir, const std::string& name) {
    std::string base = (dir / partial_base_name(name)).string();
    write_text(base + ".part", "x");
    write_text(base + ".journal", journal_header(name, 1 << 20, Mtime{1, 0}, 65536));
    return std::pair{base + ".part", base + ".journal"};
  };
  auto [old_part, old_journal] = partial_of(dst / "sub/deeper", "big.bin");
  auto [fresh_part, fresh_journal] = partial_of(dst / "sub", "other.bin");
  std::string user_file = (dst / "sub/deeper/.ackxfer-notes").string();  // not ours: stays
  // Our shape, but no journal of ours: nothing proves the receiver made it, so it stays too.
  std::string look_alike = (dst / "sub/deeper/.ackxfer-0123456789abcdef.part").string();
  for (const std::string& p : {user_file, look_alike})
    write_text(p, "x");
  timespec two_days_ago[2] = {{time(nullptr) - 2 * 86400, 0}, {time(nullptr) - 2 * 86400, 0}};
  for (const std::string& p : {old_part, old_journal, user_file, look_alike})
    ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), two_days_ago, 0), 0);
  ReceiverProcess r(dst.path(), 2, {"--keep-partials", "24"});
  EXPECT_TRUE(wait_until([&] { return !fs::exists(old_part) && !fs::exists(old_journal); }, 5s));
  EXPECT_TRUE(fs::exists(fresh_part));
  EXPECT_TRUE(fs::exists(fresh_journal));
  EXPECT_TRUE(fs::exists(user_file));
  EXPECT_TRUE(fs::exists(look_alike));
  auto rs = r.stop();
  EXPECT_NE(rs.err.find("removed 2 partial files"), std::string::npos) << rs.err;
  EXPECT_NE(rs.err.find("left 1 file named like"), std::string::npos) << rs.err;
}

// Re-running a finished transfer: nothing is sent again, nothing is duplicated or nested.
TEST(Rerun, IdenticalFilesAreSkippedAndForceSendsThemAgain) {
  TempDir src("src"), dst("dst");
  fs::create_directories(src / "tree/sub");
  write_file(src / "tree/a.bin", 3 << 20, 70);
  write_file(src / "tree/sub/b.bin", 20 << 20, 71);
  write_text(src / "tree/sub/c.txt", "c");
  ReceiverProcess r(dst.path());
  auto first = send({"--to", r.to(), "--json", (src / "tree").string()});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(json_u64(first.out, "files"), 3u);
  std::size_t entries = count_entries(dst.path());

  auto again = send({"--to", r.to(), "--json", (src / "tree").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json_u64(again.out, "files"), 0u) << again.out;
  EXPECT_EQ(json_u64(again.out, "unchanged"), 3u) << again.out;
  EXPECT_EQ(json_u64(again.out, "bytes"), 0u) << again.out;
  EXPECT_EQ(count_entries(dst.path()), entries);  // no tree/tree, no copies
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");

  auto forced = send({"--to", r.to(), "--json", "--force", (src / "tree").string()});
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(json_u64(forced.out, "files"), 3u) << forced.out;
  EXPECT_EQ(json_u64(forced.out, "unchanged"), 0u) << forced.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

TEST(Rerun, AChangedFileIsSentAndAModeChangeIsApplied) {
  TempDir src("src"), dst("dst");
  write_file(src / "a.bin", 1 << 20, 72);
  write_file(src / "b.bin", 1 << 20, 73);
  ReceiverProcess r(dst.path());
  ASSERT_EQ(send({"--to", r.to(), (src / "a.bin").string(), (src / "b.bin").string()}).exit_code,
            0);
  write_file(src / "a.bin", 1 << 20, 74);  // new content and mtime
  fs::permissions(src / "b.bin", fs::perms(0600));
  auto res = send({"--to", r.to(), "--json", (src / "a.bin").string(), (src / "b.bin").string()});
  ASSERT_EQ(res.exit_code, 0) << res.err;
  EXPECT_EQ(json_u64(res.out, "files"), 1u) << res.out;
  EXPECT_EQ(json_u64(res.out, "unchanged"), 1u) << res.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");  // includes b.bin's new mode
}

TEST(Rerun, ChecksumCatchesContentThatSizeAndMtimeMiss) {
  TempDir src("src"), dst("dst");
  write_file(src / "same.bin", 3 << 20, 75);
  write_file(src / "sneaky.bin", 12 << 20, 76);
  ReceiverProcess r(dst.path());
  ASSERT_EQ(
      send({"--to", r.to(), (src / "same.bin").string(), (src / "sneaky.bin").string()}).exit_code,
      0);
  // Same size, same mtime, different bytes: the quick check cannot see it.
  struct stat st {};
  ASSERT_EQ(stat((src / "sneaky.bin").c_str(), &st), 0);
  write_file(src / "sneaky.bin", 12 << 20, 77);
  timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(utimensat(AT_FDCWD, (src / "sneaky.bin").c_str(), times, 0), 0);
  auto quick =
      send({"--to", r.to(), "--json", (src / "same.bin").string(), (src / "sneaky.bin").string()});
  ASSERT_EQ(quick.exit_code, 0) << quick.err;
  EXPECT_EQ(json_u64(quick.out, "unchanged"), 2u) << quick.out;
  EXPECT_NE(compare_trees(src.path(), dst.path()), "");

  auto checked = send({"--to", r.to(), "--json", "--checksum", (src / "same.bin").string(),
                       (src / "sneaky.bin").string()});
  ASSERT_EQ(checked.exit_code, 0) << checked.err;
  EXPECT_EQ(json_u64(checked.out, "unchanged"), 1u) << checked.out;
  EXPECT_EQ(json_u64(checked.out, "files"), 1u) << checked.out;
  EXPECT_EQ(compare_trees(src.path(), dst.path()), "");
}

}  // namespace
}  // namespace ackxfer::test
