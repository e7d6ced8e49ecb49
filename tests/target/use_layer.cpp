// Defines use_layer for the target this file is compiled for; mixing_main.cpp calls it. CMakeLists.txt links
// the two compiled for the same target (which must link) and for two different targets (which must not).
#include <moe/layer.hpp>

float use_layer(const moe::Layer<8, 2>& layer) { return float(layer.hidden_size()); }
