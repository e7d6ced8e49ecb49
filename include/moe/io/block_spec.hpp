// moe/io/block_spec.hpp: what the MoE block of one layer of a Hugging Face model folder computes.
//
// read_block_spec() reads config.json and says, for the families below, what the block of a layer computes
// and which checkpoint tensors hold it, following each family's transformers modeling code:
//   mixtral              softmax top-k, renormalised; experts w1 (gate), w3 (up), w2 (down); every layer
//   qwen2_moe            softmax top-k, renormalised iff norm_topk_prob; a shared expert scaled by
//                        sigmoid(shared_expert_gate x); layer L is sparse iff L is not in mlp_only_layers and
//                        (L + 1) % decoder_sparse_step == 0
//   qwen3_moe            as qwen2_moe without the shared expert
//   olmoe                softmax top-k, renormalised iff norm_topk_prob; experts intermediate_size wide; every
//                        layer
//   deepseek_v3          sigmoid scores, e_score_correction_bias, group-limited top-k (n_group, topk_group),
//                        norm_topk_prob, routed_scaling_factor (router.hpp's SigmoidGroupTopK); one shared MLP
//                        of n_shared_experts * moe_intermediate_size; sparse iff L >= first_k_dense_replace
//   dbrx                 softmax top-k divided by the p-norm of the k weights (moe_normalize_expert_weights;
//                        p = 1 supported), experts fused in ffn.experts.mlp.w1 / v1 / w2
//   switch_transformers  top-1 softmax with expert_capacity per sequence (the input is one sequence); a dropped
//                        token's block output is zero (the modeling code's next_states start at zero; the
//                        residual outside the block carries it); ReLU experts wi, wo; layer "encoder.N" or
//                        "decoder.N", sparse iff N % sparse_step == 1 or sparse_step == 1
// io/hf_model.hpp's load_block() builds and loads the layer it describes.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../expert.hpp"
#include "../layer_config.hpp"
#include "file.hpp"
#include "json_util.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {

// The model families read_block_spec() knows.
inline const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> types = {"mixtral",     "qwen2_moe", "qwen3_moe",          "olmoe",
                                                 "deepseek_v3", "dbrx",      "switch_transformers"};
  return types;
}

// What the MoE block of one layer computes, and where its weights are.
struct BlockSpec {
  enum class Router { SoftmaxTopK, SigmoidGroupTopK, Capacity };

  std::string model_type;
  std::string layer;  // as given: "3", or "encoder.1" / "decoder.1"
  LayerConfig config;
  Router router = Router::SoftmaxTopK;
  bool renormalize = false;
  // SigmoidGroupTopK (deepseek_v3)
  int groups = 1;
  int topk_groups = 1;
  float scaling = 1.0f;
  std::string bias_tensor;
  // Capacity (switch_transformers)
  int capacity = 0;

  // The weights' dtype config.json declares (torch_dtype, or dtype): "float32", "bfloat16", "float16"; empty
  // when it declares none. Every expert tensor must have it.
  std::string declared_dtype;

  std::string router_tensor;
  // Per routed expert (W[out][in]); gate empty for plain MLPs. DBRX's fused tensors instead: see fused.
  std::vector<std::string> gate, up, down;
  bool fused = false;  // dbrx: gate = w1, up = v1, down = w2, each (experts * ffn) x hidden
  // The shared expert (at most one in these families) and its gate.
  std::string shared_gate_proj, shared_up, shared_down, shared_expert_gate;
};

namespace detail {

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "io::read_block_spec", "cannot open " + path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  MOE_CHECK(!j.is_discarded(), "io::read_block_spec", path + " is not valid JSON");
  MOE_CHECK(j.is_object(), "io::read_block_spec", path + " is not a JSON object");
  return j;
}

inline Activation activation_named(const std::string& name, const std::string& file) {
  if (name == "silu" || name == "swish") return Activation::SiLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::GELUTanh;
  if (name == "relu") return Activation::ReLU;
  detail::fail("io::read_block_spec", file + ": unsupported activation '" + name +
                                          "' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)");
}

inline int parse_index(const std::string& text, const std::string& what) {
  MOE_CHECK(!text.empty() && text.size() <= 9 &&
                std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }),
            "io::read_block_spec", what + " must be a layer number, got '" + text + "'");
  return std::stoi(text);
}

template <class T>
bool contains(const nlohmann::json& list, T value) {
  if (!list.is_array()) return false;
  for (const auto& v : list)
    if (v.is_number_integer() && v.get<T>() == value) return true;
  return false;
}

}  // namespace detail

// Reads DIR/config.json and describes the MoE block of `layer`.
inline BlockSpec read_block_spec(const std::string& dir, const std::string& layer) {
  const char* where = "io::read_block_spec";
  MOE_CHECK(std::filesystem::is_directory(dir), where, "model folder " + dir + " does not exist");
  const std::string file = dir + "/config.json";
  const nlohmann::json j = detail::read_json_file(file);
  BlockSpec s;
  s.layer = layer;
  s.model_type = json_get<std::string>(j, "model_type", file);
  const std::string& type = s.model_type;
  LayerConfig& c = s.config;
  auto experts_names = [&](const std::string& prefix, const char* g, const char* u, const char* d, int experts) {
    for (int e = 0; e < experts; ++e) {
      const std::string p = prefix + std::to_string(e) + ".";
      if (g) s.gate.push_back(p + g + ".weight");
      s.up.push_back(p + u + ".weight");
      s.down.push_back(p + d + ".weight");
    }
  };
  auto check_layer = [&](int index, int count, const std::string& what) {
    MOE_CHECK(index < count, where,
              file + ": layer " + layer + " does not exist (" + what + " = " + std::to_string(count) + ")");
  };
  auto dense = [&](const std::string& why) {
    detail::fail(where,
                 file + ": layer " + layer + " of this " + type + " model is a dense MLP, not MoE (" + why + ")");
  };

  if (type == "mixtral" || type == "qwen2_moe" || type == "qwen3_moe" || type == "olmoe" || type == "deepseek_v3") {
    const int L = detail::parse_index(layer, "the layer of " + type);
    check_layer(L, json_get<int>(j, "num_hidden_layers", file), "num_hidden_layers");
    c.hidden_size = json_get<Index>(j, "hidden_size", file);
    c.ffn.activation = detail::activation_named(json_get_or<std::string>(j, "hidden_act", "silu", file), file);
    const std::string prefix = "model.layers." + std::to_string(L) + ".";
    if (type == "mixtral") {
      c.ffn_size = json_get<Index>(j, "intermediate_size", file);
      c.num_experts = json_get<int>(j, "num_local_experts", file);
      c.top_k = json_get<int>(j, "num_experts_per_tok", file);
      s.renormalize = true;
      s.router_tensor = prefix + "block_sparse_moe.gate.weight";
      experts_names(prefix + "block_sparse_moe.experts.", "w1", "w3", "w2", c.num_experts);
    } else {
      const bool qwen = type == "qwen2_moe" || type == "qwen3_moe";
      if (qwen) {
        const int step = json_get_or<int>(j, "decoder_sparse_step", 1, file);
        const nlohmann::json only = j.contains("mlp_only_layers") ? j["mlp_only_layers"] : nlohmann::json::array();
        if (detail::contains(only, L)) dense("it is in mlp_only_layers");
        if (json_get<int>(j, "num_experts", file) <= 0) dense("num_experts = 0");
        if (step <= 0 || (L + 1) % step != 0) dense("decoder_sparse_step = " + std::to_string(step));
      }
      if (type == "deepseek_v3") {
        const int first_dense = json_get_or<int>(j, "first_k_dense_replace", 0, file);
        if (L < first_dense) dense("first_k_dense_replace = " + std::to_string(first_dense));
        c.num_experts = json_get<int>(j, "n_routed_experts", file);
      } else {
        c.num_experts = json_get<int>(j, "num_experts", file);
      }
      // OLMoE's experts are intermediate_size wide; the others name the expert width moe_intermediate_size.
      c.ffn_size = json_get<Index>(j, type == "olmoe" ? "intermediate_size" : "moe_intermediate_size", file);
      c.top_k = json_get<int>(j, "num_experts_per_tok", file);
      s.renormalize = json_get_or<bool>(j, "norm_topk_prob", type == "deepseek_v3", file);
      s.router_tensor = prefix + "mlp.gate.weight";
      experts_names(prefix + "mlp.experts.", "gate_proj", "up_proj", "down_proj", c.num_experts);
      if (type == "qwen2_moe") {
        c.num_shared_experts = 1;
        c.shared_ffn_size = json_get<Index>(j, "shared_expert_intermediate_size", file);
        c.shared_expert_gate = true;
        s.shared_gate_proj = prefix + "mlp.shared_expert.gate_proj.weight";
        s.shared_up = prefix + "mlp.shared_expert.up_proj.weight";
        s.shared_down = prefix + "mlp.shared_expert.down_proj.weight";
        s.shared_expert_gate = prefix + "mlp.shared_expert_gate.weight";
      }
      if (type == "deepseek_v3") {
        s.router = BlockSpec::Router::SigmoidGroupTopK;
        s.groups = json_get_or<int>(j, "n_group", 1, file);
        s.topk_groups = json_get_or<int>(j, "topk_group", 1, file);
        s.scaling = json_get_or<float>(j, "routed_scaling_factor", 1.0f, file);
        s.bias_tensor = prefix + "mlp.gate.e_score_correction_bias";
        const int shared = json_get_or<int>(j, "n_shared_experts", 0, file);
        if (shared > 0) {
          c.num_shared_experts = 1;
          c.shared_ffn_size = c.ffn_size * shared;
          s.shared_gate_proj = prefix + "mlp.shared_experts.gate_proj.weight";
          s.shared_up = prefix + "mlp.shared_experts.up_proj.weight";
          s.shared_down = prefix + "mlp.shared_experts.down_proj.weight";
        }
      }
    }
  } else if (type == "dbrx") {
    const int L = detail::parse_index(layer, "the layer of dbrx");
    check_layer(L, json_get<int>(j, "n_layers", file), "n_layers");
    c.hidden_size = json_get<Index>(j, "d_model", file);
    MOE_CHECK(j.contains("ffn_config") && j["ffn_config"].is_object(), where, file + ": ffn_config is missing");
    const nlohmann::json& f = j["ffn_config"];
    const std::string ffile = file + " ffn_config";
    c.ffn_size = json_get<Index>(f, "ffn_hidden_size", ffile);
    c.num_experts = json_get<int>(f, "moe_num_experts", ffile);
    c.top_k = json_get<int>(f, "moe_top_k", ffile);
    std::string act = "silu";
    if (f.contains("ffn_act_fn") && f["ffn_act_fn"].is_object())
      act = json_get_or<std::string>(f["ffn_act_fn"], "name", "silu", ffile);
    c.ffn.activation = detail::activation_named(act, file);
    // DbrxFFNConfig defaults moe_normalize_expert_weights to 1 (a re-saved config may omit it); null means
    // no normalisation.
    s.renormalize = true;
    if (f.contains("moe_normalize_expert_weights")) {
      if (f["moe_normalize_expert_weights"].is_null()) {
        s.renormalize = false;
      } else {
        const double p = json_get<double>(f, "moe_normalize_expert_weights", ffile);
        MOE_CHECK(p == 1.0, where,
                  file + ": moe_normalize_expert_weights = " + std::to_string(p) +
                      " is not supported (only 1, the default, or null)");
      }
    }
    const std::string prefix = "transformer.blocks." + std::to_string(L) + ".ffn.";
    s.router_tensor = prefix + "router.layer.weight";
    s.fused = true;
    s.gate = {prefix + "experts.mlp.w1"};
    s.up = {prefix + "experts.mlp.v1"};
    s.down = {prefix + "experts.mlp.w2"};
  } else if (type == "switch_transformers") {
    const auto dot = layer.find('.');
    MOE_CHECK(dot != std::string::npos, where,
              "the layer of switch_transformers is encoder.N or decoder.N, got '" + layer + "'");
    const std::string stack = layer.substr(0, dot);
    MOE_CHECK(stack == "encoder" || stack == "decoder", where,
              "the layer of switch_transformers is encoder.N or decoder.N, got '" + layer + "'");
    const int N = detail::parse_index(layer.substr(dot + 1), "the layer of switch_transformers");
    const bool decoder = stack == "decoder";
    const int layers = decoder ? json_get_or<int>(j, "num_decoder_layers", json_get<int>(j, "num_layers", file), file)
                               : json_get<int>(j, "num_layers", file);
    check_layer(N, layers, decoder ? "num_decoder_layers" : "num_layers");
    const int step = json_get<int>(j, decoder ? "decoder_sparse_step" : "encoder_sparse_step", file);
    if (!(step > 0 && (N % step == 1 || step == 1)))
      dense(std::string(decoder ? "decoder" : "encoder") + "_sparse_step = " + std::to_string(step));
    c.hidden_size = json_get<Index>(j, "d_model", file);
    c.ffn_size = json_get<Index>(j, "d_ff", file);
    c.num_experts = json_get<int>(j, "num_experts", file);
    c.top_k = 1;
    c.ffn = FfnType{detail::activation_named(json_get_or<std::string>(j, "dense_act_fn", "relu", file), file), false};
    MOE_CHECK(!json_get_or<bool>(j, "router_bias", false, file), where, file + ": router_bias = true is not supported");
    s.router = BlockSpec::Router::Capacity;
    s.capacity = json_get<int>(j, "expert_capacity", file);
    MOE_CHECK(s.capacity >= 1, where, file + ": expert_capacity must be >= 1");
    const std::string prefix = stack + ".block." + std::to_string(N) + ".layer." + (decoder ? "2" : "1") + ".mlp.";
    s.router_tensor = prefix + "router.classifier.weight";
    experts_names(prefix + "experts.expert_", nullptr, "wi", "wo", c.num_experts);
  } else {
    std::string list;
    for (const std::string& t : supported_model_types()) list += (list.empty() ? "" : ", ") + t;
    detail::fail(where, file + ": model_type '" + type + "' is not supported (supported: " + list + ")");
  }
  for (const char* key : {"torch_dtype", "dtype"})
    if (j.contains(key) && j[key].is_string()) s.declared_dtype = j[key].get<std::string>();
  MOE_CHECK(
      c.hidden_size >= 1 && c.ffn_size >= 1 && c.num_experts >= 1 && c.top_k >= 1 && c.top_k <= c.num_experts, where,
      file + ": inconsistent sizes (hidden " + std::to_string(c.hidden_size) + ", ffn " + std::to_string(c.ffn_size) +
          ", experts " + std::to_string(c.num_experts) + ", top-k " + std::to_string(c.top_k) + ")");
  return s;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
