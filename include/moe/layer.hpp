// moe/layer.hpp: the MoE layer and its fused sparse forward pass.
//
// A forward pass has four stages, in this order:
//   route    router logits for every token (one tiled GEMM over the packed router), then the routing
//            policy picks each token's experts and weights;
//   group    a counting sort of the (token, expert) pairs by expert, with prefix sums, so each expert
//            sees its tokens as one contiguous list;
//   compute  per (expert, panel) work item, the input projection of the expert's tokens with the
//            activation fused into its epilogue (act(gate) * up for gated experts), into scratch;
//   combine  per output panel (per run of consecutive panels at decode), every expert's down projection
//            with the weighted scatter-add into the output fused into its epilogue.
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
#include "expert.hpp"
#include "kernels/activation.hpp"
#include "kernels/gemm.hpp"
#include "kernels/reduce.hpp"
#include "precision.hpp"
#include "router.hpp"
#include "routing_stats.hpp"
#include "simd.hpp"
#include "workspace.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// The run-time shape of a layer. Sizes are the model's: hidden_size is the token width, ffn_size an
// expert's hidden width (Hugging Face's intermediate_size / moe_intermediate_size).
struct LayerConfig {
  Index hidden_size = 0;
  Index ffn_size = 0;
  int num_experts = 0;  // routed experts; may be left 0 when the Layer fixes it at compile time
  int top_k = 0;        // experts per token; may be left 0 when fixed at compile time or dense
  FfnType ffn = SwiGLU;
  // Always-on experts, added to the routed output. Each has shared_ffn_size hidden units (0: ffn_size)
  // and, with shared_expert_gate, is scaled per token by sigmoid(x . w_gate) (Qwen2-MoE).
  int num_shared_experts = 0;
  Index shared_ffn_size = 0;
  bool shared_expert_gate = false;
};

// What a forward pass routed: for each token its experts and their weights (experts_per_token() slots of
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
  int experts_per_token() const { return slots_; }
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
  static_assert(is_supported_precision<Precision>::value, "moe::Layer: this weight precision is not implemented");

public:
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using WeightRef = Eigen::Ref<const RowMatrix>;
  using WeightPrecision = Precision;
  static constexpr int kExperts = Experts;
  // Experts each token visits: TopK, or every expert under a dense policy.
  static constexpr int kSlots = Routing::kSelectsAll ? Experts : TopK;
  static_assert(noexcept(std::declval<const Routing&>().template route<kSlots>(nullptr, 0, 0, nullptr, nullptr)),
                "moe::Layer: Routing::route must be noexcept (it runs inside an OpenMP parallel region)");

  explicit Layer(const LayerConfig& config, Routing routing = Routing{}) : config_(config), routing_(routing) {
    const char* where = "Layer";
    MOE_CHECK(config.hidden_size > 0, where, "hidden_size must be positive, got " + std::to_string(config.hidden_size));
    MOE_CHECK(config.ffn_size > 0, where, "ffn_size must be positive, got " + std::to_string(config.ffn_size));
    if (Experts != Dynamic && config_.num_experts == 0) config_.num_experts = Experts;
    MOE_CHECK(Experts == Dynamic || config_.num_experts == Experts, where,
              "num_experts is " + std::to_string(config_.num_experts) + " but the Layer type fixes " +
                  std::to_string(Experts));
    MOE_CHECK(config_.num_experts >= 1, where, "num_experts must be >= 1, got " + std::to_string(config_.num_experts));
    const int experts = config_.num_experts;
    if (Routing::kSelectsAll) {
      MOE_CHECK(config_.top_k == 0 || config_.top_k == experts, where,
                std::string(Routing::kName) + " runs every expert: top_k must be 0 or num_experts, got " +
                    std::to_string(config_.top_k));
      config_.top_k = experts;
    } else {
      if (TopK != Dynamic && config_.top_k == 0) config_.top_k = TopK;
      MOE_CHECK(TopK == Dynamic || config_.top_k == TopK, where,
                "top_k is " + std::to_string(config_.top_k) + " but the Layer type fixes " + std::to_string(TopK));
      MOE_CHECK(
          config_.top_k >= 1 && config_.top_k <= experts, where,
          "top_k must be in [1, num_experts = " + std::to_string(experts) + "], got " + std::to_string(config_.top_k));
    }
    MOE_CHECK(config_.num_shared_experts >= 0 && config_.num_shared_experts <= (1 << 16), where,
              "num_shared_experts must be in [0, 65536], got " + std::to_string(config_.num_shared_experts));
    MOE_CHECK(experts <= (1 << 16), where, "num_experts must be <= 65536, got " + std::to_string(experts));
    MOE_CHECK(config_.shared_ffn_size >= 0, where, "shared_ffn_size must be >= 0");
    if constexpr (detail::has_check<Routing>::value) routing_.check(experts, config_.top_k);
    if (config_.shared_ffn_size == 0) config_.shared_ffn_size = config_.ffn_size;
    switch (config_.ffn.activation) {
      case Activation::SiLU:
      case Activation::GELU:
      case Activation::GELUTanh:
      case Activation::ReLU:
        break;
      default:
        detail::fail(where, "unknown activation " + std::to_string(int(config_.ffn.activation)));
    }

    experts_.resize(static_cast<std::size_t>(experts + config_.num_shared_experts));
    router_rows_ = experts + (config_.shared_expert_gate ? config_.num_shared_experts : 0);
    router_.resize(router_rows_, config_.hidden_size);
    router_row_loaded_.assign(static_cast<std::size_t>(router_rows_), false);

    shape_.hidden_size = config_.hidden_size;
    shape_.logits_width = router_.panels() * kPanel;
    shape_.slots = slots();
    shape_.experts = experts;
    shape_.shared_experts = config_.num_shared_experts;
    shape_.hidden_row_floats =
        Index(slots()) * ffn_padded(0) + Index(shared_experts()) * (shared_experts() ? ffn_padded(experts) : 0);
    for (int e = 0; e < expert_count(); ++e) shape_.input_items += input_panels(e);
    if (kInt8 || kBf16)
      shape_.quantized_width = simd::round_up(config_.hidden_size, kernels::kActivationStep<Precision>);
    shape_.activation_coding = kInt8 ? 1 : (kBf16 ? 2 : 0);
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
    experts_[std::size_t(e)].load(config_.ffn, config_.hidden_size, config_.ffn_size, gate, up, down,
                                  "Layer::set_expert", "expert " + std::to_string(e));
  }
  void set_expert(int e, const WeightRef& gate, const WeightRef& up, const WeightRef& down) {
    set_expert(e, view(gate), view(up), view(down));
  }
  // A plain (ungated) MLP expert: up is ffn_size x hidden_size (Switch's wi), down hidden_size x ffn_size (wo).
  void set_expert(int e, const WeightView& up, const WeightView& down) {
    check_index(e, config_.num_experts, "Layer::set_expert", "expert");
    require_gated(false, "Layer::set_expert");
    experts_[std::size_t(e)].load(config_.ffn, config_.hidden_size, config_.ffn_size, WeightView{}, up, down,
                                  "Layer::set_expert", "expert " + std::to_string(e));
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

  // ---- shape ----

  const LayerConfig& config() const { return config_; }
  const Routing& routing() const { return routing_; }
  Index hidden_size() const { return config_.hidden_size; }
  Index ffn_size() const { return config_.ffn_size; }
  int experts() const { return config_.num_experts; }
  // Experts each token visits (num_experts under a dense policy).
  int top_k() const { return config_.top_k; }
  int shared_experts() const { return config_.num_shared_experts; }
  // Bytes of packed weights one routed expert streams when it runs.
  double expert_bytes() const { return experts_.front().bytes(); }

  // Scratch for passes of up to max_tokens tokens, with `threads` threads (0: OpenMP's default).
  Workspace workspace(Index max_tokens, int threads = 0) const {
    MOE_CHECK(max_tokens >= 1, "Layer::workspace", "max_tokens must be >= 1, got " + std::to_string(max_tokens));
    // (token, expert) pairs are counted in int.
    const Index per_token = slots() + shared_experts();
    MOE_CHECK(max_tokens <= ((Index(1) << 30) - 1) / per_token, "Layer::workspace",
              "max_tokens = " + std::to_string(max_tokens) + " times " + std::to_string(per_token) +
                  " experts per token exceeds 2^30 (token, expert) pairs");
    Workspace ws;
    ws.set_threads(threads);
    ws.max_tokens_ = max_tokens;
    ws.shape_ = shape_;
    const Index pairs = max_tokens * per_token;
    ws.logits_.resize(max_tokens * shape_.logits_width);
    ws.ids_.resize(max_tokens * slots());
    ws.weights_.resize(max_tokens * slots());
    ws.shared_weights_.resize(max_tokens * shared_experts());
    ws.counts_.resize(expert_count());
    ws.offsets_.resize(expert_count() + 1);
    ws.fill_.resize(expert_count());
    ws.assigned_token_.resize(pairs);
    ws.assigned_weight_.resize(pairs);
    ws.dropped_token_.resize(max_tokens * slots());
    ws.dropped_weight_.resize(max_tokens * slots());
    ws.hidden_offset_.resize(expert_count());
    ws.hidden_.resize(kBf16 || kQuantizeInEpilogue ? 0 : max_tokens * shape_.hidden_row_floats);
    ws.items_.resize(3 * shape_.input_items);
    const Index quantized = kInt8 ? max_tokens * shape_.quantized_width : 0;
    const Index hidden_quantized = kInt8 ? max_tokens * shape_.hidden_row_floats : 0;
    ws.input_codes_.resize(quantized);
    ws.input_scales_.resize(quantized / kernels::kActivationBlock);
    ws.input_sums_.resize(quantized / kernels::kActivationBlock);
    ws.hidden_codes_.resize(hidden_quantized);
    ws.hidden_scales_.resize(hidden_quantized / kernels::kActivationBlock);
    ws.hidden_sums_.resize(hidden_quantized / kernels::kActivationBlock);
    ws.input_bf16_.resize(kBf16 ? max_tokens * shape_.quantized_width : 0);
    ws.hidden_bf16_.resize(kBf16 ? max_tokens * shape_.hidden_row_floats : 0);
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
    route(x, x_stride, tokens, token_ids, ws);
    group(tokens, ws);
    kernels::with_activation(config_.ffn.activation, [&](auto activation) {
      compute_and_combine<decltype(activation)::value>(x, x_stride, y, y_stride, tokens, ws);
    });
    // Finite inputs and weights can still overflow f32 inside an expert; say so rather than return Inf.
    for (Index t = 0; t < tokens; ++t)
      MOE_CHECK(kernels::all_finite(y + t * y_stride, hidden_size()), "Layer::forward",
                "the output of token " + std::to_string(t) +
                    " overflowed to Inf or NaN inside an expert (activations too large for f32)");
    // Only a pass that succeeded counts (y, and x when in place, are unspecified after a throw).
    if (stats != nullptr)
      stats->add(ws.logits_.data(), shape_.logits_width, tokens, ws.ids_.data(), ws.weights_.data(), slots());
    return RoutingResult(tokens, slots(), experts(), ws.ids_.data(), ws.weights_.data(), ws.counts_.data(),
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
    for (int e = 0; e < expert_count(); ++e) {
      const double count = e < experts() ? double(routed.tokens_per_expert()(e)) : tokens;
      if (count == 0) continue;
      const double ffn = double(e < experts() ? config_.ffn_size : config_.shared_ffn_size);
      cost.weight_bytes += experts_[std::size_t(e)].bytes();
      cost.flops += 2.0 * count * double(hidden_size()) * ffn * matrices;
    }
    return cost;
  }

private:
  using Expert = ExpertWeights<Precision>;
  using Row = kernels::ActivationRow<Precision>;  // what the expert kernels read a token's activations as
  static constexpr bool kInt8 = int8_activations<Precision>::value;
  static constexpr bool kBf16 = bf16_activations<Precision>::value;
  // Where half a gated panel is whole int8 activation blocks (AVX-512: 32 floats, one block), the input
  // projection's epilogue quantises each hidden block as it makes it: no f32 hidden rows, and no separate
  // pass (nor its barrier) before the down projection. Elsewhere that pass quantises the f32 rows.
  static constexpr bool kQuantizeInEpilogue = kInt8 && (kernels::kPanelColumns / 2) % kernels::kActivationBlock == 0;
  static constexpr int kRows = kernels::kTileRows;        // token rows per expert tile
  static constexpr int kRouterRows = kernels::kTileRows;  // the router is always f32
  static constexpr int kWidth = simd::kWidth;
  static constexpr Index kPanel = kernels::kPanelColumns;

  static WeightView view(const WeightRef& m) { return WeightView(m.data(), m.rows(), m.cols(), m.outerStride()); }

  int expert_count() const { return config_.num_experts + config_.num_shared_experts; }
  bool passes_dropped_through() const {
    if constexpr (detail::has_pass_through<Routing>::value)
      return routing_.passes_dropped_through();
    else
      return false;
  }
  int slots() const { return config_.top_k; }
  Expert& shared(int s) { return experts_[std::size_t(config_.num_experts + s)]; }
  Index ffn_of(int e) const { return e < experts() ? config_.ffn_size : config_.shared_ffn_size; }
  Index ffn_padded(int e) const { return Expert::ffn_padded(ffn_of(e), config_.ffn.gated); }
  Index input_panels(int e) const { return ffn_padded(e) / Expert::hidden_per_panel(config_.ffn.gated); }

  void check_router_row(int row, const float* w) const {
    MOE_CHECK(kernels::all_finite(w, config_.hidden_size), "Layer::set_router",
              row < experts() ? "router row " + std::to_string(row) + " has NaN or Inf"
                              : "shared expert gate " + std::to_string(row - experts()) + " has NaN or Inf");
  }
  void set_router_row(int row, const float* w) {
    router_.set_row(row, w, config_.hidden_size);
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
    for (int e = 0; e < expert_count(); ++e)
      MOE_CHECK(experts_[std::size_t(e)].loaded(), where,
                e < experts() ? "expert " + std::to_string(e) + " has no weights (set_expert)"
                              : "shared expert " + std::to_string(e - experts()) + " has no weights");
    for (Index t = 0; t < tokens; ++t)
      MOE_CHECK(kernels::all_finite(x + t * x_stride, hidden_size()), where,
                "input token " + std::to_string(t) + " has NaN or Inf");
  }

  static int thread_count(const Workspace& ws) {
    return ws.threads_ > 0 ? std::min(ws.threads_, MOE_MAX_THREADS) : default_thread_count();
  }

  // Runs body, whose worksharing loops split among the team that runs it, on a team of `threads`. With
  // one thread it calls body directly: a parallel region of one thread still costs what a fork and a join
  // do (libgomp ends every barrier with a futex wake, a system call), a visible share of a small layer's
  // decode pass (docs/PERFORMANCE.md, decision "A pass on one thread runs without an OpenMP region").
  // Directly is only right when the calling thread's team is a team of one; inside a caller's parallel
  // region body's loops would be split among the caller's threads, so there a region (nested: one thread)
  // is kept.
  template <class Body>
  static void run_on_team(int threads, Body&& body) {
#if MOE_HAS_OPENMP
    if (threads > 1 || omp_get_num_threads() > 1) {
      MOE_OMP(omp parallel num_threads(threads))
      body();
      return;
    }
#endif
    (void)threads;
    body();
  }

  // Stage 1: router logits (and shared-expert gate logits) for every token, then the routing policy.
  void route(const float* x, Index x_stride, Index tokens, const std::int64_t* token_ids, Workspace& ws) const {
    const Index width = shape_.logits_width;
    const Index panels = router_.panels();
    const Index blocks = (tokens + kRouterRows - 1) / kRouterRows;
    const int experts = this->experts();
    const int slots = this->slots();
    const int shared = shared_experts();
    float* logits = ws.logits_.data();
    Index bad_token = -1;
    // One tile of tokens by one panel of logits (decode with up to 64 experts) is one item: a team of
    // threads would add a fork, two barriers and a join and split nothing.
    const int threads = blocks * panels > 1 ? thread_count(ws) : 1;
    run_on_team(threads, [&] {
      MOE_OMP(omp for schedule(static))
      for (Index item = 0; item < blocks * panels; ++item) {
        const Index first = item / panels * kRouterRows;
        const Index p = item % panels;
        const int count = int(std::min<Index>(kRouterRows, tokens - first));
        const float* rows[kRouterRows];
        for (int r = 0; r < count; ++r) rows[r] = x + (first + r) * x_stride;
        kernels::multiply_rows(rows, count, router_.panel(p), hidden_size(), [&](auto& acc, int n) {
          for (int r = 0; r < n; ++r)
            MOE_UNROLL for (int v = 0; v < kernels::kTileVectors; ++v)
                simd::store(logits + (first + r) * width + p * kPanel + v * kWidth, acc[r][v]);
        });
      }
      MOE_OMP(omp for schedule(static) nowait)  // the end of the team's region waits
      for (Index t = 0; t < tokens; ++t) {
        const float* row = logits + t * width;
        if (!kernels::all_finite(row, router_rows_)) {
          MOE_OMP(omp critical(moe_bad_token))
          bad_token = bad_token < 0 ? t : std::min(bad_token, t);  // the first, whatever the schedule
          continue;
        }
        routing_.template route<kSlots>(row, experts, slots, ws.ids_.data() + t * slots,
                                        ws.weights_.data() + t * slots);
        if constexpr (kInt8) {
          const Index width = shape_.quantized_width, blocks_per_row = width / kernels::kActivationBlock;
          kernels::quantize_activations(x + t * x_stride, hidden_size(), width, ws.input_codes_.data() + t * width,
                                        ws.input_scales_.data() + t * blocks_per_row,
                                        ws.input_sums_.data() + t * blocks_per_row);
        }
        if constexpr (kBf16) {
          const Index width = shape_.quantized_width;
          kernels::round_activations_bf16(x + t * x_stride, hidden_size(), width, ws.input_bf16_.data() + t * width);
        }
        for (int s = 0; s < shared; ++s)
          ws.shared_weights_[t * shared + s] =
              config_.shared_expert_gate ? 1.0f / (1.0f + std::exp(-row[experts + s])) : 1.0f;
      }
    });
    MOE_CHECK(bad_token < 0, "Layer::forward",
              "router logits of token " + std::to_string(bad_token) + " overflowed to Inf or NaN");
    if constexpr (detail::has_finish_batch<Routing>::value) {
      // Scratch: fill_ (one int per expert) and assigned_token_ (at least max_tokens) are free until group().
      routing_.finish_batch(RoutingBatch{tokens, experts, slots, logits, width, token_ids, ws.ids_.data(),
                                         ws.weights_.data(), ws.fill_.data(), ws.assigned_token_.data()});
    } else {
      (void)token_ids;
    }
  }

  // Stage 2: counting sort of (token, expert) pairs by expert; tokens stay in increasing order.
  void group(Index tokens, Workspace& ws) const {
    const int experts = this->experts();
    const int count = expert_count();
    const int slots = this->slots();
    const int shared = shared_experts();
    int* counts = ws.counts_.data();
    int* offsets = ws.offsets_.data();
    int* fill = ws.fill_.data();
    const int* ids = ws.ids_.data();
    std::fill(counts, counts + count, 0);
    // A policy's output is checked before anything trusts it: ids in range, distinct per token (fill
    // holds the last token that chose each expert), weights finite.
    std::fill(fill, fill + count, -1);
    const bool pass_through = passes_dropped_through();
    ws.dropped_count_ = 0;
    ws.pass_through_count_ = 0;
    for (Index t = 0; t < tokens; ++t) {
      for (int j = 0; j < slots; ++j) {
        const int e = ids[t * slots + j];
        if (e == kNoExpert) continue;
        if (e == kDroppedExpert) {
          const float weight = ws.weights_[t * slots + j];
          MOE_CHECK(std::isfinite(weight), "Layer::forward",
                    std::string("the routing policy ") + Routing::kName + " gave token " + std::to_string(t) +
                        " a non-finite weight");
          ++ws.dropped_count_;
          if (pass_through) {
            ws.dropped_token_[ws.pass_through_count_] = int(t);
            ws.dropped_weight_[ws.pass_through_count_++] = weight;
          }
          continue;
        }
        MOE_CHECK(e >= 0 && e < experts, "Layer::forward",
                  std::string("the routing policy ") + Routing::kName + " chose expert " + std::to_string(e) +
                      " for token " + std::to_string(t) + ", out of range [0, " + std::to_string(experts) + ")");
        MOE_CHECK(fill[e] != int(t), "Layer::forward",
                  std::string("the routing policy ") + Routing::kName + " chose expert " + std::to_string(e) +
                      " twice for token " + std::to_string(t));
        MOE_CHECK(std::isfinite(ws.weights_[t * slots + j]), "Layer::forward",
                  std::string("the routing policy ") + Routing::kName + " gave token " + std::to_string(t) +
                      " a non-finite weight");
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
        ws.assigned_token_[slot] = int(t);
        ws.assigned_weight_[slot] = ws.weights_[t * slots + j];
      }
    }
    for (int s = 0; s < shared; ++s) {
      for (Index t = 0; t < tokens; ++t) {
        const int slot = fill[experts + s]++;
        ws.assigned_token_[slot] = int(t);
        ws.assigned_weight_[slot] = ws.shared_weights_[t * shared + s];
      }
    }
    // Read only for busy experts (so busy >= 1, and at least one item each); the max spares an idle batch a
    // division by zero.
    const int busy = int(std::count_if(counts, counts + count, [](int c) { return c > 0; }));
    const Index items_per_expert = (kItemsPerThread * thread_count(ws) + busy - 1) / std::max(busy, 1);
    Index hidden = 0;
    int items = 0;
    for (int e = 0; e < count; ++e) {
      ws.hidden_offset_[e] = hidden;
      hidden += Index(counts[e]) * ffn_padded(e);
      if (counts[e] == 0) continue;
      const Index panels = input_panels(e), span = item_span(e, counts[e], items_per_expert);
      for (Index p = 0; p < panels; p += span) {
        ws.items_[3 * items] = e;
        ws.items_[3 * items + 1] = int(p);
        ws.items_[3 * items + 2] = int(std::min(span, panels - p));
        ++items;
      }
    }
    ws.item_count_ = items;
  }

  // Stages 3 and 4, in one parallel region: compute every (expert, input panel) item, then combine every
  // output panel. Scheduled dynamically: items of busy experts cost more, and which thread runs an item
  // never changes what it computes. With more than one tile of tokens, a thread claims its next item when
  // it starts one, so that the current item's later tiles can bring the next one's panels into L2
  // (NextWeights); with one tile of tokens (decode) there is no later tile to do that, and a thread claims
  // an item only when it is free, which keeps the threads' last items balanced.
  template <Activation A>
  void compute_and_combine(const float* x, Index x_stride, float* y, Index y_stride, Index tokens,
                           Workspace& ws) const {
    const int items = ws.item_count_;
    const Index out_panels = (hidden_size() + kPanel - 1) / kPanel;
    const int threads = thread_count(ws);
    std::atomic<int> unclaimed{0};  // the first item no thread has claimed
    run_on_team(threads, [&] {
      // Item `item`, two panels a call, each call bringing in the panels computed after its own: the
      // item's next two, or the first two of item `following` (none when following == items).
      auto compute_item = [&](int item, int following) {
        const int e = ws.items_[3 * item];
        for (int p = ws.items_[3 * item + 1], last = p + ws.items_[3 * item + 2]; p < last; p += 2) {
          kernels::NextWeights next;
          if (p + 2 < last)
            next = input_panels_from(e, p + 2, std::min(2, last - p - 2));
          else if (following < items)
            next = input_panels_from(ws.items_[3 * following], ws.items_[3 * following + 1],
                                     std::min(2, ws.items_[3 * following + 2]));
          compute<A>(e, p, std::min(2, last - p), x, x_stride, ws, next);
        }
      };
      if (tokens <= kRows) {
        MOE_OMP(omp for schedule(dynamic))
        for (int item = 0; item < items; ++item) compute_item(item, items);
      } else {
        for (int item = unclaimed.fetch_add(1, std::memory_order_relaxed); item < items;) {
          const int following = unclaimed.fetch_add(1, std::memory_order_relaxed);
          compute_item(item, following);
          item = following;
        }
        MOE_OMP(omp barrier)  // the combine reads every item's hidden rows
      }
      if constexpr (kInt8 && !kQuantizeInEpilogue) {
        // The down projections read the hidden rows as int8: quantise each once, every block of it.
        for (int e = 0; e < expert_count(); ++e) {
          const Index ffn = ffn_padded(e);
          MOE_OMP(omp for schedule(static) nowait)
          for (int i = 0; i < ws.counts_[e]; ++i) {
            const Index start = ws.hidden_offset_[e] + i * ffn, block = start / kernels::kActivationBlock;
            kernels::quantize_activations(ws.hidden_.data() + start, ffn, ffn, ws.hidden_codes_.data() + start,
                                          ws.hidden_scales_.data() + block, ws.hidden_sums_.data() + block);
          }
        }
        MOE_OMP(omp barrier)
      }
      const Index span = combine_span(tokens, out_panels, threads);
      MOE_OMP(omp for schedule(dynamic) nowait)  // the end of the team's region waits
      for (Index p = 0; p < out_panels; p += span)
        combine(p, std::min(out_panels, p + span), x, x_stride, y, y_stride, tokens, ws);
    });
  }

  // The codes of expert e's input panels [p, p + panels), to bring in ahead (kernels::NextWeights).
  kernels::NextWeights input_panels_from(int e, Index p, int panels) const {
    const auto& projection = experts_[std::size_t(e)].input_projection();
    return projection.codes_from(p, 0, panels * projection.depth());
  }

  // Expert e's input projection for `panels` (1 or 2) consecutive panels from p on, for all its tokens,
  // with the activation in the epilogue: act(gate) * up for gated experts, act(up) for plain ones, into the
  // expert's hidden rows. kernels::multiply_panels runs a tile of one or two tokens over two panels at once.
  // The tiles after the first bring `next` into L2.
  template <Activation A>
  void compute(int e, Index p, int panels, const float* x, Index x_stride, Workspace& ws,
               kernels::NextWeights next) const {
    constexpr int kHalf = kernels::kTileVectors / 2;
    const bool gated = config_.ffn.gated;
    const Index ffn = ffn_padded(e);
    const auto& projection = experts_[std::size_t(e)].input_projection();
    const Index hidden = ws.hidden_offset_[e] + p * Expert::hidden_per_panel(gated);
    // A row's hidden values from this panel, h[0, count), go to the f32 rows, or straight to the bf16 or
    // int8 rows the down projection reads (at and count are whole blocks: Expert::ffn_padded).
    auto put = [&ws](Index at, const simd::Vec* h, int count) {
      for (int v = 0; v < count; ++v) {
        if constexpr (kBf16) {
          simd::store_bf16(ws.hidden_bf16_.data() + at + v * kWidth, h[v]);
        } else if constexpr (kQuantizeInEpilogue) {
          if (v % kernels::kBlockVectors != 0) continue;
          const Index start = at + v * kWidth, block = start / kernels::kActivationBlock;
          kernels::quantize_block(h + v, ws.hidden_codes_.data() + start, ws.hidden_scales_.data() + block,
                                  ws.hidden_sums_.data() + block);
        } else {
          simd::store(ws.hidden_.data() + at + v * kWidth, h[v]);
        }
      }
    };
    const kernels::PanelRef<Precision> refs[2] = {projection.panel(p), projection.panel(p + panels - 1)};
    const int begin = ws.offsets_[e], end = ws.offsets_[e + 1];
    for (int first = begin; first < end; first += kRows) {
      const int n = std::min(kRows, end - first);
      Row rows[kRows];
      for (int r = 0; r < n; ++r) rows[r] = input_row(x, x_stride, ws.assigned_token_[first + r], ws);
      const Index out = hidden + Index(first - begin) * ffn;
      // Panel `which` of the call's (0 or 1) yields hidden columns from out + which * hidden_per_panel.
      auto epilogue = [&](int which, auto& acc, int m) {
        const Index at = out + which * Expert::hidden_per_panel(gated);
        for (int r = 0; r < m; ++r) {
          simd::Vec h[kernels::kTileVectors];
          if (gated) {
            MOE_UNROLL for (int v = 0; v < kHalf; ++v) h[v] = kernels::activate<A>(acc[r][v]) * acc[r][v + kHalf];
            put(at + r * ffn, h, kHalf);
          } else {
            MOE_UNROLL for (int v = 0; v < kernels::kTileVectors; ++v) h[v] = kernels::activate<A>(acc[r][v]);
            put(at + r * ffn, h, kernels::kTileVectors);
          }
        }
      };
      kernels::multiply_panels(rows, n, refs, panels, hidden_size(), epilogue, prefetches(first, begin, end),
                               first == begin ? nullptr : &next);
    }
  }

  // Output panels [p_begin, p_end) of every token: zero them, then add each expert's weighted down
  // projection, experts in index order, then dropped tokens passed through (weight * x), then shared
  // experts, so each output element has one owner and a fixed summation order (whatever the panel range).
  void combine(Index p_begin, Index p_end, const float* x, Index x_stride, float* y, Index y_stride, Index tokens,
               Workspace& ws) const {
    const Index first_column = p_begin * kPanel;
    const Index columns = std::min(p_end * kPanel, hidden_size()) - first_column;
    for (Index t = 0; t < tokens; ++t) std::fill_n(y + t * y_stride + first_column, columns, 0.0f);
    for (int e = 0; e < expert_count(); ++e) {
      if (e == experts()) pass_dropped_through(first_column, columns, x, x_stride, y, y_stride, ws);
      const Index ffn = ffn_padded(e);
      const int begin = ws.offsets_[e], end = ws.offsets_[e + 1];
      if (begin == end) continue;
      // Panel by panel (two at a time: kernels::multiply_panels), each front to back: one stream through the
      // expert's contiguous panels.
      const auto& projection = experts_[std::size_t(e)].down_projection();
      for (Index p = p_begin; p < p_end; p += 2) {
        const int panels = p + 1 < p_end ? 2 : 1;
        for (Index k0 = 0; k0 < ffn; k0 += kernels::kDepthBlock) {
          const Index depth = std::min(kernels::kDepthBlock, ffn - k0);
          const kernels::PanelRef<Precision> refs[2] = {projection.panel(p, k0), projection.panel(p + panels - 1, k0)};
          kernels::NextWeights next = end - begin > kRows ? down_block_after(e, p, k0, ws) : kernels::NextWeights{};
          for (int first = begin; first < end; first += kRows) {
            const int n = std::min(kRows, end - first);
            Row rows[kRows];
            for (int r = 0; r < n; ++r) rows[r] = hidden_row(e, first - begin + r, k0, ws);
            // Panel p + which's sums, added to its columns of each row's token.
            auto epilogue = [&](int which, auto& acc, int m) {
              const Index column = (p + which) * kPanel;
              const Index width = std::min(kPanel, hidden_size() - column);
              for (int r = 0; r < m; ++r)
                add_weighted(acc[r], ws.assigned_weight_[first + r],
                             y + ws.assigned_token_[first + r] * y_stride + column, width);
            };
            kernels::multiply_panels(rows, n, refs, panels, depth, epilogue, prefetches(first, begin, end),
                                     first == begin ? nullptr : &next);
          }
        }
      }
    }
    if (shared_experts() == 0) pass_dropped_through(first_column, columns, x, x_stride, y, y_stride, ws);
  }

  // The down-projection codes combine reads after expert e's depth block from k0 on of panel p: its next
  // depth block, or else the first block of the next expert with tokens. Only panel p's: a pair of panels
  // is combined only with one tile of tokens, which has no later tile to bring anything in.
  kernels::NextWeights down_block_after(int e, Index p, Index k0, const Workspace& ws) const {
    const Index k1 = k0 + kernels::kDepthBlock;
    if (k1 < ffn_padded(e))
      return experts_[std::size_t(e)].down_projection().codes_from(p, k1,
                                                                   std::min(kernels::kDepthBlock, ffn_padded(e) - k1));
    for (int f = e + 1; f < expert_count(); ++f)
      if (ws.offsets_[f + 1] > ws.offsets_[f])
        return experts_[std::size_t(f)].down_projection().codes_from(p, 0,
                                                                     std::min(kernels::kDepthBlock, ffn_padded(f)));
    return {};
  }

  // Whether the tile of tokens from `first` on, of an expert whose tokens are [begin, end), asks
  // kernels::multiply_panels to prefetch the panels (tiles of 1-2 rows always do): the first tile reads them
  // from memory, the later ones from L2. Only with at most two tiles, where the first one's stream is at
  // least half of the panels' reads; with more tiles it is a smaller share, and prefetching it showed no
  // gain (docs/PERFORMANCE.md, decision "The first token tile prefetches").
  static bool prefetches(int first, int begin, int end) { return first == begin && end - begin <= 2 * kRows; }

  // Consecutive output panels one combine item takes. With one tile of tokens an item streams each
  // expert's down-projection panels once, and consecutive panels are contiguous: for short panels, an item
  // of several reads each expert as one stream of up to kStreamBytes (item_span explains why that
  // matters), while two items per thread keep the threads balanced (every output panel costs the same).
  // With more tokens one panel per item keeps it in L2 across the token tiles.
  Index combine_span(Index tokens, Index out_panels, int threads) const {
    if (tokens > kRows) return 1;
    const double panel_bytes = experts_.front().down_projection().bytes() / double(out_panels);
    const Index wanted = std::max<Index>(1, Index(kStreamBytes / panel_bytes));
    return std::max<Index>(1, std::min(wanted, out_panels / (2 * Index(threads))));
  }

  // y[t] += weight * x[t] over columns [column, column + width) for each dropped choice, when the policy
  // passes dropped tokens through.
  static void pass_dropped_through(Index column, Index width, const float* x, Index x_stride, float* y, Index y_stride,
                                   const Workspace& ws) {
    for (int i = 0; i < ws.pass_through_count_; ++i) {
      const Index t = ws.dropped_token_[i];
      const float weight = ws.dropped_weight_[i];
      for (Index c = column; c < column + width; ++c)
        y[t * y_stride + c] = std::fma(weight, x[t * x_stride + c], y[t * y_stride + c]);
    }
  }

  // Consecutive input panels one work item computes. With one tile of tokens an item streams its panels
  // once, and a panel of a 1-byte precision is short (64 KiB for a 1024-deep projection): a stream that
  // short spends much of its time ramping up the hardware prefetcher, so items then take consecutive panels
  // (contiguous in memory) up to kStreamBytes, while leaving at least `items` items of the expert for the
  // threads. group() asks for kItemsPerThread items per thread over all busy experts, not per expert: with
  // 8 busy fine-grained experts (16 panels each) a rule of 8 items per expert cut every stream to 2 panels,
  // each paying that ramp-up. With more tokens a panel is reused across tiles and one panel per item keeps
  // it in L2 (docs/PERFORMANCE.md, decision "Decode work items: long streams, counted per thread").
  static constexpr double kStreamBytes = 256 * 1024;
  static constexpr Index kItemsPerThread = 8;
  Index item_span(int e, int tokens, Index items) const {
    if (tokens > kRows) return 1;
    const Index panels = input_panels(e);
    const double panel_bytes = experts_[std::size_t(e)].input_projection().bytes() / double(panels);
    const Index wanted = std::max<Index>(1, Index(kStreamBytes / panel_bytes));
    return std::max<Index>(1, std::min(wanted, panels / items));
  }

  // Token t's input row as the expert kernels read it: x itself, or its int8 or bf16 codes.
  Row input_row(const float* x, Index x_stride, int t, const Workspace& ws) const {
    if constexpr (kInt8) {
      const Index width = shape_.quantized_width, block = t * width / kernels::kActivationBlock;
      return {ws.input_codes_.data() + t * width, ws.input_scales_.data() + block, ws.input_sums_.data() + block};
    } else if constexpr (kBf16) {
      return {ws.input_bf16_.data() + t * shape_.quantized_width};
    } else {
      return x + t * x_stride;
    }
  }
  // The i-th hidden row of expert e (its i-th token), from depth k0 on (a multiple of the depth block).
  Row hidden_row(int e, Index i, Index k0, const Workspace& ws) const {
    const Index start = ws.hidden_offset_[e] + i * ffn_padded(e) + k0;
    if constexpr (kInt8) {
      const Index block = start / kernels::kActivationBlock;
      return {ws.hidden_codes_.data() + start, ws.hidden_scales_.data() + block, ws.hidden_sums_.data() + block};
    } else if constexpr (kBf16) {
      return {ws.hidden_bf16_.data() + start};
    } else {
      return ws.hidden_.data() + start;
    }
  }

  // out[0, width) += weight * lanes of acc.
  static MOE_ALWAYS_INLINE void add_weighted(const simd::Vec (&acc)[kernels::kTileVectors], float weight, float* out,
                                             Index width) {
    if (width == kPanel) {
      const simd::Vec w = simd::broadcast(weight);
      MOE_UNROLL for (int v = 0; v < kernels::kTileVectors; ++v)
          simd::store(out + v * kWidth, simd::fma(w, acc[v], simd::load(out + v * kWidth)));
    } else {
      // The last panel of a hidden size that is not a multiple of it: the same sums, lane by lane.
      alignas(64) float lanes[kPanel];
      MOE_UNROLL for (int v = 0; v < kernels::kTileVectors; ++v) simd::store(lanes + v * kWidth, acc[v]);
      for (Index c = 0; c < width; ++c) out[c] = std::fma(weight, lanes[c], out[c]);
    }
  }

  LayerConfig config_;
  Routing routing_;
  Workspace::Shape shape_;       // what a workspace for this layer holds
  std::vector<Expert> experts_;  // routed experts, then shared experts
  kernels::PanelMatrix<f32> router_;
  int router_rows_ = 0;
  std::vector<bool> router_row_loaded_;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
