#!/usr/bin/env bash
# older_cpu.sh MOE_RUN: moe-run on a CPU older than its target says so in one line and exits 1, never SIGILL;
# on a CPU that has its target it runs. The older CPU is qemu-x86_64's Nehalem (x86-64 with SSE4.2 and no
# AVX), under Debian's qemu-user, whose emulated CPUID tells the program what that CPU has.
set -uo pipefail
moe_run=$1
qemu=(qemu-x86_64 -cpu Nehalem)
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}

# The build's own report: the features it needs (its "built for" line).
version=$("$moe_run" --version) || fail "moe-run --version failed on this (the build's own) CPU"
echo "$version"
grep -q '^compiler:  ' <<<"$version" || fail "--version names no compiler"
grep -q '^this CPU:  ' <<<"$version" || fail "--version names no CPU features"
built_for=$(sed -n 's/^built for: //p' <<<"$version")
[ -n "$built_for" ] || fail "--version names no target"

# Nehalem has these and nothing past them.
nehalem=" sse2 sse3 ssse3 sse4.1 sse4.2 popcnt "
needs_more=no
for feature in ${built_for#*: }; do
  [[ $nehalem == *" $feature "* ]] || needs_more=yes
done

for args in "--version" "--tokens 2 --repeat 1 --hidden 40 --ffn 24"; do
  # shellcheck disable=SC2086 # args is a list of arguments
  out=$(mktemp) err=$(mktemp)
  "${qemu[@]}" "$moe_run" $args >"$out" 2>"$err"
  status=$?
  stdout=$(cat "$out") stderr=$(cat "$err")
  rm -f "$out" "$err"
  echo "-- on Nehalem: moe-run $args: exit $status"
  [ $status -ge 128 ] && fail "moe-run $args died of signal $((status - 128)) on Nehalem"
  if [ $needs_more = yes ]; then
    [ $status -eq 1 ] || fail "moe-run $args exited $status on Nehalem, not 1"
    if [ "$args" = "--version" ]; then
      grep -q 'lacks .*: this build cannot run here' <<<"$stdout" || fail "--version on Nehalem does not say what it lacks"
    else
      echo "$stderr"
      [ "$(wc -l <<<"$stderr")" -eq 1 ] || fail "the refusal is not one line"
      grep -q "^moe-run: built for the x86-64 target .*, which this CPU cannot run: it lacks " <<<"$stderr" ||
        fail "the refusal does not name the target and what the CPU lacks"
      [ -z "$stdout" ] || fail "moe-run printed before refusing"
    fi
  else
    [ $status -eq 0 ] || fail "moe-run $args (a baseline build) exited $status on Nehalem: $stderr"
  fi
done
[ $failures -eq 0 ] && echo "older CPU: 1 passed, 0 failed" || echo "older CPU: 0 passed, 1 failed"
[ $failures -eq 0 ]
