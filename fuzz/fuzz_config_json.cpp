// fuzz/fuzz_config_json.cpp: libFuzzer target for json_util.hpp and block_spec.hpp on arbitrary config.json
// text (fuzz/run.sh builds and runs it). nlohmann parses without exceptions; the typical keys of a Hugging
// Face MoE config are then read as the types a loader would ask for, and block_spec_from_json describes a
// few layers of it (the family's sizes, routing and quantization_config). A refusal must be a one-line
// moe::Error naming the file; anything else (another exception, a crash, a sanitizer report, a described
// block whose sizes break the limits) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include <moe/io/block_spec.hpp>
#include <moe/io/json_util.hpp>

namespace {

template <class F>
void attempt(F&& read) {
  try {
    read();
  } catch (const moe::Error& e) {
    const std::string message = e.what();
    const bool named = message.rfind("moe::io::json_get: config.json", 0) == 0 ||
                       message.rfind("moe::io::read_block_spec: config.json", 0) == 0 ||
                       message.rfind("moe::io::read_block_spec: the layer of ", 0) == 0;
    if (!named || message.find('\n') != std::string::npos) std::abort();
  }
}

// A block that block_spec_from_json describes must be within the limits it promises to check, with one
// tensor name per expert.
void describe(const nlohmann::json& j, const char* layer) {
  attempt([&] {
    const moe::io::BlockSpec s = moe::io::block_spec_from_json(j, "config.json", layer);
    const moe::LayerConfig& c = s.config;
    if (c.num_experts < 1 || c.num_experts > moe::kMaxExperts || c.top_k < 1 || c.top_k > c.num_experts ||
        c.hidden_size < 1 || c.ffn_size < 1 || c.num_shared_experts < 0 || s.fp8_block_rows < 0 ||
        s.fp8_block_cols < 0 || (s.fp8_block_rows == 0) != (s.fp8_block_cols == 0))
      std::abort();
    if (!s.fused && !s.stacked && !s.transposed && !s.mxfp4 && s.up.size() != std::size_t(c.num_experts)) std::abort();
  });
}

void read_config(const nlohmann::json& j, const std::string& file) {
  using moe::io::json_get;
  using moe::io::json_get_or;
  attempt([&] { (void)json_get<std::string>(j, "model_type", file); });
  attempt([&] { (void)json_get<moe::Index>(j, "hidden_size", file); });
  attempt([&] { (void)json_get<moe::Index>(j, "intermediate_size", file); });
  attempt([&] { (void)json_get<moe::Index>(j, "moe_intermediate_size", file); });
  attempt([&] { (void)json_get<int>(j, "num_local_experts", file); });
  attempt([&] { (void)json_get<int>(j, "num_experts", file); });
  attempt([&] { (void)json_get<int>(j, "num_experts_per_tok", file); });
  attempt([&] { (void)json_get<unsigned>(j, "num_hidden_layers", file); });
  attempt([&] { (void)json_get<std::uint64_t>(j, "vocab_size", file); });
  attempt([&] { (void)json_get<std::int8_t>(j, "n_group", file); });
  attempt([&] { (void)json_get<std::uint16_t>(j, "topk_group", file); });
  attempt([&] { (void)json_get<bool>(j, "norm_topk_prob", file); });
  attempt([&] { (void)json_get<float>(j, "routed_scaling_factor", file); });
  attempt([&] { (void)json_get<double>(j, "rope_theta", file); });
  attempt([&] { (void)json_get_or<std::string>(j, "hidden_act", "silu", file); });
  attempt([&] { (void)json_get_or<int>(j, "decoder_sparse_step", 1, file); });
  attempt([&] { (void)json_get_or<bool>(j, "tie_word_embeddings", false, file); });
  attempt([&] { (void)json_get_or<float>(j, "rms_norm_eps", 1e-6f, file); });
  attempt([&] { (void)json_get_or<std::int64_t>(j, "first_k_dense_replace", 0, file); });
  attempt([&] { (void)json_get_or<std::string>(j, "torch_dtype", "float32", file); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  read_config(j, "config.json");  // an array or a number is refused by json_get too
  if (j.is_object()) {
    const auto nested = j.find("ffn_config");  // DBRX keeps its MoE keys one level down
    if (nested != j.end()) read_config(*nested, "config.json ffn_config");
  }
  for (const char* layer : {"0", "1", "3", "encoder.1", "decoder.0"}) describe(j, layer);
  return 0;
}
