// moe/io/hf_model.hpp: the MoE block of one layer of a Hugging Face model folder, as a moe::Layer.
//
// load_block() reads the block's description (io/block_spec.hpp: read_block_spec() and the families it
// knows), builds the layer in the requested precision (make_layer, any_layer.hpp) and loads its weights
// from the safetensors files (io/safetensors.hpp), checking every tensor's dtype and shape against
// config.json.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../any_layer.hpp"
#include "../moe.hpp"
#include "block_spec.hpp"
#include "json_util.hpp"
#include "safetensors.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace io {

// A loaded MoE block, whatever its precision and routing policy.
class MoeBlock {
public:
  virtual ~MoeBlock() = default;
  virtual const BlockSpec& spec() const = 0;
  virtual const char* precision() const = 0;
  virtual Workspace workspace(Index max_tokens, int threads) const = 0;
  // y = block(x), tokens x hidden, row-major and contiguous.
  virtual RoutingResult forward(const float* x, float* y, Index tokens, Workspace& ws,
                                RoutingStats* stats = nullptr) const = 0;
  virtual ForwardCost cost(const RoutingResult& routed) const = 0;
};

namespace detail {

// The name of the block scales of an F8_E4M3 tensor: "X.weight" -> "X.weight_scale_inv".
inline std::string fp8_scale_name(const std::string& weight) { return weight + "_scale_inv"; }

// Checks that the tensor `name` is present, of the shape config.json implies and, for an expert weight
// (`expert`), of the declared dtype or F8_E4M3 under the spec's quantization_config, whose block scales are
// checked too; returns it. Reads no data: load_block checks every tensor the block needs this way before the
// layer allocates anything.
inline const TensorView& checked_tensor(const Checkpoint& ckpt, const std::string& name,
                                        const std::vector<Index>& shape, const BlockSpec& spec, bool expert) {
  const char* where = "io::load_block";
  const std::string& dir = ckpt.dir();
  const TensorView& view = ckpt.tensor(name);
  MOE_CHECK(
      view.shape == shape, where,
      dir + ": tensor '" + name + "' has shape " + dims_text(view.shape) + ", config.json implies " + dims_text(shape));
  if (view.dtype == DType::F8_E4M3) {
    MOE_CHECK(spec.fp8_block_rows > 0 && shape.size() == 2, where,
              dir + ": tensor '" + name +
                  "' is F8_E4M3, but config.json has no quantization_config with a weight_block_size for it");
    const std::vector<Index> blocks = {(shape[0] + spec.fp8_block_rows - 1) / spec.fp8_block_rows,
                                       (shape[1] + spec.fp8_block_cols - 1) / spec.fp8_block_cols};
    const std::string scale_name = fp8_scale_name(name);
    MOE_CHECK(ckpt.has(scale_name), where,
              dir + ": tensor '" + name + "' is F8_E4M3 but its block scales '" + scale_name + "' are missing");
    const TensorView& scale = ckpt.tensor(scale_name);
    MOE_CHECK(scale.shape == blocks, where,
              dir + ": tensor '" + scale_name + "' has shape " + dims_text(scale.shape) + ", but " + name + " " +
                  dims_text(shape) + " in blocks of " + std::to_string(spec.fp8_block_rows) + " x " +
                  std::to_string(spec.fp8_block_cols) + " needs " + dims_text(blocks));
    MOE_CHECK(scale.dtype != DType::F8_E4M3, where, dir + ": tensor '" + scale_name + "' is F8_E4M3, not a scale");
    return view;
  }
  const char* dtype = view.dtype == DType::F32 ? "float32" : view.dtype == DType::BF16 ? "bfloat16" : "float16";
  MOE_CHECK(
      !expert || spec.declared_dtype.empty() || spec.declared_dtype == dtype, where,
      dir + ": tensor '" + name + "' is " + dtype + " but config.json declares " + quoted_text(spec.declared_dtype));
  return view;
}

// A tensor of the checkpoint as f32 rows: the mapped data itself when it is f32, else converted; an F8_E4M3
// tensor is decoded and multiplied by its block scales (each value code * scale, rounded once to f32).
class TensorAsFloat {
public:
  TensorAsFloat(const Checkpoint& ckpt, const std::string& name, std::vector<Index> shape, const BlockSpec& spec,
                bool expert = true)
      : view_(checked_tensor(ckpt, name, shape, spec, expert)) {
    data_ = as_f32_if_possible(view_);
    if (data_ != nullptr) return;
    copy_.resize(std::size_t(view_.elements()));
    to_float(view_, copy_.data());
    data_ = copy_.data();
    if (view_.dtype == DType::F8_E4M3) apply_block_scales(ckpt, name, spec);
  }
  const float* data() const { return data_; }
  DType dtype() const { return view_.dtype; }

private:
  void apply_block_scales(const Checkpoint& ckpt, const std::string& name, const BlockSpec& spec) {
    const char* where = "io::load_block";
    const TensorView& scale_view = ckpt.tensor(fp8_scale_name(name));
    std::vector<float> scales(std::size_t(scale_view.elements()));
    to_float(scale_view, scales.data());
    const Index rows = view_.shape[0], cols = view_.shape[1], block_cols = scale_view.shape[1];
    for (std::size_t b = 0; b < scales.size(); ++b)
      MOE_CHECK(std::isfinite(scales[b]), where,
                ckpt.dir() + ": tensor '" + fp8_scale_name(name) + "' has NaN or Inf at block (" +
                    std::to_string(Index(b) / block_cols) + ", " + std::to_string(Index(b) % block_cols) + ")");
    for (Index r = 0; r < rows; ++r) {
      const float* row_scales = scales.data() + (r / spec.fp8_block_rows) * block_cols;
      float* row = copy_.data() + r * cols;
      for (Index c = 0; c < cols; ++c) {
        MOE_CHECK(!std::isnan(row[c]), where,
                  ckpt.dir() + ": tensor '" + name + "' has a NaN code at (" + std::to_string(r) + ", " +
                      std::to_string(c) + ")");
        row[c] *= row_scales[c / spec.fp8_block_cols];
      }
    }
  }

  const TensorView& view_;
  const float* data_ = nullptr;
  std::vector<float> copy_;
};

class Block final : public MoeBlock {
public:
  Block(BlockSpec spec, std::unique_ptr<AnyLayer> layer) : spec_(std::move(spec)), layer_(std::move(layer)) {}

  const BlockSpec& spec() const override { return spec_; }
  const char* precision() const override { return layer_->precision(); }
  Workspace workspace(Index max_tokens, int threads) const override { return layer_->workspace(max_tokens, threads); }
  RoutingResult forward(const float* x, float* y, Index tokens, Workspace& ws, RoutingStats* stats) const override {
    const Index h = layer_->hidden_size();
    return layer_->forward(x, h, y, h, tokens, ws, stats);
  }
  ForwardCost cost(const RoutingResult& routed) const override { return layer_->cost(routed); }

  void load(const Checkpoint& ckpt, const std::function<void(int, int)>& progress) {
    AnyLayer& layer = *layer_;
    const LayerConfig& c = spec_.config;
    const Index H = c.hidden_size, F = c.ffn_size;
    {
      TensorAsFloat router(ckpt, spec_.router_tensor, {c.num_experts, H}, spec_, false);
      layer.set_router(WeightView(router.data(), c.num_experts, H));
    }
    const int E = c.num_experts;
    if (spec_.fused) {
      TensorAsFloat w1(ckpt, spec_.gate[0], {Index(E) * F, H}, spec_), v1(ckpt, spec_.up[0], {Index(E) * F, H}, spec_),
          w2(ckpt, spec_.down[0], {Index(E) * F, H}, spec_);
      std::vector<float> down(std::size_t(H * F));
      for (int e = 0; e < E; ++e) {
        // w2's slice for expert e is F x H = down^T: the down projection W[out = H][in = F] is its transpose.
        const float* slice = w2.data() + Index(e) * F * H;
        for (Index f = 0; f < F; ++f)
          for (Index o = 0; o < H; ++o) down[std::size_t(o * F + f)] = slice[f * H + o];
        layer.set_expert(e, WeightView(w1.data() + Index(e) * F * H, F, H),
                         WeightView(v1.data() + Index(e) * F * H, F, H), WeightView(down.data(), H, F));
        if (progress) progress(e + 1, E);
      }
    } else {
      for (int e = 0; e < E; ++e) {
        TensorAsFloat up(ckpt, spec_.up[std::size_t(e)], {F, H}, spec_);
        TensorAsFloat down(ckpt, spec_.down[std::size_t(e)], {H, F}, spec_);
        if (c.ffn.gated) {
          TensorAsFloat gate(ckpt, spec_.gate[std::size_t(e)], {F, H}, spec_);
          layer.set_expert(e, WeightView(gate.data(), F, H), WeightView(up.data(), F, H),
                           WeightView(down.data(), H, F));
        } else {
          layer.set_expert(e, WeightView(up.data(), F, H), WeightView(down.data(), H, F));
        }
        if (progress) progress(e + 1, E);
      }
    }
    if (c.num_shared_experts > 0) {
      const Index Fs = c.shared_ffn_size;
      TensorAsFloat gate(ckpt, spec_.shared_gate_proj, {Fs, H}, spec_, false),
          up(ckpt, spec_.shared_up, {Fs, H}, spec_, false), down(ckpt, spec_.shared_down, {H, Fs}, spec_, false);
      layer.set_shared_expert(0, WeightView(gate.data(), Fs, H), WeightView(up.data(), Fs, H),
                              WeightView(down.data(), H, Fs));
      if (c.shared_expert_gate) {
        TensorAsFloat g(ckpt, spec_.shared_expert_gate, {1, H}, spec_, false);
        layer.set_shared_expert_gate(0, WeightView(g.data(), 1, H));
      }
    }
  }

private:
  BlockSpec spec_;
  std::unique_ptr<AnyLayer> layer_;
};

// The block's layer, its weights in `precision`, with the routing policy spec.router names.
inline std::unique_ptr<AnyLayer> make_block_layer(const BlockSpec& spec, const Checkpoint& ckpt,
                                                  const std::string& precision) {
  switch (spec.router) {
    case BlockSpec::Router::SigmoidGroupTopK: {
      SigmoidGroupTopK r;
      r.groups = spec.groups;
      r.topk_groups = spec.topk_groups;
      r.renormalize = spec.renormalize;
      r.scaling = spec.scaling;
      TensorAsFloat bias(ckpt, spec.bias_tensor, {spec.config.num_experts}, spec, false);
      r.bias.assign(bias.data(), bias.data() + spec.config.num_experts);
      return make_layer(precision, spec.config, r);
    }
    case BlockSpec::Router::Capacity: {
      CapacityTopK r;
      r.capacity = spec.capacity;
      r.renormalize = false;
      r.pass_dropped_through = false;
      return make_layer(precision, spec.config, r);
    }
    case BlockSpec::Router::SoftmaxTopK:
    default:
      return make_layer(precision, spec.config, SoftmaxTopK(spec.renormalize));
  }
}

// Calls visit(view) for every tensor the block reads, each checked by checked_tensor (an F8_E4M3 weight's
// block scales after it), in the order the block loads them. Reads no data.
template <class Visit>
void for_each_block_tensor(const BlockSpec& spec, const Checkpoint& ckpt, Visit&& visit) {
  const LayerConfig& c = spec.config;
  const Index H = c.hidden_size, F = c.ffn_size, E = c.num_experts;
  auto check = [&](const std::string& name, std::vector<Index> shape, bool expert) {
    const TensorView& view = checked_tensor(ckpt, name, shape, spec, expert);
    visit(view);
    if (view.dtype == DType::F8_E4M3) visit(ckpt.tensor(fp8_scale_name(name)));
  };
  check(spec.router_tensor, {E, H}, false);
  if (spec.router == BlockSpec::Router::SigmoidGroupTopK) check(spec.bias_tensor, {E}, false);
  if (spec.fused) {
    for (const auto* names : {&spec.gate, &spec.up, &spec.down}) check(names->front(), {E * F, H}, true);
  } else {
    for (std::size_t e = 0; e < std::size_t(E); ++e) {
      check(spec.up[e], {F, H}, true);
      check(spec.down[e], {H, F}, true);
      if (c.ffn.gated) check(spec.gate[e], {F, H}, true);
    }
  }
  if (c.num_shared_experts > 0) {
    const Index Fs = c.shared_ffn_size;
    check(spec.shared_gate_proj, {Fs, H}, false);
    check(spec.shared_up, {Fs, H}, false);
    check(spec.shared_down, {H, Fs}, false);
    if (c.shared_expert_gate) check(spec.shared_expert_gate, {1, H}, false);
  }
}

}  // namespace detail

// Loads the MoE block of `layer` from the model folder `dir`, its expert weights stored in `dtype`: "auto"
// (the checkpoint's own, f32, bf16 or f16; f32 for F8_E4M3 weights, which it holds exactly after their
// block scales) or one of precision_names(). progress(done, total), if given, is called as experts load.
inline std::unique_ptr<MoeBlock> load_block(const std::string& dir, const std::string& layer,
                                            const std::string& dtype = "auto",
                                            const std::function<void(int, int)>& progress = {}) {
  MOE_CHECK(dtype == "auto" || is_precision_name(dtype), "io::load_block",
            "dtype must be auto or one of " + precision_names() + ", got '" + dtype + "'");
  const BlockSpec spec = read_block_spec(dir, layer);
  const Checkpoint ckpt(dir);
  // Every tensor checked before the layer allocates anything: the sizes config.json declares are then backed
  // by tensors the files hold.
  detail::for_each_block_tensor(spec, ckpt, [](const TensorView&) {});
  std::string chosen = dtype;
  if (chosen == "auto") {
    const DType stored = ckpt.tensor(spec.up.front()).dtype;
    chosen = stored == DType::BF16 ? "bf16" : stored == DType::F16 ? "f16" : "f32";
  }
  auto block = std::make_unique<detail::Block>(spec, detail::make_block_layer(spec, ckpt, chosen));
  block->load(ckpt, progress);
  return block;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
