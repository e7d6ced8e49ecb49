// moe/kernels/tile_shape.hpp: the shape of the register tile every kernel runs, and the panel width it fixes.
//
// A tile multiplies up to kTileRows token rows by one panel of kPanelColumns output columns: each depth
// step loads kTileVectors weight vectors, broadcasts one activation per row, and issues kTileRows *
// kTileVectors independent FMAs. The precisions (precisions/*.hpp) lay their panels out in this width.
#pragma once

#include "../config.hpp"
#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// With 32 registers, 6 x 4 = 24 accumulators leave room for the 4 weights and a broadcast, and 24 chains
// cover 2 FMA ports x 4 cycles latency three times over; with 16 registers, 6 x 2 = 12 accumulators + 2
// weights + 1 broadcast fill the file exactly (BLIS's Haswell shape). kTileVectors is even: gated panels
// split it into gate and up halves, and q4 packs its two halves into the two nibbles of a byte.
inline constexpr int kTileVectors = detail::simd::kRegisters >= 32 ? 4 : 2;
inline constexpr int kPanelColumns = kTileVectors * detail::simd::kWidth;
inline constexpr int kTileRows = 6;

// Depth rows of a panel one pass over the token tiles uses before moving on. A long reduction (an
// expert's FFN width, 1408 to 14336 in real models) makes a whole panel 0.4 to 3.6 MiB, past the L2, and
// every token tile would stream it from L3 again; 512 rows of 64 f32 columns are 128 KiB, which stay in
// L2 (512 KiB to 2 MiB on current cores) while the tiles pass over them. A multiple of every precision's
// scale block (kScaleRows), so that a depth block starts on one.
inline constexpr Index kDepthBlock = 512;

// Where a panel layout that keeps `Interleave` consecutive depth rows of a column lane together (1: row by
// row) stores depth row k of lane `lane`, counted in codes from the panel's start; a depth row is
// CodesPerRow codes.
template <int Interleave, int CodesPerRow>
constexpr Index interleaved_code(Index k, Index lane) {
  return (k - k % Interleave) * CodesPerRow + lane * Interleave + k % Interleave;
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
