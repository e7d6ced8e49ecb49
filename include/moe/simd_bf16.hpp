// moe/simd_bf16.hpp: the bf16 x bf16 dot product of the bf16a16 precision, and f32 -> bf16 rounding.
//
// The one operation: dot_bf16(acc, w, x) adds to each f32 lane of acc the products of that lane's two bf16
// values in w (a pair of consecutive depth rows, low half first) with the two bf16 values of x, shared by
// every lane. Both products are exact in f32 (8-bit by 8-bit significands), so only the two additions
// round. It is one vdpbf16ps where the target has AVX-512 BF16; elsewhere each half is widened to f32 by a
// shift or a mask and multiplied with two FMAs, in the order vdpbf16ps is specified to add them (the high
// half's product, then the low half's). vdpbf16ps also treats subnormal inputs and results as zero: the two paths
// can differ by the subnormal range (below 2^-126) and nothing else.
#pragma once

#include <cstdint>

#include "simd.hpp"
#include "simd_int8.hpp"

#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F && defined(__AVX512BF16__)
#define MOE_SIMD_AVX512BF16 1
#else
#define MOE_SIMD_AVX512BF16 0
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace simd {

// Two consecutive bf16 activations, prepared once and used against many weight vectors: the packed pair in
// every lane for vdpbf16ps, or the two values widened and broadcast for the emulation. Both read the pair as
// one 32-bit lane, as the weights are read, so the halves pair up on either byte order.
struct Bf16Pair {
#if MOE_SIMD_AVX512BF16
  IVec packed;
#else
  Vec low, high;  // the low and high halves of the 32-bit lane, as f32
#endif
};

MOE_ALWAYS_INLINE Bf16Pair load_bf16_pair(const std::uint16_t* x) {
  Bf16Pair pair;
  const std::uint32_t packed = lane_bits(x);
#if MOE_SIMD_AVX512BF16
  pair.packed = broadcast_int(static_cast<std::int32_t>(packed));
#else
  pair.low = broadcast(::moe::detail::bits_float(packed << 16));
  pair.high = broadcast(::moe::detail::bits_float(packed & 0xFFFF0000u));
#endif
  return pair;
}

// acc + per lane w.low * x[0] + w.high * x[1], where w.low / w.high are the lane's two bf16 halves.
MOE_ALWAYS_INLINE Vec dot_bf16(const Vec& acc, const IVec& w, const Bf16Pair& x) {
#if MOE_SIMD_AVX512BF16 && defined(__GNUC__)
  // As dot_u8s8 (simd_int8.hpp): the asm ties the accumulator to its register, where GCC 12 copies and
  // spills around the intrinsic's separate accumulator input.
  __m512 sum = acc;
  __asm__("vdpbf16ps %2, %1, %0" : "+v"(sum) : "v"(w.data), "v"(x.packed.data));
  return Vec(sum);
#elif MOE_SIMD_AVX512BF16
  return Vec(_mm512_dpbf16_ps(acc, (__m512bh)w.data, (__m512bh)x.packed.data));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  // The zero-masked shift: simd.hpp's kAllLanes explains.
  const Vec low(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAllLanes, w, 16)));
  const Vec high(_mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(std::int32_t(0xFFFF0000u)))));
  return fma(x.low, low, fma(x.high, high, acc));
#elif MOE_SIMD_XSIMD
  const Vec low = xsimd::bitwise_cast<Vec>(w << 16);
  const Vec high = xsimd::bitwise_cast<Vec>(w & IVec(std::int32_t(0xFFFF0000u)));
  return fma(x.low, low, fma(x.high, high, acc));
#else
  const std::uint32_t bits = static_cast<std::uint32_t>(w);
  const float low = ::moe::detail::bits_float(bits << 16), high = ::moe::detail::bits_float(bits & 0xFFFF0000u);
  return fma(x.low, low, fma(x.high, high, acc));
#endif
}

// Stores the kWidth lanes of v as bf16 at p, each rounded exactly as bf16::encode rounds (to nearest
// even; NaN stays a quiet NaN).
MOE_ALWAYS_INLINE void store_bf16(std::uint16_t* p, const Vec& v) {
  // Adding 0x7FFF plus the lowest kept bit carries into the kept half exactly when rounding goes up. No
  // finite or infinite value can carry into the sign (the largest, 0x7F800000, stays below 2^31).
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  // Intrinsics with zero masks rather than xsimd's shifts: simd.hpp's kAllLanes explains.
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i high = _mm512_maskz_srli_epi32(kAllLanes, bits, 16);
  const __m512i carry = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(high, _mm512_set1_epi32(1)));
  const __m512i rounded = _mm512_maskz_srli_epi32(kAllLanes, _mm512_add_epi32(bits, carry), 16);
  const __mmask16 nan =
      _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
  const __m512i code = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
  _mm512_mask_cvtepi32_storeu_epi16(p, kAllLanes, code);
#elif MOE_SIMD_XSIMD
  const IVec bits = xsimd::bitwise_cast<IVec>(v);
  const IVec rounded = (bits + IVec(0x7FFF) + ((bits >> 16) & IVec(1))) >> 16;
  const auto nan = (bits & IVec(0x7FFFFFFF)) > IVec(0x7F800000);
  const IVec code = xsimd::select(nan, (bits >> 16) | IVec(0x40), rounded) & IVec(0xFFFF);
  alignas(64) std::int32_t lanes[kWidth];
  store_int(lanes, code);
  for (int i = 0; i < kWidth; ++i) p[i] = static_cast<std::uint16_t>(lanes[i]);
#else
  *p = ::moe::detail::float_to_bf16(v);
#endif
}

}  // namespace simd
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
