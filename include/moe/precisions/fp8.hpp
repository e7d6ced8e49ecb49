// moe/precisions/fp8.hpp: FP8 weights as DeepSeek-V3/R1, Qwen3 FP8 and GLM-4.5-FP8 publish them: e4m3fn codes
// (detail/small_floats.hpp), 1 byte a weight, and one f32 scale per output row every 128 inputs, w = code *
// scale. A checkpoint's 128 x 128 blocks give each of their rows the block's scale, so its codes and scales
// are kept as published (io/ packs them without a round trip through f32). Converted from other weights,
// each 128 inputs of a row get the scale max|w| / 448 and codes rounded to nearest, ties to even.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../detail/small_floats.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct fp8 {
  static constexpr const char* kName = "fp8";
  static constexpr int kBlock = 128;
  static constexpr double kBitsPerWeight = 8.25;  // with one f32 scale per 128 weights
  // The largest |w| whose block scale, times the 2^8 the decode leaves out, is still a finite f32.
  static constexpr float kMaxMagnitude = 3.4028234663852886e38f / 256.0f;
  using Activations = activation_coding::F32Rows;

  // The scale of a block of n weights: max|w| / 448, or 0 when that is below FLT_MIN (the block is then
  // stored as zeros, as q8 and q4 store theirs).
  static float block_scale(const float* w, Index n) {
    float largest = 0.0f;
    for (Index i = 0; i < n; ++i) largest = std::fmax(largest, std::fabs(w[i]));
    const float scale = largest / detail::kE4m3Max;
    return scale >= 1.1754943508222875e-38f ? scale : 0.0f;
  }
  static std::uint8_t code(float w, float scale) { return scale > 0.0f ? detail::float_to_e4m3(w / scale) : 0; }
  static void round_trip_row(const float* w, Index n, float* out) {
    for (Index k0 = 0; k0 < n; k0 += kBlock) {
      const Index count = std::min<Index>(kBlock, n - k0);
      const float scale = block_scale(w + k0, count);
      for (Index i = 0; i < count; ++i) out[k0 + i] = detail::e4m3_to_float(code(w[k0 + i], scale)) * scale;
    }
  }

  // A depth row of a panel is kPanelColumns codes; every kBlock depth rows have one f32 scale per column,
  // stored times 2^8: the kernels decode a code to its value times 2^-8 (simd::load_e4m3).
  using Code = std::uint8_t;
  using Scale = float;
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns;
  static constexpr int kScaleRows = kBlock;
  static constexpr int kDepthMultiple = 1;
  static constexpr Code kPaddingCode = 0;
  static constexpr Scale kPaddingScale = 0.0f;
  static constexpr float kDecodeScale = 256.0f;

  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    for (Index k0 = 0; k0 < in; k0 += kBlock) {
      const Index count = std::min<Index>(kBlock, in - k0);
      const float scale = block_scale(w + k0, count);
      for (Index i = 0; i < count; ++i) codes[(k0 + i) * kCodesPerRow + column] = code(w[k0 + i], scale);
      scales[k0 / kBlock * detail::kernels::kPanelColumns + column] = scale * kDecodeScale;
    }
  }
  // Stores a checkpoint's row as it is: its e4m3 codes row[0, in) and the f32 scales of its blocks of
  // block_cols inputs (a multiple of kBlock, so each of this column's scale blocks lies in one of them).
  static void pack_column_e4m3(Code* codes, Scale* scales, Index column, const std::uint8_t* row,
                               const float* block_scales, Index block_cols, Index in) {
    for (Index k = 0; k < in; ++k) codes[k * kCodesPerRow + column] = row[k];
    for (Index k0 = 0; k0 < in; k0 += kBlock)
      scales[k0 / kBlock * detail::kernels::kPanelColumns + column] = block_scales[k0 / block_cols] * kDecodeScale;
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) { return detail::simd::load(s); }

  static constexpr int kDecodeRows = 1;
  // As q8: 32 registers pair 1-row tiles only, 16 pair up to 2 rows.
  static constexpr int kPairRows = detail::simd::kRegisters >= 32 ? 1 : 2;
  MOE_ALWAYS_INLINE static void decode_row(const Code* row, detail::simd::Vec (&w)[detail::kernels::kTileVectors]) {
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) w[v] =
        detail::simd::load_e4m3(row + v * detail::simd::kWidth);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
