// tests/layer_check.hpp: runs a library layer and the reference on the same weights and tokens, and
// checks the output element by element against the reference's rounding-error bound, and the routing
// against the reference's choice.
#pragma once

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <moe/any_layer.hpp>

#include "reference.hpp"
#include "synthetic_layer.hpp"

namespace check {

// Replaces every expert weight by the value the layer's precision stores (q8 scales and q4 blocks run
// along each output row, so each matrix goes through with its own shape); the router stays f32.
template <class Precision>
void round_trip_experts(const moe::LayerConfig& c, reference::Weights& w) {
  const moe::Index H = c.hidden_size, F = c.ffn_size, Fs = c.shared_ffn_size ? c.shared_ffn_size : c.ffn_size;
  auto each = [](std::vector<reference::Matrix>& matrices, moe::Index rows, moe::Index cols) {
    for (reference::Matrix& m : matrices)
      if (!m.empty()) moe::round_trip<Precision>(m.data(), rows, cols, cols, m.data());
  };
  each(w.gate, F, H);
  each(w.up, F, H);
  each(w.down, H, F);
  each(w.shared_gate_proj, Fs, H);
  each(w.shared_up, Fs, H);
  each(w.shared_down, H, Fs);
}

struct Result {
  std::vector<float> y;
  std::vector<int> ids;
  std::vector<float> weights;
};

inline reference::Gating gating_of(const moe::SoftmaxTopK& r) {
  return r.renormalize ? reference::Gating::SoftmaxTopKRenormalized : reference::Gating::SoftmaxTopK;
}
inline reference::Gating gating_of(const moe::DenseSoftmax&) { return reference::Gating::Dense; }

// make_layer's layer for Precision (the compiled one: moe-tests links moe::layers), with the members of a
// moe::Layer<Dynamic, Dynamic, Precision> that the tests use, so that the tests of every precision compile no
// forward pass of their own.
template <class Precision>
class CompiledLayer {
public:
  using WeightPrecision = Precision;
  explicit CompiledLayer(const moe::LayerConfig& config, const moe::SoftmaxTopK& routing = moe::SoftmaxTopK{})
      : layer_(moe::make_layer(Precision::kName, config, routing)) {}

  const moe::LayerConfig& config() const { return layer_->config(); }
  int experts() const { return layer_->experts(); }
  int top_k() const { return layer_->top_k(); }
  void set_router(const moe::WeightView& w) { layer_->set_router(w); }
  void set_expert(int e, const moe::WeightView& g, const moe::WeightView& u, const moe::WeightView& d) {
    layer_->set_expert(e, g, u, d);
  }
  void set_expert(int e, const moe::WeightView& u, const moe::WeightView& d) { layer_->set_expert(e, u, d); }
  void set_shared_expert(int s, const moe::WeightView& g, const moe::WeightView& u, const moe::WeightView& d) {
    layer_->set_shared_expert(s, g, u, d);
  }
  void set_shared_expert(int s, const moe::WeightView& u, const moe::WeightView& d) {
    layer_->set_shared_expert(s, u, d);
  }
  void set_shared_expert_gate(int s, const moe::WeightView& w) { layer_->set_shared_expert_gate(s, w); }
  void set_expert_bias(int e, const float* g, const float* u, const float* d) { layer_->set_expert_bias(e, g, u, d); }
  void set_router_bias(const float* b) { layer_->set_router_bias(b); }
  moe::Workspace workspace(moe::Index tokens, int threads = 0) const { return layer_->workspace(tokens, threads); }
  moe::RoutingResult forward(const float* x, moe::Index xs, float* y, moe::Index ys, moe::Index tokens,
                             moe::Workspace& ws) const {
    return layer_->forward(x, xs, y, ys, tokens, ws);
  }
  const moe::AnyLayer& any() const { return *layer_; }

private:
  std::unique_ptr<moe::AnyLayer> layer_;
};

// Builds Layer with `config`, runs `tokens` tokens with `threads` threads, compares with the reference.
// biases: the routed experts' projections and the router have biases (gpt-oss).
template <class Layer, class Routing>
Result against_reference(const moe::LayerConfig& config, const Routing& routing, moe::Index tokens, unsigned seed,
                         int threads = 0, bool biases = false) {
  reference::Weights w = reference::random_weights(config, seed, 4.0f);
  if (biases) reference::add_random_biases(config, w, seed + 7);
  Layer layer(config, routing);
  reference::load(layer, w);
  // The reference computes with the values the layer's precision stores (the router stays f32).
  round_trip_experts<typename Layer::WeightPrecision>(config, w);
  const std::vector<float> x = synthetic::tokens(tokens, config.hidden_size, seed + 1);
  Result result;
  result.y.assign(x.size(), std::nanf(""));  // the pass must overwrite every element
  moe::Workspace ws = layer.workspace(tokens + 3, threads);
  const moe::RoutingResult routed =
      layer.forward(x.data(), config.hidden_size, result.y.data(), config.hidden_size, tokens, ws);
  const reference::Output ref = reference::forward(layer.config(), w, check::gating_of(routing), x.data(), tokens,
                                                   reference::activations_of<typename Layer::WeightPrecision>());

  const moe::Index H = config.hidden_size;
  int bad = 0;
  for (moe::Index i = 0; i < tokens * H && bad < 5; ++i) {
    const double error = std::abs(double(result.y[i]) - ref.y[i]);
    if (!(error <= ref.error_bound[i])) {
      ++bad;
      INFO("token " << i / H << " column " << i % H << ": moe " << result.y[i] << " reference " << ref.y[i] << " error "
                    << error << " bound " << ref.error_bound[i]);
      CHECK(error <= ref.error_bound[i]);
    }
  }
  CHECK(bad == 0);

  const int E = layer.experts();
  REQUIRE(routed.tokens() == tokens);
  REQUIRE(routed.top_k() == layer.top_k());
  std::vector<int> counts(std::size_t(E), 0);
  for (moe::Index t = 0; t < tokens; ++t) {
    std::set<int> chosen, expected;
    for (int j = 0; j < routed.top_k(); ++j) {
      const int e = routed.expert_ids()(t, j);
      REQUIRE(e >= 0);
      REQUIRE(e < E);
      chosen.insert(e);
      ++counts[std::size_t(e)];
      const double expected_weight = ref.weight[std::size_t(t)][std::size_t(e)];
      CHECK(std::abs(routed.weights()(t, j) - expected_weight) <= 1e-5 * (1 + expected_weight));
      result.ids.push_back(e);
      result.weights.push_back(routed.weights()(t, j));
    }
    for (int e = 0; e < E; ++e)
      if (ref.weight[std::size_t(t)][std::size_t(e)] > 0) expected.insert(e);
    if (routed.top_k() < E) CHECK(chosen == expected);
    CHECK(int(chosen.size()) == routed.top_k());  // distinct
  }
  for (int e = 0; e < E; ++e) CHECK(routed.tokens_per_expert()(e) == counts[std::size_t(e)]);
  return result;
}

inline moe::LayerConfig config(moe::Index hidden, moe::Index ffn, int experts, int top_k,
                               moe::FfnType type = moe::SwiGLU) {
  moe::LayerConfig c;
  c.hidden_size = hidden;
  c.ffn_size = ffn;
  c.num_experts = experts;
  c.top_k = top_k;
  c.ffn = type;
  return c;
}

}  // namespace check
