// moe/kernels/int8_tile.hpp: the tile of the precisions with int8 activations (activation_coding::Int8Blocks:
// q8a8, q4a8): int8 x int8 dot products in int32 (simd_int8.hpp), scaled per activation block.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../simd.hpp"
#include "../simd_int8.hpp"
#include "panel.hpp"
#include "prefetch.hpp"
#include "tile_shape.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// Token rows of one int8-activation tile; multiply_rows runs a 6-row tile as two of them. 3 rows keep both
// the int32 block sums and the f32 sums in registers (3 x 4 each, with the 4 weight vectors and a
// broadcast: 29 of 32 registers; 3 x 2 each, 2 and 1: 15 of 16; AVX2's form for 8-bit codes needs two
// activation vectors and a constant more, and there the f32 sums wait on the stack between blocks). A
// 6-row tile has registers for its 24 int32 sums only, so at every block end it converts, stores and
// reloads its f32 sums; two 3-row tiles instead read each weight vector twice, the second time from L1
// (docs/PERFORMANCE.md, decision "The int8 tile is 3 rows, run twice for 6").
inline constexpr int kInt8TileRows = 3;
static_assert(kTileRows <= 2 * kInt8TileRows, "multiply_rows runs at most two int8 tiles");

// The int8-activation tile: acc[r][v] = sum over 32-row blocks b of
//   s_x[r][b] * sum_{k in b} x_code[r][k] * q_w[k][v]              (one scale per column, at the end: q8a8)
//   s_x[r][b] * d_w[b][v] * sum_{k in b} x_code[r][k] * q_w[k][v]  (a scale per column and block: q4a8)
// with the inner sums exact in int32 (simd::Int8Dot, the target's dot product for Precision::kCodeBits-bit
// codes). The weight codes are stored with an offset (Precision::kCodeOffset: +128, +8) that makes them
// unsigned; each block's sum starts at -offset * sum_k x_code[r][k] for the offset the dot product's
// operands still carry (Int8Dot::kOffset), which cancels it exactly. No lane can overflow: a block sums 32
// products of at most 255 * 128 in magnitude. Writes acc[0, Rows).
template <int Rows, class Precision>
MOE_ALWAYS_INLINE void multiply_tile_int8(const Int8Row* rows, const PanelRef<Precision>& panel, Index depth,
                                          detail::simd::Vec (*acc)[kTileVectors], bool prefetch) {
  constexpr int V = kTileVectors;
  constexpr bool kBlockScales = Precision::kScaleRows > 0;
  static_assert(Precision::kScaleRows == -1 || Precision::kScaleRows == kActivationBlock,
                "the int8 tile scales per column (-1) or per activation block");
  static_assert(
      std::is_same<typename Precision::Code, std::uint8_t>::value && Precision::kDepthMultiple % kActivationBlock == 0,
      "the int8 tile reads unsigned byte codes, interleaved by four depth rows, in whole activation blocks");
  using Dot = detail::simd::Int8Dot<Precision::kCodeBits>;
  static_assert(Precision::kCodeOffset == Dot::kStoredOffset, "codes are stored as q + 2^(bits - 1)");
  static_assert(kActivationBlock / 4 <= Dot::kMaxGroups, "a block's sums must fit the dot product's lanes");
  constexpr std::int32_t kOffset = Dot::kOffset;
  constexpr int kGroupBytes = 4 * Precision::kCodesPerRow;
  // The weights are pinned in registers for all rows: reloaded for each row instead, a tile is load-bound.
  static_assert(Rows <= kInt8TileRows, "the int32 and f32 sums of more rows do not fit the registers");
  detail::simd::Vec out[Rows][V];
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    MOE_UNROLL for (int v = 0; v < V; ++v) out[r][v] = detail::simd::broadcast(0.0f);
  }
  const std::uint8_t* codes = panel.codes;
  const Index blocks = (depth + kActivationBlock - 1) / kActivationBlock;
  for (Index b = 0; b < blocks; ++b) {
    detail::simd::IVec sum[Rows][V];
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      const detail::simd::IVec start = detail::simd::broadcast_int(-kOffset * rows[r].sums[b]);
      // The int16 sums start at zero and take the start when widened (finish, below). The start is
      // assigned here, not through an Int8Dot function (decision "int8 dot products per instruction set").
      MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = Dot::kInt16Sums ? detail::simd::broadcast_int(0) : start;
    }
    // A block's 8 groups of 4 depth rows, Precision::kGroupsPerStep at a time.
    constexpr int kGroupStep = Precision::kGroupsPerStep;
    MOE_NO_UNROLL for (int g0 = 0; g0 < kActivationBlock / 4; g0 += kGroupStep) {
      MOE_UNROLL for (int g = g0; g < g0 + kGroupStep; ++g, codes += kGroupBytes) {
        prefetch_ahead<Rows, kGroupBytes>(codes, prefetch);
        detail::simd::IVec w[V];
        Precision::load_int8_group(codes, w);
        MOE_UNROLL for (int v = 0; v < V; ++v) {
          w[v] = Dot::prepare(w[v]);
          detail::simd::pin(w[v]);
        }
        MOE_UNROLL for (int r = 0; r < Rows; ++r) {
          const typename Dot::Quad x = Dot::load_quad(rows[r].codes + b * kActivationBlock + 4 * g);
          MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = Dot::step(sum[r][v], w[v], x);
        }
      }
    }
    if constexpr (Dot::kInt16Sums) {  // the int16 sums start at zero: widen them and add the start now
      MOE_UNROLL for (int r = 0; r < Rows; ++r) {
        const detail::simd::IVec start = detail::simd::broadcast_int(-kOffset * rows[r].sums[b]);
        MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = Dot::finish(sum[r][v], start);
      }
    }
    if constexpr (kBlockScales) {
      detail::simd::Vec scale[V];
      MOE_UNROLL for (int v = 0; v < V; ++v) scale[v] =
          Precision::load_scales(panel.scales + b * kPanelColumns + v * detail::simd::kWidth);
      MOE_UNROLL for (int r = 0; r < Rows; ++r) {
        const detail::simd::Vec s = detail::simd::broadcast(rows[r].scales[b]);
        MOE_UNROLL for (int v = 0; v < V; ++v) out[r][v] =
            detail::simd::fma(detail::simd::to_float(sum[r][v]), scale[v] * s, out[r][v]);
      }
    } else {
      MOE_UNROLL for (int r = 0; r < Rows; ++r) {
        const detail::simd::Vec s = detail::simd::broadcast(rows[r].scales[b]);
        MOE_UNROLL for (int v = 0; v < V; ++v) out[r][v] =
            detail::simd::fma(detail::simd::to_float(sum[r][v]), s, out[r][v]);
      }
    }
  }
  MOE_UNROLL for (int v = 0; v < V; ++v) {
    if constexpr (kBlockScales) {
      MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[r][v] = out[r][v];
    } else {
      const detail::simd::Vec scale = Precision::load_scales(panel.scales + v * detail::simd::kWidth);
      MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[r][v] = out[r][v] * scale;
    }
  }
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
