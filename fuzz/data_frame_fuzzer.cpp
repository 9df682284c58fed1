// libFuzzer target: the data-frame header and ack decoders. Any 48 (or 40) bytes decode or are
// refused; whatever decodes re-encodes to exactly the same bytes; a header whose check field does
// not match its other 40 bytes is never accepted.
//
//   build-fuzz/fuzz/data_frame_fuzzer fuzz/corpus/frame -max_total_time=60
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "protocol/data_frame.h"

using namespace ackxfer;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size >= kFrameHeaderBytes) {
    FrameHeader h;
    std::span<const std::uint8_t, kFrameHeaderBytes> in(data, kFrameHeaderBytes);
    if (decode_frame_header(in, h) == DecodeResult::kOk) {
      std::uint8_t again[kFrameHeaderBytes];
      encode_frame_header(h, again);
      // Reserved flags are refused, so a header that decodes re-encodes to the same bytes.
      if (std::memcmp(again, data, kFrameHeaderBytes) != 0) std::abort();
    }
  }
  if (size >= kFrameAckBytes) {
    FrameAck a;
    std::span<const std::uint8_t, kFrameAckBytes> in(data, kFrameAckBytes);
    if (decode_frame_ack(in, a)) {
      std::uint8_t again[kFrameAckBytes];
      encode_frame_ack(a, again);
      if (std::memcmp(again, data, kFrameAckBytes) != 0) std::abort();
    }
  }
  return 0;
}
