// send's progress line text (cli/progress.h): what a person reads while a transfer runs.
#include <gtest/gtest.h>

#include "display.h"
#include "progress.h"

namespace ackxfer::cli {
namespace {

// Totals of a tree counted to its end (TreeTotals is not copyable: filled in place).
void counted_tree(TreeTotals& t, std::uint64_t files, std::uint64_t bytes) {
  t.files = files;
  t.bytes = bytes;
  t.complete = true;
}

TEST(ProgressText, EtaIsMinutesAndSecondsOrHours) {
  EXPECT_EQ(eta_text(0), "0:00");
  EXPECT_EQ(eta_text(7.4), "0:07");
  EXPECT_EQ(eta_text(245), "4:05");
  EXPECT_EQ(eta_text(3723), "1:02:03");
  EXPECT_EQ(eta_text(-5), "0:00");
}

TEST(ProgressText, WithKnownTotalsShowsShareRateAndEta) {
  TreeTotals t;
  counted_tree(t, 5000, 4'000'000'000);
  SendProgress p;
  p.files_done = 1234;
  p.bytes_done = 600'000'000;
  p.bytes_in_flight = 400'000'000;
  p.bytes_sent = 1'200'000'000;  // the rate's figure; not what is done
  EXPECT_EQ(progress_text(p, t, 1e9),
            "1.00 GB of 4.00 GB (25%), 1,234 of 5,000 files, 1.00 GB/s, ETA 0:03");
}

TEST(ProgressText, WhileTheTreeIsStillCountedTotalsAreALowerBoundAndThereIsNoEta) {
  TreeTotals t;
  t.files = 10;
  t.bytes = 2'000'000;
  SendProgress p;
  p.bytes_done = 5'000'000;  // more than counted so far: not capped, not a percentage
  std::string s = progress_text(p, t, 1e6);
  EXPECT_EQ(s, "5.00 MB of at least 2.00 MB, 0 of at least 10 files, 1.00 MB/s");
}

// What is done counts each byte once: bytes sent twice, or sent in one attempt and resumed in
// the next, used to count twice, and a transfer on a flapping link showed 100% long before it
// was. A file just delivered, read apart from its settled bytes, still shows no more than all.
TEST(ProgressText, ResentBytesCountOnceNeverMoreThanTheTotalAndProblemsAreCounted) {
  TreeTotals t;
  counted_tree(t, 2, 1000);
  SendProgress p;
  p.bytes_sent = 1500;  // chunks sent twice
  p.bytes_in_flight = 250;
  p.files_done = 1;
  p.bytes_done = 500;
  p.retries = 2;
  p.files_failed = 1;
  EXPECT_EQ(progress_text(p, t, 0),
            "750 B of 1.00 KB (75%), 1 of 2 files, 0 B/s, 2 retries, 1 failed");
  p.bytes_in_flight = 600;
  EXPECT_EQ(progress_text(p, t, 0).substr(0, 26), "1.00 KB of 1.00 KB (100%),");
}

// Everything sent and no verdict yet: the receiver reading a resumed file back, or flushing
// it, is shown beside the figures that no longer move.
TEST(ProgressText, TheReceiversOwnWorkIsShownWhileItLasts) {
  TreeTotals t;
  counted_tree(t, 1, 4'000'000'000);
  SendProgress p;
  p.bytes_sent = 1'000'000'000;
  p.bytes_in_flight = 4'000'000'000;  // 3 GB of it resumed
  p.receiver_work_done = 1'500'000'000;
  p.receiver_work_total = 3'000'000'000;
  EXPECT_EQ(progress_text(p, t, 0),
            "4.00 GB of 4.00 GB (100%), 0 of 1 file, 0 B/s, receiver working: 1.50 GB of "
            "3.00 GB");
  p.receiver_work_done = 3'000'000'001;  // read apart from its total, a moment ahead of it
  EXPECT_NE(progress_text(p, t, 0).find("receiver working: 3.00 GB of 3.00 GB"), std::string::npos);
  p.receiver_work_done = p.receiver_work_total = 0;
  EXPECT_EQ(progress_text(p, t, 0).find("receiver"), std::string::npos);
}

// --checksum hashes a file whole before naming it: the line shows that, not just 0 B/s.
TEST(ProgressText, HashingBeforeSendingIsShownWhileItLasts) {
  TreeTotals t;
  counted_tree(t, 1, 4'000'000'000);
  SendProgress p;
  p.local_check_done = 500'000'000;
  p.local_check_total = 4'000'000'000;
  EXPECT_EQ(progress_text(p, t, 0),
            "0 B of 4.00 GB (0%), 0 of 1 file, 0 B/s, hashing: 500.00 MB of 4.00 GB");
}

// One file, one retry: not "1 files", "1 retries".
TEST(ProgressText, OneOfAThingIsSingular) {
  TreeTotals t;
  counted_tree(t, 1, 1000);
  SendProgress p;
  p.bytes_in_flight = 1000;
  p.retries = 1;
  EXPECT_EQ(progress_text(p, t, 0), "1.00 KB of 1.00 KB (100%), 0 of 1 file, 0 B/s, 1 retry");
  EXPECT_EQ(counted(0, "file", "files"), "0 files");
  EXPECT_EQ(counted(1, "file", "files"), "1 file");
  EXPECT_EQ(counted(12'345, "retry", "retries"), "12345 retries");
}

}  // namespace
}  // namespace ackxfer::cli
