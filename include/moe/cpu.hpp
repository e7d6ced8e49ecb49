// moe/cpu.hpp: which CPU features the running processor has, in target.hpp's spelling.
//
// A program built for a target the CPU lacks dies of SIGILL at its first such instruction, which may come
// before main (a static initializer, an inlined memcpy). To refuse cleanly instead, check the features in a
// translation unit compiled for the architecture's baseline (-march=x86-64, -march=armv8-a), early: moe-run
// does it in a constructor that runs before every other one (examples/program_target.cpp). These functions use
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

// A feature this header can detect: its name (target.hpp's spelling) and whether the running CPU has it.
struct Feature {
  const char* name;
  bool (*present)();
};

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
namespace detail {
// Bit `bit` of register `reg` (0 EAX, 1 EBX, 2 ECX, 3 EDX) of CPUID leaf `leaf`, subleaf `subleaf`; false
// where the CPU has no such leaf.
inline bool cpuid_bit(unsigned leaf, unsigned subleaf, int reg, int bit) {
  unsigned r[4] = {0, 0, 0, 0};
  if (__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3]) == 0) return false;
  return ((r[reg] >> bit) & 1u) != 0;
}
// Whether the CPU has AVX and the OS saves its registers (XGETBV), which every VEX-encoded feature needs.
inline bool avx_usable() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx") != 0;
}
}  // namespace detail

// __builtin_cpu_supports takes a string literal only, so each name gets its own function. The names Clang
// 14's builtin lacks come from their CPUID bits (Intel SDM vol. 2, CPUID), the VEX-encoded ones only where
// AVX is usable.
#define MOE_DETAIL_BUILTIN_FEATURE(name) \
  Feature { name, [] { return __builtin_cpu_init(), __builtin_cpu_supports(name) != 0; } }
#define MOE_DETAIL_CPUID_FEATURE(name, leaf, subleaf, reg, bit, vex) \
  Feature { name, [] { return detail::cpuid_bit(leaf, subleaf, reg, bit) && (!(vex) || detail::avx_usable()); } }
inline constexpr Feature kDetectable[] = {
    MOE_DETAIL_BUILTIN_FEATURE("sse2"),
    MOE_DETAIL_BUILTIN_FEATURE("sse3"),
    MOE_DETAIL_BUILTIN_FEATURE("ssse3"),
    MOE_DETAIL_BUILTIN_FEATURE("sse4.1"),
    MOE_DETAIL_BUILTIN_FEATURE("sse4.2"),
    MOE_DETAIL_BUILTIN_FEATURE("popcnt"),
    MOE_DETAIL_BUILTIN_FEATURE("avx"),
    MOE_DETAIL_BUILTIN_FEATURE("avx2"),
    MOE_DETAIL_BUILTIN_FEATURE("fma"),
    MOE_DETAIL_CPUID_FEATURE("f16c", 1, 0, 2, 29, true),
    MOE_DETAIL_BUILTIN_FEATURE("bmi"),
    MOE_DETAIL_BUILTIN_FEATURE("bmi2"),
    MOE_DETAIL_CPUID_FEATURE("lzcnt", 0x80000001u, 0, 2, 5, false),
    MOE_DETAIL_CPUID_FEATURE("movbe", 1, 0, 2, 22, false),
    MOE_DETAIL_BUILTIN_FEATURE("avx512f"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512cd"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512vl"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512bw"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512dq"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512ifma"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512vbmi"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512vbmi2"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512bitalg"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512vpopcntdq"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512bf16"),
    MOE_DETAIL_BUILTIN_FEATURE("avx512vnni"),
    MOE_DETAIL_CPUID_FEATURE("avxvnni", 7, 1, 0, 4, true),
    MOE_DETAIL_BUILTIN_FEATURE("gfni"),
    MOE_DETAIL_CPUID_FEATURE("vaes", 7, 0, 2, 9, true),
    MOE_DETAIL_BUILTIN_FEATURE("vpclmulqdq"),
    Feature{nullptr, nullptr}};
#undef MOE_DETAIL_BUILTIN_FEATURE
#undef MOE_DETAIL_CPUID_FEATURE
#elif defined(__aarch64__) && defined(__linux__)
namespace detail {
// A bit of the kernel's AT_HWCAP (arch/arm64/include/uapi/asm/hwcap.h, stable since Linux 4.11).
template <int Bit>
bool hwcap_bit() {
  return ((getauxval(AT_HWCAP) >> Bit) & 1ul) != 0;
}
}  // namespace detail
inline constexpr Feature kDetectable[] = {{"asimd", detail::hwcap_bit<1>},
                                          {"asimddp", detail::hwcap_bit<20>},
                                          {"asimdhp", detail::hwcap_bit<10>},
                                          {nullptr, nullptr}};
#else
inline constexpr Feature kDetectable[] = {{nullptr, nullptr}};
#endif

// Whether this build can tell the running CPU's features: x86 with GCC or Clang, and aarch64 Linux.
inline constexpr bool kCanTell = kDetectable[0].name != nullptr;

// Whether the running CPU has `feature`. False for a name kDetectable does not hold, and on a platform
// where it cannot tell (kCanTell false).
inline bool has(const char* feature) {
  for (const Feature* known = kDetectable; known->name != nullptr; ++known)
    if (std::strcmp(known->name, feature) == 0) return known->present();
  return false;
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
