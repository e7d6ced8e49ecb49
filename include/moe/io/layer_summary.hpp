// moe/io/layer_summary.hpp: what every layer of a Hugging Face model folder holds, from config.json and the
// safetensors headers alone, without reading a weight (moe-run --list-layers).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "block_spec.hpp"
#include "hf_model.hpp"
#include "safetensors.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {

struct LayerSummary {
  std::string layer;         // as read_block_spec takes it
  bool moe = false;          // false: a dense MLP
  std::string dense_reason;  // for a dense layer, the config key that makes it dense
  // For an MoE layer:
  int experts = 0, top_k = 0, shared_experts = 0;
  Index hidden_size = 0, ffn_size = 0;
  std::string weights;      // how its expert weights are stored: "F32", "BF16", "F16", "F8_E4M3 128x128",
                            // "F8_E4M3 per row", "MXFP4"
  std::uint64_t bytes = 0;  // its tensors as stored: router, experts, shared experts, block scales
};

// Every layer of the model folder `dir`, in order. The MoE layers' tensors are checked as load_block checks
// them (names, shapes, dtypes, block scales), from the headers: a folder this accepts, load_block loads.
inline std::vector<LayerSummary> summarize_layers(const std::string& dir) {
  const nlohmann::json j = detail::read_config(dir);
  const std::string file = dir + "/config.json";
  const std::vector<std::string> names = layer_names(j, file);
  const Checkpoint ckpt(dir);
  std::vector<LayerSummary> out;
  for (const std::string& name : names) {
    LayerSummary row;
    row.layer = name;
    const std::optional<BlockSpec> spec = detail::moe_block_spec(j, file, name, row.dense_reason);
    if (spec) {
      const LayerConfig& c = spec->config;
      row.moe = true;
      row.experts = c.num_experts;
      row.top_k = c.top_k;
      row.shared_experts = c.num_shared_experts;
      row.hidden_size = c.hidden_size;
      row.ffn_size = c.ffn_size;
      detail::for_each_block_tensor(*spec, ckpt, [&](const TensorView& t) { row.bytes += t.bytes; });
      const DType stored = ckpt.tensor(detail::stored_expert_tensor(*spec)).dtype;
      row.weights = spec->mxfp4 ? "MXFP4" : dtype_name(stored);
      if (stored == DType::F8_E4M3)
        row.weights += spec->fp8_row_scales
                           ? " per row"
                           : " " + std::to_string(spec->fp8_block_rows) + "x" + std::to_string(spec->fp8_block_cols);
    }
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
