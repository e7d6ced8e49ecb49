// moe/kernels/softmax.hpp: softmax and sigmoid over one row of router logits, with a vectorised exp.
#pragma once

#include <cmath>

#include "../simd.hpp"
#include "reduce.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// out = softmax(x); out may alias x.
inline void softmax(const float* x, float* out, Index n) {
  const float shift = row_max(x, n);
  const detail::simd::Vec s = detail::simd::broadcast(shift);
  const Index vectors_end = detail::simd::round_down(n, detail::simd::kWidth);
  Index i = 0;
  for (; i < vectors_end; i += detail::simd::kWidth)
    detail::simd::store(out + i, detail::simd::exp(detail::simd::load(x + i) - s));
  for (; i < n; ++i) out[i] = std::exp(x[i] - shift);
  float sum = 0.0f;
  for (Index j = 0; j < n; ++j) sum += out[j];
  const float inverse = 1.0f / sum;
  for (Index j = 0; j < n; ++j) out[j] *= inverse;
}

// out = 1 / (1 + exp(-x)), element by element; out may alias x.
inline void sigmoid(const float* x, float* out, Index n) {
  const detail::simd::Vec one = detail::simd::broadcast(1.0f), zero = detail::simd::broadcast(0.0f);
  const Index vectors_end = detail::simd::round_down(n, detail::simd::kWidth);
  Index i = 0;
  for (; i < vectors_end; i += detail::simd::kWidth)
    detail::simd::store(out + i, one / (one + detail::simd::exp(zero - detail::simd::load(x + i))));
  for (; i < n; ++i) out[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
