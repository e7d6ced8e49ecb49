// tests/test_int8_activations.cpp: int8 activations (q8a8, q4a8): quantisation per block of 32, the int8 dot
// product, and the int8-activation kernel.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "kernel_check.hpp"

using kernel_check::ActivationRows;
using kernel_check::check_panel_products;
using kernel_check::random_vector;

TEST_CASE("activations quantise to int8 per block of 32 as documented") {
  // 70 values: two whole blocks and a partial one, padded to a fourth (all zero) block.
  std::vector<float> x = random_vector(70, 31, 2.0f);
  x[40] = 127.0f;  // block 1's largest, so its inverse step is exactly 1 and ties are visible
  x[41] = 2.5f;    // a tie: rounds to even, 2
  x[42] = -3.5f;   // -4
  x[5] = -5.0f;    // block 0's largest magnitude, negative: code -127
  std::vector<std::int8_t> codes(128, 99);
  std::vector<float> scales(4);
  std::vector<std::int32_t> sums(4);
  moe::detail::kernels::quantize_activations(x.data(), 70, 128, codes.data(), scales.data(), sums.data());
  for (int b = 0; b < 4; ++b) {
    float largest = 0.0f;
    for (int i = b * 32; i < std::min(70, b * 32 + 32); ++i) largest = std::max(largest, std::abs(x[std::size_t(i)]));
    CHECK(scales[std::size_t(b)] == (largest > 0 ? largest / 127.0f : 0.0f));
    std::int32_t sum = 0;
    for (int i = b * 32; i < b * 32 + 32; ++i) {
      const float expected = i < 70 ? std::nearbyint(x[std::size_t(i)] * (127.0f / largest)) : 0.0f;
      INFO("value " << i);
      REQUIRE(codes[std::size_t(i)] == std::int8_t(expected));
      if (i < 70)
        CHECK(std::abs(x[std::size_t(i)] - codes[std::size_t(i)] * scales[std::size_t(b)]) <=
              0.5001f * scales[std::size_t(b)]);
      sum += codes[std::size_t(i)];
    }
    CHECK(sums[std::size_t(b)] == sum);
  }
  CHECK(codes[40] == 127);
  CHECK(codes[41] == 2);
  CHECK(codes[42] == -4);
  CHECK(codes[5] == -127);
  // An all-zero block (and one below FLT_MIN) has scale 0 and zero codes, never NaN.
  std::vector<float> tiny(32, 1e-39f);
  moe::detail::kernels::quantize_activations(tiny.data(), 32, 32, codes.data(), scales.data(), sums.data());
  CHECK(scales[0] == 0.0f);
  CHECK(sums[0] == 0);
  for (int i = 0; i < 32; ++i) CHECK(codes[std::size_t(i)] == 0);
  // A block with a NaN or an Inf anywhere (first, middle, last value) has a NaN scale and zero codes; the
  // blocks around it are quantised as usual.
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    for (int at : {32, 45, 63}) {
      CAPTURE(bad);
      CAPTURE(at);
      std::vector<float> y(96, 1.0f);
      y[std::size_t(at)] = bad;
      std::fill(codes.begin(), codes.end(), std::int8_t(99));
      moe::detail::kernels::quantize_activations(y.data(), 96, 96, codes.data(), scales.data(), sums.data());
      CHECK(std::isnan(scales[1]));
      CHECK(sums[1] == 0);
      for (int i = 32; i < 64; ++i) REQUIRE(codes[std::size_t(i)] == 0);
      CHECK(scales[0] == 1.0f / 127.0f);
      CHECK(scales[2] == 1.0f / 127.0f);
      CHECK((codes[0] == 127 && codes[95] == 127));
    }
  }
}

TEST_CASE("the int8 dot product matches plain integer arithmetic on every byte value") {
  constexpr int W = moe::detail::simd::kWidth;
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> byte(0, 255), code(-128, 127);
  for (int trial = 0; trial < 2000; ++trial) {
    std::uint8_t a[4 * W];
    std::int8_t x[4];
    std::int32_t start[W];
    for (int i = 0; i < 4 * W; ++i) a[i] = std::uint8_t(byte(rng));
    for (int j = 0; j < 4; ++j) x[j] = std::int8_t(code(rng));
    if (trial < 4) x[trial] = -128;  // the extremes, once each
    for (int l = 0; l < W; ++l) start[l] = code(rng) * 1000;
    alignas(64) std::int32_t lanes[W];
    moe::detail::simd::store_int(
        lanes, moe::detail::simd::dot_u8s8(moe::detail::simd::load_int(start), moe::detail::simd::load_int(a),
                                           moe::detail::simd::load_quad(x)));
    for (int l = 0; l < W; ++l) {
      std::int32_t expected = start[l];
      for (int j = 0; j < 4; ++j) expected += std::int32_t(a[4 * l + j]) * x[j];
      REQUIRE(lanes[l] == expected);
    }
  }
}

// The dot product as the int8 tile runs it on this target (Int8Dot: vpdpbusd, AVX2's int16 pair sums, sdot
// or the emulation), over a whole activation block of 8 groups: prepare + step per group, then finish
// where the sums are int16.
TEST_CASE_TEMPLATE("the int8 tile's dot product sums a whole block exactly, extremes included", Bits,
                   std::integral_constant<int, 4>, std::integral_constant<int, 8>) {
  using Dot = moe::detail::simd::Int8Dot<Bits::value>;
  namespace simd = moe::detail::simd;
  constexpr int W = simd::kWidth, kGroups = moe::detail::kernels::kActivationBlock / 4;
  std::mt19937 rng(43);
  // Codes as the precisions store them: 4-bit 0..15, 8-bit q + 128 with q in [-127, 127] (q8 never stores -128).
  constexpr int kLowest = Bits::value == 8 ? 1 : 0, kHighest = (1 << Bits::value) - 1;
  std::uniform_int_distribution<int> code(kLowest, kHighest), activation(-128, 127);
  for (int trial = 0; trial < 500; ++trial) {
    std::uint8_t w[kGroups][4 * W];
    std::int8_t x[4 * kGroups];
    std::int32_t start[W];
    for (auto& group : w)
      for (auto& c : group) c = std::uint8_t(code(rng));
    for (auto& v : x) v = std::int8_t(activation(rng));
    if (trial < 4) {  // every product at its largest magnitude, of either sign: the int16 sums' worst case
      for (auto& group : w)
        for (auto& c : group) c = std::uint8_t(trial % 2 ? kHighest : kLowest);
      for (auto& v : x) v = std::int8_t(trial < 2 ? -128 : 127);
    }
    for (int l = 0; l < W; ++l) start[l] = activation(rng) * 1000;
    const simd::IVec first = simd::load_int(start);
    simd::IVec acc = Dot::kInt16Sums ? simd::broadcast_int(0) : first;
    for (int g = 0; g < kGroups; ++g)
      acc = Dot::step(acc, Dot::prepare(simd::load_int(w[g])), Dot::load_quad(x + 4 * g));
    if constexpr (Dot::kInt16Sums) acc = Dot::finish(acc, first);
    alignas(64) std::int32_t lanes[W];
    simd::store_int(lanes, acc);
    for (int l = 0; l < W; ++l) {
      std::int64_t expected = start[l];
      for (int g = 0; g < kGroups; ++g)
        for (int j = 0; j < 4; ++j)
          expected += std::int64_t(w[g][4 * l + j] - Dot::kStoredOffset + Dot::kOffset) * x[4 * g + j];
      REQUIRE(lanes[l] == expected);
    }
  }
}

TEST_CASE_TEMPLATE("the int8-activation kernel sums exact block products, padding included", P, moe::q8a8, moe::q4a8) {
  using moe::detail::kernels::kPanelColumns;
  constexpr int kBlock = moe::detail::kernels::kActivationBlock;
  // Two panels, the second mostly padding; in_features not a whole block; two depth blocks of the kernel.
  const moe::Index out = kPanelColumns + 3, in = moe::detail::kernels::kDepthBlock + 45;
  const moe::Index depth = (in + kBlock - 1) / kBlock * kBlock;
  // Random values, then the extremes: every weight at the largest code and every activation at -127 or
  // +127, which drives each int16 block sum of AVX2's 4-bit form to its bound (8 x 2 x 15 x 127).
  for (const bool extremes : {false, true}) {
    CAPTURE(extremes);
    std::vector<float> w = random_vector(std::size_t(out * in), 7, 0.3f);
    if (extremes) std::fill(w.begin(), w.end(), 0.3f);
    moe::detail::kernels::PanelMatrix<P> packed;
    packed.pack(w.data(), out, in, in, in);
    REQUIRE(packed.depth() == depth);
    moe::round_trip<P>(w.data(), out, in, in, w.data());  // the weights the panels hold
    constexpr int kRows = moe::detail::kernels::kTileRows;
    std::vector<float> a = random_vector(std::size_t(kRows * in), 8, 1.0f);
    if (extremes)
      for (std::size_t i = 0; i < a.size(); ++i) a[i] = i < a.size() / 2 ? -1.0f : 1.0f;
    const ActivationRows<P> activations(a.data(), in, in, depth);
    const auto& rows = activations.rows;
    std::vector<double> dequantised(std::size_t(kRows * depth));
    for (int r = 0; r < kRows; ++r) {
      const moe::Index b = r * depth / kBlock;
      for (moe::Index k = 0; k < depth; ++k)
        dequantised[std::size_t(r * depth + k)] =
            double(activations.codes[std::size_t(r * depth + k)]) * activations.scales[std::size_t(b + k / kBlock)];
    }
    // Exact integer sums per block; f32 only in the few scale products and the sum over blocks.
    check_panel_products(
        packed, rows, w, out, in, depth, [&](int r, moe::Index k) { return dequantised[std::size_t(r * depth + k)]; },
        [&](moe::Index span) { return (span / kBlock + 4) * std::numeric_limits<float>::epsilon(); });
  }
}
