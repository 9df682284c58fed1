// Every limit and deadline either side enforces on its peer, in one place. Each has a named
// error or behaviour (docs/PROTOCOL.md, "Limits") and a unit or integration test that crosses
// it. Tuning constants that no peer can notice (buffer sizes, batch sizes) stay with their code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ackxfer {

// 2: TLS 1.3 replaced the AUTH exchange (docs/SECURITY.md); HELLO has data= instead of
// nonce= and proof=.
inline constexpr int kProtocolVersion = 2;
inline constexpr const char* kProtocolName = "ackxfer";

// Control lines. A path may be escaped to 4x its size (\xHH per byte), plus verb and fields.
inline constexpr std::size_t kMaxPathBytes = 4095;      // decoded, like PATH_MAX - 1
inline constexpr std::size_t kMaxComponentBytes = 255;  // NAME_MAX
inline constexpr std::size_t kMaxLineBytes = 4 * kMaxPathBytes + 512;
inline constexpr std::size_t kMaxFieldsPerLine = 16;
inline constexpr std::size_t kMaxFeatures = 32;  // names in one features= field

// Symlink targets (LINK): bytes kept verbatim, never resolved by the receiver.
inline constexpr std::size_t kMaxLinkTargetBytes = 4095;  // decoded; symlink(2)'s PATH_MAX - 1
// A LINK carries two escaped byte strings (path and target). Together they get the room one
// escaped path has, so a LINK line fits the same line limit as every other line.
inline constexpr std::size_t kMaxLinkEscapedBytes = 4 * kMaxPathBytes;

// Numbers.
inline constexpr std::uint64_t kMaxFileBytes = std::uint64_t{1} << 50;  // 1 PiB
inline constexpr std::uint64_t kMaxFileId = (std::uint64_t{1} << 53) - 1;
inline constexpr std::uint32_t kMaxMode = 07777;
inline constexpr std::int64_t kMaxMtimeSeconds = std::int64_t{1} << 40;  // ~35,000 years

// Chunks: a file is carried as ceil(size / chunk) frames, each with its own digest.
inline constexpr std::uint64_t kMinChunkBytes = 64 * 1024;
inline constexpr std::uint64_t kMaxChunkBytes = std::uint64_t{1} << 36;  // 64 GiB
inline constexpr std::uint64_t kMaxChunksPerFile = 16384;
inline constexpr std::uint64_t kDefaultChunkBytes = 8 * 1024 * 1024;

// ---- Receiver: per session ----
// Files open (SENT, no verdict yet) at once. A session starts with kInitialOpenFiles and earns
// one more per file that reaches its verdict, up to kMaxOpenFilesPerSession: what a session may
// hold (fds, temp files, reserved space) grows with what it has delivered, not with what it
// declares. Senders that negotiate `credit` are told each raise (CREDIT); older ones keep the
// initial figure announced as max-open. Beyond it: `too-many-open`.
inline constexpr std::size_t kInitialOpenFiles = 64;
inline constexpr std::size_t kMaxOpenFilesPerSession = 2048;
// Bytes received and not yet handled (a flood of pipelined lines): reading pauses beyond it.
inline constexpr std::size_t kMaxUnhandledInputBytes = 128 * 1024;
// recv --fsync: replies (MKDIR, LINK) waiting for a flush, each holding a job and for a new
// directory an fd until its batch is durable; a session's further lines wait beyond it.
inline constexpr std::size_t kMaxDurableRepliesPerSession = 256;
// Replies queued for a peer that does not read them: its lines wait and reading pauses beyond
// it (a few thousand replies: plenty of pipelining for a sender that reads them).
inline constexpr std::size_t kMaxQueuedReplyBytes = 256 * 1024;
// Directory metadata kept for BYE (each distinct MKDIR path once): beyond this much memory
// (DirectoryMetadata::cost, about 230 bytes for a 30-byte path: some 145,000 directories), the
// rest is not kept (a warning in the receiver's log).
inline constexpr std::size_t kMaxDirMetadataBytes = 32 << 20;

// ---- Receiver: in total ----
// Buffers (unhandled input, queued replies, TLS channels) of the control sessions that have
// said HELLO, across the receiver: once they hold this much, a session holding more than
// kSessionBufferFloor is not read from until the total is below it again. Sessions that buffer
// little are never held up. Connections that have not said HELLO are counted apart, so that
// connecting and sitting (within --max-sessions) stops nobody else reading.
inline constexpr std::size_t kMaxSessionBuffersTotal = 256 << 20;
inline constexpr std::size_t kSessionBufferFloor = 64 * 1024;
// Encrypted data connections' full-size ciphertext buffers (256 KiB a connection, granted once
// it carried a frame for an open file) across the receiver: beyond this, a connection keeps the
// record-size buffer it handshook with (one record at a time: slower, never stuck). Without it
// one sender with the key could make the receiver hold 16,384 x 256 KiB.
inline constexpr std::size_t kMaxTlsDataBuffersTotal = 256 << 20;
// Directory metadata of all sessions together (kMaxDirMetadataBytes each), and what they
// remember of the directories they created: beyond it, new paths' modes and mtimes are not
// kept (warned, as beyond a session's own budget). Without it, many sessions each naming
// their share of directories could hold gigabytes between them.
inline constexpr std::size_t kMaxDirMetadataBytesTotal = 256 << 20;
// Temp files open across all sessions, as a share of the process's fd limit: beyond it, SEND
// gets `busy` (the sender backs off and tries again).
inline constexpr unsigned kOpenFilesShareOfFdLimit = 2;  // 1/2 of RLIMIT_NOFILE
inline constexpr std::size_t kMaxOpenFilesTotal = 1 << 20;
// Data connections: at most this many in all, and of those at most kMaxUnprovenDataConnections
// that have not yet carried a frame for a file some session opened. Beyond either, a newcomer
// takes the place of one the worker it lands on holds: the oldest that proved nothing, or, at
// the limit in all, a proven one that has received nothing for kStaleClaimMs
// (Worker::adopt_data_connection); it is closed at once if that worker holds no such one.
inline constexpr std::size_t kMaxDataConnections = 16384;
inline constexpr std::size_t kMaxUnprovenDataConnections = 1024;
// Control sessions that have not said HELLO (a TLS handshake in progress holds up to about
// 60 KiB), in all: beyond this (or --max-sessions, if lower) the oldest of them makes room for
// a newcomer. Anyone can open connections; under --max-sessions alone, 16,384 of them could make
// the receiver hold 1.1 GiB. A sender says HELLO within its first round trips, so only a flood
// of this many new connections within one handshake's time could push a sender out (it tries
// again within --retry-for). `recv --max-handshakes` sets it, up to kMaxHandshakesOption.
inline constexpr std::size_t kMaxSessionsAwaitingHello = 4096;
inline constexpr std::size_t kMaxHandshakesOption = 1 << 20;
// recv --legacy: files waiting for their turn (READY) per client address, and in all.
inline constexpr std::size_t kMaxLegacyQueuedPerAddress = 64;
inline constexpr std::size_t kMaxLegacyUploads = 4096;

// ---- Deadlines (milliseconds) ----
// A connection must speak up this soon (or within the idle timeout, if shorter): a control
// connection its HELLO (then AUTH, if asked), a data connection its first frame header.
inline constexpr std::int64_t kFirstLineTimeoutMs = 10'000;
// A closing session is gone this long after it decided to close, whether or not the peer
// reads its last reply.
inline constexpr std::int64_t kMaxClosingMs = 3'000;
// Of that, how long the last reply may wait for the peer's own close after it went out.
inline constexpr std::int64_t kLingerMs = 1'000;
// A control session's turn of its worker's loop (lines handled, directory metadata applied
// after BYE) ends after this long, so that a peer whose every line costs milliseconds (paths
// through in-tree links to deep directories) holds the other sessions up by a few at most.
// A turn lasts over kSessionTurnMs - 1 before it can end so (the clock counts milliseconds).
inline constexpr std::int64_t kSessionTurnMs = 5;
// Local work on the receiver's work queue (skip=xxh3 checks, kept partials read back) is done
// in slices of this many bytes, so that every session's work moves; a read-back cut short is
// remembered as far as its last slice got.
inline constexpr std::uint64_t kLocalWorkSliceBytes = 16 << 20;
// recv --legacy: a client that got READY must connect to the data port within this time; a
// SEND without a newline is taken as whole after this much silence.
inline constexpr std::int64_t kLegacyConnectTimeoutMs = 30'000;
inline constexpr std::int64_t kLegacyLineQuietMs = 200;
// A chunk claimed by a data connection that has received nothing for this long may be taken
// over by another connection carrying the same chunk (the first one is dead or abandoned).
inline constexpr std::int64_t kStaleClaimMs = 2'000;
// While one side does long local work for a file (hashing, reading back, flushing), it tells
// the other side with PROGRESS at most this often, so neither mistakes it for silence.
inline constexpr std::int64_t kProgressIntervalMs = 1'000;
// The sender: the receiver must answer HELLO (and AUTH) this soon after the connection is up,
// and a TCP connect must complete within kConnectTimeoutMs.
inline constexpr std::int64_t kHelloTimeoutMs = 10'000;
inline constexpr std::int64_t kConnectTimeoutMs = 10'000;
// The sender backs off a chunk the receiver calls busy: from kBusyFirstDelayMs, doubling, up to
// kBusyMaxDelayMs between tries, for at most its idle timeout in all.
inline constexpr std::int64_t kBusyFirstDelayMs = 50;
inline constexpr std::int64_t kBusyMaxDelayMs = 2'000;

// ---- Data connections ----
inline constexpr std::size_t kMaxPendingAckBytes = 64 * 1024;  // receiver stops reading past it
// Reading stops between receive buffers, and one buffer (1 MiB) of 65-byte frames makes 640 KB
// of acks: a connection whose unsent acks pass this, within one buffer, is closed as not
// reading them. A sender has at most a window of frames in flight (2,048 one-chunk files:
// 80 KB of acks), and the kernel's socket buffers take acks before any wait here.
inline constexpr std::size_t kMaxUnreadAckBytes = 4 * kMaxPendingAckBytes;

// ---- Sender ----
inline constexpr int kMaxFileAttempts = 3;  // whole-file sends of one file
inline constexpr int kMaxChunkAttempts =
    8;  // sends of one chunk (digest mismatch, lost connection)
inline constexpr std::uint64_t kMaxWindowBytes = std::uint64_t{1}
                                                 << 30;  // declared sizes in flight

}  // namespace ackxfer
