// moe/cpu.hpp: which CPU features the running processor has, in target.hpp's spelling.
//
// A program built for a target the CPU lacks dies of SIGILL at its first such instruction, which may come
// before main (a static initializer, an inlined memcpy). To refuse cleanly instead, check the features in a
// translation unit compiled for the architecture's baseline (-march=x86-64, -march=armv8-a), early: moe-run
// does it in a constructor that runs before every other one (examples/cpu_check.cpp). These functions use
// no moe type and no standard library template, so that the copy in such a translation unit calls nothing
// compiled for the target.
#pragma once

#include <cstring>

#include "config.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace cpu {

// Whether this build can tell the running CPU's features: x86 with GCC or Clang (CPUID through
// __builtin_cpu_supports), and aarch64 Linux (the kernel's hwcaps).
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
inline constexpr bool kCanTell = true;
#elif defined(__aarch64__) && defined(__linux__)
inline constexpr bool kCanTell = true;
#else
inline constexpr bool kCanTell = false;
#endif

// Every feature has() knows on this architecture, in the order of target::kFeatures; ends with nullptr.
inline constexpr const char* kKnown[] = {
#if defined(__x86_64__) || defined(__i386__)
    "sse2",        "sse3",       "ssse3",       "sse4.1",       "sse4.2",          "popcnt",     "avx",
    "avx2",        "fma",        "f16c",        "bmi",          "bmi2",            "lzcnt",      "movbe",
    "avx512f",     "avx512cd",   "avx512vl",    "avx512bw",     "avx512dq",        "avx512ifma", "avx512vbmi",
    "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq", "avx512bf16", "avx512vnni", "avxvnni",    "gfni",
    "vaes",        "vpclmulqdq",
#elif defined(__aarch64__)
    "asimd", "asimddp", "asimdhp",
#endif
    nullptr};

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
namespace detail {
// Bit `bit` of register `reg` (0 EAX, 1 EBX, 2 ECX, 3 EDX) of CPUID leaf `leaf`, subleaf `subleaf`; false
// where the CPU has no such leaf.
inline bool cpuid_bit(unsigned leaf, unsigned subleaf, int reg, int bit) {
  unsigned r[4] = {0, 0, 0, 0};
  if (__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3]) == 0) return false;
  return ((r[reg] >> bit) & 1u) != 0;
}
}  // namespace detail
#endif

// Whether the running CPU has `feature` (a name from kKnown). False for a name it does not know, and on a
// platform where it cannot tell (kCanTell false).
inline bool has(const char* feature) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  // The names Clang 14's __builtin_cpu_supports lacks, from their CPUID bits (Intel SDM vol. 2, CPUID); the
  // vector ones also need the OS to save the AVX registers, which has("avx") checks (XGETBV).
  if (std::strcmp(feature, "f16c") == 0) return detail::cpuid_bit(1, 0, 2, 29) && has("avx");
  if (std::strcmp(feature, "movbe") == 0) return detail::cpuid_bit(1, 0, 2, 22);
  if (std::strcmp(feature, "lzcnt") == 0) return detail::cpuid_bit(0x80000001u, 0, 2, 5);
  if (std::strcmp(feature, "vaes") == 0) return detail::cpuid_bit(7, 0, 2, 9) && has("avx");
  if (std::strcmp(feature, "avxvnni") == 0) return detail::cpuid_bit(7, 1, 0, 4) && has("avx");
  __builtin_cpu_init();
  // __builtin_cpu_supports takes a string literal only: one comparison per name.
#define MOE_DETAIL_CPU_FEATURE(name) \
  if (std::strcmp(feature, name) == 0) return __builtin_cpu_supports(name) != 0;
  MOE_DETAIL_CPU_FEATURE("sse2")
  MOE_DETAIL_CPU_FEATURE("sse3")
  MOE_DETAIL_CPU_FEATURE("ssse3")
  MOE_DETAIL_CPU_FEATURE("sse4.1")
  MOE_DETAIL_CPU_FEATURE("sse4.2")
  MOE_DETAIL_CPU_FEATURE("popcnt")
  MOE_DETAIL_CPU_FEATURE("avx")
  MOE_DETAIL_CPU_FEATURE("avx2")
  MOE_DETAIL_CPU_FEATURE("fma")
  MOE_DETAIL_CPU_FEATURE("bmi")
  MOE_DETAIL_CPU_FEATURE("bmi2")
  MOE_DETAIL_CPU_FEATURE("avx512f")
  MOE_DETAIL_CPU_FEATURE("avx512cd")
  MOE_DETAIL_CPU_FEATURE("avx512vl")
  MOE_DETAIL_CPU_FEATURE("avx512bw")
  MOE_DETAIL_CPU_FEATURE("avx512dq")
  MOE_DETAIL_CPU_FEATURE("avx512ifma")
  MOE_DETAIL_CPU_FEATURE("avx512vbmi")
  MOE_DETAIL_CPU_FEATURE("avx512vbmi2")
  MOE_DETAIL_CPU_FEATURE("avx512bitalg")
  MOE_DETAIL_CPU_FEATURE("avx512vpopcntdq")
  MOE_DETAIL_CPU_FEATURE("avx512bf16")
  MOE_DETAIL_CPU_FEATURE("avx512vnni")
  MOE_DETAIL_CPU_FEATURE("gfni")
  MOE_DETAIL_CPU_FEATURE("vpclmulqdq")
#undef MOE_DETAIL_CPU_FEATURE
  return false;
#elif defined(__aarch64__) && defined(__linux__)
  // The kernel's AT_HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h), stable since Linux 4.11.
  constexpr unsigned long kAsimd = 1ul << 1, kAsimdHp = 1ul << 10, kAsimdDp = 1ul << 20;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  if (std::strcmp(feature, "asimd") == 0) return (hwcap & kAsimd) != 0;
  if (std::strcmp(feature, "asimddp") == 0) return (hwcap & kAsimdDp) != 0;
  if (std::strcmp(feature, "asimdhp") == 0) return (hwcap & kAsimdHp) != 0;
  return false;
#else
  (void)feature;
  return false;
#endif
}

// Writes into `out` (size `capacity`, always terminated) the names in the nullptr-ended list `features` that
// the running CPU lacks, separated by spaces; returns how many. Nothing is missing where kCanTell is false.
inline int missing(const char* const* features, char* out, std::size_t capacity) {
  int count = 0;
  std::size_t used = 0;
  if (capacity > 0) out[0] = '\0';
  for (; kCanTell && *features != nullptr; ++features) {
    if (has(*features)) continue;
    ++count;
    const std::size_t name = std::strlen(*features), separator = used > 0 ? 1 : 0;
    if (used + separator + name + 1 > capacity) continue;
    if (separator) out[used++] = ' ';
    std::memcpy(out + used, *features, name + 1);
    used += name;
  }
  return count;
}

}  // namespace cpu
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
