// moe/expert.hpp: an expert's feed-forward network and its weights, packed for the kernels.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>
#include <type_traits>

#include "config.hpp"
#include "fp8_block_view.hpp"
#include "kernels/activation.hpp"
#include "kernels/gemm.hpp"
#include "kernels/quantize.hpp"
#include "kernels/reduce.hpp"
#include "precision.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// What an expert computes from a token x (hidden_size) with hidden width ffn_size:
//   gated: down( act(x W_gate^T) * (x W_up^T) )      SwiGLU (Mixtral, Qwen, DeepSeek, OLMoE), GeGLU
//   plain: down( act(x W_up^T) )                      Switch / GShard MLPs (ReLU, GELU)
// with, where an expert has them (Layer::set_expert_bias), a bias added to each projection's output.
// gpt-oss's gated SiLU is clamped: with g and u the gate and up values,
//   h = (clamp(u, -limit, limit) + up_offset) * g' sigmoid(alpha g'),   g' = min(g, limit);
// the defaults (alpha 1, no limit, no offset) are plain SwiGLU. Only a gated SiLU expert takes them.
struct FfnType {
  Activation activation = Activation::SiLU;
  bool gated = true;
  float alpha = 1.0f;
  float limit = std::numeric_limits<float>::infinity();
  float up_offset = 0.0f;

  bool clamped() const { return alpha != 1.0f || limit != std::numeric_limits<float>::infinity() || up_offset != 0.0f; }
};
inline constexpr FfnType SwiGLU{Activation::SiLU, true};
// gpt-oss's experts (transformers' GptOssExperts: alpha 1.702, limit 7, (up + 1)).
inline constexpr FfnType GptOssSwiGLU{Activation::SiLU, true, 1.702f, 7.0f, 1.0f};
inline constexpr FfnType GeGLU{Activation::GELU, true};
inline constexpr FfnType GeluMLP{Activation::GELU, false};
inline constexpr FfnType ReluMLP{Activation::ReLU, false};

// A read-only view of a row-major weight matrix in the PyTorch layout W[out][in].
struct WeightView {
  const float* data = nullptr;
  Index rows = 0;
  Index cols = 0;
  Index stride = 0;  // distance between rows, in floats

  WeightView() = default;
  WeightView(const float* d, Index r, Index c, Index s = 0) : data(d), rows(r), cols(c), stride(s ? s : c) {}
};

namespace detail {

// A weight view has data, the expected shape, and rows at least as far apart as they are wide.
inline void check_view(const WeightView& w, Index rows, Index cols, const char* where, const std::string& what) {
  MOE_CHECK(w.data != nullptr, where, what + " is null");
  MOE_CHECK(w.rows == rows && w.cols == cols, where,
            what + " is " + std::to_string(w.rows) + " x " + std::to_string(w.cols) + ", expected " +
                std::to_string(rows) + " x " + std::to_string(cols));
  MOE_CHECK(w.stride >= cols, where, what + " has a row stride below its width");
}

}  // namespace detail

// One expert's weights, packed: the input projection (gate and up interleaved when gated) and the down
// projection, both as column panels. The hidden activation between them is ffn_padded() wide, a whole
// number of panels, and the padding is zero in both projections, so it never changes a result.
template <class Precision>
class ExpertWeights {
public:
  using Panels = detail::kernels::PanelMatrix<Precision>;

  // Hidden units one input-projection panel produces: half a panel when gate and up share it.
  static constexpr Index hidden_per_panel(bool gated) {
    return gated ? detail::kernels::kPanelColumns / 2 : detail::kernels::kPanelColumns;
  }
  // Also whole activation steps (kernels/quantize.hpp; powers of two: the larger is a multiple of both).
  static constexpr Index ffn_padded(Index ffn_size, bool gated) {
    const Index panel = hidden_per_panel(gated);
    const Index block = detail::kernels::kActivationStep<Precision>;
    return detail::simd::round_up(ffn_size, panel > block ? panel : block);
  }

  // gate is ignored (may be empty) for a plain MLP. `where` and `what` name the caller and the expert in
  // error messages. View is WeightView (f32) or Fp8BlockView (FP8 codes with block scales).
  template <class View>
  void load(const FfnType& type, Index hidden_size, Index ffn_size, const View& gate, const View& up, const View& down,
            const char* where, const std::string& what) {
    if (type.gated) check_matrix(gate, ffn_size, hidden_size, where, what + " gate weight");
    check_matrix(up, ffn_size, hidden_size, where, what + " up weight");
    check_matrix(down, hidden_size, ffn_size, where, what + " down weight");
    const Index padded = ffn_padded(ffn_size, type.gated);
    ffn_padded_ = 0;  // not loaded until both projections are packed (packing may throw bad_alloc)
    // The input projection has a column per hidden unit of the padded width (padding zero), so its panels
    // produce every hidden value the down projection reads.
    if constexpr (std::is_same<View, Fp8BlockView>::value) {
      input_.pack_gated(gate, up, padded);  // Fp8BlockView experts are gated (Layer::set_expert)
      down_.pack(down, padded);
    } else {
      if (type.gated)
        input_.pack_gated(gate.data, up.data, ffn_size, hidden_size, gate.stride, up.stride, padded);
      else
        input_.pack(up.data, ffn_size, hidden_size, up.stride, hidden_size, padded);
      down_.pack(down.data, hidden_size, ffn_size, down.stride, padded);
    }
    gated_ = type.gated;
    ffn_padded_ = padded;
  }

  // Biases on the projections' outputs: gate and up (ffn_size each; gate null for a plain MLP) and down
  // (hidden_size), kept padded to the panels with zeros (0 in the padding keeps the padded hidden units
  // act(0) * 0 = 0 for gated experts; a plain expert's padded units are act(0) = 0 for every activation here).
  // Null pointers for all three remove them. The expert must be loaded.
  void set_bias(Index hidden_size, Index ffn_size, const float* gate, const float* up, const float* down) {
    if (up == nullptr && gate == nullptr && down == nullptr) {
      input_bias_.clear();
      down_bias_.clear();
      return;
    }
    const Index panel = detail::kernels::kPanelColumns;
    input_bias_.assign(std::size_t(2 * ffn_padded_), 0.0f);
    down_bias_.assign(std::size_t(detail::simd::round_up(hidden_size, panel)), 0.0f);
    if (gate) std::copy(gate, gate + ffn_size, input_bias_.begin());
    if (up) std::copy(up, up + ffn_size, input_bias_.begin() + ffn_padded_);
    if (down) std::copy(down, down + hidden_size, down_bias_.begin());
  }
  bool has_bias() const { return !down_bias_.empty(); }
  // The gate biases of hidden units [unit, ...), and the up biases (a plain MLP's only ones); the down biases
  // of outputs [column, ...). Null without biases.
  const float* gate_bias(Index unit) const { return has_bias() ? input_bias_.data() + unit : nullptr; }
  const float* up_bias(Index unit) const { return has_bias() ? input_bias_.data() + ffn_padded_ + unit : nullptr; }
  const float* down_bias(Index column) const { return has_bias() ? down_bias_.data() + column : nullptr; }

  bool loaded() const { return ffn_padded_ > 0; }
  bool gated() const { return gated_; }
  Index ffn_padded() const { return ffn_padded_; }
  const Panels& input_projection() const { return input_; }
  const Panels& down_projection() const { return down_; }
  // Bytes a pass reads when this expert runs (padding included: it is streamed too).
  double bytes() const { return input_.bytes() + down_.bytes(); }

private:
  static void check_matrix(const WeightView& w, Index rows, Index cols, const char* where, const std::string& what) {
    detail::check_view(w, rows, cols, where, what);
    for (Index r = 0; r < rows; ++r) {
      const float* row = w.data + r * w.stride;
      MOE_CHECK(detail::kernels::all_finite(row, cols), where, what + " has NaN or Inf in row " + std::to_string(r));
      for (Index c = 0; c < cols && max_magnitude<Precision>() < max_magnitude<f32>(); ++c)
        MOE_CHECK(std::fabs(row[c]) <= max_magnitude<Precision>(), where,
                  what + " " + detail::float_text(row[c]) + " at (" + std::to_string(r) + ", " + std::to_string(c) +
                      ") is outside the range of " + TypeName<Precision>());
    }
  }

  static void check_matrix(const Fp8BlockView& w, Index rows, Index cols, const char* where, const std::string& what) {
    MOE_CHECK(w.codes != nullptr && w.scales != nullptr, where, what + " has null codes or scales");
    MOE_CHECK(w.rows == rows && w.cols == cols, where,
              what + " is " + std::to_string(w.rows) + " x " + std::to_string(w.cols) + ", expected " +
                  std::to_string(rows) + " x " + std::to_string(cols));
    MOE_CHECK(w.block_rows >= 1 && w.block_cols >= 1, where, what + " has a block of 0 rows or columns");
    // A precision that keeps the scales (fp8) stores each times 2^8 (precisions/fp8.hpp): it must stay finite.
    constexpr bool kKeepsScales = detail::kernels::packs_e4m3<Precision>::value;
    constexpr float kLargestScale = kKeepsScales ? 3.4028234663852886e38f / 256.0f : 3.4028234663852886e38f;
    const Index block_rows = (rows + w.block_rows - 1) / w.block_rows;
    for (Index b = 0; b < block_rows * w.scale_cols(); ++b)
      MOE_CHECK(std::isfinite(w.scales[b]) && std::fabs(w.scales[b]) <= kLargestScale, where,
                what + " has block scale " + detail::float_text(w.scales[b]) + " at block (" +
                    std::to_string(b / w.scale_cols()) + ", " + std::to_string(b % w.scale_cols()) +
                    (kKeepsScales ? "): NaN, Inf or above 2^120" : "): NaN or Inf"));
    for (Index r = 0; r < rows; ++r) {
      const std::uint8_t* row = w.codes + r * cols;
      const float* scales = w.row_scales(r);
      for (Index c = 0; c < cols; ++c) {
        MOE_CHECK(!detail::e4m3_is_nan(row[c]), where,
                  what + " has a NaN code at (" + std::to_string(r) + ", " + std::to_string(c) + ")");
        const float value = detail::e4m3_to_float(row[c]) * scales[c / w.block_cols];
        MOE_CHECK(std::fabs(value) <= max_magnitude<Precision>(), where,
                  what + " " + detail::float_text(value) + " at (" + std::to_string(r) + ", " + std::to_string(c) +
                      ") is outside the range of " + TypeName<Precision>());
      }
    }
  }

  Panels input_;
  Panels down_;
  std::vector<float> input_bias_;  // gate, then up: ffn_padded_ each
  std::vector<float> down_bias_;   // hidden_size rounded up to a panel
  Index ffn_padded_ = 0;
  bool gated_ = true;
};

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
