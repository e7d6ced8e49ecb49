// moe/precisions/q4a8.hpp: q4's weights (precisions/q4.hpp) times the int8 activations of q8a8
// (precisions/q8a8.hpp, kernels/quantize.hpp).
#pragma once

#include <cstdint>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../kernels/tile_shape.hpp"
#include "../simd.hpp"
#include "../simd_int8.hpp"
#include "q4.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

struct q4a8 {
  static constexpr const char* kName = "q4a8";
  static constexpr double kBitsPerWeight = q4::kBitsPerWeight;
  static constexpr float kMaxMagnitude = q4::kMaxMagnitude;
  using Activations = activation_coding::Int8Blocks;
  static void round_trip_row(const float* w, Index n, float* out) { q4::round_trip_row(w, n, out); }

  // q4's codes made unsigned (q + 8) and interleaved by four depth rows as q8a8's (precisions/q8a8.hpp),
  // two columns a byte: group g is kTileVectors / 2 vectors of lanes; the low nibbles are columns of
  // vector v, the high nibbles those of vector v + kTileVectors / 2. q4's f16 block scales, one per column
  // every 32 depth rows, the activation blocks.
  using Code = std::uint8_t;
  using Scale = std::uint16_t;  // f16
  static constexpr int kCodesPerRow = detail::kernels::kPanelColumns / 2;
  static constexpr int kScaleRows = q4::kBlock;
  static constexpr int kDepthMultiple = detail::kernels::kActivationBlock;
  static constexpr Code kPaddingCode = 0x88;  // both nibbles q = 0
  static constexpr Scale kPaddingScale = 0;
  static_assert(q4::kBlock == detail::kernels::kActivationBlock, "a weight block must be an activation block");
  // Stores the low 4 bits of `nibble` as depth row k of column `column` in the layout above; mxfp4a8
  // stores its E2M1 codes with it.
  static void store_nibble(Code* codes, Index column, Index k, unsigned nibble) {
    constexpr int kHalfVectors = detail::kernels::kTileVectors / 2;
    const Index vector = column / detail::simd::kWidth, lane = column % detail::simd::kWidth;
    const int shift = vector < kHalfVectors ? 0 : 4;
    const Index lane_in_half = (vector % kHalfVectors) * detail::simd::kWidth + lane;
    Code& c = codes[detail::kernels::interleaved_code<4, kCodesPerRow>(k, lane_in_half)];
    c = static_cast<Code>((c & (0xF0 >> shift)) | ((nibble & 15u) << shift));
  }
  static void pack_column(Code* codes, Scale* scales, Index column, const float* w, Index in) {
    q4::pack_blocks(scales, column, w, in,
                    [&](Index k, int q) { store_nibble(codes, column, k, unsigned(q + kCodeOffset)); });
  }
  MOE_ALWAYS_INLINE static detail::simd::Vec load_scales(const Scale* s) { return detail::simd::load_f16(s); }

  // The int8 tile (see q8a8): a group's two nibbles of each lane split into two vectors. Where the dot
  // product is one instruction (vpdpbusd, sdot), a whole block an iteration. Elsewhere one group an
  // iteration: where simd_int8.hpp emulates it (a dozen instructions a vector: SSE, plain NEON) the body is
  // then long enough to hide the loop's overhead, and eight of them would be eight times the code to
  // compile in every layer that instantiates it; with AVX2's int16 pair sums (vpmaddubsw, vpaddw), GCC 12
  // regroups the additions of an unrolled block into a tree whose partial sums do not fit 16 registers and
  // go to the stack (docs/PERFORMANCE.md, decision "int8 dot products per instruction set").
  static constexpr int kCodeOffset = 8;
  static constexpr int kCodeBits = 4;
  static constexpr int kGroupsPerStep = (MOE_SIMD_VNNI || MOE_SIMD_SDOT) ? detail::kernels::kActivationBlock / 4 : 1;
  // The group's codes, one per byte (0..15), in the lanes of w.
  MOE_ALWAYS_INLINE static void load_int8_group(const Code* group,
                                                detail::simd::IVec (&w)[detail::kernels::kTileVectors]) {
    constexpr int V = detail::kernels::kTileVectors, kMask = 0x0F0F0F0F;
    MOE_UNROLL for (int c = 0; c < V / 2; ++c) {
      const detail::simd::IVec packed = detail::simd::load_int(group + c * 4 * detail::simd::kWidth);
      w[c] = detail::simd::bit_and(packed, kMask);
      w[c + V / 2] = detail::simd::shift_right4_and(packed, kMask);
    }
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
