// bench/bench_common.hpp: what the translation units of moe-bench share: the headers (with GCC 12's AVX-512
// diagnostic fence), the thread count, the last-level cache size the cold-weight rotations are sized for.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

// GCC 12.2 (Debian 12) warns inside its own avx512fintrin.h when Eigen's GEMM transposes AVX-512 registers
// (_mm512_undefined_ps initialises itself; GCC PR 105593, fixed in 12.3). The diagnostic state is looked up
// where the intrinsics are defined, so the intrinsics header alone is included under the switch.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12 && (defined(__x86_64__) || defined(__i386__))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <Eigen/Core>
#include <moe/moe.hpp>

#include "synthetic_layer.hpp"

#ifdef _OPENMP
#include <omp.h>
#define BENCH_OMP(directive) _Pragma(#directive)
#else
#define BENCH_OMP(directive)
#endif

namespace bench {

using moe::Index;
inline constexpr double kGiga = 1e9;

// The VM this was written on hides its cache topology (no sysfs cache entries, and sysconf's L3 figure,
// 508 MiB, is not what one CCD's cores share), so the size is a Zen 5 CCD's 32 MiB unless
// MOE_BENCH_LLC_MIB says otherwise.
inline double last_level_cache_bytes() {
  static const double bytes = [] {
    const char* env = std::getenv("MOE_BENCH_LLC_MIB");
    const double mib = env != nullptr && std::atof(env) > 0 ? std::atof(env) : 32.0;
    return mib * 1024 * 1024;
  }();
  return bytes;
}

inline int thread_count() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace bench
