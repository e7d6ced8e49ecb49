// tests/kernel_check.hpp: what the kernel tests share: random rows, the kernel rows of each activation
// coding, and a check of the micro-kernel's sums against double-precision sums.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <moe/moe.hpp>

namespace kernel_check {

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::vector<float> random_vector(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// A kernel row from depth k0 on: f32 rows by pointer, coded rows by their from().
inline const float* advance(const float* row, moe::Index k0) { return row + k0; }
template <class Row>
Row advance(const Row& row, moe::Index k0) {
  return row.from(k0);
}

// Runs the micro-kernel on kTileRows `rows` for every row count, every panel of `packed` and two depth
// ranges ([0, kDepthBlock) and [kDepthBlock, end)), and checks each lane against the double sum over
// k < in of w[o][k] * activation(r, k), within bound(span) times the sum of the terms' magnitudes.
template <class P, class Row, class Activation, class Bound>
void check_panel_products(const moe::detail::kernels::PanelMatrix<P>& packed, const Row* rows,
                          const std::vector<float>& w, moe::Index out, moe::Index in, moe::Index end,
                          Activation activation, Bound bound) {
  using moe::detail::kernels::kPanelColumns;
  constexpr int kRows = moe::detail::kernels::kTileRows;
  for (int count = 1; count <= kRows; ++count)
    for (moe::Index p = 0; p < packed.panels(); ++p)
      for (moe::Index k0 : {moe::Index(0), moe::detail::kernels::kDepthBlock}) {
        const moe::Index span = k0 == 0 ? moe::detail::kernels::kDepthBlock : end - k0;
        Row shifted[kRows];
        for (int r = 0; r < kRows; ++r) shifted[r] = advance(rows[r], k0);
        moe::detail::kernels::multiply_rows(shifted, count, packed.panel(p, k0), span, [&](auto& acc, int n) {
          REQUIRE(n == count);
          for (int r = 0; r < n; ++r) {
            float lanes[kPanelColumns];
            for (int v = 0; v < moe::detail::kernels::kTileVectors; ++v)
              moe::detail::simd::store(lanes + v * moe::detail::simd::kWidth, acc[r][v]);
            for (int c = 0; c < kPanelColumns; ++c) {
              const moe::Index o = p * kPanelColumns + c;
              double expected = 0, magnitude = 0;
              for (moe::Index k = k0; o < out && k < std::min(in, k0 + span); ++k) {
                const double term = double(w[std::size_t(o * in + k)]) * activation(r, k);
                expected += term;
                magnitude += std::abs(term);
              }
              INFO("panel " << p << " k0 " << k0 << " row " << r << " column " << c);
              CHECK(std::abs(lanes[c] - expected) <= bound(span) * magnitude);
            }
          }
        });
      }
}

// The kernel rows of precision P for kTileRows f32 activation rows a + r * a_stride, each `in` values
// padded with zeros to `depth`: the f32 rows themselves, or their int8 codes per 32-value block (q8a8,
// q4a8: codes, scales, sums) or bf16 codes (bf16a16: halves), held here, row r at r * depth.
template <class P>
struct ActivationRows {
  static constexpr int kRows = moe::detail::kernels::kTileRows;
  std::vector<std::int8_t> codes;
  std::vector<float> scales;  // one per 32 codes
  std::vector<std::int32_t> sums;
  std::vector<std::uint16_t> halves;
  moe::detail::kernels::ActivationRow<P> rows[kRows];

  ActivationRows(const float* a, moe::Index a_stride, moe::Index in, moe::Index depth)
      : codes(std::size_t(kRows * depth)),
        scales(std::size_t(kRows * depth / moe::detail::kernels::kActivationBlock + 1)),
        sums(scales.size()),
        halves(codes.size()) {
    namespace k = moe::detail::kernels;
    for (int r = 0; r < kRows; ++r) {
      const moe::Index at = r * depth;
      if constexpr (moe::int8_activations<P>::value) {
        const moe::Index b = at / k::kActivationBlock;  // depth is whole blocks
        k::quantize_activations(a + r * a_stride, in, depth, codes.data() + at, scales.data() + b, sums.data() + b);
        rows[r] = {codes.data() + at, scales.data() + b, sums.data() + b};
      } else if constexpr (moe::bf16_activations<P>::value) {
        k::round_activations_bf16(a + r * a_stride, in, depth, halves.data() + at);
        rows[r] = {halves.data() + at};
      } else {
        rows[r] = a + r * a_stride;
      }
    }
  }
};

}  // namespace kernel_check
