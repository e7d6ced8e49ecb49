// moe/precisions/bf16.hpp: bf16 weights, 2 bytes a weight: the top half of the f32, rounded to nearest even
// (the format of most Hugging Face checkpoints).
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../detail/half_floats.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "elementwise.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct bf16 : Elementwise<bf16, std::uint16_t> {
  static constexpr const char* kName = "bf16";
  static constexpr double kBitsPerWeight = 16.0;
  static constexpr float kMaxMagnitude = 3.4028234663852886e38f;

  static Storage encode(float value) { return detail::float_to_bf16(value); }
  static float decode(Storage stored) { return detail::bf16_to_float(stored); }

  // A depth row of a panel holds its vectors in pairs: the 32-bit lane l of pair (v, v + 1), v even, holds
  // lane l of vector v in its low half and of vector v + 1 in its high half, so that one load and two bit
  // operations give both as f32 (simd::load_bf16_halves).
  static void pack_column(Code* codes, Scale*, Index column, const float* w, Index in) {
    const Index vector = column / detail::simd::kWidth, lane = column % detail::simd::kWidth;
    const Index slot = (vector - vector % 2) * detail::simd::kWidth + 2 * lane + vector % 2;
    for (Index k = 0; k < in; ++k) codes[k * kCodesPerRow + slot] = encode(w[k]);
  }
  MOE_ALWAYS_INLINE static void decode_row(const Code* row, detail::simd::Vec (&w)[detail::kernels::kTileVectors]) {
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; v += 2)
        detail::simd::load_bf16_halves(row + v * detail::simd::kWidth, w[v], w[v + 1]);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
