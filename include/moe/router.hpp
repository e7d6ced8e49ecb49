// moe/router.hpp: gating functions and expert-selection rules, as policies a Layer is parameterised on.
//
// A routing policy turns one token's router logits (one per routed expert) into the experts the token
// visits and the weight of each. The layer computes the logits, calls route() once per token, and does
// everything after (grouping, expert FFNs, weighted combine) the same way for every policy.
//
// The interface a policy provides:
//   static constexpr bool kSelectsAll;   // every expert runs for every token (dense MoE): slots = experts
//   static constexpr const char* kName;
//   template <int K> void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept;
// route() writes `slots` pairs (slots = experts when kSelectsAll, else k), in any order; ids must be
// distinct and in [0, experts), weights finite. It runs inside an OpenMP region, hence noexcept; the layer
// checks what it wrote and reports a broken policy by name.
#pragma once

#include <cmath>

#include "config.hpp"
#include "kernels/reduce.hpp"
#include "kernels/softmax.hpp"
#include "kernels/topk.hpp"

namespace moe {

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
    kernels::top_k<K>(logits, experts, k, ids, weights);
    const float shift = weights[0];
    const int count = K == Dynamic ? k : K;
    float selected_sum = 0.0f;
    for (int j = 0; j < count; ++j) {
      weights[j] = std::exp(weights[j] - shift);
      selected_sum += weights[j];
    }
    const float denominator = renormalize ? selected_sum : kernels::sum_exp(logits, experts, shift);
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
    kernels::softmax(logits, weights, experts);
    for (int e = 0; e < experts; ++e) ids[e] = e;
  }
};

}  // namespace moe
