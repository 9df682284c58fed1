// Every protocol limit in one place. Each has a named error reply (docs/PROTOCOL.md, "Limits")
// and a unit or integration test that crosses it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ackxfer {

inline constexpr int kProtocolVersion = 1;
inline constexpr const char* kProtocolName = "ackxfer";

// Control lines. A path may be escaped to 4x its size (\xHH per byte), plus verb and fields.
inline constexpr std::size_t kMaxPathBytes = 4095;      // decoded, like PATH_MAX - 1
inline constexpr std::size_t kMaxComponentBytes = 255;  // NAME_MAX
inline constexpr std::size_t kMaxLineBytes = 4 * kMaxPathBytes + 512;
inline constexpr std::size_t kMaxFieldsPerLine = 16;

// Symlink targets (LINK): bytes kept verbatim, never resolved by the receiver.
inline constexpr std::size_t kMaxLinkTargetBytes = 4095;  // decoded; symlink(2)'s PATH_MAX - 1
// A LINK carries two escaped byte strings (path and target). Together they get the room one
// escaped path has, so a LINK line fits the same line limit as every other line: a receiver that
// predates LINK then answers unknown-verb instead of closing on line-too-long. Plain ASCII always
// fits (2 x 4,095 bytes); only very long names made mostly of escaped bytes reach it.
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

// Per session.
inline constexpr std::size_t kMaxOpenFilesPerSession = 2048;  // SENT but not yet OK/ERR
inline constexpr std::size_t kMaxDirsPerSession = 1 << 20;    // directory metadata kept to BYE

// Data connections.
inline constexpr std::size_t kMaxPendingAckBytes = 64 * 1024;  // receiver stops reading past it

}  // namespace ackxfer
