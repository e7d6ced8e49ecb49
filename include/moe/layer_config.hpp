// moe/layer_config.hpp: the run-time shape of an MoE layer.
#pragma once

#include <cmath>
#include <string>

#include "config.hpp"
#include "expert.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// The most routed (and shared) experts a layer takes; io/ checks a config.json against it before naming a
// single expert tensor.
inline constexpr int kMaxExperts = 1 << 16;

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
  // Llama 4: each routed expert runs on its token scaled by the routing weight, expert(w x), and its output
  // is added unweighted; otherwise (every other family) w expert(x) is added.
  bool scale_expert_input = false;
};

namespace detail {

// Checks the sizes in config for a Layer whose type fixes the expert count and top-k to fixed_experts and
// fixed_top_k (or Dynamic), under a policy that selects every expert or not, and fills what is left to the
// type (0 experts or top-k where the type fixes them; top_k = num_experts under a dense policy). Throws
// moe::Error naming the first problem. The Layer then has its policy check the counts, and calls
// finish_config.
inline void check_config_sizes(LayerConfig& config, int fixed_experts, int fixed_top_k, bool selects_all,
                               const char* policy) {
  const char* where = "Layer";
  MOE_CHECK(config.hidden_size > 0, where, "hidden_size must be positive, got " + std::to_string(config.hidden_size));
  MOE_CHECK(config.ffn_size > 0, where, "ffn_size must be positive, got " + std::to_string(config.ffn_size));
  if (fixed_experts != Dynamic && config.num_experts == 0) config.num_experts = fixed_experts;
  MOE_CHECK(fixed_experts == Dynamic || config.num_experts == fixed_experts, where,
            "num_experts is " + std::to_string(config.num_experts) + " but the Layer type fixes " +
                std::to_string(fixed_experts));
  MOE_CHECK(config.num_experts >= 1, where, "num_experts must be >= 1, got " + std::to_string(config.num_experts));
  const int experts = config.num_experts;
  if (selects_all) {
    MOE_CHECK(config.top_k == 0 || config.top_k == experts, where,
              std::string(policy) + " runs every expert: top_k must be 0 or num_experts, got " +
                  std::to_string(config.top_k));
    config.top_k = experts;
  } else {
    if (fixed_top_k != Dynamic && config.top_k == 0) config.top_k = fixed_top_k;
    MOE_CHECK(fixed_top_k == Dynamic || config.top_k == fixed_top_k, where,
              "top_k is " + std::to_string(config.top_k) + " but the Layer type fixes " + std::to_string(fixed_top_k));
    MOE_CHECK(
        config.top_k >= 1 && config.top_k <= experts, where,
        "top_k must be in [1, num_experts = " + std::to_string(experts) + "], got " + std::to_string(config.top_k));
  }
  MOE_CHECK(config.num_shared_experts >= 0 && config.num_shared_experts <= kMaxExperts, where,
            "num_shared_experts must be in [0, " + std::to_string(kMaxExperts) + "], got " +
                std::to_string(config.num_shared_experts));
  MOE_CHECK(experts <= kMaxExperts, where,
            "num_experts must be <= " + std::to_string(kMaxExperts) + ", got " + std::to_string(experts));
  MOE_CHECK(config.shared_ffn_size >= 0, where, "shared_ffn_size must be >= 0");
}

// The rest of a Layer's config: shared_ffn_size 0 as ffn_size, and the activation.
inline void finish_config(LayerConfig& config) {
  const char* where = "Layer";
  if (config.shared_ffn_size == 0) config.shared_ffn_size = config.ffn_size;
  const FfnType& f = config.ffn;
  MOE_CHECK(!f.clamped() || (f.activation == Activation::SiLU && f.gated), where,
            "alpha, limit and up_offset (the clamped SwiGLU of gpt-oss) apply to gated SiLU experts only");
  MOE_CHECK(std::isfinite(f.alpha) && f.alpha > 0.0f && f.limit > 0.0f && std::isfinite(f.up_offset), where,
            "the clamped SwiGLU needs a finite alpha > 0, a limit > 0 and a finite up_offset");
  switch (config.ffn.activation) {
    case Activation::SiLU:
    case Activation::GELU:
    case Activation::GELUTanh:
    case Activation::ReLU:
      break;
    default:
      detail::fail(where, "unknown activation " + std::to_string(int(config.ffn.activation)));
  }
}

}  // namespace detail

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
