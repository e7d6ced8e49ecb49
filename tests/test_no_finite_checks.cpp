// tests/test_no_finite_checks.cpp: a layer built with MOE_NO_FINITE_CHECKS (moe/config.hpp), which skips the
// scans of every input and output value: the same results on finite data, a NaN or Inf input still refused
// (by the router logits), and an expert's f32 overflow returned instead of reported.
//
// The macro is meant for a whole build; here it changes Layer<5, 2, f32>::forward, which no other
// translation unit of this program instantiates, and nothing else.
#define MOE_NO_FINITE_CHECKS
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "layer_check.hpp"

static_assert(MOE_FINITE_CHECKS == 0, "MOE_NO_FINITE_CHECKS turns the scans off");

namespace {
using UncheckedLayer = moe::Layer<5, 2, moe::f32>;
}

TEST_CASE("without the finiteness scans a layer computes the same, and still refuses a NaN input") {
  const auto c = check::config(37, 50, 5, 2);
  check::against_reference<UncheckedLayer>(c, moe::SoftmaxTopK(true), 9, 401);
  check::against_reference<UncheckedLayer>(c, moe::SoftmaxTopK(true), 1, 402, 2);

  const reference::Weights w = reference::random_weights(c, 403, 4.0f);
  UncheckedLayer layer(c, moe::SoftmaxTopK(true));
  reference::load(layer, w);
  moe::Workspace ws = layer.workspace(3);
  std::vector<float> x = synthetic::tokens(3, c.hidden_size, 404), y(x.size());
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    x[std::size_t(c.hidden_size + 5)] = bad;
    CHECK_THROWS_WITH_AS(layer.forward(x.data(), c.hidden_size, y.data(), c.hidden_size, 3, ws),
                         doctest::Contains("router logits of token 1 overflowed"), moe::Error);
  }
}

TEST_CASE("without the finiteness scans an expert's overflow is returned, not reported") {
  const auto c = check::config(16, 8, 5, 2);
  UncheckedLayer layer(c, moe::SoftmaxTopK(true));
  std::vector<float> router(5 * 16, 0.01f), big(8 * 16, 1e20f), big_down(16 * 8, 1e20f);
  layer.set_router(moe::WeightView(router.data(), 5, 16));
  for (int e = 0; e < 5; ++e)
    layer.set_expert(e, moe::WeightView(big.data(), 8, 16), moe::WeightView(big.data(), 8, 16),
                     moe::WeightView(big_down.data(), 16, 8));
  moe::Workspace ws = layer.workspace(2);
  std::vector<float> x(2 * 16, 1.0f), y(x.size());
  layer.forward(x.data(), 16, y.data(), 16, 2, ws);
  CHECK(!std::isfinite(y[0]));
}
