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
//                        of n_shared_experts * moe_intermediate_size; sparse iff L >= first_k_dense_replace;
//                        keys left out take DeepseekV3Config's defaults (n_group 8, topk_group 4,
//                        routed_scaling_factor 2.5, n_shared_experts 1, first_k_dense_replace 3)
//   deepseek_v2          softmax scores, greedy or group_limited_greedy top-k (n_group, topk_group; a group
//                        scores its best expert), times routed_scaling_factor (router.hpp's SoftmaxGroupTopK);
//                        a shared MLP of n_shared_experts * moe_intermediate_size; sparse iff
//                        L >= first_k_dense_replace; DeepseekV2Config's defaults (n_routed_experts 64,
//                        n_shared_experts 2, moe_intermediate_size 1407, first_k_dense_replace 0,
//                        routed_scaling_factor 1, topk_method greedy)
//   glm4_moe             GLM-4.5: as deepseek_v3 (modeling_glm4_moe.py: Glm4MoeTopkRouter is DeepseekV3TopkRouter,
//                        and its MoE block adds the routed experts and the shared MLP as DeepseekV3MoE does),
//                        with Glm4MoeConfig's defaults (n_group 1, topk_group 1, routed_scaling_factor 1,
//                        n_shared_experts 1, first_k_dense_replace 1)
//   granitemoe           top-k of the logits, softmax over the k; experts stacked in block_sparse_moe.input_linear
//                        (experts x 2 ffn x hidden: gate rows, then up rows) and output_linear (experts x hidden
//                        x ffn); every layer
//   llama4_text, llama4  top-k of the logits, weight sigmoid(logit), applied to the expert's input
//                        (LayerConfig::scale_expert_input); experts in feed_forward.experts.gate_up_proj
//                        (experts x hidden x 2 ffn, x W: gate columns then up columns) and down_proj (experts x
//                        ffn x hidden); a shared expert of intermediate_size; MoE iff L is in moe_layers (by
//                        default every interleave_moe_layer_step-th layer); llama4's keys are in its
//                        text_config and its tensors under language_model.
//   gpt_oss              router with a bias, top-k of the logits, softmax over the k; experts with biases and
//                        the clamped SwiGLU (FfnType GptOssSwiGLU, swiglu_limit), gate and up interleaved
//                        (gate unit i is row or column 2i, up 2i + 1); as published, MXFP4 (quantization_config
//                        quant_method mxfp4): experts.gate_up_proj_blocks / _scales (experts x 2 ffn x hidden,
//                        W[out][in]) and down_proj_blocks / _scales (experts x hidden x ffn), 32 E2M1 codes a
//                        block, two a byte (low nibble first), an E8M0 scale a block; unquantised (a bf16
//                        re-save): gate_up_proj, experts x hidden x 2 ffn, and down_proj, experts x ffn x hidden
//                        (x W, as llama4); every layer
//   grok-1               Grok-1 as hpc-ai's PyTorch port publishes it (modeling_grok1.py, the layout vLLM loads):
//                        softmax over every expert, the top-k probabilities as they are (not renormalised, as
//                        xAI's JAX code); experts moe_block.experts.E.linear (gate), linear_v (up), linear_1
//                        (down) with the port's exact-erf GELU (xAI's JAX code uses the tanh form: the port
//                        and the original differ); every layer
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
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../expert.hpp"
#include "../layer_config.hpp"
#include "../router.hpp"
#include "file.hpp"
#include "json_util.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {

// The model families read_block_spec() knows.
inline const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> types = {
      "mixtral",    "qwen2_moe",   "qwen3_moe", "olmoe",   "deepseek_v2", "deepseek_v3", "glm4_moe",
      "granitemoe", "llama4_text", "llama4",    "gpt_oss", "grok-1",      "dbrx",        "switch_transformers"};
  return types;
}

// What the MoE block of one layer computes, and where its weights are.
struct BlockSpec {
  enum class Router { SoftmaxTopK, SigmoidGroupTopK, SoftmaxGroupTopK, Capacity };

  std::string model_type;
  std::string layer;  // as given: "3", or "encoder.1" / "decoder.1"
  LayerConfig config;
  Router router = Router::SoftmaxTopK;
  bool renormalize = false;
  // SigmoidGroupTopK (deepseek_v3, llama4) and SoftmaxGroupTopK (deepseek_v2)
  int groups = 1;
  int topk_groups = 1;
  float scaling = 1.0f;
  std::string bias_tensor;  // SigmoidGroupTopK's; empty: no bias
  // Capacity (switch_transformers)
  int capacity = 0;

  // The weights' dtype config.json declares (torch_dtype, or dtype): "float32", "bfloat16", "float16"; empty
  // when it declares none. Every expert tensor must have it, or be F8_E4M3 under an FP8 quantization_config.
  std::string declared_dtype;
  // quantization_config {quant_method: fp8, fmt: e4m3, weight_block_size: [rows, cols]}: an F8_E4M3 tensor
  // W (out x in) is stored with W_scale_inv, f32 of ceil(out / rows) x ceil(in / cols), and its value is
  // code * scale of its block (transformers' integrations/finegrained_fp8.py, FP8Linear's weight and
  // weight_scale_inv). {0, 0}: config.json has no such quantization_config.
  Index fp8_block_rows = 0, fp8_block_cols = 0;
  // quantization_config {quant_method: fbgemm_fp8} (Llama 4 Maverick FP8; transformers'
  // integrations/fbgemm_fp8.py): one f32 scale per output unit, W (out x in) with W_scale (out x 1)
  // (FbgemmFp8Linear), and Llama 4's experts (FbgemmFp8Llama4TextExperts) gate_up_proj (experts x in x out)
  // with gate_up_proj_scale (experts x 1 x out), down_proj (experts x in x out) with down_proj_scale
  // (experts x out x 1). The activations, which fbgemm's kernels round to FP8 per row, stay f32 here.
  bool fp8_row_scales = false;
  // With neither, F8_E4M3 tensors are refused.
  bool reads_fp8() const { return fp8_block_rows > 0 || fp8_row_scales; }
  // The rows and columns of W (out x in) that one FP8 scale covers.
  Index fp8_scale_rows() const { return fp8_row_scales ? 1 : fp8_block_rows; }
  Index fp8_scale_cols(Index in) const { return fp8_row_scales ? in : fp8_block_cols; }
  // The scales of the F8_E4M3 tensor `weight`: "X.weight" -> "X.weight_scale_inv" (fp8) or "X.weight_scale"
  // (fbgemm_fp8), "experts.gate_up_proj" -> "experts.gate_up_proj_scale".
  std::string fp8_scale_name(const std::string& weight) const {
    return weight + (fp8_row_scales ? "_scale" : "_scale_inv");
  }

  std::string router_tensor;
  // Per routed expert (W[out][in]); gate empty for plain MLPs. DBRX's and Granite's tensors for all experts
  // at once instead: see fused and stacked.
  std::vector<std::string> gate, up, down;
  bool fused = false;  // dbrx: gate = w1, up = v1, down = w2, each (experts * ffn) x hidden
  // granitemoe: gate = input_linear, experts x (2 ffn) x hidden, expert e's gate rows then its up rows;
  // down = output_linear, experts x hidden x ffn (each expert's W[out][in]); up names input_linear too.
  bool stacked = false;
  // llama4: gate = experts.gate_up_proj, experts x hidden x (2 ffn), each expert's (W_gate^T | W_up^T);
  // down = experts.down_proj, experts x ffn x hidden (W_down^T); up names gate_up_proj too.
  bool transposed = false;
  // gpt_oss: gate and up interleaved in gate_up_proj (gate unit i at 2i, up at 2i + 1) instead of halves.
  bool interleaved = false;
  // quantization_config quant_method mxfp4 (gpt_oss): gate and down name the bases of base_blocks (U8,
  // experts x rows x cols/32 x 16: 32 E2M1 codes a block, low nibble first) and base_scales (U8, experts x
  // rows x cols/32, E8M0), rows and cols those of W[out][in].
  bool mxfp4 = false;
  // Biases (gpt_oss; empty: none): the router's (experts), gate_up_proj's (experts x 2 ffn, laid out as the
  // rows of gate_up_proj) and down_proj's (experts x hidden).
  std::string router_bias, gate_up_bias, down_bias;
  // The shared expert (at most one in these families) and its gate.
  std::string shared_gate_proj, shared_up, shared_down, shared_expert_gate;
};

namespace detail {

// config.json, read through io/file.hpp's MappedFile: a FIFO or anything else that is not a regular file is
// refused before a byte is read, and nlohmann's parse errors become one line naming the file.
inline nlohmann::json read_json_file(const std::string& path) {
  const char* where = "io::read_block_spec";
  const MappedFile file(path, where);
  nlohmann::json j = file.size() == 0 ? nlohmann::json(nlohmann::json::value_t::discarded)
                                      : nlohmann::json::parse(file.data(), file.data() + file.size(), nullptr, false);
  MOE_CHECK(!j.is_discarded(), where, path + " is not valid JSON");
  MOE_CHECK(j.is_object(), where, path + " is not a JSON object");
  return j;
}

inline Activation activation_named(const std::string& name, const std::string& file) {
  if (name == "silu" || name == "swish") return Activation::SiLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::GELUTanh;
  if (name == "relu") return Activation::ReLU;
  detail::fail("io::read_block_spec", file + ": unsupported activation '" + quoted_text(name) +
                                          "' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)");
}

inline int parse_index(const std::string& text, const std::string& what) {
  MOE_CHECK(!text.empty() && text.size() <= 9 &&
                std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }),
            "io::read_block_spec", what + " must be a layer number, got '" + text + "'");
  return std::stoi(text);
}

// The largest layer count, hidden size and FFN width a config.json may declare: far beyond every published
// model, and small enough that no product of two of them overflows an Index.
inline constexpr int kMaxLayers = 1 << 20;
inline constexpr Index kMaxWidth = Index(1) << 30;

// Whether the integer list j[key] (absent or null: empty) holds `value`; anything but a list of integers is
// refused, naming the key.
inline bool listed(const nlohmann::json& j, const std::string& key, int value, const std::string& file) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  MOE_CHECK(it->is_array(), "io::read_block_spec",
            file + ": key '" + key + "' has the wrong type (expected a list of layer numbers, got " +
                json_value_kind(*it) + ")");
  bool found = false;
  for (const auto& v : *it) {
    MOE_CHECK(v.is_number_unsigned(), "io::read_block_spec",
              file + ": key '" + key + "' holds " + v.dump() + ", not a layer number");
    found = found || v.get<std::uint64_t>() == std::uint64_t(value);
  }
  return found;
}

}  // namespace detail

namespace detail {

// quantization_config, when config.json has one: block-scaled FP8 (what DeepSeek-V3/R1, Qwen3 FP8 and
// GLM-4.5-FP8 ship), FP8 scaled per output unit (fbgemm_fp8: Llama 4 Maverick FP8) and gpt-oss's MXFP4 are
// read; any other method is refused, naming it.
inline void read_quantization_config(const nlohmann::json& j, const std::string& file, BlockSpec& s) {
  const char* where = "io::read_block_spec";
  const auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return;
  const std::string qfile = file + " quantization_config";
  MOE_CHECK(
      it->is_object(), where,
      file + ": key 'quantization_config' has the wrong type (expected an object, got " + json_value_kind(*it) + ")");
  const nlohmann::json& q = *it;
  const std::string method = json_get<std::string>(q, "quant_method", qfile);
  if (method == "mxfp4") {
    // gpt-oss's (transformers' integrations/mxfp4.py): the experts' blocks and scales, the rest unquantised.
    MOE_CHECK(s.model_type == "gpt_oss", where, qfile + ": quant_method 'mxfp4' is read for gpt_oss only");
    s.mxfp4 = true;
    return;
  }
  if (method == "fbgemm_fp8") {
    s.fp8_row_scales = true;
    return;
  }
  MOE_CHECK(
      method == "fp8", where,
      qfile + ": quant_method '" + quoted_text(method) + "' is not supported (supported: fp8, fbgemm_fp8, mxfp4)");
  const std::string fmt = json_get_or<std::string>(q, "fmt", "e4m3", qfile);
  MOE_CHECK(fmt == "e4m3", where, qfile + ": fmt '" + quoted_text(fmt) + "' is not supported (supported: e4m3)");
  const auto block = q.find("weight_block_size");
  MOE_CHECK(block != q.end() && block->is_array() && block->size() == 2, where,
            qfile +
                ": weight_block_size must be [rows, columns] (per-tensor and per-channel FP8 scales are not "
                "supported)");
  s.fp8_block_rows = json_in_range<Index>(json_convert<Index>((*block)[0], "weight_block_size", qfile),
                                          "weight_block_size", 1, kMaxWidth, qfile);
  s.fp8_block_cols = json_in_range<Index>(json_convert<Index>((*block)[1], "weight_block_size", qfile),
                                          "weight_block_size", 1, kMaxWidth, qfile);
}

}  // namespace detail

namespace detail {

// The defaults of DeepseekV3Config and Glm4MoeConfig for the keys of their MoE blocks.
struct SigmoidGroupDefaults {
  int first_dense, shared, groups, topk_groups;
  float scaling;
};

// The families whose layers are model.layers.L, counted by num_hidden_layers.
inline bool numbers_its_layers(const std::string& type) {
  return type == "mixtral" || type == "qwen2_moe" || type == "qwen3_moe" || type == "olmoe" || type == "deepseek_v2" ||
         type == "deepseek_v3" || type == "glm4_moe" || type == "granitemoe" || type == "llama4_text" ||
         type == "gpt_oss" || type == "grok-1";
}

[[noreturn]] inline void unsupported_type(const std::string& type, const std::string& file) {
  std::string list;
  for (const std::string& t : supported_model_types()) list += (list.empty() ? "" : ", ") + t;
  fail("io::read_block_spec",
       file + ": model_type '" + quoted_text(type) + "' is not supported (supported: " + list + ")");
}

// The MoE block of `layer` described by the parsed config.json `j` (`file` names it in messages), or nothing
// when the layer is a dense MLP, with the config key that makes it so in `dense_reason`.
inline std::optional<BlockSpec> moe_block_spec(const nlohmann::json& j, const std::string& file,
                                               const std::string& layer, std::string& dense_reason) {
  const char* where = "io::read_block_spec";
  MOE_CHECK(j.is_object(), where, file + " is not a JSON object");
  BlockSpec s;
  s.layer = layer;
  s.model_type = json_get<std::string>(j, "model_type", file);
  const std::string& type = s.model_type;
  LayerConfig& c = s.config;
  // Sizes are range-checked as they are read, before a single expert's tensors are named.
  auto layers = [&](const nlohmann::json& o, const char* key, const std::string& in) {
    return json_get_in<int>(o, key, 1, detail::kMaxLayers, in);
  };
  auto width = [&](const nlohmann::json& o, const char* key, const std::string& in) {
    return json_get_in<Index>(o, key, 1, detail::kMaxWidth, in);
  };
  auto experts = [&](const nlohmann::json& o, const char* key, const std::string& in) {
    return json_get_in<int>(o, key, 1, kMaxExperts, in);
  };
  auto top_k = [&](const nlohmann::json& o, const char* key, const std::string& in) {
    return json_get_in<int>(o, key, 1, c.num_experts, in);
  };
  auto experts_names = [&](const std::string& prefix, const char* g, const char* u, const char* d, int experts) {
    for (int e = 0; e < experts; ++e) {
      const std::string p = prefix + std::to_string(e) + ".";
      if (g) s.gate.push_back(p + g + ".weight");
      s.up.push_back(p + u + ".weight");
      s.down.push_back(p + d + ".weight");
    }
  };
  // DeepSeek's shared experts: `count` MLPs of the expert width as one, its tensors under `prefix`.
  auto shared_experts = [&](const std::string& prefix, int count) {
    if (count <= 0) return;
    c.num_shared_experts = 1;
    c.shared_ffn_size = c.ffn_size * count;
    s.shared_gate_proj = prefix + "gate_proj.weight";
    s.shared_up = prefix + "up_proj.weight";
    s.shared_down = prefix + "down_proj.weight";
  };
  auto check_layer = [&](int index, int count, const std::string& what) {
    MOE_CHECK(index < count, where,
              file + ": layer " + layer + " does not exist (" + what + " = " + std::to_string(count) + ")");
  };
  auto dense = [&](const std::string& why) {
    dense_reason = why;
    return std::optional<BlockSpec>();
  };

  if (type == "deepseek_v2") {
    // modeling_deepseek_v2.py: DeepseekV2Moe (route_tokens_to_experts, the shared experts), DeepseekV2DecoderLayer
    // (MoE iff layer_idx >= first_k_dense_replace).
    const int L = detail::parse_index(layer, "the layer of deepseek_v2");
    check_layer(L, layers(j, "num_hidden_layers", file), "num_hidden_layers");
    const int first_dense = json_get_or_in<int>(j, "first_k_dense_replace", 0, 0, detail::kMaxLayers, file);
    if (L < first_dense) return dense("first_k_dense_replace = " + std::to_string(first_dense));
    // DeepSeek's own modeling code (not transformers') makes a layer dense unless L % moe_layer_freq == 0, and
    // renormalises the top-k weights under norm_topk_prob, where transformers ignores both: every published
    // config has 1 and false, on which the two agree; other values are refused rather than guessed at.
    MOE_CHECK(json_get_or<int>(j, "moe_layer_freq", 1, file) == 1, where,
              file + ": moe_layer_freq other than 1 is not supported for deepseek_v2");
    MOE_CHECK(!json_get_or<bool>(j, "norm_topk_prob", false, file), where,
              file +
                  ": norm_topk_prob = true is not supported for deepseek_v2 (transformers ignores it, DeepSeek's "
                  "code renormalises)");
    c.hidden_size = width(j, "hidden_size", file);
    c.ffn.activation = detail::activation_named(json_get_or<std::string>(j, "hidden_act", "silu", file), file);
    c.num_experts = json_get_or_in<int>(j, "n_routed_experts", 64, 1, kMaxExperts, file);
    c.ffn_size = json_get_or_in<Index>(j, "moe_intermediate_size", 1407, 1, detail::kMaxWidth, file);
    c.top_k = top_k(j, "num_experts_per_tok", file);
    s.router = BlockSpec::Router::SoftmaxGroupTopK;
    const std::string method = json_get_or<std::string>(j, "topk_method", "greedy", file);
    if (method == "group_limited_greedy") {
      s.groups = json_get_in<int>(j, "n_group", 1, c.num_experts, file);
      s.topk_groups = json_get_in<int>(j, "topk_group", 1, s.groups, file);
    } else {
      MOE_CHECK(method == "greedy", where,
                file + ": topk_method '" + quoted_text(method) +
                    "' is not supported for deepseek_v2 (supported: greedy, group_limited_greedy)");
    }
    // What router.hpp's SoftmaxGroupTopK::check asks, so that --list-layers refuses what a load would.
    MOE_CHECK(s.groups <= SoftmaxGroupTopK::kMaxGroups && c.num_experts % s.groups == 0, where,
              file + ": n_group = " + std::to_string(s.groups) + " must divide the " + std::to_string(c.num_experts) +
                  " experts into at most " + std::to_string(SoftmaxGroupTopK::kMaxGroups) + " groups");
    MOE_CHECK(c.top_k <= s.topk_groups * (c.num_experts / s.groups), where,
              file + ": num_experts_per_tok = " + std::to_string(c.top_k) + " exceeds the " +
                  std::to_string(s.topk_groups * (c.num_experts / s.groups)) +
                  " experts of the topk_group = " + std::to_string(s.topk_groups) + " groups kept");
    s.scaling = json_get_or<float>(j, "routed_scaling_factor", 1.0f, file);
    MOE_CHECK(std::isfinite(s.scaling) && s.scaling > 0.0f, where,
              file + ": key 'routed_scaling_factor' = " + std::to_string(s.scaling) + " must be positive");
    const std::string prefix = "model.layers." + std::to_string(L) + ".mlp.";
    s.router_tensor = prefix + "gate.weight";
    experts_names(prefix + "experts.", "gate_proj", "up_proj", "down_proj", c.num_experts);
    // n_shared_experts null: no shared experts (DeepseekV2Moe builds them only when it is not None).
    const auto shared_key = j.find("n_shared_experts");
    shared_experts(prefix + "shared_experts.",
                   shared_key != j.end() && shared_key->is_null()
                       ? 0
                       : json_get_or_in<int>(j, "n_shared_experts", 2, 0, kMaxExperts, file));
  } else if (type == "llama4_text" || type == "llama4") {
    // modeling_llama4.py: Llama4Router (top-k of the logits, sigmoid of each), Llama4TextMoe (the input times
    // the score into each expert, the routed outputs summed, plus the shared expert), Llama4TextExperts
    // (bmm with gate_up_proj, chunked gate | up; bmm with down_proj), Llama4TextDecoderLayer (MoE iff
    // layer_idx in moe_layers); defaults from Llama4TextConfig.
    const bool nested = type == "llama4";
    MOE_CHECK(!nested || (j.contains("text_config") && j["text_config"].is_object()), where,
              file + ": text_config is missing");
    const nlohmann::json& t = nested ? j["text_config"] : j;
    const std::string tfile = nested ? file + " text_config" : file;
    const int L = detail::parse_index(layer, "the layer of " + type);
    const int count = layers(t, "num_hidden_layers", tfile);
    check_layer(L, count, "num_hidden_layers");
    if (t.contains("moe_layers") && !t["moe_layers"].is_null()) {
      if (!detail::listed(t, "moe_layers", L, tfile)) return dense("it is not in moe_layers");
    } else {
      const int step = json_get_or_in<int>(t, "interleave_moe_layer_step", 1, 1, detail::kMaxLayers, tfile);
      if ((L + 1) % step != 0) return dense("interleave_moe_layer_step = " + std::to_string(step));
    }
    c.hidden_size = width(t, "hidden_size", tfile);
    c.ffn_size = width(t, "intermediate_size", tfile);
    c.num_experts = json_get_or_in<int>(t, "num_local_experts", 16, 1, kMaxExperts, tfile);
    c.top_k = json_get_or_in<int>(t, "num_experts_per_tok", 1, 1, c.num_experts, tfile);
    c.ffn.activation = detail::activation_named(json_get_or<std::string>(t, "hidden_act", "silu", tfile), tfile);
    c.scale_expert_input = true;
    // Top-k of the logits with weight sigmoid(logit): SigmoidGroupTopK with one group, no bias, no
    // renormalisation and no scaling chooses the same experts (sigmoid is monotonic) with those weights.
    s.router = BlockSpec::Router::SigmoidGroupTopK;
    s.renormalize = false;
    const std::string prefix =
        std::string(nested ? "language_model." : "") + "model.layers." + std::to_string(L) + ".feed_forward.";
    s.router_tensor = prefix + "router.weight";
    s.transposed = true;
    s.gate = {prefix + "experts.gate_up_proj"};
    s.up = s.gate;
    s.down = {prefix + "experts.down_proj"};
    c.num_shared_experts = 1;
    c.shared_ffn_size = c.ffn_size;
    s.shared_gate_proj = prefix + "shared_expert.gate_proj.weight";
    s.shared_up = prefix + "shared_expert.up_proj.weight";
    s.shared_down = prefix + "shared_expert.down_proj.weight";
    for (const char* key : {"torch_dtype", "dtype"})
      if (t.contains(key) && t[key].is_string()) s.declared_dtype = t[key].get<std::string>();
  } else if (type == "gpt_oss") {
    // modeling_gpt_oss.py: GptOssTopKRouter (Linear with a bias; top-k of the logits, softmax over the k),
    // GptOssExperts (gate_up = x gate_up_proj + bias, gate = [..., ::2], up = [..., 1::2], alpha 1.702, limit
    // 7.0; down_proj + bias); integrations/mxfp4.py (convert_moe_packed_tensors) for the MXFP4 layout.
    const int L = detail::parse_index(layer, "the layer of gpt_oss");
    check_layer(L, layers(j, "num_hidden_layers", file), "num_hidden_layers");
    c.hidden_size = width(j, "hidden_size", file);
    c.ffn_size = width(j, "intermediate_size", file);
    c.num_experts = json_get_or_in<int>(j, "num_local_experts", 128, 1, kMaxExperts, file);
    c.top_k = json_get_or_in<int>(j, "num_experts_per_tok", 4, 1, c.num_experts, file);
    c.ffn = GptOssSwiGLU;
    // transformers' GptOssExperts fixes the limit at 7.0, OpenAI's reference reads swiglu_limit: they agree on
    // every published config; another value is refused rather than guessed at.
    const float limit = json_get_or<float>(j, "swiglu_limit", 7.0f, file);
    MOE_CHECK(limit == 7.0f, where,
              file + ": swiglu_limit = " + std::to_string(limit) + " is not supported (transformers fixes it at 7)");
    s.renormalize = true;  // a softmax over the k chosen logits
    const std::string prefix = "model.layers." + std::to_string(L) + ".mlp.";
    s.router_tensor = prefix + "router.weight";
    s.router_bias = prefix + "router.bias";
    s.interleaved = true;
    s.gate = {prefix + "experts.gate_up_proj"};
    s.up = s.gate;
    s.down = {prefix + "experts.down_proj"};
    s.gate_up_bias = prefix + "experts.gate_up_proj_bias";
    s.down_bias = prefix + "experts.down_proj_bias";
  } else if (type == "grok-1") {
    // hpc-ai's modeling_grok1.py: MoeBlock (softmax in float32 over the experts, top-k, the probabilities as
    // weights), MoeMLP (gelu(linear x) * linear_v x, then linear_1); Grok1Config's defaults.
    const int L = detail::parse_index(layer, "the layer of grok-1");
    check_layer(L, layers(j, "num_hidden_layers", file), "num_hidden_layers");
    c.hidden_size = json_get_or_in<Index>(j, "hidden_size", 6144, 1, detail::kMaxWidth, file);
    c.ffn_size = json_get_or_in<Index>(j, "intermediate_size", 32768, 1, detail::kMaxWidth, file);
    c.num_experts = json_get_or_in<int>(j, "num_experts", 8, 1, kMaxExperts, file);
    c.top_k = json_get_or_in<int>(j, "num_experts_per_tok", 2, 1, c.num_experts, file);
    c.ffn = GeGLU;
    s.renormalize = false;
    const std::string prefix = "model.layers." + std::to_string(L) + ".moe_block.";
    s.router_tensor = prefix + "gate.weight";
    experts_names(prefix + "experts.", "linear", "linear_v", "linear_1", c.num_experts);
  } else if (numbers_its_layers(type) && type != "granitemoe") {
    const int L = detail::parse_index(layer, "the layer of " + type);
    // DeepSeek-V3's router and shared experts; GLM-4.5 (Glm4MoeTopkRouter is DeepseekV3TopkRouter) differs only
    // in its config class's defaults, which apply where config.json leaves a key out.
    const bool sigmoid_groups = type == "deepseek_v3" || type == "glm4_moe";
    const SigmoidGroupDefaults defaults =
        type == "glm4_moe" ? SigmoidGroupDefaults{1, 1, 1, 1, 1.0f} : SigmoidGroupDefaults{3, 1, 8, 4, 2.5f};
    check_layer(L, layers(j, "num_hidden_layers", file), "num_hidden_layers");
    c.hidden_size = width(j, "hidden_size", file);
    c.ffn.activation = detail::activation_named(json_get_or<std::string>(j, "hidden_act", "silu", file), file);
    const std::string prefix = "model.layers." + std::to_string(L) + ".";
    if (type == "mixtral") {
      c.ffn_size = width(j, "intermediate_size", file);
      c.num_experts = experts(j, "num_local_experts", file);
      c.top_k = top_k(j, "num_experts_per_tok", file);
      s.renormalize = true;
      s.router_tensor = prefix + "block_sparse_moe.gate.weight";
      experts_names(prefix + "block_sparse_moe.experts.", "w1", "w3", "w2", c.num_experts);
    } else {
      const bool qwen = type == "qwen2_moe" || type == "qwen3_moe";
      if (qwen) {
        // Qwen2MoeDecoderLayer takes (L + 1) % decoder_sparse_step: a step below 1 is no model.
        const int step = json_get_or_in<int>(j, "decoder_sparse_step", 1, 1, detail::kMaxLayers, file);
        if (detail::listed(j, "mlp_only_layers", L, file)) return dense("it is in mlp_only_layers");
        if (json_get_in<int>(j, "num_experts", 0, kMaxExperts, file) == 0) return dense("num_experts = 0");
        if ((L + 1) % step != 0) return dense("decoder_sparse_step = " + std::to_string(step));
      }
      if (sigmoid_groups) {
        const int first_dense =
            json_get_or_in<int>(j, "first_k_dense_replace", defaults.first_dense, 0, detail::kMaxLayers, file);
        if (L < first_dense) return dense("first_k_dense_replace = " + std::to_string(first_dense));
        c.num_experts = experts(j, "n_routed_experts", file);
      } else {
        c.num_experts = experts(j, "num_experts", file);
      }
      // OLMoE's experts are intermediate_size wide; the others name the expert width moe_intermediate_size.
      c.ffn_size = width(j, type == "olmoe" ? "intermediate_size" : "moe_intermediate_size", file);
      c.top_k = top_k(j, "num_experts_per_tok", file);
      s.renormalize = json_get_or<bool>(j, "norm_topk_prob", sigmoid_groups, file);
      s.router_tensor = prefix + "mlp.gate.weight";
      experts_names(prefix + "mlp.experts.", "gate_proj", "up_proj", "down_proj", c.num_experts);
      if (type == "qwen2_moe") {
        c.num_shared_experts = 1;
        c.shared_ffn_size = width(j, "shared_expert_intermediate_size", file);
        c.shared_expert_gate = true;
        s.shared_gate_proj = prefix + "mlp.shared_expert.gate_proj.weight";
        s.shared_up = prefix + "mlp.shared_expert.up_proj.weight";
        s.shared_down = prefix + "mlp.shared_expert.down_proj.weight";
        s.shared_expert_gate = prefix + "mlp.shared_expert_gate.weight";
      }
      if (sigmoid_groups) {
        s.router = BlockSpec::Router::SigmoidGroupTopK;
        s.groups = json_get_or_in<int>(j, "n_group", defaults.groups, 1, c.num_experts, file);
        s.topk_groups = json_get_or_in<int>(j, "topk_group", defaults.topk_groups, 1, s.groups, file);
        // What router.hpp's SigmoidGroupTopK::check asks, here so that --list-layers refuses what a load would.
        MOE_CHECK(s.groups <= SigmoidGroupTopK::kMaxGroups && c.num_experts % s.groups == 0 &&
                      (s.groups == 1 || c.num_experts / s.groups >= 2),
                  where,
                  file + ": n_group = " + std::to_string(s.groups) + " must divide the " +
                      std::to_string(c.num_experts) + " experts into at most " +
                      std::to_string(SigmoidGroupTopK::kMaxGroups) + " groups of 2 or more");
        MOE_CHECK(c.top_k <= s.topk_groups * (c.num_experts / s.groups), where,
                  file + ": num_experts_per_tok = " + std::to_string(c.top_k) + " exceeds the " +
                      std::to_string(s.topk_groups * (c.num_experts / s.groups)) +
                      " experts of the topk_group = " + std::to_string(s.topk_groups) + " groups kept");
        s.scaling = json_get_or<float>(j, "routed_scaling_factor", defaults.scaling, file);
        MOE_CHECK(std::isfinite(s.scaling) && s.scaling > 0.0f, where,
                  file + ": key 'routed_scaling_factor' = " + std::to_string(s.scaling) + " must be positive");
        s.bias_tensor = prefix + "mlp.gate.e_score_correction_bias";
        shared_experts(prefix + "mlp.shared_experts.",
                       json_get_or_in<int>(j, "n_shared_experts", defaults.shared, 0, kMaxExperts, file));
      }
    }
  } else if (type == "granitemoe") {
    // modeling_granitemoe.py: GraniteMoeTopKGating (top-k of the logits, softmax over the k), GraniteMoeMoE
    // (input_linear's output chunked in two: act(first half) * second half; then output_linear).
    const int L = detail::parse_index(layer, "the layer of granitemoe");
    check_layer(L, layers(j, "num_hidden_layers", file), "num_hidden_layers");
    c.hidden_size = width(j, "hidden_size", file);
    c.ffn_size = width(j, "intermediate_size", file);
    c.num_experts = experts(j, "num_local_experts", file);
    c.top_k = top_k(j, "num_experts_per_tok", file);
    c.ffn.activation = detail::activation_named(json_get_or<std::string>(j, "hidden_act", "silu", file), file);
    s.renormalize = true;  // a softmax over the k chosen logits
    const std::string prefix = "model.layers." + std::to_string(L) + ".block_sparse_moe.";
    s.router_tensor = prefix + "router.layer.weight";
    s.stacked = true;
    s.gate = {prefix + "input_linear.weight"};
    s.up = s.gate;
    s.down = {prefix + "output_linear.weight"};
  } else if (type == "dbrx") {
    const int L = detail::parse_index(layer, "the layer of dbrx");
    check_layer(L, layers(j, "n_layers", file), "n_layers");
    c.hidden_size = width(j, "d_model", file);
    MOE_CHECK(j.contains("ffn_config") && j["ffn_config"].is_object(), where, file + ": ffn_config is missing");
    const nlohmann::json& f = j["ffn_config"];
    const std::string ffile = file + " ffn_config";
    c.ffn_size = width(f, "ffn_hidden_size", ffile);
    c.num_experts = experts(f, "moe_num_experts", ffile);
    c.top_k = top_k(f, "moe_top_k", ffile);
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
    const int count = decoder && j.contains("num_decoder_layers") && !j["num_decoder_layers"].is_null()
                          ? layers(j, "num_decoder_layers", file)
                          : layers(j, "num_layers", file);
    check_layer(N, count, decoder ? "num_decoder_layers" : "num_layers");
    const int step = json_get<int>(j, decoder ? "decoder_sparse_step" : "encoder_sparse_step", file);
    if (!(step > 0 && (N % step == 1 || step == 1)))
      return dense(std::string(decoder ? "decoder" : "encoder") + "_sparse_step = " + std::to_string(step));
    c.hidden_size = width(j, "d_model", file);
    c.ffn_size = width(j, "d_ff", file);
    c.num_experts = experts(j, "num_experts", file);
    c.top_k = 1;
    c.ffn = FfnType{detail::activation_named(json_get_or<std::string>(j, "dense_act_fn", "relu", file), file), false};
    MOE_CHECK(!json_get_or<bool>(j, "router_bias", false, file), where, file + ": router_bias = true is not supported");
    s.router = BlockSpec::Router::Capacity;
    s.capacity = json_get_in<int>(j, "expert_capacity", 1, std::numeric_limits<int>::max(), file);
    const std::string prefix = stack + ".block." + std::to_string(N) + ".layer." + (decoder ? "2" : "1") + ".mlp.";
    s.router_tensor = prefix + "router.classifier.weight";
    experts_names(prefix + "experts.expert_", nullptr, "wi", "wo", c.num_experts);
  } else {
    unsupported_type(type, file);
  }
  for (const char* key : {"torch_dtype", "dtype"})
    if (j.contains(key) && j[key].is_string()) s.declared_dtype = j[key].get<std::string>();
  detail::read_quantization_config(j, file, s);
  if (type == "gpt_oss") {
    s.transposed = !s.mxfp4;  // the bf16 re-saves keep transformers' parameters, x W
    MOE_CHECK(!s.mxfp4 || (c.hidden_size % 32 == 0 && c.ffn_size % 32 == 0), where,
              file + ": MXFP4 needs hidden_size and intermediate_size multiples of 32, got " +
                  std::to_string(c.hidden_size) + " and " + std::to_string(c.ffn_size));
  }
  MOE_CHECK(
      c.hidden_size >= 1 && c.ffn_size >= 1 && c.num_experts >= 1 && c.top_k >= 1 && c.top_k <= c.num_experts, where,
      file + ": inconsistent sizes (hidden " + std::to_string(c.hidden_size) + ", ffn " + std::to_string(c.ffn_size) +
          ", experts " + std::to_string(c.num_experts) + ", top-k " + std::to_string(c.top_k) + ")");
  return s;
}

inline nlohmann::json read_config(const std::string& dir) {
  MOE_CHECK(std::filesystem::is_directory(dir), "io::read_block_spec", "model folder " + dir + " does not exist");
  return read_json_file(dir + "/config.json");
}

}  // namespace detail

// Describes the MoE block of `layer` from the parsed config.json `j`; `file` names it in messages. A dense
// layer is refused, naming the key that makes it dense.
inline BlockSpec block_spec_from_json(const nlohmann::json& j, const std::string& file, const std::string& layer) {
  std::string dense_reason;
  std::optional<BlockSpec> spec = detail::moe_block_spec(j, file, layer, dense_reason);
  MOE_CHECK(spec.has_value(), "io::read_block_spec",
            file + ": layer " + layer + " of this " + j["model_type"].get<std::string>() +
                " model is a dense MLP, not MoE (" + dense_reason + ")");
  return std::move(*spec);
}

// Reads DIR/config.json and describes the MoE block of `layer`.
inline BlockSpec read_block_spec(const std::string& dir, const std::string& layer) {
  return block_spec_from_json(detail::read_config(dir), dir + "/config.json", layer);
}

// The names of every layer of the model config.json `j` describes (the `layer` read_block_spec takes), in
// order: "0" to "n - 1", or for switch_transformers "encoder.0" ... then "decoder.0" ....
inline std::vector<std::string> layer_names(const nlohmann::json& j, const std::string& file) {
  const std::string type = json_get<std::string>(j, "model_type", file);
  std::vector<std::string> names;
  auto count = [&](const char* key) { return json_get_in<int>(j, key, 1, detail::kMaxLayers, file); };
  auto numbered = [&](const std::string& prefix, int n) {
    for (int i = 0; i < n; ++i) names.push_back(prefix + std::to_string(i));
  };
  if (detail::numbers_its_layers(type)) {
    numbered("", count("num_hidden_layers"));
  } else if (type == "llama4") {
    MOE_CHECK(j.contains("text_config") && j["text_config"].is_object(), "io::read_block_spec",
              file + ": text_config is missing");
    numbered("", json_get_in<int>(j["text_config"], "num_hidden_layers", 1, detail::kMaxLayers, file + " text_config"));
  } else if (type == "dbrx") {
    numbered("", count("n_layers"));
  } else if (type == "switch_transformers") {
    const int encoder = count("num_layers");
    numbered("encoder.", encoder);
    numbered("decoder.", j.contains("num_decoder_layers") && !j["num_decoder_layers"].is_null()
                             ? count("num_decoder_layers")
                             : encoder);
  } else {
    detail::unsupported_type(type, file);
  }
  return names;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
