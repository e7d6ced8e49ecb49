#!/usr/bin/env bash
# fuzz/run.sh [SECONDS]: builds the file-reader fuzzers (fuzz_npy, fuzz_safetensors, fuzz_config_json, and
# fuzz_model: a whole model folder, config.json and model.safetensors, summarised and loaded) with
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, and runs each for SECONDS (default 60) on a
# copy of its seed corpus (fuzz/corpus/KIND/) in a temporary folder, so the checkout is never written to.
# Exits non-zero on any finding (a crash, a sanitizer report, an exception other than moe::Error, a leak, a
# timeout) and keeps the temporary folder, with the inputs that caused it, for reproduction:
#   WORK/bin/fuzz_npy WORK/artifacts/fuzz_npy-crash-...
#
# Needs clang++ and libFuzzer: on Debian 12 libclang_rt.fuzzer-x86_64.a is in libclang-rt-14-dev, which
# clang-14 only recommends (so an install with --no-install-recommends lacks it); nlohmann-json3-dev; and for
# fuzz_model, which includes the layer's headers, libeigen3-dev and libxsimd-dev.
# Missing packages are installed, as scripts/install-deps.sh does. CXX overrides the compiler.
set -euo pipefail

seconds=${1:-60}
case $seconds in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cxx=${CXX:-clang++}

if command -v dpkg >/dev/null 2>&1; then
  missing=()
  for package in clang libclang-rt-14-dev nlohmann-json3-dev libeigen3-dev libxsimd-dev; do
    if ! dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed'; then missing+=("$package"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "fuzz: installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/moe-fuzz.XXXXXX")
mkdir -p "$work/bin" "$work/artifacts"

# libFuzzer present? A one-line target tells, with a clear message instead of a link error per fuzzer.
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$work/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer "$work/probe.cpp" -o "$work/probe" 2>"$work/probe.log"; then
  echo "fuzz: $cxx cannot link libFuzzer (-fsanitize=fuzzer); on Debian 12: apt-get install libclang-rt-14-dev" >&2
  cat "$work/probe.log" >&2
  exit 1
fi

# -fno-sanitize-recover: a UBSan report stops the run (by default UBSan prints and carries on, which libFuzzer
# would not count as a finding).
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I "$root/include"
  -isystem /usr/include/eigen3)

# run NAME KIND DICT: builds fuzzer NAME and fuzzes it on corpus/KIND; its last line says "no finding" or not.
run() {
  local name=$1 kind=$2 dict=$3
  echo "== $name: building"
  nice -n 10 "$cxx" "${flags[@]}" "$here/$name.cpp" -o "$work/bin/$name"
  mkdir -p "$work/corpus/$kind"
  cp "$here/corpus/$kind/"* "$work/corpus/$kind/"
  echo "== $name: fuzzing for $seconds s on $(ls "$work/corpus/$kind" | wc -l) seeds"
  if TMPDIR="$work" ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$work/bin/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -dict="$here/$dict" -artifact_prefix="$work/artifacts/$name-" "$work/corpus/$kind" >"$work/$name.log" 2>&1; then
    echo "== $name: no finding ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$') runs)"
  else
    echo "== $name: FINDING (log: $work/$name.log)"
    grep -E 'ERROR|SUMMARY|runtime error|deadly signal|Test unit written|terminate' "$work/$name.log" | head -20 || true
  fi
}

# Each fuzzer runs on one core: JOBS of them at a time (default: one a core), each one's output shown whole
# when all are done.
fuzzers=(fuzz_npy:npy:npy.dict fuzz_safetensors:safetensors:json.dict fuzz_config_json:config:json.dict
  fuzz_model:model:json.dict)
parallel=${JOBS:-$(nproc)}
running=0
for fuzzer in "${fuzzers[@]}"; do
  IFS=: read -r name kind dict <<<"$fuzzer"
  run "$name" "$kind" "$dict" >"$work/$name.out" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
failed=()
for fuzzer in "${fuzzers[@]}"; do
  name=${fuzzer%%:*}
  cat "$work/$name.out"
  # A fuzzer that failed to build or to run says nothing of "no finding" either.
  grep -q "^== $name: no finding" "$work/$name.out" || failed+=("$name")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}; inputs and logs kept in $work" >&2
  exit 1
fi
rm -rf "$work"
echo "fuzz: ${#fuzzers[@]} fuzzers, $seconds s each, no finding"
