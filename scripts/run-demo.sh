#!/usr/bin/env bash
# The demo command: installs the dependencies, builds moe-run in build/ (Release) and runs it with the
# arguments given, e.g.  bash scripts/run-demo.sh --tokens 64  (see build/moe-run --help).
# Build output goes to stderr so that stdout is the demo's alone. JOBS overrides the build parallelism.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

{
  bash scripts/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_EXAMPLES=ON
  cmake --build build --target moe-run -j"${JOBS:-$(nproc)}"
} >&2

exec build/moe-run "$@"
