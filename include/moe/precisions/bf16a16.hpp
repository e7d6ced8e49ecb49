// moe/precisions/bf16a16.hpp: bf16's weights (precisions/bf16.hpp) times activations rounded to bf16 (to
// nearest even) per value: the dot products run on bf16 pairs with f32 sums (AVX-512 BF16's vdpbf16ps where
// the target has it; kernels/bf16_tile.hpp). The activations trade their exactness (a relative error of up
// to 2^-8 per value, half a unit in its 8th bit) for twice the multiply-adds per instruction of f32 FMAs,
// the kind llama.cpp's bf16 path uses.
#pragma once

#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../kernels/tile_shape.hpp"
#include "bf16.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct bf16a16 {
  static constexpr const char* kName = "bf16a16";
  static constexpr double kBitsPerWeight = bf16::kBitsPerWeight;
  static constexpr float kMaxMagnitude = bf16::kMaxMagnitude;
  using Activations = activation_coding::Bf16Pairs;

  using Storage = std::uint16_t;
  static Storage encode(float value) { return bf16::encode(value); }
  static float decode(Storage stored) { return bf16::decode(stored); }
  static void round_trip_row(const float* w, Index n, float* out) { bf16::round_trip_row(w, n, out); }

  // bf16 codes interleaved by two depth rows for vdpbf16ps (simd_bf16.hpp): the 32-bit lane of column c
  // in depth pair g holds row 2g's code in its low half and row 2g + 1's in its high half; the depth is
  // padded to even.
  using Code = std::uint16_t;
  using Scale = float;  // none
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns;
  static constexpr int kScaleRows = 0;
  static constexpr int kDepthMultiple = 2;
  static constexpr Code kPaddingCode = 0;
  static constexpr Scale kPaddingScale = 0.0f;
  static void pack_column(Code* codes, Scale*, Index column, const float* w, Index in) {
    for (Index k = 0; k < in; ++k) codes[detail::kernels::interleaved_code<2, kCodesPerRow>(k, column)] = encode(w[k]);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
