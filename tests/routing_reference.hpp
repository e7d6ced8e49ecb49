// tests/routing_reference.hpp: plainly written routing policies to check router.hpp and routing_batch.hpp
// against.
//
// Written from the semantics documented in those headers, not from their code: double precision, whole-row
// sorts (std::stable_sort by descending score, so ties go to the lower index), explicit loops. Each policy
// returns, per token, the experts it visits with their weights and the weights of its dropped choices, plus
// the smallest gap between two scores on either side of a decision it made (`margin`): a test asserts the
// margin is far above float rounding, so that float and double cannot decide differently. Exact ties
// (equal scores, decided by index in both) do not count towards the margin.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <vector>

namespace routing_reference {

using Row = std::vector<float>;   // one token's router logits, one per expert
using Logits = std::vector<Row>;  // tokens x experts

// One token's routing: expert -> weight, and the weights of choices a capacity limit dropped.
struct Routed {
  std::map<int, double> experts;
  std::vector<double> dropped;
};

struct Routing {
  std::vector<Routed> tokens;
  double margin = std::numeric_limits<double>::infinity();

  void note_gap(double above, double below) {
    const double gap = std::fabs(above - below);
    if (gap != 0.0) margin = std::min(margin, gap);
  }
};

// Indices 0 .. n-1 by descending score, ties to the lower index.
inline std::vector<int> by_descending(const std::vector<double>& score) {
  std::vector<int> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return score[std::size_t(a)] > score[std::size_t(b)]; });
  return order;
}

inline std::vector<double> softmax(const Row& logits) {
  double largest = -std::numeric_limits<double>::infinity();
  for (float l : logits) largest = std::max(largest, double(l));
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp(double(logits[i]) - largest);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  return p;
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// The experts of ranks 0 .. k-1 by descending probability, with their weights: the probabilities, or with
// renormalize those divided by their sum. Selection by probability is exact for the logits given (softmax
// is monotonic and double resolves any two distinct float logits); logits computed another way (a layer's
// f32 sums) may order two close probabilities the other way, so the choice keeps the gaps its decisions
// rested on: between rank k - 1 and rank k (which experts), and between consecutive ranks below k (their
// order, which capacity limits admit by).
struct Choice {
  std::vector<int> experts;  // by rank
  std::vector<double> weights;
  double cut_above = 0, cut_below = 0;  // the probabilities of ranks k - 1 and k (equal when k = experts)
  std::vector<double> ranked;           // the probabilities of ranks 0 .. k - 1
};

inline Choice softmax_choice(const Row& logits, int k, bool renormalize) {
  const std::vector<double> p = softmax(logits);
  const std::vector<int> order = by_descending(p);
  Choice c;
  double sum = 0.0;
  for (int j = 0; j < k; ++j) {
    c.experts.push_back(order[std::size_t(j)]);
    c.weights.push_back(p[std::size_t(order[std::size_t(j)])]);
    c.ranked.push_back(c.weights.back());
    sum += c.weights.back();
  }
  if (k > 0 && std::size_t(k) < p.size()) {
    c.cut_above = p[std::size_t(order[std::size_t(k - 1)])];
    c.cut_below = p[std::size_t(order[std::size_t(k)])];
  }
  if (renormalize)
    for (double& w : c.weights) w /= sum;
  return c;
}

// SoftmaxTopK(renormalize); TopKSoftmax is SoftmaxTopK(true).
inline Routing softmax_top_k(const Logits& logits, int k, bool renormalize) {
  Routing r;
  for (const Row& row : logits) {
    const Choice c = softmax_choice(row, k, renormalize);
    r.note_gap(c.cut_above, c.cut_below);
    Routed t;
    for (std::size_t j = 0; j < c.experts.size(); ++j) t.experts[c.experts[j]] = c.weights[j];
    r.tokens.push_back(t);
  }
  return r;
}

// DenseSoftmax: every expert, weighted by the softmax.
inline Routing dense_softmax(const Logits& logits) {
  Routing r;
  for (const Row& row : logits) {
    const std::vector<double> p = softmax(row);
    Routed t;
    for (std::size_t e = 0; e < p.size(); ++e) t.experts[int(e)] = p[e];
    r.tokens.push_back(t);
  }
  return r;
}

// SigmoidGroupTopK, as transformers' DeepseekV3 router: sigmoid scores; bias added for the choice only;
// group score = sum of the group's two largest biased scores; the topk_groups best groups kept; biased
// scores outside them set to 0.0; the k largest chosen; weights the unbiased sigmoid scores, divided by
// (their sum + 1e-20) when renormalising, then times scaling.
struct DeepSeek {
  std::vector<float> bias;  // empty: zeros
  int groups = 1;
  int topk_groups = 1;
  bool renormalize = true;
  float scaling = 1.0f;
};

inline Routing sigmoid_group_top_k(const Logits& logits, int k, const DeepSeek& config) {
  Routing r;
  for (const Row& row : logits) {
    const std::size_t experts = row.size();
    const int size = int(experts) / config.groups;
    std::vector<double> score(experts), choice(experts);
    for (std::size_t i = 0; i < experts; ++i) {
      score[i] = sigmoid(double(row[i]));
      choice[i] = score[i] + (config.bias.empty() ? 0.0 : double(config.bias[i]));
    }
    std::vector<bool> kept_group(std::size_t(config.groups), true);
    if (config.groups > 1) {
      std::vector<double> group_score(std::size_t(config.groups));
      for (int g = 0; g < config.groups; ++g) {
        std::vector<double> members(choice.begin() + g * size, choice.begin() + (g + 1) * size);
        std::sort(members.begin(), members.end(), [](double a, double b) { return a > b; });
        group_score[std::size_t(g)] = members[0] + members[1];
      }
      const std::vector<int> group_order = by_descending(group_score);
      std::fill(kept_group.begin(), kept_group.end(), false);
      for (int j = 0; j < config.topk_groups; ++j) kept_group[std::size_t(group_order[std::size_t(j)])] = true;
      if (config.topk_groups < config.groups)
        r.note_gap(group_score[std::size_t(group_order[std::size_t(config.topk_groups - 1)])],
                   group_score[std::size_t(group_order[std::size_t(config.topk_groups)])]);
    }
    std::vector<double> masked(experts);
    for (std::size_t i = 0; i < experts; ++i) masked[i] = kept_group[i / std::size_t(size)] ? choice[i] : 0.0;
    const std::vector<int> order = by_descending(masked);
    if (std::size_t(k) < experts)
      r.note_gap(masked[std::size_t(order[std::size_t(k - 1)])], masked[std::size_t(order[std::size_t(k)])]);
    double sum = 0.0;
    for (int j = 0; j < k; ++j) sum += score[std::size_t(order[std::size_t(j)])];
    const double factor = config.renormalize ? double(config.scaling) / (sum + 1e-20) : double(config.scaling);
    Routed t;
    for (int j = 0; j < k; ++j) t.experts[order[std::size_t(j)]] = score[std::size_t(order[std::size_t(j)])] * factor;
    r.tokens.push_back(t);
  }
  return r;
}

// SoftmaxGroupTopK, as transformers' DeepseekV2 router: probabilities p = softmax over every expert; group
// score = the largest p of the group; the topk_groups best groups kept; p outside them set to 0.0; the k
// largest chosen; weights p * scaling.
struct DeepSeekV2 {
  int groups = 1;
  int topk_groups = 1;
  float scaling = 1.0f;
};

inline Routing softmax_group_top_k(const Logits& logits, int k, const DeepSeekV2& config) {
  Routing r;
  for (const Row& row : logits) {
    const std::size_t experts = row.size();
    const int size = int(experts) / config.groups;
    const std::vector<double> p = softmax(row);
    std::vector<bool> kept_group(std::size_t(config.groups), true);
    if (config.groups > 1) {
      std::vector<double> group_score(std::size_t(config.groups));
      for (int g = 0; g < config.groups; ++g)
        group_score[std::size_t(g)] = *std::max_element(p.begin() + g * size, p.begin() + (g + 1) * size);
      const std::vector<int> group_order = by_descending(group_score);
      std::fill(kept_group.begin(), kept_group.end(), false);
      for (int j = 0; j < config.topk_groups; ++j) kept_group[std::size_t(group_order[std::size_t(j)])] = true;
      if (config.topk_groups < config.groups)
        r.note_gap(group_score[std::size_t(group_order[std::size_t(config.topk_groups - 1)])],
                   group_score[std::size_t(group_order[std::size_t(config.topk_groups)])]);
    }
    std::vector<double> masked(experts);
    for (std::size_t i = 0; i < experts; ++i) masked[i] = kept_group[i / std::size_t(size)] ? p[i] : 0.0;
    const std::vector<int> order = by_descending(masked);
    if (std::size_t(k) < experts)
      r.note_gap(masked[std::size_t(order[std::size_t(k - 1)])], masked[std::size_t(order[std::size_t(k)])]);
    Routed t;
    for (int j = 0; j < k; ++j)
      t.experts[order[std::size_t(j)]] = masked[std::size_t(order[std::size_t(j)])] * double(config.scaling);
    r.tokens.push_back(t);
  }
  return r;
}

// TopP: experts by decreasing probability (ties to the lower index) until the running sum reaches p, at
// most k_max; weights the probabilities, or divided by their sum. The margin is the distance from p of
// every running sum the stopping rule compared with it, and the gaps of the order up to the cut.
inline Routing top_p(const Logits& logits, int k_max, float p, bool renormalize) {
  Routing r;
  const double threshold = double(p);
  for (const Row& row : logits) {
    const std::vector<double> prob = softmax(row);
    const std::vector<int> order = by_descending(prob);
    std::vector<int> taken;
    double sum = 0.0;
    while (int(taken.size()) < k_max && !(sum >= threshold)) {
      taken.push_back(order[taken.size()]);
      sum += prob[std::size_t(taken.back())];
      if (int(taken.size()) < k_max) r.note_gap(sum, threshold);
      // Which expert comes next: the order of the probabilities up to the cut.
      if (taken.size() < order.size())
        r.note_gap(prob[std::size_t(taken.back())], prob[std::size_t(order[taken.size()])]);
    }
    Routed t;
    for (int e : taken) t.experts[e] = renormalize ? prob[std::size_t(e)] / sum : prob[std::size_t(e)];
    r.tokens.push_back(t);
  }
  return r;
}

// An expert's capacity: `capacity` when positive, else ceil(factor * tokens * per_token / experts); a value
// past the int64 range (a factor meant as "no limit") is the largest int64.
inline std::int64_t capacity_of(int capacity, float factor, std::size_t tokens, int per_token, std::size_t experts) {
  if (capacity > 0) return capacity;
  const double limit = std::ceil(double(factor) * double(tokens) * double(per_token) / double(experts));
  return limit < 9.2e18 ? std::int64_t(limit) : std::numeric_limits<std::int64_t>::max();
}

// CapacityTopK: softmax top-k (weights renormalised over the k before dropping when asked), then choices
// admitted rank by rank, token by token within a rank; a choice whose expert is full is dropped.
inline Routing capacity_top_k(const Logits& logits, int k, float factor, int capacity, bool renormalize) {
  Routing r;
  if (logits.empty()) return r;
  const std::size_t experts = logits[0].size();
  const std::int64_t limit = capacity_of(capacity, factor, logits.size(), k, experts);
  std::vector<Choice> choices;
  for (const Row& row : logits) {
    choices.push_back(softmax_choice(row, k, renormalize));
    const Choice& c = choices.back();
    r.note_gap(c.cut_above, c.cut_below);
    for (std::size_t j = 1; j < c.ranked.size(); ++j) r.note_gap(c.ranked[j - 1], c.ranked[j]);
  }
  r.tokens.resize(logits.size());
  std::vector<std::int64_t> held(experts, 0);
  for (int rank = 0; rank < k; ++rank)
    for (std::size_t t = 0; t < logits.size(); ++t) {
      const int e = choices[t].experts[std::size_t(rank)];
      const double w = choices[t].weights[std::size_t(rank)];
      if (held[std::size_t(e)] < limit) {
        ++held[std::size_t(e)];
        r.tokens[t].experts[e] = w;
      } else {
        r.tokens[t].dropped.push_back(w);
      }
    }
  return r;
}

// ExpertChoice: each expert takes the C tokens of highest softmax score for it (ties to the lower token),
// C = capacity or ceil(factor * tokens / experts), at most the batch; the weight is the score.
inline Routing expert_choice(const Logits& logits, float factor, int capacity) {
  Routing r;
  if (logits.empty()) return r;
  const std::size_t tokens = logits.size(), experts = logits[0].size();
  const std::int64_t limit =
      std::min<std::int64_t>(std::int64_t(tokens), capacity_of(capacity, factor, tokens, 1, experts));
  std::vector<std::vector<double>> prob;
  for (const Row& row : logits) prob.push_back(softmax(row));
  r.tokens.resize(tokens);
  for (std::size_t e = 0; e < experts; ++e) {
    std::vector<double> column(tokens);
    for (std::size_t t = 0; t < tokens; ++t) column[t] = prob[t][e];
    const std::vector<int> order = by_descending(column);
    for (std::int64_t i = 0; i < limit; ++i) {
      const int t = order[std::size_t(i)];
      r.tokens[std::size_t(t)].experts[int(e)] = column[std::size_t(t)];
    }
    if (limit < std::int64_t(tokens))
      r.note_gap(column[std::size_t(order[std::size_t(limit - 1)])], column[std::size_t(order[std::size_t(limit)])]);
  }
  return r;
}

// SplitMix64 (Steele, Lea, Flood 2014) as a generator seeded with the token id: the i-th output is
// h(id, i) of routing_batch.hpp's HashRouting.
class SplitMix64 {
public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

private:
  std::uint64_t state_;
};

// HashRouting: expert j of a token is the first not yet taken of its id's hash sequence modulo E (after
// 64 * k draws, the lowest experts not yet taken); every weight 1 / k. Also returns the experts in order.
inline std::vector<int> hash_experts(std::int64_t id, int experts, int k) {
  SplitMix64 rng(static_cast<std::uint64_t>(id));
  std::vector<int> taken;
  auto take = [&](int e) {
    if (std::find(taken.begin(), taken.end(), e) == taken.end()) taken.push_back(e);
  };
  for (int draw = 0; draw < 64 * k && int(taken.size()) < k; ++draw)
    take(int(rng.next() % static_cast<std::uint64_t>(experts)));
  for (int e = 0; int(taken.size()) < k; ++e) take(e);
  return taken;
}

inline Routing hash_routing(const std::vector<std::int64_t>& token_ids, int experts, int k) {
  Routing r;
  for (std::int64_t id : token_ids) {
    Routed t;
    for (int e : hash_experts(id, experts, k)) t.experts[e] = 1.0 / double(k);
    r.tokens.push_back(t);
  }
  return r;
}

}  // namespace routing_reference
