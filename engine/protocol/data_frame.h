// Binary framing on data connections (docs/PROTOCOL.md, "Data connections"): pure encode and
// decode of the fixed-size frame header, trailer and ack. Little-endian integers.
//
//   sender -> receiver:  FrameHeader (48 B) | payload (length B) | digest (16 B, XXH3-128)
//   receiver -> sender:  FrameAck (40 B), one per frame, in frame order
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "digest/digest.h"
#include "protocol/token.h"

namespace ackxfer {

inline constexpr std::uint32_t kFrameMagic = 0x31445841;  // "AXD1"
inline constexpr std::uint32_t kAckMagic = 0x31415841;    // "AXA1"
inline constexpr std::size_t kFrameHeaderBytes = 48;
inline constexpr std::size_t kFrameTrailerBytes = 16;
inline constexpr std::size_t kFrameAckBytes = 40;

struct FrameHeader {
  Token token;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend bool operator==(const FrameHeader&, const FrameHeader&) = default;
};

enum class AckStatus : std::uint16_t {
  kOk = 0,            // payload written and its digest matched
  kBadDigest = 1,     // digest mismatch: the chunk was discarded, send it again
  kBusy = 2,          // the chunk is being received on another connection: try later
  kWriteFailed = 3,   // the receiver could not write it (errno in the ack)
  kUnknownToken = 4,  // no open file has this token (closed, published or never issued)
  kBadRange = 5,      // offset/length do not name one whole chunk of the file
  kProtocol = 6,      // malformed header; the receiver closes the connection
  // For a file of exactly one chunk, verifying its frame verifies the file: the receiver
  // publishes it right away and answers with one of these instead of kOk (no DONE follows).
  kPublished = 7,      // verified and published under its final name
  kPublishFailed = 8,  // verified, but publishing failed (errno in the ack)
};
const char* ack_status_name(AckStatus s);

struct FrameAck {
  AckStatus status = AckStatus::kOk;
  std::uint16_t error = 0;  // errno for kWriteFailed
  Token token;
  std::uint64_t offset = 0;
  friend bool operator==(const FrameAck&, const FrameAck&) = default;
};

// The header ends with XXH3-64 of its first 40 bytes, so a corrupted header is caught before
// its length field desynchronises the stream.
void encode_frame_header(const FrameHeader& h, std::uint8_t out[kFrameHeaderBytes]);
// Flags are reserved and must be 0: features are negotiated in HELLO, so a frame with flags set
// comes from a peer that does not speak this version (and re-encoding could not reproduce it).
enum class DecodeResult { kOk, kBadMagic, kBadCheck, kBadFlags };
DecodeResult decode_frame_header(std::span<const std::uint8_t, kFrameHeaderBytes> in,
                                 FrameHeader& out);

void encode_frame_ack(const FrameAck& a, std::uint8_t out[kFrameAckBytes]);
// Refuses an unknown status and a non-zero reserved field.
bool decode_frame_ack(std::span<const std::uint8_t, kFrameAckBytes> in, FrameAck& out);

}  // namespace ackxfer
