// moe/kernels/gemm.hpp: weights packed into column panels, and the register-tiled micro-kernel that
// multiplies a few token rows by one panel.
//
// A linear layer's weight comes in the Hugging Face / PyTorch layout W[out][in]. We repack it once, at
// load time, into panels of kPanelColumns output features: panel p, depth row k holds
// W[p * kPanelColumns + c][k] for c in [0, kPanelColumns), zero past the last output. A forward pass then
// streams each panel front to back, the access pattern hardware prefetchers like best, and the output
// tail is padding in the weights rather than a tail loop in the kernel.
#pragma once

#include "../config.hpp"
#include "../detail/aligned_buffer.hpp"
#include "../precision.hpp"
#include "../simd.hpp"

namespace moe {
namespace kernels {

// Tile geometry. Each depth step loads kTileVectors weight vectors and broadcasts one activation per
// row, then issues kTileRows * kTileVectors independent FMAs. With 32 registers, 6 x 4 = 24 accumulators
// leave room for the 4 weights and a broadcast, and 24 chains cover 2 FMA ports x 4 cycles latency three
// times over; with 16 registers, 6 x 2 = 12 accumulators + 2 weights + 1 broadcast fill the file exactly
// (BLIS's Haswell shape). kTileVectors is even: gated panels split it into gate and up halves.
inline constexpr int kTileVectors = simd::kRegisters >= 32 ? 4 : 2;
inline constexpr int kPanelColumns = kTileVectors * simd::kWidth;
inline constexpr int kTileRows = 6;

// Depth rows of a panel one pass over the token tiles uses before moving on. A long reduction (an
// expert's FFN width, 1408 to 14336 in real models) makes a whole panel 0.4 to 3.6 MiB, past the L2, and
// every token tile would stream it from L3 again; 512 rows of 64 f32 columns are 128 KiB, which stay in
// L2 (512 KiB to 2 MiB on current cores) while the tiles pass over them.
inline constexpr Index kDepthBlock = 512;

// How far ahead of the current depth row the decode tiles prefetch weights, in bytes.
inline constexpr int kPrefetchBytes = 2048;

// A weight matrix W[out][in] packed as column panels (see the top of this file).
template <class Precision>
class PanelMatrix {
public:
  using Storage = typename Precision::Storage;

  PanelMatrix() = default;

  // Allocates out_features x depth weights, all zero, to be filled by set_row.
  void resize(Index out_features, Index depth) {
    panels_ = (out_features + kPanelColumns - 1) / kPanelColumns;
    depth_ = depth;
    data_.resize(panels_ * depth_ * kPanelColumns);
  }

  // Stores W[o][0..in_features); depth rows past in_features stay zero.
  void set_row(Index o, const float* w, Index in_features) {
    for (Index k = 0; k < in_features; ++k) at(o / kPanelColumns, k, o % kPanelColumns) = encode(w[k]);
  }

  // Packs w (out_features x in_features, row stride w_stride) with depth_padded >= in_features depth
  // rows; rows past in_features are zero, so a caller may feed activations of that padded width.
  void pack(const float* w, Index out_features, Index in_features, Index w_stride, Index depth_padded) {
    resize(out_features, depth_padded);
    for (Index o = 0; o < out_features; ++o) set_row(o, w + o * w_stride, in_features);
  }

  // Packs a gated pair: each panel holds kPanelColumns/2 gate rows then the same kPanelColumns/2 up rows,
  // so one tile yields both halves of a gated unit and its epilogue can apply act(gate) * up at once.
  void pack_gated(const float* gate, const float* up, Index out_features, Index in_features, Index gate_stride,
                  Index up_stride) {
    constexpr Index half = kPanelColumns / 2;
    resize(2 * simd::round_up(out_features, half), in_features);
    for (Index o = 0; o < out_features; ++o) {
      for (Index k = 0; k < in_features; ++k) {
        at(o / half, k, o % half) = encode(gate[o * gate_stride + k]);
        at(o / half, k, half + o % half) = encode(up[o * up_stride + k]);
      }
    }
  }

  Index panels() const { return panels_; }
  Index depth() const { return depth_; }
  const Storage* panel(Index p) const { return data_.data() + p * depth_ * kPanelColumns; }
  double bytes() const { return static_cast<double>(data_.size()) * sizeof(Storage); }

private:
  static Storage encode(float x) { return Precision::encode(x); }
  Storage& at(Index panel, Index k, Index column) {
    return data_[(panel * depth_ + k) * kPanelColumns + column];
  }

  detail::AlignedBuffer<Storage> data_;
  Index panels_ = 0;
  Index depth_ = 0;
};

// Loads one vector of weights as f32 lanes. Other precisions add their dequantising load here.
MOE_ALWAYS_INLINE simd::Vec load_weights(const float* w) { return simd::load(w); }

// acc[r][v] = sum_k rows[r][k] * panel[k][v-th vector], for Rows token rows. The accumulators stay in
// registers across the whole depth; the caller's epilogue reads them once per tile.
template <int Rows, class Storage>
MOE_ALWAYS_INLINE void multiply_tile(const float* const* rows, const Storage* panel, Index depth,
                                     simd::Vec (&acc)[kTileRows][kTileVectors]) {
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < kTileVectors; ++v) acc[r][v] = simd::broadcast(0.0f);
  for (Index k = 0; k < depth; ++k, panel += kPanelColumns) {
    // With one or two token rows a tile is bound by memory, not FMAs: ask for the weights a few depth
    // rows ahead so that DRAM requests overlap even where the hardware prefetcher is still ramping up
    // (every expert panel is a new stream). Measured on Zen 5: +5-10% decode bandwidth at 2 KiB ahead.
    if constexpr (Rows <= 2) {
      for (int line = 0; line < kPanelColumns * int(sizeof(Storage)); line += 64)
        simd::prefetch(reinterpret_cast<std::uintptr_t>(panel) + kPrefetchBytes + line);
    }
    simd::Vec w[kTileVectors];
    for (int v = 0; v < kTileVectors; ++v) {
      w[v] = load_weights(panel + v * simd::kWidth);
      simd::pin(w[v]);
    }
    for (int r = 0; r < Rows; ++r) {
      const simd::Vec x = simd::broadcast(rows[r][k]);
      for (int v = 0; v < kTileVectors; ++v) acc[r][v] = simd::fma(x, w[v], acc[r][v]);
    }
  }
}

// Runs the tile for a run-time row count 1..kTileRows, then hands the accumulators to epilogue(acc, rows).
// Each count is its own instantiation so the accumulator array is fully unrolled into registers.
template <class Storage, class Epilogue, int Rows = kTileRows>
MOE_ALWAYS_INLINE void multiply_rows(const float* const* rows, int count, const Storage* panel, Index depth,
                                     Epilogue&& epilogue) {
  if constexpr (Rows > 1) {
    if (count < Rows) {
      multiply_rows<Storage, Epilogue, Rows - 1>(rows, count, panel, depth, static_cast<Epilogue&&>(epilogue));
      return;
    }
  }
  simd::Vec acc[kTileRows][kTileVectors];
  multiply_tile<Rows>(rows, panel, depth, acc);
  epilogue(acc, Rows);
}

}  // namespace kernels
}  // namespace moe
