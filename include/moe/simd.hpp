// moe/simd.hpp: the one place that knows which xsimd version and which instruction set we build for.
//
// Everything else writes kernels against `simd::Vec` and the free functions below. With a SIMD
// architecture, Vec is xsimd 8.1's `batch<float>` for the best instruction set the compiler targets
// (so the consumer's -m flags decide); without one (xsimd defines XSIMD_NO_SUPPORTED_ARCHITECTURE and
// no batch types at all), or with MOE_DONT_VECTORIZE, Vec is a plain float and the same kernels
// compile to scalar code.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "config.hpp"
#include "detail/half_floats.hpp"
#include "detail/small_floats.hpp"

#if !defined(MOE_DONT_VECTORIZE)
#include <xsimd/xsimd.hpp>
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define MOE_SIMD_XSIMD 1
#endif
#endif
#ifndef MOE_SIMD_XSIMD
#define MOE_SIMD_XSIMD 0
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace simd {

#if MOE_SIMD_XSIMD

using Vec = xsimd::batch<float>;
inline constexpr int kWidth = static_cast<int>(Vec::size);
inline const char* arch_name() { return xsimd::default_arch::name(); }

// Vector registers the target has: the micro-kernels size their accumulator tiles from this.
#if XSIMD_WITH_AVX512F || XSIMD_WITH_NEON64
inline constexpr int kRegisters = 32;
#else
inline constexpr int kRegisters = 16;
#endif

#if XSIMD_WITH_AVX512F
// The zero-masked forms with every lane selected: the same instructions, but GCC 12's unmasked AVX-512
// intrinsics pass _mm512_undefined_*() (`__m512 __Y = __Y;`), which trips -Wuninitialized (GCC PR 105593).
inline constexpr __mmask16 kAllLanes = 0xFFFF;
#endif

MOE_ALWAYS_INLINE Vec load(const float* p) { return Vec::load_unaligned(p); }
MOE_ALWAYS_INLINE void store(float* p, const Vec& v) { v.store_unaligned(p); }
MOE_ALWAYS_INLINE Vec broadcast(float x) { return Vec(x); }
// xsimd 8.1 falls back to x*y+z when no FMA arch is compiled in; that is still correct, only slower.
MOE_ALWAYS_INLINE Vec fma(const Vec& a, const Vec& b, const Vec& c) { return xsimd::fma(a, b, c); }
MOE_ALWAYS_INLINE Vec max(const Vec& a, const Vec& b) {
#if XSIMD_WITH_AVX512F
  return Vec(_mm512_maskz_max_ps(kAllLanes, a, b));
#else
  return xsimd::max(a, b);
#endif
}
MOE_ALWAYS_INLINE Vec min(const Vec& a, const Vec& b) {
#if XSIMD_WITH_AVX512F
  return Vec(_mm512_maskz_min_ps(kAllLanes, a, b));
#else
  return xsimd::min(a, b);
#endif
}
MOE_ALWAYS_INLINE Vec abs(const Vec& a) { return xsimd::abs(a); }
#if XSIMD_WITH_AVX512F
// e^x, written here rather than taken from xsimd 8.1: xsimd's exp uses unmasked intrinsics (kAllLanes
// above), and where GCC 12 compiles it out of line, as it does in a large enough translation unit, a
// -Wall -Werror build fails. e^x = 2^n e^r with n = round(x log2 e) and r = x - n ln 2 (ln 2 in two
// parts: n * kLn2High is exact), |r| <= ln 2 / 2; e^r by its Taylor series to r^7 (the rest is below
// 2^-27 of it); 2^n by vscalefps, which rounds once and gives Inf on overflow and 0 past the subnormals.
// The clamps keep n finite (an infinite x would give Inf - Inf in r) and are past where e^x is Inf
// (e^89 > FLT_MAX) or 0 (e^-104 < the smallest subnormal); x as their second operand keeps a NaN.
MOE_ALWAYS_INLINE Vec exp(const Vec& x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;
  const __m512 clamped =
      _mm512_maskz_min_ps(kAllLanes, _mm512_set1_ps(89.0f), _mm512_maskz_max_ps(kAllLanes, _mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_maskz_roundscale_ps(kAllLanes, _mm512_mul_ps(clamped, _mm512_set1_ps(kLog2e)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), clamped);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r);
  constexpr float kTaylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
  __m512 p = _mm512_set1_ps(kTaylor[0]);
  MOE_UNROLL for (int i = 1; i < 8; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kTaylor[i]));
  return Vec(_mm512_maskz_scalef_ps(kAllLanes, p, n));
}
#else
MOE_ALWAYS_INLINE Vec exp(const Vec& x) { return xsimd::exp(x); }
#endif
MOE_ALWAYS_INLINE Vec erfc(const Vec& x) { return xsimd::erfc(x); }
// Horizontal sum: `hadd` in xsimd 8.x, renamed `reduce_add` in 9.0.
MOE_ALWAYS_INLINE float reduce_add(const Vec& v) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(v);
#else
  return xsimd::hadd(v);
#endif
}
// Keeps v (a float or int32 vector) in a register. Without it GCC folds a loaded weight vector into each
// FMA or dot product that uses it as a memory operand, so a tile reloads every weight once per row and
// becomes load-bound.
template <class V>
MOE_ALWAYS_INLINE void pin(V& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+v"(v.data));
#elif defined(__GNUC__) && (defined(__aarch64__) || defined(__arm__))
  __asm__("" : "+w"(v.data));
#else
  (void)v;
#endif
}
MOE_ALWAYS_INLINE float reduce_max(const Vec& v) {
  alignas(64) float lanes[kWidth];
  v.store_unaligned(lanes);
  float m = lanes[0];
  for (int i = 1; i < kWidth; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

#else  // scalar fallback

using Vec = float;
inline constexpr int kWidth = 1;
inline constexpr int kRegisters = 16;
inline const char* arch_name() { return "scalar"; }

MOE_ALWAYS_INLINE Vec load(const float* p) { return *p; }
MOE_ALWAYS_INLINE void store(float* p, Vec v) { *p = v; }
MOE_ALWAYS_INLINE Vec broadcast(float x) { return x; }
// A real fused multiply-add where the target has one, so that a result never depends on whether the
// compiler contracted a*b+c in this inlined copy of a kernel but not in that one (which would make a
// token's output depend on the batch it came in).
MOE_ALWAYS_INLINE Vec fma(Vec a, Vec b, Vec c) {
#ifdef FP_FAST_FMAF
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}
MOE_ALWAYS_INLINE Vec max(Vec a, Vec b) { return a > b ? a : b; }
MOE_ALWAYS_INLINE Vec min(Vec a, Vec b) { return a < b ? a : b; }
MOE_ALWAYS_INLINE Vec abs(Vec a) { return std::fabs(a); }
MOE_ALWAYS_INLINE Vec exp(Vec x) { return std::exp(x); }
MOE_ALWAYS_INLINE Vec erfc(Vec x) { return std::erfc(x); }
template <class V>
MOE_ALWAYS_INLINE void pin(V&) {}
MOE_ALWAYS_INLINE float reduce_add(Vec v) { return v; }
MOE_ALWAYS_INLINE float reduce_max(Vec v) { return v; }

#endif

// ---- stored weights to f32 lanes (precisions/*.hpp decode_row): kWidth values from p into one vector ----
// AVX-512, AVX2 (f16 also needs F16C) and AArch64 NEON widen with a few instructions; every other target
// (SSE, 32-bit NEON, the scalar path) decodes lane by lane, through a small stack array, with the same
// conversions the packing used. All give the same bits for every code packing produces.

namespace detail_load {
#if MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
// The kWidth = 4 bytes at p (no further: a row's last vector ends its buffer) in the low half of a register.
MOE_ALWAYS_INLINE int8x8_t four_bytes_s8(const void* p) {
  std::uint32_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return vreinterpret_s8_u32(vdup_n_u32(bits));
}
#endif
template <class Decode>
MOE_ALWAYS_INLINE Vec by_lane(Decode decode) {
  alignas(64) float lanes[kWidth];
  for (int i = 0; i < kWidth; ++i) lanes[i] = decode(i);
  return load(lanes);
}
}  // namespace detail_load

// 2 * kWidth bf16 codes whose 32-bit lane l holds lane l of `low` in its low half and lane l of `high` in
// its high half (the bf16 panel layout, precisions/bf16.hpp). A bf16 code is the top half of its f32, so `low` is
// the lane shifted up and `high` the lane with its low half cleared: one full-width load and two bit
// operations for two vectors, where widening 16-bit codes takes a load and a shuffle per vector.
MOE_ALWAYS_INLINE void load_bf16_halves(const std::uint16_t* p, Vec& low, Vec& high) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  const __m512i both = _mm512_maskz_loadu_epi32(kAllLanes, p);
  low = Vec(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAllLanes, both, 16)));
  high = Vec(_mm512_castsi512_ps(_mm512_maskz_and_epi32(kAllLanes, both, _mm512_set1_epi32(int(0xFFFF0000u)))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2
  const __m256i both = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  low = Vec(_mm256_castsi256_ps(_mm256_slli_epi32(both, 16)));
  high = Vec(_mm256_castsi256_ps(_mm256_and_si256(both, _mm256_set1_epi32(int(0xFFFF0000u)))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  const uint32x4_t both = vreinterpretq_u32_u8(vld1q_u8(reinterpret_cast<const std::uint8_t*>(p)));
  low = Vec(vreinterpretq_f32_u32(vshlq_n_u32(both, 16)));
  high = Vec(vreinterpretq_f32_u32(vandq_u32(both, vdupq_n_u32(0xFFFF0000u))));
#else
  low = detail_load::by_lane([p](int i) { return ::moe::detail::bf16_to_float(p[2 * i]); });
  high = detail_load::by_lane([p](int i) { return ::moe::detail::bf16_to_float(p[2 * i + 1]); });
#endif
}

MOE_ALWAYS_INLINE Vec load_f16(const std::uint16_t* p) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  return Vec(_mm512_maskz_cvtph_ps(kAllLanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2 && defined(__F16C__)
  return Vec(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  return Vec(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))));  // fcvtl: exact, subnormals included
#else
  return detail_load::by_lane([p](int i) { return ::moe::detail::f16_to_float(p[i]); });
#endif
}

MOE_ALWAYS_INLINE Vec load_i8(const std::int8_t* p) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  return Vec(_mm512_maskz_cvtepi32_ps(
      kAllLanes, _mm512_maskz_cvtepi8_epi32(kAllLanes, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2
  return Vec(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  return Vec(vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(detail_load::four_bytes_s8(p))))));
#else
  return detail_load::by_lane([p](int i) { return float(p[i]); });
#endif
}

// kWidth e4m3fn codes (detail/small_floats.hpp) as f32 lanes holding their values times 2^-8. A code
// sign-extended to 16 bits and shifted left by 7 has its sign in bit 15 and its 4 exponent and 3 mantissa bits
// in bits 7 to 13; with bit 14 (a copy of the sign) cleared it is the f16 of the value times 2^-8, subnormal
// codes included (f16's exponent bias is 8 above e4m3's), and f16 widens exactly: four integer and convert
// instructions a vector and no f32 subnormal anywhere, where building the f32 directly needs a multiply by
// 2^120 of an f32 subnormal (flushed under DAZ). The caller folds 2^8 into its scales. NaN codes are never
// packed.
MOE_ALWAYS_INLINE Vec load_e4m3(const std::uint8_t* p) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  const __m256i wide = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i half = _mm256_and_si256(_mm256_slli_epi16(wide, 7), _mm256_set1_epi16(int16_t(0xBFFF)));
  return Vec(_mm512_maskz_cvtph_ps(kAllLanes, half));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2 && defined(__F16C__)
  const __m128i wide = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return Vec(_mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(wide, 7), _mm_set1_epi16(int16_t(0xBFFF)))));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  const int16x4_t wide = vget_low_s16(vmovl_s8(detail_load::four_bytes_s8(p)));
  return Vec(vcvt_f32_f16(vreinterpret_f16_s16(vand_s16(vshl_n_s16(wide, 7), vdup_n_s16(int16_t(0xBFFF))))));
#else
  return detail_load::by_lane([p](int i) { return ::moe::detail::e4m3_to_float(p[i]) * 0.00390625f; });
#endif
}

// kWidth bytes b as f32 lanes with the bit pattern b << 23: the power of two 2^(b - 127) for b in [1, 254],
// and 0 for b = 0 (mxfp4's block scales, precisions/mxfp4.hpp). A widening load and a shift.
MOE_ALWAYS_INLINE Vec load_exponent_bytes(const std::uint8_t* p) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  const __m512i wide = _mm512_maskz_cvtepu8_epi32(kAllLanes, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return Vec(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAllLanes, wide, 23)));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2
  const __m256i wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return Vec(_mm256_castsi256_ps(_mm256_slli_epi32(wide, 23)));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  const uint32x4_t wide = vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_s8(detail_load::four_bytes_s8(p)))));
  return Vec(vreinterpretq_f32_u32(vshlq_n_u32(wide, 23)));
#else
  return detail_load::by_lane([p](int i) {
    const std::uint32_t bits = std::uint32_t(p[i]) << 23;
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  });
#endif
}

// A hint to fetch the cache line at `address` for reading. Locality 0, the default, for weights read once:
// no expectation of reuse. Locality 2 (prefetcht1 on x86): into L2, for weights a thread reads after the
// ones it is reading (kernels::NextWeights). An address, not a pointer: it may lie past the end of a buffer
// (a prefetch never faults), where forming a pointer would be undefined.
template <int Locality = 0>
MOE_ALWAYS_INLINE void prefetch(std::uintptr_t address) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(reinterpret_cast<const void*>(address), 0, Locality);
#else
  (void)address;
#endif
}

// Round n up to a multiple of `multiple` (a positive compile-time or run-time step).
constexpr Index round_up(Index n, Index multiple) { return (n + multiple - 1) / multiple * multiple; }

// Round n (>= 0) down to a multiple of `multiple`: the end of the whole vectors of a row of n floats, for
// loops `for (; i < round_down(n, kWidth); i += kWidth)` followed by a scalar tail `for (; i < n; ++i)`.
// The end is computed before the loop, not tested as `i + kWidth <= n` at each step, so the compiler gets
// both trip counts from n alone. With the per-step test, GCC 12 (-O2, kWidth 4 or 8, the loop inlined into a
// caller's loop over rows) reported "iteration 4611686018427387903 invokes undefined behavior" for the tail:
// the vector loop leaves i <= n, but GCC derives the tail's count on a path it has not proved dead, where i
// starts past n, and there `codes + i` would pass 2^63 bytes. No execution takes that path; the warning stays
// on (-Werror) so that a loop which can really run away is still reported.
constexpr Index round_down(Index n, Index multiple) { return n - n % multiple; }

}  // namespace simd
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
