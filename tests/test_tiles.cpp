// tests/test_tiles.cpp: the SIMD loads and the micro-kernel for every weight precision: packed panels,
// padding, two panels in one tile.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_check.hpp"
#include "precision_list.hpp"

using kernel_check::ActivationRows;
using kernel_check::check_panel_products;
using kernel_check::random_vector;

TEST_CASE("the SIMD loads decode every code as the scalar conversions do") {
  constexpr int W = moe::detail::simd::kWidth;
  alignas(64) float lanes[W], high[W];
  auto same_bits = [](float expected, float got) {
    return std::isnan(expected) ? std::isnan(got) : std::memcmp(&got, &expected, 4) == 0;
  };
  for (std::uint32_t first = 0; first < 65536; first += W) {
    std::uint16_t codes[2 * W];
    for (int i = 0; i < 2 * W; ++i) codes[i] = std::uint16_t((first + std::uint32_t(i) * 4099u) & 0xffffu);
    moe::detail::simd::Vec even, odd;
    moe::detail::simd::load_bf16_halves(codes, even, odd);
    moe::detail::simd::store(lanes, even);
    moe::detail::simd::store(high, odd);
    for (int i = 0; i < W; ++i) {
      REQUIRE(same_bits(moe::bf16::decode(codes[2 * i]), lanes[i]));
      REQUIRE(same_bits(moe::bf16::decode(codes[2 * i + 1]), high[i]));
    }
    moe::detail::simd::store(lanes, moe::detail::simd::load_f16(codes));
    for (int i = 0; i < W; ++i) REQUIRE(same_bits(moe::f16::decode(codes[i]), lanes[i]));
  }
  for (int first = 0; first < 256; first += W) {
    std::int8_t signed_codes[W];
    for (int i = 0; i < W; ++i) signed_codes[i] = std::int8_t(first + i - 128);
    moe::detail::simd::store(lanes, moe::detail::simd::load_i8(signed_codes));
    for (int i = 0; i < W; ++i) REQUIRE(lanes[i] == float(signed_codes[i]));
  }
  // Every nibble position of a 32-bit lane, every nibble value in every position over the lanes.
  for (int first = 0; first < 16; ++first) {
    std::uint32_t words[W];
    for (int i = 0; i < W; ++i) {
      words[i] = 0;
      for (int n = 0; n < 8; ++n) words[i] |= std::uint32_t((first + i + 3 * n) % 16) << (4 * n);
    }
    const moe::detail::simd::IVec packed = moe::detail::simd::load_int(words);
    for (int n = 0; n < 8; ++n) {
      moe::detail::simd::store(lanes, moe::detail::simd::nibble_to_float(packed, n));
      for (int i = 0; i < W; ++i) {
        const int nibble = int((words[i] >> (4 * n)) & 15u);
        REQUIRE(lanes[i] == float(nibble < 8 ? nibble : nibble - 16));  // a 4-bit two's complement
      }
    }
  }
}

TEST_CASE_TEMPLATE("the micro-kernel multiplies by packed panels of every precision, padding included", P, moe::f32,
                   moe::bf16, moe::f16, moe::q8, moe::q4) {
  using moe::detail::kernels::kPanelColumns;
  // Two panels, the second mostly padding; depth past in_features padded, and fed non-zero activations,
  // so padding that did not read as zero would show.
  const moe::Index out = kPanelColumns + 3, in = 45, depth = moe::detail::kernels::kDepthBlock + 40;
  std::vector<float> w = random_vector(std::size_t(out * in), 5, 0.3f);
  moe::detail::kernels::PanelMatrix<P> packed;
  packed.pack(w.data(), out, in, in, depth);
  moe::round_trip<P>(w.data(), out, in, in, w.data());  // what the panels hold
  constexpr int kRows = moe::detail::kernels::kTileRows;
  const std::vector<float> a = random_vector(std::size_t(kRows * depth), 6, 1.0f);
  const float* rows[kRows];
  for (int r = 0; r < kRows; ++r) rows[r] = a.data() + r * depth;
  check_panel_products(
      packed, rows, w, out, in, depth, [&](int r, moe::Index k) { return double(rows[r][k]); },
      [&](moe::Index) { return 2 * in * std::numeric_limits<float>::epsilon(); });
}

// multiply_panels over two panels gives each exactly what it gives that panel alone (one multiply_rows), for
// every row count (up to pair_rows() rows in one paired tile, more one panel after the other), every
// precision, a depth off the q4 block, and a last panel that is mostly padding; and the same again when
// asked to prefetch (the first tile over a panel), which tiles of 3 or more rows do only then, and when
// given weights to bring in next (NextWeights), which the tiles (but the int8 one) advance through a line
// at a time and stop at the end of.
TEST_CASE_TEMPLATE_DEFINE("two panels in one tile give each panel's bits alone", P, two_panels_one_tile) {
  namespace k = moe::detail::kernels;
  const moe::Index out = 2 * k::kPanelColumns + 5, in = 77;
  std::vector<float> w = random_vector(std::size_t(out * in), 31, 0.3f);
  k::PanelMatrix<P> packed;
  packed.pack(w.data(), out, in, in, in);
  constexpr int kRows = k::kTileRows;
  const std::vector<float> a = random_vector(std::size_t(kRows * packed.depth()), 32, 1.0f);
  const ActivationRows<P> activations(a.data(), packed.depth(), in, packed.depth());
  const auto& rows = activations.rows;
  using Lanes = std::vector<float>;  // a tile's rows, kPanelColumns lanes each
  auto lanes_of = [](auto& acc, int n) {
    Lanes lanes(std::size_t(n * k::kPanelColumns));
    for (int r = 0; r < n; ++r)
      for (int v = 0; v < k::kTileVectors; ++v)
        moe::detail::simd::store(lanes.data() + r * k::kPanelColumns + v * moe::detail::simd::kWidth, acc[r][v]);
    return lanes;
  };
  for (int count = 1; count <= kRows; ++count)
    for (moe::Index p = 0; p + 1 < packed.panels(); ++p) {
      const k::PanelRef<P> panels[2] = {packed.panel(p), packed.panel(p + 1)};
      Lanes alone[2], paired[2], prefetched[2], fetching[2];
      Lanes* into = alone;
      int offset = 0, calls = 0;
      // One epilogue for every call, as the layer has: records the lanes, checks the panel order.
      auto record = [&](int which, auto& acc, int n) {
        REQUIRE(which == calls++);
        REQUIRE(n == count);
        into[offset + which] = lanes_of(acc, n);
      };
      k::multiply_panels<P>(rows, count, panels, 1, packed.depth(), record);  // panel p alone
      offset = 1, calls = 0;
      k::multiply_panels<P>(rows, count, panels + 1, 1, packed.depth(), record);  // panel p + 1 alone
      into = paired, offset = 0, calls = 0;
      k::multiply_panels<P>(rows, count, panels, 2, packed.depth(), record);
      INFO("rows " << count << ", panels " << p << " and " << p + 1);
      REQUIRE(calls == 2);
      into = prefetched, calls = 0;
      k::multiply_panels<P>(rows, count, panels, 2, packed.depth(), record, true);
      REQUIRE(calls == 2);
      // Next weights from panel p + 1 on: a stretch longer than the call fetches (a line per depth row per
      // panel at most; past the matrix, but a prefetch never faults), then one of 3 lines, which it finishes.
      const std::uintptr_t start = packed.codes_from(p + 1, 0, 0).from;
      k::NextWeights next{start, start + std::uintptr_t(4 * packed.depth() * 64)};
      into = fetching, calls = 0;
      k::multiply_panels<P>(rows, count, panels, 2, packed.depth(), record, false, &next);
      REQUIRE(calls == 2);
      k::NextWeights short_stretch{start, start + 3 * 64};
      calls = 0;
      k::multiply_panels<P>(rows, count, panels, 2, packed.depth(), record, true, &short_stretch);
      REQUIRE(calls == 2);
      if constexpr (moe::int8_activations<P>::value) {  // the int8 tile fetches none (multiply_rows)
        CHECK(next.from == start);
        CHECK(short_stretch.from == start);
      } else {
        CHECK(next.from > start);
        CHECK(next.from < next.to);
        CHECK((next.from - start) % 64 == 0);
        CHECK(short_stretch.from == short_stretch.to);
      }
      CHECK(std::memcmp(fetching[0].data(), alone[0].data(), alone[0].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(fetching[1].data(), alone[1].data(), alone[1].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(prefetched[0].data(), alone[0].data(), alone[0].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(prefetched[1].data(), alone[1].data(), alone[1].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(paired[0].data(), alone[0].data(), alone[0].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(paired[1].data(), alone[1].data(), alone[1].size() * sizeof(float)) == 0);
    }
}
TEST_CASE_TEMPLATE_APPLY(two_panels_one_tile, check::AllPrecisions);
