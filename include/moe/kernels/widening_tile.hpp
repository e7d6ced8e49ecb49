// moe/kernels/widening_tile.hpp: the tile of the precisions with f32 activations (activation_coding::F32Rows):
// a few token rows times one or two packed weight panels (panel.hpp), the weights widened to f32 lanes in
// registers by the precision's decode, then f32 FMAs.
#pragma once

#include <algorithm>

#include "../config.hpp"
#include "../simd.hpp"
#include "panel.hpp"
#include "prefetch.hpp"
#include "tile_shape.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// sum[p][r][v] += rows[r][k] * w[p][v] for the weights w of one depth row k of each of Panels panels.
template <int Rows, int Panels>
MOE_ALWAYS_INLINE void fma_rows(const float* const* rows, Index k, const detail::simd::Vec (&w)[Panels][kTileVectors],
                                detail::simd::Vec (&sum)[Panels][Rows][kTileVectors]) {
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    const detail::simd::Vec x = detail::simd::broadcast(rows[r][k]);
    MOE_UNROLL for (int p = 0; p < Panels; ++p) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) sum[p][r][v] = detail::simd::fma(x, w[p][v], sum[p][r][v]);
    }
  }
}

// sum[p][r][v] += rows[r][k] * w_p[k][v-th vector] for one depth row k of each of Panels panels, the
// weights decoded a depth row at a time (Precision::decode_row).
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void accumulate_row(const float* const* rows, const typename Precision::Code* const* codes, Index k,
                                      detail::simd::Vec (&sum)[Panels][Rows][kTileVectors], bool prefetch) {
  static_assert(Precision::kDecodeRows == 1, "a precision that decodes groups of rows runs accumulate_group");
  constexpr int kRowBytes = Precision::kCodesPerRow * int(sizeof(typename Precision::Code));
  detail::simd::Vec w[Panels][kTileVectors];
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    const auto* row = codes[p] + k * Precision::kCodesPerRow;
    // With one or two token rows a tile is bound by memory, not FMAs: ask for the weights kPrefetchBytes
    // ahead so that DRAM requests overlap even where the hardware prefetcher is still ramping up (every
    // expert panel is a new stream; docs/PERFORMANCE.md, decision "Decode tiles prefetch 4 KiB ahead").
    // A larger tile prefetches when its caller says it is the first over the panel (`prefetch`): the one
    // that reads it from memory, while the later tiles find it in L2. The layer asks for it where an expert
    // has at most two tiles of tokens (stages::prefetches; docs/PERFORMANCE.md, decision
    // "The first token tile prefetches").
    prefetch_ahead<Rows, kRowBytes>(row, prefetch);
    Precision::decode_row(row, w[p]);
    // Pinned so that the rows reuse one loaded vector (pin).
    MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) detail::simd::pin(w[p][v]);
  }
  fma_rows<Rows, Panels>(rows, k, w, sum);
}

// The same for a precision that decodes a group of kDecodeRows depth rows from one load (q4), from k on,
// the rows up to k_end: one full-width load of the group per panel, then Precision::decode per weight
// vector; for q4 a shift and a lookup, where a widening load (vpmovzxbd: a load and a shuffle) per pair of
// vectors used to come first (docs/PERFORMANCE.md, decision "q4 decodes a group of depth rows from one
// load"). The vectors are not pinned: q4's are lookups, which no FMA can fold, and pinning them made GCC 12
// store each one to the stack every depth row. The rows run in order, so every sum keeps the order of
// accumulate_row.
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void accumulate_group(const float* const* rows, const typename Precision::Code* const* codes, Index k,
                                        Index k_end, detail::simd::Vec (&sum)[Panels][Rows][kTileVectors],
                                        bool prefetch, NextWeights& ahead) {
  static_assert(Precision::kDepthMultiple % Precision::kDecodeRows == 0 &&
                    (Precision::kScaleRows <= 0 || Precision::kScaleRows % Precision::kDecodeRows == 0),
                "a group of depth rows must not straddle the padded depth or a scale block");
  constexpr int kGroupBytes = Precision::kDecodeRows * Precision::kCodesPerRow * int(sizeof(typename Precision::Code));
  typename Precision::Group packed[Panels];
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    const auto* group = codes[p] + k * Precision::kCodesPerRow;
    prefetch_ahead<Rows, kGroupBytes>(group, prefetch);
    packed[p] = Precision::load_group(group);
  }
  MOE_UNROLL for (int j = 0; j < Precision::kDecodeRows; ++j) {
    if (j > 0 && k + j >= k_end) break;  // a depth that ends inside the group: the rest is padding
    ahead.fetch_line();
    detail::simd::Vec w[Panels][kTileVectors];
    MOE_UNROLL for (int p = 0; p < Panels; ++p) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) w[p][v] = Precision::decode(packed[p], j, v);
    }
    fma_rows<Rows, Panels>(rows, k + j, w, sum);
  }
}

// acc[p][r][v] += sum over depth rows k of rows[r][k] * w_p[k][v-th vector], weights widened to f32 lanes.
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void accumulate_rows(const float* const* rows, const typename Precision::Code* const* codes,
                                       Index k_begin, Index k_end,
                                       detail::simd::Vec (&acc)[Panels][kTileRows][kTileVectors], bool prefetch,
                                       NextWeights& next) {
  // Local copies of the accumulators and of `next`: GCC keeps a by-reference array in memory across the
  // loop, a store and a reload on every FMA's dependency chain, but a local one entirely in registers
  // (docs/PERFORMANCE.md, decision "Accumulators in a local array").
  detail::simd::Vec sum[Panels][Rows][kTileVectors];
  NextWeights ahead = next;
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) sum[p][r][v] = acc[p][r][v];
    }
  }
  if constexpr (Precision::kDecodeRows > 1) {
    for (Index k = k_begin; k < k_end; k += Precision::kDecodeRows)
      accumulate_group<Rows, Panels, Precision>(rows, codes, k, k_end, sum, prefetch, ahead);
  } else {
    for (Index k = k_begin; k < k_end; ++k) {
      ahead.fetch_line();
      accumulate_row<Rows, Panels, Precision>(rows, codes, k, sum, prefetch);
    }
  }
  next = ahead;
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) acc[p][r][v] = sum[p][r][v];
    }
  }
}

// acc[p][r][v] = sum_k rows[r][k] * W_p[k][v-th vector] for Rows token rows, `depth` rows of each of
// Panels panels. The accumulators stay in registers across the whole depth; the caller's epilogue reads
// them once per tile. Scales (Precision::kScaleRows): one per column multiplies the finished sums (q8);
// one per column every kScaleRows depth rows (q4) makes the tile sum each block with the bare codes and
// then add block sum * block scale, one FMA per accumulator per block, rather than a multiply per weight
// vector per depth row. Every tile, 1 to kTileRows rows and 1 or 2 panels, does the same for each
// accumulator in the same order, so a token's sums depend neither on the tile it lands in nor on the panel
// beside it. At 6 rows q4's block sums, the packed group, the 4 weight vectors and a broadcast take 30 of
// 32 registers and the running sums live in memory, read and written once per block, where scaling the
// weights instead costs a multiply per weight vector every depth row (docs/PERFORMANCE.md, decision
// "q4 tiles sum each block with the bare codes").
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void multiply_tile(const float* const* rows, const PanelRef<Precision> (&panels)[Panels], Index depth,
                                     detail::simd::Vec (&acc)[Panels][kTileRows][kTileVectors], bool prefetch,
                                     NextWeights& next) {
  constexpr int kScaleRows = Precision::kScaleRows;
  const typename Precision::Code* codes[Panels];
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    codes[p] = panels[p].codes;
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) acc[p][r][v] = detail::simd::broadcast(0.0f);
    }
  }
  if constexpr (kScaleRows > 0) {
    for (Index k0 = 0; k0 < depth; k0 += kScaleRows) {
      detail::simd::Vec block[Panels][kTileRows][kTileVectors];
      MOE_UNROLL for (int p = 0; p < Panels; ++p) {
        MOE_UNROLL for (int r = 0; r < Rows; ++r) {
          MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) block[p][r][v] = detail::simd::broadcast(0.0f);
        }
      }
      accumulate_rows<Rows, Panels, Precision>(rows, codes, k0, std::min<Index>(depth, k0 + kScaleRows), block,
                                               prefetch, next);
      MOE_UNROLL for (int p = 0; p < Panels; ++p) {
        const auto* block_scales = panels[p].scales + k0 / kScaleRows * kPanelColumns;
        MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
          const detail::simd::Vec scale = Precision::load_scales(block_scales + v * detail::simd::kWidth);
          MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[p][r][v] =
              detail::simd::fma(block[p][r][v], scale, acc[p][r][v]);
        }
      }
    }
  } else {
    accumulate_rows<Rows, Panels, Precision>(rows, codes, 0, depth, acc, prefetch, next);
    if constexpr (kScaleRows < 0) {
      MOE_UNROLL for (int p = 0; p < Panels; ++p) {
        MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
          const detail::simd::Vec scale = Precision::load_scales(panels[p].scales + v * detail::simd::kWidth);
          MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[p][r][v] = acc[p][r][v] * scale;
        }
      }
    }
  }
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
