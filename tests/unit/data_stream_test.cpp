// DataStream as a state machine on the loop test double: frames in, acks out in frame order,
// a dead connection's claim passes to a live one, durable publishes keep the acks in order,
// and connections that have proven nothing are capped, the oldest making room for new ones.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <thread>

#include "fs/partial.h"
#include "protocol/data_frame.h"
#include "protocol/limits.h"
#include "receiver_fixture.h"

namespace ackxfer::test {
namespace {

using namespace std::chrono_literals;

class DataStreamTest : public ReceiverFixture {
 protected:
  // READY's token for `send_line`, on a fresh established session.
  Token open(int s, const std::string& send_line) {
    std::string r = ask(s, send_line);
    EXPECT_TRUE(r.starts_with("READY ")) << r;
    return *Token::from_hex(r.substr(r.find("token=") + 6, 32));
  }
  // SEND <id> <name> of two chunks of `chunk` bytes each; its token.
  Token open_two_chunks(int s, int id, const std::string& name, std::uint64_t chunk) {
    return open(s, "SEND " + std::to_string(id) + " " + name +
                       " size=" + std::to_string(2 * chunk) +
                       " mode=0644 mtime=1.0 chunk=" + std::to_string(chunk) + "\n");
  }
  static std::string header(const Token& t, std::uint64_t offset, std::uint64_t len) {
    std::uint8_t h[kFrameHeaderBytes];
    encode_frame_header(FrameHeader{t, offset, len}, h);
    return std::string(reinterpret_cast<char*>(h), sizeof h);
  }
  static std::string trailer(const std::string& payload) {
    Digest128 d = digest_of(payload.data(), payload.size());
    return std::string(reinterpret_cast<const char*>(d.bytes.data()), d.bytes.size());
  }
  static std::string frame(const Token& t, std::uint64_t offset, const std::string& payload) {
    return header(t, offset, payload.size()) + payload + trailer(payload);
  }
  // The acks sent on `fd` so far, as statuses.
  std::vector<AckStatus> acks(int fd) {
    std::string raw = loop_.take_sent(fd);
    std::vector<AckStatus> out;
    for (std::size_t off = 0; off + kFrameAckBytes <= raw.size(); off += kFrameAckBytes) {
      FrameAck a;
      EXPECT_TRUE(decode_frame_ack(
          std::span<const std::uint8_t, kFrameAckBytes>(
              reinterpret_cast<const std::uint8_t*>(raw.data() + off), kFrameAckBytes),
          a));
      out.push_back(a.status);
    }
    return out;
  }
  // A data connection accepted by this worker (Worker::take_data_connection, which may hand
  // it over to another); returns its fd.
  int take_connection() {
    return connected([this](UniqueFd fd) { worker_->take_data_connection(std::move(fd)); });
  }
  // SEND 1 big of `size` bytes in chunks of `chunk`; the partial it is received into, and
  // that partial's stat.
  static std::string send_big(std::uint64_t size, std::uint64_t chunk) {
    return "SEND 1 big size=" + std::to_string(size) +
           " mode=0644 mtime=1.0 chunk=" + std::to_string(chunk) + "\n";
  }
  fs::path partial_of_big(const char* suffix = ".part") const {
    return dir_ / (partial_base_name("big") + suffix);
  }
  struct stat stat_of_partial() const {
    struct stat st {};
    EXPECT_EQ(::stat(partial_of_big().c_str(), &st), 0);
    return st;
  }
  std::uint64_t allocated_to_partial() const {
    return static_cast<std::uint64_t>(stat_of_partial().st_blocks) * 512;
  }
  // The kept partial of "big" (a new one, or more of one kept before): sends `send_line` (a
  // SEND of "big" in chunks of `chunk` bytes) and `chunks` of its chunks from `first` on, waits
  // until the session's checkpoint journals them, and leaves.
  void keep_partial_of_big(const std::string& send_line, std::uint64_t chunk, std::uint64_t chunks,
                           std::uint64_t first = 0) {
    const fs::path journal = partial_of_big(".journal");
    auto lines = [&] {
      std::string text = read_file(journal);
      return static_cast<std::uint64_t>(std::count(text.begin(), text.end(), '\n'));
    };
    const std::uint64_t want = std::max<std::uint64_t>(lines(), 1) + chunks;  // 1: the header
    int s = session();
    ask(s, "HELLO ackxfer 2\n");
    Token t = open(s, send_line);
    int d = data_connection();
    for (std::uint64_t i = first; i < first + chunks; ++i)
      loop_.feed(d, frame(t, i * chunk, chunk_of_big(i, chunk)));
    EXPECT_EQ(acks(d), std::vector<AckStatus>(chunks, AckStatus::kOk));
    ASSERT_TRUE(loop_.run_until([&] {
      loop_.advance(1'000);
      return lines() >= want;
    }));
    loop_.peer_closes(d);
    loop_.peer_closes(s);
    loop_.advance(5'000);
    ASSERT_TRUE(fs::exists(partial_of_big())) << "kept";
  }
  // keep_partial_of_big() of every chunk, and the read-back memory as an earlier read-back of
  // them all, with the partial as it is now, would have left it.
  void keep_and_remember_partial_of_big(const std::string& send_line, std::uint64_t chunk,
                                        std::uint64_t chunks) {
    keep_partial_of_big(send_line, chunk, chunks);
    if (HasFatalFailure()) return;
    std::vector<JournalEntry> claims;
    for (std::uint32_t i = 0; i < chunks; ++i) {
      const std::string c = chunk_of_big(i, chunk);
      claims.push_back(JournalEntry{i, digest_of(c.data(), c.size())});
    }
    const struct stat st = stat_of_partial();
    timespec started{};
    ASSERT_EQ(clock_gettime(CLOCK_REALTIME, &started), 0);
    started.tv_sec += 10;  // the partial's ctime over a second old when "reading" began
    ASSERT_TRUE(
        ctx_->read_backs.remember(ReadBackMemory::key_of(st, chunk), st, started,
                                  ReadBackProgress{claims_digest(claims, chunks * chunk, chunk),
                                                   static_cast<std::size_t>(chunks)}));
  }
  // One round of a peer that resumes with `send_line` and leaves once READY comes; READY's
  // have= (empty if READY did not come).
  std::string resume_and_leave(const std::string& send_line) {
    int c = session();
    ask(c, "HELLO ackxfer 2\n");
    std::string r = ask_and_wait(c, send_line);
    EXPECT_TRUE(r.starts_with("READY 1 ")) << r;
    loop_.peer_closes(c);
    loop_.advance(5'000);
    auto have = r.find(" have=");
    return have == std::string::npos ? std::string() : r.substr(have);
  }
  static Token token_of(const std::string& ready) {
    return *Token::from_hex(ready.substr(ready.find("token=") + 6, 32));
  }
  // Chunk `i` of "big", as keep_partial_of_big and resume_and_finish send it; the whole file.
  static std::string chunk_of_big(std::uint64_t i, std::uint64_t chunk) {
    return std::string(chunk, static_cast<char>('a' + i % 26));
  }
  static std::string content_of_big(std::uint64_t chunk, std::uint64_t chunks) {
    std::string out;
    for (std::uint64_t i = 0; i < chunks; ++i)
      out += chunk_of_big(i, chunk);
    return out;
  }
  static std::string done_of_big(std::uint64_t chunk, std::uint64_t chunks) {
    std::vector<Digest128> digests;
    for (std::uint64_t i = 0; i < chunks; ++i) {
      const std::string c = chunk_of_big(i, chunk);
      digests.push_back(digest_of(c.data(), c.size()));
    }
    return "DONE 1 xxh3=" + file_digest_from_chunks(digests).hex() + "\n";
  }
  // One round of a sender that resumes with `send_line` (of `chunks` chunks), checks that
  // READY's have= is `have` (unless empty), sends the chunks READY does not say are kept, and
  // DONE (`dones` times at once: a peer repeating itself); what DONE was answered with, up to
  // and including the file's verdict.
  std::string resume_and_finish(const std::string& send_line, std::uint64_t chunk,
                                std::uint64_t chunks, const std::string& have = {}, int dones = 1) {
    int c = session();
    ask(c, "HELLO ackxfer 2\n");
    std::string r = ask_and_wait(c, send_line);
    auto ready = parse_server_line(std::string_view(r).substr(0, r.find('\n')));
    EXPECT_TRUE(ready.ok() && std::holds_alternative<ReadyReply>(ready.value())) << r;
    if (!ready.ok() || !std::holds_alternative<ReadyReply>(ready.value())) return r;
    if (!have.empty()) {
      EXPECT_EQ(r.substr(r.find(" have=")), have);
    }
    const ReadyReply& m = std::get<ReadyReply>(ready.value());
    int d = data_connection();
    std::size_t sent = 0;
    for (std::uint64_t i = 0; i < chunks; ++i) {
      if (std::any_of(m.have.begin(), m.have.end(),
                      [&](const ChunkRange& k) { return k.first <= i && i <= k.last; }))
        continue;
      loop_.feed(d, frame(m.token, i * chunk, chunk_of_big(i, chunk)));
      ++sent;
    }
    EXPECT_EQ(acks(d), std::vector<AckStatus>(sent, AckStatus::kOk));
    std::string lines;
    for (int i = 0; i < dones; ++i)
      lines += done_of_big(chunk, chunks);
    loop_.feed(c, lines);
    std::string verdict;
    EXPECT_TRUE(loop_.run_until([&] {
      verdict += loop_.take_sent(c);
      return verdict.ends_with('\n') && (verdict.find("OK 1") != std::string::npos ||
                                         verdict.find("ERR 1 ") != std::string::npos);
    })) << "no verdict: "
        << verdict;
    loop_.peer_closes(d);
    loop_.peer_closes(c);
    loop_.advance(5'000);
    return verdict;
  }
  // File "f" of a new session (returned), two chunks of `chunk` bytes ('a's, then 'b's): the
  // first arrives, a journal checkpoint's fdatasync fails (EIO), then the second arrives.
  int two_chunks_around_a_failed_flush(std::uint64_t chunk) {
    int s = session();
    ask(s, "HELLO ackxfer 2\n");
    Token t = open_two_chunks(s, 1, "f", chunk);
    int d = data_connection();
    loop_.feed(d, frame(t, 0, std::string(chunk, 'a')));
    EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kOk});
    loop_.fsync_result = -EIO;
    EXPECT_TRUE(loop_.run_until([&] {
      loop_.advance(1'000);  // the session's next checkpoint
      for (const auto& line : log_)
        if (line.find("fdatasync") != std::string::npos) return true;
      return false;
    })) << "no checkpoint failed";
    loop_.fsync_result = 0;
    loop_.feed(d, frame(t, chunk, std::string(chunk, 'b')));
    EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kOk});
    return s;
  }
  std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
};

// A chunk stays claimed by the connection receiving it; another connection's copy is `busy`.
// But a connection that has gone quiet (its sender gave up on it, and its close never came)
// would hold the chunk until its idle timeout: after kStaleClaimMs the claim passes to a
// connection that carries the chunk again, and the quiet one can no longer write into it.
TEST_F(DataStreamTest, AQuietConnectionsClaimPassesToOneThatCarriesTheChunkAgain) {
  const std::uint64_t chunk = kMinChunkBytes;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  Token t = open_two_chunks(s, 1, "f", chunk);
  std::string old_bytes(chunk, 'o'), new_bytes(chunk, 'n'), second(chunk, 's');
  int a = data_connection();
  loop_.feed(a, header(t, 0, chunk) + old_bytes.substr(0, chunk / 2));  // then silence
  int b = data_connection();
  loop_.feed(b, frame(t, 0, new_bytes));
  EXPECT_EQ(acks(b), std::vector<AckStatus>{AckStatus::kBusy});
  loop_.advance(kStaleClaimMs + 500);
  loop_.feed(b, frame(t, 0, new_bytes) + frame(t, chunk, second));
  EXPECT_EQ(acks(b), (std::vector<AckStatus>{AckStatus::kOk, AckStatus::kOk}));
  EXPECT_EQ(ctx_->stats.claims_taken_over.load(), 1u);
  // The quiet one wakes up: its late bytes are refused and its frame called busy.
  loop_.feed(a, old_bytes.substr(chunk / 2) + trailer(old_bytes));
  EXPECT_EQ(acks(a), std::vector<AckStatus>{AckStatus::kBusy});
  Digest128 d0 = digest_of(new_bytes.data(), chunk), d1 = digest_of(second.data(), chunk);
  std::string r =
      ask(s, "DONE 1 xxh3=" + file_digest_from_chunks(std::vector{d0, d1}).hex() + "\n");
  EXPECT_EQ(r, "OK 1\n");
  EXPECT_EQ(read_file(dir_ / "f"), new_bytes + second);
}

TEST_F(DataStreamTest, AnUnknownTokenIsRefusedAndTheConnectionClosed) {
  int d = data_connection();
  loop_.feed(d, frame(Token::random(), 0, "hello"));
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kUnknownToken});
  EXPECT_EQ(worker_->object_count(), 1u);  // only the housekeeper: the connection is gone
}

// A peer that starts a frame, sends a byte and CANCELs the file gets its open-file place back at
// once: the data connection must not keep the file (its temp file's fd and its place in the
// receiver's open-file budget) until the rest of the frame comes, or the peer could hold any
// number of files beyond its window by cancelling each and sitting on its connections.
TEST_F(DataStreamTest, AConnectionLetsGoOfAFileCancelledUnderItsFrame) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  std::vector<int> sitting;
  for (int i = 1; i <= 3; ++i) {
    Token t = open(s, "SEND " + std::to_string(i) + " f" + std::to_string(i) +
                          " size=100 mode=0644 mtime=1.0 chunk=65536\n");
    int d = data_connection();
    loop_.feed(d, header(t, 0, 100) + "x");
    EXPECT_TRUE(ask(s, "CANCEL " + std::to_string(i) + "\n")
                    .starts_with("ERR " + std::to_string(i) + " cancelled "));
    sitting.push_back(d);
  }
  loop_.advance(1'500);  // one tick
  EXPECT_EQ(ctx_->open_files.load(), 0u);
  // The rest of each frame is read and dropped: the file is gone, and the connection serves on.
  loop_.feed(sitting[0], std::string(99, 'x') + trailer(std::string(100, 'x')));
  EXPECT_EQ(acks(sitting[0]), std::vector<AckStatus>{AckStatus::kUnknownToken});
  EXPECT_FALSE(fs::exists(dir_ / "f1"));
}

// Space is reserved for a chunk by declaration: the first at SEND, each later one at its frame's
// header. A peer that gets one byte journaled (so the partial is kept for resuming), declares
// two more chunks and leaves must not leave a partial holding those chunks' space until the
// receiver next starts: the kept partial holds what its journal vouches for, no more.
TEST_F(DataStreamTest, AKeptPartialHoldsOnlyTheSpaceItsJournalVouchesFor) {
  const std::uint64_t chunk = 1 << 20;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  Token t = open(s, send_big(3 * chunk + 1, chunk));
  int d = data_connection();
  loop_.feed(d, frame(t, 3 * chunk, "z"));  // the last chunk, one byte
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kOk});
  const fs::path part = partial_of_big();
  const fs::path journal = partial_of_big(".journal");
  ASSERT_TRUE(loop_.run_until([&] {
    loop_.advance(1'000);  // the session's next checkpoint journals it
    return fs::exists(journal) && fs::file_size(journal) > 0 && [&] {
      std::ifstream in(journal);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      return std::count(text.begin(), text.end(), '\n') >= 2;  // header and the chunk
    }();
  }));
  int d1 = data_connection(), d2 = data_connection();
  loop_.feed(d1, header(t, chunk, chunk));
  loop_.feed(d2, header(t, 2 * chunk, chunk));
  if (allocated_to_partial() < 2 * chunk) GTEST_SKIP() << "this file system reserves nothing ahead";
  loop_.peer_closes(d1);
  loop_.peer_closes(d2);
  loop_.peer_closes(s);
  loop_.advance(5'000);
  ASSERT_TRUE(fs::exists(part)) << "kept for resuming";
  EXPECT_LE(allocated_to_partial(), 64u * 1024) << "more than the journaled byte's block";
}

// An attempt that writes nothing into a resumed partial leaves it untouched, so that its
// read-back stays remembered (below). But a partial can hold more than its journal vouches for
// when a receiver was killed before it gave an attempt's reservations back: the first such
// attempt gives them back (once: the next leaves the partial as it is).
TEST_F(DataStreamTest, AResumedPartialGivesBackReservationsAReceiverKilledLeftOnce) {
  const std::uint64_t chunk = 1 << 20;
  const std::string send = send_big(4 * chunk, chunk);
  const fs::path part = partial_of_big();
  keep_partial_of_big(send, chunk, 1);
  if (HasFatalFailure()) return;
  // What a killed receiver's reservations for chunks 1 to 3 look like.
  {
    int fd = ::open(part.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    const bool reserved = ::fallocate(fd, 0, chunk, 3 * chunk) == 0;
    ::close(fd);
    if (!reserved || allocated_to_partial() < 4 * chunk)
      GTEST_SKIP() << "this file system reserves nothing ahead";
  }
  resume_and_leave(send);
  const struct stat after = stat_of_partial();
  EXPECT_LE(static_cast<std::uint64_t>(after.st_blocks) * 512, chunk + (64 << 10))
      << "the reservations outlived the attempt";
  resume_and_leave(send);
  const struct stat again = stat_of_partial();
  EXPECT_EQ(std::pair(again.st_ctim.tv_sec, again.st_ctim.tv_nsec),
            std::pair(after.st_ctim.tv_sec, after.st_ctim.tv_nsec))
      << "the partial was changed again";
}

// A reopened partial is not written to at SEND, its first chunk not reserved then either: when
// its frame comes, it is (it must not be taken as reserved at SEND, as a fresh file's is).
TEST_F(DataStreamTest, AResumedPartialReservesItsFirstChunkAtItsFrame) {
  const std::uint64_t chunk = 1 << 20;
  const std::string send = send_big(3 * chunk, chunk);
  const fs::path part = partial_of_big();
  keep_partial_of_big(send, chunk, 1, 1);  // chunk 1 only
  if (HasFatalFailure()) return;
  ASSERT_LT(allocated_to_partial(), 2 * chunk) << "chunk 0 holds space before the test";
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const std::string r = ask_and_wait(s, send);
  ASSERT_TRUE(r.starts_with("READY 1 ")) << r;
  EXPECT_NE(r.find(" have=1\n"), std::string::npos) << r;
  int d = data_connection();
  loop_.feed(d, header(token_of(r), 0, chunk));
  struct statfs sfs {};
  if (::statfs(part.c_str(), &sfs) == 0 && sfs.f_type == TMPFS_MAGIC)
    GTEST_SKIP() << "tmpfs: the receiver reserves nothing ahead there";
  EXPECT_GE(allocated_to_partial(), 2 * chunk) << "the first chunk was not reserved at its frame";
}

// A resumed file's kept chunks are read back before it is published, not before READY. A peer
// that resumed and left over and over had the receiver read the whole partial back every
// round; remembering a read-back while the partial stayed unchanged stopped that only for a
// peer that wrote nothing: one that wrote a chunk into the partial each round (64 KiB sent)
// still had it all read back (up to the journal's limit of about 100,000 chunks) every round.
// Now nothing is read until a DONE has verified the whole file by its digests.
TEST_F(DataStreamTest, APeerThatResumesAndLeavesHasNothingReadBackHoweverItWrites) {
  const std::uint64_t chunk = 1 << 20, chunks = 5;
  const std::string send = send_big(chunks * chunk, chunk);
  keep_partial_of_big(send, chunk, 1);
  if (HasFatalFailure()) return;
  auto read_back = [&] { return ctx_->stats.bytes_read_back.load(); };
  EXPECT_EQ(resume_and_leave(send), " have=0\n");
  EXPECT_EQ(read_back(), 0u);
  // Each round writes one more chunk, has it journaled, and leaves.
  for (std::uint64_t i = 1; i < chunks - 1; ++i) {
    keep_partial_of_big(send, chunk, 1, i);
    if (HasFatalFailure()) return;
    EXPECT_EQ(read_back(), 0u) << "round " << i;
  }
  EXPECT_EQ(resume_and_leave(send), " have=0-3\n");
  EXPECT_EQ(read_back(), 0u);
  // The file finished: its four kept chunks are read back once, then it is published.
  EXPECT_EQ(resume_and_finish(send, chunk, chunks), "OK 1\n");
  EXPECT_EQ(read_back(), 4 * chunk);
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, chunks));
  EXPECT_FALSE(fs::exists(partial_of_big()));
}

// A kept chunk that no longer is what its journal says (a disk error, or anyone writing into
// the partial) is caught at DONE: the file is not published, the journal forgets that chunk
// (and journals the ones this attempt delivered), and the answer is a retryable mismatch. The
// sender's next attempt resumes without that chunk, sends it, and the file arrives whole.
TEST_F(DataStreamTest, AKeptChunkChangedOnDiskIsCaughtAtDoneAndSentAgain) {
  const std::uint64_t chunk = 1 << 20, chunks = 3;
  const std::string send = send_big(chunks * chunk, chunk);
  keep_partial_of_big(send, chunk, 2);
  if (HasFatalFailure()) return;
  {
    std::fstream f(partial_of_big(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('x');  // chunk 0 is no longer what its journal says
  }
  const std::string verdict = resume_and_finish(send, chunk, chunks);
  EXPECT_TRUE(verdict.starts_with("ERR 1 mismatch ")) << verdict;
  EXPECT_NE(verdict.find("no longer match"), std::string::npos) << verdict;
  EXPECT_TRUE(is_retryable(ErrorCode::kMismatch));
  EXPECT_FALSE(fs::exists(dir_ / "big")) << "published with a chunk that changed on disk";
  ASSERT_TRUE(fs::exists(partial_of_big())) << "kept for the next attempt";
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 2 * chunk);
  // The next attempt: chunk 0 is missing, chunk 2 (delivered by the attempt above) is kept.
  EXPECT_EQ(resume_and_finish(send, chunk, chunks, " have=1-2\n"), "OK 1\n");
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, chunks));
  EXPECT_FALSE(fs::exists(partial_of_big()));
}

// A DONE whose digest is not the file's reads nothing back: the digests already say no.
TEST_F(DataStreamTest, ADoneWithTheWrongDigestReadsNothingBack) {
  const std::uint64_t chunk = 1 << 20;
  const std::string send = send_big(2 * chunk, chunk);
  keep_partial_of_big(send, chunk, 1);
  if (HasFatalFailure()) return;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const std::string r = ask_and_wait(s, send);
  ASSERT_EQ(r.substr(r.find(" have=")), " have=0\n");
  int d = data_connection();
  loop_.feed(d, frame(token_of(r), chunk, chunk_of_big(1, chunk)));
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kOk});
  const std::string verdict = ask_and_wait(s, "DONE 1 xxh3=" + std::string(32, '0') + "\n");
  EXPECT_TRUE(verdict.starts_with("ERR 1 mismatch ")) << verdict;
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 0u);
  EXPECT_FALSE(fs::exists(dir_ / "big"));
}

// A second DONE while the first is answered (its kept chunks read back) is a line out of
// order, said about the session: it used to get `ERR 1 unknown-id` ("no open file has id 1")
// for a file that was open and then got its verdict too, two final replies for one id.
TEST_F(DataStreamTest, ASecondDoneWhileTheFirstIsAnsweredIsABadLineAndTheFileGoesOn) {
  const std::uint64_t chunk = 1 << 20, chunks = 3;
  const std::string send = send_big(chunks * chunk, chunk);
  keep_partial_of_big(send, chunk, 2);
  if (HasFatalFailure()) return;
  const auto errors = ctx_->stats.protocol_errors.load();
  EXPECT_EQ(resume_and_finish(send, chunk, chunks, " have=0-1\n", 2),
            "ERR - bad-line DONE 1 again, while its first DONE is being answered\nOK 1\n");
  EXPECT_EQ(ctx_->stats.protocol_errors.load(), errors + 1);
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 2 * chunk) << "read back once";
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, chunks));
}

// Kept chunks the read-back memory vouches for, with the partial unchanged from SEND to DONE,
// are not read again: the file is published at once.
TEST_F(DataStreamTest, ARememberedPartialUnchangedSinceSendIsNotReadAgain) {
  const std::uint64_t chunk = 1 << 20, chunks = 2;
  const std::string send = send_big(chunks * chunk, chunk);
  keep_and_remember_partial_of_big(send, chunk, chunks);
  if (HasFatalFailure()) return;
  EXPECT_EQ(resume_and_finish(send, chunk, chunks, " have=0-1\n"), "OK 1\n");
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 0u);
  EXPECT_EQ(ctx_->stats.read_backs_remembered.load(), 1u);
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, chunks));
}

// ... but what the memory vouched for at SEND holds only while the partial stays as it was
// then. A chunk changed between SEND and DONE (by anyone: the sender hashes its kept chunks
// before DONE, so the window can be long) was published unread, and the memory saved under the
// changed partial went on vouching for it. Now DONE reads every claim again.
TEST_F(DataStreamTest, AKeptChunkChangedAfterSendIsCaughtThoughRemembered) {
  const std::uint64_t chunk = 1 << 20, chunks = 2;
  const std::string send = send_big(chunks * chunk, chunk);
  keep_and_remember_partial_of_big(send, chunk, chunks);
  if (HasFatalFailure()) return;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const std::string r = ask_and_wait(s, send);
  ASSERT_EQ(r.substr(r.find(" have=")), " have=0-1\n");
  {
    std::fstream f(partial_of_big(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('x');
  }
  const std::string verdict = ask_and_wait(s, done_of_big(chunk, chunks));
  EXPECT_TRUE(verdict.starts_with("ERR 1 mismatch ")) << verdict;
  EXPECT_FALSE(fs::exists(dir_ / "big")) << "published with a chunk changed after SEND";
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 2 * chunk);
  EXPECT_EQ(ctx_->stats.read_backs_remembered.load(), 0u);
}

// A sender may send a kept chunk again: it is verified as it arrives, and not read back.
TEST_F(DataStreamTest, AKeptChunkReceivedAgainIsNotReadBack) {
  const std::uint64_t chunk = 1 << 20;
  const std::string send = send_big(2 * chunk, chunk);
  keep_partial_of_big(send, chunk, 2);
  if (HasFatalFailure()) return;
  {
    std::fstream f(partial_of_big(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('x');  // chunk 0 changed on disk; the sender sends it again anyway
  }
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const std::string r = ask_and_wait(s, send);
  ASSERT_EQ(r.substr(r.find(" have=")), " have=0-1\n");
  int d = data_connection();
  loop_.feed(d, frame(token_of(r), 0, chunk_of_big(0, chunk)));
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kOk});
  EXPECT_EQ(ask_and_wait(s, done_of_big(chunk, 2)), "OK 1\n");
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), chunk) << "chunk 1 only";
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, 2));
}

// A peer that sends DONE for a big kept partial and leaves while it is read back: each attempt
// would start reading from the first chunk again. How far a read-back got is remembered after
// each slice (while nothing changes the partial), and the next attempt reads only the rest.
// Meanwhile the sender hears PROGRESS, or it would give up on a long read-back.
TEST_F(DataStreamTest, AReadBackCutShortGoesOnWhereItStopped) {
  const std::uint64_t chunk = 1 << 20, chunks = 64;  // four slices of kLocalWorkSliceBytes
  static_assert(kLocalWorkSliceBytes == 16 << 20);
  const std::string send = send_big(chunks * chunk, chunk);
  keep_partial_of_big(send, chunk, chunks);
  if (HasFatalFailure()) return;
  std::this_thread::sleep_for(2'050ms);  // remembered only when last changed a second before
  auto read_back = [&] { return ctx_->stats.bytes_read_back.load(); };
  // The work queue's two threads, held so that the read-back goes one slice at a time: one
  // waits for the end of the test; the other takes turns with the read-back and waits for a
  // step each turn (owners take turns slice by slice).
  struct Gate {
    std::atomic<int> turns{0}, steps{0};
    std::atomic<bool> open{false};
  };
  auto gate = std::make_shared<Gate>();
  struct Opener {  // however the test ends, or the fixture's work queue never stops
    std::shared_ptr<Gate> gate;
    ~Opener() { gate->open = true; }
  } opener{gate};
  ctx_->work.submit(
      [gate] {
        while (!gate->open)
          std::this_thread::sleep_for(1ms);
        return false;
      },
      &gate->open);
  ctx_->work.submit(
      [gate] {
        ++gate->turns;
        while (!gate->open && gate->steps == 0)
          std::this_thread::sleep_for(1ms);
        if (!gate->open) --gate->steps;
        return !gate->open;
      },
      &gate->turns);
  auto wait_for = [](const std::function<bool()>& done) {
    for (int i = 0; i < 10'000 && !done(); ++i)
      std::this_thread::sleep_for(1ms);
    return done();
  };
  ASSERT_TRUE(wait_for([&] { return gate->turns == 1; }));
  // Resume (every chunk kept: nothing to send), DONE, and leave once one slice is read.
  int c = session();
  ask(c, "HELLO ackxfer 2 features=progress\n");
  const std::string r = ask_and_wait(c, send);
  ASSERT_EQ(r.substr(r.find(" have=")), " have=0-63\n");
  EXPECT_EQ(read_back(), 0u);
  loop_.feed(c, done_of_big(chunk, chunks));
  ++gate->steps;
  ASSERT_TRUE(wait_for([&] { return gate->turns == 2; }));
  EXPECT_EQ(read_back(), kLocalWorkSliceBytes);
  loop_.advance(1'000);
  EXPECT_EQ(loop_.take_sent(c), "PROGRESS 1 done=" + std::to_string(kLocalWorkSliceBytes) +
                                    " total=" + std::to_string(chunks * chunk) + "\n");
  loop_.peer_closes(c);
  loop_.advance(5'000);
  gate->open = true;
  // The session's end kept the partial and cancelled the read-back, whose job holds an fd on
  // the partial until it is gone: wait for that, then see that it read nothing more.
  EXPECT_EQ(ctx_->stats.partials_kept.load(), 2u);
  const fs::path part = fs::canonical(partial_of_big());
  ASSERT_TRUE(wait_for([&] {
    std::size_t open_on_part = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      if (fs::read_symlink(e.path(), ec) == part) ++open_on_part;
    }
    return open_on_part == 0;
  }));
  EXPECT_EQ(read_back(), kLocalWorkSliceBytes) << "the read-back went on after its session";
  // The next attempt reads the rest only, and publishes the file.
  EXPECT_EQ(resume_and_finish(send, chunk, chunks), "OK 1\n");
  EXPECT_EQ(read_back(), chunks * chunk) << "a chunk was read back twice";
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, chunks));
}

// A peer that sends DONE for a resumed file and then CANCEL, or BYE, while its kept chunks wait
// to be read back: answered at once, the read-back never runs, nothing is published, and the
// partial goes (the sender said it is done with the file, or with the session).
TEST_F(DataStreamTest, ACancelOrByeWhileKeptChunksWaitToBeReadBackEndsTheFile) {
  const std::uint64_t chunk = 1 << 20, chunks = 2;
  const std::string send = send_big(chunks * chunk, chunk);
  for (const std::string line : {"CANCEL 1\n", "BYE\n"}) {
    SCOPED_TRACE(line);
    keep_partial_of_big(send, chunk, chunks);
    if (HasFatalFailure()) return;
    const fs::path part = fs::canonical(partial_of_big());
    // Both of the work queue's threads held: the read-back waits in the queue.
    auto open = std::make_shared<std::atomic<bool>>(false);
    auto held = std::make_shared<std::atomic<int>>(0);
    struct Opener {  // however the test ends, or the fixture's work queue never stops
      std::shared_ptr<std::atomic<bool>> open;
      ~Opener() { *open = true; }
    } opener{open};
    for (int t = 0; t < 2; ++t)
      ctx_->work.submit(
          [open, held] {
            ++*held;
            while (!*open)
              std::this_thread::sleep_for(1ms);
            return false;
          },
          t == 0 ? static_cast<const void*>(open.get()) : held.get());  // a thread each
    ASSERT_TRUE(loop_.run_until([&] { return *held == 2; }));
    int c = session();
    ask(c, "HELLO ackxfer 2\n");
    const std::string r = ask_and_wait(c, send);
    ASSERT_EQ(r.substr(r.find(" have=")), " have=0-1\n");
    loop_.feed(c, done_of_big(chunk, chunks));
    const std::string answer = ask(c, line);
    EXPECT_TRUE(answer.starts_with(line == "BYE\n" ? "BYE files=0" : "ERR 1 cancelled ")) << answer;
    *open = true;
    // The job goes without reading (its fd on the partial with it).
    ASSERT_TRUE(loop_.run_until([&] {
      std::size_t open_on_part = 0;
      for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        if (fs::read_symlink(e.path(), ec) == part) ++open_on_part;
      }
      return open_on_part == 0;
    }));
    EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 0u);
    EXPECT_FALSE(fs::exists(part)) << "the partial stayed";
    EXPECT_FALSE(fs::exists(dir_ / "big"));
    loop_.peer_closes(c);
    loop_.advance(5'000);
  }
}

// Every chunk of a file verified, but its temp file grown beyond them (a reservation from an
// earlier transfer of the same name, given up as this one took the partial over and truncated
// it, landing after): what lies beyond the declared size was never checked. The file was
// published with it; it now fails at DONE and leaves nothing.
TEST_F(DataStreamTest, ATempFileLongerThanDeclaredIsNotPublished) {
  const std::uint64_t chunk = 1 << 20;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  Token t = open_two_chunks(s, 1, "big", chunk);
  const std::string a(chunk, 'a'), b(chunk, 'b');
  int d = data_connection();
  loop_.feed(d, frame(t, 0, a) + frame(t, chunk, b));
  EXPECT_EQ(acks(d), (std::vector<AckStatus>{AckStatus::kOk, AckStatus::kOk}));
  const fs::path part = partial_of_big();
  ASSERT_TRUE(fs::exists(part));
  fs::resize_file(part, 3 * chunk);
  const Digest128 chunks[] = {digest_of(a.data(), a.size()), digest_of(b.data(), b.size())};
  std::string r = ask(s, "DONE 1 xxh3=" + file_digest_from_chunks(chunks).hex() + "\n");
  EXPECT_TRUE(r.starts_with("ERR 1 ")) << r;
  EXPECT_NE(r.find("its temp file holds 3145728 bytes, not the 2097152 declared"),
            std::string::npos)
      << r;
  EXPECT_FALSE(fs::exists(dir_ / "big"));
  EXPECT_FALSE(fs::exists(part));
  // Sent again, it is published whole.
  t = open_two_chunks(s, 2, "big", chunk);
  loop_.feed(d, frame(t, 0, a) + frame(t, chunk, b));
  EXPECT_EQ(acks(d), (std::vector<AckStatus>{AckStatus::kOk, AckStatus::kOk}));
  EXPECT_EQ(ask(s, "DONE 2 xxh3=" + file_digest_from_chunks(chunks).hex() + "\n"), "OK 2\n");
  EXPECT_EQ(read_file(dir_ / "big"), a + b);
}

// A checkpoint's fdatasync fails (a disk error while writing back). The error is reported once:
// a later fsync passes, and the bytes may never reach the disk. The file used to be published
// anyway (and, with --fsync, called durable); it now fails at DONE and leaves nothing.
TEST_F(DataStreamTest, AFileWhoseDataCouldNotBeFlushedIsNotPublished) {
  const std::uint64_t chunk = 65536;
  const int s = two_chunks_around_a_failed_flush(chunk);
  const std::string a(chunk, 'a'), b(chunk, 'b');
  const Digest128 chunks[] = {digest_of(a.data(), a.size()), digest_of(b.data(), b.size())};
  std::string r = ask(s, "DONE 1 xxh3=" + file_digest_from_chunks(chunks).hex() + "\n");
  EXPECT_TRUE(r.starts_with("ERR 1 ")) << r;
  EXPECT_NE(r.find("flushing its data to disk failed"), std::string::npos) << r;
  EXPECT_FALSE(fs::exists(dir_ / "f"));
  for (const auto& e : fs::directory_iterator(dir_))
    ADD_FAILURE() << "left behind: " << e.path();
}

// A flush error is reported once: a later fdatasync can pass with the data lost. The journal
// went on recording chunks as durable after that, so a kept partial could vouch for bytes
// that never reached the disk. After a failed flush it records nothing more.
TEST_F(DataStreamTest, AfterAFailedFlushTheJournalVouchesForNothingMore) {
  const std::uint64_t chunk = 65536;
  two_chunks_around_a_failed_flush(chunk);
  for (int i = 0; i < 5; ++i) {  // checkpoints whose fdatasync passes
    loop_.advance(1'000);
    loop_.run_until([] { return false; }, 20);
  }
  const std::string journal = read_file(dir_ / (partial_base_name("f") + ".journal"));
  EXPECT_EQ(std::count(journal.begin(), journal.end(), '\n'), 1) << "more than its header:\n"
                                                                 << journal;
}

// A refused connection whose peer never reads the ack that says why: gone within kMaxClosingMs
// and a tick, not at --idle-timeout.
TEST_F(DataStreamTest, ARefusedConnectionWhosePeerNeverReadsIsGoneByTheClosingDeadline) {
  int d = data_connection();
  loop_.set_reading(d, false);
  loop_.feed(d, frame(Token::random(), 0, "hello"));
  EXPECT_EQ(worker_->object_count(), 2u);  // the housekeeper and the connection, its ack stuck
  loop_.advance(kMaxClosingMs + 1'500);
  EXPECT_EQ(worker_->object_count(), 1u);
}

// Reading stops while kMaxPendingAckBytes of acks wait, but only between receive buffers: one
// buffer of 65-byte frames from a peer that never reads made some 640 KB of acks. Past
// kMaxUnreadAckBytes the connection is closed as not reading them; a sender's window of frames
// (2,048 one-chunk files) stays well within it.
TEST_F(DataStreamTest, AConnectionThatNeverReadsItsAcksHoldsABoundedAmountOfThem) {
  const std::uint64_t chunk = 65536;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const Token t = open(s, "SEND 1 f size=" + std::to_string(chunk + 1) +
                              " mode=0644 mtime=1.0 chunk=" + std::to_string(chunk) + "\n");
  const std::string one = header(t, chunk, 1) + "x" + std::string(16, '\0');  // a wrong digest
  auto mismatches = [&] { return ctx_->stats.chunk_digest_mismatches.load(); };
  // A window's worth, unread: kept open.
  int d = data_connection();
  loop_.set_reading(d, false);
  std::string window;
  for (int i = 0; i < 2048; ++i)
    window += one;
  loop_.feed(d, window);
  EXPECT_EQ(mismatches(), 2048u);
  EXPECT_EQ(ctx_->stats.protocol_errors.load(), 0u);
  EXPECT_EQ(worker_->object_count(), 3u);  // the housekeeper, the session, the connection
  // A megabyte of them, unread: closed once kMaxUnreadAckBytes wait, the rest not parsed.
  int e = data_connection();
  loop_.set_reading(e, false);
  std::string flood;
  while (flood.size() + one.size() <= (1u << 20))
    flood += one;
  loop_.feed(e, flood);
  const std::uint64_t parsed = mismatches() - 2048;
  EXPECT_LE(parsed, kMaxUnreadAckBytes / kFrameAckBytes + 1);
  EXPECT_GT(parsed, kMaxUnreadAckBytes / kFrameAckBytes - 1024) << "at the limit, not before";
  EXPECT_EQ(ctx_->stats.protocol_errors.load(), 1u);  // its warning is past this second's share
  loop_.advance(kMaxClosingMs + 1'500);
  EXPECT_EQ(worker_->object_count(), 3u) << "the flooding connection is gone, the other stays";
}

// recv --fsync: a one-chunk file's `published` ack waits until the file is on stable storage,
// and the acks of the frames behind it wait with it: acks stay in frame order.
TEST_F(DataStreamTest, WithFsyncAPublishedAckWaitsForTheFlushAndKeepsItsPlace) {
  make_receiver([](ReceiverOptions& o) { o.fsync = true; });
  const std::uint64_t chunk = kMinChunkBytes;
  int s = session();
  std::string hello = ask(s, "HELLO ackxfer 2\n");
  EXPECT_NE(hello.find(" durable=1"), std::string::npos) << hello;
  Token small = open(s, "SEND 1 small size=5 mode=0644 mtime=1.0 chunk=65536\n");
  Token big = open_two_chunks(s, 2, "big", chunk);
  int d = data_connection();
  loop_.feed(d, frame(small, 0, "12345") + frame(big, 0, std::string(chunk, 'b')));
  std::vector<AckStatus> got;
  ASSERT_TRUE(loop_.run_until([&] {
    for (AckStatus a : acks(d))
      got.push_back(a);
    return got.size() == 2;
  }));
  EXPECT_EQ(got, (std::vector<AckStatus>{AckStatus::kPublished, AckStatus::kOk}));
  EXPECT_EQ(read_file(dir_ / "small"), "12345");
}

// With --fsync, a resumed file goes from its read-back to the durable publisher, and its OK
// waits for both.
TEST_F(DataStreamTest, WithFsyncAResumedFileIsReadBackThenPublishedDurably) {
  make_receiver([](ReceiverOptions& o) { o.fsync = true; });
  const std::uint64_t chunk = 1 << 20, chunks = 3;
  const std::string send = send_big(chunks * chunk, chunk);
  keep_partial_of_big(send, chunk, 2);
  if (HasFatalFailure()) return;
  EXPECT_EQ(resume_and_finish(send, chunk, chunks, " have=0-1\n"), "OK 1\n");
  EXPECT_EQ(ctx_->stats.bytes_read_back.load(), 2 * chunk);
  EXPECT_EQ(read_file(dir_ / "big"), content_of_big(chunk, chunks));
  EXPECT_FALSE(fs::exists(partial_of_big()));
}

// Data connections that have not yet carried a frame for an open file cost the receiver an fd
// each and prove nothing: at most kMaxUnprovenDataConnections are held at once, and beyond
// that the oldest of them makes room for the newcomer. A peer that opens connections and sits
// on them used to keep every sender's data connections out until its own timed out.
TEST_F(DataStreamTest, ConnectionsThatProveNothingAreCappedOldestFirst) {
  ctx_->max_unproven_data_connections = 4;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  // A sender's connection that has proven itself is never made to room for anyone.
  int busy = data_connection();
  loop_.feed(busy, frame(open(s, "SEND 1 a size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "aaaaa"));
  EXPECT_EQ(acks(busy), std::vector<AckStatus>{AckStatus::kPublished});
  std::vector<int> sitting;
  for (int i = 0; i < 4; ++i)
    sitting.push_back(data_connection());
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 4u);
  // A fifth unproven one: the oldest sitting one goes, and the newcomer carries its file.
  int fresh = data_connection();
  loop_.run();
  EXPECT_EQ(ctx_->stats.data_connections_evicted.load(), 1u);
  EXPECT_EQ(ctx_->stats.data_connections_refused.load(), 0u);
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 4u);
  EXPECT_EQ(ctx_->data_connections.load(), 5u);  // busy, three sitting, fresh
  loop_.feed(fresh,
             frame(open(s, "SEND 2 b size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "bbbbb"));
  EXPECT_EQ(acks(fresh), std::vector<AckStatus>{AckStatus::kPublished});
  EXPECT_EQ(read_file(dir_ / "b"), "bbbbb");
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 3u);
  // The evicted one was the oldest: the other three are still there, and still served.
  loop_.feed(sitting[1],
             frame(open(s, "SEND 3 c size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "ccccc"));
  EXPECT_EQ(acks(sitting[1]), std::vector<AckStatus>{AckStatus::kPublished});
  // Ten more that sit: each pushes out the oldest sitting one, never a proven connection.
  for (int i = 0; i < 10; ++i)
    data_connection();
  loop_.run();
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 4u);
  EXPECT_EQ(ctx_->data_connections.load(), 7u);  // busy, fresh, sitting[1], four new
  loop_.feed(busy, frame(open(s, "SEND 4 d size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "ddddd"));
  EXPECT_EQ(acks(busy), std::vector<AckStatus>{AckStatus::kPublished});
}

// What a peer can make the receiver warn about once per frame (here a digest mismatch, 65
// bytes a frame) is logged at most Worker::kPeerWarningsPerSecond times a second per worker,
// the rest summed up in one line at the next tick, and a long name is cut short. Each such
// frame for a file with a long name that needs escaping used to log a line of up to 16 KB.
TEST_F(DataStreamTest, APeerCannotFloodTheLogWithWarnings) {
  const std::string component(250, '\x01');
  const std::string raw = component + "/" + component + "/" + component;
  std::string wire;
  for (char c : raw)
    wire += c == '\x01' ? std::string("\\x01") : std::string(1, c);
  const std::uint64_t chunk = 65536;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const Token t = open(s, "SEND 1 " + wire + " size=" + std::to_string(chunk + 1) +
                              " mode=0644 mtime=1.0 chunk=" + std::to_string(chunk) + "\n");
  int d = data_connection();
  const std::size_t before = warnings_.size();
  const int frames = 100;
  std::string bad;
  for (int i = 0; i < frames; ++i)
    bad += header(t, chunk, 1) + "x" + std::string(16, '\0');  // a wrong trailer
  loop_.feed(d, bad);
  EXPECT_EQ(acks(d), std::vector<AckStatus>(frames, AckStatus::kBadDigest));
  EXPECT_EQ(ctx_->stats.chunk_digest_mismatches.load(), static_cast<std::uint64_t>(frames));
  std::size_t logged = 0;
  for (std::size_t i = before; i < warnings_.size(); ++i) {
    EXPECT_LT(warnings_[i].size(), 1500u) << "the name cut short";
    logged += warnings_[i].find("digest mismatch") != std::string::npos;
  }
  EXPECT_EQ(logged, Worker::kPeerWarningsPerSecond);
  EXPECT_NE(warnings_.back().find("(752 bytes)"), std::string::npos) << warnings_.back();
  loop_.advance(1'000);  // the tick sums up the rest
  const std::string rest =
      std::to_string(frames - Worker::kPeerWarningsPerSecond) + " more warnings";
  EXPECT_TRUE(std::any_of(warnings_.begin() + static_cast<std::ptrdiff_t>(before), warnings_.end(),
                          [&](const std::string& w) { return w.starts_with(rest); }))
      << warnings_.back();
  // The next second has its own allowance.
  loop_.feed(d, header(t, chunk, 1) + "x" + std::string(16, '\0'));
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kBadDigest});
  EXPECT_NE(warnings_.back().find("digest mismatch"), std::string::npos) << warnings_.back();
}

// A one-chunk file published by its data stream keeps its temp file's fd and its place in the
// receiver's open-file budget until its session forgets it. Sessions used to forget such files
// only on reaching their credit (up to 2,048): with the budget full of them (half the fd
// limit), SEND got `busy` in the session holding them and in every other, for good.
TEST_F(DataStreamTest, FilesPublishedByTheirFramesLetGoOfTheirOpenFilePlaces) {
  ctx_->max_open_files = 3;
  int a = session();
  ask(a, "HELLO ackxfer 2\n");
  int d = data_connection();
  auto deliver = [&](int s, int id) {
    const std::string name = "f" + std::to_string(id);
    const std::string r = ask(
        s, "SEND " + std::to_string(id) + " " + name + " size=1 mode=0644 mtime=1.0 chunk=65536\n");
    if (!r.starts_with("READY ")) return r;
    loop_.feed(d, frame(token_of(r), 0, "x"));
    EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kPublished});
    return std::string("published");
  };
  for (int id = 1; id <= 3; ++id)
    EXPECT_EQ(deliver(a, id), "published");
  EXPECT_EQ(ctx_->open_files.load(), 3u) << "each still held by the session";
  // The session that holds them makes room for itself.
  EXPECT_EQ(deliver(a, 4), "published");
  // Another session finds the budget taken by the first one's finished files: busy, until the
  // first one's next tick lets go of them.
  int b = session();
  ask(b, "HELLO ackxfer 2\n");
  EXPECT_EQ(deliver(a, 5), "published");
  EXPECT_EQ(deliver(a, 6), "published");
  EXPECT_TRUE(deliver(b, 1).starts_with("ERR 1 busy")) << "the budget is full";
  loop_.advance(1'000);
  EXPECT_EQ(ctx_->open_files.load(), 0u);
  EXPECT_EQ(deliver(b, 2), "published");
}

// A CANCEL for a one-chunk file whose frame was acknowledged `published`: the ack was its
// verdict and nothing is left to cancel, as a DONE for it is told. It used to be answered
// "cancelled by the sender; nothing was published" about a file that had been published.
TEST_F(DataStreamTest, ACancelForAOneChunkFileAlreadyPublishedSaysSo) {
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  int d = data_connection();
  loop_.feed(d, frame(open(s, "SEND 1 a size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "aaaaa"));
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kPublished});
  const std::string r = ask(s, "CANCEL 1\n");
  EXPECT_TRUE(r.starts_with("ERR 1 unknown-id ")) << r;
  EXPECT_NE(r.find("was already finished when its frame was verified"), std::string::npos) << r;
  EXPECT_EQ(read_file(dir_ / "a"), "aaaaa");
  // The id is free again, as after any verdict.
  loop_.feed(d, frame(open(s, "SEND 1 b size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "bbbbb"));
  EXPECT_EQ(acks(d), std::vector<AckStatus>{AckStatus::kPublished});
}

// At the receiver's limit of data connections in all, a newcomer takes the place of the one
// that has been quiet longest (one that has proven nothing before any), if it has received
// nothing for kStaleClaimMs. One token proves any number of connections: a peer that sent a
// frame header into each and then a byte now and then, within its idle deadline, used to hold
// every place for as long as it liked, and every sender's new data connections were closed at
// once. Connections that are moving data are never made to room.
TEST_F(DataStreamTest, AtTheLimitInAllTheQuietestConnectionMakesRoom) {
  ctx_->max_data_connections = 3;
  const std::uint64_t chunk = 65536;
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  const Token t = open_two_chunks(s, 1, "f", chunk);
  // The peer's three: chunk 0, chunk 1, chunk 0 again (busy: read and dropped), a byte each.
  std::vector<int> held;
  for (std::uint64_t c : {0, 1, 0}) {
    held.push_back(data_connection());
    loop_.feed(held.back(), header(t, c * chunk, chunk) + "x");
    loop_.advance(500);
  }
  loop_.feed(held[0], "x");  // a byte more: held[1] is now the quietest
  EXPECT_EQ(ctx_->data_connections.load(), 3u);
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 0u);
  // All three received bytes within the last 2 s: none makes room, the newcomer is refused.
  data_connection();
  EXPECT_EQ(ctx_->stats.data_connections_refused.load(), 1u);
  EXPECT_EQ(ctx_->stats.data_connections_displaced.load(), 0u);
  // 2 s later a sender's connection comes: held[1], the quietest, makes room.
  loop_.advance(2'000);
  int sender = data_connection();
  EXPECT_EQ(ctx_->stats.data_connections_refused.load(), 1u);
  EXPECT_EQ(ctx_->stats.data_connections_displaced.load(), 1u);
  EXPECT_EQ(ctx_->data_connections.load(), 3u);
  loop_.feed(sender, frame(t, chunk, std::string(chunk, 'b')));
  EXPECT_EQ(acks(sender), std::vector<AckStatus>{AckStatus::kOk});
  // Another newcomer, which proves nothing: held[2] is the quietest now, not the sender.
  loop_.advance(100);
  int sitting = data_connection();
  EXPECT_EQ(ctx_->stats.data_connections_displaced.load(), 2u);
  loop_.feed(held[0], "x");
  loop_.feed(sender, frame(t, chunk, std::string(chunk, 'b')));  // again: still served
  EXPECT_EQ(acks(sender), std::vector<AckStatus>{AckStatus::kOk});
  // At the limit, one that has proven nothing goes before any that has, however quiet.
  loop_.advance(100);
  int last = data_connection();
  EXPECT_EQ(ctx_->stats.data_connections_evicted.load(), 1u);
  EXPECT_EQ(ctx_->stats.data_connections_displaced.load(), 2u);
  EXPECT_TRUE(acks(sitting).empty());
  EXPECT_EQ(ctx_->data_connections.load(), 3u);  // held[0], the sender, the newest
  // Of quiet connections, one that owes its sender acks it has not read yet goes last: the
  // sender, its ack unread, is now quieter than `last`, which owes none.
  loop_.set_reading(sender, false);
  loop_.feed(sender, frame(t, chunk, std::string(chunk, 'b')));
  loop_.feed(last, frame(t, chunk, std::string(chunk, 'b')));
  EXPECT_EQ(acks(last), std::vector<AckStatus>{AckStatus::kOk});
  loop_.feed(held[0], "x");
  loop_.advance(2'500);
  data_connection();
  EXPECT_EQ(ctx_->stats.data_connections_displaced.load(), 3u);
  loop_.set_reading(sender, true);
  loop_.run();
  EXPECT_EQ(acks(sender), std::vector<AckStatus>{AckStatus::kOk}) << "still there, its ack sent";
}

// recv --threads N: an accepted data connection goes to the worker holding the fewest (this
// one when it is among them), so that a session's streams do not all land on one worker by
// the luck of SO_REUSEPORT's hash. Handed-over connections count at once; connections that
// go away, and refused ones, count no more.
TEST_F(DataStreamTest, DataConnectionsGoToTheWorkerHoldingTheFewest) {
  ASSERT_EQ(worker_->index(), 0u);
  ctx_->load = std::vector<ReceiverContext::WorkerLoad>(2);
  std::vector<int> handed;
  ctx_->hand_over = [&](unsigned i, UniqueFd fd, ReceiverContext::Handed what) {
    EXPECT_EQ(i, 1u);
    EXPECT_EQ(what, ReceiverContext::Handed::kData);
    handed.push_back(fd.get());
    peers_.push_back(fd.release());  // closed at the end
  };
  // Not spreading yet (the other loops are not running): everything stays.
  take_connection();
  EXPECT_EQ(ctx_->load[0].data.load(), 1u);
  ctx_->spreading = true;
  take_connection();  // the other worker holds none: it gets this one
  EXPECT_EQ(handed.size(), 1u);
  EXPECT_EQ(ctx_->load[1].data.load(), 1u);
  int kept = take_connection();  // level: this worker keeps it
  EXPECT_EQ(handed.size(), 1u);
  take_connection();  // 2 against 1
  EXPECT_EQ(handed.size(), 2u);
  EXPECT_EQ(ctx_->load[0].data.load(), 2u);
  EXPECT_EQ(ctx_->load[1].data.load(), 2u);
  EXPECT_EQ(ctx_->data_connections.load(), 2u);  // the handed ones count where they arrive
  // One of ours goes: the next one is ours again.
  loop_.peer_closes(kept);
  loop_.run();
  EXPECT_EQ(ctx_->load[0].data.load(), 1u);
  take_connection();
  EXPECT_EQ(handed.size(), 2u);
  EXPECT_EQ(ctx_->load[0].data.load(), 2u);
  // A handed-over connection arriving here is not counted twice; a refused one not at all.
  ctx_->load[0].data += 1;  // as the other worker would, handing it over
  auto [mine, peer] = tcp_pair();
  peers_.push_back(peer);
  worker_->adopt_data_connection(UniqueFd(mine), /*handed=*/true);
  loop_.run();
  EXPECT_EQ(ctx_->load[0].data.load(), 3u);
  EXPECT_EQ(ctx_->data_connections.load(), 3u);
  ctx_->max_unproven_data_connections = 0;  // no unproven one may stay: refused
  ctx_->spreading = false;
  take_connection();
  EXPECT_EQ(ctx_->stats.data_connections_refused.load(), 1u);
  EXPECT_EQ(ctx_->load[0].data.load(), ctx_->data_connections.load());
}

// At the limit of data connections that have proven nothing, a newcomer that lands on a worker
// holding none of them would find nothing to make room for it and be refused, while the other
// worker holds them all: a peer's silent connections on one worker would keep every sender's
// new connections on the other out. It goes to the worker holding the most such connections
// instead; a worker that holds some keeps its newcomers and makes room itself.
TEST_F(DataStreamTest, AtTheUnprovenLimitANewcomerGoesWhereOneCanMakeRoom) {
  ctx_->load = std::vector<ReceiverContext::WorkerLoad>(3);
  ctx_->max_unproven_data_connections = 3;
  ctx_->spreading = true;
  std::vector<std::pair<unsigned, int>> handed;
  ctx_->hand_over = [&](unsigned i, UniqueFd fd, ReceiverContext::Handed what) {
    EXPECT_EQ(what, ReceiverContext::Handed::kData);
    handed.emplace_back(i, fd.get());
    peers_.push_back(fd.release());  // closed at the end
  };
  // Workers 1 and 2 hold the receiver's three unproven connections (as their loops would have
  // counted them); this one holds a proven one, so it is the least loaded.
  int s = session();
  ask(s, "HELLO ackxfer 2\n");
  int busy = data_connection();
  loop_.feed(busy, frame(open(s, "SEND 1 a size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "aaaaa"));
  EXPECT_EQ(acks(busy), std::vector<AckStatus>{AckStatus::kPublished});
  EXPECT_EQ(ctx_->load[0].data.load(), 1u);
  EXPECT_EQ(ctx_->load[0].unproven.load(), 0u);
  ctx_->load[1].data = ctx_->load[1].unproven = 1;
  ctx_->load[2].data = ctx_->load[2].unproven = 2;
  ctx_->unproven_data_connections += 3;
  ctx_->data_connections += 3;
  take_connection();
  ASSERT_EQ(handed.size(), 1u);
  EXPECT_EQ(handed[0].first, 2u) << "to the worker holding the most unproven connections";
  EXPECT_EQ(ctx_->load[2].data.load(), 3u);
  EXPECT_EQ(ctx_->stats.data_connections_refused.load(), 0u);
  // Below the limit, the fewest data connections decide again: worker 1 once this one holds
  // more than it (on a tie this one keeps the newcomer).
  ctx_->unproven_data_connections -= 1;
  ctx_->load[0].data += 1;
  take_connection();
  ASSERT_EQ(handed.size(), 2u);
  EXPECT_EQ(handed[1].first, 1u);
  ctx_->load[0].data -= 1;
  // Level again, this worker keeps the next one, which sits: the limit is reached. At the limit
  // with an unproven connection of its own, this worker keeps the newcomer and closes its own
  // oldest: nothing is handed over.
  take_connection();
  EXPECT_EQ(ctx_->load[0].unproven.load(), 1u);
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 3u);
  int fresh = take_connection();
  EXPECT_EQ(handed.size(), 2u);
  EXPECT_EQ(ctx_->stats.data_connections_evicted.load(), 1u);
  EXPECT_EQ(ctx_->load[0].unproven.load(), 1u);
  EXPECT_EQ(ctx_->unproven_data_connections.load(), 3u);
  // The newcomer proves itself; then nobody anywhere holds an unproven connection (the other
  // workers' went the same way) while the count says the limit is reached: refused here.
  loop_.feed(fresh,
             frame(open(s, "SEND 2 b size=5 mode=0644 mtime=1.0 chunk=65536\n"), 0, "bbbbb"));
  EXPECT_EQ(acks(fresh), std::vector<AckStatus>{AckStatus::kPublished});
  EXPECT_EQ(ctx_->load[0].unproven.load(), 0u);
  ctx_->load[1].unproven = 0;
  ctx_->load[2].unproven = 0;
  ctx_->unproven_data_connections = 3;
  take_connection();
  EXPECT_EQ(handed.size(), 2u);
  EXPECT_EQ(ctx_->stats.data_connections_refused.load(), 1u);
}

}  // namespace
}  // namespace ackxfer::test
