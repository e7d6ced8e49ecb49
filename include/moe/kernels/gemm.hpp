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
inline namespace MOE_TARGET_NAMESPACE {
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

// How far ahead of the current depth row a tile that streams its weights from memory prefetches them, in
// bytes (prefetch_ahead says which tiles do).
inline constexpr int kPrefetchBytes = 4096;

// Asks for the Bytes bytes of weights kPrefetchBytes past `codes` where a tile of Rows token rows streams
// them from memory: always at 1-2 rows, and at more only when the caller says it is the first tile over
// the panel (`prefetch`); the rule and its reasons are at accumulate_row. Every tile kind calls this.
template <int Rows, int Bytes>
MOE_ALWAYS_INLINE void prefetch_ahead(const void* codes, bool prefetch) {
  if (Rows <= 2 || prefetch) {
    MOE_UNROLL for (int line = 0; line < Bytes; line += 64)
        simd::prefetch(reinterpret_cast<std::uintptr_t>(codes) + kPrefetchBytes + line);
  }
}

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
}

// sum[p][r][v] += rows[r][k] * w[p][v] for the weights w of one depth row k of each of Panels panels.
template <int Rows, int Panels>
MOE_ALWAYS_INLINE void fma_rows(const float* const* rows, Index k, const simd::Vec (&w)[Panels][kTileVectors],
                                simd::Vec (&sum)[Panels][Rows][kTileVectors]) {
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    const simd::Vec x = simd::broadcast(rows[r][k]);
    MOE_UNROLL for (int p = 0; p < Panels; ++p) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) sum[p][r][v] = simd::fma(x, w[p][v], sum[p][r][v]);
    }
  }
}

// sum[p][r][v] += rows[r][k] * w_p[k][v-th vector] for one depth row k of each of Panels panels, the
// weights widened to f32 lanes.
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void accumulate_row(const float* const* rows,
                                      const typename PanelFormat<Precision>::Code* const* codes, Index k,
                                      simd::Vec (&sum)[Panels][Rows][kTileVectors], bool prefetch) {
  static_assert(!std::is_same<Precision, q4>::value, "q4 runs a group of depth rows at a time: accumulate_group_q4");
  constexpr int kRowBytes = PanelFormat<Precision>::kCodesPerRow * int(sizeof(typename PanelFormat<Precision>::Code));
  simd::Vec w[Panels][kTileVectors];
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    const auto* row = codes[p] + k * PanelFormat<Precision>::kCodesPerRow;
    // With one or two token rows a tile is bound by memory, not FMAs: ask for the weights kPrefetchBytes
    // ahead so that DRAM requests overlap even where the hardware prefetcher is still ramping up (every
    // expert panel is a new stream; docs/PERFORMANCE.md, decision "Decode tiles prefetch 4 KiB ahead").
    // A larger tile prefetches when its caller says it is the first over the panel (`prefetch`): the one
    // that reads it from memory, while the later tiles find it in L2. The layer asks for it where an expert
    // has at most two tiles of tokens (stages::prefetches; docs/PERFORMANCE.md, decision
    // "The first token tile prefetches").
    prefetch_ahead<Rows, kRowBytes>(row, prefetch);
    load_weight_row<Precision>(row, w[p]);
    // Pinned so that the rows reuse one loaded vector (pin).
    MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) simd::pin(w[p][v]);
  }
  fma_rows<Rows, Panels>(rows, k, w, sum);
}

// The same for q4, a group of kQ4GroupRows depth rows from k on (panel.hpp), the rows up to k_end: one
// full-width load of the group per panel, then a shift and a lookup per weight vector, where a widening
// load (vpmovzxbd: a load and a shuffle) per pair of vectors used to come first (docs/PERFORMANCE.md,
// decision "q4 decodes a group of depth rows from one load"). The vectors are not pinned: they are
// lookups, which no FMA can fold, and pinning them made GCC 12 store each one to the stack every depth
// row. The rows run in order, so every sum keeps the order of accumulate_row.
template <int Rows, int Panels>
MOE_ALWAYS_INLINE void accumulate_group_q4(const float* const* rows, const std::uint8_t* const* codes, Index k,
                                           Index k_end, simd::Vec (&sum)[Panels][Rows][kTileVectors], bool prefetch,
                                           NextWeights& ahead) {
  constexpr int kGroupBytes = kQ4GroupRows * PanelFormat<q4>::kCodesPerRow;  // one vector
  simd::IVec packed[Panels];
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    const std::uint8_t* group = codes[p] + k * PanelFormat<q4>::kCodesPerRow;
    prefetch_ahead<Rows, kGroupBytes>(group, prefetch);
    packed[p] = simd::load_int(group);
  }
  MOE_UNROLL for (int j = 0; j < kQ4GroupRows; ++j) {
    if (j > 0 && k + j >= k_end) break;  // a depth that ends inside the group: the rest is padding
    ahead.fetch_line();
    simd::Vec w[Panels][kTileVectors];
    MOE_UNROLL for (int p = 0; p < Panels; ++p) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) w[p][v] =
          simd::nibble_to_float(packed[p], j * kTileVectors + v);
    }
    fma_rows<Rows, Panels>(rows, k + j, w, sum);
  }
}

// acc[p][r][v] += sum over depth rows k of rows[r][k] * w_p[k][v-th vector], weights widened to f32 lanes.
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void accumulate_rows(const float* const* rows,
                                       const typename PanelFormat<Precision>::Code* const* codes, Index k_begin,
                                       Index k_end, simd::Vec (&acc)[Panels][kTileRows][kTileVectors], bool prefetch,
                                       NextWeights& next) {
  // Local copies of the accumulators and of `next`: GCC keeps a by-reference array in memory across the
  // loop, a store and a reload on every FMA's dependency chain, but a local one entirely in registers
  // (docs/PERFORMANCE.md, decision "Accumulators in a local array").
  simd::Vec sum[Panels][Rows][kTileVectors];
  NextWeights ahead = next;
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) sum[p][r][v] = acc[p][r][v];
    }
  }
  if constexpr (std::is_same<Precision, q4>::value) {
    for (Index k = k_begin; k < k_end; k += kQ4GroupRows)
      accumulate_group_q4<Rows, Panels>(rows, codes, k, k_end, sum, prefetch, ahead);
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
// them once per tile. q8's per-column scales multiply the finished sums. q4 sums each 32-row block with
// the bare codes and then adds block sum * block scale, one FMA per accumulator per block, rather than a
// multiply per weight vector per depth row. Every tile, 1 to kTileRows rows and 1 or 2 panels, does the
// same for each accumulator in the same order, so a token's sums depend neither on the tile it lands in
// nor on the panel beside it. At 6 rows the q4 block sums, the packed group, the 4 weight vectors and a
// broadcast take 30 of 32 registers and the running sums live in memory, read and written once per block,
// where scaling the weights instead costs a multiply per weight vector every depth row
// (docs/PERFORMANCE.md, decision "q4 tiles sum each block with the bare codes").
template <int Rows, int Panels, class Precision>
MOE_ALWAYS_INLINE void multiply_tile(const float* const* rows, const PanelRef<Precision> (&panels)[Panels], Index depth,
                                     simd::Vec (&acc)[Panels][kTileRows][kTileVectors], bool prefetch,
                                     NextWeights& next) {
  const typename PanelFormat<Precision>::Code* codes[Panels];
  MOE_UNROLL for (int p = 0; p < Panels; ++p) {
    codes[p] = panels[p].codes;
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) acc[p][r][v] = simd::broadcast(0.0f);
    }
  }
  if constexpr (std::is_same<Precision, q4>::value) {
    for (Index k0 = 0; k0 < depth; k0 += q4::kBlock) {
      simd::Vec block[Panels][kTileRows][kTileVectors];
      MOE_UNROLL for (int p = 0; p < Panels; ++p) {
        MOE_UNROLL for (int r = 0; r < Rows; ++r) {
          MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) block[p][r][v] = simd::broadcast(0.0f);
        }
      }
      accumulate_rows<Rows, Panels, Precision>(rows, codes, k0, std::min<Index>(depth, k0 + q4::kBlock), block,
                                               prefetch, next);
      MOE_UNROLL for (int p = 0; p < Panels; ++p) {
        const std::uint16_t* block_scales = panels[p].scales + k0 / q4::kBlock * kPanelColumns;
        MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
          const simd::Vec scale = simd::load_f16(block_scales + v * simd::kWidth);
          MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[p][r][v] = simd::fma(block[p][r][v], scale, acc[p][r][v]);
        }
      }
    }
  } else {
    accumulate_rows<Rows, Panels, Precision>(rows, codes, 0, depth, acc, prefetch, next);
    if constexpr (std::is_same<Precision, q8>::value) {
      MOE_UNROLL for (int p = 0; p < Panels; ++p) {
        MOE_UNROLL for (int v = 0; v < kTileVectors; ++v) {
          const simd::Vec scale = simd::load(panels[p].scales + v * simd::kWidth);
          MOE_UNROLL for (int r = 0; r < Rows; ++r) acc[p][r][v] = acc[p][r][v] * scale;
        }
      }
    }
  }
}

// Token rows of one int8-activation tile; multiply_rows runs a 6-row tile as two of them. 3 rows keep both
// the int32 block sums and the f32 sums in registers (3 x 4 each, with the 4 weight vectors and a
// broadcast: 29 of 32 registers; 3 x 2 each, 2 and 1: 15 of 16). A 6-row tile has registers for its 24
// int32 sums only, so at every block end it converts, stores and reloads its f32 sums; two 3-row tiles
// instead read each weight vector twice, the second time from L1
// (docs/PERFORMANCE.md, decision "The int8 tile is 3 rows, run twice for 6").
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
                                          simd::Vec (*acc)[kTileVectors], bool prefetch) {
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
    // A block's 8 groups of 4 depth rows, kGroupStep at a time. GCC 12 at -O3 unrolls a loop of 8
    // completely by itself; q8a8 keeps one group an iteration, which runs faster for a reason not yet
    // known, and q4a8 the whole block (docs/PERFORMANCE.md, decision "q8a8 keeps its group loop a loop").
    constexpr int kGroupStep = kQ4 ? kActivationBlock / 4 : 1;
    MOE_NO_UNROLL for (int g0 = 0; g0 < kActivationBlock / 4; g0 += kGroupStep) {
      MOE_UNROLL for (int g = g0; g < g0 + kGroupStep; ++g, codes += kGroupBytes) {
        prefetch_ahead<Rows, kGroupBytes>(codes, prefetch);
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
                                          simd::Vec (&acc)[kTileRows][kTileVectors], bool prefetch, NextWeights& next) {
  constexpr int V = kTileVectors;
  constexpr int kPairCodes = 2 * kPanelColumns;  // one depth pair of the panel
  constexpr int kPairBytes = kPairCodes * int(sizeof(std::uint16_t));
  simd::Vec sum[Rows][V];
  MOE_UNROLL for (int r = 0; r < Rows; ++r) {
    MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = simd::broadcast(0.0f);
  }
  const std::uint16_t* codes = panel.codes;
  NextWeights ahead = next;  // local, as accumulate_rows explains
  const Index pairs = (depth + 1) / 2;
  for (Index g = 0; g < pairs; ++g, codes += kPairCodes) {
    prefetch_ahead<Rows, kPairBytes>(codes, prefetch);
    ahead.fetch_line();
    simd::IVec w[V];
    MOE_UNROLL for (int v = 0; v < V; ++v) w[v] = simd::load_int(codes + v * 2 * simd::kWidth);
    MOE_UNROLL for (int r = 0; r < Rows; ++r) {
      const simd::Bf16Pair x = simd::load_bf16_pair(rows[r].codes + 2 * g);
      MOE_UNROLL for (int v = 0; v < V; ++v) sum[r][v] = simd::dot_bf16(sum[r][v], w[v], x);
    }
  }
  MOE_UNROLL for (int r = 0; r < Rows; ++r) { MOE_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = sum[r][v]; }
  next = ahead;
}

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
  simd::Vec acc[1][kTileRows][kTileVectors];
  if constexpr (int8_activations<Precision>::value) {
    // The int8 tile brings in no next weights: with them, q8a8 and q4a8 showed no consistent gain
    // (docs/PERFORMANCE.md, decision "The next panel streams in during the current one").
    multiply_tile_int8<(Rows < kInt8TileRows ? Rows : kInt8TileRows), Precision>(rows, panel, depth, acc[0], prefetch);
    if constexpr (Rows > kInt8TileRows)
      multiply_tile_int8<Rows - kInt8TileRows, Precision>(rows + kInt8TileRows, panel, depth, acc[0] + kInt8TileRows,
                                                          prefetch);
  } else if constexpr (bf16_activations<Precision>::value) {
    multiply_tile_bf16<Rows>(rows, panel, depth, acc[0], prefetch, ahead);
  } else {
    const PanelRef<Precision> panels[1] = {panel};
    multiply_tile<Rows, 1, Precision>(rows, panels, depth, acc, prefetch, ahead);
  }
  epilogue(acc[0], Rows);
}

// Token rows up to which multiply_panels runs two panels in one tile; 0: never. Per precision
// (docs/PERFORMANCE.md, decision "Two panels per tile at decode"):
// - q8 with 32 registers pairs 1-row tiles only: its 2-row tiles already have 8 chains and are bound by
//   the instructions that widen its codes;
// - q4 with 32 registers pairs 1- and 2-row tiles: with a group's vectors decoded from one load
//   (accumulate_group_q4), its 1-row tile is bound by the FMA latency of its 4 chains
//   (decision "q4 decodes a group of depth rows from one load"). With 16 registers (AVX2) never: there a
//   nibble takes two shifts and a conversion, and those instructions, not the FMA latency, bound the tile
//   (decision "q4 stores 4-bit two's complements");
// - the int8 and bf16 dot products (q8a8, q4a8, bf16a16) never: they do 2-4x the work per instruction.
template <class Precision>
constexpr int pair_rows() {
  if (int8_activations<Precision>::value || bf16_activations<Precision>::value) return 0;
  if (std::is_same<Precision, q4>::value) return simd::kRegisters >= 32 ? 2 : 0;
  return std::is_same<Precision, q8>::value && simd::kRegisters >= 32 ? 1 : 2;
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
      simd::Vec acc[2][kTileRows][kTileVectors];
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
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
