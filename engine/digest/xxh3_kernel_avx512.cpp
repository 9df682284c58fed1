// XXH3 kernel built for avx512 (compile flags set in engine/CMakeLists.txt).
#define XXH3_KERNEL_NS xxh3_avx512
#include "digest/xxh3_kernel.inc"
