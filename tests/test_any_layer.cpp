// tests/test_any_layer.cpp: make_layer's run-time choice of precision (any_layer.hpp) and the one list of
// precisions. moe-tests links moe::layers, so these layers are the compiled ones (MOE_COMPILED_LAYERS);
// test_layer_precision.cpp checks each precision's against the reference through check::CompiledLayer.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <moe/any_layer.hpp>

#include "layer_check.hpp"
#include "precision_list.hpp"

#ifndef MOE_COMPILED_LAYERS
#error "moe-tests links moe::layers: these tests are of the compiled layers"
#endif

TEST_CASE_TEMPLATE_DEFINE("make_layer names each precision and its policy", P, any_layer_names) {
  const check::CompiledLayer<P> chosen(check::config(52, 76, 5, 2), moe::SoftmaxTopK(true));
  CHECK(std::string(chosen.any().precision()) == P::kName);
  CHECK(std::string(chosen.any().routing()) == moe::SoftmaxTopK::kName);
  CHECK(chosen.any().bits_per_weight() == P::kBitsPerWeight);
}
TEST_CASE_TEMPLATE_APPLY(any_layer_names, check::AllPrecisions);

TEST_CASE_TEMPLATE("make_layer's layer gives the bits of the Layer it stands for", P, moe::f32, moe::q4a8) {
  const moe::LayerConfig c = check::config(70, 44, 6, 3);
  const reference::Weights w = reference::random_weights(c, 8, 4.0f);
  moe::Layer<moe::Dynamic, moe::Dynamic, P> direct(c, moe::SoftmaxTopK(false));
  const std::unique_ptr<moe::AnyLayer> chosen = moe::make_layer(P::kName, c, moe::SoftmaxTopK(false));
  reference::load(direct, w);
  reference::load(*chosen, w);
  // Rows further apart than they are wide, x's and y's differently, so that a stride passed in the wrong
  // place shows.
  const moe::Index tokens = 9, H = c.hidden_size, xs = H + 3, ys = H + 5;
  const std::vector<float> x = synthetic::tokens(tokens, xs, 9);
  std::vector<float> a(std::size_t(tokens * ys), -1.0f), b(a.size(), -1.0f);
  moe::Workspace wa = direct.workspace(tokens, 2), wb = chosen->workspace(tokens, 2);
  direct.forward(x.data(), xs, a.data(), ys, tokens, wa);
  const moe::RoutingResult routed = chosen->forward(x.data(), xs, b.data(), ys, tokens, wb);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  for (moe::Index t = 0; t < tokens; ++t)
    for (moe::Index column = H; column < ys; ++column)
      CHECK(b[std::size_t(t * ys + column)] == -1.0f);  // the gap stays
  const moe::ForwardCost cost = chosen->cost(routed);
  CHECK(cost.weight_bytes == direct.cost(routed).weight_bytes);
  // An expert's packed bytes: the Layer's, and at least its three matrices at the precision's bits a weight.
  CHECK(chosen->expert_bytes() == direct.expert_bytes());
  CHECK(chosen->expert_bytes() >= 3.0 * double(c.hidden_size) * double(c.ffn_size) * P::kBitsPerWeight / 8);
}

TEST_CASE("make_layer takes the routing policies io/ uses") {
  const moe::LayerConfig c = check::config(16, 8, 4, 2);
  moe::SigmoidGroupTopK grouped;
  grouped.groups = 2;
  grouped.topk_groups = 1;
  grouped.bias.assign(4, 0.0f);
  CHECK(std::string(moe::make_layer("q8", c, grouped)->routing()) == moe::SigmoidGroupTopK::kName);
  moe::CapacityTopK capacity;
  capacity.capacity = 3;
  CHECK(std::string(moe::make_layer("bf16a16", c, capacity)->routing()) == moe::CapacityTopK::kName);
}

TEST_CASE("an unknown precision name is refused with the list of names") {
  CHECK(moe::precision_names() == "f32, bf16, f16, q8, q4, q8a8, q4a8, bf16a16, fp8, mxfp4, mxfp4a8");
  CHECK_THROWS_WITH_AS(moe::make_layer("q3", check::config(16, 8, 4, 2)),
                       "moe::make_layer: precision must be one of f32, bf16, f16, q8, q4, q8a8, q4a8, bf16a16, fp8, "
                       "mxfp4, mxfp4a8, got 'q3'",
                       moe::Error);
  CHECK_THROWS_WITH_AS(moe::make_layer("", check::config(16, 8, 4, 2)), doctest::Contains("got ''"), moe::Error);
  // The layer's own checks still run behind the interface.
  CHECK_THROWS_WITH_AS(moe::make_layer("f32", check::config(16, 8, 4, 5)), doctest::Contains("top_k must be in"),
                       moe::Error);
  int calls = 0;
  CHECK(moe::with_precision_named("q4a8", [&](auto p) { calls += std::is_same<decltype(p), moe::q4a8>::value; }));
  CHECK(calls == 1);
  CHECK_FALSE(moe::with_precision_named("Q4A8", [&](auto) { ++calls; }));
  CHECK(calls == 1);
  CHECK(moe::is_precision_name("bf16a16"));
  CHECK_FALSE(moe::is_precision_name("auto"));
}
