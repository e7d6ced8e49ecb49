// moe/kernels/gemm.hpp: the register-tiled micro-kernel that multiplies a few token rows by one packed
// weight panel (panel.hpp), dequantising the weights in registers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../config.hpp"
#include "../precision.hpp"
#include "../simd.hpp"
#include "../simd_bf16.hpp"
#include "../simd_int8.hpp"
#include "panel.hpp"
#include "quantize.hpp"

namespace moe {
namespace kernels {

// Depth rows of a panel one pass over the token tiles uses before moving on. A long reduction (an
// expert's FFN width, 1408 to 14336 in real models) makes a whole panel 0.4 to 3.6 MiB, past the L2, and
// every token tile would stream it from L3 again; 512 rows of 64 f32 columns are 128 KiB, which stay in
// L2 (512 KiB to 2 MiB on current cores) while the tiles pass over them.
inline constexpr Index kDepthBlock = 512;
static_assert(kDepthBlock % q4::kBlock == 0, "a depth block must start on a q4 scale block");

// The activation rows a tile multiplies: f32 rows, int8 rows (quantize.hpp) for q8a8 and q4a8, or bf16
// rows for bf16a16.
template <class Precision>
using ActivationRow = std::conditional_t<int8_activations<Precision>::value, Int8Row,
                                         std::conditional_t<bf16_activations<Precision>::value, Bf16Row, const float*>>;

// How far ahead of the current depth row the decode tiles prefetch weights, in bytes.
inline constexpr int kPrefetchBytes = 4096;

// One depth row of weights as kTileVectors vectors of f32 lanes.
template <class Precision>
MOE_ALWAYS_INLINE void load_weight_row(const typename PanelFormat<Precision>::Code* row, simd::Vec (&w)[kTileVectors]) {
  MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
    if constexpr (std::is_same<Precision, f32>::value)
      w[v] = simd::load(row + v * simd::kWidth);
    else if constexpr (std::is_same<Precision, f16>::value)
      w[v] = simd::load_f16(row + v * simd::kWidth);
    else if constexpr (std::is_same<Precision, q8>::value)
      w[v] = simd::load_i8(row + v * simd::kWidth);
  }
  if constexpr (std::is_same<Precision, bf16>::value) {
    MOE_UNROLL for (int v = 0; v < kTileVectors; v += 2) simd::load_bf16_halves(row + v * simd::kWidth, w[v], w[v + 1]);
  }
  if constexpr (std::is_same<Precision, q4>::value) {
    MOE_UNROLL for (int v = 0; v < kTileVectors / 2; ++v)
        simd::load_i4_pair(row + v * simd::kWidth, w[v], w[v + kTileVectors / 2]);
  }
}

// sum[r][v] += rows[r][k] * w[k][v-th vector] for one depth row k, its weights widened to f32 lanes.
template <int Rows, class Precision>
MOE_ALWAYS_INLINE void accumulate_row(const float* const* rows, const typename PanelFormat<Precision>::Code* codes,
                                      Index k, simd::Vec (&sum)[Rows][kTileVectors]) {
  constexpr int kRowBytes = PanelFormat<Precision>::kCodesPerRow * int(sizeof(typename PanelFormat<Precision>::Code));
  const auto* row = codes + k * PanelFormat<Precision>::kCodesPerRow;
  // With one or two token rows a tile is bound by memory, not FMAs: ask for the weights a few depth
  // rows ahead so that DRAM requests overlap even where the hardware prefetcher is still ramping up
  // (every expert panel is a new stream). Measured on Zen 5: +5-10% decode bandwidth at 2 KiB ahead;
  // 4 KiB ahead, 4-10% faster again at 1 token for bf16, q4 and q4a8, q8a8 within noise (alternating runs).
  if constexpr (Rows <= 2) {
    MOE_UNROLL for (int line = 0; line < kRowBytes; line += 64)
        simd::prefetch(reinterpret_cast<std::uintptr_t>(row) + kPrefetchBytes + line);
  }
  simd::Vec w[kTileVectors];
  load_weight_row<Precision>(row, w);
  // Pinned so that the rows reuse one loaded vector (pin). q4's vectors are table lookups, which no FMA
  // can fold, and pinning them made GCC 12 also store each one to the stack every depth row: 4 dead
  // stores per 64 weights, which bound its 1-row tile.
  if constexpr (!std::is_same<Precision, q4>::value) {
    MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) simd::pin(w[v]);
  }
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    const simd::Vec x = simd::broadcast(rows[r][k]);
    MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) sum[r][v] = simd::fma(x, w[v], sum[r][v]);
  }
}

// acc[r][v] += sum over depth rows k of rows[r][k] * w[k][v-th vector], weights widened to f32 lanes.
template <int Rows, class Precision>
MOE_ALWAYS_INLINE void accumulate_rows(const float* const* rows, const typename PanelFormat<Precision>::Code* codes,
                                       Index k_begin, Index k_end, simd::Vec (&acc)[kTileRows][kTileVectors]) {
  // A local copy of the accumulators: GCC keeps a by-reference array in memory across the loop (a store
  // and a reload per FMA, measured 2x slower at decode), but a local one entirely in registers.
  simd::Vec sum[Rows][kTileVectors];
  MOE_UNROLL for (int r = 0; r < Rows; ++r) { MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) sum[r][v] = acc[r][v]; }
  for (Index k = k_begin; k < k_end; ++k) accumulate_row<Rows, Precision>(rows, codes, k, sum);
  MOE_UNROLL for (int r = 0; r < Rows; ++r) { MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) acc[r][v] = sum[r][v]; }
}

// acc[r][v] = sum_k rows[r][k] * W[k][v-th vector] for Rows token rows and `depth` rows of the panel.
// The accumulators stay in registers across the whole depth; the caller's epilogue reads them once per
// tile. q8's per-column scales multiply the finished sums. q4 sums each 32-row block with the bare codes
// and then adds block sum * block scale, one FMA per accumulator per block, rather than a multiply per
// weight vector per depth row. Every tile, 1 to kTileRows rows, does the same, so a token's sums do not
// depend on the tile it lands in. At 6 rows the block sums, the 4 weight vectors and a broadcast take 29
// of 32 registers and the running sums live in memory, read and written once per block (BM_Kernel<q4>
// at 6 rows: 166 -> 200 GFLOP/s against scaling the weights with the running sums in registers).
template <int Rows, class Precision>
MOE_ALWAYS_INLINE void multiply_tile(const float* const* rows, const PanelRef<Precision>& panel, Index depth,
                                     simd::Vec (&acc)[kTileRows][kTileVectors]) {
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) acc[r][v] = simd::broadcast(0.0f);
  }
  if constexpr (std::is_same<Precision, q4>::value) {
    for (Index k0 = 0; k0 < depth; k0 += q4::kBlock) {
      simd::Vec block[kTileRows][kTileVectors];
      MOE_UNROLL for (int r = 0; r < Rows; ++r) {
        MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) block[r][v] = simd::broadcast(0.0f);
      }
      accumulate_rows<Rows, Precision>(rows, panel.codes, k0, std::min<Index>(depth, k0 + q4::kBlock), block);
      const std::uint16_t* block_scales = panel.scales + k0 / q4::kBlock * kPanelColumns;
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
        const simd::Vec scale = simd::load_f16(block_scales + v * simd::kWidth);
        MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[r][v] = simd::fma(block[r][v], scale, acc[r][v]);
      }
    }
  } else {
    accumulate_rows<Rows, Precision>(rows, panel.codes, 0, depth, acc);
    if constexpr (std::is_same<Precision, q8>::value) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
        const simd::Vec scale = simd::load(panel.scales + v * simd::kWidth);
        MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[r][v] = acc[r][v] * scale;
      }
    }
  }
}

// Token rows of one int8-activation tile; multiply_rows runs a 6-row tile as two of them. 3 rows keep both
// the int32 block sums and the f32 sums in registers (3 x 4 each, with the 4 weight vectors and a
// broadcast: 29 of 32 registers; 3 x 2 each, 2 and 1: 15 of 16). On Zen 5 the previous 6-row tile, whose
// f32 sums lived in memory, spent half its samples (perf) at block ends converting, storing and reloading
// them; two 3-row tiles, which read each weight vector twice from L1, were 0-13% faster at 512 tokens
// (alternating moe-bench runs, q8a8 and q4a8, both shapes).
inline constexpr int kInt8TileRows = 3;
static_assert(kTileRows <= 2 * kInt8TileRows, "multiply_rows runs at most two int8 tiles");

// The int8-activation tile (q8a8, q4a8): acc[r][v] = sum over 32-row blocks b of
//   s_x[r][b] * sum_{k in b} x_code[r][k] * q_w[k][v]              (q8a8; times the column scale at the end)
//   s_x[r][b] * d_w[b][v] * sum_{k in b} x_code[r][k] * q_w[k][v]  (q4a8)
// with the inner sums exact in int32 (dot_u8s8). The weight codes carry an offset (+128, +8) that makes
// them unsigned; each block's sum starts at -offset * sum_k x_code[r][k], which cancels it exactly. No
// lane can overflow: a block sums 32 products of at most 255 * 127 in magnitude. Writes acc[0, Rows).
template <int Rows, class Precision>
MOE_ALWAYS_INLINE void multiply_tile_int8(const Int8Row* rows, const PanelRef<Precision>& panel, Index depth,
                                          simd::Vec (*acc)[kTileVectors]) {
  constexpr int V = kTileVectors;
  constexpr bool kQ4 = std::is_same<Precision, q4a8>::value;
  constexpr std::int32_t kOffset = kQ4 ? 8 : 128;
  constexpr int kGroupBytes = 4 * PanelFormat<Precision>::kCodesPerRow;
  constexpr int kLaneBytes = 4 * simd::kWidth;  // one vector of four-row lanes
  constexpr int kMask = 0x0F0F0F0F;
  // The weights are pinned in registers for all rows: reloaded for each row instead, a tile is load-bound.
  static_assert(Rows <= kInt8TileRows, "the int32 and f32 sums of more rows do not fit the registers");
  simd::Vec out[Rows][V];
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    MOE_UNROLL for (int v = 0; v < V; ++v) out[r][v] = simd::broadcast(0.0f);
  }
  const std::uint8_t* codes = panel.codes;
  const Index blocks = (depth + kActivationBlock - 1) / kActivationBlock;
  for (Index b = 0; b < blocks; ++b) {
    simd::IVec sum[Rows][V];
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      const simd::IVec start = simd::broadcast_int(-kOffset * rows[r].sums[b]);
      MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = start;
    }
    // A block's 8 groups of 4 depth rows, kGroupStep at a time. GCC 12 at -O3 unrolls a loop of 8 completely;
    // for q8a8 that ran the 1- and 2-row tiles 35-38% slower than one group per iteration (BM_Kernel<q8a8>,
    // -O3, alternating builds), while q4a8 measured the same or faster unrolled.
    constexpr int kGroupStep = kQ4 ? kActivationBlock / 4 : 1;
    MOE_NO_UNROLL for (int g0 = 0; g0 < kActivationBlock / 4; g0 += kGroupStep) {
      MOE_UNROLL for (int g = g0; g < g0 + kGroupStep; ++g, codes += kGroupBytes) {
        if constexpr (Rows <= 2) {
          MOE_UNROLL for (int line = 0; line < kGroupBytes; line += 64)
              simd::prefetch(reinterpret_cast<std::uintptr_t>(codes) + kPrefetchBytes + line);
        }
        simd::IVec w[V];
        if constexpr (kQ4) {
          MOE_UNROLL for (int c = 0; c < V / 2; ++c) {
            const simd::IVec packed = simd::load_int(codes + c * kLaneBytes);
            w[c] = simd::bit_and(packed, kMask);
            w[c + V / 2] = simd::shift_right4_and(packed, kMask);
          }
        } else {
          MOE_UNROLL for (int v = 0; v < V; ++v) w[v] = simd::load_int(codes + v * kLaneBytes);
        }
        MOE_UNROLL for (int v = 0; v < V; ++v) simd::pin(w[v]);
        MOE_UNROLL for (int r = 0; r < Rows; ++r) {
          const simd::Int8Quad x = simd::load_quad(rows[r].codes + b * kActivationBlock + 4 * g);
          MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = simd::dot_u8s8(sum[r][v], w[v], x);
        }
      }
    }
    if constexpr (kQ4) {
      simd::Vec scale[V];
      MOE_UNROLL for (int v = 0; v < V; ++v) scale[v] =
          simd::load_f16(panel.scales + b * kPanelColumns + v * simd::kWidth);
      MOE_UNROLL for (int r = 0; r < Rows; ++r) {
        const simd::Vec s = simd::broadcast(rows[r].scales[b]);
        MOE_UNROLL for (int v = 0; v < V; ++v) out[r][v] =
            simd::fma(simd::to_float(sum[r][v]), scale[v] * s, out[r][v]);
      }
    } else {
      MOE_UNROLL for (int r = 0; r < Rows; ++r) {
        const simd::Vec s = simd::broadcast(rows[r].scales[b]);
        MOE_UNROLL for (int v = 0; v < V; ++v) out[r][v] = simd::fma(simd::to_float(sum[r][v]), s, out[r][v]);
      }
    }
  }
  MOE_UNROLL for (int v = 0; v < V; ++v) {
    if constexpr (kQ4) {
      MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[r][v] = out[r][v];
    } else {
      const simd::Vec scale = simd::load(panel.scales + v * simd::kWidth);
      MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[r][v] = out[r][v] * scale;
    }
  }
}

// The bf16a16 tile: acc[r][v] = sum over depth pairs g of x[r][2g] * w[2g][v] + x[r][2g + 1] * w[2g + 1][v],
// one dot_bf16 per pair (vdpbf16ps: 32 multiply-adds an instruction against an f32 FMA's 16). The
// accumulators stay in registers as in accumulate_rows; an odd depth reads the zero padding row of both.
template <int Rows>
MOE_ALWAYS_INLINE void multiply_tile_bf16(const Bf16Row* rows, const PanelRef<bf16a16>& panel, Index depth,
                                          simd::Vec (&acc)[kTileRows][kTileVectors]) {
  constexpr int V = kTileVectors;
  constexpr int kPairCodes = 2 * kPanelColumns;  // one depth pair of the panel
  constexpr int kPairBytes = kPairCodes * int(sizeof(std::uint16_t));
  simd::Vec sum[Rows][V];
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = simd::broadcast(0.0f);
  }
  const std::uint16_t* codes = panel.codes;
  const Index pairs = (depth + 1) / 2;
  for (Index g = 0; g < pairs; ++g, codes += kPairCodes) {
    if constexpr (Rows <= 2) {
      MOE_UNROLL for (int line = 0; line < kPairBytes; line += 64)
          simd::prefetch(reinterpret_cast<std::uintptr_t>(codes) + kPrefetchBytes + line);
    }
    simd::IVec w[V];
    MOE_UNROLL for (int v = 0; v < V; ++v) w[v] = simd::load_int(codes + v * 2 * simd::kWidth);
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      const simd::Bf16Pair x = simd::load_bf16_pair(rows[r].codes + 2 * g);
      MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = simd::dot_bf16(sum[r][v], w[v], x);
    }
  }
  MOE_UNROLL for (int r = 0; r < Rows; ++r) { MOE_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = sum[r][v]; }
}

// Runs the tile for a run-time row count 1..kTileRows, then hands the accumulators to
// epilogue(acc, rows). Each count is its own instantiation so the accumulator array is fully unrolled into
// registers.
template <class Precision, class Epilogue, int Rows = kTileRows>
MOE_ALWAYS_INLINE void multiply_rows(const ActivationRow<Precision>* rows, int count, const PanelRef<Precision>& panel,
                                     Index depth, Epilogue&& epilogue) {
  if constexpr (Rows > 1) {
    if (count < Rows) {
      multiply_rows<Precision, Epilogue, Rows - 1>(rows, count, panel, depth, static_cast<Epilogue&&>(epilogue));
      return;
    }
  }
  simd::Vec acc[kTileRows][kTileVectors];
  if constexpr (int8_activations<Precision>::value) {
    multiply_tile_int8<(Rows < kInt8TileRows ? Rows : kInt8TileRows), Precision>(rows, panel, depth, acc);
    if constexpr (Rows > kInt8TileRows)
      multiply_tile_int8<Rows - kInt8TileRows, Precision>(rows + kInt8TileRows, panel, depth, acc + kInt8TileRows);
  } else if constexpr (bf16_activations<Precision>::value) {
    multiply_tile_bf16<Rows>(rows, panel, depth, acc);
  } else {
    multiply_tile<Rows, Precision>(rows, panel, depth, acc);
  }
  epilogue(acc, Rows);
}

}  // namespace kernels
}  // namespace moe
