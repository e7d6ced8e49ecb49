// moe/kernels/bf16_tile.hpp: the tile of the precisions with bf16 activations (activation_coding::Bf16Pairs:
// bf16a16): bf16 pair dot products with f32 sums (simd_bf16.hpp).
#pragma once

#include <cstdint>
#include <type_traits>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../simd.hpp"
#include "../simd_bf16.hpp"
#include "panel.hpp"
#include "prefetch.hpp"
#include "tile_shape.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// The bf16 tile: acc[r][v] = sum over depth pairs g of x[r][2g] * w[2g][v] + x[r][2g + 1] * w[2g + 1][v],
// one dot_bf16 per pair (vdpbf16ps: 32 multiply-adds an instruction against an f32 FMA's 16). The
// accumulators stay in registers as in accumulate_rows; an odd depth reads the zero padding row of both.
template <int Rows, class Precision>
MOE_ALWAYS_INLINE void multiply_tile_bf16(const Bf16Row* rows, const PanelRef<Precision>& panel, Index depth,
                                          detail::simd::Vec (&acc)[kTileRows][kTileVectors], bool prefetch,
                                          NextWeights& next) {
  static_assert(std::is_same<typename Precision::Code, std::uint16_t>::value &&
                    Precision::kCodesPerRow == kPanelColumns && Precision::kDepthMultiple == 2 &&
                    Precision::kScaleRows == 0,
                "the bf16 tile reads bf16 codes interleaved by two depth rows, unscaled (precisions/bf16a16.hpp)");
  constexpr int V = kTileVectors;
  constexpr int kPairCodes = 2 * kPanelColumns;  // one depth pair of the panel
  constexpr int kPairBytes = kPairCodes * int(sizeof(std::uint16_t));
  detail::simd::Vec sum[Rows][V];
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = detail::simd::broadcast(0.0f);
  }
  const std::uint16_t* codes = panel.codes;
  NextWeights ahead = next;  // local, as accumulate_rows explains
  const Index pairs = (depth + 1) / 2;
  for (Index g = 0; g < pairs; ++g, codes += kPairCodes) {
    prefetch_ahead<Rows, kPairBytes>(codes, prefetch);
    ahead.fetch_line();
    detail::simd::IVec w[V];
    MOE_UNROLL for (int v = 0; v < V; ++v) w[v] = detail::simd::load_int(codes + v * 2 * detail::simd::kWidth);
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      const detail::simd::Bf16Pair x = detail::simd::load_bf16_pair(rows[r].codes + 2 * g);
      MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = detail::simd::dot_bf16(sum[r][v], w[v], x);
    }
  }
  MOE_UNROLL for (int r = 0; r < Rows; ++r) { MOE_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = sum[r][v]; }
  next = ahead;
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
