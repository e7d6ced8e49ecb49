// moe/kernels/quantize.hpp: activations quantised to int8 for the int8-activation precisions (q8a8, q4a8),
// and rounded to bf16 for bf16a16.
//
// bf16 (bf16a16): each value rounded to nearest even on its own (bf16::encode, detail::float_to_bf16), in rows padded
// with zeros to an even length, as the kernels read depth rows in pairs.
//
// int8 (q8a8, q4a8): a row of activations x is cut into blocks of kActivationBlock consecutive values (the input
// dimension of the next projection); each block b gets a scale s_b = max|x_b| / 127 and codes q_i = round(x_i * (127 /
// max|x_b|)) in [-127, 127], so x_i ~ q_i * s_b with |error| <= s_b / 2 (plus the f32 rounding of the scale). All-zero
// blocks get s_b = 0 and zero codes; a block holding NaN or Inf gets s_b = NaN and zero codes, so that every sum
// it enters is NaN, as in f32 (the layer then reports the overflow). The per-token, per-block scale is llama.cpp's
// q8_0 shape for activations. Each
// block also keeps sum_i q_i, which the kernels use to undo the +128 / +8 offset that makes weight codes unsigned
// (vpdpbusd multiplies unsigned by signed bytes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../activation_coding.hpp"
#include "../config.hpp"
#include "../detail/half_floats.hpp"
#include "../simd.hpp"
#include "../simd_bf16.hpp"
#include "../simd_int8.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {
namespace kernels {

// Depth rows a precision's kernels read activations in (activation_coding.hpp): whole int8 blocks, bf16
// pairs, or single f32 values. Activation rows, and the depth of the weight panels they multiply, are padded
// to a multiple.
template <class Precision>
inline constexpr int kActivationStep = Precision::Activations::kStep;

// Rounds x[0, n) to bf16 into codes[0, padded); codes past n are zero. padded >= n.
inline void round_activations_bf16(const float* x, Index n, Index padded, std::uint16_t* codes) {
  const Index vectors_end = detail::simd::round_down(n, detail::simd::kWidth);
  Index i = 0;
  for (; i < vectors_end; i += detail::simd::kWidth) detail::simd::store_bf16(codes + i, detail::simd::load(x + i));
  for (; i < n; ++i) codes[i] = detail::float_to_bf16(x[i]);
  for (; i < padded; ++i) codes[i] = 0;
}

// Vectors of one int8 activation block.
inline constexpr int kBlockVectors = kActivationBlock / detail::simd::kWidth;
static_assert(kActivationBlock % detail::simd::kWidth == 0, "a block must be whole vectors");

// Quantises one block x[0, kBlockVectors) into codes[0, kActivationBlock), *scale and *sum.
MOE_ALWAYS_INLINE void quantize_block(const detail::simd::Vec* x, std::int8_t* codes, float* scale, std::int32_t* sum) {
  detail::simd::Vec m = detail::simd::abs(x[0]);
  detail::simd::Vec not_finite = x[0] - x[0];  // x - x is 0, or NaN where x is NaN or Inf
  MOE_UNROLL for (int v = 1; v < kBlockVectors; ++v) {
    m = detail::simd::max(m, detail::simd::abs(x[v]));
    not_finite = not_finite + (x[v] - x[v]);
  }
  if (!(detail::simd::reduce_add(not_finite) == 0.0f)) {
    // The max above may have skipped a NaN (vmaxps returns its second operand), and codes of x * 0 would
    // be garbage: zero codes and a NaN scale carry the NaN into every sum instead.
    std::fill_n(codes, kActivationBlock, std::int8_t(0));
    *scale = std::numeric_limits<float>::quiet_NaN();
    *sum = 0;
    return;
  }
  const float largest = detail::simd::reduce_max(m);
  // A block whose 127 / largest overflows (largest below about 3.7e-37, zero included) is stored as zeros.
  const float step_inverse = 127.0f / largest;
  const bool zero = !(largest > 0.0f) || !std::isfinite(step_inverse);
  const detail::simd::Vec inverse = detail::simd::broadcast(zero ? 0.0f : step_inverse);
  // |x * inverse| <= 127 * (1 + 2^-23): the rounded codes fit in [-127, 127] without a clamp.
  detail::simd::IVec total = detail::simd::broadcast_int(0);
  MOE_UNROLL for (int v = 0; v < kBlockVectors; ++v) {
    const detail::simd::IVec q = detail::simd::round_to_int(x[v] * inverse);
    detail::simd::store_int8(codes + v * detail::simd::kWidth, q);
    total = total + q;
  }
  *scale = zero ? 0.0f : largest / 127.0f;
  *sum = detail::simd::reduce_add(total);
}

// Quantises x[0, n) into codes[0, padded), scales and sums of padded / kActivationBlock blocks; codes past n
// are zero. padded is a multiple of kActivationBlock >= n.
inline void quantize_activations(const float* x, Index n, Index padded, std::int8_t* codes, float* scales,
                                 std::int32_t* sums) {
  for (Index b = 0; b * kActivationBlock < padded; ++b) {
    const Index begin = b * kActivationBlock;
    const Index count = std::max<Index>(0, std::min<Index>(kActivationBlock, n - begin));
    alignas(64) float block[kActivationBlock] = {};  // the block, zero past n
    std::copy(x + begin, x + begin + count, block);
    detail::simd::Vec values[kBlockVectors];
    MOE_UNROLL for (int v = 0; v < kBlockVectors; ++v) values[v] = detail::simd::load(block + v * detail::simd::kWidth);
    quantize_block(values, codes + begin, scales + b, sums + b);
  }
}

}  // namespace kernels
}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
