// moe/precisions/q8a8.hpp: q8's weights (precisions/q8.hpp) times activations quantised to int8 per token in
// blocks of 32 (kernels/quantize.hpp): the dot products run on int8 x int8 in int32 (each instruction set's
// form: simd_int8.hpp's Int8Dot; kernels/int8_tile.hpp). The activations trade their exactness (a
// relative error of up to 1/254 of each block's largest |x|, per projection input) for int8 dot products,
// the kind llama.cpp's q8_0 path uses.
#pragma once

#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "../simd_int8.hpp"
#include "q8.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct q8a8 {
  static constexpr const char* kName = "q8a8";
  static constexpr double kBitsPerWeight = q8::kBitsPerWeight;
  static constexpr float kMaxMagnitude = q8::kMaxMagnitude;
  using Activations = activation_coding::Int8Blocks;
  static void round_trip_row(const float* w, Index n, float* out) { q8::round_trip_row(w, n, out); }

  // q8's codes made unsigned (q + 128: vpdpbusd multiplies unsigned by signed bytes) and interleaved by
  // four depth rows: the 32-bit lane of column c in depth group g (rows 4g..4g+3) holds those four rows'
  // codes of column c, byte j for row 4g + j; group g is kPanelColumns such lanes, vector by vector. The
  // depth is padded to whole activation blocks; q8's column scales multiply the finished sums.
  using Code = std::uint8_t;
  using Scale = float;
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns;
  static constexpr int kScaleRows = -1;
  static constexpr int kDepthMultiple = detail::kernels::kActivationBlock;
  static constexpr Code kPaddingCode = 0x80;  // q = 0
  static constexpr Scale kPaddingScale = 1.0f;
  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    q8::pack_codes<4, kCodeOffset>(codes, scales, column, w, in);
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) { return detail::simd::load(s); }

  // The int8 tile: the offset its sums cancel, its group of four depth rows as kTileVectors vectors of
  // lanes, and the groups one iteration of its block loop runs. One group an iteration: GCC 12 at -O3
  // unrolls a loop of 8 completely by itself, and q8a8 runs faster kept a loop, for a reason not yet known
  // (docs/PERFORMANCE.md, decision "q8a8 keeps its group loop a loop").
  static constexpr int kCodeOffset = 128;
  static constexpr int kCodeBits = 8;
  static constexpr int kGroupsPerStep = 1;
  MOE_ALWAYS_INLINE static void load_int8_group(const Code* group,
                                                detail::simd::IVec (&w)[detail::kernels::kTileVectors]) {
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) w[v] =
        detail::simd::load_int(group + v * 4 * detail::simd::kWidth);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
