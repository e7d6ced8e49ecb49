// tests/test_precision.cpp: weight storage precisions: their conversions, their round trips, and the
// layer computing with them against the reference on the same (dequantised) weights.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "layer_check.hpp"

using moe::Dynamic;

namespace {

float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f16 by its definition: sign, 5-bit exponent (bias 15), 10-bit fraction, subnormals below 2^-14.
double f16_value(std::uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 31, fraction = h & 1023;
  const double magnitude = exponent == 0 ? std::ldexp(fraction, -24) : std::ldexp(1024 + fraction, exponent - 25);
  return sign ? -magnitude : magnitude;
}

std::vector<float> random_vector(std::size_t n, unsigned seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// A kernel row from depth k0 on: f32 rows by pointer, coded rows by their from().
const float* advance(const float* row, moe::Index k0) { return row + k0; }
template <class Row>
Row advance(const Row& row, moe::Index k0) {
  return row.from(k0);
}

// Runs the micro-kernel on kTileRows `rows` for every row count, every panel of `packed` and two depth
// ranges ([0, kDepthBlock) and [kDepthBlock, end)), and checks each lane against the double sum over
// k < in of w[o][k] * activation(r, k), within bound(span) times the sum of the terms' magnitudes.
template <class P, class Row, class Activation, class Bound>
void check_panel_products(const moe::kernels::PanelMatrix<P>& packed, const Row* rows, const std::vector<float>& w,
                          moe::Index out, moe::Index in, moe::Index end, Activation activation, Bound bound) {
  using moe::kernels::kPanelColumns;
  constexpr int kRows = moe::kernels::kTileRows;
  for (int count = 1; count <= kRows; ++count)
    for (moe::Index p = 0; p < packed.panels(); ++p)
      for (moe::Index k0 : {moe::Index(0), moe::kernels::kDepthBlock}) {
        const moe::Index span = k0 == 0 ? moe::kernels::kDepthBlock : end - k0;
        Row shifted[kRows];
        for (int r = 0; r < kRows; ++r) shifted[r] = advance(rows[r], k0);
        moe::kernels::multiply_rows(shifted, count, packed.panel(p, k0), span, [&](auto& acc, int n) {
          REQUIRE(n == count);
          for (int r = 0; r < n; ++r) {
            float lanes[kPanelColumns];
            for (int v = 0; v < moe::kernels::kTileVectors; ++v)
              moe::simd::store(lanes + v * moe::simd::kWidth, acc[r][v]);
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
  static constexpr int kRows = moe::kernels::kTileRows;
  std::vector<std::int8_t> codes;
  std::vector<float> scales;  // one per 32 codes
  std::vector<std::int32_t> sums;
  std::vector<std::uint16_t> halves;
  moe::kernels::ActivationRow<P> rows[kRows];

  ActivationRows(const float* a, moe::Index a_stride, moe::Index in, moe::Index depth)
      : codes(std::size_t(kRows * depth)),
        scales(std::size_t(kRows * depth / moe::kernels::kActivationBlock + 1)),
        sums(scales.size()),
        halves(codes.size()) {
    namespace k = moe::kernels;
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

}  // namespace

TEST_CASE("f16 decodes every code by its definition and re-encodes it exactly") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const std::uint16_t code = std::uint16_t(h);
    const float value = moe::f16::decode(code);
    if (((h >> 10) & 31) == 31) {
      CHECK(((h & 1023) ? std::isnan(value) : std::isinf(value)));
      continue;
    }
    REQUIRE(double(value) == f16_value(code));
    REQUIRE(moe::f16::encode(value) == code);
  }
}

TEST_CASE("f16 rounds to nearest even, overflows to Inf, keeps subnormals") {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even code (1).
  CHECK(moe::f16::encode(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  CHECK(moe::f16::encode(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie to even upwards
  CHECK(moe::f16::encode(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  CHECK(moe::f16::encode(65504.0f) == 0x7bff);
  CHECK(moe::f16::encode(65519.0f) == 0x7bff);
  CHECK(moe::f16::encode(65520.0f) == 0x7c00);
  CHECK(moe::f16::encode(-1e9f) == 0xfc00);
  CHECK(moe::f16::encode(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(moe::f16::encode(std::ldexp(1.0f, -25)) == 0x0000);  // tie between 0 and the smallest: even
  CHECK(moe::f16::encode(std::ldexp(3.0f, -25)) == 0x0002);
  CHECK(std::isnan(moe::f16::decode(moe::f16::encode(std::nanf("")))));
}

TEST_CASE("bf16 keeps the top half of f32, rounded to nearest even") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float value = moe::bf16::decode(std::uint16_t(h));
    if (std::isnan(value)) continue;
    REQUIRE(moe::bf16::encode(value) == h);
    REQUIRE(value == bits_float(h << 16));
  }
  CHECK(moe::bf16::encode(bits_float(0x3f808000u)) == 0x3f80);  // tie: even
  CHECK(moe::bf16::encode(bits_float(0x3f818000u)) == 0x3f82);  // tie: even upwards
  CHECK(moe::bf16::encode(bits_float(0x3f808001u)) == 0x3f81);
  CHECK(std::isnan(moe::bf16::decode(moe::bf16::encode(std::nanf("")))));
}

TEST_CASE_TEMPLATE("a round trip stays within the precision's step", P, moe::bf16, moe::f16, moe::q8, moe::q4) {
  const moe::Index rows = 5, cols = 77;  // 77: two whole q4 blocks and a partial one
  std::vector<float> w = random_vector(std::size_t(rows * cols), 3, 0.7f);
  w[10] = 0.0f;
  w[11] = -3.5f;  // an outlier that sets row 0's scales
  std::vector<float> out(w.size());
  moe::round_trip<P>(w.data(), rows, cols, cols, out.data());
  for (moe::Index r = 0; r < rows; ++r) {
    for (moe::Index c = 0; c < cols; ++c) {
      const float x = w[std::size_t(r * cols + c)], y = out[std::size_t(r * cols + c)];
      float step;  // the largest error the format allows for x
      if (std::is_same<P, moe::bf16>::value) {
        step = std::ldexp(std::abs(x), -8);
      } else if (std::is_same<P, moe::f16>::value) {
        step = std::ldexp(std::abs(x), -11) + std::ldexp(1.0f, -25);
      } else {
        const moe::Index begin = std::is_same<P, moe::q4>::value ? c / 32 * 32 : 0;
        const moe::Index end = std::is_same<P, moe::q4>::value ? std::min<moe::Index>(begin + 32, cols) : cols;
        float largest = 0;
        for (moe::Index i = begin; i < end; ++i) largest = std::max(largest, std::abs(w[std::size_t(r * cols + i)]));
        // Half a quantisation step; for q4 also the f16 rounding of the scale (7 steps of 2^-11 each).
        step = std::is_same<P, moe::q8>::value ? largest / 254.0f * 1.0001f
                                               : largest / 7.0f * (0.5f + 8 * std::ldexp(1.0f, -11));
      }
      INFO("row " << r << " column " << c << ": " << x << " -> " << y);
      REQUIRE(std::abs(y - x) <= step);
    }
  }
  // Zero stays zero, and a round trip of a round trip changes nothing (for q8 the recomputed scale
  // fl(127 s) / 127 may differ from s in its last bit, so there only within one step).
  CHECK(out[10] == 0.0f);
  std::vector<float> again(out.size());
  moe::round_trip<P>(out.data(), rows, cols, cols, again.data());
  if (!std::is_same<P, moe::q8>::value) CHECK(again == out);
  // A row (or block) below FLT_MIN is stored as zeros, never NaN.
  std::vector<float> tiny(static_cast<std::size_t>(cols), 1e-39f), tiny_out(static_cast<std::size_t>(cols));
  moe::round_trip<P>(tiny.data(), 1, cols, cols, tiny_out.data());
  for (float v : tiny_out) REQUIRE(std::isfinite(v));
  CHECK_THROWS_WITH_AS(moe::round_trip<P>(std::vector<float>{1.0f, std::nanf("")}.data(), 1, 2, 2, tiny_out.data()),
                       doctest::Contains("w has NaN or Inf at (0, 1)"), moe::Error);
}

// For q8a8, q4a8 and bf16a16 the reference also carries the activations' coding error as a bound
// (reference::int8_step_error, bf16_step_error): that bound is the precision's stated extra error.
TEST_CASE_TEMPLATE("the layer computes with stored weights like the reference does", P, moe::f32, moe::bf16, moe::f16,
                   moe::q8, moe::q4, moe::q8a8, moe::q4a8, moe::bf16a16) {
  using Layer = check::CompiledLayer<P>;
  SUBCASE("gated experts, sizes off every block, tokens over several tiles") {
    check::against_reference<Layer>(check::config(77, 45, 5, 2), moe::SoftmaxTopK(true), 23, 201);
  }
  SUBCASE("one token") {
    check::against_reference<Layer>(check::config(40, 30, 4, 2), moe::SoftmaxTopK(false), 1, 202);
  }
  SUBCASE("decode work items that span several short panels") {
    // 1024 hidden units in 32+ panels of a 40-deep projection: items of several consecutive panels.
    check::against_reference<Layer>(check::config(40, 1000, 4, 2), moe::SoftmaxTopK(true), 2, 204);
  }
  SUBCASE("decode work items over many busy experts: fewer, longer items") {
    // Every expert busy (k = E = 8): items are counted per thread, not per expert, so each expert's 32 or
    // more short panels (2000 in the scalar build) make a few long items, the last one often partial.
    check::against_reference<Layer>(check::config(40, 1000, 8, 8), moe::SoftmaxTopK(true), 1, 207, 1);
    check::against_reference<Layer>(check::config(40, 1000, 8, 8), moe::SoftmaxTopK(true), 1, 208, 2);
  }
  SUBCASE("decode combine items that span several output panels, the last one partial") {
    // 581 outputs: 10 panels of 64 (AVX-512) or more, each a short 40-deep down projection.
    check::against_reference<Layer>(check::config(581, 40, 3, 2), moe::SoftmaxTopK(true), 1, 205, 1);
    check::against_reference<Layer>(check::config(581, 40, 3, 2), moe::SoftmaxTopK(true), 3, 206, 2);
  }
  SUBCASE("an FFN wider than a depth block, a plain MLP, a shared expert") {
    auto c = check::config(33, 530, 3, 1, moe::ReluMLP);
    c.num_shared_experts = 1;
    c.shared_ffn_size = 70;
    check::against_reference<Layer>(c, moe::SoftmaxTopK(true), 7, 203);
  }
}

TEST_CASE_TEMPLATE("stored precisions give the same bits on one and two threads", P, moe::bf16, moe::q4, moe::q4a8,
                   moe::bf16a16) {
  const auto c = check::config(64, 96, 6, 2);
  const auto one = check::against_reference<moe::Layer<6, 2, P>>(c, moe::SoftmaxTopK(true), 13, 211, 1);
  const auto two = check::against_reference<moe::Layer<6, 2, P>>(c, moe::SoftmaxTopK(true), 13, 211, 2);
  CHECK(std::memcmp(one.y.data(), two.y.data(), one.y.size() * sizeof(float)) == 0);
}

// A token's output is a function of the token alone: the same bits whether it runs alone (decode: 1-row
// tiles, work items of several panels) or in a batch (tiles of up to kTileRows rows, one panel per item),
// at whatever position its experts' tiles give it.
TEST_CASE_TEMPLATE("a token gives the same bits alone and in a batch", P, moe::f32, moe::bf16, moe::f16, moe::q8,
                   moe::q4, moe::q8a8, moe::q4a8, moe::bf16a16) {
  // 13 tokens on 3 experts: tiles of 6 rows and fewer, against passes of 1 and 2 tokens. The second
  // shape's small passes pair panels (kernels::multiply_panels, tiles of 1 and 2 rows) in the input
  // projections, an odd count of them (19 on AVX-512). Paired combine items are checked against the
  // reference ("decode combine items that span several output panels", one thread).
  for (const moe::Index H : {moe::Index(70), moe::Index(300)}) {
    const auto c = check::config(H, H == 70 ? 100 : 600, 3, 2);
    const reference::Weights w = reference::random_weights(c, 221, 4.0f);
    check::CompiledLayer<P> layer(c, moe::SoftmaxTopK(true));
    reference::load(layer, w);
    constexpr moe::Index kTokens = 13;
    const std::vector<float> x = synthetic::tokens(kTokens, H, 222);
    moe::Workspace ws = layer.workspace(kTokens);
    std::vector<float> batch(kTokens * H), small(2 * H);
    layer.forward(x.data(), H, batch.data(), H, kTokens, ws);
    for (const moe::Index n : {moe::Index(1), moe::Index(2)}) {
      for (moe::Index t = 0; t + n <= kTokens; t += n) {
        layer.forward(x.data() + t * H, H, small.data(), H, n, ws);
        INFO("hidden " << H << ", tokens " << t << " to " << t + n - 1);
        CHECK(std::memcmp(small.data(), batch.data() + t * H, std::size_t(n * H) * sizeof(float)) == 0);
      }
    }
  }
}

// A NaN inside an expert is an error in every precision, as in f32: never dropped or turned into a finite
// code by the int8 or bf16 activation rounding.
TEST_CASE_TEMPLATE("a NaN hidden value is reported, not dropped", P, moe::f32, moe::bf16, moe::f16, moe::q8, moe::q4,
                   moe::q8a8, moe::q4a8, moe::bf16a16) {
  constexpr moe::Index H = 40, F = 8;
  const auto c = check::config(H, F, 2, 1);
  check::CompiledLayer<P> layer(c, moe::SoftmaxTopK(true));
  // Huge finite inputs and weights every precision holds: gate unit 0 overflows to +Inf, and its up
  // weights are zero, so its hidden value is silu(Inf) * 0 = NaN; every other hidden value is 0.
  std::vector<float> router(2 * H, 0.0f), gate(F * H, 0.0f), up(F * H, 0.0f), down(H * F, 1.0f);
  std::fill_n(gate.begin(), H, 1000.0f);
  layer.set_router(moe::WeightView(router.data(), 2, H));
  for (int e = 0; e < 2; ++e)
    layer.set_expert(e, moe::WeightView(gate.data(), F, H), moe::WeightView(up.data(), F, H),
                     moe::WeightView(down.data(), H, F));
  const std::vector<float> x(3 * H, 1e36f);
  std::vector<float> y(x.size());
  moe::Workspace ws = layer.workspace(3);
  for (moe::Index tokens : {1, 3})
    CHECK_THROWS_WITH_AS(layer.forward(x.data(), H, y.data(), H, tokens, ws),
                         doctest::Contains("overflowed to Inf or NaN inside an expert"), moe::Error);
}

TEST_CASE("weights a precision cannot hold are refused with their place") {
  const auto c = check::config(8, 4, 2, 1);
  check::CompiledLayer<moe::f16> layer(c);
  std::vector<float> a(4 * 8, 0.5f), b(8 * 4, 0.5f);
  a[9] = 1e5f;
  CHECK_THROWS_WITH_AS(layer.set_expert(0, moe::WeightView(a.data(), 4, 8), moe::WeightView(b.data(), 4, 8),
                                        moe::WeightView(b.data(), 8, 4)),
                       doctest::Contains("expert 0 gate weight 100000.000000 at (1, 1) is outside the range of f16"),
                       moe::Error);
  check::CompiledLayer<moe::q4> small(c);
  a[9] = 1e5f;  // representable as a q4 block scale: 1e5 / 7 < 65504
  CHECK_NOTHROW(small.set_expert(0, moe::WeightView(a.data(), 4, 8), moe::WeightView(b.data(), 4, 8),
                                 moe::WeightView(b.data(), 8, 4)));
  a[9] = 1e6f;
  CHECK_THROWS_WITH_AS(small.set_expert(0, moe::WeightView(a.data(), 4, 8), moe::WeightView(b.data(), 4, 8),
                                        moe::WeightView(b.data(), 8, 4)),
                       doctest::Contains("outside the range of q4"), moe::Error);
}

TEST_CASE("the SIMD loads decode every code as the scalar conversions do") {
  constexpr int W = moe::simd::kWidth;
  alignas(64) float lanes[W], high[W];
  auto same_bits = [](float expected, float got) {
    return std::isnan(expected) ? std::isnan(got) : std::memcmp(&got, &expected, 4) == 0;
  };
  for (std::uint32_t first = 0; first < 65536; first += W) {
    std::uint16_t codes[2 * W];
    for (int i = 0; i < 2 * W; ++i) codes[i] = std::uint16_t((first + std::uint32_t(i) * 4099u) & 0xffffu);
    moe::simd::Vec even, odd;
    moe::simd::load_bf16_halves(codes, even, odd);
    moe::simd::store(lanes, even);
    moe::simd::store(high, odd);
    for (int i = 0; i < W; ++i) {
      REQUIRE(same_bits(moe::bf16::decode(codes[2 * i]), lanes[i]));
      REQUIRE(same_bits(moe::bf16::decode(codes[2 * i + 1]), high[i]));
    }
    moe::simd::store(lanes, moe::simd::load_f16(codes));
    for (int i = 0; i < W; ++i) REQUIRE(same_bits(moe::f16::decode(codes[i]), lanes[i]));
  }
  for (int first = 0; first < 256; first += W) {
    std::int8_t signed_codes[W];
    for (int i = 0; i < W; ++i) signed_codes[i] = std::int8_t(first + i - 128);
    moe::simd::store(lanes, moe::simd::load_i8(signed_codes));
    for (int i = 0; i < W; ++i) REQUIRE(lanes[i] == float(signed_codes[i]));
  }
  // Every nibble position of a 32-bit lane, every nibble value in every position over the lanes.
  for (int first = 0; first < 16; ++first) {
    std::uint32_t words[W];
    for (int i = 0; i < W; ++i) {
      words[i] = 0;
      for (int n = 0; n < 8; ++n) words[i] |= std::uint32_t((first + i + 3 * n) % 16) << (4 * n);
    }
    const moe::simd::IVec packed = moe::simd::load_int(words);
    for (int n = 0; n < 8; ++n) {
      moe::simd::store(lanes, moe::simd::nibble_to_float(packed, n));
      for (int i = 0; i < W; ++i) {
        const int nibble = int((words[i] >> (4 * n)) & 15u);
        REQUIRE(lanes[i] == float(nibble < 8 ? nibble : nibble - 16));  // a 4-bit two's complement
      }
    }
  }
}

TEST_CASE_TEMPLATE("the micro-kernel multiplies by packed panels of every precision, padding included", P, moe::f32,
                   moe::bf16, moe::f16, moe::q8, moe::q4) {
  using moe::kernels::kPanelColumns;
  // Two panels, the second mostly padding; depth past in_features padded, and fed non-zero activations,
  // so padding that did not read as zero would show.
  const moe::Index out = kPanelColumns + 3, in = 45, depth = moe::kernels::kDepthBlock + 40;
  std::vector<float> w = random_vector(std::size_t(out * in), 5, 0.3f);
  moe::kernels::PanelMatrix<P> packed;
  packed.pack(w.data(), out, in, in, depth);
  moe::round_trip<P>(w.data(), out, in, in, w.data());  // what the panels hold
  constexpr int kRows = moe::kernels::kTileRows;
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
TEST_CASE_TEMPLATE("two panels in one tile give each panel's bits alone", P, moe::f32, moe::bf16, moe::f16, moe::q8,
                   moe::q4, moe::q8a8, moe::q4a8, moe::bf16a16) {
  namespace k = moe::kernels;
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
        moe::simd::store(lanes.data() + r * k::kPanelColumns + v * moe::simd::kWidth, acc[r][v]);
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
  moe::kernels::quantize_activations(x.data(), 70, 128, codes.data(), scales.data(), sums.data());
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
  moe::kernels::quantize_activations(tiny.data(), 32, 32, codes.data(), scales.data(), sums.data());
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
      moe::kernels::quantize_activations(y.data(), 96, 96, codes.data(), scales.data(), sums.data());
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
  constexpr int W = moe::simd::kWidth;
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
    moe::simd::store_int(
        lanes, moe::simd::dot_u8s8(moe::simd::load_int(start), moe::simd::load_int(a), moe::simd::load_quad(x)));
    for (int l = 0; l < W; ++l) {
      std::int32_t expected = start[l];
      for (int j = 0; j < 4; ++j) expected += std::int32_t(a[4 * l + j]) * x[j];
      REQUIRE(lanes[l] == expected);
    }
  }
}

TEST_CASE_TEMPLATE("the int8-activation kernel sums exact block products, padding included", P, moe::q8a8, moe::q4a8) {
  using moe::kernels::kPanelColumns;
  constexpr int kBlock = moe::kernels::kActivationBlock;
  // Two panels, the second mostly padding; in_features not a whole block; two depth blocks of the kernel.
  const moe::Index out = kPanelColumns + 3, in = moe::kernels::kDepthBlock + 45;
  const moe::Index depth = (in + kBlock - 1) / kBlock * kBlock;
  std::vector<float> w = random_vector(std::size_t(out * in), 7, 0.3f);
  moe::kernels::PanelMatrix<P> packed;
  packed.pack(w.data(), out, in, in, in);
  REQUIRE(packed.depth() == depth);
  moe::round_trip<P>(w.data(), out, in, in, w.data());  // the weights the panels hold
  constexpr int kRows = moe::kernels::kTileRows;
  const std::vector<float> a = random_vector(std::size_t(kRows * in), 8, 1.0f);
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

TEST_CASE("activations round to bf16 as bf16::encode does, ties, NaN and subnormals included") {
  // Bit patterns from every exponent, with the tie and near-tie low halves spelled out.
  std::vector<float> x;
  for (std::uint32_t high = 0; high < 65536; high += 257)
    for (std::uint32_t low : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0x1234u})
      x.push_back(bits_float((high << 16) | low));
  for (float v : {1.0f + 0x1p-8f, -3.0f, 0.1f}) x.push_back(v);  // and a tail shorter than a vector
  const moe::Index n = moe::Index(x.size()), padded = n + 5;
  std::vector<std::uint16_t> codes(std::size_t(padded), 0xAAAA);
  moe::kernels::round_activations_bf16(x.data(), n, padded, codes.data());
  for (moe::Index i = 0; i < n; ++i) {
    INFO("value " << i << " bits " << std::hex << moe::detail::float_bits(x[std::size_t(i)]));
    REQUIRE(codes[std::size_t(i)] == moe::bf16::encode(x[std::size_t(i)]));
  }
  for (moe::Index i = n; i < padded; ++i) CHECK(codes[std::size_t(i)] == 0);
  CHECK(moe::bf16::encode(bits_float(0x3F808000u)) == 0x3F80);  // a tie to even: down
  CHECK(moe::bf16::encode(bits_float(0x3F818000u)) == 0x3F82);  // a tie to even: up
}

TEST_CASE("the bf16 dot product adds both exact products to each lane") {
  constexpr int W = moe::simd::kWidth;
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
    moe::simd::store(lanes,
                     moe::simd::dot_bf16(moe::simd::load(start), moe::simd::load_int(w), moe::simd::load_bf16_pair(x)));
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
  using moe::kernels::kPanelColumns;
  // Two panels, the second mostly padding; an odd in_features (the last pair half padding); two depth
  // blocks of the kernel.
  const moe::Index out = kPanelColumns + 3, in = moe::kernels::kDepthBlock + 45, depth = in + 1;
  std::vector<float> w = random_vector(std::size_t(out * in), 9, 0.3f);
  moe::kernels::PanelMatrix<moe::bf16a16> packed;
  packed.pack(w.data(), out, in, in, in);
  REQUIRE(packed.depth() == depth);
  moe::round_trip<moe::bf16a16>(w.data(), out, in, in, w.data());  // the weights the panels hold
  constexpr int kRows = moe::kernels::kTileRows;
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
