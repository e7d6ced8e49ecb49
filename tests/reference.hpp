// tests/reference.hpp: a plainly written MoE layer to check the library against.
//
// One token at a time, scalar loops, double accumulation, every expert computed and then masked by the
// routing: nothing here shares code with include/moe/ beyond the LayerConfig it reads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <moe/moe.hpp>

namespace reference {

using Matrix = std::vector<float>;  // row-major, PyTorch layout W[out][in]

struct Weights {
  Matrix router;                                                 // E x H
  std::vector<Matrix> gate, up, down;                            // per routed expert: F x H, F x H, H x F
  std::vector<Matrix> shared_gate_proj, shared_up, shared_down;  // per shared expert
  std::vector<Matrix> shared_gate;                               // per shared expert: 1 x H (when gated)
  // Optional (empty: none): per routed expert, biases on gate (F; empty for plain MLPs), up (F), down (H);
  // a bias on the router's logits (E).
  std::vector<Matrix> gate_bias, up_bias, down_bias;
  Matrix router_bias;
};

inline Matrix random_matrix(std::mt19937& rng, std::int64_t rows, std::int64_t cols, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  Matrix m(static_cast<std::size_t>(rows * cols));
  for (float& v : m) v = normal(rng);
  return m;
}

// Weights scaled like a trained layer's (1/sqrt(fan_in)) so activations neither vanish nor explode.
inline Weights random_weights(const moe::LayerConfig& c, unsigned seed, float router_scale = 1.0f) {
  std::mt19937 rng(seed);
  const auto H = c.hidden_size, F = c.ffn_size;
  const auto Fs = c.shared_ffn_size ? c.shared_ffn_size : c.ffn_size;
  const float in_scale = 1.0f / std::sqrt(float(H));
  Weights w;
  w.router = random_matrix(rng, c.num_experts, H, router_scale * in_scale);
  for (int e = 0; e < c.num_experts; ++e) {
    w.gate.push_back(c.ffn.gated ? random_matrix(rng, F, H, in_scale) : Matrix());
    w.up.push_back(random_matrix(rng, F, H, in_scale));
    w.down.push_back(random_matrix(rng, H, F, 1.0f / std::sqrt(float(F))));
  }
  for (int s = 0; s < c.num_shared_experts; ++s) {
    w.shared_gate_proj.push_back(c.ffn.gated ? random_matrix(rng, Fs, H, in_scale) : Matrix());
    w.shared_up.push_back(random_matrix(rng, Fs, H, in_scale));
    w.shared_down.push_back(random_matrix(rng, H, Fs, 1.0f / std::sqrt(float(Fs))));
    if (c.shared_expert_gate) w.shared_gate.push_back(random_matrix(rng, 1, H, in_scale));
  }
  return w;
}

// Gives every routed expert biases on its projections, and the router a bias (gpt-oss's experts and router).
inline void add_random_biases(const moe::LayerConfig& c, Weights& w, unsigned seed) {
  std::mt19937 rng(seed);
  for (int e = 0; e < c.num_experts; ++e) {
    w.gate_bias.push_back(c.ffn.gated ? random_matrix(rng, 1, c.ffn_size, 0.5f) : Matrix());
    w.up_bias.push_back(random_matrix(rng, 1, c.ffn_size, 0.5f));
    w.down_bias.push_back(random_matrix(rng, 1, c.hidden_size, 0.5f));
  }
  w.router_bias = random_matrix(rng, 1, c.num_experts, 0.5f);
}

// Hands the weights to a library layer through the pointer API.
template <class Layer>
void load(Layer& layer, const Weights& w) {
  const moe::LayerConfig& c = layer.config();
  const auto H = c.hidden_size, F = c.ffn_size, Fs = c.shared_ffn_size;
  layer.set_router(moe::WeightView(w.router.data(), c.num_experts, H));
  for (int e = 0; e < c.num_experts; ++e) {
    if (c.ffn.gated)
      layer.set_expert(e, moe::WeightView(w.gate[e].data(), F, H), moe::WeightView(w.up[e].data(), F, H),
                       moe::WeightView(w.down[e].data(), H, F));
    else
      layer.set_expert(e, moe::WeightView(w.up[e].data(), F, H), moe::WeightView(w.down[e].data(), H, F));
  }
  for (int s = 0; s < c.num_shared_experts; ++s) {
    if (c.ffn.gated)
      layer.set_shared_expert(s, moe::WeightView(w.shared_gate_proj[s].data(), Fs, H),
                              moe::WeightView(w.shared_up[s].data(), Fs, H),
                              moe::WeightView(w.shared_down[s].data(), H, Fs));
    else
      layer.set_shared_expert(s, moe::WeightView(w.shared_up[s].data(), Fs, H),
                              moe::WeightView(w.shared_down[s].data(), H, Fs));
    if (c.shared_expert_gate) layer.set_shared_expert_gate(s, moe::WeightView(w.shared_gate[s].data(), 1, H));
  }
  for (std::size_t e = 0; e < w.down_bias.size(); ++e)
    layer.set_expert_bias(int(e), c.ffn.gated ? w.gate_bias[e].data() : nullptr, w.up_bias[e].data(),
                          w.down_bias[e].data());
  if (!w.router_bias.empty()) layer.set_router_bias(w.router_bias.data());
}

inline double activate(moe::Activation a, double x) {
  switch (a) {
    case moe::Activation::SiLU:
      return x / (1.0 + std::exp(-x));
    case moe::Activation::GELU:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case moe::Activation::GELUTanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case moe::Activation::ReLU:
      return x > 0 ? x : 0.0;
  }
  return 0.0;
}

// One expert's output on one token, with a bound on the error a float implementation may make.
struct ExpertOutput {
  std::vector<double> y;
  std::vector<double> error_bound;
};

// The largest |act'(x)| over the reals (SiLU 1.1, GELU 1.13, ReLU 1): how input errors can grow.
inline double max_slope(moe::Activation a) { return a == moe::Activation::ReLU ? 1.0 : 1.13; }

// How a precision's kernels see activations: as they are, as int8 codes (q8a8, q4a8), or rounded to bf16
// (bf16a16).
enum class Activations { Exact, Int8, Bf16 };

template <class Precision>
constexpr Activations activations_of() {
  if (moe::int8_activations<Precision>::value) return Activations::Int8;
  if (moe::bf16_activations<Precision>::value) return Activations::Bf16;
  return Activations::Exact;
}

// The most an int8 activation code (moe/kernels/quantize.hpp: blocks of 32 values, scale max|x| / 127)
// can be off from each value of v, given that each v[i] may itself be off by up to v_error[i] (so the block
// maximum, and with it the scale, may be too): half a step of the largest scale possible, and a margin for
// the f32 rounding of the scale and of x * 127 / max.
inline std::vector<double> int8_step_error(const std::vector<double>& v, const std::vector<double>& v_error) {
  std::vector<double> step(v.size());
  for (std::size_t b = 0; b < v.size(); b += 32) {
    const std::size_t end = std::min(v.size(), b + 32);
    double largest = 0;
    for (std::size_t i = b; i < end; ++i) largest = std::max(largest, std::abs(v[i]) + v_error[i]);
    for (std::size_t i = b; i < end; ++i) step[i] = 0.51 * largest / 127.0;
  }
  return step;
}

// The most a bf16 rounding of each value of v can be off, given that each v[i] may itself be off by up to
// v_error[i]: half a unit in the 8th significant bit of the largest value possible, at most
// 2^-8 (|v| + error) (a value just above a power of two, 2^e (1 + 2^-8), is a tie that rounds to 2^e), with a
// margin; and 2^-126 for a value vdpbf16ps treats as zero (a subnormal).
inline std::vector<double> bf16_step_error(const std::vector<double>& v, const std::vector<double>& v_error) {
  std::vector<double> step(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) step[i] = 1.01 * std::ldexp(std::abs(v[i]) + v_error[i], -8) + 0x1p-126;
  return step;
}

// What the activation coding adds to the error of values v that may already be off by v_error.
inline std::vector<double> activation_step_error(Activations coding, const std::vector<double>& v,
                                                 const std::vector<double>& v_error) {
  if (coding == Activations::Int8) return int8_step_error(v, v_error);
  if (coding == Activations::Bf16) return bf16_step_error(v, v_error);
  return std::vector<double>(v.size(), 0.0);
}

// down(act(gate x) * up x), or down(act(up x)). The bound is the classic one for float dot products of
// length n, |error| <= n * eps * sum |a_i b_i|, carried through the activation (its slope bounds how an
// input error grows) and the down projection, with one extra n for the rounding of the hidden values.
// With int8 or bf16 activations, x and the hidden values each also carry their coding's error
// (int8_step_error, bf16_step_error), carried the same way: the error the q8a8 / q4a8 / bf16a16 precisions
// add, stated as a bound. input_scale s runs the expert on s x (Llama 4's routed experts), each product
// s * w * x taken in double; s may be off by input_scale_error (relative), an error of each s x carried like
// the coding's.
// Biases (null: none) are added to the gate, up and down outputs; gpt-oss's clamped SwiGLU (FfnType::clamped)
// is computed as its definition reads.
struct Biases {
  const Matrix* gate = nullptr;
  const Matrix* up = nullptr;
  const Matrix* down = nullptr;
};

inline ExpertOutput ffn(const moe::FfnType& type, const float* x, const Matrix& gate, const Matrix& up,
                        const Matrix& down, std::int64_t H, std::int64_t F, Activations coding = Activations::Exact,
                        double input_scale = 1.0, double input_scale_error = 0.0, Biases bias = {}) {
  const double eps = std::numeric_limits<float>::epsilon();
  const std::vector<double> x_step =
      activation_step_error(coding, std::vector<double>(x, x + H), std::vector<double>(H, 0.0));
  std::vector<double> h(static_cast<std::size_t>(F)), h_error(static_cast<std::size_t>(F));
  for (std::int64_t f = 0; f < F; ++f) {
    double u = 0, g = 0, u_abs = 0, g_abs = 0, u_step = 0, g_step = 0;
    for (std::int64_t k = 0; k < H; ++k) {
      const double xs = input_scale * x[k], step = std::abs(input_scale) * x_step[k] + input_scale_error * std::abs(xs);
      u += double(up[f * H + k]) * xs;
      u_abs += std::abs(double(up[f * H + k]) * xs);
      u_step += std::abs(double(up[f * H + k])) * step;
      if (type.gated) {
        g += double(gate[f * H + k]) * xs;
        g_abs += std::abs(double(gate[f * H + k]) * xs);
        g_step += std::abs(double(gate[f * H + k])) * step;
      }
    }
    if (bias.up) {
      u += (*bias.up)[f];
      u_abs += std::abs((*bias.up)[f]);
    }
    if (bias.gate) {
      g += (*bias.gate)[f];
      g_abs += std::abs((*bias.gate)[f]);
    }
    // g sigmoid(alpha g) has the slope of SiLU at alpha g, at most 1.1, whatever alpha.
    const double slope = max_slope(type.activation);
    if (type.gated) {
      double a = activate(type.activation, g), uc = u;
      if (type.clamped()) {
        const double gc = std::min(g, double(type.limit));
        a = gc / (1.0 + std::exp(-double(type.alpha) * gc));
        uc = std::min(std::max(u, -double(type.limit)), double(type.limit)) + double(type.up_offset);
      }
      h[f] = a * uc;
      const double g_error = double(H) * eps * g_abs + g_step, u_error = double(H) * eps * u_abs + u_step;
      h_error[f] = slope * g_error * (std::abs(uc) + u_error) + std::abs(a) * u_error +
                   (type.clamped() ? 8 : 4) * eps * std::abs(h[f]);
    } else {
      h[f] = activate(type.activation, u);
      h_error[f] = slope * (double(H) * eps * u_abs + u_step) + 4 * eps * std::abs(h[f]);
    }
  }
  const std::vector<double> h_step = activation_step_error(coding, h, h_error);
  for (std::int64_t f = 0; f < F; ++f) h_error[f] += h_step[f];
  ExpertOutput out;
  out.y.assign(static_cast<std::size_t>(H), 0.0);
  out.error_bound.assign(static_cast<std::size_t>(H), 0.0);
  for (std::int64_t o = 0; o < H; ++o) {
    for (std::int64_t f = 0; f < F; ++f) {
      const double w = down[o * F + f];
      out.y[o] += w * h[f];
      out.error_bound[o] += std::abs(w) * (double(F) * eps * (std::abs(h[f]) + h_error[f]) + h_error[f]);
    }
    if (bias.down) {
      out.y[o] += (*bias.down)[o];
      out.error_bound[o] += 2 * eps * (std::abs(out.y[o]) + std::abs((*bias.down)[o]));
    }
  }
  return out;
}

enum class Gating { SoftmaxTopK, SoftmaxTopKRenormalized, Dense };

// The routing weight of each expert for one token (zero for experts not chosen).
inline std::vector<double> routing_weights(Gating gating, const std::vector<double>& logits, int k) {
  const int E = int(logits.size());
  const double top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(E);
  double sum = 0;
  for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(logits[e] - top));
  for (double& v : p) v /= sum;
  if (gating == Gating::Dense) return p;
  // Chosen: the k largest, ties to the lower index (a stable sort of indices by descending probability).
  std::vector<int> order(E);
  for (int e = 0; e < E; ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  std::vector<double> w(E, 0.0);
  double chosen = 0;
  for (int j = 0; j < k; ++j) chosen += p[order[j]];
  for (int j = 0; j < k; ++j)
    w[order[j]] = gating == Gating::SoftmaxTopKRenormalized ? p[order[j]] / chosen : p[order[j]];
  return w;
}

struct Output {
  std::vector<double> y;                    // tokens x H
  std::vector<double> error_bound;          // tokens x H: what float rounding may account for
  std::vector<std::vector<double>> weight;  // tokens x E routing weights
};

// The layer's output for routing weights given per token (tokens x E, zero where an expert does not run)
// and, per token, a weight of its input passed through (a dropped token under Switch's rule; 0 otherwise).
// weight_error: the relative error the weights may carry (router rounding); 0 for weights taken as given.
inline Output forward_with_weights(const moe::LayerConfig& c, const Weights& w,
                                   const std::vector<std::vector<double>>& weight, const std::vector<double>& pass,
                                   const float* x, std::int64_t tokens, double weight_error,
                                   Activations coding = Activations::Exact) {
  const std::int64_t H = c.hidden_size, F = c.ffn_size, Fs = c.shared_ffn_size ? c.shared_ffn_size : c.ffn_size;
  const int E = c.num_experts;
  Output out;
  out.y.assign(static_cast<std::size_t>(tokens * H), 0.0);
  out.error_bound.assign(static_cast<std::size_t>(tokens * H), 0.0);
  out.weight = weight;
  const double eps = std::numeric_limits<float>::epsilon();
  for (std::int64_t t = 0; t < tokens; ++t) {
    const float* xt = x + t * H;
    double* yt = out.y.data() + t * H;
    double* bt = out.error_bound.data() + t * H;
    for (int e = 0; e < E; ++e) {
      if (weight[t][e] == 0) continue;
      Biases bias;
      if (!w.down_bias.empty())
        bias = {w.gate_bias[e].empty() ? nullptr : &w.gate_bias[e], &w.up_bias[e], &w.down_bias[e]};
      if (c.scale_expert_input) {
        // expert(w x), added as it is; the weight's error is an error of the expert's input.
        const ExpertOutput ye =
            ffn(c.ffn, xt, w.gate[e], w.up[e], w.down[e], H, F, coding, weight[t][e], weight_error, bias);
        for (std::int64_t i = 0; i < H; ++i) {
          yt[i] += ye.y[i];
          bt[i] += ye.error_bound[i] + eps * std::abs(yt[i]);
        }
        continue;
      }
      const ExpertOutput ye = ffn(c.ffn, xt, w.gate[e], w.up[e], w.down[e], H, F, coding, 1.0, 0.0, bias);
      for (std::int64_t i = 0; i < H; ++i) {
        yt[i] += weight[t][e] * ye.y[i];
        bt[i] +=
            std::abs(weight[t][e]) * (ye.error_bound[i] + weight_error * std::abs(ye.y[i])) + eps * std::abs(yt[i]);
      }
    }
    for (std::int64_t i = 0; i < H; ++i) {
      yt[i] += pass[t] * xt[i];
      bt[i] += eps * (std::abs(pass[t] * xt[i]) + std::abs(yt[i]));
    }
    for (int s = 0; s < c.num_shared_experts; ++s) {
      double scale = 1.0;
      if (c.shared_expert_gate) {
        double g = 0;
        for (std::int64_t i = 0; i < H; ++i) g += double(w.shared_gate[s][i]) * xt[i];
        scale = 1.0 / (1.0 + std::exp(-g));
      }
      const ExpertOutput ys = ffn(c.ffn, xt, w.shared_gate_proj[s], w.shared_up[s], w.shared_down[s], H, Fs, coding);
      for (std::int64_t i = 0; i < H; ++i) {
        yt[i] += scale * ys.y[i];
        bt[i] += scale * (ys.error_bound[i] + double(H + 16) * eps * std::abs(ys.y[i])) + eps * std::abs(yt[i]);
      }
    }
  }
  return out;
}

inline Output forward(const moe::LayerConfig& c, const Weights& w, Gating gating, const float* x, std::int64_t tokens,
                      Activations coding = Activations::Exact) {
  const std::int64_t H = c.hidden_size;
  const int E = c.num_experts;
  const int k = gating == Gating::Dense ? E : c.top_k;
  std::vector<std::vector<double>> weight;
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::vector<double> logits(E, 0.0);
    for (int e = 0; e < E; ++e) {
      for (std::int64_t i = 0; i < H; ++i) logits[e] += double(w.router[e * H + i]) * x[t * H + i];
      if (!w.router_bias.empty()) logits[e] += w.router_bias[e];
    }
    weight.push_back(routing_weights(gating, logits, k));
  }
  // The router's logits carry errors too; they reach the output through the softmax weights, whose
  // relative error we bound by (H + 16) eps (a length-H dot product, then exp and a division).
  const double weight_error = double(H + 16) * std::numeric_limits<float>::epsilon();
  return forward_with_weights(c, w, weight, std::vector<double>(std::size_t(tokens), 0.0), x, tokens, weight_error,
                              coding);
}

}  // namespace reference
