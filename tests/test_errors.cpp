// tests/test_errors.cpp: every bad argument gives a moe::Error whose message names the problem.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "layer_check.hpp"

using moe::Dynamic;

namespace {

template <class Layer>
Layer loaded(const moe::LayerConfig& c, unsigned seed = 5) {
  Layer layer(c);
  reference::load(layer, reference::random_weights(c, seed));
  return layer;
}

}  // namespace

TEST_CASE("impossible configurations are refused with a message") {
  CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(16, 8, 4, 5)),
                       doctest::Contains("top_k must be in [1, num_experts = 4], got 5"), moe::Error);
  CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(16, 8, 4, 0)), doctest::Contains("top_k"), moe::Error);
  CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(0, 8, 4, 1)), doctest::Contains("hidden_size must be positive"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(16, -1, 4, 1)), doctest::Contains("ffn_size must be positive"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(moe::Layer<>(check::config(16, 8, 0, 1)), doctest::Contains("num_experts must be >= 1"),
                       moe::Error);
  CHECK_THROWS_WITH_AS((moe::Layer<8, 2>(check::config(16, 8, 6, 2))),
                       doctest::Contains("num_experts is 6 but the Layer type fixes 8"), moe::Error);
  CHECK_THROWS_WITH_AS((moe::Layer<8, 2>(check::config(16, 8, 8, 3))),
                       doctest::Contains("top_k is 3 but the Layer type fixes 2"), moe::Error);
  CHECK_THROWS_WITH_AS((moe::Layer<Dynamic, Dynamic, moe::f32, moe::DenseSoftmax>(check::config(16, 8, 4, 2))),
                       doctest::Contains("runs every expert"), moe::Error);
  // Fixed values may be left out of the run-time config.
  moe::LayerConfig c = check::config(16, 8, 0, 0);
  moe::Layer<8, 2> fixed(c);
  CHECK(fixed.experts() == 8);
  CHECK(fixed.top_k() == 2);
}

TEST_CASE("weights of the wrong shape, index or kind, or with NaN, are refused") {
  moe::Layer<> layer(check::config(16, 8, 3, 1));
  std::vector<float> a(16 * 8, 0.1f), b(8 * 16, 0.1f);
  CHECK_THROWS_WITH_AS(layer.set_router(moe::WeightView(a.data(), 4, 16)),
                       doctest::Contains("router weight is 4 x 16, expected 3 x 16"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.set_expert(3, moe::WeightView(b.data(), 8, 16), moe::WeightView(b.data(), 8, 16),
                                        moe::WeightView(a.data(), 16, 8)),
                       doctest::Contains("expert index 3 is out of range [0, 3)"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.set_expert(0, moe::WeightView(b.data(), 8, 15), moe::WeightView(b.data(), 8, 16),
                                        moe::WeightView(a.data(), 16, 8)),
                       doctest::Contains("expert 0 gate weight is 8 x 15, expected 8 x 16"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.set_expert(0, moe::WeightView(b.data(), 8, 16), moe::WeightView(a.data(), 16, 8)),
                       doctest::Contains("experts are gated"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.set_shared_expert(0, moe::WeightView(b.data(), 8, 16), moe::WeightView(b.data(), 8, 16),
                                               moe::WeightView(a.data(), 16, 8)),
                       doctest::Contains("shared expert index 0 is out of range [0, 0)"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.set_shared_expert_gate(0, moe::WeightView(a.data(), 1, 16)),
                       doctest::Contains("without shared_expert_gate"), moe::Error);
  b[37] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(layer.set_expert(1, moe::WeightView(b.data(), 8, 16), moe::WeightView(a.data(), 8, 16),
                                        moe::WeightView(a.data(), 16, 8)),
                       doctest::Contains("expert 1 gate weight has NaN or Inf in row 2"), moe::Error);
  a[5] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(layer.set_router(moe::WeightView(a.data(), 3, 16)),
                       doctest::Contains("router row 0 has NaN or Inf"), moe::Error);
}

TEST_CASE("forward refuses bad shapes, a small or foreign workspace, missing weights, and NaN input") {
  const auto c = check::config(20, 12, 4, 2);
  auto layer = loaded<moe::Layer<>>(c);
  using RowMatrix = moe::Layer<>::RowMatrix;
  moe::Workspace ws = layer.workspace(4);
  RowMatrix x = RowMatrix::Random(3, 20), y(3, 20);

  RowMatrix narrow(3, 19), short_y(2, 20), many(5, 20);
  CHECK_THROWS_WITH_AS(layer.forward(narrow, narrow, ws),
                       doctest::Contains("x has 19 columns, expected hidden_size = 20"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.forward(x, short_y, ws), doctest::Contains("x is 3 x 20 but y is 2 x 20"), moe::Error);
  many.setRandom();
  CHECK_THROWS_WITH_AS(layer.forward(many, many, ws),
                       doctest::Contains("5 tokens exceed the workspace's max_tokens = 4"), moe::Error);
  moe::Workspace empty;
  CHECK_THROWS_WITH_AS(layer.forward(x, y, empty), doctest::Contains("workspace is empty"), moe::Error);
  auto other = loaded<moe::Layer<>>(check::config(20, 12, 5, 2));
  moe::Workspace foreign = other.workspace(4);
  CHECK_THROWS_WITH_AS(layer.forward(x, y, foreign),
                       doctest::Contains("workspace was made for a layer of another shape"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.forward(x.data(), 19, y.data(), 20, 3, ws),
                       doctest::Contains("row strides must be >= hidden_size"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.workspace(0), doctest::Contains("max_tokens must be >= 1"), moe::Error);

  x(2, 7) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(layer.forward(x, y, ws), doctest::Contains("input token 2 has NaN or Inf"), moe::Error);
  x(2, 7) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(layer.forward(x, y, ws), doctest::Contains("input token 2 has NaN or Inf"), moe::Error);
  x(2, 7) = 0;
  // Finite input whose router logits overflow float: with an all-ones router each logit is the row sum.
  std::vector<float> ones(4 * 20, 1.0f);
  layer.set_router(moe::WeightView(ones.data(), 4, 20));
  x.row(1).setConstant(3e38f);
  CHECK_THROWS_WITH_AS(layer.forward(x, y, ws), doctest::Contains("router logits of token 1 overflowed"), moe::Error);

  moe::Layer<> unloaded(c);
  moe::Workspace ws2 = unloaded.workspace(4);
  x.setRandom();
  CHECK_THROWS_WITH_AS(unloaded.forward(x, y, ws2), doctest::Contains("router weights are not set"), moe::Error);
  std::vector<float> router(4 * 20, 0.01f);
  unloaded.set_router(moe::WeightView(router.data(), 4, 20));
  CHECK_THROWS_WITH_AS(unloaded.forward(x, y, ws2), doctest::Contains("expert 0 has no weights"), moe::Error);
  CHECK_THROWS_WITH_AS(ws.set_threads(-1), doctest::Contains("thread count must be >= 0"), moe::Error);
}

namespace {
// A deliberately broken routing policy: picks expert `first` and then `second` for every token.
struct FixedPairRouting {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "fixed_pair";
  int first = 0, second = 1;
  float weight = 0.5f;
  template <int K>
  void route(const float*, int, int, int* ids, float* weights) const noexcept {
    ids[0] = first;
    ids[1] = second;
    weights[0] = weights[1] = weight;
  }
};
}  // namespace

TEST_CASE("a routing policy's broken output is reported by name") {
  const auto c = check::config(12, 8, 4, 2);
  moe::Layer<4, 2, moe::f32, FixedPairRouting> layer(c);
  reference::load(layer, reference::random_weights(c, 9));
  moe::Workspace ws = layer.workspace(2);
  moe::Layer<4, 2, moe::f32, FixedPairRouting>::RowMatrix x = decltype(x)::Random(2, 12), y(2, 12);
  layer.forward(x, y, ws);  // a valid pair runs
  moe::Layer<4, 2, moe::f32, FixedPairRouting> twice(c, FixedPairRouting{2, 2});
  reference::load(twice, reference::random_weights(c, 9));
  CHECK_THROWS_WITH_AS(twice.forward(x, y, ws), doctest::Contains("fixed_pair chose expert 2 twice for token 0"),
                       moe::Error);
  moe::Layer<4, 2, moe::f32, FixedPairRouting> outside(c, FixedPairRouting{0, 4});
  reference::load(outside, reference::random_weights(c, 9));
  CHECK_THROWS_WITH_AS(outside.forward(x, y, ws),
                       doctest::Contains("fixed_pair chose expert 4 for token 0, out of range [0, 4)"), moe::Error);
  moe::Layer<4, 2, moe::f32, FixedPairRouting> nan(c, FixedPairRouting{0, 1, std::nanf("")});
  reference::load(nan, reference::random_weights(c, 9));
  CHECK_THROWS_WITH_AS(nan.forward(x, y, ws), doctest::Contains("fixed_pair gave token 0 a non-finite weight"),
                       moe::Error);
}

TEST_CASE("more bad arguments: pointers, strides, kinds, shared experts, limits, overflow") {
  const auto c = check::config(16, 8, 3, 2);
  auto layer = loaded<moe::Layer<>>(c);
  moe::Workspace ws = layer.workspace(4);
  std::vector<float> x(4 * 16, 0.5f), y(4 * 16);
  CHECK_THROWS_WITH_AS(layer.forward(x.data(), 16, y.data(), 16, -1, ws), doctest::Contains("token count must be >= 0"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(layer.forward(nullptr, 16, y.data(), 16, 2, ws), doctest::Contains("x or y is null"),
                       moe::Error);
  CHECK_THROWS_WITH_AS(layer.forward(x.data(), 16, y.data(), 15, 2, ws),
                       doctest::Contains("row strides must be >= hidden_size"), moe::Error);
  using RowMatrix = moe::Layer<>::RowMatrix;
  RowMatrix wide = RowMatrix::Random(4, 32), out(4, 16);
  Eigen::Map<RowMatrix, 0, Eigen::Stride<32, 2>> every_other(wide.data(), 4, 16);
  CHECK_THROWS_WITH_AS(layer.forward(every_other, out, ws), doctest::Contains("unit inner stride"), moe::Error);

  // A workspace of a plain-MLP layer with the same sizes has half the input-projection items.
  auto plain = loaded<moe::Layer<>>(check::config(16, 8, 3, 2, moe::ReluMLP));
  moe::Workspace plain_ws = plain.workspace(4);
  CHECK_THROWS_WITH_AS(layer.forward(x.data(), 16, y.data(), 16, 2, plain_ws), doctest::Contains("another shape"),
                       moe::Error);
  // Layers whose kernels code activations differently keep different buffers, even where every size matches
  // (a hidden size of 64 is whole int8 blocks and whole bf16 pairs alike).
  auto int8_layer = loaded<moe::Layer<Dynamic, Dynamic, moe::q8a8>>(check::config(64, 32, 3, 2));
  moe::Workspace bf16_ws = loaded<moe::Layer<Dynamic, Dynamic, moe::bf16a16>>(check::config(64, 32, 3, 2)).workspace(4);
  std::vector<float> x64(2 * 64, 0.1f), y64(2 * 64);
  CHECK_THROWS_WITH_AS(int8_layer.forward(x64.data(), 64, y64.data(), 64, 2, bf16_ws),
                       doctest::Contains("another shape"), moe::Error);
  std::vector<float> a(8 * 16, 0.1f), b(16 * 8, 0.1f);
  CHECK_THROWS_WITH_AS(plain.set_expert(0, moe::WeightView(a.data(), 8, 16), moe::WeightView(a.data(), 8, 16),
                                        moe::WeightView(b.data(), 16, 8)),
                       doctest::Contains("plain MLPs: pass (up, down)"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.set_expert(0, moe::WeightView(a.data(), 8, 16, 12), moe::WeightView(a.data(), 8, 16),
                                        moe::WeightView(b.data(), 16, 8)),
                       doctest::Contains("row stride below its width"), moe::Error);
  b[17] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(layer.set_expert(0, moe::WeightView(a.data(), 8, 16), moe::WeightView(a.data(), 8, 16),
                                        moe::WeightView(b.data(), 16, 8)),
                       doctest::Contains("expert 0 down weight has NaN or Inf in row 2"), moe::Error);

  auto shared_config = c;
  shared_config.num_shared_experts = 1;
  shared_config.shared_expert_gate = true;
  moe::Layer<> shared(shared_config);
  reference::Weights w = reference::random_weights(shared_config, 3);
  shared.set_router(moe::WeightView(w.router.data(), 3, 16));
  for (int e = 0; e < 3; ++e)
    shared.set_expert(e, moe::WeightView(w.gate[e].data(), 8, 16), moe::WeightView(w.up[e].data(), 8, 16),
                      moe::WeightView(w.down[e].data(), 16, 8));
  moe::Workspace shared_ws = shared.workspace(4);
  CHECK_THROWS_WITH_AS(shared.forward(x.data(), 16, y.data(), 16, 2, shared_ws),
                       doctest::Contains("shared expert gate 0 is not set"), moe::Error);
  shared.set_shared_expert_gate(0, moe::WeightView(w.shared_gate[0].data(), 1, 16));
  CHECK_THROWS_WITH_AS(shared.forward(x.data(), 16, y.data(), 16, 2, shared_ws),
                       doctest::Contains("shared expert 0 has no weights"), moe::Error);

  auto negative = c;
  negative.num_shared_experts = -1;
  CHECK_THROWS_WITH_AS(moe::Layer<>{negative}, doctest::Contains("num_shared_experts must be in [0, 65536]"),
                       moe::Error);
  negative = c;
  negative.shared_ffn_size = -3;
  CHECK_THROWS_WITH_AS(moe::Layer<>{negative}, doctest::Contains("shared_ffn_size must be >= 0"), moe::Error);
  auto bad_activation = c;
  bad_activation.ffn.activation = static_cast<moe::Activation>(42);
  CHECK_THROWS_WITH_AS(moe::Layer<>{bad_activation}, doctest::Contains("unknown activation 42"), moe::Error);
  CHECK_THROWS_WITH_AS(layer.workspace(moe::Index(1) << 40), doctest::Contains("exceeds 2^30 (token, expert) pairs"),
                       moe::Error);

  // Finite input and weights whose product overflows inside an expert.
  std::vector<float> big(8 * 16, 1e20f), big_down(16 * 8, 1e20f);
  layer.set_expert(0, moe::WeightView(big.data(), 8, 16), moe::WeightView(big.data(), 8, 16),
                   moe::WeightView(big_down.data(), 16, 8));
  layer.set_expert(1, moe::WeightView(big.data(), 8, 16), moe::WeightView(big.data(), 8, 16),
                   moe::WeightView(big_down.data(), 16, 8));
  layer.set_expert(2, moe::WeightView(big.data(), 8, 16), moe::WeightView(big.data(), 8, 16),
                   moe::WeightView(big_down.data(), 16, 8));
  CHECK_THROWS_WITH_AS(layer.forward(x.data(), 16, y.data(), 16, 2, ws),
                       doctest::Contains("overflowed to Inf or NaN inside an expert"), moe::Error);
}
