// moe/precisions/mxfp4a8.hpp: mxfp4's weights (precisions/mxfp4.hpp) times the int8 activations of q8a8
// (precisions/q8a8.hpp, kernels/quantize.hpp): E2M1 codes turned into int8 by a byte lookup in registers,
// then the int8 tile's dot products.
#pragma once

#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "../simd_int8.hpp"
#include "mxfp4.hpp"
#include "q4a8.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct mxfp4a8 {
  static constexpr const char* kName = "mxfp4a8";
  static constexpr double kBitsPerWeight = mxfp4::kBitsPerWeight;
  static constexpr float kMaxMagnitude = mxfp4::kMaxMagnitude;
  using Activations = activation_coding::Int8Blocks;
  static void round_trip_row(const float* w, Index n, float* out) { mxfp4::round_trip_row(w, n, out); }

  // q4a8's layout (interleaved by four depth rows, two columns a byte) with E2M1 codes, and mxfp4's scale
  // bytes s + 128, one per column every 32 depth rows. A code v becomes the int8 tile's 8-bit code
  // 2v + 128 (simd::e2m1_to_offset_bytes: twice the value is an integer in [-12, 12]); the tile's 8-bit dot
  // product then runs as for q8a8, and the scales give 2^(s + 1) / 4 = 2^(s - 1). That product is an f32
  // subnormal for s = -127 and -126 (blocks whose weights are all below 6 * 2^-126), which an FTZ mode flushes
  // to zero.
  using Code = std::uint8_t;
  using Scale = mxfp4::Scale;
  static constexpr int kCodesPerRow = q4a8::kCodesPerRow;
  static constexpr int kScaleRows = mxfp4::kBlock;
  static constexpr int kDepthMultiple = detail::kernels::kActivationBlock;
  static constexpr Code kPaddingCode = 0;  // both nibbles E2M1 0
  static constexpr Scale kPaddingScale = 0;
  static_assert(mxfp4::kBlock == detail::kernels::kActivationBlock, "a weight block must be an activation block");
  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    mxfp4::pack_blocks(scales, column, w, in, [&](Index k, unsigned c) { q4a8::store_nibble(codes, column, k, c); });
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) {
    return detail::simd::load_exponent_bytes(s) * detail::simd::broadcast(0.25f);
  }

  // The int8 tile: q4a8's nibble split, then the lookup, per vector; 8-bit codes with q8a8's offset; q4a8's
  // groups per iteration (its reasons hold: the same nibble split before the dot product).
  static constexpr int kCodeOffset = 128;
  static constexpr int kCodeBits = 8;
  static constexpr int kGroupsPerStep = q4a8::kGroupsPerStep;
  MOE_ALWAYS_INLINE static void load_int8_group(const Code* group,
                                                detail::simd::IVec (&w)[detail::kernels::kTileVectors]) {
    q4a8::load_int8_group(group, w);
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) w[v] = detail::simd::e2m1_to_offset_bytes(w[v]);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
