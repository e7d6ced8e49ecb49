// moe/precisions/f16.hpp: IEEE binary16 weights, 2 bytes a weight, rounded to nearest even; a layer refuses
// |w| > 65504 (encode alone rounds it to 65504 or Inf).
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../detail/half_floats.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "elementwise.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct f16 : Elementwise<f16, std::uint16_t> {
  static constexpr const char* kName = "f16";
  static constexpr double kBitsPerWeight = 16.0;
  static constexpr float kMaxMagnitude = 65504.0f;  // the largest finite f16

  static Storage encode(float value) { return detail::float_to_f16(value); }
  static float decode(Storage stored) { return detail::f16_to_float(stored); }
  MOE_ALWAYS_INLINE static void decode_row(const Code* row, detail::simd::Vec (&w)[detail::kernels::kTileVectors]) {
    MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) w[v] =
        detail::simd::load_f16(row + v * detail::simd::kWidth);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
