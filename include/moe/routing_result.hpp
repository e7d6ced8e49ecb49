// moe/routing_result.hpp: what a forward pass routed, as Eigen views of the workspace.
#pragma once

#include <Eigen/Core>

#include "config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// What a forward pass routed: for each token its experts and their weights (top_k() slots of
// each, in the policy's order; a slot may hold a marker instead of an expert: kNoExpert for an unused slot,
// kDroppedExpert for a choice a capacity limit dropped), how many tokens each routed expert received, and
// how many choices were dropped. A view into the workspace, valid until the workspace's next forward pass.
class RoutingResult {
public:
  using IdMatrix = Eigen::Map<const Eigen::Matrix<int, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  using WeightMatrix = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  using CountVector = Eigen::Map<const Eigen::Matrix<int, 1, Eigen::Dynamic>>;

  RoutingResult(Index tokens, int slots, int experts, const int* ids, const float* weights, const int* counts,
                Index dropped = 0)
      : tokens_(tokens),
        slots_(slots),
        experts_(experts),
        ids_(ids),
        weights_(weights),
        counts_(counts),
        dropped_(dropped) {}

  Index tokens() const { return tokens_; }
  int top_k() const { return slots_; }
  IdMatrix expert_ids() const { return IdMatrix(ids_, tokens_, slots_); }
  WeightMatrix weights() const { return WeightMatrix(weights_, tokens_, slots_); }
  CountVector tokens_per_expert() const { return CountVector(counts_, experts_); }
  Index dropped() const { return dropped_; }

private:
  Index tokens_;
  int slots_;
  int experts_;
  const int* ids_;
  const float* weights_;
  const int* counts_;
  Index dropped_;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
