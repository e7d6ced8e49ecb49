// program_target.hpp: what a program built from these examples tells about its target (program_target.cpp).
//
// program_target.cpp is compiled for the architecture's baseline (CMakeLists.txt), so that it runs on any CPU
// of the architecture, and the rest of the program for its target. The program's main translation unit
// defines MOE_PROGRAM_TARGET_HERE before including this header, once: that defines the two names below from
// its own target (moe/target.hpp), as data, so that reading them runs no code compiled for the target.
#pragma once

#include <moe/target.hpp>

extern "C" {
// target::kFeatures and target::kName of the program's main translation unit.
extern const char* const* const moe_program_features;
extern const char* const moe_program_target;

// Prints the program's version, its compiler, the target it was built for and the features of the CPU it
// runs on, to stdout; returns 0 when this CPU can run it, else 1.
int moe_program_print_version(const char* program);
}

#ifdef MOE_PROGRAM_TARGET_HERE
extern "C" {
const char* const* const moe_program_features = moe::target::kFeatures;
const char* const moe_program_target = moe::target::kName;
}
#endif
