// moe/simd_int8.hpp: int32 lanes and the u8 x s8 dot product the int8-activation kernels are built on.
//
// The one operation: dot_u8s8(acc, a, x) adds to each 32-bit lane of acc the dot product of that lane's
// four unsigned bytes in a with four signed bytes x shared by every lane; all in int32, exact. It is one
// vpdpbusd where the target has AVX-512 VNNI (or AVX-VNNI for 256-bit vectors); elsewhere (AVX2 without
// VNNI, SSE, NEON, scalar) the same sums from shifts, masks and 32-bit multiplies: slower, bitwise equal.
#pragma once

#include <cstdint>
#include <cstring>

#include "simd.hpp"

#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F && defined(__AVX512VNNI__)
#define MOE_SIMD_VNNI 512
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2 && !XSIMD_WITH_AVX512F && defined(__AVXVNNI__)
#define MOE_SIMD_VNNI 256
#else
#define MOE_SIMD_VNNI 0
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace simd {

#if MOE_SIMD_XSIMD
using IVec = xsimd::batch<std::int32_t>;
static_assert(int(IVec::size) == kWidth, "int32 and float vectors must have the same lane count");

// kWidth 32-bit lanes from p (any alignment, any byte type).
MOE_ALWAYS_INLINE IVec load_int(const void* p) {
#if XSIMD_WITH_AVX512F
  return IVec(_mm512_loadu_si512(p));
#elif XSIMD_WITH_AVX
  return IVec(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#else
  alignas(64) std::int32_t lanes[kWidth];
  std::memcpy(lanes, p, sizeof lanes);
  return IVec::load_aligned(lanes);
#endif
}
MOE_ALWAYS_INLINE IVec broadcast_int(std::int32_t x) { return IVec(x); }
MOE_ALWAYS_INLINE void store_int(std::int32_t* p, const IVec& v) { v.store_unaligned(p); }
MOE_ALWAYS_INLINE Vec to_float(const IVec& v) { return xsimd::to_float(v); }
// Rounds to the nearest integer, ties to even (the default rounding mode), as std::nearbyint does.
MOE_ALWAYS_INLINE IVec round_to_int(const Vec& v) {
#if XSIMD_WITH_AVX512F
  return IVec(_mm512_maskz_cvtps_epi32(kAllLanes, v));
#else
  return xsimd::nearbyint_as_int(v);
#endif
}
// v >> bits per lane, filling with zeros. On AVX-512 the zero-masked intrinsic: xsimd's shift passes an
// undefined vector that GCC 12 reports as uninitialised (simd.hpp's kAllLanes explains).
template <int bits>
MOE_ALWAYS_INLINE IVec shift_right(const IVec& v) {
#if XSIMD_WITH_AVX512F
  return IVec(_mm512_maskz_srli_epi32(kAllLanes, v, bits));
#else
  return xsimd::bitwise_cast<IVec>(xsimd::bitwise_cast<xsimd::batch<std::uint32_t> >(v) >> bits);
#endif
}
// (v >> 4) & mask per lane.
MOE_ALWAYS_INLINE IVec shift_right4_and(const IVec& v, std::int32_t mask) { return shift_right<4>(v) & IVec(mask); }
MOE_ALWAYS_INLINE IVec bit_and(const IVec& v, std::int32_t mask) { return v & IVec(mask); }
// Sum of the lanes (simd.hpp's reduce_add explains the name).
MOE_ALWAYS_INLINE std::int32_t reduce_add(const IVec& v) {
#if XSIMD_WITH_AVX512F
  const __m256i half =
      _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xF, v, 0), _mm512_maskz_extracti64x4_epi64(0xF, v, 1));
  const __m128i quarter = _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
  alignas(16) std::int32_t lanes[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), quarter);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
#elif XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(v);
#else
  return xsimd::hadd(v);
#endif
}
#else
using IVec = std::int32_t;
MOE_ALWAYS_INLINE IVec load_int(const void* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
MOE_ALWAYS_INLINE IVec broadcast_int(std::int32_t x) { return x; }
MOE_ALWAYS_INLINE void store_int(std::int32_t* p, IVec v) { *p = v; }
MOE_ALWAYS_INLINE Vec to_float(IVec v) { return float(v); }
MOE_ALWAYS_INLINE IVec round_to_int(Vec v) { return static_cast<std::int32_t>(std::nearbyint(v)); }
template <int bits>
MOE_ALWAYS_INLINE IVec shift_right(IVec v) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(v) >> bits);
}
MOE_ALWAYS_INLINE IVec shift_right4_and(IVec v, std::int32_t mask) { return shift_right<4>(v) & mask; }
MOE_ALWAYS_INLINE IVec bit_and(IVec v, std::int32_t mask) { return v & mask; }
MOE_ALWAYS_INLINE std::int32_t reduce_add(IVec v) { return v; }
#endif

// Nibble n in [0, 8) (bits 4n to 4n + 3) of every 32-bit lane of `packed`, a 4-bit two's complement in
// [-8, 7], as f32: the q4 weights of the f32-activation kernel (precisions/q4.hpp packs eight a lane). With
// AVX-512, one table lookup after the shift: vpermps reads only the low 4 bits of each index lane, so the
// nibble needs no mask, and the table holds the values as floats (no conversion). Elsewhere the nibble is
// shifted to the top of the lane and back down arithmetically, which sign-extends it, then converted: three
// instructions and no constant, which a 16-register tile has no register for. All exact. n is a run-time
// int so that unrolled loops can pass theirs; unrolled, it is a constant and the shifts immediates.
MOE_ALWAYS_INLINE Vec nibble_to_float(const IVec& packed, int n) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
  const __m512i index = n == 0 ? __m512i(packed) : _mm512_maskz_srli_epi32(kAllLanes, packed, unsigned(4 * n));
  return Vec(_mm512_maskz_permutexvar_ps(kAllLanes, index, table));
#elif MOE_SIMD_XSIMD
  return to_float((n == 7 ? packed : packed << (28 - 4 * n)) >> 28);  // int32 lanes: >> is arithmetic
#else
  return float(std::int32_t(((static_cast<std::uint32_t>(packed) >> (4 * n)) & 15u) ^ 8u) - 8);
#endif
}

// The lanes of q, each in [-127, 127], as kWidth int8 codes at out (any alignment).
MOE_ALWAYS_INLINE void store_int8(std::int8_t* out, const IVec& q) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_maskz_cvtepi32_epi8(kAllLanes, q));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2
  // Two saturating packs (int32 -> int16 -> int8) of the two 128-bit halves: lanes in order, exact in range.
  const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(words, words));
#else
  alignas(64) std::int32_t lanes[kWidth];
  store_int(lanes, q);
  for (int i = 0; i < kWidth; ++i) out[i] = static_cast<std::int8_t>(lanes[i]);
#endif
}

// Four consecutive int8 activations, prepared once and used against many weight vectors: the packed
// bytes in every lane for vpdpbusd, or the four values broadcast one by one for the emulation.
struct Int8Quad {
#if MOE_SIMD_VNNI
  IVec packed;
#else
  IVec value[4];
#endif
};

// The 4 bytes at p as one 32-bit lane (any alignment), the way load_int reads each lane of the weights.
MOE_ALWAYS_INLINE std::uint32_t lane_bits(const void* p) {
  std::uint32_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return bits;
}

MOE_ALWAYS_INLINE Int8Quad load_quad(const std::int8_t* x) {
  Int8Quad q;
  const std::uint32_t packed = lane_bits(x);
#if MOE_SIMD_VNNI
  q.packed = broadcast_int(static_cast<std::int32_t>(packed));
#else
  // Byte j of the 32-bit lane, as dot_u8s8 takes byte j of the weights' lanes: the same pairing on either
  // byte order.
  for (int j = 0; j < 4; ++j) q.value[j] = broadcast_int(static_cast<std::int8_t>((packed >> (8 * j)) & 0xFFu));
#endif
  return q;
}

// acc + per lane sum_{j<4} a.byte[j] (unsigned) * x[j] (signed). No overflow is possible for the sums
// the kernels form (multiply_tile_int8 in kernels/int8_tile.hpp), so the emulation's wrapping int32 arithmetic never
// wraps.
MOE_ALWAYS_INLINE IVec dot_u8s8(const IVec& acc, const IVec& a, const Int8Quad& x) {
#if MOE_SIMD_VNNI == 512 && defined(__GNUC__)
  // vpdpbusd accumulates in place; GCC 12 treats the intrinsic's accumulator as a separate input and
  // surrounds each one with register copies and stack spills, which lengthen every accumulator's dependency
  // chain. The asm ties the accumulator to its register
  // (docs/PERFORMANCE.md, decision "vpdpbusd and vdpbf16ps as inline asm").
  __m512i sum = acc;
  __asm__("vpdpbusd %2, %1, %0" : "+v"(sum) : "v"(a.data), "v"(x.packed.data));
  return IVec(sum);
#elif MOE_SIMD_VNNI == 512
  return IVec(_mm512_dpbusd_epi32(acc, a, x.packed));
#elif MOE_SIMD_VNNI == 256
  return IVec(_mm256_dpbusd_avx_epi32(acc, a, x.packed));
#else
  IVec sum = acc + bit_and(a, 0xFF) * x.value[0];
  sum = sum + bit_and(shift_right<8>(a), 0xFF) * x.value[1];
  sum = sum + bit_and(shift_right<16>(a), 0xFF) * x.value[2];
  return sum + shift_right<24>(a) * x.value[3];
#endif
}

}  // namespace simd
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
