// moe/kernels/gemm.hpp: a few token rows times one or two packed weight panels (panel.hpp): the tile the
// precision's activations pick (widening_tile.hpp, int8_tile.hpp, bf16_tile.hpp), run for a run-time row
// count, its accumulators handed to the caller's epilogue.
#pragma once

#include <type_traits>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../simd.hpp"
#include "bf16_tile.hpp"
#include "int8_tile.hpp"
#include "panel.hpp"
#include "prefetch.hpp"
#include "tile_shape.hpp"
#include "widening_tile.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// The activation rows a tile multiplies: f32 rows, int8 rows or bf16 rows (activation_coding.hpp).
template <class Precision>
using ActivationRow = typename Precision::Activations::Row;

// Runs the tile for a run-time row count 1..kTileRows, then hands the accumulators to
// epilogue(acc, rows). Each count is its own instantiation so the accumulator array is fully unrolled into
// registers.
template <class Precision, class Epilogue, int Rows = kTileRows>
MOE_ALWAYS_INLINE void multiply_rows(const ActivationRow<Precision>* rows, int count, const PanelRef<Precision>& panel,
                                     Index depth, Epilogue&& epilogue, bool prefetch = false,
                                     NextWeights* next = nullptr) {
  if constexpr (Rows > 1) {
    if (count < Rows) {
      multiply_rows<Precision, Epilogue, Rows - 1>(rows, count, panel, depth, static_cast<Epilogue&&>(epilogue),
                                                   prefetch, next);
      return;
    }
  }
  NextWeights none;
  NextWeights& ahead = next != nullptr ? *next : none;
  detail::simd::Vec acc[1][kTileRows][kTileVectors];
  using Coding = typename Precision::Activations;
  if constexpr (std::is_same<Coding, activation_coding::Int8Blocks>::value) {
    // The int8 tile brings in no next weights: with them, q8a8 and q4a8 showed no consistent gain
    // (docs/PERFORMANCE.md, decision "The next panel streams in during the current one").
    multiply_tile_int8<(Rows < kInt8TileRows ? Rows : kInt8TileRows), Precision>(rows, panel, depth, acc[0], prefetch);
    if constexpr (Rows > kInt8TileRows)
      multiply_tile_int8<Rows - kInt8TileRows, Precision>(rows + kInt8TileRows, panel, depth, acc[0] + kInt8TileRows,
                                                          prefetch);
  } else if constexpr (std::is_same<Coding, activation_coding::Bf16Pairs>::value) {
    multiply_tile_bf16<Rows, Precision>(rows, panel, depth, acc[0], prefetch, ahead);
  } else {
    const PanelRef<Precision> panels[1] = {panel};
    multiply_tile<Rows, 1, Precision>(rows, panels, depth, acc, prefetch, ahead);
  }
  epilogue(acc[0], Rows);
}

// Token rows up to which multiply_panels runs two panels in one tile; 0: never. The precision's kPairRows
// for the widening tile (docs/PERFORMANCE.md, decision "Two panels per tile at decode"); never for the
// int8 and bf16 dot products, which do 2-4x the work per instruction.
template <class Precision>
constexpr int pair_rows() {
  if constexpr (std::is_same<typename Precision::Activations, activation_coding::F32Rows>::value)
    return Precision::kPairRows;
  else
    return 0;
}

// panel_count (1 or 2) panels of one matrix (same depth) times the same token rows: epilogue(i, acc, rows)
// for panels[i], in order, with what multiply_rows would give each alone, bit for bit. Why two: with one
// or two rows a tile's accumulators are only kTileVectors (or twice that) dependent FMA chains, and each
// waits an FMA's latency (4 cycles on current x86 cores) every depth row, so a 1-row tile whose weights
// decode cheaply is bound by that latency: 2 FMA ports at that latency need 8 independent chains to stay
// busy, and a 1-row tile has 4 (2 with 16 registers). Two panels in one tile double the independent chains
// without changing any sum's order (docs/PERFORMANCE.md, decision "Two panels per tile at decode"). Larger
// tiles have chains enough, and the precisions pair_rows leaves out run one panel after the other. One call
// site of multiply_rows serves every case: each is inlined whole (all row counts), and more copies would
// cost compile time in every layer instantiation. `prefetch`: the tile is the first to read these panels,
// from memory, so tiles of 3 or more rows prefetch too (accumulate_row). `next`, when given: weights the
// thread reads after these, which the tile brings into L2 as it runs and advances past (NextWeights).
// Neither changes a sum.
template <class Precision, class Epilogue>
MOE_ALWAYS_INLINE void multiply_panels(const ActivationRow<Precision>* rows, int count,
                                       const PanelRef<Precision>* panels, int panel_count, Index depth,
                                       Epilogue&& epilogue, bool prefetch = false, NextWeights* next = nullptr) {
  constexpr int kPairRows = pair_rows<Precision>();
  if constexpr (kPairRows > 0) {
    if (panel_count == 2 && count <= kPairRows) {
      const PanelRef<Precision> pair[2] = {panels[0], panels[1]};
      detail::simd::Vec acc[2][kTileRows][kTileVectors];
      NextWeights none;
      NextWeights& ahead = next != nullptr ? *next : none;
      if constexpr (kPairRows == 2) {
        if (count == 2) multiply_tile<2, 2, Precision>(rows, pair, depth, acc, prefetch, ahead);
      }
      if (count == 1) multiply_tile<1, 2, Precision>(rows, pair, depth, acc, prefetch, ahead);
      epilogue(0, acc[0], count);
      epilogue(1, acc[1], count);
      return;
    }
  }
  for (int i = 0; i < panel_count; ++i)
    multiply_rows<Precision>(
        rows, count, panels[i], depth, [&epilogue, i](auto& acc, int n) { epilogue(i, acc, n); }, prefetch, next);
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
