// tests/test_routing_layer.cpp: every routing policy driving a whole layer. The layer's decision must be the
// routing reference's (tests/routing_reference.hpp) applied to logits computed from the reference weights
// in double, and the layer must compute exactly what its routing result says (markers, dropped tokens passed
// through, tokens with no expert), report it, and feed RoutingStats the same decision.
#include <doctest/doctest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "layer_check.hpp"
#include "routing_reference.hpp"

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

namespace ref = routing_reference;

// The routing reference's decision for a batch: from the reference logits (and the token ids, for hashing).
using ExpectedRouting = std::function<ref::Routing(const ref::Logits&, const std::vector<std::int64_t>&)>;

// Decisions closer than this in score could go either way between the layer's f32 logits and the
// reference's (double, rounded to float: they differ by a few float roundings of the hidden-size sum).
constexpr double kSafeMargin = 1e-4;

// The layer's decision (ids and weights of `routed`) against `expected` on the router logits of x computed
// in double from the reference weights: the same experts per token, weights within float rounding, and the
// same dropped weights.
void check_decision(const moe::LayerConfig& config, const reference::Weights& w, const std::vector<float>& x,
                    const std::vector<std::int64_t>& token_ids, const moe::RoutingResult& routed,
                    const ExpectedRouting& expected) {
  const moe::Index H = config.hidden_size, tokens = routed.tokens();
  const int E = config.num_experts;
  ref::Logits logits(std::size_t(tokens), ref::Row(std::size_t(E), 0.0f));
  for (moe::Index t = 0; t < tokens; ++t)
    for (int e = 0; e < E; ++e) {
      double sum = 0.0;
      for (moe::Index k = 0; k < H; ++k) sum += double(w.router[std::size_t(e * H + k)]) * x[std::size_t(t * H + k)];
      logits[std::size_t(t)][std::size_t(e)] = float(sum);
    }
  const ref::Routing want = expected(logits, token_ids);
  REQUIRE(want.tokens.size() == std::size_t(tokens));
  REQUIRE(want.margin > kSafeMargin);  // else this seed's batch is too close to call: pick another
  for (moe::Index t = 0; t < tokens; ++t) {
    const ref::Routed& token = want.tokens[std::size_t(t)];
    std::vector<int> got;
    std::vector<double> dropped;
    for (int j = 0; j < routed.top_k(); ++j) {
      const int e = routed.expert_ids()(t, j);
      const double v = routed.weights()(t, j);
      if (e >= 0) {
        got.push_back(e);
        const auto it = token.experts.find(e);
        INFO("token " << t << " expert " << e);
        REQUIRE(it != token.experts.end());
        CHECK(std::abs(v - it->second) <= 1e-5 * (1.0 + std::abs(it->second)));
      } else if (e == moe::kDroppedExpert) {
        dropped.push_back(v);
      }
    }
    INFO("token " << t);
    std::set<int> want_experts;
    for (const auto& chosen : token.experts) want_experts.insert(chosen.first);
    CHECK(std::set<int>(got.begin(), got.end()) == want_experts);
    CHECK(got.size() == want_experts.size());  // no expert twice
    std::vector<double> want_dropped = token.dropped;
    std::sort(dropped.begin(), dropped.end());
    std::sort(want_dropped.begin(), want_dropped.end());
    REQUIRE(dropped.size() == want_dropped.size());
    for (std::size_t i = 0; i < dropped.size(); ++i)
      CHECK(std::abs(dropped[i] - want_dropped[i]) <= 1e-5 * (1.0 + std::abs(want_dropped[i])));
  }
}

// Runs the layer and checks its decision against `expected` (when given, check_decision), then runs the
// reference with the layer's own decision as given weights, and compares the outputs.
template <class Routing>
Run run_against_reference(const moe::LayerConfig& config, const Routing& routing, moe::Index tokens, unsigned seed,
                          const ExpectedRouting& expected = {}, moe::RoutingStats* stats = nullptr, int threads = 0) {
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
  if (expected) check_decision(config, w, x, token_ids, routed, expected);
  run.slots = routed.top_k();
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
  SUBCASE("top-k then softmax") {
    run_against_reference(c, NoPassThrough<moe::TopKSoftmax>(), 29, 301,
                          [](const ref::Logits& l, auto&) { return ref::softmax_top_k(l, 2, true); });
  }
  SUBCASE("DeepSeek-V3 sigmoid, group-limited, biased, scaled, with a shared expert") {
    c.top_k = 3;
    c.num_shared_experts = 1;
    NoPassThrough<moe::SigmoidGroupTopK> r;
    r.bias = {0.3f, -0.2f, 0.0f, 0.5f, -0.4f, 0.1f, 0.2f, -0.1f};
    r.groups = 4;
    r.topk_groups = 2;
    r.scaling = 2.5f;
    run_against_reference(c, r, 29, 302, [&](const ref::Logits& l, auto&) {
      return ref::sigmoid_group_top_k(l, 3, ref::DeepSeek{r.bias, 4, 2, true, 2.5f});
    });
  }
  SUBCASE("top-p leaves slots unused") {
    c.top_k = 5;
    const Run run = run_against_reference(c, NoPassThrough<moe::TopP>(moe::TopP(0.5f)), 29, 303,
                                          [](const ref::Logits& l, auto&) { return ref::top_p(l, 5, 0.5f, false); });
    int unused = 0;
    for (int id : run.ids) unused += id == moe::kNoExpert;
    CHECK(unused > 0);
  }
  SUBCASE("Switch: top-1 with capacity, dropped tokens passed through scaled") {
    c.top_k = 1;
    moe::CapacityTopK r;
    r.capacity_factor = 0.5f;
    r.pass_dropped_through = true;
    const Run run = run_against_reference(
        c, r, 29, 304, [](const ref::Logits& l, auto&) { return ref::capacity_top_k(l, 1, 0.5f, 0, false); });
    CHECK(run.dropped > 0);
  }
  SUBCASE("GShard: top-2 with capacity, renormalised, dropped tokens add nothing") {
    moe::CapacityTopK r;
    r.capacity = 5;
    r.renormalize = true;
    const Run run = run_against_reference(
        c, r, 29, 305, [](const ref::Logits& l, auto&) { return ref::capacity_top_k(l, 2, 1.0f, 5, true); });
    CHECK(run.dropped > 0);
    for (int n : run.counts) CHECK(n <= 5);
  }
  SUBCASE("expert choice: some token gets no expert, some several") {
    c.top_k = 0;
    moe::ExpertChoice r;
    r.capacity_factor = 1.0f;
    const Run run = run_against_reference(c, NoPassThrough<moe::ExpertChoice>(r), 29, 306,
                                          [](const ref::Logits& l, auto&) { return ref::expert_choice(l, 1.0f, 0); });
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
    const Run run = run_against_reference(
        c, NoPassThrough<moe::HashRouting>(), 29, 307,
        [](const ref::Logits&, const std::vector<std::int64_t>& ids) { return ref::hash_routing(ids, 8, 2); });
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
  const ExpectedRouting expected = [](const ref::Logits& l, auto&) {
    return ref::capacity_top_k(l, 1, 0.7f, 0, false);
  };
  const Run one = run_against_reference(c, r, 40, 311, expected, nullptr, 1);
  const Run two = run_against_reference(c, r, 40, 311, expected, nullptr, 2);
  CHECK(one.y == two.y);
  CHECK(one.ids == two.ids);
}

TEST_CASE("a forward pass fills RoutingStats with its decision") {
  auto c = check::config(40, 24, 8, 1);
  moe::CapacityTopK r;
  r.capacity_factor = 0.5f;
  moe::RoutingStats stats(8);
  const Run run = run_against_reference(c, r, 29, 321, {}, &stats);
  CHECK(stats.tokens() == 29);
  CHECK(stats.dropped() == run.dropped);
  for (int e = 0; e < 8; ++e) CHECK(stats.tokens_per_expert()[std::size_t(e)] == run.counts[std::size_t(e)]);
  // A second batch accumulates.
  run_against_reference(c, r, 10, 322, {}, &stats);
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
  const Run all = run_against_reference(
      c, NoPassThrough<moe::ExpertChoice>(choice), 5, 331,
      [](const ref::Logits& l, auto&) { return ref::expert_choice(l, std::numeric_limits<float>::max(), 0); });
  for (int n : all.counts) CHECK(n == 5);  // every expert takes every token
  c.top_k = 1;
  moe::CapacityTopK capacity;
  capacity.capacity_factor = 1e30f;
  CHECK(run_against_reference(c, capacity, 5, 332, [](const ref::Logits& l, auto&) {
          return ref::capacity_top_k(l, 1, 1e30f, 0, false);
        }).dropped == 0);
}
