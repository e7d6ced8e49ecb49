// moe/precisions/q4.hpp: int4 weights, half a byte a weight, symmetric in blocks of 32 consecutive inputs of
// one output row (the block shape of llama.cpp's q4_0): w = q * d with d = max|w_block| / 7 stored as f16
// and q = clamp(round(w / d), -8, 7); 4.5 bits a weight with the scales.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../detail/half_floats.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "../simd_int8.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct q4 {
  static constexpr const char* kName = "q4";
  static constexpr int kBlock = 32;
  static constexpr double kBitsPerWeight = 4.5;  // with one f16 scale per 32 weights
  // The largest |w| whose block scale (max|w| / 7) is still a finite f16.
  static constexpr float kMaxMagnitude = 65504.0f * 7.0f;
  using Activations = activation_coding::F32Rows;

  // Quantises one block of n <= kBlock weights of a row into q[i] in [-8, 7]; returns the f16 scale d.
  // The values are rounded with the f16 d itself, so q * decode(d) is what the kernels compute.
  static std::uint16_t quantize(const float* w, int n, std::int8_t* q) {
    float largest = 0.0f;
    for (int i = 0; i < n; ++i) largest = std::fmax(largest, std::fabs(w[i]));
    const std::uint16_t d_bits = detail::float_to_f16(largest / 7.0f);
    const float d = detail::f16_to_float(d_bits);
    for (int i = 0; i < n; ++i) {
      const float r = d > 0.0f ? std::nearbyint(w[i] / d) : 0.0f;
      q[i] = static_cast<std::int8_t>(r > 7.0f ? 7.0f : (r < -8.0f ? -8.0f : r));
    }
    return d_bits;
  }
  static void round_trip_row(const float* w, Index n, float* out) {
    for (Index k0 = 0; k0 < n; k0 += kBlock) {
      const int count = int(std::min<Index>(kBlock, n - k0));
      std::int8_t q[kBlock];
      const float d = detail::f16_to_float(quantize(w + k0, count, q));
      for (int i = 0; i < count; ++i) out[k0 + i] = float(q[i]) * d;
    }
  }
  // Quantises a row block by block: the f16 scale of block b to scales[b * kPanelColumns + column] (the
  // panel's scale layout) and each code q of depth row k through store(k, q). q4a8 shares it.
  template <class Store>
  static void pack_blocks(std::uint16_t* scales, Index column, const float* w, Index in, Store&& store) {
    for (Index k0 = 0; k0 < in; k0 += kBlock) {
      const int n = int(std::min<Index>(kBlock, in - k0));
      std::int8_t q[kBlock];
      scales[k0 / kBlock * detail::kernels::kPanelColumns + column] = quantize(w + k0, n, q);
      for (int i = 0; i < n; ++i) store(k0 + i, q[i]);
    }
  }

  // A panel holds kPanelColumns / 2 bytes a depth row, in groups of kDecodeRows depth rows (8 /
  // kTileVectors: 2 with 32 registers) that are one vector of 32-bit lanes: the lane l of group g holds
  // eight nibbles, nibble n (bits 4n to 4n + 3) the code of depth row g * kDecodeRows + n / kTileVectors,
  // column lane l of vector n % kTileVectors, each as the 4-bit two's complement of q; every 32 depth rows
  // have one f16 scale per column. The depth is padded to whole groups. One full-width load then gives a
  // group's weight vectors by a shift and a lookup each, or two shifts and a conversion
  // (simd::nibble_to_float).
  static constexpr int kDecodeRows = 8 / detail::kernels::kTileVectors;
  using Code = std::uint8_t;
  using Scale = std::uint16_t;  // f16
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns / 2;
  static constexpr int kScaleRows = kBlock;
  static constexpr int kDepthMultiple = kDecodeRows;
  static constexpr Code kPaddingCode = 0;  // q = 0
  static constexpr Scale kPaddingScale = 0;
  static_assert(kBlock % kDecodeRows == 0, "a q4 scale block must hold whole groups");
  // Stores the low 4 bits of `nibble` as depth row k of column `column` in the layout above: nibble
  // (k % kDecodeRows) * kTileVectors + vector of the 32-bit lane `lane` of group k / kDecodeRows, read and
  // written as a whole uint32 so that it holds the value the kernels' 32-bit loads see on either byte order.
  // mxfp4 stores its E2M1 codes with it.
  static void store_nibble(Code* codes, Index column, Index k, unsigned nibble) {
    const Index vector = column / detail::simd::kWidth, lane = column % detail::simd::kWidth;
    const Index shift = 4 * (k % kDecodeRows * detail::kernels::kTileVectors + vector);
    Code* at_lane = codes + (k - k % kDecodeRows) * kCodesPerRow + lane * 4;
    std::uint32_t bits;
    std::memcpy(&bits, at_lane, sizeof bits);
    bits = (bits & ~(std::uint32_t(15) << shift)) | ((std::uint32_t(nibble) & 15u) << shift);
    std::memcpy(at_lane, &bits, sizeof bits);
  }
  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    pack_blocks(scales, column, w, in, [&](Index k, int q) { store_nibble(codes, column, k, unsigned(q)); });
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) { return detail::simd::load_f16(s); }

  // The kernels decode a group from one load: load_group, then decode(group, j, v) for vector v of its
  // depth row j.
  using Group = detail::simd::IVec;
  MOE_ALWAYS_INLINE static Group load_group(const Code* group) { return detail::simd::load_int(group); }
  MOE_ALWAYS_INLINE static detail::simd::Vec decode(const Group& group, int j, int v) {
    return detail::simd::nibble_to_float(group, j * detail::kernels::kTileVectors + v);
  }
  // With 32 registers q4 pairs 1- and 2-row tiles (kernels::multiply_panels): with a group decoded from one
  // load, its 1-row tile is bound by the FMA latency of its 4 chains. With 16 never: there a nibble takes
  // two shifts and a conversion, and those instructions, not the FMA latency, bound the tile
  // (docs/PERFORMANCE.md, decision "q4 stores 4-bit two's complements").
  static constexpr int kPairRows = detail::simd::kRegisters >= 32 ? 2 : 0;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
