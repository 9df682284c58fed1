// MappedRange and the SIGBUS guard around reads of a mapping.
#include "fs/mapped_range.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

namespace ackxfer {
namespace {

// Touching a page of a mapping past the end of a file that shrank raises SIGBUS. While a
// thread hashes from a mapping it arms this jump buffer; the handler jumps back and hash()
// reports the short file. SIGBUS anywhere else goes to whatever handler was there before.
thread_local sigjmp_buf* t_guard = nullptr;
struct sigaction g_previous;

void on_sigbus(int sig, siginfo_t* info, void* ctx) {
  if (sigjmp_buf* jb = t_guard) {
    t_guard = nullptr;
    siglongjmp(*jb, 1);
  }
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, info, ctx);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  // Default action: re-raise with the default disposition.
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

void install_guard_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

// Separate function so the setjmp frame holds no locals the compiler could keep in registers.
__attribute__((noinline)) bool hash_guarded(StreamingDigest& digest, const std::uint8_t* p,
                                            std::size_t len) {
  sigjmp_buf jb;
  if (sigsetjmp(jb, 1) != 0) return false;  // the file shrank under the mapping
  t_guard = &jb;
  digest.update(p, len);
  t_guard = nullptr;
  return true;
}

}  // namespace

int MappedRange::map(int fd, std::uint64_t offset, std::uint64_t length) {
  unmap();
  install_guard_once();
  static const std::uint64_t page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  std::uint64_t start = offset / page * page;
  map_len_ = static_cast<std::size_t>(offset - start + length);
  // MAP_POPULATE maps every page now, in one pass, instead of one fault per few pages while
  // hashing; the pages are in the page cache already or are read ahead here.
  void* p =
      mmap(nullptr, map_len_, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, static_cast<off_t>(start));
  if (p == MAP_FAILED) {
    map_len_ = 0;
    return errno;
  }
  base_ = p;
  data_ = static_cast<const std::uint8_t*>(p) + (offset - start);
  offset_ = offset;
  length_ = length;
  return 0;
}

void MappedRange::unmap() {
  if (base_) munmap(base_, map_len_);
  base_ = nullptr;
  data_ = nullptr;
  map_len_ = 0;
  offset_ = length_ = 0;
}

bool MappedRange::hash(StreamingDigest& digest, std::uint64_t pos, std::size_t len) const {
  return hash_guarded(digest, data_ + pos, len);
}

}  // namespace ackxfer
