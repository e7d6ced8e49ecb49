// moe/detail/half_floats.hpp: the scalar bit conversions between f32 and the 16-bit floats (bf16, IEEE f16),
// both rounding to nearest even: what packing, the io readers and the lane-by-lane loads share.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../target.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

namespace detail {

inline std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline std::uint16_t float_to_bf16(float x) {
  std::uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even on the 16 bits dropped
  return static_cast<std::uint16_t>(u >> 16);
}
inline float bf16_to_float(std::uint16_t h) { return bits_float(std::uint32_t(h) << 16); }

inline std::uint16_t float_to_f16(float x) {
  const std::uint32_t u = float_bits(x);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude >= 0x7f800000u)
    return static_cast<std::uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a multiple of 2^-24, found exactly in float arithmetic.
    const float steps = std::nearbyint(bits_float(magnitude) * 16777216.0f);
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(steps));
  }
  std::uint32_t r = magnitude - 0x38000000u;  // rebias the exponent from 127 to 15
  r += 0xfffu + ((r >> 13) & 1u);             // round the 13 dropped mantissa bits to nearest even
  return static_cast<std::uint16_t>(sign | (r >> 13));
}
inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) return bits_float(sign | float_bits(float(mantissa) * 5.9604644775390625e-8f));  // * 2^-24
  if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace detail

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
