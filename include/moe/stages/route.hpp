// moe/stages/route.hpp: stage 1 of a forward pass, route: the router's logits for every token (one tiled GEMM
// over the packed f32 router), the routing policy's experts and weights per token, the shared experts'
// gates, and each token's input row coded as the expert kernels read it (the caller's code_input).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "../config.hpp"
#include "../detail/team.hpp"
#include "../kernels/gemm.hpp"
#include "../kernels/panel.hpp"
#include "../kernels/reduce.hpp"
#include "../kernels/tile_shape.hpp"
#include "../precision.hpp"
#include "../router.hpp"
#include "../simd.hpp"
#include "../workspace.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace stages {

// Routes with `routing`, Slots experts a token (or Dynamic), over a router of `router_rows` rows: the
// routed experts' rows, then one per gated shared expert.
template <class Routing, int Slots>
class Route {
public:
  struct Shape {
    Index hidden_size;
    int experts, slots, shared_experts;
    bool shared_expert_gate;
    const float* bias;  // added to the logits, logits_width floats; null: none
  };

  Route(const Routing& routing, const detail::kernels::PanelMatrix<f32>& router, int router_rows, const Shape& shape)
      : routing_(routing), router_(router), router_rows_(router_rows), shape_(shape) {}

  // Fills ws's logits, ids, weights and shared weights for `tokens` tokens of x, and calls code_input(t)
  // for each token t, on the thread that routes it. Throws on logits that overflow (naming the first such
  // token); a policy's finish_batch runs last, over the whole batch.
  template <class CodeInput>
  void run(const float* x, Index x_stride, Index tokens, const std::int64_t* token_ids, Workspace& ws,
           CodeInput&& code_input) const {
    const Index width = ws.shape_.logits_width;
    const Index panels = router_.panels();
    const Index blocks = (tokens + kRows - 1) / kRows;
    const int experts = shape_.experts, slots = shape_.slots, shared = shape_.shared_experts;
    float* logits = ws.logits_.data();
    Index bad_token = -1;
    // One tile of tokens by one panel of logits (decode with up to 64 experts) is one item: a team of
    // threads would add a fork, two barriers and a join and split nothing.
    const int threads = blocks * panels > 1 ? detail::team_size(ws.threads_) : 1;
    detail::run_on_team(threads, [&] {
      MOE_OMP(omp for schedule(static))
      for (Index item = 0; item < blocks * panels; ++item) {
        const Index first = item / panels * kRows;
        const Index p = item % panels;
        const int count = int(std::min<Index>(kRows, tokens - first));
        const float* rows[kRows];
        for (int r = 0; r < count; ++r) rows[r] = x + (first + r) * x_stride;
        const float* bias = shape_.bias ? shape_.bias + p * detail::kernels::kPanelColumns : nullptr;
        detail::kernels::multiply_rows(rows, count, router_.panel(p), shape_.hidden_size, [&](auto& acc, int n) {
          for (int r = 0; r < n; ++r)
            MOE_UNROLL for (int v = 0; v < detail::kernels::kTileVectors; ++v) detail::simd::store(
                logits + (first + r) * width + p * detail::kernels::kPanelColumns + v * detail::simd::kWidth,
                bias ? acc[r][v] + detail::simd::load(bias + v * detail::simd::kWidth) : acc[r][v]);
        });
      }
      MOE_OMP(omp for schedule(static) nowait)  // the end of the team's region waits
      for (Index t = 0; t < tokens; ++t) {
        const float* row = logits + t * width;
        if (!detail::kernels::all_finite(row, router_rows_)) {
          MOE_OMP(omp critical(moe_bad_token))
          bad_token = bad_token < 0 ? t : std::min(bad_token, t);  // the first, whatever the schedule
          continue;
        }
        routing_.template route<Slots>(row, experts, slots, ws.ids_.data() + t * slots, ws.weights_.data() + t * slots);
        code_input(t);
        for (int s = 0; s < shared; ++s)
          ws.shared_weights_[t * shared + s] =
              shape_.shared_expert_gate ? 1.0f / (1.0f + std::exp(-row[experts + s])) : 1.0f;
      }
    });
    MOE_CHECK(bad_token < 0, "Layer::forward",
              "router logits of token " + std::to_string(bad_token) + " overflowed to Inf or NaN");
    if constexpr (detail::has_finish_batch<Routing>::value) {
      // Scratch: fill_ (one int per expert) and assigned_token_ (at least max_tokens) are free until group.
      routing_.finish_batch(RoutingBatch{tokens, experts, slots, logits, width, token_ids, ws.ids_.data(),
                                         ws.weights_.data(), ws.fill_.data(), ws.assigned_token_.data()});
    } else {
      (void)token_ids;
    }
  }

  // Sizes the buffers this stage writes, for ws's shape and max_tokens: the logits, each token's experts
  // and weights, and the shared experts' gates. (A policy's finish_batch borrows group's fill_ and
  // assigned_token_ as scratch: at least one int per expert and per token.)
  static void reserve(Workspace& ws) {
    const Workspace::Shape& shape = ws.shape_;
    const Index tokens = ws.max_tokens_;
    ws.logits_.resize(tokens * shape.logits_width);
    ws.ids_.resize(tokens * shape.slots);
    ws.weights_.resize(tokens * shape.slots);
    ws.shared_weights_.resize(tokens * shape.shared_experts);
  }

private:
  static constexpr int kRows = detail::kernels::kTileRows;  // the router is always f32

  const Routing& routing_;
  const detail::kernels::PanelMatrix<f32>& router_;
  int router_rows_;
  Shape shape_;
};

}  // namespace stages
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
