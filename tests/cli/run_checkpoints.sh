#!/usr/bin/env bash
# run_checkpoints.sh MOE_RUN DIR [PYTHON]: runs moe-run on every (model folder, layer) of DIR/MANIFEST.txt (written by
# tests/make_checkpoints.py) with --dtype auto and compares the output with the PyTorch reference saved beside
# it: max|Y - reference| / max|reference| <= 1e-4. A line "<folder> <layer> <weights> <dtype> <bar>" runs
# --dtype <dtype> instead (the checkpoint converted at load) and allows max|Y - reference| / max|reference| <= bar. MOE_EMULATOR, when set (e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu"),
# is the command that runs MOE_RUN (a cross-compiled build).
set -uo pipefail
moe_run=$1
dir=$2
python=${3:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
passed=0
failed=0
while read -r folder layer dtype convert bar; do
  [ -z "$folder" ] && continue
  convert=${convert:-auto}
  out="$dir/$folder/output_${layer}_$convert.npy"
  rm -f "$out"
  # shellcheck disable=SC2086 # MOE_EMULATOR is a command with its arguments
  if ${MOE_EMULATOR:-} "$moe_run" --model "$dir/$folder" --layer "$layer" --input "$dir/$folder/input_$layer.npy" --output "$out" \
      --dtype "$convert" --threads 2 >/dev/null &&
    "$python" "$here/compare_npy.py" "$out" "$dir/$folder/expected_$layer.npy" ${bar:-}; then
    passed=$((passed + 1))
  else
    echo "FAILED: $folder layer $layer ($dtype weights, --dtype $convert)"
    failed=$((failed + 1))
  fi
done <"$dir/MANIFEST.txt"
[ $((passed + failed)) -gt 0 ] || { echo "no checkpoints in $dir/MANIFEST.txt"; exit 1; }
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
