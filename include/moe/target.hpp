// moe/target.hpp: the instruction set this translation unit is compiled for, and the namespace that carries it.
//
// moe's code depends on the target: the packed weight layout on the SIMD width and the register count
// (kernels/panel.hpp), the kernels on the extensions (F16C, AVX-512 BF16 and VNNI, AVX-VNNI), and every
// floating-point result on whether the compiler may fuse a multiply and an add. Two translation units
// compiled for different targets must therefore never share a moe function or type. So everything in moe
// but `moe::Error`, `moe::Index` and `moe::Dynamic` is declared in an inline namespace named after the target,
// `moe::MOE_TARGET_NAMESPACE` (Highway's HWY_NAMESPACE does the same): callers still write `moe::Layer`,
// but the mangled names differ per target, so each translation unit gets its own copies of the inline
// functions (the linker cannot pick one target's copy for another's caller), and a declaration
// compiled for one target, such as `void run(moe::Layer<8, 2>&);`, does not link against a definition
// compiled for another: mixing is a link error instead of a silent disagreement.
//
// The name is the SIMD level xsimd 8.1 picks from the same compiler macros (sse2 ... avx512bw, neon64,
// neon; scalar without SIMD or with MOE_DONT_VECTORIZE), then the extensions moe's code tests for or a
// later kernel will: _fma (x86 below AVX-512, and the scalar path, where it decides whether a*b+c rounds
// once), _f16c, _bf16 and _vnni (AVX-512), _avxvnni (the 256-bit VNNI), _dotprod and _fp16 (ARMv8.2).
// For example avx512bw_bf16_vnni, avx2_fma_f16c, sse2, neon64, neon64_dotprod_fp16, scalar_fma.
#pragma once

// ---- the SIMD level ----
#if defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_LEVEL scalar
#elif defined(__AVX512BW__)
#define MOE_DETAIL_TARGET_LEVEL avx512bw
#elif defined(__AVX512DQ__)
#define MOE_DETAIL_TARGET_LEVEL avx512dq
#elif defined(__AVX512CD__)
#define MOE_DETAIL_TARGET_LEVEL avx512cd
#elif defined(__AVX512F__)
#define MOE_DETAIL_TARGET_LEVEL avx512f
#elif defined(__AVX2__)
#define MOE_DETAIL_TARGET_LEVEL avx2
#elif defined(__AVX__)
#define MOE_DETAIL_TARGET_LEVEL avx
#elif defined(__SSE4_2__)
#define MOE_DETAIL_TARGET_LEVEL sse4_2
#elif defined(__SSE4_1__)
#define MOE_DETAIL_TARGET_LEVEL sse4_1
#elif defined(__SSSE3__)
#define MOE_DETAIL_TARGET_LEVEL ssse3
#elif defined(__SSE3__)
#define MOE_DETAIL_TARGET_LEVEL sse3
#elif defined(__SSE2__) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2) || defined(_M_X64)
#define MOE_DETAIL_TARGET_LEVEL sse2
#elif defined(__aarch64__) || defined(_M_ARM64)
#define MOE_DETAIL_TARGET_LEVEL neon64
#elif defined(__ARM_NEON)
#define MOE_DETAIL_TARGET_LEVEL neon
#else
#define MOE_DETAIL_TARGET_LEVEL scalar
#endif

// ---- the extensions: each suffix is `_name` or nothing ----
#if defined(__AVX512F__) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_FMA  // implied by AVX-512F
#elif defined(__FMA__)
#define MOE_DETAIL_TARGET_FMA _fma
#else
#define MOE_DETAIL_TARGET_FMA  // none, or implied by the architecture (aarch64 always fuses)
#endif
#if defined(__F16C__) && !defined(__AVX512F__) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_F16C _f16c
#else
#define MOE_DETAIL_TARGET_F16C
#endif
#if defined(__AVX512BF16__) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_BF16 _bf16
#else
#define MOE_DETAIL_TARGET_BF16
#endif
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_VNNI _vnni
#elif defined(__AVXVNNI__) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_VNNI _avxvnni
#else
#define MOE_DETAIL_TARGET_VNNI
#endif
#if defined(__ARM_FEATURE_DOTPROD) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_DOTPROD _dotprod
#else
#define MOE_DETAIL_TARGET_DOTPROD
#endif
#if defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC) && !defined(MOE_DONT_VECTORIZE)
#define MOE_DETAIL_TARGET_FP16 _fp16
#else
#define MOE_DETAIL_TARGET_FP16
#endif

// Pasting with an empty suffix leaves the other operand (C++11 placemarkers).
#define MOE_DETAIL_PASTE_(a, b) a##b
#define MOE_DETAIL_PASTE(a, b) MOE_DETAIL_PASTE_(a, b)
#define MOE_DETAIL_STRING_(x) #x
#define MOE_DETAIL_STRING(x) MOE_DETAIL_STRING_(x)

// The inline namespace of this translation unit's target, and its name as a string literal.
#define MOE_TARGET_NAMESPACE                                                                                    \
  MOE_DETAIL_PASTE(                                                                                             \
      MOE_DETAIL_PASTE(                                                                                         \
          MOE_DETAIL_PASTE(                                                                                     \
              MOE_DETAIL_PASTE(MOE_DETAIL_PASTE(MOE_DETAIL_PASTE(MOE_DETAIL_TARGET_LEVEL, MOE_DETAIL_TARGET_FMA), \
                                                MOE_DETAIL_TARGET_F16C),                                        \
                               MOE_DETAIL_TARGET_BF16),                                                         \
              MOE_DETAIL_TARGET_VNNI),                                                                          \
          MOE_DETAIL_TARGET_DOTPROD),                                                                           \
      MOE_DETAIL_TARGET_FP16)
#define MOE_TARGET_NAME MOE_DETAIL_STRING(MOE_TARGET_NAMESPACE)

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace target {

// This translation unit's target, e.g. "avx2_fma_f16c".
inline constexpr const char* kName = MOE_TARGET_NAME;

// The CPU features a program compiled like this translation unit may use: every instruction set extension the
// compiler was allowed, since it may emit any of them in any function, not only in moe's kernels. Spelled as
// /proc/cpuinfo and GCC's __builtin_cpu_supports spell them on x86 (sse4_1 there is "sse4.1"), and as the
// kernel's hwcaps on aarch64 (asimd = NEON, asimddp = SDOT/UDOT, asimdhp = f16 vector arithmetic). Ends with
// nullptr. cpu.hpp tells which of them the running CPU has.
inline constexpr const char* kFeatures[] = {
#if defined(__x86_64__) || defined(__i386__)
#ifdef __SSE2__
    "sse2",
#endif
#ifdef __SSE3__
    "sse3",
#endif
#ifdef __SSSE3__
    "ssse3",
#endif
#ifdef __SSE4_1__
    "sse4.1",
#endif
#ifdef __SSE4_2__
    "sse4.2",
#endif
#ifdef __POPCNT__
    "popcnt",
#endif
#ifdef __AVX__
    "avx",
#endif
#ifdef __AVX2__
    "avx2",
#endif
#ifdef __FMA__
    "fma",
#endif
#ifdef __F16C__
    "f16c",
#endif
#ifdef __BMI__
    "bmi",
#endif
#ifdef __BMI2__
    "bmi2",
#endif
#ifdef __LZCNT__
    "lzcnt",
#endif
#ifdef __MOVBE__
    "movbe",
#endif
#ifdef __AVX512F__
    "avx512f",
#endif
#ifdef __AVX512CD__
    "avx512cd",
#endif
#ifdef __AVX512VL__
    "avx512vl",
#endif
#ifdef __AVX512BW__
    "avx512bw",
#endif
#ifdef __AVX512DQ__
    "avx512dq",
#endif
#ifdef __AVX512IFMA__
    "avx512ifma",
#endif
#ifdef __AVX512VBMI__
    "avx512vbmi",
#endif
#ifdef __AVX512VBMI2__
    "avx512vbmi2",
#endif
#ifdef __AVX512BITALG__
    "avx512bitalg",
#endif
#ifdef __AVX512VPOPCNTDQ__
    "avx512vpopcntdq",
#endif
#ifdef __AVX512BF16__
    "avx512bf16",
#endif
#ifdef __AVX512VNNI__
    "avx512vnni",
#endif
#ifdef __AVXVNNI__
    "avxvnni",
#endif
#ifdef __GFNI__
    "gfni",
#endif
#ifdef __VAES__
    "vaes",
#endif
#ifdef __VPCLMULQDQ__
    "vpclmulqdq",
#endif
#elif defined(__aarch64__)
    "asimd",
#ifdef __ARM_FEATURE_DOTPROD
    "asimddp",
#endif
#ifdef __ARM_FEATURE_FP16_VECTOR_ARITHMETIC
    "asimdhp",
#endif
#endif
    nullptr};

}  // namespace target
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
