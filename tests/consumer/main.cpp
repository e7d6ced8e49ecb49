// A consumer project's program (both tests/consumer projects build it): one forward pass of a tiny layer.
#include <cmath>
#include <cstdio>
#include <vector>

#include <moe/moe.hpp>
#ifdef MOE_COMPILED_LAYERS  // add_subdirectory links moe::layers
#include <moe/any_layer.hpp>
#endif

int main() {
  try {
    moe::LayerConfig c;
    c.hidden_size = 8;
    c.ffn_size = 4;
    c.num_experts = 2;
    c.top_k = 1;
    moe::Layer<2, 1> layer(c);

    // Small deterministic weights; each expert differs so routing matters.
    auto fill = [](std::vector<float>& v, float phase) {
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.25f * std::sin(0.7f * float(i) + phase);
    };
    std::vector<float> router(2 * 8), gate(4 * 8), up(4 * 8), down(8 * 4);
    fill(router, 0.1f);
    layer.set_router(moe::WeightView(router.data(), 2, 8));
    for (int e = 0; e < 2; ++e) {
      fill(gate, 1.0f + e);
      fill(up, 2.0f + e);
      fill(down, 3.0f + e);
      layer.set_expert(e, moe::WeightView(gate.data(), 4, 8), moe::WeightView(up.data(), 4, 8),
                       moe::WeightView(down.data(), 8, 4));
    }

    const int tokens = 3;
    std::vector<float> x(tokens * 8), y(tokens * 8, 0.0f);
    fill(x, 0.5f);
    auto ws = layer.workspace(tokens);
    layer.forward(x.data(), 8, y.data(), 8, tokens, ws);

    bool finite = true, nonzero = false;
    for (float v : y) {
      finite = finite && std::isfinite(v);
      nonzero = nonzero || v != 0.0f;
    }
    if (!finite || !nonzero) {
      std::fprintf(stderr, "consumer: bad output (finite=%d, nonzero=%d)\n", int(finite), int(nonzero));
      return 1;
    }
#ifdef MOE_COMPILED_LAYERS
    // The same layer from moe::layers, its precision chosen by name: the same bits.
    const auto chosen = moe::make_layer("f32", c);
    chosen->set_router(moe::WeightView(router.data(), 2, 8));
    for (int e = 0; e < 2; ++e) {
      fill(gate, 1.0f + e);
      fill(up, 2.0f + e);
      fill(down, 3.0f + e);
      chosen->set_expert(e, moe::WeightView(gate.data(), 4, 8), moe::WeightView(up.data(), 4, 8),
                         moe::WeightView(down.data(), 8, 4));
    }
    std::vector<float> y2(y.size());
    auto ws2 = chosen->workspace(tokens);
    chosen->forward(x.data(), 8, y2.data(), 8, tokens, ws2);
    if (y2 != y) {
      std::fprintf(stderr, "consumer: moe::layers' f32 layer disagrees with moe::Layer<2, 1>\n");
      return 1;
    }
    std::printf("consumer: moe::layers' %s layer gives the same bits\n", chosen->precision());
#endif
    std::printf("consumer: moe %d.%d.%d forward ok, y[0] = %g\n", MOE_VERSION_MAJOR, MOE_VERSION_MINOR,
                MOE_VERSION_PATCH, double(y[0]));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
