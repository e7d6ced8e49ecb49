#!/usr/bin/env bash
# moe against llama.cpp's CPU backend (ggml) on the same MoE FFN block: for each shape and token count, the median
# latency of one forward pass of moe's layer (moe-run, synthetic weights) and of the ggml graph llama.cpp builds
# for that block (bench/ggml_moe_ffn.cpp: build_moe_ffn with softmax top-k renormalised weights and SwiGLU
# experts, expert weights placed in the CPU backend's repack buffer where it takes them, as llama.cpp's loader
# does), printed as a Markdown table, one row per precision pair:
#   moe f32            vs ggml f32          moe bf16          vs ggml bf16
#   moe q8, q8a8       vs ggml q8_0         moe q4, q4a8      vs ggml q4_0, and again vs ggml q4_K
#   moe mxfp4, mxfp4a8 vs ggml mxfp4
# with ggml/moe, the ggml median over the best (lowest) moe median of the row; with TORCH_PYTHON set, the f32
# and bf16 rows also time PyTorch's eager Hugging Face loop (bench/torch_moe.py, one copy of the weights so that
# it too reads them warm where they fit) and give torch/moe. A precision a side does not have
# (an older moe-run without mxfp4a8, q4_K on rows that are not multiples of 256, an old ggml without MXFP4) is
# n/a. Both sides time the same layer pass after pass (one warm-up pass, then REPEAT timed passes, median and
# min in wall-clock time), the passes taking their tokens in turn from the same number of distinct batches
# (min(REPEAT + 1, 8) in moe-run and ggml-moe-ffn; torch_moe.py rotates 4): each batch routes to experts of its
# own, so in both programs alike the experts a pass reads stay in the last-level cache only where all the
# batches' experts fit there, and stream from memory otherwise.
#
# Usage: bash scripts/compare-llama-cpp.sh LLAMA_CPP_OR_GGML_CHECKOUT [MOE_BUILD_DIR]
#   LLAMA_CPP_OR_GGML_CHECKOUT  a llama.cpp checkout (its ggml is in ggml/) or a ggml checkout; nothing is fetched
#   MOE_BUILD_DIR               where moe-run was built (default: build/ of this repository)
# Environment:
#   SHAPES   "name:hidden:ffn:experts:top_k ..." (default "mixtral-small:1024:2816:8:2 gpt-oss-20b:2880:2880:32:4")
#   TOKENS   token counts (default "1 8 64 512")
#   THREADS  threads of both sides, OMP_NUM_THREADS too (default 2); REPEAT timed passes (default 20)
#   TORCH_PYTHON  a Python with torch (Debian 12: /usr/bin/python3 with python3-torch, and libopenblas0-openmp
#            for a threaded BLAS): adds PyTorch to the f32 and bf16 rows (default: none). torch bf16 at 512
#            tokens takes seconds a pass; TORCH_DTYPES (default "f32 bf16") narrows it
#   ISA      native (default): ggml built for this CPU (GGML_NATIVE), as MOE_BUILD_DIR's moe-run should be;
#            avx2: ggml built for AVX2 without AVX-512 (GGML_NATIVE off: its haswell variant, SSE4.2 AVX F16C FMA
#            AVX2 BMI2), the ggml program with -march=x86-64-v3, and MOE_BUILD_DIR must hold an x86-64-v3 moe-run
#            (moe target avx2_fma_f16c: cmake -DMOE_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3), so that
#            an AVX-512 machine runs both libraries' AVX2 code side by side
#   GGML_BUILD_DIR  where ggml and the ggml program are built (default ${TMPDIR:-/tmp}/moe-compare-ggml-<checksum
#            of the ggml path>, with -avx2 after it for ISA=avx2)
#   JOBS     build parallelism (default: every core); CXX the compiler of the ggml program (default g++)
#
# What it runs (build output on stderr, the table on stdout):
#   cmake -S <ggml> -B $GGML_BUILD_DIR/ggml -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON
#         (ISA=avx2: -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_F16C=ON -DGGML_FMA=ON -DGGML_AVX2=ON
#         -DGGML_BMI2=ON -DGGML_AVX512=OFF, and -march=x86-64-v3 below)
#         -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_LLAMAFILE=ON (llama.cpp's default) -DGGML_CCACHE=OFF
#         and every other backend off (BLAS, CUDA, HIP, MUSA, Vulkan, Metal, SYCL, OpenCL, RPC, WebGPU)
#   cmake --build $GGML_BUILD_DIR/ggml --target ggml
#   g++ -std=c++17 -O3 -march=native -fopenmp -I<ggml>/include bench/ggml_moe_ffn.cpp \
#       libggml.a libggml-cpu.a libggml-base.a -lpthread -lm -o $GGML_BUILD_DIR/ggml-moe-ffn
#       (plus -DMOE_GGML_NO_... for what an older ggml.h lacks)
#   $GGML_BUILD_DIR/ggml-moe-ffn --check --threads N          (f32 graph against a scalar reference; must pass)
#   MOE_BUILD_DIR/moe-run --hidden H --ffn F --experts E --top-k K --tokens T --dtype D --threads N --repeat R
#   $GGML_BUILD_DIR/ggml-moe-ffn --hidden H --ffn F --experts E --top-k K --tokens T --type G --threads N --repeat R
#   $TORCH_PYTHON bench/torch_moe.py --hidden H --ffn F --experts E --top-k K --tokens T --dtype D --threads N
#       --rounds 5 --min-time 0.1 --llc-mib 0.001   (0.001: one copy of the weights, as the other two time them)
# Every measurement is a separate process that builds its own weights; run on an idle machine.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -lt 1 || $# -gt 2 ]]; then
  sed -n '/^# Usage:/,/^#   MOE_BUILD_DIR/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
checkout=$(cd "$1" && pwd)
moe_build=$(cd "${2:-$repo/build}" && pwd)
moe_run=$moe_build/moe-run
if [[ ! -x $moe_run ]]; then
  echo "compare-llama-cpp: no moe-run in $moe_build (build it: cmake --build $moe_build --target moe-run)" >&2
  exit 2
fi

# a llama.cpp checkout carries ggml in ggml/; a ggml checkout is ggml itself
if [[ -f $checkout/ggml/CMakeLists.txt && -f $checkout/ggml/include/ggml.h ]]; then
  ggml_dir=$checkout/ggml kind=llama.cpp
elif [[ -f $checkout/CMakeLists.txt && -f $checkout/include/ggml.h && -d $checkout/src/ggml-cpu ]]; then
  ggml_dir=$checkout kind=ggml
else
  echo "compare-llama-cpp: $checkout is neither a llama.cpp checkout (ggml/include/ggml.h)" \
    "nor a ggml one (include/ggml.h)" >&2
  exit 2
fi

isa=${ISA:-native}
case $isa in
  native)
    ggml_isa=(-DGGML_NATIVE=ON) march=-march=native ;;
  avx2)
    ggml_isa=(-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_F16C=ON -DGGML_FMA=ON -DGGML_AVX2=ON
      -DGGML_BMI2=ON -DGGML_AVX512=OFF)
    march=-march=x86-64-v3
    moe_target=$("$moe_run" --version 2>/dev/null | awk '$1 == "built" && $2 == "for:" { sub(/:$/, "", $4); print $4 }')
    if [[ $moe_target != avx2_fma_f16c ]]; then
      echo "compare-llama-cpp: ISA=avx2 needs an x86-64-v3 moe-run, and $moe_run is built for '${moe_target:-unknown}'" \
        "(build one: cmake -S $repo -B build-v3 -DCMAKE_BUILD_TYPE=Release -DMOE_NATIVE=OFF" \
        "-DCMAKE_CXX_FLAGS=-march=x86-64-v3 && cmake --build build-v3 --target moe-run)" >&2
      exit 2
    fi ;;
  *)
    echo "compare-llama-cpp: ISA is native or avx2, not '$isa'" >&2
    exit 2 ;;
esac

threads=${THREADS:-2}
repeat=${REPEAT:-20}
export OMP_NUM_THREADS=$threads
shapes=${SHAPES:-"mixtral-small:1024:2816:8:2 gpt-oss-20b:2880:2880:32:4"}
tokens_list=${TOKENS:-"1 8 64 512"}
torch_python=${TORCH_PYTHON:-}
torch_dtypes=${TORCH_DTYPES:-"f32 bf16"}
if [[ -n $torch_python ]] && ! "$torch_python" -c 'import torch' 2>/dev/null; then
  echo "compare-llama-cpp: TORCH_PYTHON=$torch_python cannot import torch (Debian 12: apt-get install python3-torch," \
    "and use /usr/bin/python3)" >&2
  exit 2
fi
# one build directory per checkout (cmake refuses to reconfigure a build directory for another source tree)
suffix=""
[[ $isa == native ]] || suffix=-$isa
build=${GGML_BUILD_DIR:-${TMPDIR:-/tmp}/moe-compare-ggml-$(printf '%s' "$ggml_dir" | cksum | cut -d' ' -f1)$suffix}
bench=$build/ggml-moe-ffn

# ---- ggml's CPU backend, then the ggml program -----------------------------------------------------------------
{
  cmake -S "$ggml_dir" -B "$build/ggml" --no-warn-unused-cli -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    "${ggml_isa[@]}" -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_LLAMAFILE=ON -DGGML_CCACHE=OFF \
    -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_HIP=OFF -DGGML_MUSA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF \
    -DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF -DGGML_WEBGPU=OFF
  cmake --build "$build/ggml" --target ggml -j"${JOBS:-$(nproc)}"
} >&2

libs=()
for name in ggml ggml-cpu ggml-base; do
  lib=$(find "$build/ggml" -name "lib$name.a" -print -quit)
  [[ -n $lib ]] || { echo "compare-llama-cpp: lib$name.a not found under $build/ggml" >&2; exit 1; }
  libs+=("$lib")
done
# what an older ggml.h does not have yet
header=$ggml_dir/include/ggml.h
defines=()
grep -q 'ggml_argsort_top_k' "$header" || defines+=(-DMOE_GGML_NO_ARGSORT_TOP_K)
grep -q 'ggml_swiglu_split' "$header" || defines+=(-DMOE_GGML_NO_SWIGLU_SPLIT)
grep -q 'GGML_TYPE_MXFP4' "$header" || defines+=(-DMOE_GGML_NO_MXFP4)
"${CXX:-g++}" -std=c++17 -O3 "$march" -fopenmp "${defines[@]}" -I"$ggml_dir/include" \
  "$repo/bench/ggml_moe_ffn.cpp" "${libs[@]}" -lpthread -lm -o "$bench" >&2

"$bench" --check --threads "$threads"

# ---- the table -------------------------------------------------------------------------------------------------
revision=$(git -C "$checkout" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
echo
echo "moe: $("$moe_run" --version 2>/dev/null | head -n 1) ($moe_run); ggml: $kind checkout $checkout ($revision)"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown); ISA $isa; threads $threads," \
  "repeat $repeat; times are medians in ms of one forward pass"

# moe_median DTYPE: moe-run's median, or n/a when it rejects the precision or prints no median
moe_median() {
  local out
  if out=$("$moe_run" --hidden "$hidden" --ffn "$ffn" --experts "$experts" --top-k "$top_k" --tokens "$tokens" \
    --dtype "$1" --threads "$threads" --repeat "$repeat" 2>/dev/null); then
    awk '$1 == "latency" { for (i = 2; i < NF; ++i) if ($i == "median") { print $(i + 1); found = 1; exit } }
         END { if (!found) print "n/a" }' <<< "$out"
  else
    echo "n/a"
  fi
}

# ggml_run TYPE: sets ggml_ms (or n/a, with the reason in ggml_note) and ggml_buffer (where the experts went)
ggml_run() {
  local out err
  err=$(mktemp)
  if out=$("$bench" --hidden "$hidden" --ffn "$ffn" --experts "$experts" --top-k "$top_k" --tokens "$tokens" \
    --type "$1" --threads "$threads" --repeat "$repeat" 2> "$err"); then
    ggml_ms=$(awk '$1 == "ggml" { for (i = 2; i < NF; ++i) if ($i == "median") { print $(i + 1); exit } }' <<< "$out")
    [[ -n $ggml_ms ]] || ggml_ms="n/a"
    ggml_buffer=$(awk '$1 == "expert" && $2 == "tensor" { sub(/.* in /, ""); print }' <<< "$out" | sort -u |
      paste -sd ';' - | sed 's/;/; /g')
    ggml_note=""
  else
    ggml_ms="n/a" ggml_buffer="" ggml_note=$(head -n 1 "$err")
  fi
  rm -f "$err"
}

# torch_median DTYPE: bench/torch_moe.py's median, or n/a when it fails (its correctness check included)
torch_median() {
  local out
  if out=$("$torch_python" "$repo/bench/torch_moe.py" --hidden "$hidden" --ffn "$ffn" --experts "$experts" \
    --top-k "$top_k" --tokens "$tokens" --dtype "$1" --threads "$threads" --rounds 5 --min-time 0.1 \
    --llc-mib 0.001 2>/dev/null); then
    awk '$1 ~ /^tokens=/ { for (i = 2; i <= NF; ++i) if ($i ~ /^median_ms=/) { sub(/^median_ms=/, "", $i); print $i;
         found = 1; exit } } END { if (!found) print "n/a" }' <<< "$out"
  else
    echo "n/a"
  fi
}

# row MOE_PRECISIONS GGML_TYPE [TORCH_DTYPE]: one table row from the measurements of this shape and token count
row() {
  local moe_names=$1 type=$2 torch_dtype=${3:-} best="" best_name="" names="" times="" p ms ratio torch=""
  for p in $moe_names; do
    ms=${moe_ms[$p]}
    names+="${names:+ / }$p"
    times+="${times:+ / }$ms"
    if [[ $ms != n/a ]] && { [[ -z $best ]] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; }; then
      best=$ms best_name=$p
    fi
  done
  ms=${ggml_ms_of[$type]}
  if [[ -n $best && $ms != n/a ]]; then
    ratio="$(awk -v g="$ms" -v m="$best" 'BEGIN { printf "%.2f", g / m }') ($best_name)"
  else
    ratio="n/a"
  fi
  if [[ -n $torch_python ]]; then
    local t=""
    [[ -z $torch_dtype ]] || t=${torch_ms_of[$torch_dtype]:-}
    if [[ -n $t && $t != n/a && -n $best ]]; then
      torch=" $t | $(awk -v t="$t" -v m="$best" 'BEGIN { printf "%.2f", t / m }') |"
    else
      torch=" ${t:-} | ${t:+n/a} |"
    fi
  fi
  echo "| $tokens | $names | $times | $type | $ms | ${ggml_buffer_of[$type]:-} | $ratio |$torch"
}

declare -A moe_ms ggml_ms_of ggml_buffer_of torch_ms_of
for shape in $shapes; do
  IFS=: read -r name hidden ffn experts top_k <<< "$shape"
  if [[ -z $top_k ]]; then
    echo "compare-llama-cpp: SHAPES entries are name:hidden:ffn:experts:top_k, not $shape" >&2
    exit 2
  fi
  echo
  echo "### $name: hidden $hidden, ffn $ffn, $experts experts, top-$top_k (SwiGLU, softmax top-k renormalised)"
  echo
  if [[ -n $torch_python ]]; then
    echo "| tokens | moe | moe ms | ggml | ggml ms | ggml expert buffer | ggml/moe (best moe) | torch ms | torch/moe |"
    echo "|---:|---|---:|---|---:|---|---:|---:|---:|"
  else
    echo "| tokens | moe | moe ms | ggml | ggml ms | ggml expert buffer | ggml/moe (best moe) |"
    echo "|---:|---|---:|---|---:|---|---:|"
  fi
  notes=()
  for tokens in $tokens_list; do
    moe_ms=() ggml_ms_of=() ggml_buffer_of=() torch_ms_of=()
    for p in f32 bf16 q8 q8a8 q4 q4a8 mxfp4 mxfp4a8; do moe_ms[$p]=$(moe_median "$p"); done
    for type in f32 bf16 q8_0 q4_0 q4_K mxfp4; do
      ggml_run "$type"
      ggml_ms_of[$type]=$ggml_ms
      ggml_buffer_of[$type]=$ggml_buffer
      if [[ -n $ggml_note && $tokens == "${tokens_list%% *}" ]]; then notes+=("ggml $type: $ggml_note"); fi
    done
    if [[ -n $torch_python ]]; then
      for d in $torch_dtypes; do torch_ms_of[$d]=$(torch_median "$d"); done
    fi
    row "f32" f32 f32
    row "bf16" bf16 bf16
    row "q8 q8a8" q8_0
    row "q4 q4a8" q4_0
    row "q4 q4a8" q4_K
    row "mxfp4 mxfp4a8" mxfp4
  done
  if [[ ${#notes[@]} -gt 0 ]]; then
    echo
    printf 'n/a: %s\n' "${notes[@]}"
  fi
done
