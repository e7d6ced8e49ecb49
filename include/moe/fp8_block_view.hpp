// moe/fp8_block_view.hpp: a read-only view of FP8 weights as the published FP8 checkpoints store them.
#pragma once

#include <cstdint>

#include "config.hpp"
#include "detail/small_floats.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// W[out][in] (PyTorch layout, rows x cols, row-major, no stride) as e4m3fn codes, with one f32 scale per
// block_rows x block_cols block: W[o][i] = e4m3(codes[o * cols + i]) * scales[(o / block_rows) *
// scale_cols() + i / block_cols] (transformers' finegrained_fp8 layout: a weight and its weight_scale_inv;
// DeepSeek-V3/R1 and Qwen3 FP8 use 128 x 128 blocks; the last blocks of a row or column may be partial).
// Layer::set_expert takes it: the fp8 precision keeps the codes and scales as they are where every 128
// inputs of a row lie in one block (block_cols a multiple of 128, or one block a row: fbgemm_fp8's per-row
// scales), and any other precision, or other blocks, decode the weights to f32 first.
struct Fp8BlockView {
  const std::uint8_t* codes = nullptr;
  const float* scales = nullptr;
  Index rows = 0, cols = 0;
  Index block_rows = 128, block_cols = 128;

  Index scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  // The scales of row o's blocks, one per block_cols inputs.
  const float* row_scales(Index o) const { return scales + (o / block_rows) * scale_cols(); }
  float value(Index o, Index i) const {
    return detail::e4m3_to_float(codes[o * cols + i]) * row_scales(o)[i / block_cols];
  }
  // Row o as f32 values, to out[0, cols).
  void decode_row(Index o, float* out) const {
    const std::uint8_t* row = codes + o * cols;
    const float* s = row_scales(o);
    for (Index i = 0; i < cols; ++i) out[i] = detail::e4m3_to_float(row[i]) * s[i / block_cols];
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
