// tests/test_elementwise.cpp: the element-wise kernels (the vector exp, the activations, all_finite) against
// their definitions in double precision.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <moe/moe.hpp>

#include "kernel_check.hpp"
#include "reference.hpp"

using kernel_check::random_vector;

TEST_CASE("the vector exp is within 2 ulps of double precision, and right at the edges") {
  // Every 1/64 over the range where e^x is a normal float (xsimd's exp, the AVX2 and SSE path, overflows
  // from about 88.4 on, where e^x is within 1.4x of FLT_MAX), plus the subnormal and overflow edges.
  std::vector<float> normal;
  for (float x = -87.0f; x <= 88.0f; x += 1.0f / 64) normal.push_back(x);
  for (float x : normal) {
    CAPTURE(x);
    const double expected = std::exp(double(x));
    const float got = moe::detail::simd::reduce_max(moe::detail::simd::exp(moe::detail::simd::broadcast(x)));
    REQUIRE(std::abs(got - expected) <= 2 * std::numeric_limits<float>::epsilon() * expected);
  }
  const float inf = std::numeric_limits<float>::infinity();
  auto exp_of = [](float x) {
    return moe::detail::simd::reduce_max(moe::detail::simd::exp(moe::detail::simd::broadcast(x)));
  };
  CHECK(exp_of(0.0f) == 1.0f);
  CHECK(exp_of(88.8f) == inf);
  CHECK(exp_of(1e30f) == inf);
  CHECK(exp_of(inf) == inf);
  CHECK(exp_of(-104.0f) == 0.0f);
  CHECK(exp_of(-inf) == 0.0f);
  CHECK(std::isnan(exp_of(std::nanf(""))));
  // A subnormal result: within one subnormal step, or 0 (xsimd's exp flushes them).
  const float tiny = exp_of(-100.0f);
  CHECK((tiny == 0.0f || std::abs(tiny - std::exp(-100.0)) <= std::numeric_limits<float>::denorm_min()));
#if MOE_SIMD_XSIMD && XSIMD_WITH_AVX512F
  CHECK(tiny > 0.0f);  // simd.hpp's own exp keeps them
#endif
}

TEST_CASE("activations match their definitions, including far tails") {
  const float inputs[] = {-100.0f, -20.0f, -5.5f, -1.0f, -0.25f, 0.0f, 1e-3f, 0.5f, 2.0f, 9.0f, 50.0f, 100.0f};
  const moe::Activation all[] = {moe::Activation::SiLU, moe::Activation::GELU, moe::Activation::GELUTanh,
                                 moe::Activation::ReLU};
  for (moe::Activation a : all) {
    const std::string activation = moe::activation_name(a);
    CAPTURE(activation);
    for (float x : inputs) {
      CAPTURE(x);
      float lanes[moe::detail::simd::kWidth];
      moe::detail::kernels::with_activation(a, [&](auto act) {
        moe::detail::simd::store(lanes,
                                 moe::detail::kernels::activate<decltype(act)::value>(moe::detail::simd::broadcast(x)));
      });
      const double expected = reference::activate(a, x);
      // A few float ulps relative, or an absolute floor where the function is ~0 (tails of SiLU/GELU).
      CHECK(std::abs(lanes[0] - expected) <= 8 * std::numeric_limits<float>::epsilon() * std::abs(expected) + 1e-30);
      CHECK(std::isfinite(lanes[0]));
    }
  }
}

TEST_CASE("all_finite finds a NaN or Inf at any position") {
  for (int n : {1, 5, 16, 17, 40}) {
    std::vector<float> x(std::size_t(n), 1.5f);
    CHECK(moe::detail::kernels::all_finite(x.data(), n));
    for (int i = 0; i < n; ++i) {
      x[std::size_t(i)] = std::numeric_limits<float>::quiet_NaN();
      CHECK_FALSE(moe::detail::kernels::all_finite(x.data(), n));
      x[std::size_t(i)] = -std::numeric_limits<float>::infinity();
      CHECK_FALSE(moe::detail::kernels::all_finite(x.data(), n));
      x[std::size_t(i)] = std::numeric_limits<float>::max();
      CHECK(moe::detail::kernels::all_finite(x.data(), n));
      x[std::size_t(i)] = 1.5f;
    }
  }
}
