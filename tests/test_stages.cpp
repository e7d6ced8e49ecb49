// tests/test_stages.cpp: the group stage and the compute stage's work-item plan, on their own, against
// plainly written expectations (the layer's tests only see them through a whole pass).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <moe/moe.hpp>

namespace {

// The group stage's outputs, sized as the workspace sizes them.
struct Grouped {
  Grouped(int experts_and_shared, int pairs, int choices)
      : counts(std::size_t(experts_and_shared)),
        offsets(std::size_t(experts_and_shared) + 1),
        fill(std::size_t(experts_and_shared)),
        token(std::size_t(pairs), -7),
        weight(std::size_t(pairs), -7.0f),
        dropped_token(std::size_t(choices), -7),
        dropped_weight(std::size_t(choices), -7.0f) {}
  std::vector<int> counts, offsets, fill, token;
  std::vector<float> weight;
  std::vector<int> dropped_token;
  std::vector<float> dropped_weight;
  moe::stages::GroupedPairs view() {
    return {counts.data(), offsets.data(),       fill.data(),          token.data(),
            weight.data(), dropped_token.data(), dropped_weight.data()};
  }
};

}  // namespace

TEST_CASE("the group stage lists each expert's tokens in order, markers skipped, shared experts last") {
  // 5 tokens, 2 slots, 4 routed experts and 1 shared; token 1 has an unused slot, token 3 a dropped choice.
  const int E = 4, S = 1, k = 2, T = 5;
  const std::vector<int> ids = {2, 0, 1, moe::kNoExpert, 2, 3, moe::kDroppedExpert, 0, 3, 2};
  const std::vector<float> weights = {0.6f, 0.4f, 1.0f, 0.0f, 0.5f, 0.5f, 0.3f, 0.7f, 0.9f, 0.1f};
  const std::vector<float> shared = {0.11f, 0.22f, 0.33f, 0.44f, 0.55f};
  for (const bool pass_through : {false, true}) {
    CAPTURE(pass_through);
    Grouped g(E + S, T * (k + S), T * k);
    moe::stages::GroupedPairs out = g.view();
    moe::stages::Group{"test_policy", pass_through, E, S, k}.run(T, ids.data(), weights.data(), shared.data(), out);

    // The expectation, written out: per expert in index order, the tokens that chose it, in token order.
    std::vector<int> want_token;
    std::vector<float> want_weight;
    std::vector<int> want_counts;
    for (int e = 0; e < E; ++e) {
      int n = 0;
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < k; ++j)
          if (ids[std::size_t(t * k + j)] == e) {
            want_token.push_back(t);
            want_weight.push_back(weights[std::size_t(t * k + j)]);
            ++n;
          }
      want_counts.push_back(n);
    }
    for (int t = 0; t < T; ++t) {
      want_token.push_back(t);
      want_weight.push_back(shared[std::size_t(t)]);
    }
    want_counts.push_back(T);

    CHECK(g.counts == want_counts);
    CHECK(g.counts == std::vector<int>{2, 1, 3, 2, 5});
    REQUIRE(g.offsets.front() == 0);
    for (int e = 0; e < E + S; ++e)
      CHECK(g.offsets[std::size_t(e + 1)] == g.offsets[std::size_t(e)] + g.counts[std::size_t(e)]);
    const int pairs = g.offsets.back();
    REQUIRE(pairs == int(want_token.size()));
    CHECK(std::vector<int>(g.token.begin(), g.token.begin() + pairs) == want_token);
    CHECK(std::vector<float>(g.weight.begin(), g.weight.begin() + pairs) == want_weight);
    CHECK(out.dropped == 1);
    CHECK(out.passed_through == (pass_through ? 1 : 0));
    if (pass_through) {
      CHECK(g.dropped_token[0] == 3);
      CHECK(g.dropped_weight[0] == 0.3f);
    }
  }
}

TEST_CASE("the group stage refuses a policy's bad choices, naming the policy and the token") {
  const int E = 3, k = 2;
  Grouped g(E, 2 * k, 2 * k);
  auto run = [&](std::vector<int> ids, std::vector<float> weights) {
    moe::stages::GroupedPairs out = g.view();
    moe::stages::Group{"test_policy", false, E, 0, k}.run(2, ids.data(), weights.data(), nullptr, out);
  };
  CHECK_NOTHROW(run({0, 1, 2, 0}, {0.5f, 0.5f, 0.5f, 0.5f}));
  CHECK_THROWS_WITH_AS(run({0, 1, 2, 3}, {0.5f, 0.5f, 0.5f, 0.5f}),
                       "moe::Layer::forward: the routing policy test_policy chose expert 3 for token 1, out of range "
                       "[0, 3)",
                       moe::Error);
  CHECK_THROWS_WITH_AS(run({0, 1, 2, 2}, {0.5f, 0.5f, 0.5f, 0.5f}),
                       doctest::Contains("test_policy chose expert 2 twice for token 1"), moe::Error);
  CHECK_THROWS_WITH_AS(run({0, 1, 2, 0}, {0.5f, std::nanf(""), 0.5f, 0.5f}),
                       doctest::Contains("test_policy gave token 0 a non-finite weight"), moe::Error);
  CHECK_THROWS_WITH_AS(run({0, moe::kDroppedExpert, 2, 0}, {0.5f, INFINITY, 0.5f, 0.5f}),
                       doctest::Contains("test_policy gave token 0 a non-finite weight"), moe::Error);
}

TEST_CASE_TEMPLATE("the work-item plan covers each busy expert's panels once, in order", P, moe::f32, moe::q4a8) {
  // A shared expert of another width, idle experts, and a wide FFN of many short panels.
  moe::LayerConfig c;
  c.hidden_size = 40;
  c.ffn_size = 1000;
  c.num_experts = 4;
  c.top_k = 2;
  c.num_shared_experts = 1;
  c.shared_ffn_size = 70;
  moe::ExpertSet<P> experts(c);
  for (int e = 0; e < experts.count(); ++e) {
    const moe::Index F = experts.ffn_of(e), H = c.hidden_size;
    const std::vector<float> w(std::size_t(F * H), 0.25f), down(std::size_t(H * F), 0.25f);
    experts[e].load(c.ffn, H, F, moe::WeightView(w.data(), F, H), moe::WeightView(w.data(), F, H),
                    moe::WeightView(down.data(), H, F), "test", "expert " + std::to_string(e));
  }
  const moe::stages::ExpertPass<P> pass(experts);
  moe::Index most_panels = 0;
  for (int e = 0; e < experts.count(); ++e) most_panels += experts.input_panels(e);

  for (const int tokens : {1, moe::detail::kernels::kTileRows + 1})
    for (const int threads : {1, 2}) {
      CAPTURE(tokens);
      CAPTURE(threads);
      const std::vector<int> counts = {tokens, 0, tokens, 0, tokens};
      std::vector<moe::Index> hidden_offset(counts.size(), -1);
      std::vector<moe::WorkItem> items(static_cast<std::size_t>(most_panels));
      const int n = pass.plan(counts.data(), threads, hidden_offset.data(), items.data());

      moe::Index hidden = 0;
      for (int e = 0; e < experts.count(); ++e) {
        CHECK(hidden_offset[std::size_t(e)] == hidden);
        hidden += counts[std::size_t(e)] * experts.ffn_padded(e);
      }
      // Walk the items: busy experts in index order, each one's panels consecutively, exactly once.
      int i = 0;
      for (int e = 0; e < experts.count(); ++e) {
        if (counts[std::size_t(e)] == 0) continue;
        moe::Index next_panel = 0;
        while (i < n && items[std::size_t(i)].expert == e) {
          const moe::WorkItem& item = items[std::size_t(i)];
          CHECK(item.first_panel == next_panel);
          CHECK(item.panels >= 1);
          if (tokens > moe::detail::kernels::kTileRows) CHECK(item.panels == 1);  // a panel per item stays in L2
          next_panel += item.panels;
          ++i;
        }
        CHECK(next_panel == experts.input_panels(e));
      }
      CHECK(i == n);
      if (tokens == 1 && std::string(P::kName) == "q4a8")
        CHECK(n < most_panels);  // short 1-byte panels: decode items take several
    }
}
