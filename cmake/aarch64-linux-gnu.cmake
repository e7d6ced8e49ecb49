# Cross-compiles moe for 64-bit ARM (NEON) on a Debian x86-64 host with Debian's g++-aarch64-linux-gnu, and runs
# what it builds under qemu-user (Debian's qemu-user):
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#   cmake -S . -B build-armv82 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DMOE_AARCH64_MARCH=armv8.2-a+dotprod+fp16
#
# MOE_AARCH64_MARCH (default armv8-a: NEON, the baseline of every 64-bit ARM CPU) is the -march the code is built
# for; ctest then runs the tests through qemu-aarch64, with -cpu max when the target is past the baseline.
#
# The libraries moe depends on (Eigen, xsimd, doctest, nlohmann-json) are header-only, so the host's packages
# serve: their headers come from /usr/include through -idirafter, which the compiler searches after the cross
# toolchain's own C and C++ headers (/usr/aarch64-linux-gnu/include), so no x86-64 system header can stand in
# for an aarch64 one. OpenMP (libgomp) comes with the cross compiler.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(MOE_AARCH64_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${MOE_AARCH64_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MOE_AARCH64_TRIPLE}-g++)
set(MOE_AARCH64_SYSROOT /usr/${MOE_AARCH64_TRIPLE})

set(MOE_AARCH64_MARCH "armv8-a" CACHE STRING "-march of the aarch64 build (e.g. armv8.2-a+dotprod+fp16)")
set(CMAKE_CXX_FLAGS_INIT "-march=${MOE_AARCH64_MARCH} -idirafter /usr/include")
# -O2, not CMake's -O3: GCC 12.2 for aarch64 stops with an internal compiler error (gimple_duplicate_bb, in
# -O3's complete unrolling of inner loops, a pass -O2 does not run) on the int8 tiles (q8a8, q4a8,
# kernels/int8_tile.hpp) where the tests inline them. The MOE_UNROLL loops are unrolled at -O2 all the same.
# (A cache entry: CMake appends its own -O3 to an _INIT value.)
set(CMAKE_CXX_FLAGS_RELEASE "-O2 -DNDEBUG" CACHE STRING "Flags of Release builds (-O2: see the toolchain file)")

# Programs (python3, bash, rsvg-convert) are the host's; libraries and headers the target's, except the
# header-only packages' CMake configs, which are found on the host.
set(CMAKE_FIND_ROOT_PATH ${MOE_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# Debian installs xsimd's config under the host's multiarch directory, which a search for aarch64 skips.
file(GLOB MOE_HOST_XSIMD_CONFIG /usr/lib/*-linux-gnu/cmake/xsimd/xsimdConfig.cmake)
if(MOE_HOST_XSIMD_CONFIG)
  list(GET MOE_HOST_XSIMD_CONFIG 0 MOE_HOST_XSIMD_CONFIG)
  get_filename_component(xsimd_DIR ${MOE_HOST_XSIMD_CONFIG} DIRECTORY)
  set(xsimd_DIR ${xsimd_DIR} CACHE PATH "xsimd's CMake config (header-only: the host's serves)")
endif()
# xsimd's target names /usr/include as its include directory; as an -isystem flag it would come before the
# cross toolchain's headers, so it is declared implicit (never passed) and reached through -idirafter above.
list(APPEND CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES /usr/include)

# ctest runs every test program through qemu; -cpu max enables the extensions past ARMv8.0 (dotprod, fp16).
if(MOE_AARCH64_MARCH STREQUAL "armv8-a")
  set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${MOE_AARCH64_SYSROOT})
else()
  set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${MOE_AARCH64_SYSROOT} -cpu max)
endif()
