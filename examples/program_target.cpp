// program_target.cpp: refuses to run a program on a CPU that lacks its target's instructions, with one line
// that names them, and prints --version; compiled for the architecture's baseline (CMakeLists.txt).
//
// A program compiled for, say, x86-64-v3 may execute an AVX2 instruction anywhere, from its first static
// initializer on, and on an older CPU that is SIGILL with no word of why. The check below runs before them:
// a constructor of priority 101 comes before every default-priority one in the executable, and the C
// library's and the shared libraries' own initialisation before that are built for the baseline. It reads
// the program's features as data (program_target.hpp) and calls only the C library and moe/cpu.hpp, whose
// copy here is this file's baseline one (target.hpp's namespaces keep the two copies apart).
#include "program_target.hpp"

#include <cstdio>
#include <cstring>

#include <unistd.h>

#include <moe/config.hpp>
#include <moe/cpu.hpp>

namespace {

#if defined(__x86_64__)
constexpr const char* kArchitecture = "x86-64";
#elif defined(__i386__)
constexpr const char* kArchitecture = "x86";
#elif defined(__aarch64__)
constexpr const char* kArchitecture = "aarch64";
#else
constexpr const char* kArchitecture = "unknown architecture";
#endif

#if defined(__clang__)
constexpr const char* kCompiler = "Clang " __clang_version__;
#elif defined(__GNUC__)
constexpr const char* kCompiler = "GCC " __VERSION__;
#else
constexpr const char* kCompiler = "an unknown compiler";
#endif

void print_list(const char* const* names) {
  for (bool first = true; *names != nullptr; ++names, first = false) std::printf("%s%s", first ? "" : " ", *names);
}

// The running program's name, from argv[0] without its directory.
const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash != nullptr ? slash + 1 : path;
}

// Runs before every default-priority constructor. glibc passes argc and argv to constructors (the ELF
// init_array convention it follows), so `program --version` is answered here, on any CPU; elsewhere main
// answers it.
#if defined(__GLIBC__)
__attribute__((constructor(101))) void refuse_unsupported_cpu(int argc, char** argv, char**) {
  const char* program = argc > 0 ? base_name(argv[0]) : "program";
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) _exit(moe_program_print_version(program));
#else
__attribute__((constructor(101))) void refuse_unsupported_cpu() {
  const char* program = "program";
#endif
  char missing[512];
  if (moe::cpu::missing(moe_program_features, missing, sizeof missing) == 0) return;
  std::fprintf(stderr,
               "%s: built for the %s target %s, which this CPU cannot run: it lacks %s (rebuild it on this machine, "
               "where MOE_NATIVE=ON targets its instruction set)\n",
               program, kArchitecture, moe_program_target, missing);
  std::fflush(stderr);
  _exit(1);
}

}  // namespace

extern "C" int moe_program_print_version(const char* program) {
  std::printf("%s %d.%d.%d\n", program, MOE_VERSION_MAJOR, MOE_VERSION_MINOR, MOE_VERSION_PATCH);
  std::printf("compiler:  %s\n", kCompiler);
  std::printf("built for: %s %s: ", kArchitecture, moe_program_target);
  print_list(moe_program_features);
  std::printf("\nthis CPU:  ");
  if (!moe::cpu::kCanTell) {
    std::printf("unknown (this build cannot read the CPU's features here)\n");
    return 0;
  }
  bool any = false;
  for (const moe::cpu::Feature* feature = moe::cpu::kDetectable; feature->name != nullptr; ++feature)
    if (feature->present()) {
      std::printf("%s%s", any ? " " : "", feature->name);
      any = true;
    }
  char missing[512];
  const bool runs = moe::cpu::missing(moe_program_features, missing, sizeof missing) == 0;
  if (runs)
    std::printf("\n           (has every extension this build uses)\n");
  else
    std::printf("\n           (lacks %s: this build cannot run here)\n", missing);
  std::fflush(stdout);
  return runs ? 0 : 1;
}
