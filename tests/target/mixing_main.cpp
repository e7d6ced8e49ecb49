// Calls use_layer (use_layer.cpp) on a moe::Layer of this file's target. Linked with a use_layer compiled for
// another target, the call names a function that does not exist there: the link fails instead of passing a
// layer whose packed layout the callee reads differently.
#include <moe/layer.hpp>

float use_layer(const moe::Layer<8, 2>& layer);

int main() {
  moe::LayerConfig config;
  config.hidden_size = 16;
  config.ffn_size = 16;
  const moe::Layer<8, 2> layer(config);
  return use_layer(layer) == 16.0f ? 0 : 1;
}
