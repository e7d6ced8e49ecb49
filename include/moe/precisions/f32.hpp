// moe/precisions/f32.hpp: f32 weights, 4 bytes a weight, stored as they are.
#pragma once

#include "../config.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "elementwise.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct f32 : Elementwise<f32, float> {
  static constexpr const char* kName = "f32";
  static constexpr double kBitsPerWeight = 32.0;
  static constexpr float kMaxMagnitude = 3.4028234663852886e38f;

  static Storage encode(float value) { return value; }
  static float decode(Storage stored) { return stored; }
  MOE_ALWAYS_INLINE static void decode_row(const Code* row, detail::simd::Vec (&w)[detail::kernels::kTileVectors]) {
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) w[v] =
        detail::simd::load(row + v * detail::simd::kWidth);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
