// moe/kernels/panel.hpp: weights packed into column panels, in any storage precision.
//
// A linear layer's weight comes in the Hugging Face / PyTorch layout W[out][in]. We repack it once, at
// load time, into panels of kPanelColumns output features: panel p, depth row k holds the codes of
// W[p * kPanelColumns + c][k] for c in [0, kPanelColumns), zero past the last output. A forward pass then
// streams each panel front to back, the access pattern hardware prefetchers like best, and the output
// tail is padding in the weights rather than a tail loop in the kernel.
//
// Per precision (precision.hpp), a depth row of a panel holds:
//   f32, f16        kPanelColumns values;
//   bf16            kPanelColumns values, vectors in pairs: the 32-bit lane l of pair (v, v + 1), v even,
//                   holds lane l of vector v in its low half and of vector v + 1 in its high half, so that
//                   one load and two bit operations give both as f32 (simd::load_bf16_halves);
//   q8              kPanelColumns int8 codes; the panel has one f32 scale per column (output row);
//   q4              kPanelColumns / 2 bytes, in groups of kQ4GroupRows depth rows (8 / kTileVectors: 2
//                   with AVX-512) that are one vector of 32-bit lanes: the lane l of group g holds eight
//                   nibbles, nibble n (bits 4n to 4n + 3) the code of depth row g * kQ4GroupRows +
//                   n / kTileVectors, column lane l of vector n % kTileVectors, each as the 4-bit two's
//                   complement of q; every 32 depth rows have one f16 scale per column. The depth is
//                   padded to whole groups. One full-width load then gives a group's weight vectors by a
//                   shift and a lookup each, or two shifts and a conversion (simd::nibble_to_float).
//   q8a8, q4a8      the q8 / q4 codes and scales, made unsigned (q + 128, q + 8) and interleaved by four
//                   depth rows for the int8 dot product (simd_int8.hpp): the 32-bit lane of column c in
//                   depth group g (rows 4g..4g+3) holds those four rows' codes of column c, byte j for
//                   row 4g + j. q8a8: group g is kPanelColumns such lanes, vector by vector. q4a8: group g
//                   is kTileVectors / 2 vectors of lanes; the low nibbles are columns of vector v, the high
//                   nibbles those of vector v + kTileVectors / 2. The depth is padded to whole
//                   blocks of 32 rows, the activation blocks of kernels/quantize.hpp.
//   bf16a16         bf16 codes interleaved by two depth rows for vdpbf16ps (simd_bf16.hpp): the 32-bit lane
//                   of column c in depth pair g holds row 2g's code in its low half and row 2g + 1's in its
//                   high half; the depth is padded to even.
// The layout of the scales follows their codes, so a kernel reads both front to back.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../config.hpp"
#include "../detail/aligned_buffer.hpp"
#include "../precision.hpp"
#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace kernels {

// Tile geometry. Each depth step loads kTileVectors weight vectors and broadcasts one activation per
// row, then issues kTileRows * kTileVectors independent FMAs. With 32 registers, 6 x 4 = 24 accumulators
// leave room for the 4 weights and a broadcast, and 24 chains cover 2 FMA ports x 4 cycles latency three
// times over; with 16 registers, 6 x 2 = 12 accumulators + 2 weights + 1 broadcast fill the file exactly
// (BLIS's Haswell shape). kTileVectors is even: gated panels split it into gate and up halves, and q4
// packs its two halves into the two nibbles of a byte.
inline constexpr int kTileVectors = simd::kRegisters >= 32 ? 4 : 2;
inline constexpr int kPanelColumns = kTileVectors * simd::kWidth;
inline constexpr int kTileRows = 6;
// Depth rows of a q4 group: eight nibbles fill a 32-bit lane (see the top of this file).
inline constexpr int kQ4GroupRows = 8 / kTileVectors;

// What one depth row and the scales of a panel look like in each precision.
template <class Precision>
struct PanelFormat {
  using Code = typename Precision::Storage;
  using Scale = float;  // unused: no scales
  static constexpr int kCodesPerRow = kPanelColumns;
  static constexpr int kScaleRows = 0;      // depth rows one set of scales covers; 0: none
  static constexpr int kDepthMultiple = 1;  // the depth is padded to a multiple of this
  static constexpr int kInterleave = 1;     // consecutive depth rows a column lane holds together
};
template <>
struct PanelFormat<q8> {
  using Code = std::int8_t;
  using Scale = float;
  static constexpr int kCodesPerRow = kPanelColumns;
  static constexpr int kScaleRows = -1;  // one scale per column for the whole depth
  static constexpr int kDepthMultiple = 1;
  static constexpr int kInterleave = 1;
};
template <>
struct PanelFormat<q4> {
  using Code = std::uint8_t;
  using Scale = std::uint16_t;  // f16
  static constexpr int kCodesPerRow = kPanelColumns / 2;
  static constexpr int kScaleRows = q4::kBlock;
  static constexpr int kDepthMultiple = kQ4GroupRows;
  static constexpr int kInterleave = kQ4GroupRows;
};
static_assert(q4::kBlock % kQ4GroupRows == 0, "a q4 scale block must hold whole groups");
template <>
struct PanelFormat<q8a8> : PanelFormat<q8> {
  using Code = std::uint8_t;
  static constexpr int kDepthMultiple = 32;
  static constexpr int kInterleave = 4;
};
template <>
struct PanelFormat<q4a8> : PanelFormat<q4> {
  static constexpr int kDepthMultiple = 32;
  static constexpr int kInterleave = 4;
};
template <>
struct PanelFormat<bf16a16> {
  using Code = std::uint16_t;
  using Scale = float;  // unused: no scales
  static constexpr int kCodesPerRow = kPanelColumns;
  static constexpr int kScaleRows = 0;
  static constexpr int kDepthMultiple = 2;
  static constexpr int kInterleave = 2;
};

// Where a kernel starts reading a panel: its codes from some depth row on, and the matching scales.
template <class Precision>
struct PanelRef {
  const typename PanelFormat<Precision>::Code* codes;
  const typename PanelFormat<Precision>::Scale* scales;
};

// Weights the calling thread reads next, [from, to) in bytes (codes only): another panel, or the next depth
// block of the one it is reading. A tile that finds its own weights in L2 (every tile over a panel but the
// first) brings these in, one cache line per depth row it runs (per pair of rows in the bf16a16 tile), so
// that the next panel streams from memory while this one is multiplied, instead of stalling the first tile
// over it at DRAM pace (docs/PERFORMANCE.md, decision "The next panel streams in during the current one").
// The int8 tile does not (multiply_rows). Addresses, not pointers: prefetching past them never faults.
struct NextWeights {
  std::uintptr_t from = 0, to = 0;

  MOE_ALWAYS_INLINE void fetch_line() {
    if (from < to) {
      simd::prefetch<2>(from);
      from += 64;
    }
  }
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
    depth_ = simd::round_up(depth, Format::kDepthMultiple);
    codes_.resize(panels_ * depth_ * Format::kCodesPerRow);
    scales_.resize(panels_ * scale_sets() * kPanelColumns);
    // Padding reads as zero: q8 padding columns are code 0 (q8a8: 128) times scale 1; every q4a8 nibble
    // starts at 8 (q = 0), every q4 nibble at 0 (resize zeroes the buffers).
    using W = weight_format_t<Precision>;
    if constexpr (std::is_same<W, q8>::value) std::fill_n(scales_.data(), scales_.size(), 1.0f);
    if constexpr (std::is_same<Precision, q8a8>::value) std::fill_n(codes_.data(), codes_.size(), Code(0x80));
    if constexpr (std::is_same<Precision, q4a8>::value) std::fill_n(codes_.data(), codes_.size(), Code(0x88));
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
    resize(2 * simd::round_up(std::max(out_features, out_padded), half), in_features);
    for (Index o = 0; o < out_features; ++o) {
      set_column(o / half, o % half, gate + o * gate_stride, in_features);
      set_column(o / half, half + o % half, up + o * up_stride, in_features);
    }
  }

  Index panels() const { return panels_; }
  Index depth() const { return depth_; }
  // Panel p from depth row k0 on; for q4, k0 is a multiple of q4::kBlock.
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
    using W = weight_format_t<Precision>;
    constexpr Index kInterleave = Format::kInterleave;
    Code* codes = codes_.data() + panel * depth_ * Format::kCodesPerRow;
    Scale* scales = scales_.data() + panel * scale_sets() * kPanelColumns;
    // Where depth row k of a column lane is: row by row, or in groups of kInterleave rows (see the top).
    auto at = [](Index k, Index lane) {
      return (k - k % kInterleave) * Format::kCodesPerRow + lane * kInterleave + k % kInterleave;
    };
    if constexpr (std::is_same<W, q8>::value) {
      const float scale = q8::row_scale(w, in);
      const int offset = int8_activations<Precision>::value ? 128 : 0;
      for (Index k = 0; k < in; ++k) codes[at(k, column)] = static_cast<Code>(q8::code(w[k], scale) + offset);
      scales[column] = scale > 0.0f ? scale : 1.0f;
    } else if constexpr (std::is_same<W, q4>::value) {
      const Index vector = column / simd::kWidth, lane = column % simd::kWidth;
      // Stores code q of depth row k (see the top of this file for both layouts).
      auto store = [&](Index k, int q) {
        if constexpr (std::is_same<Precision, q4>::value) {
          // Nibble (k % kQ4GroupRows) * kTileVectors + vector of the 32-bit lane `lane` of group
          // k / kQ4GroupRows, read and written as a whole uint32 so that it holds the value the kernels'
          // 32-bit loads see on either byte order.
          const Index shift = 4 * (k % kQ4GroupRows * kTileVectors + vector);
          Code* at_lane = codes + (k - k % kQ4GroupRows) * Format::kCodesPerRow + lane * 4;
          std::uint32_t bits;
          std::memcpy(&bits, at_lane, sizeof bits);
          bits = (bits & ~(std::uint32_t(15) << shift)) | ((std::uint32_t(q) & 15u) << shift);
          std::memcpy(at_lane, &bits, sizeof bits);
        } else {
          // q4a8: the second half of the vectors use high nibbles, each as q + 8.
          constexpr int kHalfVectors = kTileVectors / 2;
          const int shift = vector < kHalfVectors ? 0 : 4;
          Code& c = codes[at(k, (vector % kHalfVectors) * simd::kWidth + lane)];
          c = static_cast<Code>((c & (0xF0 >> shift)) | ((q + 8) << shift));
        }
      };
      for (Index k0 = 0; k0 < in; k0 += q4::kBlock) {
        const int n = int(std::min<Index>(q4::kBlock, in - k0));
        std::int8_t q[q4::kBlock];
        scales[k0 / q4::kBlock * kPanelColumns + column] = q4::quantize(w + k0, n, q);
        for (int i = 0; i < n; ++i) store(k0 + i, q[i]);
      }
    } else if constexpr (std::is_same<Precision, bf16>::value) {
      const Index vector = column / simd::kWidth, lane = column % simd::kWidth;
      const Index slot = (vector - vector % 2) * simd::kWidth + 2 * lane + vector % 2;
      for (Index k = 0; k < in; ++k) codes[at(k, slot)] = Precision::encode(w[k]);
    } else {
      for (Index k = 0; k < in; ++k) codes[at(k, column)] = Precision::encode(w[k]);
    }
  }

  // Weights live as long as their layer: small matrices share huge pages (detail/huge_page_pool.hpp).
  detail::AlignedBuffer<Code, detail::SmallArrays::kHugePagePool> codes_;
  detail::AlignedBuffer<Scale, detail::SmallArrays::kHugePagePool> scales_;
  Index panels_ = 0;
  Index depth_ = 0;
};

}  // namespace kernels
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
