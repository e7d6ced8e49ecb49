// tests/test_routing.cpp: every routing policy of router.hpp and routing_batch.hpp, called directly (route()
// per token, then finish_batch() over the batch), against routing_reference.hpp; hand-built cases for the
// rules a random batch rarely exercises (ties, capacity priority, masking by 0.0); the configurations check()
// refuses; and top_k against std::partial_sort.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <moe/kernels/topk.hpp>
#include <moe/router.hpp>
#include <moe/routing_batch.hpp>
#include <moe/routing_stats.hpp>

#include "routing_reference.hpp"

namespace ref = routing_reference;
using moe::kDroppedExpert;
using moe::kNoExpert;

namespace {

// Float rounding moves a score by ~1e-7; a decision whose two sides are further apart than this cannot go
// differently in float and in double.
constexpr double kSafeMargin = 1e-5;

// What the library wrote for a batch: tokens x slots ids and weights.
struct Run {
  int experts = 0;
  int slots = 0;
  std::vector<int> ids;
  std::vector<float> weights;
  std::size_t tokens() const { return ids.size() / std::size_t(slots); }
  std::vector<int> row_ids(std::size_t t) const {
    return std::vector<int>(ids.begin() + std::ptrdiff_t(t) * slots, ids.begin() + std::ptrdiff_t(t + 1) * slots);
  }
};

// Calls route<K>() on every token, then finish_batch() when the policy has one, as the layer does. The
// logits are stored with a padded stride and the outputs and scratch start as garbage, so a policy that
// reads or relies on anything else shows.
template <int K = moe::Dynamic, class Policy>
Run route_batch(const Policy& policy, const ref::Logits& logits, int k, const std::int64_t* token_ids = nullptr) {
  Run run;
  run.experts = int(logits.at(0).size());
  run.slots = Policy::kSelectsAll ? run.experts : k;
  const std::size_t tokens = logits.size(), slots = std::size_t(run.slots);
  const std::size_t stride = std::size_t(run.experts) + 3;
  std::vector<float> flat(tokens * stride, std::numeric_limits<float>::quiet_NaN());
  for (std::size_t t = 0; t < tokens; ++t)
    std::copy(logits[t].begin(), logits[t].end(), flat.begin() + std::ptrdiff_t(t * stride));
  run.ids.assign(tokens * slots, 12345);
  run.weights.assign(tokens * slots, std::numeric_limits<float>::quiet_NaN());
  for (std::size_t t = 0; t < tokens; ++t)
    policy.template route<K>(flat.data() + t * stride, run.experts, k, run.ids.data() + t * slots,
                             run.weights.data() + t * slots);
  if constexpr (moe::detail::has_finish_batch<Policy>::value) {
    std::vector<int> expert_scratch(std::size_t(run.experts), -777), token_scratch(tokens, -777);
    moe::RoutingBatch batch;
    batch.tokens = moe::Index(tokens);
    batch.experts = run.experts;
    batch.slots = run.slots;
    batch.logits = flat.data();
    batch.logits_stride = moe::Index(stride);
    batch.token_ids = token_ids;
    batch.ids = run.ids.data();
    batch.weights = run.weights.data();
    batch.expert_scratch = expert_scratch.data();
    batch.token_scratch = token_scratch.data();
    policy.finish_batch(batch);
  }
  return run;
}

bool close(double got, double want) { return std::fabs(got - want) <= 1e-5 * std::fabs(want) + 1e-30; }

// The library's output as the reference's: experts -> weight, dropped weights; fails on a malformed row.
ref::Routed read_row(const Run& run, std::size_t t) {
  ref::Routed got;
  for (int j = 0; j < run.slots; ++j) {
    const std::size_t at = t * std::size_t(run.slots) + std::size_t(j);
    const int id = run.ids[at];
    const float w = run.weights[at];
    if (id >= 0) {
      CHECK(id < run.experts);
      CHECK_MESSAGE(got.experts.count(id) == 0, "expert ", id, " twice");
      CHECK(std::isfinite(w));
      got.experts[id] = double(w);
    } else if (id == kDroppedExpert) {
      CHECK(std::isfinite(w));
      got.dropped.push_back(double(w));
    } else {
      CHECK(id == kNoExpert);
    }
  }
  return got;
}

std::set<int> keys(const std::map<int, double>& m) {
  std::set<int> s;
  for (const auto& kv : m) s.insert(kv.first);
  return s;
}

// Same experts (as sets), same dropped count, weights within 1e-5 relative.
void compare(const Run& run, const ref::Routing& want) {
  REQUIRE(run.tokens() == want.tokens.size());
  for (std::size_t t = 0; t < run.tokens(); ++t) {
    CAPTURE(t);
    const ref::Routed got = read_row(run, t);
    const ref::Routed& expected = want.tokens[t];
    REQUIRE(keys(got.experts) == keys(expected.experts));
    for (const auto& kv : expected.experts) {
      CAPTURE(kv.first);
      CHECK_MESSAGE(close(got.experts.at(kv.first), kv.second), got.experts.at(kv.first), " vs ", kv.second);
    }
    std::vector<double> a = got.dropped, b = expected.dropped;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK_MESSAGE(close(a[i], b[i]), a[i], " vs ", b[i]);
  }
}

ref::Logits random_logits(std::mt19937& rng, std::size_t tokens, int experts, float scale = 2.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  ref::Logits logits(tokens, ref::Row(std::size_t(experts)));
  for (ref::Row& row : logits)
    for (float& x : row) x = normal(rng);
  return logits;
}

// Random logits whose every row the reference decides with a safe margin (rows redrawn until it does): for
// the policies whose per-token decisions hinge on float sums or sigmoids.
template <class Reference>
ref::Logits safe_logits(std::mt19937& rng, std::size_t tokens, int experts, Reference&& reference, float scale = 2.0f) {
  ref::Logits logits;
  while (logits.size() < tokens) {
    ref::Logits row = random_logits(rng, 1, experts, scale);
    if (reference(row).margin > kSafeMargin) logits.push_back(row[0]);
  }
  return logits;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// check() throws moe::Error naming `name`.
template <class Policy>
void check_refused(const Policy& policy, int experts, int k, const char* name) {
  CHECK_THROWS_AS(policy.check(experts, k), moe::Error);
  try {
    policy.check(experts, k);
  } catch (const moe::Error& e) {
    CAPTURE(e.what());
    CHECK(contains(e.what(), name));
  }
}

struct Shape {
  int experts, k;
  std::size_t tokens;
};

// E = 1, k = E, one token, E not a multiple of 16 (nor of the SIMD width), and wide routers.
const Shape kShapes[] = {{1, 1, 5},   {8, 2, 33},  {8, 8, 4},   {13, 3, 1},
                         {37, 37, 3}, {60, 6, 17}, {64, 8, 20}, {256, 8, 9}};

}  // namespace

// ---------------------------------------------------------------------------------------------- top_k

namespace {
template <int K>
void check_top_k_against_partial_sort(const std::vector<float>& scores, int k) {
  const int n = int(scores.size());
  std::vector<int> expected(scores.size());
  std::iota(expected.begin(), expected.end(), 0);
  std::partial_sort(expected.begin(), expected.begin() + k, expected.end(), [&](int a, int b) {
    return scores[std::size_t(a)] > scores[std::size_t(b)] ||
           (scores[std::size_t(a)] == scores[std::size_t(b)] && a < b);
  });
  expected.resize(std::size_t(k));
  std::vector<int> ids(std::size_t(k), -1);
  std::vector<float> values(std::size_t(k), std::numeric_limits<float>::quiet_NaN());
  moe::detail::kernels::top_k<K>(scores.data(), n, k, ids.data(), values.data());
  CHECK(ids == expected);
  for (int j = 0; j < k; ++j) CHECK(values[std::size_t(j)] == scores[std::size_t(expected[std::size_t(j)])]);
}
}  // namespace

TEST_CASE("top_k matches std::partial_sort on scores with many ties") {
  std::mt19937 rng(7);
  const float levels[] = {-2.0f, -0.5f, 0.0f, 0.25f, 3.0f};
  std::uniform_int_distribution<int> pick(0, 4);
  for (int n : {1, 2, 8, 9, 16, 33, 100, 256}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> scores(static_cast<std::size_t>(n));
      for (float& s : scores) s = levels[pick(rng)];
      for (int k : {1, 2, 8, n}) {
        if (k > n) continue;
        CAPTURE(n);
        CAPTURE(k);
        CAPTURE(trial);
        check_top_k_against_partial_sort<moe::Dynamic>(scores, k);
        if (k == 1) check_top_k_against_partial_sort<1>(scores, k);
        if (k == 2) check_top_k_against_partial_sort<2>(scores, k);
        if (k == 8) check_top_k_against_partial_sort<8>(scores, k);
      }
    }
  }
}

// ------------------------------------------------------------------------- softmax top-k and dense

TEST_CASE("SoftmaxTopK, TopKSoftmax and DenseSoftmax match the reference") {
  std::mt19937 rng(11);
  for (const Shape& s : kShapes) {
    CAPTURE(s.experts);
    CAPTURE(s.k);
    CAPTURE(s.tokens);
    const ref::Logits logits = random_logits(rng, s.tokens, s.experts);
    for (bool renormalize : {false, true}) {
      CAPTURE(renormalize);
      compare(route_batch(moe::SoftmaxTopK(renormalize), logits, s.k), ref::softmax_top_k(logits, s.k, renormalize));
    }
    compare(route_batch(moe::TopKSoftmax(), logits, s.k), ref::softmax_top_k(logits, s.k, true));
    compare(route_batch(moe::DenseSoftmax(), logits, s.experts), ref::dense_softmax(logits));
  }
}

TEST_CASE("SoftmaxTopK and DenseSoftmax with the expert count and k fixed at compile time") {
  std::mt19937 rng(12);
  const ref::Logits logits = random_logits(rng, 10, 8);
  compare(route_batch<2>(moe::SoftmaxTopK(true), logits, 2), ref::softmax_top_k(logits, 2, true));
  compare(route_batch<2>(moe::SoftmaxTopK(false), logits, 2), ref::softmax_top_k(logits, 2, false));
  compare(route_batch<8>(moe::SoftmaxTopK(false), logits, 8), ref::softmax_top_k(logits, 8, false));
  compare(route_batch<8>(moe::DenseSoftmax(), logits, 8), ref::dense_softmax(logits));
}

TEST_CASE("SoftmaxTopK gives ties between equal logits to the lower expert") {
  const ref::Logits logits = {{0.5f, 1.0f, 0.5f, 1.0f, 0.5f}};
  const Run run = route_batch(moe::SoftmaxTopK(true), logits, 3);
  CHECK(keys(read_row(run, 0).experts) == std::set<int>{0, 1, 3});
  compare(run, ref::softmax_top_k(logits, 3, true));
}

// ---------------------------------------------------------------------------------- DeepSeek-V3

namespace {
moe::SigmoidGroupTopK deepseek_policy(const ref::DeepSeek& c) {
  moe::SigmoidGroupTopK p;
  p.bias = c.bias;
  p.groups = c.groups;
  p.topk_groups = c.topk_groups;
  p.renormalize = c.renormalize;
  p.scaling = c.scaling;
  return p;
}

std::vector<float> random_bias(std::mt19937& rng, int experts, float amplitude) {
  std::uniform_real_distribution<float> u(-amplitude, amplitude);
  std::vector<float> b(static_cast<std::size_t>(experts));
  for (float& x : b) x = u(rng);
  return b;
}
}  // namespace

TEST_CASE("SigmoidGroupTopK matches the reference") {
  std::mt19937 rng(21);
  struct Case {
    int experts, k;
    std::size_t tokens;
    ref::DeepSeek config;
  };
  std::vector<Case> cases = {
      {16, 4, 24, {{}, 4, 2, true, 1.0f}},
      {64, 6, 20, {random_bias(rng, 64, 0.2f), 8, 4, true, 2.5f}},  // DeepSeek-V3's shape, scaled down
      {1, 1, 5, {{}, 1, 1, true, 1.0f}},
      {20, 20, 3, {random_bias(rng, 20, 0.1f), 1, 1, true, 1.0f}},  // k = E
      {36, 5, 1, {random_bias(rng, 36, 0.1f), 6, 3, false, 2.5f}},  // one token, not renormalised
      {45, 7, 13, {random_bias(rng, 45, 0.3f), 5, 2, true, 0.5f}},
      {256, 8, 6, {random_bias(rng, 256, 0.05f), 8, 4, true, 2.5f}},  // DeepSeek-V3's routed experts
  };
  for (const Case& c : cases) {
    CAPTURE(c.experts);
    CAPTURE(c.k);
    CAPTURE(c.config.groups);
    CAPTURE(c.config.topk_groups);
    const moe::SigmoidGroupTopK policy = deepseek_policy(c.config);
    CHECK_NOTHROW(policy.check(c.experts, c.k));
    const ref::Logits logits = safe_logits(
        rng, c.tokens, c.experts, [&](const ref::Logits& l) { return ref::sigmoid_group_top_k(l, c.k, c.config); });
    compare(route_batch(policy, logits, c.k), ref::sigmoid_group_top_k(logits, c.k, c.config));
  }
  SUBCASE("k fixed at compile time") {
    const ref::DeepSeek config{random_bias(rng, 16, 0.2f), 4, 2, true, 1.5f};
    const ref::Logits logits =
        safe_logits(rng, 12, 16, [&](const ref::Logits& l) { return ref::sigmoid_group_top_k(l, 4, config); });
    compare(route_batch<4>(deepseek_policy(config), logits, 4), ref::sigmoid_group_top_k(logits, 4, config));
  }
}

// ---------------------------------------------------------------------------------- DeepSeek-V2

TEST_CASE("SoftmaxGroupTopK matches the reference (DeepSeek-V2's greedy and group_limited_greedy)") {
  std::mt19937 rng(24);
  struct Case {
    int experts, k;
    std::size_t tokens;
    ref::DeepSeekV2 config;
  };
  const std::vector<Case> cases = {
      {64, 6, 20, {1, 1, 1.0f}},    // DeepSeek-V2-Lite: greedy
      {160, 6, 12, {8, 3, 16.0f}},  // DeepSeek-V2: group_limited_greedy, routed_scaling_factor 16
      {16, 4, 24, {4, 2, 1.0f}},    // 4 of the 8 experts of the 2 kept groups
      {12, 6, 9, {3, 2, 2.0f}},     // k below the 8 kept experts, groups of 4
      {8, 4, 7, {4, 2, 1.0f}},      // k = every kept expert
      {1, 1, 5, {1, 1, 1.0f}},      // one expert
      {20, 20, 3, {1, 1, 0.5f}},    // k = E
      {36, 5, 1, {6, 6, 1.0f}},     // one token, every group kept
  };
  for (const Case& c : cases) {
    CAPTURE(c.experts);
    CAPTURE(c.k);
    CAPTURE(c.config.groups);
    CAPTURE(c.config.topk_groups);
    moe::SoftmaxGroupTopK policy;
    policy.groups = c.config.groups;
    policy.topk_groups = c.config.topk_groups;
    policy.scaling = c.config.scaling;
    CHECK_NOTHROW(policy.check(c.experts, c.k));
    const ref::Logits logits = safe_logits(
        rng, c.tokens, c.experts, [&](const ref::Logits& l) { return ref::softmax_group_top_k(l, c.k, c.config); });
    compare(route_batch(policy, logits, c.k), ref::softmax_group_top_k(logits, c.k, c.config));
    if (c.k == 4 && c.experts == 16)  // k fixed at compile time
      compare(route_batch<4>(policy, logits, 4), ref::softmax_group_top_k(logits, 4, c.config));
  }
  SUBCASE("the groups decide: the best expert outside the kept groups is passed over") {
    // Group 0 holds the two largest logits, group 1 the third; with one group kept, expert 0 and 1 are
    // chosen, then expert 2 (group 0's third), not expert 4 (group 1's best, larger than expert 2).
    const ref::Logits logits = {{5.0f, 4.0f, 1.0f, 0.0f, 3.0f, -1.0f, -2.0f, -3.0f}};
    moe::SoftmaxGroupTopK policy;
    policy.groups = 2;
    policy.topk_groups = 1;
    const Run run = route_batch(policy, logits, 3);
    CHECK(keys(read_row(run, 0).experts) == std::set<int>{0, 1, 2});
    compare(run, ref::softmax_group_top_k(logits, 3, {2, 1, 1.0f}));
  }
}

TEST_CASE("SigmoidGroupTopK without groups or bias (Llama 4) chooses the largest logits, even where sigmoids tie") {
  // Every f32 sigmoid of these logits is 1.0f: a choice on the sigmoids would tie and take experts 0 and 1.
  const ref::Logits logits = {{20.0f, 18.0f, 25.0f, 17.5f, -3.0f}};
  REQUIRE(1.0f / (1.0f + std::exp(-17.5f)) == 1.0f);
  moe::SigmoidGroupTopK llama4;
  llama4.renormalize = false;
  const Run run = route_batch(llama4, logits, 2);
  const ref::Routed got = read_row(run, 0);
  CHECK(keys(got.experts) == std::set<int>{0, 2});
  CHECK(got.experts.at(2) == doctest::Approx(1.0));
}

TEST_CASE("SigmoidGroupTopK: the bias changes which experts are chosen, not their weights") {
  std::mt19937 rng(22);
  const int experts = 16, k = 4;
  ref::DeepSeek unbiased{{}, 4, 2, true, 1.0f};
  SUBCASE("a bias that lifts the last group above every other") {
    // Biased scores in group 3 exceed 1, every other is below 1: each token keeps group 3 and chooses
    // all four of its experts, whatever its logits.
    ref::DeepSeek biased = unbiased;
    biased.bias.assign(experts, 0.0f);
    for (int e = 12; e < 16; ++e) biased.bias[std::size_t(e)] = 1.0f;
    const ref::Logits logits = safe_logits(rng, 24, experts, [&](const ref::Logits& l) {
      const double m =
          std::min(ref::sigmoid_group_top_k(l, k, unbiased).margin, ref::sigmoid_group_top_k(l, k, biased).margin);
      return ref::Routing{{}, m};
    });
    const Run plain = route_batch(deepseek_policy(unbiased), logits, k);
    const Run shifted = route_batch(deepseek_policy(biased), logits, k);
    compare(plain, ref::sigmoid_group_top_k(logits, k, unbiased));
    compare(shifted, ref::sigmoid_group_top_k(logits, k, biased));
    int changed = 0;
    for (std::size_t t = 0; t < logits.size(); ++t) {
      const ref::Routed got = read_row(shifted, t);
      CHECK(keys(got.experts) == std::set<int>{12, 13, 14, 15});
      double sum = 0.0;  // the weights are the unbiased sigmoids, renormalised
      for (int e = 12; e < 16; ++e) sum += ref::sigmoid(double(logits[t][std::size_t(e)]));
      for (int e = 12; e < 16; ++e)
        CHECK(close(got.experts.at(e), ref::sigmoid(double(logits[t][std::size_t(e)])) / sum));
      changed += keys(read_row(plain, t).experts) != keys(got.experts);
    }
    CHECK(changed > 0);
  }
  SUBCASE("a small random bias") {
    ref::DeepSeek biased = unbiased;
    biased.bias = random_bias(rng, experts, 0.15f);
    const ref::Logits logits = safe_logits(rng, 32, experts, [&](const ref::Logits& l) {
      const double m =
          std::min(ref::sigmoid_group_top_k(l, k, unbiased).margin, ref::sigmoid_group_top_k(l, k, biased).margin);
      return ref::Routing{{}, m};
    });
    const Run plain = route_batch(deepseek_policy(unbiased), logits, k);
    const Run shifted = route_batch(deepseek_policy(biased), logits, k);
    compare(plain, ref::sigmoid_group_top_k(logits, k, unbiased));
    compare(shifted, ref::sigmoid_group_top_k(logits, k, biased));
    int changed = 0;
    for (std::size_t t = 0; t < logits.size(); ++t)
      changed += keys(read_row(plain, t).experts) != keys(read_row(shifted, t).experts);
    CHECK(changed > 0);
  }
}

TEST_CASE("SigmoidGroupTopK masks the dropped groups with 0.0, which wins over negative biased scores") {
  std::mt19937 rng(23);
  const int experts = 16, k = 4;
  SUBCASE("every biased score negative: the choice falls on the lowest masked group") {
    // Biased scores are in (-2, -1); the masked experts (0.0) beat every kept one, and among the eight
    // masked experts the four of lowest index win: the lower of the two dropped groups. With -inf masking
    // the choice would lie in the kept groups instead.
    const ref::DeepSeek config{std::vector<float>(experts, -2.0f), 4, 2, true, 1.0f};
    const ref::Logits logits =
        safe_logits(rng, 16, experts, [&](const ref::Logits& l) { return ref::sigmoid_group_top_k(l, k, config); });
    const Run run = route_batch(deepseek_policy(config), logits, k);
    compare(run, ref::sigmoid_group_top_k(logits, k, config));
    for (std::size_t t = 0; t < logits.size(); ++t) {
      CAPTURE(t);
      std::vector<double> group_score(4);
      for (int g = 0; g < 4; ++g) {
        std::vector<double> s;
        for (int i = 0; i < 4; ++i) s.push_back(ref::sigmoid(double(logits[t][std::size_t(4 * g + i)])));
        std::sort(s.rbegin(), s.rend());
        group_score[std::size_t(g)] = s[0] + s[1];
      }
      const std::vector<int> order = ref::by_descending(group_score);
      const int lowest_dropped = std::min(order[2], order[3]);
      std::set<int> expected;
      for (int i = 0; i < 4; ++i) expected.insert(4 * lowest_dropped + i);
      CHECK(keys(read_row(run, t).experts) == expected);
    }
  }
  SUBCASE("some biased scores negative, some positive") {
    std::vector<float> bias(experts);
    for (int e = 0; e < experts; ++e)
      bias[std::size_t(e)] = (e % 4 == 0) ? 0.3f : -0.7f;  // one lifted expert per group
    const ref::DeepSeek config{bias, 4, 2, true, 2.5f};
    const ref::Logits logits = safe_logits(
        rng, 40, experts, [&](const ref::Logits& l) { return ref::sigmoid_group_top_k(l, k, config); }, 3.0f);
    const Run run = route_batch(deepseek_policy(config), logits, k);
    compare(run, ref::sigmoid_group_top_k(logits, k, config));
    // The case must exercise the rule: some token chose an expert outside its kept groups.
    int outside = 0;
    for (std::size_t t = 0; t < logits.size(); ++t) {
      std::vector<double> group_score(4);
      for (int g = 0; g < 4; ++g) {
        std::vector<double> c;
        for (int i = 0; i < 4; ++i)
          c.push_back(ref::sigmoid(double(logits[t][std::size_t(4 * g + i)])) + double(bias[std::size_t(4 * g + i)]));
        std::sort(c.rbegin(), c.rend());
        group_score[std::size_t(g)] = c[0] + c[1];
      }
      const std::vector<int> order = ref::by_descending(group_score);
      for (int e : keys(read_row(run, t).experts)) outside += (e / 4 != order[0] && e / 4 != order[1]);
    }
    CHECK(outside > 0);
  }
}

// ------------------------------------------------------------------------------------------ top-p

TEST_CASE("TopP matches the reference away from the threshold") {
  std::mt19937 rng(31);
  struct Case {
    int experts, k_max;
    std::size_t tokens;
    float p;
    bool renormalize;
  };
  const Case cases[] = {{8, 8, 30, 0.9f, false},  {16, 4, 25, 0.5f, true},   {1, 1, 4, 0.3f, false},
                        {13, 13, 1, 0.75f, true}, {60, 10, 20, 0.75f, true}, {37, 37, 9, 0.95f, false},
                        {256, 16, 6, 0.6f, false}};
  for (const Case& c : cases) {
    CAPTURE(c.experts);
    CAPTURE(c.k_max);
    CAPTURE(c.p);
    const ref::Logits logits = safe_logits(
        rng, c.tokens, c.experts, [&](const ref::Logits& l) { return ref::top_p(l, c.k_max, c.p, c.renormalize); });
    compare(route_batch(moe::TopP(c.p, c.renormalize), logits, c.k_max),
            ref::top_p(logits, c.k_max, c.p, c.renormalize));
  }
  SUBCASE("k fixed at compile time") {
    const ref::Logits logits =
        safe_logits(rng, 20, 16, [&](const ref::Logits& l) { return ref::top_p(l, 4, 0.5f, false); });
    compare(route_batch<4>(moe::TopP(0.5f), logits, 4), ref::top_p(logits, 4, 0.5f, false));
  }
}

TEST_CASE("TopP at the threshold: ties to the lower index, and the sum reaching p stops") {
  // Logits of 0 and -1000: exp(-1000) is exactly 0, so the four zero-logit experts have probability
  // exactly 0.25 in float and double, and every running sum is exact.
  const float none = -1000.0f;
  const ref::Logits logits = {{none, 0.0f, 0.0f, none, none, 0.0f, 0.0f, none}};
  auto chosen = [&](float p, int k_max) { return keys(read_row(route_batch(moe::TopP(p), logits, k_max), 0).experts); };
  CHECK(chosen(0.5f, 8) == std::set<int>{1, 2});      // 0.25 + 0.25 reaches 0.5: 5 and 6, tied, not taken
  CHECK(chosen(0.75f, 8) == std::set<int>{1, 2, 5});  // of the tied 5 and 6 at the threshold, only 5
  CHECK(chosen(0.5000001f, 8) == std::set<int>{1, 2, 5});
  CHECK(chosen(0.25f, 8) == std::set<int>{1});
  CHECK(chosen(0.2f, 8) == std::set<int>{1});
  CHECK(chosen(1.0f, 8) == std::set<int>{1, 2, 5, 6});  // the zero-probability experts are never needed
  CHECK(chosen(1.0f, 3) == std::set<int>{1, 2, 5});     // at most k_max
  for (float p : {0.5f, 0.75f, 0.2f, 1.0f}) {
    CAPTURE(p);
    compare(route_batch(moe::TopP(p), logits, 8), ref::top_p(logits, 8, p, false));
    compare(route_batch(moe::TopP(p, true), logits, 8), ref::top_p(logits, 8, p, true));
  }
  // Unused slots are kNoExpert with weight 0.
  const Run run = route_batch(moe::TopP(0.5f), logits, 8);
  int unused = 0;
  for (int j = 0; j < 8; ++j)
    if (run.ids[std::size_t(j)] == kNoExpert) {
      ++unused;
      CHECK(run.weights[std::size_t(j)] == 0.0f);
    }
  CHECK(unused == 6);

  SUBCASE("two tied experts below a larger one, p between the two") {
    // Expert 3 alone is below p, expert 3 plus one of the tied 1 and 6 is clearly above: only 1 is taken.
    const ref::Logits tied = {{-3.0f, 0.0f, -3.0f, 1.0f, -3.0f, -3.0f, 0.0f, -3.0f}};
    const std::vector<double> prob = ref::softmax(tied[0]);
    REQUIRE(prob[1] == prob[6]);
    const float p = float(prob[3] + 0.5 * prob[1]);
    REQUIRE(double(p) - prob[3] > 0.1);
    CHECK(keys(read_row(route_batch(moe::TopP(p), tied, 8), 0).experts) == std::set<int>{1, 3});
    compare(route_batch(moe::TopP(p, true), tied, 8), ref::top_p(tied, 8, p, true));
  }
}

// ------------------------------------------------------------------------------------- capacity

TEST_CASE("CapacityTopK matches the reference, dropping choices beyond capacity") {
  std::mt19937 rng(41);
  struct Case {
    int experts, k;
    std::size_t tokens;
    float factor;
    int capacity;
    bool renormalize;
    bool expect_drops;
  };
  const Case cases[] = {
      {8, 1, 40, 1.0f, 0, false, true},   // Switch, capacity from the factor: ceil(40 / 8) = 5
      {8, 1, 40, 1.25f, 0, false, true},  // ceil(6.25) = 7
      {8, 1, 40, 0.0f, 3, false, true},   // Switch, fixed capacity (the factor is then unused)
      {13, 2, 29, 1.25f, 0, true, true},  // GShard top-2, renormalised
      {13, 2, 29, 1.0f, 0, false, true},
      {1, 1, 6, 0.0f, 4, false, true},    // one expert: the last two tokens are dropped
      {16, 16, 5, 0.5f, 0, false, true},  // k = E
      {4, 2, 1, 1.0f, 0, true, false},    // one token
      {64, 8, 30, 1.5f, 0, true, true},
      {8, 2, 20, 100.0f, 0, true, false},  // room for everything
  };
  for (const Case& c : cases) {
    CAPTURE(c.experts);
    CAPTURE(c.k);
    CAPTURE(c.tokens);
    CAPTURE(c.factor);
    CAPTURE(c.capacity);
    ref::Logits logits = random_logits(rng, c.tokens, c.experts);
    for (ref::Row& row : logits) {  // popular experts, so capacity binds
      row[0] += 1.5f;
      if (c.experts > 1) row[1] += 0.75f;
    }
    moe::CapacityTopK policy;
    policy.capacity_factor = c.factor;
    policy.capacity = c.capacity;
    policy.renormalize = c.renormalize;
    CHECK_NOTHROW(policy.check(c.experts, c.k));
    const ref::Routing want = ref::capacity_top_k(logits, c.k, c.factor, c.capacity, c.renormalize);
    std::size_t drops = 0;
    for (const ref::Routed& t : want.tokens) drops += t.dropped.size();
    CHECK((drops > 0) == c.expect_drops);
    compare(route_batch(policy, logits, c.k), want);
    if (c.k == 2) compare(route_batch<2>(policy, logits, c.k), want);
  }
}

TEST_CASE("CapacityTopK: Switch drops the later tokens, GShard admits first choices before second ones") {
  SUBCASE("Switch, k = 1: every token prefers expert 0") {
    const ref::Logits logits = {{2.0f, 0.0f}, {1.0f, 0.5f}, {3.0f, -1.0f}, {0.5f, 0.0f}};
    moe::CapacityTopK policy;
    policy.capacity_factor = 1.0f;  // ceil(1 * 4 * 1 / 2) = 2
    const Run run = route_batch(policy, logits, 1);
    CHECK(run.ids == std::vector<int>{0, 0, kDroppedExpert, kDroppedExpert});
    for (std::size_t t = 0; t < 4; ++t)  // the dropped keep their router probability
      CHECK(close(run.weights[t], ref::softmax(logits[t])[0]));
    compare(run, ref::capacity_top_k(logits, 1, 1.0f, 0, false));
    policy.capacity = 1;
    policy.pass_dropped_through = true;
    CHECK(policy.passes_dropped_through());
    const Run fixed = route_batch(policy, logits, 1);
    CHECK(fixed.ids == std::vector<int>{0, kDroppedExpert, kDroppedExpert, kDroppedExpert});
    compare(fixed, ref::capacity_top_k(logits, 1, 1.0f, 1, false));
  }
  SUBCASE("GShard, k = 2, capacity 1") {
    // Token 0: first expert 0, second expert 1. Token 1: first expert 1, second expert 2. Token 1's first
    // choice of expert 1 is admitted before token 0's second choice of it, which is dropped.
    const ref::Logits logits = {{3.0f, 2.0f, 0.0f}, {0.0f, 3.0f, 2.0f}};
    moe::CapacityTopK policy;
    policy.capacity = 1;
    policy.renormalize = true;
    const Run run = route_batch(policy, logits, 2);
    const ref::Routed t0 = read_row(run, 0), t1 = read_row(run, 1);
    CHECK(keys(t0.experts) == std::set<int>{0});
    REQUIRE(t0.dropped.size() == 1);
    const std::vector<double> p0 = ref::softmax(logits[0]);
    CHECK(close(t0.experts.at(0), p0[0] / (p0[0] + p0[1])));  // renormalised before dropping
    CHECK(close(t0.dropped[0], p0[1] / (p0[0] + p0[1])));
    CHECK(keys(t1.experts) == std::set<int>{1, 2});
    CHECK(t1.dropped.empty());
    compare(run, ref::capacity_top_k(logits, 2, 1.0f, 1, true));
  }
}

// --------------------------------------------------------------------------------- expert choice

TEST_CASE("ExpertChoice matches the reference") {
  struct Case {
    int experts;
    std::size_t tokens;
    float factor;
    int capacity;
  };
  const Case cases[] = {
      {8, 32, 2.0f, 0},     // C = 8
      {5, 7, 0.0f, 3},      // fixed capacity
      {1, 4, 0.5f, 0},      // one expert, C = 2
      {13, 1, 2.0f, 0},     // one token: C = min(1, ceil(2 / 13)) = 1, the token gets every expert
      {16, 40, 0.0f, 100},  // capacity above the batch: everything
      {37, 50, 1.0f, 0},    // C = 2
      {64, 20, 3.0f, 0},    // C = 1
  };
  unsigned seed = 51;
  for (const Case& c : cases) {
    CAPTURE(c.experts);
    CAPTURE(c.tokens);
    CAPTURE(c.factor);
    CAPTURE(c.capacity);
    moe::ExpertChoice policy;
    policy.capacity_factor = c.factor;
    policy.capacity = c.capacity;
    CHECK_NOTHROW(policy.check(c.experts, c.experts));
    ref::Logits logits;
    ref::Routing want;
    do {  // a batch whose per-expert cut is clear of float rounding
      std::mt19937 rng(seed++);
      logits = random_logits(rng, c.tokens, c.experts);
      want = ref::expert_choice(logits, c.factor, c.capacity);
    } while (want.margin <= kSafeMargin);
    compare(route_batch(policy, logits, c.experts), want);
  }
}

TEST_CASE("ExpertChoice can leave a token with no expert") {
  SUBCASE("random batch, capacity factor 0.5") {
    // 8 experts each take ceil(0.5 * 32 / 8) = 2 tokens: 16 choices for 32 tokens.
    ref::Logits logits;
    ref::Routing want;
    unsigned seed = 61;
    do {
      std::mt19937 rng(seed++);
      logits = random_logits(rng, 32, 8);
      want = ref::expert_choice(logits, 0.5f, 0);
    } while (want.margin <= kSafeMargin);
    moe::ExpertChoice policy;
    policy.capacity_factor = 0.5f;
    const Run run = route_batch(policy, logits, 8);
    compare(run, want);
    int empty = 0;
    for (std::size_t t = 0; t < run.tokens(); ++t) {
      const std::vector<int> row = run.row_ids(t);
      if (std::all_of(row.begin(), row.end(), [](int id) { return id == kNoExpert; })) ++empty;
    }
    CHECK(empty >= 16);
  }
  SUBCASE("identical tokens: ties go to the lower token index") {
    const ref::Logits logits(6, ref::Row{0.3f, -1.0f, 2.0f, 0.0f});
    moe::ExpertChoice policy;
    policy.capacity = 2;
    const Run run = route_batch(policy, logits, 4);
    for (std::size_t t = 0; t < 6; ++t) {
      CAPTURE(t);
      const std::set<int> got = keys(read_row(run, t).experts);
      CHECK(got == (t < 2 ? std::set<int>{0, 1, 2, 3} : std::set<int>{}));
    }
    compare(run, ref::expert_choice(logits, 0.0f, 2));
  }
}

// ---------------------------------------------------------------------------------------- hashing

TEST_CASE("HashRouting matches the reference") {
  std::mt19937_64 rng(71);
  const std::pair<int, int> shapes[] = {{16, 2}, {1, 1}, {8, 8}, {13, 3}, {64, 6}, {3, 2}};
  for (const auto& shape : shapes) {
    const int experts = shape.first, k = shape.second;
    CAPTURE(experts);
    CAPTURE(k);
    std::vector<std::int64_t> ids = {
        0, 1, -1, std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min(), 42};
    for (int i = 0; i < 30; ++i) ids.push_back(std::int64_t(rng()));
    std::mt19937 logit_rng(72);
    const ref::Logits logits = random_logits(logit_rng, ids.size(), experts);
    const Run run = route_batch(moe::HashRouting(), logits, k, ids.data());
    compare(run, ref::hash_routing(ids, experts, k));
    // The experts in the order the hash sequence produces them.
    for (std::size_t t = 0; t < ids.size(); ++t) CHECK(run.row_ids(t) == ref::hash_experts(ids[t], experts, k));
  }
  std::mt19937 logit_rng(73);
  const std::vector<std::int64_t> ids = {5, 6, 7};
  compare(route_batch<2>(moe::HashRouting(), random_logits(logit_rng, 3, 16), 2, ids.data()),
          ref::hash_routing(ids, 16, 2));
}

TEST_CASE("HashRouting depends only on the token id") {
  const int experts = 16, k = 3;
  std::mt19937 rng(74);
  const std::vector<std::int64_t> first_ids = {5, 9, 5, 123456789, 9, -7};
  const std::vector<std::int64_t> second_ids = {9, -7, 123456789, 5};
  const Run first = route_batch(moe::HashRouting(), random_logits(rng, first_ids.size(), experts), k, first_ids.data());
  const Run second =
      route_batch(moe::HashRouting(), random_logits(rng, second_ids.size(), experts, 5.0f), k, second_ids.data());
  const Run again = route_batch(moe::HashRouting(), random_logits(rng, first_ids.size(), experts), k, first_ids.data());
  CHECK(first.ids == again.ids);
  CHECK(first.weights == again.weights);
  CHECK(first.row_ids(0) == first.row_ids(2));  // same id, two positions
  CHECK(first.row_ids(1) == first.row_ids(4));
  CHECK(second.row_ids(0) == first.row_ids(1));  // same id, another batch, other logits
  CHECK(second.row_ids(1) == first.row_ids(5));
  CHECK(second.row_ids(2) == first.row_ids(3));
  CHECK(second.row_ids(3) == first.row_ids(0));
  for (std::size_t t = 0; t < first.tokens(); ++t) {
    const ref::Routed got = read_row(first, t);  // distinct, in range
    CHECK(got.experts.size() == std::size_t(k));
    for (const auto& kv : got.experts) CHECK(close(kv.second, 1.0 / k));
  }
}

TEST_CASE("HashRouting spreads consecutive ids evenly over the experts") {
  // 20000 consecutive ids: a chi-square statistic with E - 1 degrees of freedom is near E - 1 for a good
  // hash; the bound is loose (a p-value far below 1e-4), the ids fixed, so the test cannot flake.
  const std::pair<int, int> shapes[] = {{16, 1}, {16, 2}, {13, 1}, {64, 8}};
  for (const auto& shape : shapes) {
    const int experts = shape.first, k = shape.second;
    CAPTURE(experts);
    CAPTURE(k);
    std::vector<std::int64_t> ids(20000);
    std::iota(ids.begin(), ids.end(), std::int64_t(0));
    const ref::Logits logits(ids.size(), ref::Row(std::size_t(experts), 0.0f));
    const Run run = route_batch(moe::HashRouting(), logits, k, ids.data());
    std::vector<double> load(std::size_t(experts), 0.0);
    for (int id : run.ids) {
      REQUIRE(id >= 0);
      load[std::size_t(id)] += 1.0;
    }
    const double expected = double(ids.size()) * k / experts;
    double chi2 = 0.0;
    for (double l : load) chi2 += (l - expected) * (l - expected) / expected;
    CAPTURE(chi2);
    CHECK(chi2 < 3.0 * (experts - 1) + 30.0);
  }
}

// ---------------------------------------------------------------------------------------- check()

TEST_CASE("check() refuses configurations a policy cannot route, naming the policy") {
  SUBCASE("SigmoidGroupTopK") {
    moe::SigmoidGroupTopK ok;
    ok.groups = 4;
    ok.topk_groups = 2;
    CHECK_NOTHROW(ok.check(16, 4));
    CHECK_NOTHROW(ok.check(16, 8));
    moe::SigmoidGroupTopK p = ok;
    p.groups = 3;  // does not divide 16
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p = ok;
    p.topk_groups = 5;  // more than the 4 groups
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p.topk_groups = 0;
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p = ok;
    p.bias.assign(15, 0.0f);  // one short
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p.bias.assign(17, 0.0f);
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p.bias.assign(16, 0.0f);
    CHECK_NOTHROW(p.check(16, 4));
    p.bias[7] = std::numeric_limits<float>::quiet_NaN();
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p.bias[7] = std::numeric_limits<float>::infinity();
    check_refused(p, 16, 4, "SigmoidGroupTopK");
    p = ok;
    check_refused(p, 16, 9, "SigmoidGroupTopK");  // k above the 8 experts of the 2 kept groups
  }
  SUBCASE("SoftmaxGroupTopK") {
    moe::SoftmaxGroupTopK ok;
    ok.groups = 4;
    ok.topk_groups = 2;
    CHECK_NOTHROW(ok.check(16, 8));
    moe::SoftmaxGroupTopK p = ok;
    p.groups = 3;  // does not divide 16
    check_refused(p, 16, 4, "SoftmaxGroupTopK");
    p = ok;
    p.topk_groups = 5;
    check_refused(p, 16, 4, "SoftmaxGroupTopK");
    p.topk_groups = 0;
    check_refused(p, 16, 4, "SoftmaxGroupTopK");
    p = ok;
    check_refused(p, 16, 9, "SoftmaxGroupTopK");  // k above the 8 experts of the 2 kept groups
    p.scaling = std::numeric_limits<float>::infinity();
    check_refused(p, 16, 4, "SoftmaxGroupTopK");
  }
  SUBCASE("TopP") {
    CHECK_NOTHROW(moe::TopP(1.0f).check(8, 2));
    CHECK_NOTHROW(moe::TopP(1e-6f).check(8, 2));
    for (float p : {0.0f, -0.0f, -0.5f, 1.0000001f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
      CAPTURE(p);
      check_refused(moe::TopP(p), 8, 2, "TopP");
    }
  }
  SUBCASE("CapacityTopK and ExpertChoice") {
    for (float factor :
         {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      CAPTURE(factor);
      moe::CapacityTopK capacity;
      capacity.capacity_factor = factor;
      check_refused(capacity, 8, 2, "CapacityTopK");
      moe::ExpertChoice choice;
      choice.capacity_factor = factor;
      check_refused(choice, 8, 8, "ExpertChoice");
      // A fixed capacity makes the factor irrelevant.
      capacity.capacity = 4;
      choice.capacity = 4;
      CHECK_NOTHROW(capacity.check(8, 2));
      CHECK_NOTHROW(choice.check(8, 8));
    }
  }
}
