// moe/kernels/panel.hpp: weights packed into column panels, in any storage precision.
//
// A linear layer's weight comes in the Hugging Face / PyTorch layout W[out][in]. We repack it once, at
// load time, into panels of kPanelColumns output features: panel p, depth row k holds the codes of
// W[p * kPanelColumns + c][k] for c in [0, kPanelColumns), zero past the last output. A forward pass then
// streams each panel front to back, the access pattern hardware prefetchers like best, and the output
// tail is padding in the weights rather than a tail loop in the kernel.
//
// What a depth row holds, the scales and the padding are the precision's (its Code, Scale, kCodesPerRow,
// kScaleRows, pack_column: precision.hpp); the layout of the scales follows their codes, so a kernel reads
// both front to back.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../detail/aligned_buffer.hpp"
#include "../fp8_block_view.hpp"
#include "../simd.hpp"
#include "prefetch.hpp"
#include "tile_shape.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// Whether Precision packs e4m3 codes and their block scales as they are (fp8: pack_column_e4m3).
template <class Precision, class = void>
struct packs_e4m3 : std::false_type {};
template <class Precision>
struct packs_e4m3<Precision, std::void_t<decltype(&Precision::pack_column_e4m3)>> : std::true_type {};

// What one depth row and the scales of a panel look like in Precision (precision.hpp).
template <class Precision>
struct PanelFormat {
  using Code = typename Precision::Code;
  using Scale = typename Precision::Scale;
  static constexpr int kCodesPerRow = Precision::kCodesPerRow;
  static constexpr int kScaleRows = Precision::kScaleRows;  // 0: none; -1: one per column; n: every n rows
  static constexpr int kDepthMultiple = Precision::kDepthMultiple;
  static_assert(kScaleRows <= 0 || kDepthBlock % kScaleRows == 0, "a depth block must start on a scale block");
};

// Where a kernel starts reading a panel: its codes from some depth row on, and the matching scales.
template <class Precision>
struct PanelRef {
  const typename PanelFormat<Precision>::Code* codes;
  const typename PanelFormat<Precision>::Scale* scales;
};

// A weight matrix W[out][in] packed as column panels (see the top of this file).
template <class Precision>
class PanelMatrix {
public:
  using Format = PanelFormat<Precision>;
  using Code = typename Format::Code;
  using Scale = typename Format::Scale;

  PanelMatrix() = default;

  // Allocates out_features x depth weights, all zero, to be filled by set_output.
  void resize(Index out_features, Index depth) {
    panels_ = (out_features + kPanelColumns - 1) / kPanelColumns;
    depth_ = detail::simd::round_up(depth, Format::kDepthMultiple);
    codes_.resize(panels_ * depth_ * Format::kCodesPerRow);
    scales_.resize(panels_ * scale_sets() * kPanelColumns);
    // Padding decodes to zero (resize zeroes the buffers; some precisions' zero is another code or scale).
    if constexpr (Precision::kPaddingCode != Code(0))
      std::fill_n(codes_.data(), codes_.size(), Precision::kPaddingCode);
    if constexpr (Precision::kPaddingScale != Scale(0))
      std::fill_n(scales_.data(), scales_.size(), Precision::kPaddingScale);
  }

  // Stores output o's weights, W[o][0..in_features), as column o of the panels; depth rows past in_features
  // stay zero.
  void set_output(Index o, const float* w, Index in_features) {
    set_column(o / kPanelColumns, o % kPanelColumns, w, in_features);
  }

  // Packs w (out_features x in_features, row stride w_stride) with depth_padded >= in_features depth
  // rows; rows past in_features are zero, so a caller may feed activations of that padded width. Output
  // columns up to out_padded >= out_features exist and are zero past out_features.
  void pack(const float* w, Index out_features, Index in_features, Index w_stride, Index depth_padded,
            Index out_padded = 0) {
    resize(std::max(out_features, out_padded), depth_padded);
    for (Index o = 0; o < out_features; ++o) set_output(o, w + o * w_stride, in_features);
  }

  // Packs a gated pair: each panel holds kPanelColumns/2 gate rows then the same kPanelColumns/2 up rows,
  // so one tile yields both halves of a gated unit and its epilogue can apply act(gate) * up at once.
  void pack_gated(const float* gate, const float* up, Index out_features, Index in_features, Index gate_stride,
                  Index up_stride, Index out_padded = 0) {
    constexpr Index half = kPanelColumns / 2;
    resize(2 * detail::simd::round_up(std::max(out_features, out_padded), half), in_features);
    for (Index o = 0; o < out_features; ++o) {
      set_column(o / half, o % half, gate + o * gate_stride, in_features);
      set_column(o / half, half + o % half, up + o * up_stride, in_features);
    }
  }

  // pack and pack_gated from FP8 block-quantised weights (fp8_block_view.hpp): a precision that packs e4m3
  // codes (fp8) takes each row's codes and scales as they are when every one of its scale blocks lies inside
  // one block of the view; otherwise each row is decoded to f32 and packed as a float row is.
  void pack(const Fp8BlockView& w, Index depth_padded, Index out_padded = 0) {
    resize(std::max(w.rows, out_padded), depth_padded);
    std::vector<float> row;
    for (Index o = 0; o < w.rows; ++o) set_column(o / kPanelColumns, o % kPanelColumns, w, o, row);
  }
  void pack_gated(const Fp8BlockView& gate, const Fp8BlockView& up, Index out_padded = 0) {
    constexpr Index half = kPanelColumns / 2;
    resize(2 * detail::simd::round_up(std::max(gate.rows, out_padded), half), gate.cols);
    std::vector<float> row;
    for (Index o = 0; o < gate.rows; ++o) {
      set_column(o / half, o % half, gate, o, row);
      set_column(o / half, half + o % half, up, o, row);
    }
  }

  Index panels() const { return panels_; }
  Index depth() const { return depth_; }
  // Panel p from depth row k0 on; k0 is a multiple of kScaleRows where that is positive.
  PanelRef<Precision> panel(Index p, Index k0 = 0) const {
    const Code* codes = codes_.data() + (p * depth_ + k0) * Format::kCodesPerRow;
    const Scale* scales = scales_.data() + p * scale_sets() * kPanelColumns;
    if constexpr (Format::kScaleRows > 0) scales += k0 / Format::kScaleRows * kPanelColumns;
    return {codes, scales};
  }
  // The codes of `rows` depth rows from panel p's row k0 on, as NextWeights; panels follow one another
  // in memory, so the rows may run on into panel p + 1 and further.
  NextWeights codes_from(Index p, Index k0, Index rows) const {
    const auto from = reinterpret_cast<std::uintptr_t>(panel(p, k0).codes);
    return {from, from + std::uintptr_t(rows * Format::kCodesPerRow) * sizeof(Code)};
  }
  // Bytes a pass streams to read the whole matrix: codes and scales.
  double bytes() const {
    return double(codes_.size()) * sizeof(Code) +
           (Format::kScaleRows != 0 ? double(scales_.size()) * sizeof(Scale) : 0.0);
  }

private:
  Index scale_sets() const {
    if constexpr (Format::kScaleRows > 0) return (depth_ + Format::kScaleRows - 1) / Format::kScaleRows;
    return Format::kScaleRows == 0 ? 0 : 1;
  }

  // Stores one output row w[0..in) as column `column` of panel `panel`.
  void set_column(Index panel, Index column, const float* w, Index in) {
    Precision::pack_column(codes_.data() + panel * depth_ * Format::kCodesPerRow,
                           scales_.data() + panel * scale_sets() * kPanelColumns, column, w, in);
  }

  void set_column(Index panel, Index column, const Fp8BlockView& w, Index o, std::vector<float>& row) {
    if constexpr (packs_e4m3<Precision>::value) {
      // Each scale block of the precision (kScaleRows inputs) inside one of the view's: blocks of a multiple of
      // kScaleRows inputs, or one block a row.
      if (w.block_cols % Format::kScaleRows == 0 || w.block_cols >= w.cols) {
        Precision::pack_column_e4m3(codes_.data() + panel * depth_ * Format::kCodesPerRow,
                                    scales_.data() + panel * scale_sets() * kPanelColumns, column, w.codes + o * w.cols,
                                    w.row_scales(o), w.block_cols, w.cols);
        return;
      }
    }
    row.resize(std::size_t(w.cols));
    w.decode_row(o, row.data());
    set_column(panel, column, row.data(), w.cols);
  }

  // Weights live as long as their layer: small matrices share huge pages (detail/huge_page_pool.hpp).
  detail::AlignedBuffer<Code, detail::SmallArrays::kHugePagePool> codes_;
  detail::AlignedBuffer<Scale, detail::SmallArrays::kHugePagePool> scales_;
  Index panels_ = 0;
  Index depth_ = 0;
};

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
