// Process-wide file descriptor limits, set once at start-up.
//
// Growing the kernel's fd table while other threads run costs a synchronize_rcu(): measured
// here at 5-18 ms per doubling, four doublings while a sender opened its first 2,048 files.
// Raising the limit and sizing the table before any thread starts makes every later open()
// cheap (docs/PERFORMANCE.md, "Small files").
#pragma once

namespace ackxfer {

// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit.
unsigned raise_fd_limit();

// Makes the fd table large enough for `fds` descriptors now. Call before starting threads.
void presize_fd_table(unsigned fds);

}  // namespace ackxfer
