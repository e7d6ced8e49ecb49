// tests/test_recommended_precision.cpp: the precision recommended per bit budget on the target this test is
// compiled for (moe/recommended_precision.hpp).
#include <doctest/doctest.h>

#include <cstring>
#include <type_traits>

#include <moe/recommended_precision.hpp>

namespace {

template <int Bits, class Plain, class Coded>
void check_budget(bool coding_pays) {
  using Chosen = moe::recommended_precision_t<Bits>;
  CAPTURE(Bits);
  CAPTURE(Chosen::kName);
  // One of the two precisions of that budget, and the one the target's dot products favour.
  CHECK((std::is_same<Chosen, Plain>::value || std::is_same<Chosen, Coded>::value));
  CHECK(std::is_same<Chosen, Coded>::value == coding_pays);
  // It stores the budget: 16, 8 or 4 bits a weight and its scales (at most one bit a weight more).
  CHECK(Chosen::kBitsPerWeight >= Bits);
  CHECK(Chosen::kBitsPerWeight < Bits + 1);
  // The run-time name is the type's, and one the run-time choices (make_layer, moe-run) accept.
  REQUIRE(moe::recommended_precision_name(Bits) != nullptr);
  CHECK(std::strcmp(moe::recommended_precision_name(Bits), Chosen::kName) == 0);
  CHECK(moe::is_precision_name(moe::recommended_precision_name(Bits)));
}

}  // namespace

TEST_CASE("the recommended precision codes activations only where the target's dot product is an instruction") {
  // The instructions each coding needs, read from the compiler's own macros, not from the library's.
#if defined(__AVX512BF16__) && defined(__AVX512F__) && !defined(MOE_DONT_VECTORIZE)
  const bool bf16_dot = true;
#else
  const bool bf16_dot = false;
#endif
#if !defined(MOE_DONT_VECTORIZE) && ((defined(__AVX512F__) && defined(__AVX512VNNI__)) ||                    \
                                     (defined(__AVX2__) && !defined(__AVX512F__) && defined(__AVXVNNI__)) || \
                                     (defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)))
  const bool int8_dot = true;  // vpdpbusd or sdot: four products an instruction
#else
  const bool int8_dot = false;
#endif
#if !defined(MOE_DONT_VECTORIZE) && defined(__AVX2__) && !defined(__AVX512F__)
  const bool int8_pairs = true;  // vpmaddubsw: pays for 4-bit codes only
#else
  const bool int8_pairs = false;
#endif
  check_budget<16, moe::bf16, moe::bf16a16>(bf16_dot);
  check_budget<8, moe::q8, moe::q8a8>(int8_dot);
  check_budget<4, moe::q4, moe::q4a8>(int8_dot || int8_pairs);
  CHECK(moe::recommended_precision_name(32) == nullptr);
  CHECK(moe::recommended_precision_name(0) == nullptr);
}

TEST_CASE("a faster twin is named for mxfp4 only where its lookup is costly and the int8 dot product native") {
  // 16 vector registers (x86 without AVX-512) and vpmaddubsw or vpdpbusd: AVX2 and AVX-VNNI.
#if !defined(MOE_DONT_VECTORIZE) && defined(__AVX2__) && !defined(__AVX512F__)
  const bool costly = true;
#else
  const bool costly = false;
#endif
  const char* twin = moe::faster_decode_twin(moe::mxfp4::kName);
  if (costly) {
    REQUIRE(twin != nullptr);
    CHECK(std::strcmp(twin, moe::mxfp4a8::kName) == 0);
    CHECK(moe::is_precision_name(twin));
  } else {
    CHECK(twin == nullptr);
  }
  // No other precision has one, exact or not.
  for (const char* name : {"f32", "bf16", "q8", "q4", "q4a8", "mxfp4a8", "fp8", "unknown"})
    CHECK(moe::faster_decode_twin(name) == nullptr);
  CHECK(moe::faster_decode_twin(nullptr) == nullptr);
}
