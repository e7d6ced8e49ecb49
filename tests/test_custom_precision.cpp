// tests/test_custom_precision.cpp: a precision defined outside the library, in this file alone: f32 weights
// stored negated. A weight-only precision is one struct with the members moe/precision.hpp lists; the
// panels, the kernels and the layer take it without an edit. Negation is exact, so the layer must compute
// with it what it computes with f32, bit for bit: that holds only if the panels hold the precision's codes
// (pack_column) and the kernels read them through its decode (decode_row).
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "layer_check.hpp"

namespace {

struct negated_f32 {
  static constexpr const char* kName = "negated_f32";
  static constexpr double kBitsPerWeight = 32.0;
  static constexpr float kMaxMagnitude = 3.4028234663852886e38f;
  using Activations = moe::activation_coding::F32Rows;
  static void round_trip_row(const float* w, moe::Index n, float* out) {
    for (moe::Index i = 0; i < n; ++i) out[i] = -(-w[i]);
  }

  using Code = float;
  using Scale = float;  // none
  static constexpr int kCodesPerRow = moe::detail::kernels::kPanelColumns;
  static constexpr int kScaleRows = 0;
  static constexpr int kDepthMultiple = 1;
  static constexpr Code kPaddingCode = 0.0f;
  static constexpr Scale kPaddingScale = 0.0f;
  static void pack_column(Code* codes, Scale*, moe::Index column, const float* w, moe::Index in) {
    for (moe::Index k = 0; k < in; ++k) codes[k * kCodesPerRow + column] = -w[k];
  }

  static constexpr int kDecodeRows = 1;
  static constexpr int kPairRows = 2;
  MOE_ALWAYS_INLINE static void decode_row(const Code* row,
                                           moe::detail::simd::Vec (&w)[moe::detail::kernels::kTileVectors]) {
    for (int v = 0; v < moe::detail::kernels::kTileVectors; ++v)
      w[v] = -moe::detail::simd::load(row + v * moe::detail::simd::kWidth);
  }
};

using NegatedLayer = moe::Layer<moe::Dynamic, moe::Dynamic, negated_f32>;
using F32Layer = moe::Layer<moe::Dynamic, moe::Dynamic, moe::f32>;

static_assert(moe::is_precision<negated_f32>::value, "negated_f32 has a precision's members");
static_assert(!moe::is_supported_precision<negated_f32>::value, "and is not one of the library's list");

}  // namespace

TEST_CASE("a precision defined outside the library packs its own codes") {
  const moe::Index out = moe::detail::kernels::kPanelColumns + 3, in = 11;
  std::vector<float> w(std::size_t(out * in));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(i % 7) - 2.5f;
  moe::detail::kernels::PanelMatrix<negated_f32> panels;
  panels.pack(w.data(), out, in, in, in);
  REQUIRE(panels.panels() == (out + moe::detail::kernels::kPanelColumns - 1) / moe::detail::kernels::kPanelColumns);
  for (moe::Index o = 0; o < out; ++o) {
    for (moe::Index k = 0; k < in; ++k) {
      const float code = panels.panel(o / moe::detail::kernels::kPanelColumns)
                             .codes[k * moe::detail::kernels::kPanelColumns + o % moe::detail::kernels::kPanelColumns];
      REQUIRE(code == -w[std::size_t(o * in + k)]);
    }
  }
}

TEST_CASE("a precision defined outside the library runs through the layer as f32 does, bit for bit") {
  struct Case {
    moe::LayerConfig config;
    moe::Index tokens;
    int threads;
  };
  const Case cases[] = {
      {check::config(77, 45, 5, 2), 23, 0},   // tiles of up to 6 rows, sizes off every block
      {check::config(40, 1000, 4, 2), 1, 1},  // decode: two panels a tile, items of several panels
      {check::config(40, 1000, 4, 2), 2, 2},  // two threads
      {check::config(581, 40, 3, 3), 5, 1},   // k = E, outputs over many panels
      {check::config(33, 530, 1, 1), 7, 2},   // E = 1, an FFN past a depth block
  };
  for (const Case& c : cases) {
    INFO("hidden " << c.config.hidden_size << ", ffn " << c.config.ffn_size << ", experts " << c.config.num_experts
                   << ", tokens " << c.tokens << ", threads " << c.threads);
    const auto negated =
        check::against_reference<NegatedLayer>(c.config, moe::SoftmaxTopK(true), c.tokens, 301, c.threads);
    const auto plain = check::against_reference<F32Layer>(c.config, moe::SoftmaxTopK(true), c.tokens, 301, c.threads);
    REQUIRE(negated.y.size() == plain.y.size());
    CHECK(std::memcmp(negated.y.data(), plain.y.data(), plain.y.size() * sizeof(float)) == 0);
  }
}
