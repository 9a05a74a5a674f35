#!/usr/bin/env bash
# Configures and builds imgtool and its tests into build/ (or $BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
extra=()
[ "${IMGTOOL_SANITIZE:-0}" = 1 ] && extra+=(-DIMGTOOL_SANITIZE=ON)
# Several build dirs of one checkout share compiled objects through ccache.
command -v ccache >/dev/null && extra+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "${extra[@]}" >/dev/null
ninja -C "$build_dir" -j"$(nproc)"
