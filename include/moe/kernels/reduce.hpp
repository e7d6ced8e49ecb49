// moe/kernels/reduce.hpp: reductions over one row: max, sum of exponentials, finiteness.
#pragma once

#include <cmath>

#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

inline float row_max(const float* x, Index n) {
  const Index vectors_end = detail::simd::round_down(n, detail::simd::kWidth);
  Index i = 0;
  float m = n > 0 ? x[0] : 0.0f;
  if (n >= detail::simd::kWidth) {
    detail::simd::Vec vm = detail::simd::load(x);
    for (i = detail::simd::kWidth; i < vectors_end; i += detail::simd::kWidth)
      vm = detail::simd::max(vm, detail::simd::load(x + i));
    m = detail::simd::reduce_max(vm);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// sum_i exp(x_i - shift): with shift = max(x) no term overflows and the largest is exactly 1.
inline float sum_exp(const float* x, Index n, float shift) {
  const Index vectors_end = detail::simd::round_down(n, detail::simd::kWidth);
  Index i = 0;
  float sum = 0.0f;
  if (n >= detail::simd::kWidth) {
    const detail::simd::Vec s = detail::simd::broadcast(shift);
    detail::simd::Vec acc = detail::simd::broadcast(0.0f);
    for (; i < vectors_end; i += detail::simd::kWidth) acc = acc + detail::simd::exp(detail::simd::load(x + i) - s);
    sum = detail::simd::reduce_add(acc);
  }
  for (; i < n; ++i) sum += std::exp(x[i] - shift);
  return sum;
}

// True when no element is NaN or +-Inf. x * 0 is 0 for every finite x and NaN otherwise, so one
// vectorised sum answers for the whole row without a branch per element.
inline bool all_finite(const float* x, Index n) {
  const Index vectors_end = detail::simd::round_down(n, detail::simd::kWidth);
  Index i = 0;
  detail::simd::Vec acc = detail::simd::broadcast(0.0f);
  const detail::simd::Vec zero = detail::simd::broadcast(0.0f);
  for (; i < vectors_end; i += detail::simd::kWidth) acc = detail::simd::fma(detail::simd::load(x + i), zero, acc);
  float sum = detail::simd::reduce_add(acc);
  for (; i < n; ++i) sum += x[i] * 0.0f;
  return sum == 0.0f;
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
