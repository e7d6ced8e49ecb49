// moe/config.hpp: version, compile-time switches, Dynamic, and the error type.
#pragma once

#include <cstddef>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "target.hpp"

#define MOE_VERSION_MAJOR 0
#define MOE_VERSION_MINOR 1
#define MOE_VERSION_PATCH 0

// MOE_DONT_PARALLELIZE: define to run single-threaded even when compiled with OpenMP (like
// EIGEN_DONT_PARALLELIZE). Without OpenMP the library is single-threaded and just as correct.
#if defined(_OPENMP) && !defined(MOE_DONT_PARALLELIZE)
#define MOE_HAS_OPENMP 1
#else
#define MOE_HAS_OPENMP 0
#endif

// MOE_DONT_VECTORIZE: define to force the scalar kernels even where xsimd has a SIMD architecture
// (useful to cross-check the SIMD path, or on targets where xsimd's code generation misbehaves).

// MOE_NO_FINITE_CHECKS: define (build-wide) to skip the two scans of every forward pass that read each
// input and each output value for NaN and Inf (O(tokens x hidden) each, a second read of x and of y). A NaN
// or Inf in x is then still refused, by the router-logits check (a NaN or Inf input makes its token's logits
// NaN or Inf), but with a message that names the logits, not the input; an expert that overflows f32 then
// returns Inf or NaN instead of an error. The shape, workspace and weight checks stay.
#if defined(MOE_FINITE_CHECKS)
#error "define MOE_NO_FINITE_CHECKS to turn the finiteness scans off; MOE_FINITE_CHECKS is moe's own"
#elif defined(MOE_NO_FINITE_CHECKS)
#define MOE_FINITE_CHECKS 0
#else
#define MOE_FINITE_CHECKS 1
#endif

// MOE_MAX_THREADS: upper bound on the threads a forward pass uses (default 256).
#ifndef MOE_MAX_THREADS
#define MOE_MAX_THREADS 256
#endif
static_assert(MOE_MAX_THREADS >= 1, "MOE_MAX_THREADS must be at least 1");

// OpenMP pragmas go through this macro so that a build without -fopenmp does not trip
// -Wunknown-pragmas under -Werror.
#if MOE_HAS_OPENMP
#define MOE_OMP(directive) _Pragma(#directive)
#else
#define MOE_OMP(directive)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MOE_ALWAYS_INLINE inline __attribute__((always_inline))
#define MOE_NEVER_INLINE __attribute__((noinline))
#else
#define MOE_ALWAYS_INLINE inline
#define MOE_NEVER_INLINE
#endif

// Unrolls the loop that follows completely. The micro-kernels' loops over tile rows, weight vectors and
// cache lines have compile-time trip counts and must become straight-line code for their accumulator arrays
// to live in registers. GCC 12 does that by itself at -O3, but not at -O2 (CMake's RelWithDebInfo, many
// distributions' default), where the accumulators stayed in memory, a store and a reload on every FMA's
// chain (docs/PERFORMANCE.md, decision "Kernel loops unrolled at -O2 too").
// MOE_NO_UNROLL keeps the loop that follows a loop, where that ran faster than its complete unrolling
// (multiply_tile_int8 in kernels/int8_tile.hpp).
#if defined(__clang__)
#define MOE_UNROLL _Pragma("unroll")
#define MOE_NO_UNROLL _Pragma("nounroll")
#elif defined(__GNUC__)
#define MOE_UNROLL _Pragma("GCC unroll 32")
#define MOE_NO_UNROLL _Pragma("GCC unroll 1")
#else
#define MOE_UNROLL
#define MOE_NO_UNROLL
#endif

// Throws moe::Error("moe::<where>: <problem>") unless `condition` holds. A macro so that the message, often
// built with std::to_string, is only evaluated on failure: checks sit on paths that must not allocate.
#define MOE_CHECK(condition, where, problem)                   \
  do {                                                         \
    if (!(condition)) ::moe::detail::fail((where), (problem)); \
  } while (false)

namespace moe {

// Sizes and indices, signed like Eigen's.
using Index = std::ptrdiff_t;

// A template size that is known only at run time (Eigen's convention).
inline constexpr int Dynamic = -1;

// Every error the library reports: a bad shape, an impossible configuration, a workspace too small,
// non-finite input, an overflow inside a pass. The message names the function and the problem. Outside the
// target's namespace (target.hpp), like Index and Dynamic, so that one catch serves every target.
class Error : public std::runtime_error {
public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

inline namespace MOE_TARGET_NAMESPACE {
namespace detail {

[[noreturn]] inline void fail(const char* where, const std::string& problem) {
  throw Error(std::string("moe::") + where + ": " + problem);
}

// A float as error messages show it: nine significant digits, which give the float back, and an exponent
// where it is large or small (std::to_string's %f shows 1e-9 as 0.000000 and 3e38 in 39 digits).
inline std::string float_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", v);
  return text;
}

}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
