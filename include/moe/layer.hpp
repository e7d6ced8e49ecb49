// moe/layer.hpp: the MoE layer and its fused sparse forward pass.
//
// A forward pass has four stages, in this order:
//   route    router logits for every token (one tiled GEMM over the packed router), then the routing
//            policy picks each token's experts and weights (stages/route.hpp, the one stage that depends
//            on the policy), and each token's input row is coded as the expert kernels read it;
//   group    a counting sort of the (token, expert) pairs by expert, with prefix sums, so each expert
//            sees its tokens as one contiguous list (stages/group.hpp);
//   compute  per (expert, panel) work item, the input projection of the expert's tokens with the
//            activation fused into its epilogue (act(gate) * up for gated experts), into scratch
//            (stages/compute.hpp; stages/expert_pass.hpp plans the items);
//   combine  per output panel (per run of consecutive panels at decode), every expert's down projection
//            with the weighted scatter-add into the output fused into its epilogue (stages/combine.hpp).
// Every output element is owned by one work item and summed in a fixed order (experts in index order,
// shared experts last), so the result is bitwise the same for any thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "config.hpp"
#include "detail/team.hpp"
#include "expert.hpp"
#include "expert_set.hpp"
#include "kernels/activation.hpp"
#include "kernels/gemm.hpp"
#include "kernels/quantize.hpp"
#include "kernels/reduce.hpp"
#include "layer_config.hpp"
#include "precision.hpp"
#include "router.hpp"
#include "routing_result.hpp"
#include "routing_stats.hpp"
#include "simd.hpp"
#include "stages/compute.hpp"
#include "stages/expert_pass.hpp"
#include "stages/group.hpp"
#include "stages/route.hpp"
#include "workspace.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// Work a forward pass did, for throughput figures: weight bytes streamed and useful flops.
struct ForwardCost {
  double weight_bytes = 0;
  double flops = 0;
};

// An MoE layer: Experts routed experts (or Dynamic), TopK of them per token (or Dynamic), weights stored
// in Precision, experts chosen by the Routing policy (router.hpp). Fixed values are checked at compile
// time and unroll the top-k selection; tensor sizes are always run-time.
template <int Experts = Dynamic, int TopK = Dynamic, class Precision = f32, class Routing = SoftmaxTopK>
class Layer {
  static_assert(Experts == Dynamic || Experts >= 1, "moe::Layer: the expert count must be >= 1 or moe::Dynamic");
  static_assert(TopK == Dynamic || TopK >= 1, "moe::Layer: top-k must be >= 1 or moe::Dynamic");
  static_assert(Experts == Dynamic || TopK == Dynamic || TopK <= Experts,
                "moe::Layer: top-k cannot exceed the number of experts");
  static_assert(!Routing::kSelectsAll || TopK == Dynamic || TopK == Experts,
                "moe::Layer: a dense routing policy runs every expert: leave TopK Dynamic or equal to Experts");
  static_assert(is_precision<Precision>::value,
                "moe::Layer: Precision lacks the members of a precision (moe/precision.hpp lists them)");

public:
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using WeightRef = Eigen::Ref<const RowMatrix>;
  using WeightPrecision = Precision;
  static constexpr int kExperts = Experts;
  // Experts each token visits: TopK, or every expert under a dense policy.
  static constexpr int kTopK = Routing::kSelectsAll ? Experts : TopK;
  static_assert(noexcept(std::declval<const Routing&>().template route<kTopK>(nullptr, 0, 0, nullptr, nullptr)),
                "moe::Layer: Routing::route must be noexcept (it runs inside an OpenMP parallel region)");

  explicit Layer(const LayerConfig& config, Routing routing = Routing{}) : config_(config), routing_(routing) {
    detail::check_config_sizes(config_, Experts, TopK, Routing::kSelectsAll, Routing::kName);
    const int experts = config_.num_experts;
    if constexpr (detail::has_check<Routing>::value) routing_.check(experts, config_.top_k);
    detail::finish_config(config_);

    experts_ = ExpertSet<Precision>(config_);
    router_rows_ = experts + (config_.shared_expert_gate ? config_.num_shared_experts : 0);
    router_.resize(router_rows_, config_.hidden_size);
    router_row_loaded_.assign(static_cast<std::size_t>(router_rows_), false);

    shape_.hidden_size = config_.hidden_size;
    shape_.logits_width = router_.panels() * kPanel;
    shape_.slots = top_k();
    shape_.experts = experts;
    shape_.shared_experts = config_.num_shared_experts;
    shape_.hidden_row_floats = Index(top_k()) * experts_.ffn_padded(0) +
                               Index(shared_experts()) * (shared_experts() ? experts_.ffn_padded(experts) : 0);
    for (int e = 0; e < routed_and_shared_experts(); ++e) shape_.input_items += experts_.input_panels(e);
    if (kInt8 || kBf16)
      shape_.quantized_width = detail::simd::round_up(config_.hidden_size, detail::kernels::kActivationStep<Precision>);
    shape_.coding = stages::ActivationCoding<Precision>::kBuffers;
  }

  // ---- weights, in the PyTorch layout W[out][in]; packed (copied) on the call ----

  // The router's linear layer: num_experts x hidden_size (no bias, as in every supported model).
  void set_router(const WeightView& weight) {
    detail::check_view(weight, config_.num_experts, config_.hidden_size, "Layer::set_router", "router weight");
    for (int e = 0; e < config_.num_experts; ++e) check_router_row(e, weight.data + e * weight.stride);
    for (int e = 0; e < config_.num_experts; ++e) set_router_row(e, weight.data + e * weight.stride);
  }
  void set_router(const WeightRef& weight) { set_router(view(weight)); }

  // Routed expert e in [0, num_experts): gate and up are ffn_size x hidden_size, down hidden_size x ffn_size.
  void set_expert(int e, const WeightView& gate, const WeightView& up, const WeightView& down) {
    check_index(e, config_.num_experts, "Layer::set_expert", "expert");
    require_gated(true, "Layer::set_expert");
    experts_[e].load(config_.ffn, config_.hidden_size, config_.ffn_size, gate, up, down, "Layer::set_expert",
                     "expert " + std::to_string(e));
  }
  void set_expert(int e, const WeightRef& gate, const WeightRef& up, const WeightRef& down) {
    set_expert(e, view(gate), view(up), view(down));
  }
  // The same from FP8 weights as the FP8 checkpoints publish them (fp8_block_view.hpp): the fp8 precision
  // keeps their codes and scales where every 128 inputs of a row lie in one block; other precisions decode
  // them to f32 first.
  void set_expert(int e, const Fp8BlockView& gate, const Fp8BlockView& up, const Fp8BlockView& down) {
    check_index(e, config_.num_experts, "Layer::set_expert", "expert");
    require_gated(true, "Layer::set_expert");
    experts_[e].load(config_.ffn, config_.hidden_size, config_.ffn_size, gate, up, down, "Layer::set_expert",
                     "expert " + std::to_string(e));
  }
  // A plain (ungated) MLP expert: up is ffn_size x hidden_size (Switch's wi), down hidden_size x ffn_size (wo).
  void set_expert(int e, const WeightView& up, const WeightView& down) {
    check_index(e, config_.num_experts, "Layer::set_expert", "expert");
    require_gated(false, "Layer::set_expert");
    experts_[e].load(config_.ffn, config_.hidden_size, config_.ffn_size, WeightView{}, up, down, "Layer::set_expert",
                     "expert " + std::to_string(e));
  }
  void set_expert(int e, const WeightRef& up, const WeightRef& down) { set_expert(e, view(up), view(down)); }

  // Shared expert s in [0, num_shared_experts), shaped like a routed one with shared_ffn_size.
  void set_shared_expert(int s, const WeightView& gate, const WeightView& up, const WeightView& down) {
    check_index(s, config_.num_shared_experts, "Layer::set_shared_expert", "shared expert");
    require_gated(true, "Layer::set_shared_expert");
    shared(s).load(config_.ffn, config_.hidden_size, config_.shared_ffn_size, gate, up, down,
                   "Layer::set_shared_expert", "shared expert " + std::to_string(s));
  }
  void set_shared_expert(int s, const WeightRef& gate, const WeightRef& up, const WeightRef& down) {
    set_shared_expert(s, view(gate), view(up), view(down));
  }
  void set_shared_expert(int s, const Fp8BlockView& gate, const Fp8BlockView& up, const Fp8BlockView& down) {
    check_index(s, config_.num_shared_experts, "Layer::set_shared_expert", "shared expert");
    require_gated(true, "Layer::set_shared_expert");
    shared(s).load(config_.ffn, config_.hidden_size, config_.shared_ffn_size, gate, up, down,
                   "Layer::set_shared_expert", "shared expert " + std::to_string(s));
  }
  void set_shared_expert(int s, const WeightView& up, const WeightView& down) {
    check_index(s, config_.num_shared_experts, "Layer::set_shared_expert", "shared expert");
    require_gated(false, "Layer::set_shared_expert");
    shared(s).load(config_.ffn, config_.hidden_size, config_.shared_ffn_size, WeightView{}, up, down,
                   "Layer::set_shared_expert", "shared expert " + std::to_string(s));
  }
  void set_shared_expert(int s, const WeightRef& up, const WeightRef& down) {
    set_shared_expert(s, view(up), view(down));
  }

  // The 1 x hidden_size gate of shared expert s (needs config.shared_expert_gate).
  void set_shared_expert_gate(int s, const WeightView& weight) {
    MOE_CHECK(config_.shared_expert_gate, "Layer::set_shared_expert_gate",
              "this layer was configured without shared_expert_gate");
    check_index(s, config_.num_shared_experts, "Layer::set_shared_expert_gate", "shared expert");
    detail::check_view(weight, 1, config_.hidden_size, "Layer::set_shared_expert_gate", "shared expert gate");
    check_router_row(config_.num_experts + s, weight.data);
    set_router_row(config_.num_experts + s, weight.data);
  }
  void set_shared_expert_gate(int s, const WeightRef& weight) { set_shared_expert_gate(s, view(weight)); }

  // Biases on routed expert e's projections (gpt-oss's experts have them): gate and up, ffn_size floats each
  // (gate null for plain MLP experts), down hidden_size floats, added to each projection's output. After
  // set_expert (which keeps them when it reloads the expert); all three null removes them.
  void set_expert_bias(int e, const float* gate, const float* up, const float* down) {
    const char* where = "Layer::set_expert_bias";
    check_index(e, config_.num_experts, where, "expert");
    MOE_CHECK(experts_[e].loaded(), where, "expert " + std::to_string(e) + " has no weights: set_expert first");
    const bool none = gate == nullptr && up == nullptr && down == nullptr;
    MOE_CHECK(none || (up != nullptr && down != nullptr && (gate != nullptr) == config_.ffn.gated), where,
              config_.ffn.gated ? "pass gate, up and down biases (or none)" : "pass up and down biases, no gate bias");
    const Index F = config_.ffn_size, H = config_.hidden_size;
    auto check_finite = [&](const float* bias, Index size, const char* what) {
      MOE_CHECK(bias == nullptr || detail::kernels::all_finite(bias, size), where,
                "expert " + std::to_string(e) + " " + what + " bias has NaN or Inf");
    };
    check_finite(gate, F, "gate");
    check_finite(up, F, "up");
    check_finite(down, H, "down");
    experts_[e].set_bias(H, F, gate, up, down);
  }

  // A bias added to every token's router logits, num_experts floats (gpt-oss's router is a Linear with a
  // bias); null removes it.
  void set_router_bias(const float* bias) {
    if (bias == nullptr) {
      router_bias_.clear();
      return;
    }
    MOE_CHECK(detail::kernels::all_finite(bias, config_.num_experts), "Layer::set_router_bias",
              "router bias has NaN or Inf");
    router_bias_.assign(std::size_t(shape_.logits_width), 0.0f);
    std::copy(bias, bias + config_.num_experts, router_bias_.begin());
  }

  // ---- shape ----

  const LayerConfig& config() const { return config_; }
  const Routing& routing() const { return routing_; }
  Index hidden_size() const { return config_.hidden_size; }
  Index ffn_size() const { return config_.ffn_size; }
  // A fixed Experts or TopK is returned as the compile-time constant (Eigen's variable_if_dynamic), so
  // that loops over experts and slots get constant bounds; the config holds the same value (checked when
  // the layer is made).
  int experts() const { return Experts != Dynamic ? Experts : config_.num_experts; }
  // Experts each token visits (num_experts under a dense policy).
  int top_k() const { return kTopK != Dynamic ? kTopK : config_.top_k; }
  int shared_experts() const { return config_.num_shared_experts; }
  // Bytes of packed weights one routed expert streams when it runs.
  double expert_bytes() const { return experts_[0].bytes(); }

  // Scratch for passes of up to max_tokens tokens, with `threads` threads (0: OpenMP's default).
  Workspace workspace(Index max_tokens, int threads = 0) const {
    MOE_CHECK(max_tokens >= 1, "Layer::workspace", "max_tokens must be >= 1, got " + std::to_string(max_tokens));
    // (token, expert) pairs are counted in int.
    const Index per_token = top_k() + shared_experts();
    MOE_CHECK(max_tokens <= ((Index(1) << 30) - 1) / per_token, "Layer::workspace",
              "max_tokens = " + std::to_string(max_tokens) + " times " + std::to_string(per_token) +
                  " experts per token exceeds 2^30 (token, expert) pairs");
    Workspace ws;
    ws.set_threads(threads);
    ws.max_tokens_ = max_tokens;
    ws.shape_ = shape_;
    // Each stage sizes the buffers it owns, from the shape and max_tokens.
    stages::Route<Routing, kTopK>::reserve(ws);
    stages::Group::reserve(ws);
    stages::Compute<Precision>::reserve(ws);
    stages::ExpertPass<Precision>::reserve(ws);
    return ws;
  }

  // ---- forward ----

  // y = MoE(x) for `tokens` rows of hidden_size floats, x and y given by pointer and row stride (floats).
  // y may be x (in place): the input is fully read before the output is written... except by a policy
  // that passes dropped tokens through, which reads x in the combine: give it a separate y.
  // stats, when given, accumulates this pass's routing (routing_stats.hpp); token_ids (one per token) feed
  // policies that route by token id (HashRouting).
  RoutingResult forward(const float* x, Index x_stride, float* y, Index y_stride, Index tokens, Workspace& ws,
                        RoutingStats* stats = nullptr, const std::int64_t* token_ids = nullptr) const {
    check_forward(x, x_stride, y, y_stride, tokens, ws);
    MOE_CHECK(!detail::needs_token_ids<Routing>::value || tokens == 0 || token_ids != nullptr, "Layer::forward",
              std::string("the routing policy ") + Routing::kName + " needs token ids: pass them to forward()");
    MOE_CHECK(stats == nullptr || stats->experts() == experts(), "Layer::forward",
              "the RoutingStats counts " + std::to_string(stats ? stats->experts() : 0) + " experts, the layer has " +
                  std::to_string(experts()));
    MOE_CHECK(!passes_dropped_through() || tokens == 0 || x + tokens * x_stride <= y || y + tokens * y_stride <= x,
              "Layer::forward",
              std::string("the routing policy ") + Routing::kName +
                  " passes dropped tokens through, which reads x after y is written: x and y must not overlap");
    const stages::Route<Routing, kTopK> route(
        routing_, router_, router_rows_,
        {hidden_size(), experts(), top_k(), shared_experts(), config_.shared_expert_gate,
         router_bias_.empty() ? nullptr : router_bias_.data()});
    route.run(x, x_stride, tokens, token_ids, ws,
              [&](Index t) { stages::Compute<Precision>::code_input(x + t * x_stride, hidden_size(), t, ws); });
    group(tokens, ws);
    detail::kernels::with_activation(config_.ffn.activation, [&](auto activation) {
      stages::ExpertPass<Precision>(experts_).template run<decltype(activation)::value>(x, x_stride, y, y_stride,
                                                                                        tokens, ws);
    });
    // Finite inputs and weights can still overflow f32 inside an expert; say so rather than return Inf.
    for (Index t = 0; t < tokens && MOE_FINITE_CHECKS; ++t)
      MOE_CHECK(detail::kernels::all_finite(y + t * y_stride, hidden_size()), "Layer::forward",
                "the output of token " + std::to_string(t) +
                    " overflowed to Inf or NaN inside an expert (activations too large for f32)");
    // Only a pass that succeeded counts (y, and x when in place, are unspecified after a throw).
    if (stats != nullptr)
      stats->add(ws.logits_.data(), shape_.logits_width, tokens, ws.ids_.data(), ws.weights_.data(), top_k());
    return RoutingResult(tokens, top_k(), experts(), ws.ids_.data(), ws.weights_.data(), ws.counts_.data(),
                         ws.dropped_count_);
  }

  // The same with Eigen: x is any row-major float expression with direct access (a RowMatrix, a Map, a
  // block of rows); y a row-major float matrix or block of the same shape.
  template <class Derived>
  RoutingResult forward(const Eigen::MatrixBase<Derived>& x, Eigen::Ref<RowMatrix> y, Workspace& ws,
                        RoutingStats* stats = nullptr, const std::int64_t* token_ids = nullptr) const {
    static_assert(std::is_same<typename Derived::Scalar, float>::value, "moe::Layer::forward: x must hold floats");
    static_assert((int(Derived::Flags) & Eigen::DirectAccessBit) != 0,
                  "moe::Layer::forward: x must be stored in memory (evaluate the expression first)");
    static_assert(Derived::IsRowMajor || Derived::RowsAtCompileTime == 1,
                  "moe::Layer::forward: x must be row-major (tokens x hidden), to be read without a copy");
    MOE_CHECK(x.innerStride() == 1, "Layer::forward", "x must have unit inner stride");
    MOE_CHECK(x.rows() == y.rows() && x.cols() == y.cols(), "Layer::forward",
              "x is " + std::to_string(x.rows()) + " x " + std::to_string(x.cols()) + " but y is " +
                  std::to_string(y.rows()) + " x " + std::to_string(y.cols()));
    MOE_CHECK(
        x.cols() == hidden_size(), "Layer::forward",
        "x has " + std::to_string(x.cols()) + " columns, expected hidden_size = " + std::to_string(hidden_size()));
    return forward(x.derived().data(), x.rows() == 1 ? x.cols() : x.outerStride(), y.data(),
                   y.rows() == 1 ? y.cols() : y.outerStride(), x.rows(), ws, stats, token_ids);
  }

  // Weight bytes streamed and useful flops of the pass that produced `routed`.
  ForwardCost cost(const RoutingResult& routed) const {
    ForwardCost cost;
    const double tokens = double(routed.tokens());
    const double matrices = config_.ffn.gated ? 3.0 : 2.0;
    cost.weight_bytes = router_.bytes();
    cost.flops = 2.0 * tokens * double(hidden_size()) * router_rows_;
    for (int e = 0; e < routed_and_shared_experts(); ++e) {
      const double count = e < experts() ? double(routed.tokens_per_expert()(e)) : tokens;
      if (count == 0) continue;
      const double ffn = double(e < experts() ? config_.ffn_size : config_.shared_ffn_size);
      cost.weight_bytes += experts_[e].bytes();
      cost.flops += 2.0 * count * double(hidden_size()) * ffn * matrices;
    }
    return cost;
  }

private:
  using Expert = ExpertWeights<Precision>;
  static constexpr bool kInt8 = stages::ActivationCoding<Precision>::kInt8;
  static constexpr bool kBf16 = stages::ActivationCoding<Precision>::kBf16;
  static constexpr Index kPanel = detail::kernels::kPanelColumns;

  static WeightView view(const WeightRef& m) { return WeightView(m.data(), m.rows(), m.cols(), m.outerStride()); }

  int routed_and_shared_experts() const { return config_.num_experts + config_.num_shared_experts; }
  bool passes_dropped_through() const {
    if constexpr (detail::has_pass_through<Routing>::value)
      return routing_.passes_dropped_through();
    else
      return false;
  }
  Expert& shared(int s) { return experts_[config_.num_experts + s]; }

  void check_router_row(int row, const float* w) const {
    MOE_CHECK(detail::kernels::all_finite(w, config_.hidden_size), "Layer::set_router",
              row < experts() ? "router row " + std::to_string(row) + " has NaN or Inf"
                              : "shared expert gate " + std::to_string(row - experts()) + " has NaN or Inf");
  }
  void set_router_row(int row, const float* w) {
    router_.set_output(row, w, config_.hidden_size);
    router_row_loaded_[std::size_t(row)] = true;
  }

  static void check_index(int i, int count, const char* where, const char* what) {
    MOE_CHECK(
        i >= 0 && i < count, where,
        std::string(what) + " index " + std::to_string(i) + " is out of range [0, " + std::to_string(count) + ")");
  }
  void require_gated(bool gated, const char* where) const {
    MOE_CHECK(config_.ffn.gated == gated, where,
              gated ? "this layer's experts are plain MLPs: pass (up, down), not (gate, up, down)"
                    : "this layer's experts are gated: pass (gate, up, down)");
  }

  void check_forward(const float* x, Index x_stride, const float* y, Index y_stride, Index tokens,
                     const Workspace& ws) const {
    const char* where = "Layer::forward";
    MOE_CHECK(tokens >= 0, where, "token count must be >= 0");
    MOE_CHECK(tokens == 0 || (x != nullptr && y != nullptr), where, "x or y is null");
    MOE_CHECK(x_stride >= hidden_size() && y_stride >= hidden_size(), where,
              "row strides must be >= hidden_size = " + std::to_string(hidden_size()));
    MOE_CHECK(ws.max_tokens_ > 0, where, "the workspace is empty: make it with Layer::workspace(max_tokens)");
    MOE_CHECK(tokens <= ws.max_tokens_, where,
              std::to_string(tokens) + " tokens exceed the workspace's max_tokens = " + std::to_string(ws.max_tokens_));
    MOE_CHECK(ws.shape_ == shape_, where, "the workspace was made for a layer of another shape");
    for (int row = 0; row < router_rows_; ++row)
      MOE_CHECK(router_row_loaded_[std::size_t(row)], where,
                row < experts() ? "router weights are not set (set_router)"
                                : "shared expert gate " + std::to_string(row - experts()) + " is not set");
    for (int e = 0; e < routed_and_shared_experts(); ++e)
      MOE_CHECK(experts_[e].loaded(), where,
                e < experts() ? "expert " + std::to_string(e) + " has no weights (set_expert)"
                              : "shared expert " + std::to_string(e - experts()) + " has no weights");
    for (Index t = 0; t < tokens && MOE_FINITE_CHECKS; ++t)
      MOE_CHECK(detail::kernels::all_finite(x + t * x_stride, hidden_size()), where,
                "input token " + std::to_string(t) + " has NaN or Inf");
  }

  // Stage 2: group the (token, expert) pairs by expert (stages/group.hpp), then plan the work items.
  void group(Index tokens, Workspace& ws) const {
    stages::GroupedPairs pairs{ws.counts_.data(),         ws.offsets_.data(),         ws.fill_.data(),
                               ws.assigned_token_.data(), ws.assigned_weight_.data(), ws.dropped_token_.data(),
                               ws.dropped_weight_.data()};
    const stages::Group grouping{Routing::kName, passes_dropped_through(), experts(), shared_experts(), top_k()};
    grouping.run(tokens, ws.ids_.data(), ws.weights_.data(), ws.shared_weights_.data(), pairs);
    ws.dropped_count_ = pairs.dropped;
    ws.pass_through_count_ = pairs.passed_through;
    ws.item_count_ = stages::ExpertPass<Precision>(experts_).plan(ws.counts_.data(), detail::team_size(ws.threads_),
                                                                  ws.hidden_offset_.data(), ws.items_.data());
  }

  LayerConfig config_;
  Routing routing_;
  Workspace::Shape shape_;        // what a workspace for this layer holds
  ExpertSet<Precision> experts_;  // routed experts, then shared experts
  detail::kernels::PanelMatrix<f32> router_;
  int router_rows_ = 0;
  std::vector<bool> router_row_loaded_;
  std::vector<float> router_bias_;  // logits_width floats, or empty: no bias
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
