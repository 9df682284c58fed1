// Digests of bytes already on disk: the chunks a resumed transfer does not send again, and the
// whole-file comparison of `send --checksum`. Plain blocking reads: callers run these off the
// network loops or accept the stall (see their comments).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

#include "digest/digest.h"

namespace ackxfer {

// XXH3-128 of [offset, offset + length) of `fd`. nullopt (errno set) on a read error or when
// the file ends early (errno ENODATA).
std::optional<Digest128> chunk_digest_of(int fd, std::uint64_t offset, std::uint64_t length);

// The file digest (docs/PROTOCOL.md, "Digests") of the first `size` bytes of `fd` cut into
// chunks of `chunk` bytes. `cancel`, if given, is checked between chunks (errno ECANCELED).
std::optional<Digest128> file_digest_of(int fd, std::uint64_t size, std::uint64_t chunk,
                                        const std::atomic<bool>* cancel = nullptr);

}  // namespace ackxfer
