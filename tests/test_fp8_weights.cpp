// tests/test_fp8_weights.cpp: FP8 weights handed over as the FP8 checkpoints publish them (Fp8BlockView: e4m3
// codes and one f32 scale per block). The fp8 precision keeps the codes and scales where its 128-input scale
// blocks lie inside the view's blocks, so the layer computes with exactly the published weights; other
// precisions (and other blocks) decode them to f32 and store those as any f32 weights. Checked against the
// plainly written reference (tests/reference.hpp) on the decoded weights, decoded here from the e4m3
// definition.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <moe/any_layer.hpp>

#include "layer_check.hpp"
#include "reference.hpp"
#include "synthetic_layer.hpp"

namespace {

// e4m3fn by its definition: sign, 4-bit exponent (bias 7), 3-bit fraction, subnormals below 2^-6.
double e4m3_value(std::uint8_t c) {
  const int exponent = (c >> 3) & 15, fraction = c & 7;
  const double magnitude = exponent == 0 ? std::ldexp(fraction, -9) : std::ldexp(8 + fraction, exponent - 10);
  return (c & 0x80) ? -magnitude : magnitude;
}

// rows x cols random e4m3 codes (never NaN) with one positive scale per block_rows x block_cols block, sized so
// that the weights are about `scale` in magnitude.
struct Fp8Matrix {
  std::vector<std::uint8_t> codes;
  std::vector<float> scales;
  moe::Index rows, cols, block_rows, block_cols;

  Fp8Matrix(std::mt19937& rng, moe::Index r, moe::Index c, moe::Index br, moe::Index bc, float scale)
      : rows(r), cols(c), block_rows(br), block_cols(bc) {
    std::uniform_int_distribution<int> byte(0, 253);
    for (moe::Index i = 0; i < r * c; ++i) {
      const int b = byte(rng);
      codes.push_back(std::uint8_t(b >= 0x7f ? b + 1 : b));  // skips 0x7f; 0xff is past the range
    }
    std::uniform_real_distribution<float> spread(0.5f, 2.0f);
    const moe::Index blocks = ((r + br - 1) / br) * ((c + bc - 1) / bc);
    for (moe::Index b = 0; b < blocks; ++b) scales.push_back(scale / 60.0f * spread(rng));
  }
  moe::Fp8BlockView view() const { return {codes.data(), scales.data(), rows, cols, block_rows, block_cols}; }
  // The weights, each code's value times its block's scale rounded once to f32.
  reference::Matrix decoded() const {
    const moe::Index scale_cols = (cols + block_cols - 1) / block_cols;
    reference::Matrix m(std::size_t(rows * cols));
    for (moe::Index o = 0; o < rows; ++o)
      for (moe::Index i = 0; i < cols; ++i)
        m[std::size_t(o * cols + i)] =
            float(e4m3_value(codes[std::size_t(o * cols + i)]) *
                  double(scales[std::size_t((o / block_rows) * scale_cols + i / block_cols)]));
    return m;
  }
};

struct Shape {
  moe::Index hidden, ffn;
  int experts, top_k;
  moe::Index block_rows, block_cols;
};

void check_against_reference(const Shape& s, const std::string& precision, int threads) {
  CAPTURE(precision);
  CAPTURE(s.hidden);
  CAPTURE(s.ffn);
  CAPTURE(s.block_cols);
  moe::LayerConfig c = check::config(s.hidden, s.ffn, s.experts, s.top_k);
  c.num_shared_experts = 1;
  std::mt19937 rng(unsigned(s.hidden * 7 + s.ffn));
  reference::Weights w = reference::random_weights(c, 11, 4.0f);  // the router and the shared gate
  std::vector<Fp8Matrix> fp8;
  const float in_scale = 1.0f / std::sqrt(float(s.hidden)), out_scale = 1.0f / std::sqrt(float(s.ffn));
  for (int e = 0; e <= s.experts; ++e) {  // the last is the shared expert
    fp8.emplace_back(rng, s.ffn, s.hidden, s.block_rows, s.block_cols, in_scale);
    fp8.emplace_back(rng, s.ffn, s.hidden, s.block_rows, s.block_cols, in_scale);
    fp8.emplace_back(rng, s.hidden, s.ffn, s.block_rows, s.block_cols, out_scale);
  }
  const std::unique_ptr<moe::AnyLayer> layer = moe::make_layer(precision, c, moe::SoftmaxTopK(true));
  layer->set_router(moe::WeightView(w.router.data(), s.experts, s.hidden));
  for (int e = 0; e < s.experts; ++e) {
    layer->set_expert(e, fp8[3 * e].view(), fp8[3 * e + 1].view(), fp8[3 * e + 2].view());
    w.gate[e] = fp8[3 * e].decoded();
    w.up[e] = fp8[3 * e + 1].decoded();
    w.down[e] = fp8[3 * e + 2].decoded();
  }
  const int shared = 3 * s.experts;
  layer->set_shared_expert(0, fp8[shared].view(), fp8[shared + 1].view(), fp8[shared + 2].view());
  w.shared_gate_proj[0] = fp8[shared].decoded();
  w.shared_up[0] = fp8[shared + 1].decoded();
  w.shared_down[0] = fp8[shared + 2].decoded();

  // What the layer stores: the published weights where it keeps them (fp8, blocks of whole 128-input
  // steps or one block a row: a matrix's columns decide; f32 always), else the decoded weights in its
  // precision.
  auto stored = [&](reference::Matrix& m, moe::Index rows, moe::Index cols) {
    const bool kept = precision == "f32" || (precision == "fp8" && (s.block_cols % 128 == 0 || s.block_cols >= cols));
    if (kept) return;
    moe::with_precision_named(precision,
                              [&](auto p) { moe::round_trip<decltype(p)>(m.data(), rows, cols, cols, m.data()); });
  };
  for (int e = 0; e < s.experts; ++e) {
    stored(w.gate[e], s.ffn, s.hidden);
    stored(w.up[e], s.ffn, s.hidden);
    stored(w.down[e], s.hidden, s.ffn);
  }
  stored(w.shared_gate_proj[0], s.ffn, s.hidden);
  stored(w.shared_up[0], s.ffn, s.hidden);
  stored(w.shared_down[0], s.hidden, s.ffn);

  const moe::Index tokens = 5;
  const std::vector<float> x = synthetic::tokens(tokens, s.hidden, 3);
  std::vector<float> y(x.size(), std::nanf(""));
  moe::Workspace ws = layer->workspace(tokens, threads);
  layer->forward(x.data(), s.hidden, y.data(), s.hidden, tokens, ws);
  const reference::Output ref = reference::forward(c, w, reference::Gating::SoftmaxTopKRenormalized, x.data(), tokens);
  int bad = 0;
  for (std::size_t i = 0; i < y.size() && bad < 5; ++i) {
    // The layer's weights are code * scale exactly; the reference's are those rounded once to f32.
    const double bound = ref.error_bound[i] + 1e-6 * std::abs(ref.y[i]);
    if (!(std::abs(double(y[i]) - ref.y[i]) <= bound)) {
      ++bad;
      INFO("element " << i << ": moe " << y[i] << " reference " << ref.y[i] << " bound " << bound);
      CHECK(std::abs(double(y[i]) - ref.y[i]) <= bound);
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("FP8 block weights: fp8 computes with the published codes and scales, other precisions decode them") {
  const Shape shapes[] = {
      {200, 136, 4, 2, 128, 128},  // partial blocks at both ends, 2 x 2 blocks per matrix
      {130, 40, 3, 3, 128, 256},   // k = E; blocks wider than fp8's 128 inputs
      {40, 24, 2, 1, 16, 24},      // blocks fp8 cannot keep: decoded and stored again
      {72, 40, 3, 2, 1, 72},       // a scale per row (fbgemm_fp8), rows not a multiple of 128 wide: kept
      {1, 1, 1, 1, 128, 128},      // E = 1, one weight a matrix
  };
  for (const Shape& s : shapes)
    for (const char* precision : {"fp8", "f32", "bf16", "q8"})
      for (int threads : {1, 2}) check_against_reference(s, precision, threads);
}

TEST_CASE("fp8 keeps published codes bit for bit: a layer from the view equals one from the decoded weights in f32") {
  // With 128 x 128 blocks the fp8 layer's outputs and an f32 layer's on the decoded weights differ only by the
  // f32 rounding of the sums, never by a requantisation (which would move weights by up to 1/16).
  const moe::LayerConfig c = check::config(256, 128, 2, 2);
  std::mt19937 rng(5);
  const Fp8Matrix gate(rng, 128, 256, 128, 128, 0.06f), up(rng, 128, 256, 128, 128, 0.06f),
      down(rng, 256, 128, 128, 128, 0.09f);
  const reference::Weights w = reference::random_weights(c, 2);
  const reference::Matrix g = gate.decoded(), u = up.decoded(), d = down.decoded();
  const auto fp8 = moe::make_layer("fp8", c, moe::SoftmaxTopK(true));
  const auto f32 = moe::make_layer("f32", c, moe::SoftmaxTopK(true));
  for (auto* layer : {fp8.get(), f32.get()}) layer->set_router(moe::WeightView(w.router.data(), 2, 256));
  for (int e = 0; e < 2; ++e) {
    fp8->set_expert(e, gate.view(), up.view(), down.view());
    f32->set_expert(e, moe::WeightView(g.data(), 128, 256), moe::WeightView(u.data(), 128, 256),
                    moe::WeightView(d.data(), 256, 128));
  }
  const std::vector<float> x = synthetic::tokens(3, 256, 9);
  std::vector<float> y8(x.size()), y32(x.size());
  moe::Workspace ws8 = fp8->workspace(3, 1), ws32 = f32->workspace(3, 1);
  fp8->forward(x.data(), 256, y8.data(), 256, 3, ws8);
  f32->forward(x.data(), 256, y32.data(), 256, 3, ws32);
  double largest = 0, diff = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    largest = std::max(largest, std::abs(double(y32[i])));
    diff = std::max(diff, std::abs(double(y8[i]) - double(y32[i])));
  }
  CHECK(diff <= 1e-5 * largest);
}

TEST_CASE("FP8 block weights that cannot be used are refused, naming the problem") {
  const moe::LayerConfig c = check::config(16, 8, 1, 1);
  std::mt19937 rng(1);
  Fp8Matrix gate(rng, 8, 16, 128, 128, 0.2f), up(rng, 8, 16, 128, 128, 0.2f), down(rng, 16, 8, 128, 128, 0.3f);
  for (const char* precision : {"fp8", "f32"}) {
    const auto layer = moe::make_layer(precision, c, moe::SoftmaxTopK(true));
    auto refused = [&](const std::string& part) {
      CHECK_THROWS_WITH_AS(layer->set_expert(0, gate.view(), up.view(), down.view()), doctest::Contains(part.c_str()),
                           moe::Error);
    };
    up.codes[5] = 0x7f;
    refused("expert 0 up weight has a NaN code at (0, 5)");
    up.codes[5] = 0xff;
    refused("expert 0 up weight has a NaN code at (0, 5)");
    up.codes[5] = 0x01;
    down.scales[0] = std::nanf("");
    refused("expert 0 down weight has block scale nan at block (0, 0)");
    down.scales[0] = 1e37f;  // fp8 keeps it times 2^8, which overflows; f32 holds it, not code * it
    refused(std::string(precision) == "fp8" ? "down weight has block scale" : "is outside the range of f32");
    if (std::string(precision) == "fp8") refused("above 2^120");
    down.scales[0] = 0.01f;
    moe::Fp8BlockView wrong = gate.view();
    wrong.cols = 15;
    CHECK_THROWS_WITH_AS(layer->set_expert(0, wrong, up.view(), down.view()),
                         doctest::Contains("expert 0 gate weight is 8 x 15, expected 8 x 16"), moe::Error);
    wrong = gate.view();
    wrong.block_cols = 0;
    CHECK_THROWS_WITH_AS(layer->set_expert(0, wrong, up.view(), down.view()),
                         doctest::Contains("a block of 0 rows or columns"), moe::Error);
    layer->set_expert(0, gate.view(), up.view(), down.view());  // and fine again
  }
}
