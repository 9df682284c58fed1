// XXH3 kernel built for avx2 (compile flags set in engine/CMakeLists.txt).
#define XXH3_KERNEL_NS xxh3_avx2
#include "digest/xxh3_kernel.inc"
