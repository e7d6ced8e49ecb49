// moe/precision.hpp: weight storage precisions as tag types, and their conversions from f32.
//
// A precision says how a weight is stored; the kernels (simd.hpp's loads, kernels/gemm.hpp) turn a run
// of stored weights back into f32 lanes in registers, never into a dequantised copy of a matrix.
// Conversions happen once, when a layer packs its weights. Activations stay f32 at the API, and in the
// kernels of every precision but the ones named for their activations (bf16a16, q8a8, q4a8).
//
//   f32   4 bytes a weight, as is.
//   bf16  2 bytes: the top half of the f32, rounded to nearest even (the format of most HF checkpoints).
//   f16   2 bytes: IEEE binary16, rounded to nearest even; a layer refuses |w| > 65504 (encode alone
//         rounds it to 65504 or Inf).
//   q8    1 byte: symmetric int8 per output row, w = q * scale_row with scale_row = max|w_row| / 127 and
//         q = round(w / scale_row) in [-127, 127]; one f32 scale per row.
//   q4    half a byte: symmetric int4 in blocks of 32 consecutive inputs of one output row (the block
//         shape of llama.cpp's q4_0), w = q * d with d = max|w_block| / 7 stored as f16 and
//         q = clamp(round(w / d), -8, 7); 4.5 bits a weight with the scales.
//   q8a8  q8's weights, times activations quantised to int8 per token in blocks of 32 (kernels/quantize.hpp):
//         the dot products run on int8 x int8 in int32 (AVX-512 VNNI's vpdpbusd where the target has it).
//   q4a8  q4's weights, times the same int8 activations.
//   bf16a16  bf16's weights, times activations rounded to bf16 (to nearest even) per value: the dot
//         products run on bf16 pairs with f32 sums (AVX-512 BF16's vdpbf16ps where the target has it).
// The two a8 precisions trade the activations' exactness (a relative error of up to 1/254 of each block's
// largest |x|, per projection input) for int8 dot products, the kind llama.cpp's q8_0 and q4_0 paths use;
// bf16a16 trades it (a relative error of up to 2^-8 per value, half a unit in its 8th bit) for twice the
// multiply-adds per instruction of f32 FMAs, the kind llama.cpp's bf16 path uses. Both round the input rows and every
// hidden row. Rounding is to nearest, ties to even, everywhere (std::nearbyint of the f32 quotient w / scale, in the
// default rounding mode). Rows or blocks whose largest |w| is below FLT_MIN are stored as zeros.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "config.hpp"

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

// f32 storage: 4 bytes a weight, loaded as is.
struct f32 {
  using Storage = float;
  static constexpr const char* kName = "f32";
  static constexpr double kBitsPerWeight = 32.0;
  static Storage encode(float value) { return value; }
  static float decode(Storage stored) { return stored; }
};

struct bf16 {
  using Storage = std::uint16_t;
  static constexpr const char* kName = "bf16";
  static constexpr double kBitsPerWeight = 16.0;
  static Storage encode(float value) { return detail::float_to_bf16(value); }
  static float decode(Storage stored) { return detail::bf16_to_float(stored); }
};

struct f16 {
  using Storage = std::uint16_t;
  static constexpr const char* kName = "f16";
  static constexpr double kBitsPerWeight = 16.0;

  static Storage encode(float value) { return detail::float_to_f16(value); }
  static float decode(Storage stored) { return detail::f16_to_float(stored); }
};

struct q8 {
  using Storage = std::int8_t;
  static constexpr const char* kName = "q8";
  static constexpr double kBitsPerWeight = 8.0;  // plus one f32 scale per output row

  // The scale of a row: max|w| / 127, or 0 when max|w| is below FLT_MIN (the scale would underflow and
  // w / scale be NaN), in which case the row is stored as zeros.
  static float row_scale(const float* w, Index n) {
    float largest = 0.0f;
    for (Index i = 0; i < n; ++i) largest = std::fmax(largest, std::fabs(w[i]));
    return largest >= 1.1754943508222875e-38f ? largest / 127.0f : 0.0f;
  }
  static Storage code(float w, float scale) {
    const float r = scale > 0.0f ? std::nearbyint(w / scale) : 0.0f;
    return static_cast<Storage>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r));
  }
};

struct q4 {
  using Storage = std::uint8_t;  // two weights a byte
  static constexpr const char* kName = "q4";
  static constexpr int kBlock = 32;
  static constexpr double kBitsPerWeight = 4.5;  // with one f16 scale per 32 weights

  // Quantises one block of n <= kBlock weights of a row into q[i] in [-8, 7]; returns the f16 scale d.
  // The values are rounded with the f16 d itself, so q * decode(d) is what the kernels compute.
  static std::uint16_t quantize(const float* w, int n, std::int8_t* q) {
    float largest = 0.0f;
    for (int i = 0; i < n; ++i) largest = std::fmax(largest, std::fabs(w[i]));
    const std::uint16_t d_bits = detail::float_to_f16(largest / 7.0f);
    const float d = detail::f16_to_float(d_bits);
    for (int i = 0; i < n; ++i) {
      const float r = d > 0.0f ? std::nearbyint(w[i] / d) : 0.0f;
      q[i] = static_cast<std::int8_t>(r > 7.0f ? 7.0f : (r < -8.0f ? -8.0f : r));
    }
    return d_bits;
  }
};

// Weights as q8 or q4, activations as int8 (see the top of this file). Storage is the unsigned code the
// kernels read (q + 128 or q + 8: vpdpbusd multiplies unsigned by signed bytes).
struct q8a8 {
  using Weights = q8;
  using Storage = std::uint8_t;
  static constexpr const char* kName = "q8a8";
  static constexpr double kBitsPerWeight = q8::kBitsPerWeight;
};

struct q4a8 {
  using Weights = q4;
  using Storage = std::uint8_t;
  static constexpr const char* kName = "q4a8";
  static constexpr double kBitsPerWeight = q4::kBitsPerWeight;
};

// bf16 weights, activations rounded to bf16 in the kernels (see the top of this file).
struct bf16a16 {
  using Weights = bf16;
  using Storage = std::uint16_t;
  static constexpr const char* kName = "bf16a16";
  static constexpr double kBitsPerWeight = bf16::kBitsPerWeight;
  static Storage encode(float value) { return bf16::encode(value); }
  static float decode(Storage stored) { return bf16::decode(stored); }
};

// Whether a precision rounds activations to bf16 (bf16a16).
template <class Precision>
struct bf16_activations : std::is_same<Precision, bf16a16> {};

// Whether a precision quantises activations to int8 (q8a8, q4a8).
template <class Precision>
struct int8_activations : std::false_type {};
template <>
struct int8_activations<q8a8> : std::true_type {};
template <>
struct int8_activations<q4a8> : std::true_type {};

// How a precision stores its weights: the precision itself, or q8 / q4 for the int8-activation ones.
template <class Precision, class = void>
struct weight_format {
  using type = Precision;
};
template <class Precision>
struct weight_format<Precision, std::void_t<typename Precision::Weights>> {
  using type = typename Precision::Weights;
};
template <class Precision>
using weight_format_t = typename weight_format<Precision>::type;

// The largest |w| a precision can store: f16's largest finite value, and for q4 the largest whose block
// scale (max|w| / 7) is still a finite f16.
template <class Precision>
constexpr float max_magnitude() {
  using W = weight_format_t<Precision>;
  if constexpr (!std::is_same<W, Precision>::value) return max_magnitude<W>();
  if constexpr (std::is_same<Precision, f16>::value) return 65504.0f;
  if constexpr (std::is_same<Precision, q4>::value) return 65504.0f * 7.0f;
  return 3.4028234663852886e38f;
}

// The precision's name, for logs, benchmarks and the CLI.
template <class Precision>
constexpr const char* TypeName() {
  return Precision::kName;
}

// The weights a layer stores for row-major w (rows x cols) in Precision, decoded back to f32: what a
// reference implementation should compute with to compare with a quantised layer (exactly the values
// for bf16, f16 and q4; q8's kernels apply the row scale to the finished sum, one rounding apart), and the
// round trip of each precision. out may be w. w must be finite.
template <class Precision>
void round_trip(const float* w, Index rows, Index cols, Index stride, float* out) {
  if constexpr (!std::is_same<weight_format_t<Precision>, Precision>::value) {
    round_trip<weight_format_t<Precision>>(w, rows, cols, stride, out);
  } else {
    for (Index r = 0; r < rows; ++r) {
      const float* row = w + r * stride;
      for (Index c = 0; c < cols; ++c)
        MOE_CHECK(std::isfinite(row[c]), "round_trip",
                  "w has NaN or Inf at (" + std::to_string(r) + ", " + std::to_string(c) + ")");
      float* dst = out + r * stride;
      if constexpr (std::is_same<Precision, q8>::value) {
        const float scale = q8::row_scale(row, cols);
        for (Index c = 0; c < cols; ++c) dst[c] = float(q8::code(row[c], scale)) * scale;
      } else if constexpr (std::is_same<Precision, q4>::value) {
        for (Index c0 = 0; c0 < cols; c0 += q4::kBlock) {
          const int n = int(cols - c0 < q4::kBlock ? cols - c0 : q4::kBlock);
          std::int8_t q[q4::kBlock];
          const float d = detail::f16_to_float(q4::quantize(row + c0, n, q));
          for (int i = 0; i < n; ++i) dst[c0 + i] = float(q[i]) * d;
        }
      } else {
        for (Index c = 0; c < cols; ++c) dst[c] = Precision::decode(Precision::encode(row[c]));
      }
    }
  }
}

// A list of precisions, as a type.
template <class... Precision>
struct PrecisionList {};

// Every precision a layer can store its weights in: the one list that run-time choices (make_layer,
// io::load_block, moe-run's --dtype), the compiled layers (any_layer.hpp; CMake reads this line) and
// tests/test_any_layer.cpp iterate, in this order. A macro because explicit instantiations
// (MOE_COMPILED_LAYERS) are written one by one; Precisions is the same list as a type. One line.
// clang-format off
#define MOE_FOR_EACH_PRECISION(X) X(f32) X(bf16) X(f16) X(q8) X(q4) X(q8a8) X(q4a8) X(bf16a16)
// clang-format on

namespace detail {
template <class List>
struct drop_first;
template <class First, class... Rest>
struct drop_first<PrecisionList<First, Rest...>> {
  using type = PrecisionList<Rest...>;
};
#define MOE_DETAIL_LIST_ENTRY(Precision) , Precision
}  // namespace detail

using Precisions = detail::drop_first<PrecisionList<void MOE_FOR_EACH_PRECISION(MOE_DETAIL_LIST_ENTRY)>>::type;

namespace detail {
template <class Precision, class List>
struct in_list : std::false_type {};
template <class Precision, class... P>
struct in_list<Precision, PrecisionList<P...>>
    : std::integral_constant<bool, (std::is_same<Precision, P>::value || ...)> {};

template <class F, class... P>
bool with_precision_named(const std::string& name, F& f, PrecisionList<P...>) {
  return ((name == P::kName ? (f(P{}), true) : false) || ...);
}
template <class... P>
std::string names_of(PrecisionList<P...>) {
  std::string names;
  ((names += (names.empty() ? "" : ", ") + std::string(P::kName)), ...);
  return names;
}
}  // namespace detail

template <class Precision>
struct is_supported_precision : detail::in_list<Precision, Precisions> {};

// Calls f(Precision{}) for the precision in Precisions named `name`; false when none is.
template <class F>
bool with_precision_named(const std::string& name, F&& f) {
  return detail::with_precision_named(name, f, Precisions{});
}

// Whether `name` names a precision of Precisions.
inline bool is_precision_name(const std::string& name) {
  return with_precision_named(name, [](auto) {});
}

// The names of Precisions, joined by ", ": for messages that list the choices.
inline std::string precision_names() { return detail::names_of(Precisions{}); }

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
