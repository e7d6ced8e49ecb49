// moe/kernels/activation.hpp: the FFN activations, on SIMD vectors.
#pragma once

#include <type_traits>

#include "../simd.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// The activation of an expert's hidden layer. GELU is the exact erf form (PyTorch's default, HF "gelu");
// GELUTanh is the tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh").
enum class Activation { SiLU, GELU, GELUTanh, ReLU };

inline const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::SiLU:
      return "silu";
    case Activation::GELU:
      return "gelu";
    case Activation::GELUTanh:
      return "gelu_tanh";
    case Activation::ReLU:
      return "relu";
  }
  return "unknown";
}

namespace detail {
namespace kernels {

template <Activation A>
MOE_ALWAYS_INLINE detail::simd::Vec activate(const detail::simd::Vec& x) {
  using detail::simd::broadcast;
  if constexpr (A == Activation::SiLU) {
    // x * sigmoid(x); for x -> -inf exp(-x) overflows to inf and the quotient is -0, as it should be.
    return x / (broadcast(1.0f) + detail::simd::exp(-x));
  } else if constexpr (A == Activation::GELU) {
    // 0.5 x (1 + erf(x / sqrt 2)) written with erfc, which keeps its relative accuracy in the far
    // negative tail where 1 + erf(...) would cancel to noise.
    return broadcast(0.5f) * x * detail::simd::erfc(x * broadcast(-0.70710678118654752f));
  } else if constexpr (A == Activation::GELUTanh) {
    // 0.5 (1 + tanh(z)) = sigmoid(2z): the same value without the cancellation of 1 + tanh for z << 0.
    const detail::simd::Vec z2 =
        broadcast(2.0f * 0.79788456080286536f) * detail::simd::fma(broadcast(0.044715f) * x, x * x, x);
    return x / (broadcast(1.0f) + detail::simd::exp(-z2));
  } else {
    return detail::simd::max(x, broadcast(0.0f));
  }
}

// Calls f with the activation as a compile-time constant, so kernels dispatch once per pass, not per lane.
template <class F>
decltype(auto) with_activation(Activation activation, F&& f) {
  switch (activation) {
    case Activation::GELU:
      return f(std::integral_constant<Activation, Activation::GELU>{});
    case Activation::GELUTanh:
      return f(std::integral_constant<Activation, Activation::GELUTanh>{});
    case Activation::ReLU:
      return f(std::integral_constant<Activation, Activation::ReLU>{});
    case Activation::SiLU:
      break;
  }
  return f(std::integral_constant<Activation, Activation::SiLU>{});
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
