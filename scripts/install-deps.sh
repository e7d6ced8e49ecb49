#!/usr/bin/env bash
# Installs what building and testing moe needs, from Debian 12 packages, and nothing that is already there.
# Safe to run again and again: apt-get runs (update included) only when a package is missing.
#   bash scripts/install-deps.sh           what the README's two commands need (qemu-user: the test that runs
#                                          moe-run on an emulated older CPU; time: scripts/compile-times.sh)
#   bash scripts/install-deps.sh --cross   and the aarch64 cross compiler, for .ci/run's ARM builds
set -euo pipefail

packages=(cmake g++ clang libomp-dev libeigen3-dev libxsimd-dev doctest-dev libbenchmark-dev librsvg2-bin
  nlohmann-json3-dev python3-numpy python3-torch libclang-rt-14-dev qemu-user time)
if [ "${1:-}" = "--cross" ]; then
  packages+=(g++-aarch64-linux-gnu)
fi

if ! command -v dpkg >/dev/null 2>&1; then
  echo "install-deps: no dpkg here (not Debian?); install these yourself: ${packages[*]}" >&2
  exit 0
fi

missing=()
for package in "${packages[@]}"; do
  # dpkg -s also answers for a removed package whose config files remain: require "install ok installed".
  if ! dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed'; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all present (${packages[*]})"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
