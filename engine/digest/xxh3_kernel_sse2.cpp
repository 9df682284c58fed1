// XXH3 kernel built for sse2 (compile flags set in engine/CMakeLists.txt).
#define XXH3_KERNEL_NS xxh3_sse2
#include "digest/xxh3_kernel.inc"
