// Frame header, trailer and ack encoding.
#include "protocol/data_frame.h"

#include <cstring>

namespace ackxfer {
namespace {

void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
void put64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = v << 8 | p[i];
  return v;
}
std::uint16_t get16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}
std::uint64_t get64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = v << 8 | p[i];
  return v;
}

std::uint64_t header_check(const std::uint8_t* p) {
  Digest128 d = digest_of(p, 40);
  return get64(d.bytes.data());
}

}  // namespace

const char* ack_status_name(AckStatus s) {
  switch (s) {
    case AckStatus::kOk:
      return "ok";
    case AckStatus::kBadDigest:
      return "bad-digest";
    case AckStatus::kBusy:
      return "busy";
    case AckStatus::kWriteFailed:
      return "write-failed";
    case AckStatus::kUnknownToken:
      return "unknown-token";
    case AckStatus::kBadRange:
      return "bad-range";
    case AckStatus::kProtocol:
      return "protocol-error";
    case AckStatus::kPublished:
      return "published";
    case AckStatus::kPublishFailed:
      return "publish-failed";
  }
  return "unknown-status";
}

void encode_frame_header(const FrameHeader& h, std::uint8_t out[kFrameHeaderBytes]) {
  put32(out, kFrameMagic);
  put32(out + 4, 0);  // flags, reserved
  std::memcpy(out + 8, h.token.bytes.data(), 16);
  put64(out + 24, h.offset);
  put64(out + 32, h.length);
  put64(out + 40, header_check(out));
}

DecodeResult decode_frame_header(std::span<const std::uint8_t, kFrameHeaderBytes> in,
                                 FrameHeader& out) {
  const std::uint8_t* p = in.data();
  if (get32(p) != kFrameMagic) return DecodeResult::kBadMagic;
  if (get64(p + 40) != header_check(p)) return DecodeResult::kBadCheck;
  if (get32(p + 4) != 0) return DecodeResult::kBadFlags;
  std::memcpy(out.token.bytes.data(), p + 8, 16);
  out.offset = get64(p + 24);
  out.length = get64(p + 32);
  return DecodeResult::kOk;
}

void encode_frame_ack(const FrameAck& a, std::uint8_t out[kFrameAckBytes]) {
  put32(out, kAckMagic);
  put16(out + 4, static_cast<std::uint16_t>(a.status));
  put16(out + 6, a.error);
  std::memcpy(out + 8, a.token.bytes.data(), 16);
  put64(out + 24, a.offset);
  put64(out + 32, 0);
}

bool decode_frame_ack(std::span<const std::uint8_t, kFrameAckBytes> in, FrameAck& out) {
  const std::uint8_t* p = in.data();
  if (get32(p) != kAckMagic) return false;
  std::uint16_t s = get16(p + 4);
  if (s > static_cast<std::uint16_t>(AckStatus::kPublishFailed)) return false;
  if (get64(p + 32) != 0) return false;
  out.status = static_cast<AckStatus>(s);
  out.error = get16(p + 6);
  std::memcpy(out.token.bytes.data(), p + 8, 16);
  out.offset = get64(p + 24);
  return true;
}

}  // namespace ackxfer
