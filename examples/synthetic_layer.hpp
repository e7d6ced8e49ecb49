// examples/synthetic_layer.hpp: deterministic random weights and tokens, for the demo, benchmarks and tests.
//
// Not part of the library. Values are uniform with the variance of a trained layer's initialisation
// (1 / fan_in), so activations keep a sensible scale through the FFN; a counter-based generator makes
// them reproducible across platforms and fast enough to fill hundreds of megabytes in a blink.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include <moe/moe.hpp>

namespace synthetic {

// splitmix64: a tiny generator whose stream depends only on the seed.
class Random {
public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float symmetric() { return float(next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }
  // Uniform with standard deviation `stddev`.
  float spread(float stddev) { return symmetric() * stddev * 1.7320508f; }

private:
  std::uint64_t state_;
};

inline std::vector<float> matrix(Random& rng, moe::Index rows, moe::Index cols, float stddev) {
  std::vector<float> m(static_cast<std::size_t>(rows * cols));
  for (float& v : m) v = rng.spread(stddev);
  return m;
}

// Tokens x hidden activations with unit variance.
inline std::vector<float> tokens(moe::Index count, moe::Index hidden, std::uint64_t seed) {
  Random rng(seed);
  return matrix(rng, count, hidden, 1.0f);
}

// Fills every weight of `layer` (router, experts, shared experts and their gates) one matrix at a time,
// so the peak memory is the packed layer plus one expert's source matrices. router_stddev_scale > 1 makes
// routing more decisive (a trained router is far from uniform).
template <class Layer>
void fill(Layer& layer, std::uint64_t seed, float router_stddev_scale = 4.0f) {
  const moe::LayerConfig& c = layer.config();
  const moe::Index H = c.hidden_size;
  const float in = 1.0f / std::sqrt(float(H));
  Random rng(seed);
  const auto router = matrix(rng, c.num_experts, H, in * router_stddev_scale);
  layer.set_router(moe::WeightView(router.data(), c.num_experts, H));
  auto load = [&](moe::Index F, auto&& set) {
    const auto gate = c.ffn.gated ? matrix(rng, F, H, in) : std::vector<float>();
    const auto up = matrix(rng, F, H, in);
    const auto down = matrix(rng, H, F, 1.0f / std::sqrt(float(F)));
    set(moe::WeightView(gate.data(), F, H), moe::WeightView(up.data(), F, H), moe::WeightView(down.data(), H, F));
  };
  for (int e = 0; e < c.num_experts; ++e)
    load(c.ffn_size, [&](auto g, auto u, auto d) {
      if (c.ffn.gated)
        layer.set_expert(e, g, u, d);
      else
        layer.set_expert(e, u, d);
    });
  for (int s = 0; s < c.num_shared_experts; ++s) {
    load(c.shared_ffn_size, [&](auto g, auto u, auto d) {
      if (c.ffn.gated)
        layer.set_shared_expert(s, g, u, d);
      else
        layer.set_shared_expert(s, u, d);
    });
    if (c.shared_expert_gate) {
      const auto gate = matrix(rng, 1, H, in);
      layer.set_shared_expert_gate(s, moe::WeightView(gate.data(), 1, H));
    }
  }
}

}  // namespace synthetic
