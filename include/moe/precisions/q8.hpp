// moe/precisions/q8.hpp: int8 weights, 1 byte a weight, symmetric per output row: w = q * scale_row with
// scale_row = max|w_row| / 127 and q = round(w / scale_row) in [-127, 127]; one f32 scale per row.
#pragma once

#include <cmath>
#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct q8 {
  static constexpr const char* kName = "q8";
  static constexpr double kBitsPerWeight = 8.0;  // plus one f32 scale per output row
  static constexpr float kMaxMagnitude = 3.4028234663852886e38f;
  using Activations = activation_coding::F32Rows;

  // The scale of a row: max|w| / 127, or 0 when max|w| is below FLT_MIN (the scale would underflow and
  // w / scale be NaN), in which case the row is stored as zeros.
  static float row_scale(const float* w, Index n) {
    float largest = 0.0f;
    for (Index i = 0; i < n; ++i) largest = std::fmax(largest, std::fabs(w[i]));
    return largest >= 1.1754943508222875e-38f ? largest / 127.0f : 0.0f;
  }
  static std::int8_t code(float w, float scale) {
    const float r = scale > 0.0f ? std::nearbyint(w / scale) : 0.0f;
    return static_cast<std::int8_t>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r));
  }
  static void round_trip_row(const float* w, Index n, float* out) {
    const float scale = row_scale(w, n);
    for (Index i = 0; i < n; ++i) out[i] = float(code(w[i], scale)) * scale;
  }

  // A depth row of a panel: kPanelColumns codes; the panel has one f32 scale per column (output row),
  // which multiplies the finished sums.
  using Code = std::int8_t;
  using Scale = float;
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns;
  static constexpr int kScaleRows = -1;  // one scale per column for the whole depth
  static constexpr int kDepthMultiple = 1;
  static constexpr Code kPaddingCode = 0;
  static constexpr Scale kPaddingScale = 1.0f;
  // Stores a row's codes plus Offset, Interleave depth rows of a column lane together (q8a8 shares it).
  template <int Interleave, int Offset, class C>
  static void pack_codes(C* codes, Scale* scales, Index column, const float* w, Index in) {
    const float scale = row_scale(w, in);
    for (Index k = 0; k < in; ++k)
      codes[detail::kernels::interleaved_code<Interleave, detail::kernels::kPanelColumns>(k, column)] =
          static_cast<C>(code(w[k], scale) + Offset);
    scales[column] = scale > 0.0f ? scale : 1.0f;
  }
  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    pack_codes<1, 0>(codes, scales, column, w, in);
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) { return detail::simd::load(s); }

  static constexpr int kDecodeRows = 1;
  // With 32 registers q8 pairs 1-row tiles only (kernels::multiply_panels): its 2-row tiles already have 8
  // FMA chains and are bound by the instructions that widen its codes.
  static constexpr int kPairRows = detail::simd::kRegisters >= 32 ? 1 : 2;
  MOE_ALWAYS_INLINE static void decode_row(const Code* row, detail::simd::Vec (&w)[detail::kernels::kTileVectors]) {
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) w[v] =
        detail::simd::load_i8(row + v * detail::simd::kWidth);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
