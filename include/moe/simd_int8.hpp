// moe/simd_int8.hpp: int32 lanes and the byte dot products the int8-activation kernels are built on.
//
// The one operation: add to each 32-bit lane of an int32 accumulator the dot product of that lane's four
// weight bytes with four signed activation bytes shared by every lane; exact. Int8Dot (at the end) is how
// the int8 tile forms it on each target, in the instructions the target has:
//   AVX-512 VNNI, AVX-VNNI  vpdpbusd: u8 x s8, four products summed into int32, one instruction;
//   AVX2                    vpmaddubsw (u8 x s8, pairs summed into saturating int16) then vpmaddwd
//                           against ones (int16 pairs into int32);
//   NEON with +dotprod      sdot: s8 x s8, four products summed into int32, one instruction;
//   elsewhere               dot_u8s8's shifts, masks and 32-bit multiplies (SSE, plain NEON, scalar).
// All give the same integers.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "detail/small_floats.hpp"
#include "simd.hpp"

#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F && defined(__AVX512VNNI__)
#define MOE_SIMD_VNNI 512
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2 && !XSIMD_WITH_AVX512F && defined(__AVXVNNI__)
#define MOE_SIMD_VNNI 256
#else
#define MOE_SIMD_VNNI 0
#endif
// The AVX2 pair products (vpmaddubsw), where there is no vpdpbusd. AVX-512 without VNNI (Skylake-SP) keeps
// the emulation: it has vpmaddubsw on 512 bits too, but no CI target or host to test that form on.
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX2 && !XSIMD_WITH_AVX512F && !MOE_SIMD_VNNI
#define MOE_SIMD_INT8_PAIRS 1
#else
#define MOE_SIMD_INT8_PAIRS 0
#endif
#if MOE_SIMD_XSIMD && XSIMD_WITH_NEON64 && defined(__ARM_FEATURE_DOTPROD)
#define MOE_SIMD_SDOT 1
#else
#define MOE_SIMD_SDOT 0
#endif
// Whether the dot product of 4-bit codes is one or two instructions here rather than a dozen (8-bit codes
// take four on AVX2: Int8Dot below).
#define MOE_SIMD_INT8_DOT_NATIVE (MOE_SIMD_VNNI || MOE_SIMD_INT8_PAIRS || MOE_SIMD_SDOT)

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

// Nibble n in [0, 8) of every 32-bit lane of `packed`, an E2M1 code (detail/small_floats.hpp: sign in bit
// 3, magnitude index in bits 0 to 2), as f32 holding half its value: the mxfp4 weights of the f32-activation
// kernel (precisions/mxfp4.hpp folds the 2 into its scales, which keeps every table entry and every scale a
// normal float down to E8M0's smallest, 2^-127). With AVX-512 a shift and one lookup in the 16 values, as
// q4's nibble_to_float. AVX2's vpermps takes 8 entries and reads 3 index bits, so the lookup gives the
// magnitude and the sign bit is shifted to bit 31 and xored in: five instructions and two constants. NEON:
// the nibble masked into byte 3 of its lane (other bytes 0), a byte lookup (tbl) of twice the value as int8
// (0 for the zero bytes), and a fixed-point conversion that divides the lane by 2^26: four instructions.
// Elsewhere lane by lane. All exact.
MOE_ALWAYS_INLINE Vec e2m1_nibble_to_float(const IVec& packed, int n) {
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  const __m512 table = _mm512_setr_ps(0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.5f, 2.0f, 3.0f, -0.0f, -0.25f, -0.5f, -0.75f,
                                      -1.0f, -1.5f, -2.0f, -3.0f);
  const __m512i index = n == 0 ? __m512i(packed) : _mm512_maskz_srli_epi32(kAllLanes, packed, unsigned(4 * n));
  return Vec(_mm512_maskz_permutexvar_ps(kAllLanes, index, table));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2
  const __m256 magnitudes = _mm256_setr_ps(0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.5f, 2.0f, 3.0f);
  const __m256i bits = packed;
  const __m256i index = n == 0 ? bits : _mm256_srli_epi32(bits, 4 * n);
  const __m256i top = n == 7 ? bits : _mm256_slli_epi32(bits, 28 - 4 * n);
  const __m256 sign = _mm256_castsi256_ps(_mm256_and_si256(top, _mm256_set1_epi32(int(0x80000000u))));
  return Vec(_mm256_xor_ps(_mm256_permutevar8x32_ps(magnitudes, index), sign));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  static constexpr std::int8_t kTwice[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  const uint32x4_t bits = vreinterpretq_u32_s32(packed);
  const uint32x4_t at_byte3 = vshlq_u32(bits, vdupq_n_s32(24 - 4 * n));  // a negative count shifts right
  const uint8x16_t index = vreinterpretq_u8_u32(vandq_u32(at_byte3, vdupq_n_u32(0x0F000000u)));
  const int32x4_t value = vreinterpretq_s32_s8(vqtbl1q_s8(vld1q_s8(kTwice), index));
  return Vec(vcvtq_n_f32_s32(value, 26));
#else
  alignas(64) std::int32_t lanes[kWidth];
  store_int(lanes, packed);
  return detail_load::by_lane([&](int i) {
    return 0.5f * ::moe::detail::e2m1_to_float(std::uint8_t((std::uint32_t(lanes[i]) >> (4 * n)) & 15u));
  });
#endif
}

// Every byte of `nibbles`, an E2M1 code in its low 4 bits (the high 4 bits zero), replaced by 128 + twice
// the code's value (116..140): the mxfp4a8 weights as the int8 tile's 8-bit codes (q + 128, q in [-12, 12]).
// A byte shuffle from a 16-byte table where there is one (vpshufb, in each 128-bit lane; tbl); elsewhere
// (SSE2, AVX-512 without BW, the scalar path) byte by byte.
MOE_ALWAYS_INLINE IVec e2m1_to_offset_bytes(const IVec& nibbles) {
  // The bytes as int8 (128 + 2v wraps to 2v - 128).
#define MOE_DETAIL_E2M1_TABLE -128, -127, -126, -125, -124, -122, -120, -116, -128, 127, 126, 125, 124, 122, 120, 116
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512BW
  const __m512i table = _mm512_broadcast_i32x4(_mm_setr_epi8(MOE_DETAIL_E2M1_TABLE));
  return IVec(_mm512_shuffle_epi8(table, nibbles));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_AVX2 && !XSIMD_WITH_AVX512F
  const __m256i table = _mm256_broadcastsi128_si256(_mm_setr_epi8(MOE_DETAIL_E2M1_TABLE));
  return IVec(_mm256_shuffle_epi8(table, nibbles));
#elif MOE_SIMD_XSIMD && XSIMD_WITH_NEON64
  static constexpr std::int8_t kTable[16] = {MOE_DETAIL_E2M1_TABLE};
  return IVec(vreinterpretq_s32_s8(vqtbl1q_s8(vld1q_s8(kTable), vreinterpretq_u8_s32(nibbles))));
#else
  alignas(64) std::int32_t lanes[kWidth];
  store_int(lanes, nibbles);
  for (std::int32_t& lane : lanes) {
    std::uint32_t bits = 0;
    for (int j = 0; j < 4; ++j) {
      const std::uint8_t code = std::uint8_t((std::uint32_t(lane) >> (8 * j)) & 15u);
      bits |= std::uint32_t(128 + int(2.0f * ::moe::detail::e2m1_to_float(code))) << (8 * j);
    }
    lane = static_cast<std::int32_t>(bits);
  }
  return load_int(lanes);
#endif
#undef MOE_DETAIL_E2M1_TABLE
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

// The int8 tile's dot product (kernels/int8_tile.hpp) for weight codes of CodeBits bits (8: q8a8, 4: q4a8)
// stored unsigned, q + kStoredOffset, one byte a code in the 32-bit lanes of a group of four depth rows;
// 8-bit codes are 1..255 (q in [-127, 127], as q8 rounds), 4-bit ones 0..15; activations any int8.
// The tile runs, per activation block and per accumulator:
//   acc = kInt16Sums ? 0 : start; for each group: acc = step(acc, prepare(codes), load_quad(x));
//   if kInt16Sums: acc = finish(acc, start)
// and gets start + the block's sums of prepare(codes) * x, where prepare leaves the codes carrying
// kOffset (the tile's start cancels it: -kOffset * sum x). The per-target choices:
//   vpdpbusd (VNNI), dot_u8s8's emulation: the stored codes as they are, an int32 accumulator.
//   AVX2, 8-bit codes: vpmaddubsw's unsigned operand must be the activations: |x| (vpabsb) times the codes
//     made signed (xor 0x80: q itself, kOffset 0) with x's sign (vpsignb); a pair sums at most 2 * 128 *
//     127 < 2^15, so nothing saturates; vpmaddwd against ones widens to int32 at once. Four instructions
//     a vector of 32 products.
//   AVX2, 4-bit codes: the codes (0..15) are the unsigned operand as stored, x the signed one, and the
//     int16 pair sums are added as int16 (vpaddw) over the whole block: at most 8 groups x 2 x 15 x 128 =
//     30720 < 2^15; finish widens once (vpmaddwd). Two instructions a vector.
//   NEON +dotprod: sdot is signed x signed: 8-bit codes made signed (xor 0x80: kOffset 0), 4-bit codes
//     (0..15) are already valid signed bytes. One instruction a vector.
template <int CodeBits>
struct Int8Dot {
  static_assert(CodeBits == 4 || CodeBits == 8, "the int8 tile's weight codes are 4 or 8 bits");
  static constexpr std::int32_t kStoredOffset = 1 << (CodeBits - 1);
  static constexpr bool kSignedCodes = CodeBits == 8 && (MOE_SIMD_INT8_PAIRS || MOE_SIMD_SDOT);
  static constexpr bool kInt16Sums = CodeBits == 4 && MOE_SIMD_INT8_PAIRS;
  static constexpr std::int32_t kOffset = kSignedCodes ? 0 : kStoredOffset;
  // The groups whose sums one accumulator may take before finish: a whole activation block (8) in every case.
  static constexpr int kMaxGroups = kInt16Sums ? 32767 / (2 * 15 * 128) : std::numeric_limits<int>::max();

  // The codes as the dot product takes them: made signed (q itself) where kSignedCodes, else as stored.
  MOE_ALWAYS_INLINE static IVec prepare(const IVec& codes) {
    if constexpr (kSignedCodes) return codes ^ IVec(static_cast<std::int32_t>(0x80808080u));
    return codes;
  }

#if MOE_SIMD_INT8_PAIRS
  struct SignedQuad {
    IVec x, magnitude;  // the four bytes in every lane, and their absolute values
  };
  struct UnsignedQuad {
    IVec x;  // the four bytes in every lane
  };
  using Quad = std::conditional_t<kSignedCodes, SignedQuad, UnsignedQuad>;
  MOE_ALWAYS_INLINE static Quad load_quad(const std::int8_t* x) {
    Quad q;
    q.x = broadcast_int(static_cast<std::int32_t>(lane_bits(x)));
    if constexpr (kSignedCodes) q.magnitude = IVec(_mm256_abs_epi8(q.x));
    return q;
  }
  MOE_ALWAYS_INLINE static IVec step(const IVec& acc, const IVec& w, const Quad& q) {
    if constexpr (kSignedCodes) {
      const __m256i pairs = _mm256_maddubs_epi16(q.magnitude, _mm256_sign_epi8(w, q.x));
      return IVec(_mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))));
    } else {
      return IVec(_mm256_add_epi16(acc, _mm256_maddubs_epi16(w, q.x)));
    }
  }
  // Widens the int16 sums (kInt16Sums only: 4-bit codes) and adds the start.
  MOE_ALWAYS_INLINE static IVec finish(const IVec& acc, const IVec& start) {
    return IVec(_mm256_add_epi32(_mm256_madd_epi16(acc, _mm256_set1_epi16(1)), start));
  }
#elif MOE_SIMD_SDOT
  struct Quad {
    int8x16_t x;  // the four bytes in every lane
  };
  MOE_ALWAYS_INLINE static Quad load_quad(const std::int8_t* x) {
    return {vreinterpretq_s8_u32(vdupq_n_u32(lane_bits(x)))};
  }
  MOE_ALWAYS_INLINE static IVec step(const IVec& acc, const IVec& w, const Quad& q) {
    return IVec(vdotq_s32(acc, vreinterpretq_s8_s32(w), q.x));
  }
#else
  using Quad = Int8Quad;
  MOE_ALWAYS_INLINE static Quad load_quad(const std::int8_t* x) { return simd::load_quad(x); }
  MOE_ALWAYS_INLINE static IVec step(const IVec& acc, const IVec& w, const Quad& q) { return dot_u8s8(acc, w, q); }
#endif
};

}  // namespace simd
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
