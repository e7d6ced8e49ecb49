// moe/moe.hpp: the one public include of the moe library.
//
//   #include <moe/moe.hpp>
//   moe::Layer<8, 2> layer({/*hidden*/ 4096, /*ffn*/ 14336}, moe::SoftmaxTopK(/*renormalize=*/true));
//
// The order matters only in that every header includes what it uses. Not included: io/ (file readers,
// needs nlohmann-json), any_layer.hpp (the precision chosen at run time) and routing_plot.hpp (an SVG of
// RoutingStats).
#pragma once

#include "config.hpp"
#include "precision.hpp"
#include "recommended_precision.hpp"
#include "simd.hpp"
#include "kernels/activation.hpp"
#include "kernels/reduce.hpp"
#include "kernels/softmax.hpp"
#include "kernels/topk.hpp"
#include "kernels/panel.hpp"
#include "kernels/gemm.hpp"
#include "routing_stats.hpp"
#include "router.hpp"
#include "routing_batch.hpp"
#include "expert.hpp"
#include "workspace.hpp"
#include "layer_config.hpp"
#include "routing_result.hpp"
#include "layer.hpp"
