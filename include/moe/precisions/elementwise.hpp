// moe/precisions/elementwise.hpp: what the precisions that store each weight as one code of its own, with no
// scales (f32, bf16, f16), share: a panel row of kPanelColumns codes, f32 activations, a decode of one depth
// row at a time, and the round trip and packing through the precision's encode and decode. A precision
// derives from Elementwise<itself, its code type> and adds its name, bits, largest magnitude, encode,
// decode and decode_row (and may hide pack_column with its own layout, as bf16 does).
#pragma once

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../kernels/tile_shape.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

template <class Precision, class CodeType>
struct Elementwise {
  using Activations = activation_coding::F32Rows;
  using Storage = CodeType;
  using Code = CodeType;
  using Scale = float;  // none
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns;
  static constexpr int kScaleRows = 0;
  static constexpr int kDepthMultiple = 1;
  static constexpr Code kPaddingCode = Code(0);
  static constexpr Scale kPaddingScale = 0.0f;
  static constexpr int kDecodeRows = 1;
  static constexpr int kPairRows = 2;

  static void round_trip_row(const float* w, Index n, float* out) {
    for (Index i = 0; i < n; ++i) out[i] = Precision::decode(Precision::encode(w[i]));
  }
  static void pack_column(Code* codes, Scale*, Index column, const float* w, Index in) {
    for (Index k = 0; k < in; ++k) codes[k * kCodesPerRow + column] = Precision::encode(w[k]);
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
