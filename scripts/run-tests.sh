#!/usr/bin/env bash
# The test command: installs the dependencies, builds everything in build/ (Release, warnings as errors,
# tests, examples and benchmarks, so the benchmarks are at least compiled) and runs ctest.
# JOBS overrides the build and test parallelism (default: every core).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOE_WERROR=ON \
  -DMOE_BUILD_TESTS=ON -DMOE_BUILD_EXAMPLES=ON -DMOE_BUILD_BENCHMARKS=ON
cmake --build build -j"${JOBS:-$(nproc)}"
ctest --test-dir build --output-on-failure -j"${JOBS:-$(nproc)}"
