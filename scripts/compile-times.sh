#!/usr/bin/env bash
# Compile time of what users compile, against the budget: the compiler's CPU seconds (user + system, so that
# other work on the machine does not count) and peak memory for one translation unit each, at -O2 for this
# machine's instruction set (g++ unless CXX says otherwise).
#   moe/moe.hpp alone               the one public include
#   one layer (quickstart.cpp)      a program that builds and runs a moe::Layer
#   load a checkpoint               tests/compile_time/load_block.cpp with moe::layers (MOE_COMPILED_LAYERS)
#   moe-run (moe_run.cpp)           the CLI, with moe::layers
#   moe::layers, one precision      one of the translation units the compiled layers are built from
# Budgets (issue 23): a checkpoint-loading unit <= 20 s, moe-run <= 40 s; over budget exits 1.
# MOE_COMPILE_TIME_MARCH replaces -march=native (e.g. -march=x86-64-v3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cxx=${CXX:-g++}
march=${MOE_COMPILE_TIME_MARCH:--march=native}
flags=(-std=c++17 -O2 -DNDEBUG "$march" -fopenmp -Iinclude -Iexamples -isystem /usr/include/eigen3)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '#include <moe/moe.hpp>\nint main() { return moe::Dynamic == -1 ? 0 : 1; }\n' > "$work/include_only.cpp"
printf '#include <moe/any_layer.hpp>\nMOE_INSTANTIATE_LAYERS(::moe::q4a8)\n' > "$work/layers_q4a8.cpp"

over=0
# measure LABEL BUDGET_SECONDS SOURCE [extra flags...]
measure() {
  local label=$1 budget=$2 source=$3
  shift 3
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$cxx" "${flags[@]}" "$@" -c "$source" -o "$work/out.o"
  local user system kb seconds
  read -r user system kb < "$work/time"
  seconds=$(awk -v u="$user" -v s="$system" 'BEGIN { printf "%.1f", u + s }')
  local verdict=""
  if [[ $budget != - ]]; then
    if awk -v s="$seconds" -v b="$budget" 'BEGIN { exit !(s > b) }'; then
      verdict="  OVER the budget of $budget s"
      over=1
    else
      verdict="  (budget $budget s)"
    fi
  fi
  printf '  %-34s %6.1f s  %5d MB%s\n' "$label" "$seconds" $((kb / 1024)) "$verdict"
}

echo "compile time, $cxx $($cxx -dumpversion) -O2 $march, one translation unit each:"
measure "moe/moe.hpp alone" - "$work/include_only.cpp"
measure "one layer (quickstart.cpp)" - examples/quickstart.cpp
measure "load a checkpoint (load_block.cpp)" 20 tests/compile_time/load_block.cpp -DMOE_COMPILED_LAYERS
measure "moe-run (moe_run.cpp)" 40 examples/moe_run.cpp -DMOE_COMPILED_LAYERS
measure "moe::layers, q4a8 (4 policies)" - "$work/layers_q4a8.cpp" -DMOE_COMPILED_LAYERS
exit $over
