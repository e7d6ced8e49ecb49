// moe/detail/small_floats.hpp: the scalar conversions of the 8-bit float formats published checkpoints store
// weights in: e4m3fn (OCP FP8 E4M3, the "F8_E4M3" of safetensors: DeepSeek-V3/R1, Qwen3 FP8, GLM-4.5-FP8), and
// the two parts of OCP MXFP4 (gpt-oss): E2M1 codes and the E8M0 scale of each block of 32.
#pragma once

#include <cmath>
#include <cstdint>

#include "half_floats.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

namespace detail {

// e4m3fn: a sign bit, 4 exponent bits (bias 7) and 3 mantissa bits; no infinities; 0x7f and 0xff are NaN;
// the largest magnitude is 448 (0x7e), the smallest 2^-9 (0x01, subnormal).
inline constexpr float kE4m3Max = 448.0f;
inline bool e4m3_is_nan(std::uint8_t code) { return (code & 0x7fu) == 0x7fu; }

// The value of a code, exactly (every e4m3 value is an f32). A normal code's 7 magnitude bits, shifted so
// that its 3 mantissa bits lead the f32 mantissa, need only the exponent rebiased from 7 to 127 (+120);
// subnormal codes are m * 2^-9, computed without f32 subnormals so that a DAZ/FTZ mode cannot flush them.
inline float e4m3_to_float(std::uint8_t code) {
  const std::uint32_t magnitude = code & 0x7fu;
  const std::uint32_t sign = std::uint32_t(code & 0x80u) << 24;
  if (magnitude == 0x7fu) return bits_float(0x7fc00000u | sign);
  if (magnitude < 0x08u) return bits_float(sign | float_bits(float(magnitude) * 0.001953125f));  // * 2^-9
  return bits_float(sign | ((magnitude << 20) + (120u << 23)));
}

// The e4m3fn code nearest to x, ties to the even code; |x| >= 448 saturates to +-448 (the code above 448 is
// NaN), NaN gives NaN. Normal results round the f32's 23 mantissa bits to 3 in the integer domain (a carry
// moves into the exponent as it should); below 2^-6 the codes are multiples of 2^-9, rounded in float.
inline std::uint8_t float_to_e4m3(float x) {
  const std::uint32_t u = float_bits(x);
  const std::uint8_t sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const std::uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<std::uint8_t>(sign | 0x7fu);
  if (magnitude >= 0x43e00000u) return static_cast<std::uint8_t>(sign | 0x7eu);  // >= 448
  if (magnitude < 0x3c800000u)                                                   // < 2^-6
    return static_cast<std::uint8_t>(sign | static_cast<std::uint32_t>(std::nearbyint(bits_float(magnitude) * 512.0f)));
  const std::uint32_t rounded = magnitude + 0x7ffffu + ((magnitude >> 20) & 1u);
  const std::uint32_t code = ((rounded >> 23) - 120u) << 3 | ((rounded >> 20) & 7u);
  return static_cast<std::uint8_t>(sign | (code > 0x7eu ? 0x7eu : code));
}

// E2M1 (FP4): a sign bit, 2 exponent bits (bias 1), 1 mantissa bit, in the low 4 bits of `code`:
// 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
inline float e2m1_to_float(std::uint8_t code) {
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitude[code & 7u];
  return (code & 8u) ? -m : m;
}

// The E2M1 code nearest to x, ties to the even code (mantissa bit 0): the midpoints 0.25, 1.25, 2.5 and 5
// go down, 0.75, 1.75 and 3.5 up; |x| > 6 saturates to +-6 (E2M1 has no infinity), and -0 keeps its sign.
// x must not be NaN.
inline std::uint8_t float_to_e2m1(float x) {
  const std::uint8_t sign = std::signbit(x) ? 8u : 0u;
  const float a = std::fabs(x);
  const std::uint8_t magnitude = a <= 0.25f   ? 0u
                                 : a < 0.75f  ? 1u
                                 : a <= 1.25f ? 2u
                                 : a < 1.75f  ? 3u
                                 : a <= 2.5f  ? 4u
                                 : a < 3.5f   ? 5u
                                 : a <= 5.0f  ? 6u
                                              : 7u;
  return static_cast<std::uint8_t>(sign | magnitude);
}

// E8M0: a power of two 2^(code - 127); 0xff is NaN.
inline bool e8m0_is_nan(std::uint8_t code) { return code == 0xffu; }
inline int e8m0_exponent(std::uint8_t code) { return int(code) - 127; }

}  // namespace detail

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
