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
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
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

// "(i0, i1, ...)": where the row-major index `flat` lies in `shape`.
inline std::string place_text(Index flat, const std::vector<Index>& shape) {
  std::string text;
  for (std::size_t d = shape.size(); d-- > 0;) {
    text = std::to_string(flat % shape[d]) + (text.empty() ? "" : ", ") + text;
    flat /= shape[d];
  }
  return "(" + text + ")";
}

// Checks that the tensor `name` is present, of the shape config.json implies and, for an expert weight
// (`expert`), of the declared dtype or F8_E4M3 under the spec's quantization_config, whose scales are
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
  // U8 holds MXFP4 blocks and scales, and nothing else.
  const bool mxfp4_part = spec.mxfp4 && (detail::ends_with(name, "_blocks") || detail::ends_with(name, "_scales"));
  MOE_CHECK((view.dtype == DType::U8) == mxfp4_part, where,
            dir + ": tensor '" + name + "' is " + dtype_name(view.dtype) +
                (mxfp4_part ? ", but MXFP4 blocks and scales are U8" : ", not a float tensor"));
  if (mxfp4_part) return view;
  if (view.dtype == DType::F8_E4M3) {
    MOE_CHECK(spec.reads_fp8(), where,
              dir + ": tensor '" + name +
                  "' is F8_E4M3, but config.json has no quantization_config for it (fp8 with a weight_block_size, "
                  "or fbgemm_fp8)");
    std::vector<Index> scales_shape;
    std::string layout;
    if (shape.size() == 2) {
      const Index rows = spec.fp8_scale_rows(), cols = spec.fp8_scale_cols(shape[1]);
      scales_shape = {(shape[0] + rows - 1) / rows, (shape[1] + cols - 1) / cols};
      layout = spec.fp8_row_scales ? "with one scale per row"
                                   : "in blocks of " + std::to_string(rows) + " x " + std::to_string(cols);
    } else {
      MOE_CHECK(shape.size() == 3 && spec.fp8_row_scales && spec.transposed, where,
                dir + ": tensor '" + name + "' is F8_E4M3 with " + std::to_string(shape.size()) +
                    " dimensions; F8_E4M3 is read for 2-D weights, and for llama4's experts under fbgemm_fp8");
      // FbgemmFp8Llama4TextExperts: a scale per expert and output unit (the last dimension), gate_up_proj's
      // as experts x 1 x out, down_proj's as experts x out x 1.
      scales_shape = name == spec.down.front() ? std::vector<Index>{shape[0], shape[2], 1}
                                               : std::vector<Index>{shape[0], 1, shape[2]};
      layout = "with one scale per expert and output";
    }
    const std::string scale_name = spec.fp8_scale_name(name);
    MOE_CHECK(ckpt.has(scale_name), where,
              dir + ": tensor '" + name + "' is F8_E4M3 but its scales '" + scale_name + "' are missing");
    const TensorView& scale = ckpt.tensor(scale_name);
    MOE_CHECK(scale.shape == scales_shape, where,
              dir + ": tensor '" + scale_name + "' has shape " + dims_text(scale.shape) + ", but " + name + " " +
                  dims_text(shape) + " " + layout + " needs " + dims_text(scales_shape));
    MOE_CHECK(scale.dtype == DType::F32 || scale.dtype == DType::BF16 || scale.dtype == DType::F16, where,
              dir + ": tensor '" + scale_name + "' is " + dtype_name(scale.dtype) + ", not a float scale");
    return view;
  }
  const char* dtype = view.dtype == DType::F32 ? "float32" : view.dtype == DType::BF16 ? "bfloat16" : "float16";
  MOE_CHECK(
      !expert || spec.declared_dtype.empty() || spec.declared_dtype == dtype, where,
      dir + ": tensor '" + name + "' is " + dtype + " but config.json declares " + quoted_text(spec.declared_dtype));
  return view;
}

// A float tensor's values as f32: the mapped data itself when it is F32, else converted into a copy.
class FloatValues {
public:
  explicit FloatValues(const TensorView& t) : tensor_(t), data_(as_f32_if_possible(t)) {
    if (data_ != nullptr) return;
    copy_.resize(std::size_t(t.elements()));
    to_float(t, copy_.data());
    data_ = copy_.data();
  }
  const TensorView& tensor() const { return tensor_; }
  const float* data() const { return data_; }

private:
  const TensorView& tensor_;
  const float* data_;
  std::vector<float> copy_;
};

// An F8_E4M3 tensor's codes hold no NaN and its scales are finite; a refusal names the tensor and the place.
inline void check_fp8_values(const std::string& dir, const TensorView& codes, const FloatValues& scales) {
  const char* where = "io::load_block";
  const TensorView& scale_tensor = scales.tensor();
  for (Index b = 0; b < scale_tensor.elements(); ++b)
    MOE_CHECK(
        std::isfinite(scales.data()[b]), where,
        dir + ": tensor '" + scale_tensor.name + "' has NaN or Inf at block " + place_text(b, scale_tensor.shape));
  for (Index i = 0; i < codes.elements(); ++i)
    MOE_CHECK(!::moe::detail::e4m3_is_nan(codes.data[i]), where,
              dir + ": tensor '" + codes.name + "' has a NaN code at " + place_text(i, codes.shape));
}

// Whether some code times the tensor's largest scale could overflow float32 (scales that large are never
// published): only then is each code checked against its own scale (check_fp8_products).
inline bool fp8_may_overflow(const FloatValues& scales) {
  float largest = 0.0f;
  for (Index b = 0; b < scales.tensor().elements(); ++b) largest = std::fmax(largest, std::fabs(scales.data()[b]));
  return largest * ::moe::detail::kE4m3Max > std::numeric_limits<float>::max();
}

// Refuses a code whose value times its scale (scale_at(i), for the row-major index i) is not a finite
// float32, naming both tensors; in decoding to f32 (--dtype f32, bf16, ...) it would be Inf.
template <class ScaleAt>
void check_fp8_products(const std::string& dir, const TensorView& codes, const FloatValues& scales,
                        ScaleAt&& scale_at) {
  for (Index i = 0; i < codes.elements(); ++i) {
    const float code = ::moe::detail::e4m3_to_float(codes.data[i]), scale = scale_at(i);
    MOE_CHECK(std::isfinite(code * scale), "io::load_block",
              dir + ": tensor '" + codes.name + "' at " + place_text(i, codes.shape) + ": code " +
                  ::moe::detail::float_text(code) + " times its scale in '" + scales.tensor().name + "' (" +
                  ::moe::detail::float_text(scale) + ") overflows float32");
  }
}

// An F8_E4M3 weight W[out][in] of the checkpoint and its scales, checked (checked_tensor, check_fp8_values), as
// the Fp8BlockView that Layer::set_expert takes. The codes stay in the file's mapping; F32 scales too, others
// are converted.
class Fp8Tensor {
public:
  Fp8Tensor(const Checkpoint& ckpt, const std::string& name, const std::vector<Index>& shape, const BlockSpec& spec,
            bool expert)
      : t_(checked_tensor(ckpt, name, shape, spec, expert)), scales_(ckpt.tensor(spec.fp8_scale_name(name))) {
    MOE_CHECK(t_.dtype == DType::F8_E4M3, "io::load_block", ckpt.dir() + ": tensor '" + name + "' is not F8_E4M3");
    check_fp8_values(ckpt.dir(), t_, scales_);
    view_ =
        Fp8BlockView{t_.data, scales_.data(), shape[0], shape[1], spec.fp8_scale_rows(), spec.fp8_scale_cols(shape[1])};
    if (fp8_may_overflow(scales_))
      check_fp8_products(ckpt.dir(), t_, scales_, [this](Index i) {
        return view_.row_scales(i / view_.cols)[i % view_.cols / view_.block_cols];
      });
  }
  const Fp8BlockView& view() const { return view_; }

private:
  const TensorView& t_;
  FloatValues scales_;
  Fp8BlockView view_;
};

// A tensor of the checkpoint as f32 rows: the mapped data itself when it is f32, else converted; an F8_E4M3
// tensor is decoded and multiplied by its scales (each value code * scale, rounded once to f32).
class TensorAsFloat {
public:
  TensorAsFloat(const Checkpoint& ckpt, const std::string& name, std::vector<Index> shape, const BlockSpec& spec,
                bool expert = true) {
    const TensorView& view = checked_tensor(ckpt, name, shape, spec, expert);
    if (view.dtype != DType::F8_E4M3) {
      values_.emplace(view);
      data_ = values_->data();
      return;
    }
    decoded_.resize(std::size_t(view.elements()));
    const Fp8Tensor fp8(ckpt, name, shape, spec, expert);
    for (Index r = 0; r < shape[0]; ++r) fp8.view().decode_row(r, decoded_.data() + r * shape[1]);
    data_ = decoded_.data();
  }
  const float* data() const { return data_; }

private:
  const float* data_ = nullptr;
  std::optional<FloatValues> values_;
  std::vector<float> decoded_;
};

// out (count x in, row-major) = the columns first, first + step, ... of m (in x width, row-major): rows of
// W[out][in] gathered from a matrix stored for x W.
template <class T>
void gather_columns(const T* m, Index in, Index width, Index first, Index step, Index count, T* out) {
  for (Index i = 0; i < in; ++i)
    for (Index r = 0; r < count; ++r) out[r * in + i] = m[i * width + first + step * r];
}

// A 3-D F8_E4M3 tensor, experts x in x out (x W), with one scale per expert and output (fbgemm_fp8's Llama 4
// experts: BlockSpec::fp8_row_scales), checked whole at construction; rows() gathers expert e's W[out][in]
// rows for some outputs, with their scales, as the Fp8BlockView Layer::set_expert takes.
class TransposedFp8 {
public:
  TransposedFp8(const Checkpoint& ckpt, const std::string& name, const BlockSpec& spec)
      : t_(ckpt.tensor(name)), scales_(ckpt.tensor(spec.fp8_scale_name(name))) {
    check_fp8_values(ckpt.dir(), t_, scales_);
    if (fp8_may_overflow(scales_)) {
      const Index in = t_.shape[1], width = t_.shape[2];
      check_fp8_products(ckpt.dir(), t_, scales_,
                         [&](Index i) { return scales_.data()[i / (in * width) * width + i % width]; });
    }
  }
  // Expert e's outputs first, first + step, ... (count of them), their codes into `codes`, scales into `scales`.
  Fp8BlockView rows(Index e, Index first, Index step, Index count, std::vector<std::uint8_t>& codes,
                    std::vector<float>& scales) const {
    const Index in = t_.shape[1], width = t_.shape[2];
    codes.resize(std::size_t(count * in));
    scales.resize(std::size_t(count));
    gather_columns(t_.data + e * in * width, in, width, first, step, count, codes.data());
    for (Index r = 0; r < count; ++r) scales[std::size_t(r)] = scales_.data()[e * width + first + step * r];
    return Fp8BlockView{codes.data(), scales.data(), count, in, 1, in};
  }

private:
  const TensorView& t_;
  FloatValues scales_;
};

// Expert e's slice of a tensor stacked by expert (its first dimension), as f32: the whole tensor is never
// converted at once (Llama 4 Scout's gate_up_proj is 2.7 GB of bf16 a layer).
inline void expert_slice_as_float(const TensorView& t, Index e, std::vector<float>& out) {
  TensorView slice = t;
  slice.shape.erase(slice.shape.begin());
  const Index elements = slice.elements();
  slice.bytes = std::size_t(elements) * dtype_size(t.dtype);
  slice.data = t.data + std::size_t(e) * slice.bytes;
  out.resize(std::size_t(elements));
  to_float(slice, out.data());
}

// The name of a tensor that holds expert weights as stored (what --dtype auto and --list-layers describe).
inline std::string stored_expert_tensor(const BlockSpec& spec) {
  return spec.mxfp4 ? spec.up.front() + "_blocks" : spec.up.front();
}

// Expert e's W[out][in], rows x cols, of an MXFP4 pair base_blocks / base_scales (BlockSpec::mxfp4), decoded
// into out: each code's E2M1 value times 2^(scale - 127), exact in f32 (ldexp of a 2-bit significand). An
// E8M0 scale of 0xff (NaN), and one whose codes overflow f32 (2^126 and 2^127 times codes from 4 and 2 on),
// are refused, naming their place.
inline void decode_mxfp4_expert(const Checkpoint& ckpt, const std::string& base, Index e, Index rows, Index cols,
                                float* out) {
  const TensorView& blocks = ckpt.tensor(base + "_blocks");
  const TensorView& scales = ckpt.tensor(base + "_scales");
  const Index groups = cols / 32;
  for (Index r = 0; r < rows; ++r) {
    const std::uint8_t* scale = scales.data + (e * rows + r) * groups;
    const std::uint8_t* codes = blocks.data + (e * rows + r) * groups * 16;
    for (Index g = 0; g < groups; ++g) {
      MOE_CHECK(!::moe::detail::e8m0_is_nan(scale[g]), "io::load_block",
                ckpt.dir() + ": tensor '" + base + "_scales' has the NaN scale 0xff at (" + std::to_string(e) + ", " +
                    std::to_string(r) + ", " + std::to_string(g) + ")");
      const int exponent = ::moe::detail::e8m0_exponent(scale[g]);
      float* row = out + r * cols + g * 32;
      float largest = 0.0f;
      for (int i = 0; i < 16; ++i) {
        const std::uint8_t byte = codes[g * 16 + i];
        row[2 * i] = std::ldexp(::moe::detail::e2m1_to_float(byte & 0x0f), exponent);
        row[2 * i + 1] = std::ldexp(::moe::detail::e2m1_to_float(byte >> 4), exponent);
        largest = std::fmax(largest, std::fmax(std::fabs(row[2 * i]), std::fabs(row[2 * i + 1])));
      }
      MOE_CHECK(largest <= std::numeric_limits<float>::max(), "io::load_block",
                ckpt.dir() + ": tensor '" + base + "_scales' has the scale 2^" + std::to_string(exponent) + " at (" +
                    std::to_string(e) + ", " + std::to_string(r) + ", " + std::to_string(g) +
                    "), whose block overflows float32");
    }
  }
}

// Whether every tensor named is F8_E4M3: an expert whose projections all are loads through Fp8BlockView.
inline bool all_fp8(const Checkpoint& ckpt, std::initializer_list<const std::string*> names) {
  for (const std::string* name : names)
    if (ckpt.tensor(*name).dtype != DType::F8_E4M3) return false;
  return true;
}

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
    if (!spec_.router_bias.empty()) {
      TensorAsFloat bias(ckpt, spec_.router_bias, {c.num_experts}, spec_, false);
      layer.set_router_bias(bias.data());
    }
    // Where gate unit f and up unit f sit among the 2 ffn outputs of gate_up_proj: halves, or interleaved.
    const Index gate_at = 0, up_at = spec_.interleaved ? 1 : F, step = spec_.interleaved ? 2 : 1;
    if (spec_.mxfp4) {
      // gpt-oss as published: W[out][in] blocks, gate_up_proj's rows interleaved.
      std::vector<float> gate_up(std::size_t(2 * F * H)), down(std::size_t(H * F));
      for (int e = 0; e < E; ++e) {
        decode_mxfp4_expert(ckpt, spec_.gate[0], e, 2 * F, H, gate_up.data());
        decode_mxfp4_expert(ckpt, spec_.down[0], e, H, F, down.data());
        layer.set_expert(e, WeightView(gate_up.data() + gate_at * H, F, H, step * H),
                         WeightView(gate_up.data() + up_at * H, F, H, step * H), WeightView(down.data(), H, F));
        if (progress) progress(e + 1, E);
      }
    } else if (spec_.transposed) {
      // Llama 4 and gpt-oss re-saved: x W with W = gate_up_proj[e], hidden x (2 ffn), and down_proj[e],
      // ffn x hidden; the layer's W[out][in] are their transposes.
      const TensorView& gate_up = checked_tensor(ckpt, spec_.gate[0], {E, H, 2 * F}, spec_, true);
      const TensorView& down_t = checked_tensor(ckpt, spec_.down[0], {E, F, H}, spec_, true);
      const bool fp8 = gate_up.dtype == DType::F8_E4M3;
      MOE_CHECK(
          fp8 == (down_t.dtype == DType::F8_E4M3), "io::load_block",
          ckpt.dir() + ": tensors '" + spec_.gate[0] + "' and '" + spec_.down[0] + "' must both be F8_E4M3 or neither");
      if (fp8) {
        const TransposedFp8 gate_up8(ckpt, spec_.gate[0], spec_), down8(ckpt, spec_.down[0], spec_);
        std::vector<std::uint8_t> gate, up, down;
        std::vector<float> gate_scales, up_scales, down_scales;
        for (int e = 0; e < E; ++e) {
          layer.set_expert(e, gate_up8.rows(e, gate_at, step, F, gate, gate_scales),
                           gate_up8.rows(e, up_at, step, F, up, up_scales), down8.rows(e, 0, 1, H, down, down_scales));
          if (progress) progress(e + 1, E);
        }
      } else {
        std::vector<float> slice, gate(std::size_t(F * H)), up(std::size_t(F * H)), down(std::size_t(H * F));
        for (int e = 0; e < E; ++e) {
          expert_slice_as_float(gate_up, e, slice);
          gather_columns(slice.data(), H, 2 * F, gate_at, step, F, gate.data());
          gather_columns(slice.data(), H, 2 * F, up_at, step, F, up.data());
          expert_slice_as_float(down_t, e, slice);
          gather_columns(slice.data(), F, H, 0, 1, H, down.data());
          layer.set_expert(e, WeightView(gate.data(), F, H), WeightView(up.data(), F, H),
                           WeightView(down.data(), H, F));
          if (progress) progress(e + 1, E);
        }
      }
    } else if (spec_.stacked) {
      TensorAsFloat gate_up(ckpt, spec_.gate[0], {E, 2 * F, H}, spec_), down(ckpt, spec_.down[0], {E, H, F}, spec_);
      for (int e = 0; e < E; ++e) {
        const float* rows = gate_up.data() + Index(e) * 2 * F * H;
        layer.set_expert(e, WeightView(rows, F, H), WeightView(rows + F * H, F, H),
                         WeightView(down.data() + Index(e) * H * F, H, F));
        if (progress) progress(e + 1, E);
      }
    } else if (spec_.fused) {
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
        const std::size_t i = std::size_t(e);
        if (c.ffn.gated && all_fp8(ckpt, {&spec_.gate[i], &spec_.up[i], &spec_.down[i]})) {
          const Fp8Tensor gate(ckpt, spec_.gate[i], {F, H}, spec_, true), up(ckpt, spec_.up[i], {F, H}, spec_, true),
              down(ckpt, spec_.down[i], {H, F}, spec_, true);
          layer.set_expert(e, gate.view(), up.view(), down.view());
          if (progress) progress(e + 1, E);
          continue;
        }
        TensorAsFloat up(ckpt, spec_.up[i], {F, H}, spec_);
        TensorAsFloat down(ckpt, spec_.down[i], {H, F}, spec_);
        if (c.ffn.gated) {
          TensorAsFloat gate(ckpt, spec_.gate[i], {F, H}, spec_);
          layer.set_expert(e, WeightView(gate.data(), F, H), WeightView(up.data(), F, H),
                           WeightView(down.data(), H, F));
        } else {
          layer.set_expert(e, WeightView(up.data(), F, H), WeightView(down.data(), H, F));
        }
        if (progress) progress(e + 1, E);
      }
    }
    if (c.num_shared_experts > 0 && all_fp8(ckpt, {&spec_.shared_gate_proj, &spec_.shared_up, &spec_.shared_down})) {
      const Index Fs = c.shared_ffn_size;
      const Fp8Tensor gate(ckpt, spec_.shared_gate_proj, {Fs, H}, spec_, false),
          up(ckpt, spec_.shared_up, {Fs, H}, spec_, false), down(ckpt, spec_.shared_down, {H, Fs}, spec_, false);
      layer.set_shared_expert(0, gate.view(), up.view(), down.view());
    } else if (c.num_shared_experts > 0) {
      const Index Fs = c.shared_ffn_size;
      TensorAsFloat gate(ckpt, spec_.shared_gate_proj, {Fs, H}, spec_, false),
          up(ckpt, spec_.shared_up, {Fs, H}, spec_, false), down(ckpt, spec_.shared_down, {H, Fs}, spec_, false);
      layer.set_shared_expert(0, WeightView(gate.data(), Fs, H), WeightView(up.data(), Fs, H),
                              WeightView(down.data(), H, Fs));
    }
    if (c.num_shared_experts > 0 && c.shared_expert_gate) {
      TensorAsFloat g(ckpt, spec_.shared_expert_gate, {1, H}, spec_, false);
      layer.set_shared_expert_gate(0, WeightView(g.data(), 1, H));
    }
    if (!spec_.gate_up_bias.empty()) {
      TensorAsFloat gate_up(ckpt, spec_.gate_up_bias, {E, 2 * F}, spec_, false),
          down(ckpt, spec_.down_bias, {E, H}, spec_, false);
      std::vector<float> gate(static_cast<std::size_t>(F)), up(static_cast<std::size_t>(F));
      for (int e = 0; e < E; ++e) {
        const float* row = gate_up.data() + Index(e) * 2 * F;
        for (Index f = 0; f < F; ++f) {
          gate[std::size_t(f)] = row[gate_at + step * f];
          up[std::size_t(f)] = row[up_at + step * f];
        }
        layer.set_expert_bias(e, gate.data(), up.data(), down.data() + Index(e) * H);
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
      if (!spec.bias_tensor.empty()) {
        TensorAsFloat bias(ckpt, spec.bias_tensor, {spec.config.num_experts}, spec, false);
        r.bias.assign(bias.data(), bias.data() + spec.config.num_experts);
      }
      return make_layer(precision, spec.config, r);
    }
    case BlockSpec::Router::SoftmaxGroupTopK: {
      SoftmaxGroupTopK r;
      r.groups = spec.groups;
      r.topk_groups = spec.topk_groups;
      r.scaling = spec.scaling;
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
    if (view.dtype == DType::F8_E4M3) visit(ckpt.tensor(spec.fp8_scale_name(name)));
  };
  check(spec.router_tensor, {E, H}, false);
  if (!spec.bias_tensor.empty()) check(spec.bias_tensor, {E}, false);
  if (!spec.router_bias.empty()) check(spec.router_bias, {E}, false);
  if (spec.mxfp4) {
    check(spec.gate.front() + "_blocks", {E, 2 * F, H / 32, 16}, true);
    check(spec.gate.front() + "_scales", {E, 2 * F, H / 32}, true);
    check(spec.down.front() + "_blocks", {E, H, F / 32, 16}, true);
    check(spec.down.front() + "_scales", {E, H, F / 32}, true);
  } else if (spec.transposed) {
    check(spec.gate.front(), {E, H, 2 * F}, true);
    check(spec.down.front(), {E, F, H}, true);
  } else if (spec.stacked) {
    check(spec.gate.front(), {E, 2 * F, H}, true);
    check(spec.down.front(), {E, H, F}, true);
  } else if (spec.fused) {
    for (const auto* names : {&spec.gate, &spec.up, &spec.down}) check(names->front(), {E * F, H}, true);
  } else {
    for (std::size_t e = 0; e < std::size_t(E); ++e) {
      check(spec.up[e], {F, H}, true);
      check(spec.down[e], {H, F}, true);
      if (c.ffn.gated) check(spec.gate[e], {F, H}, true);
    }
  }
  if (!spec.gate_up_bias.empty()) {
    check(spec.gate_up_bias, {E, 2 * F}, false);
    check(spec.down_bias, {E, H}, false);
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
// (the checkpoint's own: f32, bf16, f16, mxfp4 for MXFP4, or fp8 for F8_E4M3 weights in blocks of a multiple
// of 128 inputs or scaled per row, f32 for other FP8 blocks: each code times its scale rounded once) or one of
// precision_names().
// progress(done, total), if given, is called as experts load.
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
    const DType stored = ckpt.tensor(detail::stored_expert_tensor(spec)).dtype;
    // FP8 stays fp8 where its blocks hold whole 128-input scale blocks of the fp8 precision, or a scale covers
    // a whole row (then the codes and scales are kept as published); other blocks are decoded to f32, each
    // code times its scale rounded once.
    const bool fp8_exact = stored == DType::F8_E4M3 && (spec.fp8_row_scales || spec.fp8_block_cols % fp8::kBlock == 0);
    // MXFP4 weights stay mxfp4: decoded at load, each expert's f32 values pack back into the same codes and
    // scales (precisions/mxfp4.hpp).
    chosen = spec.mxfp4              ? "mxfp4"
             : stored == DType::BF16 ? "bf16"
             : stored == DType::F16  ? "f16"
             : fp8_exact             ? "fp8"
                                     : "f32";
  }
  auto block = std::make_unique<detail::Block>(spec, detail::make_block_layer(spec, ckpt, chosen));
  block->load(ckpt, progress);
  return block;
}

}  // namespace io
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
