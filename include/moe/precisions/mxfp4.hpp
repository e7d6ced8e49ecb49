// moe/precisions/mxfp4.hpp: OCP MXFP4 weights, as gpt-oss publishes its experts: E2M1 codes (a sign, 2
// exponent bits, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives), two a byte, and one E8M0
// scale (a power of two) per 32 consecutive inputs of an output row; 4.25 bits a weight with the scales.
//
// A block of weights w gets the exponent s, the smallest with max|w| <= 6 * 2^s (so no code saturates),
// within [-127, 125] (E8M0 starts at -127), and the codes nearest to w / 2^s, ties to even. The codes are
// 0.5 apart below 2 and at most a quarter of their value apart above, so a weight's rounding error is at
// most max(2^s / 4, |w| / 4), and 2^s < max|w_block| / 3 unless s is -127: at most max(|w| / 4,
// max|w_block| / 12, 2^-129). Published MXFP4 weights decoded to f32 and packed again come back as the same
// values: a block's largest code c and scale 2^e give the exponent e - j with c * 2^j <= 6 < c * 2^(j+1)
// (or -127), and every smaller code times 2^j is again a code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../detail/small_floats.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "../simd_int8.hpp"
#include "q4.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct mxfp4 {
  static constexpr const char* kName = "mxfp4";
  static constexpr int kBlock = 32;
  static constexpr double kBitsPerWeight = 4.25;  // with one 1-byte scale per 32 weights
  static constexpr int kMinExponent = -127;       // E8M0's smallest scale
  // The largest exponent kept: with it, the panel's scale byte (below) times the table stays a finite f32.
  // E8M0 goes to 127, but 2^126 and 2^127 times the larger codes overflow f32.
  static constexpr int kMaxExponent = 125;
  static constexpr float kMaxMagnitude = 6.0f * 4.253529586511731e37f;  // 6 * 2^125
  using Activations = activation_coding::F32Rows;

  // The exponent s of a block of n weights (the top of this file).
  static int block_exponent(const float* w, Index n) {
    float largest = 0.0f;
    for (Index i = 0; i < n; ++i) largest = std::fmax(largest, std::fabs(w[i]));
    if (largest == 0.0f) return kMinExponent;
    int top;
    std::frexp(largest, &top);  // largest in [2^(top-1), 2^top), so largest / 2^(top-3) lies in [4, 8)
    int s = top - 3;
    if (largest > std::ldexp(6.0f, s)) ++s;
    return std::clamp(s, kMinExponent, kMaxExponent);
  }
  // The E2M1 code of w in a block of exponent s. ldexp scales by a power of two, exactly unless the quotient
  // falls below 2^-126, where it rounds to the code 0 all the same.
  static std::uint8_t code(float w, int s) { return detail::float_to_e2m1(std::ldexp(w, -s)); }
  static void round_trip_row(const float* w, Index n, float* out) {
    for (Index k0 = 0; k0 < n; k0 += kBlock) {
      const Index count = std::min<Index>(kBlock, n - k0);
      const int s = block_exponent(w + k0, count);
      for (Index i = 0; i < count; ++i) out[k0 + i] = std::ldexp(detail::e2m1_to_float(code(w[k0 + i], s)), s);
    }
  }

  // q4's panel layout (precisions/q4.hpp): groups of kDecodeRows depth rows in one vector, eight nibbles a
  // 32-bit lane, here E2M1 codes. Every 32 depth rows have one scale byte per column, s + 128: the kernels
  // decode a code to half its value and the byte to 2^(s + 1) (simd::e2m1_nibble_to_float,
  // simd::load_exponent_bytes), so that E8M0's smallest scale, 2^-127, and every table entry are normal
  // floats, and byte 0 is the padding's 0.
  using Code = q4::Code;
  using Scale = std::uint8_t;
  static constexpr int kDecodeRows = q4::kDecodeRows;
  static constexpr int kCodesPerRow = q4::kCodesPerRow;
  static constexpr int kScaleRows = kBlock;
  static constexpr int kDepthMultiple = kDecodeRows;
  static constexpr Code kPaddingCode = 0;
  static constexpr Scale kPaddingScale = 0;
  static_assert(kBlock % kDecodeRows == 0, "an mxfp4 scale block must hold whole groups");
  // Quantises a row block by block: the scale byte s + 128 of block b to scales[b * kPanelColumns + column]
  // and each code of depth row k through store(k, code). mxfp4a8 shares it.
  template <class Store>
  static void pack_blocks(Scale* scales, Index column, const float* w, Index in, Store&& store) {
    for (Index k0 = 0; k0 < in; k0 += kBlock) {
      const Index count = std::min<Index>(kBlock, in - k0);
      const int s = block_exponent(w + k0, count);
      scales[k0 / kBlock * detail::kernels::kPanelColumns + column] = static_cast<Scale>(s + 128);
      for (Index i = 0; i < count; ++i) store(k0 + i, code(w[k0 + i], s));
    }
  }
  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    pack_blocks(scales, column, w, in, [&](Index k, unsigned c) { q4::store_nibble(codes, column, k, c); });
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) {
    return detail::simd::load_exponent_bytes(s);
  }

  using Group = q4::Group;
  MOE_ALWAYS_INLINE static Group load_group(const Code* group) { return q4::load_group(group); }
  MOE_ALWAYS_INLINE static detail::simd::Vec decode(const Group& group, int j, int v) {
    return detail::simd::e2m1_nibble_to_float(group, j * detail::kernels::kTileVectors + v);
  }
  // As q4: the decode is a shift and a lookup with 32 registers, and more instructions than the FMA with 16.
  static constexpr int kPairRows = q4::kPairRows;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
