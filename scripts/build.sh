#!/usr/bin/env bash
# Configures and builds imgtool and its tests into build/ (or $BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
extra=()
[ "${IMGTOOL_SANITIZE:-0}" = 1 ] && extra+=(-DIMGTOOL_SANITIZE=ON)
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "${extra[@]}" >/dev/null
ninja -C "$build_dir" -j"$(nproc)"
