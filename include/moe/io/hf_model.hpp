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

// A tensor of the checkpoint as f32 rows: the mapped data itself when it is f32, else converted.
class TensorAsFloat {
public:
  TensorAsFloat(const Checkpoint& ckpt, const std::string& name, std::vector<Index> shape, const std::string& dir,
                const std::string& declared_dtype = "")
      : view_(ckpt.tensor(name)) {
    MOE_CHECK(view_.shape == shape, "io::load_block",
              dir + ": tensor '" + name + "' has shape " + shape_text(view_.shape) + ", config.json implies " +
                  shape_text(shape));
    const char* dtype = view_.dtype == DType::F32 ? "float32" : view_.dtype == DType::BF16 ? "bfloat16" : "float16";
    MOE_CHECK(declared_dtype.empty() || declared_dtype == dtype, "io::load_block",
              dir + ": tensor '" + name + "' is " + dtype + " but config.json declares " + declared_dtype);
    data_ = as_f32_if_possible(view_);
    if (data_ == nullptr) {
      copy_.resize(std::size_t(view_.elements()));
      to_float(view_, copy_.data());
      data_ = copy_.data();
    }
  }
  const float* data() const { return data_; }
  DType dtype() const { return view_.dtype; }

  static std::string shape_text(const std::vector<Index>& s) {
    std::string t = "[";
    for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
    return t + "]";
  }

private:
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

  void load(const Checkpoint& ckpt, const std::string& dir, const std::function<void(int, int)>& progress) {
    AnyLayer& layer = *layer_;
    const LayerConfig& c = spec_.config;
    const Index H = c.hidden_size, F = c.ffn_size;
    {
      TensorAsFloat router(ckpt, spec_.router_tensor, {c.num_experts, H}, dir);
      layer.set_router(WeightView(router.data(), c.num_experts, H));
    }
    const int E = c.num_experts;
    if (spec_.fused) {
      const std::string& declared = spec_.declared_dtype;
      TensorAsFloat w1(ckpt, spec_.gate[0], {Index(E) * F, H}, dir, declared),
          v1(ckpt, spec_.up[0], {Index(E) * F, H}, dir, declared),
          w2(ckpt, spec_.down[0], {Index(E) * F, H}, dir, declared);
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
        TensorAsFloat up(ckpt, spec_.up[std::size_t(e)], {F, H}, dir, spec_.declared_dtype);
        TensorAsFloat down(ckpt, spec_.down[std::size_t(e)], {H, F}, dir, spec_.declared_dtype);
        if (c.ffn.gated) {
          TensorAsFloat gate(ckpt, spec_.gate[std::size_t(e)], {F, H}, dir, spec_.declared_dtype);
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
      TensorAsFloat gate(ckpt, spec_.shared_gate_proj, {Fs, H}, dir), up(ckpt, spec_.shared_up, {Fs, H}, dir),
          down(ckpt, spec_.shared_down, {H, Fs}, dir);
      layer.set_shared_expert(0, WeightView(gate.data(), Fs, H), WeightView(up.data(), Fs, H),
                              WeightView(down.data(), H, Fs));
      if (c.shared_expert_gate) {
        TensorAsFloat g(ckpt, spec_.shared_expert_gate, {1, H}, dir);
        layer.set_shared_expert_gate(0, WeightView(g.data(), 1, H));
      }
    }
  }

private:
  BlockSpec spec_;
  std::unique_ptr<AnyLayer> layer_;
};

// The block's layer, its weights in `precision`, with the routing policy spec.router names.
inline std::unique_ptr<AnyLayer> make_block_layer(const BlockSpec& spec, const Checkpoint& ckpt, const std::string& dir,
                                                  const std::string& precision) {
  switch (spec.router) {
    case BlockSpec::Router::SigmoidGroupTopK: {
      SigmoidGroupTopK r;
      r.groups = spec.groups;
      r.topk_groups = spec.topk_groups;
      r.renormalize = spec.renormalize;
      r.scaling = spec.scaling;
      TensorAsFloat bias(ckpt, spec.bias_tensor, {spec.config.num_experts}, dir);
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

}  // namespace detail

// Loads the MoE block of `layer` from the model folder `dir`, its expert weights stored in `dtype`: "auto"
// (the checkpoint's own, f32, bf16 or f16) or one of precision_names(). progress(done, total), if given, is
// called as experts load.
inline std::unique_ptr<MoeBlock> load_block(const std::string& dir, const std::string& layer,
                                            const std::string& dtype = "auto",
                                            const std::function<void(int, int)>& progress = {}) {
  MOE_CHECK(dtype == "auto" || is_precision_name(dtype), "io::load_block",
            "dtype must be auto or one of " + precision_names() + ", got '" + dtype + "'");
  const BlockSpec spec = read_block_spec(dir, layer);
  const Checkpoint ckpt(dir);
  std::string chosen = dtype;
  if (chosen == "auto") {
    const TensorView& first = ckpt.tensor(spec.up.front());
    chosen = first.dtype == DType::F32 ? "f32" : first.dtype == DType::BF16 ? "bf16" : "f16";
  }
  auto block = std::make_unique<detail::Block>(spec, detail::make_block_layer(spec, ckpt, dir, chosen));
  block->load(ckpt, dir, progress);
  return block;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
