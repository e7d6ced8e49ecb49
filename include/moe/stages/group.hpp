// moe/stages/group.hpp: stage 2 of a forward pass, group: the routing policy's choices, expert by expert.
//
// A counting sort of the (token, expert) pairs by expert, with prefix sums, so each expert sees its tokens
// as one contiguous list, tokens in increasing order; shared experts take every token. The policy's output
// is checked here, before anything trusts it. Not a template: every layer of a program shares it.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "../config.hpp"
#include "../slot_markers.hpp"
#include "../workspace.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace stages {

// Where the group stage writes, each array as the workspace sizes it: counts and fill one per expert
// (routed, then shared), offsets one more; token and weight one per (token, expert) pair; dropped_token
// and dropped_weight one per (token, slot).
struct GroupedPairs {
  int* counts;         // tokens each expert received
  int* offsets;        // prefix sums of counts: expert e's pairs are [offsets[e], offsets[e + 1])
  int* fill;           // scratch
  int* token;          // the pairs, expert by expert, tokens in increasing order
  float* weight;       // and their routing weights
  int* dropped_token;  // choices a capacity limit dropped, when the policy passes them through
  float* dropped_weight;
  Index dropped = 0;       // choices dropped
  int passed_through = 0;  // of those, kept in dropped_token / dropped_weight
};

struct Group {
  const char* policy;  // the routing policy's name, for errors
  bool pass_through;   // the policy passes dropped tokens through (y += weight * x)
  int experts;         // routed
  int shared;
  int slots;  // choices per token

  // Sizes the buffers this stage writes, for ws's shape and max_tokens: per expert (routed and shared) its
  // count, offset and cursor, and every (token, expert) pair and dropped choice, grouped.
  static void reserve(Workspace& ws) {
    const Workspace::Shape& shape = ws.shape_;
    const Index tokens = ws.max_tokens_;
    const int count = shape.experts + shape.shared_experts;
    const Index pairs = tokens * (shape.slots + shape.shared_experts);
    ws.counts_.resize(count);
    ws.offsets_.resize(count + 1);
    ws.fill_.resize(count);
    ws.assigned_token_.resize(pairs);
    ws.assigned_weight_.resize(pairs);
    ws.dropped_token_.resize(tokens * shape.slots);
    ws.dropped_weight_.resize(tokens * shape.slots);
  }

  // Groups the policy's choices, ids and weights (tokens x slots, in the policy's order; a slot may hold a
  // marker, slot_markers.hpp), and the shared experts' gate values (tokens x shared), into `out`.
  void run(Index tokens, const int* ids, const float* weights, const float* shared_weights, GroupedPairs& out) const {
    const int count = experts + shared;
    int* counts = out.counts;
    int* offsets = out.offsets;
    int* fill = out.fill;
    std::fill(counts, counts + count, 0);
    // A policy's output is checked before anything trusts it: ids in range, distinct per token (fill
    // holds the last token that chose each expert), weights finite.
    std::fill(fill, fill + count, -1);
    out.dropped = 0;
    out.passed_through = 0;
    for (Index t = 0; t < tokens; ++t) {
      for (int j = 0; j < slots; ++j) {
        const int e = ids[t * slots + j];
        if (e == kNoExpert) continue;
        if (e == kDroppedExpert) {
          const float weight = weights[t * slots + j];
          MOE_CHECK(std::isfinite(weight), "Layer::forward",
                    std::string("the routing policy ") + policy + " gave token " + std::to_string(t) +
                        " a non-finite weight");
          ++out.dropped;
          if (pass_through) {
            out.dropped_token[out.passed_through] = int(t);
            out.dropped_weight[out.passed_through++] = weight;
          }
          continue;
        }
        MOE_CHECK(e >= 0 && e < experts, "Layer::forward",
                  std::string("the routing policy ") + policy + " chose expert " + std::to_string(e) + " for token " +
                      std::to_string(t) + ", out of range [0, " + std::to_string(experts) + ")");
        MOE_CHECK(fill[e] != int(t), "Layer::forward",
                  std::string("the routing policy ") + policy + " chose expert " + std::to_string(e) +
                      " twice for token " + std::to_string(t));
        MOE_CHECK(
            std::isfinite(weights[t * slots + j]), "Layer::forward",
            std::string("the routing policy ") + policy + " gave token " + std::to_string(t) + " a non-finite weight");
        fill[e] = int(t);
        ++counts[e];
      }
    }
    for (int s = 0; s < shared; ++s) counts[experts + s] = int(tokens);
    offsets[0] = 0;
    for (int e = 0; e < count; ++e) offsets[e + 1] = offsets[e] + counts[e];
    std::copy(offsets, offsets + count, fill);
    for (Index t = 0; t < tokens; ++t) {
      for (int j = 0; j < slots; ++j) {
        if (ids[t * slots + j] < 0) continue;
        const int slot = fill[ids[t * slots + j]]++;
        out.token[slot] = int(t);
        out.weight[slot] = weights[t * slots + j];
      }
    }
    for (int s = 0; s < shared; ++s) {
      for (Index t = 0; t < tokens; ++t) {
        const int slot = fill[experts + s]++;
        out.token[slot] = int(t);
        out.weight[slot] = shared_weights[t * shared + s];
      }
    }
  }
};

}  // namespace stages
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
