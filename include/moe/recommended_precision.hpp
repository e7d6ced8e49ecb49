// moe/recommended_precision.hpp: which precision to store weights in, for a budget of bits a weight, on the
// target being compiled.
//
// Each budget has two precisions with the same weights: one that keeps activations f32 (bf16, q8, q4) and
// one that also codes the activations (bf16a16, q8a8, q4a8) to run narrower dot products. The coding costs
// accuracy (q8a8's and q4a8's relative error per activation block is up to 1/254, bf16a16's 2^-8), so it is
// recommended only where its dot product does several times an FMA's work in one instruction, which makes
// batched passes well ahead of the twin (issue 24's bar: 1.3x at 512 tokens); where it is emulated, or
// barely ahead, the twin is. Per target (docs/PERFORMANCE.md, decision "Recommended precisions per
// target", has the measurements):
//   16 bits  bf16a16 with AVX-512 BF16 (vdpbf16ps, 32 multiply-adds an instruction), else bf16;
//   8 bits   q8a8 with vpdpbusd (AVX-512 VNNI, AVX-VNNI) or sdot (NEON +dotprod), else q8: AVX2's form for
//            8-bit codes is four instructions per 32 multiply-adds, an f32 FMA's rate, and measured only
//            1.04-1.12x q8;
//   4 bits   q4a8 wherever the dot product is native (VNNI, AVX2's vpmaddubsw with int16 sums: two
//            instructions per 32 multiply-adds, sdot), else q4.
// The recommendation is for batched and decode passes alike; at 1 token q8a8 can be the slower of the
// two even with VNNI. A caller who needs f32 activations names bf16, q8 or q4 directly.
#pragma once

#include <cstring>
#include <type_traits>

#include "precision.hpp"
#include "simd_bf16.hpp"
#include "simd_int8.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// The recommended precision for Bits (16, 8 or 4) bits a weight on this target, as `type`.
template <int Bits>
struct recommended_precision {
  static_assert(Bits == 16 || Bits == 8 || Bits == 4, "the precisions store 16, 8 or 4 bits a weight");
};
template <>
struct recommended_precision<16> {
  using type = std::conditional_t<MOE_SIMD_AVX512BF16 != 0, bf16a16, bf16>;
};
template <>
struct recommended_precision<8> {
  using type = std::conditional_t<MOE_SIMD_VNNI != 0 || MOE_SIMD_SDOT != 0, q8a8, q8>;
};
template <>
struct recommended_precision<4> {
  using type = std::conditional_t<MOE_SIMD_INT8_DOT_NATIVE != 0, q4a8, q4>;
};
template <int Bits>
using recommended_precision_t = typename recommended_precision<Bits>::type;

// The same, by name, for a run-time bit budget (the CLI's --bits); nullptr for any budget but 16, 8 and 4.
inline const char* recommended_precision_name(int bits) {
  switch (bits) {
    case 16:
      return recommended_precision_t<16>::kName;
    case 8:
      return recommended_precision_t<8>::kName;
    case 4:
      return recommended_precision_t<4>::kName;
    default:
      return nullptr;
  }
}

// The precision that runs weights stored in `precision` (by name) much faster at decode on this target by
// coding the activations too, the weights unchanged, where `precision` is what a checkpoint's shipped
// weights load into exactly (moe-run's --dtype auto) and so is kept; nullptr where there is none. One pair
// today: mxfp4a8 for mxfp4 with 16 vector registers and a native int8 dot product (AVX2, AVX-VNNI), where an
// f32 lane has no 16-entry lookup and mxfp4 decodes an E2M1 code in five instructions while mxfp4a8's byte
// shuffle feeds the dot product directly, about twice as fast at 1 token (docs/PERFORMANCE.md, "fp8 and
// mxfp4 with the AVX2 code"). With 32 registers mxfp4's one-lookup decode keeps up.
inline const char* faster_decode_twin(const char* precision) {
  const bool lookup_is_costly = detail::simd::kRegisters < 32 && MOE_SIMD_INT8_DOT_NATIVE != 0;
  if (lookup_is_costly && precision != nullptr && std::strcmp(precision, mxfp4::kName) == 0) return mxfp4a8::kName;
  return nullptr;
}

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
