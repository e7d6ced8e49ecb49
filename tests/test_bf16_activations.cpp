// tests/test_bf16_activations.cpp: bf16 activations (bf16a16): rounding, the bf16 dot product, and the
// bf16a16 kernel.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_check.hpp"

using kernel_check::ActivationRows;
using kernel_check::bits_float;
using kernel_check::check_panel_products;
using kernel_check::random_vector;

TEST_CASE("activations round to bf16 as bf16::encode does, ties, NaN and subnormals included") {
  // Bit patterns from every exponent, with the tie and near-tie low halves spelled out.
  std::vector<float> x;
  for (std::uint32_t high = 0; high < 65536; high += 257)
    for (std::uint32_t low : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0x1234u})
      x.push_back(bits_float((high << 16) | low));
  for (float v : {1.0f + 0x1p-8f, -3.0f, 0.1f}) x.push_back(v);  // and a tail shorter than a vector
  const moe::Index n = moe::Index(x.size()), padded = n + 5;
  std::vector<std::uint16_t> codes(std::size_t(padded), 0xAAAA);
  moe::detail::kernels::round_activations_bf16(x.data(), n, padded, codes.data());
  for (moe::Index i = 0; i < n; ++i) {
    INFO("value " << i << " bits " << std::hex << moe::detail::float_bits(x[std::size_t(i)]));
    REQUIRE(codes[std::size_t(i)] == moe::bf16::encode(x[std::size_t(i)]));
  }
  for (moe::Index i = n; i < padded; ++i) CHECK(codes[std::size_t(i)] == 0);
  CHECK(moe::bf16::encode(bits_float(0x3F808000u)) == 0x3F80);  // a tie to even: down
  CHECK(moe::bf16::encode(bits_float(0x3F818000u)) == 0x3F82);  // a tie to even: up
}

TEST_CASE("the bf16 dot product adds both exact products to each lane") {
  constexpr int W = moe::detail::simd::kWidth;
  std::mt19937 rng(43);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const double eps = std::numeric_limits<float>::epsilon();
  for (int trial = 0; trial < 500; ++trial) {
    std::uint16_t w[2 * W], x[2];
    float start[W];
    for (int i = 0; i < 2 * W; ++i) w[i] = moe::bf16::encode(normal(rng));
    for (int j = 0; j < 2; ++j) x[j] = moe::bf16::encode(normal(rng));
    if (trial == 0) x[1] = moe::bf16::encode(0.0f);  // each half alone
    if (trial == 1) x[0] = moe::bf16::encode(0.0f);
    for (int l = 0; l < W; ++l) start[l] = normal(rng) * 10;
    alignas(64) float lanes[W];
    moe::detail::simd::store(lanes,
                             moe::detail::simd::dot_bf16(moe::detail::simd::load(start), moe::detail::simd::load_int(w),
                                                         moe::detail::simd::load_bf16_pair(x)));
    for (int l = 0; l < W; ++l) {
      const double even = double(moe::bf16::decode(w[2 * l])) * moe::bf16::decode(x[0]);
      const double odd = double(moe::bf16::decode(w[2 * l + 1])) * moe::bf16::decode(x[1]);
      const double expected = double(start[l]) + even + odd;
      // Two f32 additions of exact products.
      INFO("trial " << trial << " lane " << l);
      REQUIRE(std::abs(lanes[l] - expected) <= 2 * eps * (std::abs(start[l]) + std::abs(even) + std::abs(odd)));
    }
  }
}

TEST_CASE("the bf16a16 kernel sums products of bf16 pairs, padding included") {
  using moe::detail::kernels::kPanelColumns;
  // Two panels, the second mostly padding; an odd in_features (the last pair half padding); two depth
  // blocks of the kernel.
  const moe::Index out = kPanelColumns + 3, in = moe::detail::kernels::kDepthBlock + 45, depth = in + 1;
  std::vector<float> w = random_vector(std::size_t(out * in), 9, 0.3f);
  moe::detail::kernels::PanelMatrix<moe::bf16a16> packed;
  packed.pack(w.data(), out, in, in, in);
  REQUIRE(packed.depth() == depth);
  moe::round_trip<moe::bf16a16>(w.data(), out, in, in, w.data());  // the weights the panels hold
  constexpr int kRows = moe::detail::kernels::kTileRows;
  const std::vector<float> a = random_vector(std::size_t(kRows * in), 10, 1.0f);
  const ActivationRows<moe::bf16a16> activations(a.data(), in, in, depth);
  const auto& rows = activations.rows;
  const std::vector<std::uint16_t>& codes = activations.halves;
  // The odd depth range [kDepthBlock, in) ends in the padding half of a pair.
  check_panel_products(
      packed, rows, w, out, in, in,
      [&](int r, moe::Index k) { return double(moe::bf16::decode(codes[std::size_t(r * depth + k)])); },
      [&](moe::Index span) { return span * std::numeric_limits<float>::epsilon(); });
}
