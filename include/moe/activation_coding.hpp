// moe/activation_coding.hpp: how the expert kernels read a token's activations, one tag per coding.
//
// Every precision names one of these as its Activations (precision.hpp): the activations stay f32 at the
// API, and the layer codes them once per projection input into what the precision's tile multiplies.
//   F32Rows     f32 rows as given: the tile widens the weights to f32 (kernels/widening_tile.hpp).
//   Int8Blocks  int8 codes in blocks of kActivationBlock values, one f32 scale and one code sum per block
//               (kernels/quantize.hpp): int8 x int8 dot products in int32 (kernels/int8_tile.hpp).
//   Bf16Pairs   each value rounded to bf16, rows padded to an even length: bf16 pair dot products with f32
//               sums (kernels/bf16_tile.hpp).
// kStep is the depth rows the tile reads activations in; activation rows and the depth of the weight
// panels they multiply are padded to a multiple of it. Row is a token's row as the tile reads it.
#pragma once

#include <cstdint>

#include "config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

namespace detail {
namespace kernels {

// Values of one int8 activation block, which shares one scale and one code sum (llama.cpp's q8_0 block
// size): 8 groups of the four bytes simd::Int8Dot (simd_int8.hpp) multiplies at once.
inline constexpr int kActivationBlock = 32;

// One token's int8 activations, from some depth on.
struct Int8Row {
  const std::int8_t* codes;  // padded to whole blocks with zeros
  const float* scales;       // one per block
  const std::int32_t* sums;  // one per block: sum of its codes

  // The same row from depth k0 on (k0 a multiple of kActivationBlock).
  Int8Row from(Index k0) const { return {codes + k0, scales + k0 / kActivationBlock, sums + k0 / kActivationBlock}; }
};

// One token's bf16 activations, from some depth on.
struct Bf16Row {
  const std::uint16_t* codes;  // padded to an even length with zeros

  // The same row from depth k0 on (k0 even).
  Bf16Row from(Index k0) const { return {codes + k0}; }
};

}  // namespace kernels
}  // namespace detail

namespace activation_coding {

struct F32Rows {
  static constexpr int kStep = 1;
  using Row = const float*;
};
struct Int8Blocks {
  static constexpr int kStep = detail::kernels::kActivationBlock;
  using Row = detail::kernels::Int8Row;
};
struct Bf16Pairs {
  static constexpr int kStep = 2;
  using Row = detail::kernels::Bf16Row;
};

}  // namespace activation_coding
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
