// tests/test_routing_layer.cpp: every routing policy driving a whole layer. The policies' decisions are
// checked against a reference in test_routing.cpp; here the layer must compute exactly what its routing
// result says (markers, dropped tokens passed through, tokens with no expert), report it, and feed
// RoutingStats the same decision.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "layer_check.hpp"

using moe::Dynamic;

namespace {

struct Run {
  std::vector<float> y;
  std::vector<int> ids;
  std::vector<float> weights;
  std::vector<int> counts;
  moe::Index dropped = 0;
  int slots = 0;
};

// Runs the layer, then the reference with the layer's own routing decision as given weights, and compares.
template <class Routing>
Run run_against_reference(const moe::LayerConfig& config, const Routing& routing, moe::Index tokens, unsigned seed,
                          moe::RoutingStats* stats = nullptr, int threads = 0) {
  const reference::Weights w = reference::random_weights(config, seed, 4.0f);
  moe::Layer<Dynamic, Dynamic, moe::f32, Routing> layer(config, routing);
  reference::load(layer, w);
  const std::vector<float> x = synthetic::tokens(tokens, config.hidden_size, seed + 1);
  std::vector<std::int64_t> token_ids(static_cast<std::size_t>(tokens));
  for (moe::Index t = 0; t < tokens; ++t)
    token_ids[std::size_t(t)] = (t % 10) * 7919 + 3;  // every 10th repeats, on purpose
  Run run;
  run.y.assign(x.size(), std::nanf(""));
  moe::Workspace ws = layer.workspace(tokens, threads);
  const moe::RoutingResult routed = layer.forward(x.data(), config.hidden_size, run.y.data(), config.hidden_size,
                                                  tokens, ws, stats, token_ids.data());
  run.slots = routed.experts_per_token();
  run.dropped = routed.dropped();
  const int E = config.num_experts;
  std::vector<std::vector<double>> weight(std::size_t(tokens), std::vector<double>(std::size_t(E), 0.0));
  std::vector<double> pass(std::size_t(tokens), 0.0);
  run.counts.assign(std::size_t(E), 0);
  moe::Index dropped = 0;
  for (moe::Index t = 0; t < tokens; ++t)
    for (int j = 0; j < run.slots; ++j) {
      const int e = routed.expert_ids()(t, j);
      const float v = routed.weights()(t, j);
      run.ids.push_back(e);
      run.weights.push_back(v);
      REQUIRE((e == moe::kNoExpert || e == moe::kDroppedExpert || (e >= 0 && e < E)));
      if (e >= 0) {
        CHECK(weight[std::size_t(t)][std::size_t(e)] == 0.0);  // distinct
        weight[std::size_t(t)][std::size_t(e)] = v;
        ++run.counts[std::size_t(e)];
      } else if (e == moe::kDroppedExpert) {
        ++dropped;
        if (routing.passes_dropped_through()) pass[std::size_t(t)] += v;
      }
    }
  CHECK(dropped == routed.dropped());
  for (int e = 0; e < E; ++e) CHECK(routed.tokens_per_expert()(e) == run.counts[std::size_t(e)]);
  const reference::Output ref = reference::forward_with_weights(config, w, weight, pass, x.data(), tokens, 0.0);
  int bad = 0;
  for (std::size_t i = 0; i < run.y.size() && bad < 5; ++i) {
    const double error = std::abs(double(run.y[i]) - ref.y[i]);
    if (!(error <= ref.error_bound[i])) {
      ++bad;
      INFO("element " << i << ": moe " << run.y[i] << " reference " << ref.y[i]);
      CHECK(error <= ref.error_bound[i]);
    }
  }
  return run;
}

// Capacity and hashing are not in the base class: a policy without passes_dropped_through() passes nothing.
template <class Routing>
struct NoPassThrough : Routing {
  NoPassThrough() = default;
  explicit NoPassThrough(const Routing& r) : Routing(r) {}
  bool passes_dropped_through() const { return false; }
};

}  // namespace

TEST_CASE("every routing policy drives the layer to what its routing result says") {
  auto c = check::config(40, 24, 8, 2);
  SUBCASE("top-k then softmax") { run_against_reference(c, NoPassThrough<moe::TopKSoftmax>(), 29, 301); }
  SUBCASE("DeepSeek-V3 sigmoid, group-limited, biased, scaled, with a shared expert") {
    c.top_k = 3;
    c.num_shared_experts = 1;
    NoPassThrough<moe::SigmoidGroupTopK> r;
    r.bias = {0.3f, -0.2f, 0.0f, 0.5f, -0.4f, 0.1f, 0.2f, -0.1f};
    r.groups = 4;
    r.topk_groups = 2;
    r.scaling = 2.5f;
    run_against_reference(c, r, 29, 302);
  }
  SUBCASE("top-p leaves slots unused") {
    c.top_k = 5;
    const Run run = run_against_reference(c, NoPassThrough<moe::TopP>(moe::TopP(0.5f)), 29, 303);
    int unused = 0;
    for (int id : run.ids) unused += id == moe::kNoExpert;
    CHECK(unused > 0);
  }
  SUBCASE("Switch: top-1 with capacity, dropped tokens passed through scaled") {
    c.top_k = 1;
    moe::CapacityTopK r;
    r.capacity_factor = 0.5f;
    r.pass_dropped_through = true;
    const Run run = run_against_reference(c, r, 29, 304);
    CHECK(run.dropped > 0);
  }
  SUBCASE("GShard: top-2 with capacity, renormalised, dropped tokens add nothing") {
    moe::CapacityTopK r;
    r.capacity = 5;
    r.renormalize = true;
    const Run run = run_against_reference(c, r, 29, 305);
    CHECK(run.dropped > 0);
    for (int n : run.counts) CHECK(n <= 5);
  }
  SUBCASE("expert choice: some token gets no expert, some several") {
    c.top_k = 0;
    moe::ExpertChoice r;
    r.capacity_factor = 1.0f;
    const Run run = run_against_reference(c, NoPassThrough<moe::ExpertChoice>(r), 29, 306);
    REQUIRE(run.slots == 8);
    int none = 0, several = 0;
    for (std::size_t t = 0; t < run.ids.size() / 8; ++t) {
      int n = 0;
      for (int j = 0; j < 8; ++j) n += run.ids[t * 8 + std::size_t(j)] >= 0;
      none += n == 0;
      several += n >= 2;
    }
    CHECK(none > 0);
    CHECK(several > 0);
    for (int n : run.counts) CHECK(n == 4);  // ceil(1.0 * 29 / 8)
  }
  SUBCASE("hash routing by token id") {
    const Run run = run_against_reference(c, NoPassThrough<moe::HashRouting>(), 29, 307);
    for (float v : run.weights) CHECK(v == 0.5f);
    for (std::size_t t = 0; t + 10 < 29; ++t)  // tokens t and t + 10 have the same id, hence the same experts
      CHECK(std::vector<int>(run.ids.begin() + 2 * t, run.ids.begin() + 2 * t + 2) ==
            std::vector<int>(run.ids.begin() + 2 * (t + 10), run.ids.begin() + 2 * (t + 10) + 2));
  }
}

TEST_CASE("batch-level routing is the same on one and two threads") {
  const auto c = check::config(40, 24, 8, 1);
  moe::CapacityTopK r;
  r.capacity_factor = 0.7f;
  r.pass_dropped_through = true;
  const Run one = run_against_reference(c, r, 40, 311, nullptr, 1);
  const Run two = run_against_reference(c, r, 40, 311, nullptr, 2);
  CHECK(one.y == two.y);
  CHECK(one.ids == two.ids);
}

TEST_CASE("a forward pass fills RoutingStats with its decision") {
  auto c = check::config(40, 24, 8, 1);
  moe::CapacityTopK r;
  r.capacity_factor = 0.5f;
  moe::RoutingStats stats(8);
  const Run run = run_against_reference(c, r, 29, 321, &stats);
  CHECK(stats.tokens() == 29);
  CHECK(stats.dropped() == run.dropped);
  for (int e = 0; e < 8; ++e) CHECK(stats.tokens_per_expert()[std::size_t(e)] == run.counts[std::size_t(e)]);
  // A second batch accumulates.
  run_against_reference(c, r, 10, 322, &stats);
  CHECK(stats.tokens() == 39);
}

TEST_CASE("routing misuse is reported by name") {
  auto c = check::config(16, 8, 8, 2);
  moe::Layer<Dynamic, Dynamic, moe::f32, moe::HashRouting> hashed(c);
  synthetic::fill(hashed, 5);
  std::vector<float> x(16 * 3, 0.5f), y(x.size());
  moe::Workspace ws = hashed.workspace(3);
  CHECK_THROWS_WITH_AS(hashed.forward(x.data(), 16, y.data(), 16, 3, ws), doctest::Contains("hash needs token ids"),
                       moe::Error);
  moe::RoutingStats wrong(5);
  const std::vector<std::int64_t> ids = {1, 2, 3};
  CHECK_THROWS_WITH_AS(hashed.forward(x.data(), 16, y.data(), 16, 3, ws, &wrong, ids.data()),
                       doctest::Contains("RoutingStats counts 5 experts"), moe::Error);
  moe::SigmoidGroupTopK bad;
  bad.groups = 3;  // does not divide 8
  CHECK_THROWS_WITH_AS((moe::Layer<Dynamic, Dynamic, moe::f32, moe::SigmoidGroupTopK>(c, bad)),
                       doctest::Contains("SigmoidGroupTopK"), moe::Error);
  moe::CapacityTopK through;
  through.pass_dropped_through = true;
  moe::Layer<Dynamic, Dynamic, moe::f32, moe::CapacityTopK> switch_layer(c, through);
  synthetic::fill(switch_layer, 6);
  moe::Workspace ws2 = switch_layer.workspace(3);
  CHECK_THROWS_WITH_AS(switch_layer.forward(x.data(), 16, x.data(), 16, 3, ws2), doctest::Contains("must not overlap"),
                       moe::Error);
}

TEST_CASE("a capacity factor too large for any batch means no limit") {
  auto c = check::config(16, 8, 4, 0);
  moe::ExpertChoice choice;
  choice.capacity_factor = std::numeric_limits<float>::max();
  const Run all = run_against_reference(c, NoPassThrough<moe::ExpertChoice>(choice), 5, 331);
  for (int n : all.counts) CHECK(n == 5);  // every expert takes every token
  c.top_k = 1;
  moe::CapacityTopK capacity;
  capacity.capacity_factor = 1e30f;
  CHECK(run_against_reference(c, capacity, 5, 332).dropped == 0);
}
