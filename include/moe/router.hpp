// moe/router.hpp: gating functions and expert-selection rules, as policies a Layer is parameterised on.
//
// A routing policy turns router logits (one per routed expert and token) into the experts each token visits
// and the weight of each. The layer computes the logits, calls route() once per token (in parallel), then,
// for policies that decide over the whole batch (capacity limits, expert choice, hashing token ids),
// finish_batch() once; it does everything after (grouping, expert FFNs, weighted combine) the same way for
// every policy.
//
// What a policy provides:
//   static constexpr bool kSelectsAll;   // a slot per expert for every token (dense, expert choice):
//                                        // slots = experts; otherwise slots = k
//   static constexpr const char* kName;
//   template <int K> void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept;
// and optionally
//   void check(int experts, int k) const;                       // throws moe::Error for a configuration it
//                                                               // cannot route; the Layer constructor calls it
//   void finish_batch(const RoutingBatch& batch) const noexcept;  // the batch-level decision, after route()
//   static constexpr bool kNeedsTokenIds = true;                // forward() must be given token ids
//   bool passes_dropped_through() const;                        // see below
// route() writes `slots` (id, weight) pairs, in any order. An id is an expert in [0, experts), distinct
// within the token, or a slot marker (slot_markers.hpp): kNoExpert (an unused slot: top-p chose fewer
// experts, expert choice gave the token fewer) or kDroppedExpert (a capacity limit dropped the choice; its
// weight is kept). Weights must be finite. A dropped choice adds nothing to the token's output, or, when
// passes_dropped_through() is true, weight * x (the Switch Transformers reference code: a dropped token
// passes its input through, scaled by its router probability). route() and finish_batch() run inside or
// between OpenMP regions, hence noexcept; the layer checks what they wrote and reports a broken policy by
// name.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "kernels/reduce.hpp"
#include "kernels/softmax.hpp"
#include "kernels/topk.hpp"
#include "slot_markers.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// What finish_batch() sees: the whole batch after every token's route().
struct RoutingBatch {
  Index tokens = 0;
  int experts = 0;
  int slots = 0;
  const float* logits = nullptr;  // tokens rows of router logits, row t at logits + t * logits_stride
  Index logits_stride = 0;
  const std::int64_t* token_ids = nullptr;  // as given to forward(); null when none were
  int* ids = nullptr;                       // tokens x slots, as route() wrote them: to be finished
  float* weights = nullptr;
  int* expert_scratch = nullptr;  // experts ints of scratch
  int* token_scratch = nullptr;   // tokens ints of scratch
};

namespace detail {
template <class R, class = void>
struct has_finish_batch : std::false_type {};
template <class R>
struct has_finish_batch<R, std::void_t<decltype(std::declval<const R&>().finish_batch(RoutingBatch{}))>>
    : std::true_type {};
template <class R, class = void>
struct has_check : std::false_type {};
template <class R>
struct has_check<R, std::void_t<decltype(std::declval<const R&>().check(0, 0))>> : std::true_type {};
template <class R, class = void>
struct needs_token_ids : std::false_type {};
template <class R>
struct needs_token_ids<R, std::void_t<decltype(R::kNeedsTokenIds)>> : std::integral_constant<bool, R::kNeedsTokenIds> {
};
template <class R, class = void>
struct has_pass_through : std::false_type {};
template <class R>
struct has_pass_through<R, std::void_t<decltype(std::declval<const R&>().passes_dropped_through())>> : std::true_type {
};

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// What the group-limited policies (SigmoidGroupTopK, SoftmaxGroupTopK) ask of their groups: at most 64 groups
// dividing the experts, topk_groups of them kept, k within the kept groups' experts, a finite scaling.
inline void check_groups(const char* where, int groups, int topk_groups, float scaling, int experts, int k) {
  MOE_CHECK(groups >= 1 && groups <= 64 && experts % groups == 0, where,
            "groups (n_group) must be in [1, 64] and divide the " + std::to_string(experts) + " experts, got " +
                std::to_string(groups));
  MOE_CHECK(topk_groups >= 1 && topk_groups <= groups, where,
            "topk_groups must be in [1, groups = " + std::to_string(groups) + "], got " + std::to_string(topk_groups));
  MOE_CHECK(k <= topk_groups * (experts / groups), where,
            "top_k = " + std::to_string(k) + " exceeds the experts of the kept groups");
  MOE_CHECK(std::isfinite(scaling), where, "scaling must be finite");
}
}  // namespace detail

// Softmax over all experts, then the k largest probabilities.
//   renormalize = true : weights divided by their sum over the k chosen (Mixtral; equivalently a softmax
//                        over the k chosen logits);
//   renormalize = false: weights are the full-softmax probabilities (Qwen2-MoE, Qwen3-MoE's and OLMoE's
//                        norm_topk_prob = false), so they sum to less than one.
// Ties between equal logits go to the lower expert index.
struct SoftmaxTopK {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "softmax_topk";

  bool renormalize = false;

  SoftmaxTopK() = default;
  explicit SoftmaxTopK(bool renormalize_weights) : renormalize(renormalize_weights) {}

  template <int K = Dynamic>
  void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept {
    // Softmax is monotonic, so select on the logits and exponentiate only what is needed.
    detail::kernels::top_k<K>(logits, experts, k, ids, weights);
    const float shift = weights[0];
    const int count = K == Dynamic ? k : K;
    float selected_sum = 0.0f;
    for (int j = 0; j < count; ++j) {
      weights[j] = std::exp(weights[j] - shift);
      selected_sum += weights[j];
    }
    const float denominator = renormalize ? selected_sum : detail::kernels::sum_exp(logits, experts, shift);
    const float inverse = 1.0f / denominator;
    for (int j = 0; j < count; ++j) weights[j] *= inverse;
  }
};

// Dense MoE: every expert runs, weighted by the softmax over all experts.
struct DenseSoftmax {
  static constexpr bool kSelectsAll = true;
  static constexpr const char* kName = "dense_softmax";

  template <int K = Dynamic>
  void route(const float* logits, int experts, int /*k*/, int* ids, float* weights) const noexcept {
    detail::kernels::softmax(logits, weights, experts);
    for (int e = 0; e < experts; ++e) ids[e] = e;
  }
};

// Top-k of the logits, then a softmax over the k chosen: by definition the same weights as SoftmaxTopK(true),
// which already computes them this way (select on the logits, exponentiate k values); under its own name for
// code ported from routers written in this order.
struct TopKSoftmax : SoftmaxTopK {
  static constexpr const char* kName = "topk_softmax";
  TopKSoftmax() : SoftmaxTopK(true) {}
};

// DeepSeek-V3's router (transformers' DeepseekV3TopkRouter), for token logits l:
//   s_i = sigmoid(l_i)                         scores; the weights come from these
//   c_i = s_i + bias_i                         the score-correction bias, used for selection only
//   group g (experts g*E/G .. (g+1)*E/G - 1) scores the sum of its two largest c_i;
//   the topk_groups best groups are kept; every c_i outside them is set to 0.0 (not -inf: as the reference
//   does, which matters when biased scores are negative);
//   the k largest c_i are chosen (ties to the lower index), weight_i = s_i,
//   renormalized: weight_i /= (sum of the k weights + 1e-20); finally weight_i *= scaling
//   (routed_scaling_factor). groups = topk_groups = 1 is plain sigmoid top-k; with no bias as well (Llama 4's
//   router) the k largest logits are chosen, the same experts but for logits whose f32 sigmoids tie.
struct SigmoidGroupTopK {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "sigmoid_group_topk";
  static constexpr int kMaxGroups = 64;

  std::vector<float> bias;  // e_score_correction_bias, one per expert; empty means zeros
  int groups = 1;           // n_group
  int topk_groups = 1;      // topk_group
  bool renormalize = true;  // norm_topk_prob
  float scaling = 1.0f;     // routed_scaling_factor

  void check(int experts, int k) const {
    const char* where = "SigmoidGroupTopK";
    MOE_CHECK(bias.empty() || int(bias.size()) == experts, where,
              "bias has " + std::to_string(bias.size()) + " entries for " + std::to_string(experts) + " experts");
    for (std::size_t i = 0; i < bias.size(); ++i)
      MOE_CHECK(std::isfinite(bias[i]), where, "bias " + std::to_string(i) + " is NaN or Inf");
    detail::check_groups(where, groups, topk_groups, scaling, experts, k);
    MOE_CHECK(groups == 1 || experts / groups >= 2, where,
              "each group needs at least 2 experts (its score is the sum of its top 2)");
  }

  template <int K = Dynamic>
  void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept {
    if (groups == 1 && bias.empty()) {
      // Without groups or a bias the choice is the k largest logits (sigmoid is monotonic), made on the logits
      // themselves as Llama 4's router makes it: f32 sigmoids of logits above ~17 all round to 1 and would tie.
      detail::kernels::top_k<K>(logits, experts, k, ids, weights);
      const int count = K == Dynamic ? k : K;
      float sum = 0.0f;
      for (int j = 0; j < count; ++j) sum += (weights[j] = detail::sigmoid(weights[j]));
      const float factor = renormalize ? scaling / (sum + 1e-20f) : scaling;
      for (int j = 0; j < count; ++j) weights[j] *= factor;
      return;
    }
    // The scores once, vectorised, where a stack buffer holds them (every real model: 256 experts at most);
    // else computed where needed.
    if (experts <= kMaxBuffered) {
      float scores[kMaxBuffered];
      detail::kernels::sigmoid(logits, scores, experts);
      select<K>([&](int i) { return scores[i]; }, experts, k, ids, weights);
    } else {
      select<K>([&](int i) { return detail::sigmoid(logits[i]); }, experts, k, ids, weights);
    }
  }

private:
  static constexpr int kMaxBuffered = 4096;

  template <int K, class Score>
  void select(const Score& score, int experts, int k, int* ids, float* weights) const noexcept {
    const float* b = bias.empty() ? nullptr : bias.data();
    auto choice = [&](int i) { return score(i) + (b ? b[i] : 0.0f); };
    std::uint64_t kept = ~std::uint64_t(0);
    if (groups > 1) {
      const int size = experts / groups;
      float group_score[kMaxGroups];
      for (int g = 0; g < groups; ++g) {
        int top_ids[2];
        float top[2];
        detail::kernels::top_k_of<2>(
            size, 2, [&](int i) { return choice(g * size + i); }, top_ids, top);
        group_score[g] = top[0] + top[1];
      }
      int group_ids[kMaxGroups];
      float group_top[kMaxGroups];
      detail::kernels::top_k(group_score, groups, topk_groups, group_ids, group_top);
      kept = 0;
      for (int j = 0; j < topk_groups; ++j) kept |= std::uint64_t(1) << group_ids[j];
    }
    const int size = experts / groups;
    detail::kernels::top_k_of<K>(
        experts, k, [&](int i) { return (kept >> (i / size)) & 1u ? choice(i) : 0.0f; }, ids, weights);
    const int count = K == Dynamic ? k : K;
    float sum = 0.0f;
    for (int j = 0; j < count; ++j) sum += (weights[j] = score(ids[j]));
    const float factor = renormalize ? scaling / (sum + 1e-20f) : scaling;
    for (int j = 0; j < count; ++j) weights[j] *= factor;
  }
};

// DeepSeek-V2's router (transformers' DeepseekV2Moe.route_tokens_to_experts), for token logits l:
//   p = softmax(l) over every expert;
//   topk_method "greedy" (groups = 1): the k largest p;
//   "group_limited_greedy": group g (experts g*E/G .. (g+1)*E/G - 1) scores its largest p; the topk_groups
//   best groups are kept and the k largest p among their experts chosen (ties to the lower index);
//   weight_i = p_i * scaling (routed_scaling_factor), not renormalised: transformers applies the factor to
//   the probabilities and ignores norm_topk_prob for this family.
// Softmax is monotonic, so the groups and experts are chosen on the logits, and only the k chosen are
// exponentiated, over the sum of every expert's exponential.
struct SoftmaxGroupTopK {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "softmax_group_topk";
  static constexpr int kMaxGroups = 64;

  int groups = 1;       // n_group
  int topk_groups = 1;  // topk_group
  float scaling = 1.0f;

  void check(int experts, int k) const {
    detail::check_groups("SoftmaxGroupTopK", groups, topk_groups, scaling, experts, k);
  }

  template <int K = Dynamic>
  void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept {
    const int size = experts / groups;
    std::uint64_t kept = ~std::uint64_t(0);
    if (groups > 1 && topk_groups < groups) {
      float group_max[kMaxGroups];
      for (int g = 0; g < groups; ++g) {
        float best = logits[g * size];
        for (int i = 1; i < size; ++i) best = logits[g * size + i] > best ? logits[g * size + i] : best;
        group_max[g] = best;
      }
      int group_ids[kMaxGroups];
      float group_top[kMaxGroups];
      detail::kernels::top_k(group_max, groups, topk_groups, group_ids, group_top);
      kept = 0;
      for (int j = 0; j < topk_groups; ++j) kept |= std::uint64_t(1) << group_ids[j];
    }
    constexpr float kDropped = -std::numeric_limits<float>::infinity();
    detail::kernels::top_k_of<K>(
        experts, k, [&](int i) { return (kept >> (i / size)) & 1u ? logits[i] : kDropped; }, ids, weights);
    // The largest logit of all is in a kept group (its group's maximum is the largest), so it is weights[0]:
    // the softmax's shift.
    const float shift = weights[0];
    const float factor = scaling / detail::kernels::sum_exp(logits, experts, shift);
    const int count = K == Dynamic ? k : K;
    for (int j = 0; j < count; ++j) weights[j] = std::exp(weights[j] - shift) * factor;
  }
};

// Dynamic k (top-p): softmax over all experts, then the smallest set of experts, taken in order of
// decreasing probability (ties to the lower index), whose probabilities summed in that order (in f32) reach
// p, at most k (the layer's top_k is k_max). The remaining slots are kNoExpert. An expert tied with the last
// one taken is not taken once the sum has reached p. Weights are the probabilities, or with renormalize those
// divided by their sum.
struct TopP {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "top_p";

  float p = 0.9f;
  bool renormalize = false;

  TopP() = default;
  explicit TopP(float threshold, bool renormalize_weights = false) : p(threshold), renormalize(renormalize_weights) {}

  void check(int, int) const {
    MOE_CHECK(p > 0.0f && p <= 1.0f, "TopP", "p must be in (0, 1], got " + std::to_string(p));
  }

  template <int K = Dynamic>
  void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept {
    detail::kernels::top_k<K>(logits, experts, k, ids, weights);
    const int count = K == Dynamic ? k : K;
    const float shift = weights[0];
    const float inverse = 1.0f / detail::kernels::sum_exp(logits, experts, shift);
    float sum = 0.0f;
    int taken = 0;
    while (taken < count && !(sum >= p)) {
      weights[taken] = std::exp(weights[taken] - shift) * inverse;
      sum += weights[taken++];
    }
    for (int j = taken; j < count; ++j) {
      ids[j] = kNoExpert;
      weights[j] = 0.0f;
    }
    if (renormalize)
      for (int j = 0; j < taken; ++j) weights[j] /= sum;
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
