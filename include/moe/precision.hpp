// moe/precision.hpp: the weight storage precisions, each one traits bundle in its own header
// (precisions/*.hpp), and the one list of them that run-time choices iterate.
//
// A precision says how a weight is stored and how the kernels read it back: the kernels turn a run of
// stored weights into f32 lanes (or int8 / bf16 lanes) in registers, never into a dequantised copy of a
// matrix. Conversions happen once, when a layer packs its weights. Activations stay f32 at the API.
//   f32  bf16  f16   4, 2, 2 bytes a weight; f32 activations.
//   q8   q4          int8 per output row, int4 per block of 32 (llama.cpp's q4_0 shape); f32 activations.
//   q8a8 q4a8        q8's and q4's weights, times activations quantised to int8 in blocks of 32.
//   bf16a16          bf16's weights, times activations rounded to bf16.
//   fp8              e4m3fn codes with an f32 scale per 128 inputs of a row (the FP8 checkpoints' format);
//                    f32 activations.
//   mxfp4            E2M1 codes with an E8M0 scale per 32 inputs of a row (OCP MXFP4, gpt-oss's format);
//                    f32 activations.
//   mxfp4a8          mxfp4's weights times activations quantised to int8 in blocks of 32.
// Rounding is to nearest, ties to even, everywhere (std::nearbyint of the f32 quotient w / scale, in the
// default rounding mode). Rows or blocks whose largest |w| is below FLT_MIN are stored as zeros.
//
// A precision is a struct with these static members; the kernels, the panels and the layer read nothing
// else, and never ask which precision they have:
//   kName, kBitsPerWeight            its name (the CLI's --dtype) and its bits a weight with the scales
//   kMaxMagnitude                    the largest |w| it stores; a layer refuses larger weights
//   Activations                      how the kernels read activations: activation_coding.hpp's F32Rows,
//                                    Int8Blocks or Bf16Pairs, which picks the tile (kernels/gemm.hpp)
//   round_trip_row(w, n, out)        the values a row of n weights decodes to
//   Code, Scale, kCodesPerRow        a panel's depth row (kernels/panel.hpp) is kCodesPerRow Codes; depth
//                                    row k of a panel starts at code k * kCodesPerRow
//   kScaleRows                       its scales: none (0); one per column (-1), scales[c]; or one per
//                                    column every kScaleRows depth rows, scales[b * kPanelColumns + c]
//                                    for block b (a divisor of kernels::kDepthBlock)
//   kDepthMultiple                   the depth is padded to a multiple of it
//   kPaddingCode, kPaddingScale      what padding holds: codes and scales that decode to zero
//   pack_column(codes, scales, c, w, in)   stores one output row w[0, in) as column c of the panel whose
//                                    first code and first scale these are, in the layout above
//   load_scales(scales)              kWidth consecutive scales as f32 lanes (when kScaleRows != 0)
// and for the tile its activations pick:
//   F32Rows:    kPairRows, the token rows up to which a tile runs two panels at once (0: never;
//               kernels/widening_tile.hpp), and kDecodeRows: 1 with decode_row(row, w), one depth row's
//               kTileVectors vectors of f32 lanes; or more, with Group, load_group(codes) and
//               decode(group, j, v), a group of kDecodeRows depth rows from one load (kDecodeRows then
//               divides kDepthMultiple and a positive kScaleRows).
//   Int8Blocks: uint8_t codes of kCodeBits bits (4 or 8), unsigned (q + kCodeOffset, kCodeOffset =
//               2^(kCodeBits - 1)), interleaved by four depth rows (a group of four rows is 4 * kCodesPerRow
//               bytes), depth in whole activation blocks, kScaleRows -1 or 32; kGroupsPerStep and
//               load_int8_group(codes, w), a group's kTileVectors vectors of 32-bit lanes
//               (kernels/int8_tile.hpp; the dot product each target forms: simd_int8.hpp's Int8Dot).
//   Bf16Pairs:  the bf16a16 layout (precisions/bf16a16.hpp, kernels/bf16_tile.hpp).
// precisions/elementwise.hpp gives the members a precision of one code a weight and no scales shares (it
// then adds kName, kBitsPerWeight, kMaxMagnitude, encode, decode and decode_row). A new precision is one
// such header, its #include below and its entry in MOE_FOR_EACH_PRECISION (and its tests);
// tests/test_custom_precision.cpp defines one in the test alone, to show it. The kernels' constants and
// SIMD wrappers it names are in moe::detail::kernels and moe::detail::simd.
#pragma once

#include <cmath>
#include <string>
#include <type_traits>

#include "activation_coding.hpp"
#include "config.hpp"
#include "precisions/bf16.hpp"
#include "precisions/bf16a16.hpp"
#include "precisions/f16.hpp"
#include "precisions/f32.hpp"
#include "precisions/fp8.hpp"
#include "precisions/mxfp4.hpp"
#include "precisions/mxfp4a8.hpp"
#include "precisions/q4.hpp"
#include "precisions/q4a8.hpp"
#include "precisions/q8.hpp"
#include "precisions/q8a8.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// Whether a precision rounds activations to bf16 (bf16a16).
template <class Precision>
struct bf16_activations : std::is_same<typename Precision::Activations, activation_coding::Bf16Pairs> {};

// Whether a precision quantises activations to int8 (q8a8, q4a8, mxfp4a8).
template <class Precision>
struct int8_activations : std::is_same<typename Precision::Activations, activation_coding::Int8Blocks> {};

// The largest |w| a precision can store.
template <class Precision>
constexpr float max_magnitude() {
  return Precision::kMaxMagnitude;
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
  for (Index r = 0; r < rows; ++r) {
    const float* row = w + r * stride;
    for (Index c = 0; c < cols; ++c)
      MOE_CHECK(std::isfinite(row[c]), "round_trip",
                "w has NaN or Inf at (" + std::to_string(r) + ", " + std::to_string(c) + ")");
    Precision::round_trip_row(row, cols, out + r * stride);
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
#define MOE_FOR_EACH_PRECISION(X) X(f32) X(bf16) X(f16) X(q8) X(q4) X(q8a8) X(q4a8) X(bf16a16) X(fp8) X(mxfp4) X(mxfp4a8)
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

// Whether Precision is one of Precisions (the ones make_layer, io/ and moe-run offer).
template <class Precision>
struct is_supported_precision : detail::in_list<Precision, Precisions> {};

namespace detail {
template <class Precision, class = void>
struct has_precision_members : std::false_type {};
template <class Precision>
struct has_precision_members<
    Precision,
    std::void_t<decltype(Precision::kName), decltype(Precision::kMaxMagnitude), decltype(Precision::kBitsPerWeight),
                typename Precision::Activations, typename Precision::Code, typename Precision::Scale,
                decltype(Precision::kCodesPerRow), decltype(Precision::kScaleRows), decltype(Precision::kDepthMultiple),
                decltype(Precision::kPaddingCode), decltype(Precision::kPaddingScale),
                decltype(&Precision::pack_column), decltype(&Precision::round_trip_row)>> : std::true_type {};
}  // namespace detail

// Whether Precision has the members of a precision (the top of this file): the listed ones, and any a
// program defines itself.
template <class Precision>
struct is_precision : detail::has_precision_members<Precision> {};

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
