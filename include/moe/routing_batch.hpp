// moe/routing_batch.hpp: routing policies that decide over the whole batch (router.hpp's finish_batch):
// capacity limits with token dropping (Switch, GShard), expert choice, and hash routing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "config.hpp"
#include "router.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

namespace detail {
// An expert's capacity for a batch: `fixed` when positive, else ceil(factor * tokens * per_token / experts);
// never more than tokens * per_token, which no expert can exceed (so a huge factor means "no limit").
inline Index capacity_of(int fixed, float factor, Index tokens, int per_token, int experts) {
  const double most = double(tokens) * per_token;
  if (fixed > 0) return Index(std::min(double(fixed), most));
  return Index(std::min(std::ceil(double(factor) * double(tokens) * per_token / experts), most));
}
}  // namespace detail

// Softmax top-k with an expert capacity, tokens beyond it dropped (Switch Transformers with k = 1, GShard's
// top-2 with k = 2).
//   capacity C = `capacity` when positive (transformers' SwitchTransformers expert_capacity), else
//   ceil(capacity_factor * tokens * k / experts), computed in double from the float factor (1.1f is a little
//   above 1.1, so 1.1f * 10 tokens / 11 experts gives 2, not 1: give `capacity` for exact control);
//   choices are admitted in order of rank (slot j holds a token's (j+1)-th choice: route() writes them best
//   first), then token: every token's first choice in token order, then
//   every token's second choice, ... (GShard's priority for first choices; its random dispatch of second
//   choices is replaced by this deterministic order); a choice whose expert already holds C tokens is
//   dropped (kDroppedExpert; its weight is kept);
//   weights are the full-softmax probabilities (Switch), or with renormalize divided by their sum over the
//   k chosen, before dropping (GShard's normalised top-2 gates);
//   pass_dropped_through: a dropped choice adds weight * x to the token's output, as transformers'
//   SwitchTransformersSparseMLP did until early 2025 (it kept the input as the dropped token's expert output,
//   then scaled every token by its router probability); otherwise it adds nothing, as the current code does
//   (its next_states start at zero: transformers PR #37123).
struct CapacityTopK {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "capacity_topk";

  float capacity_factor = 1.0f;
  int capacity = 0;
  bool renormalize = false;
  bool pass_dropped_through = false;

  bool passes_dropped_through() const { return pass_dropped_through; }

  void check(int, int) const {
    MOE_CHECK(capacity > 0 || (std::isfinite(capacity_factor) && capacity_factor > 0.0f), "CapacityTopK",
              "capacity_factor must be positive and finite (or capacity set), got " + std::to_string(capacity_factor));
  }

  template <int K = Dynamic>
  void route(const float* logits, int experts, int k, int* ids, float* weights) const noexcept {
    SoftmaxTopK(renormalize).route<K>(logits, experts, k, ids, weights);
  }

  void finish_batch(const RoutingBatch& b) const noexcept {
    const Index limit = detail::capacity_of(capacity, capacity_factor, b.tokens, b.slots, b.experts);
    int* held = b.expert_scratch;
    std::fill(held, held + b.experts, 0);
    for (int rank = 0; rank < b.slots; ++rank)
      for (Index t = 0; t < b.tokens; ++t) {
        int& id = b.ids[t * b.slots + rank];
        if (id < 0) continue;
        if (held[id] < limit)
          ++held[id];
        else
          id = kDroppedExpert;
      }
  }
};

// Expert-choice routing (Zhou et al., 2022): scores are the softmax over experts of each token's logits;
// each expert takes the C tokens with the highest score for it (ties to the lower token index), C =
// `capacity` when positive, else ceil(capacity_factor * tokens / experts), at most the batch. A token may
// get any number of experts, none included (its routed output is then zero). Weights are the scores. A
// slot per expert: the layer's top_k is num_experts, unchosen slots are kNoExpert.
struct ExpertChoice {
  static constexpr bool kSelectsAll = true;
  static constexpr const char* kName = "expert_choice";

  float capacity_factor = 2.0f;  // experts per token on average
  int capacity = 0;

  void check(int, int) const {
    MOE_CHECK(capacity > 0 || (std::isfinite(capacity_factor) && capacity_factor > 0.0f), "ExpertChoice",
              "capacity_factor must be positive and finite (or capacity set), got " + std::to_string(capacity_factor));
  }

  template <int K = Dynamic>
  void route(const float* logits, int experts, int /*k*/, int* ids, float* weights) const noexcept {
    detail::kernels::softmax(logits, weights, experts);
    for (int e = 0; e < experts; ++e) ids[e] = e;
  }

  void finish_batch(const RoutingBatch& b) const noexcept {
    const Index limit = std::min(b.tokens, detail::capacity_of(capacity, capacity_factor, b.tokens, 1, b.experts));
    int* order = b.token_scratch;
    const int slots = b.slots;  // == experts: slot e is expert e
    for (int e = 0; e < b.experts; ++e) {
      for (Index t = 0; t < b.tokens; ++t) order[t] = int(t);
      const float* w = b.weights + e;
      auto better = [w, slots](int a, int c) {
        return w[Index(a) * slots] > w[Index(c) * slots] || (w[Index(a) * slots] == w[Index(c) * slots] && a < c);
      };
      if (limit < b.tokens) std::nth_element(order, order + limit, order + b.tokens, better);  // top `limit` first
      for (Index i = limit; i < b.tokens; ++i) {
        b.ids[Index(order[i]) * slots + e] = kNoExpert;
        b.weights[Index(order[i]) * slots + e] = 0.0f;
      }
    }
  }
};

// Hash routing (Roller et al., 2021): a token's experts depend only on its id (a vocabulary id, say), which
// forward() must be given. The layer still runs its router (for RoutingStats and shared-expert gates), so
// give it router weights; zeros will do. Expert j of token id is the first not yet taken of h(id, 0) % E, h(id, 1) % E,
// ..., with h(id, i) = splitmix64(uint64(id) + (i + 1) * 0x9E3779B97F4A7C15) (after 64 * k tries, the
// lowest experts not yet taken); every weight is 1 / k.
struct HashRouting {
  static constexpr bool kSelectsAll = false;
  static constexpr const char* kName = "hash";
  static constexpr bool kNeedsTokenIds = true;

  static std::uint64_t hash(std::int64_t id, int attempt) {
    std::uint64_t z = std::uint64_t(id) + std::uint64_t(attempt + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  template <int K = Dynamic>
  void route(const float*, int, int k, int* ids, float* weights) const noexcept {
    const int count = K == Dynamic ? k : K;
    for (int j = 0; j < count; ++j) {
      ids[j] = kNoExpert;  // decided in finish_batch, from the token ids
      weights[j] = 0.0f;
    }
  }

  void finish_batch(const RoutingBatch& b) const noexcept {
    const float weight = 1.0f / float(b.slots);
    for (Index t = 0; t < b.tokens; ++t) {
      int* ids = b.ids + t * b.slots;
      int taken = 0;
      auto take = [&](int e) {
        for (int j = 0; j < taken; ++j)
          if (ids[j] == e) return;
        ids[taken] = e;
        b.weights[t * b.slots + taken++] = weight;
      };
      for (int attempt = 0; taken < b.slots && attempt < 64 * b.slots; ++attempt)
        take(int(hash(b.token_ids[t], attempt) % std::uint64_t(b.experts)));
      for (int e = 0; taken < b.slots; ++e) take(e);
    }
  }
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
