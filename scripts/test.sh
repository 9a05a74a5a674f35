#!/usr/bin/env bash
# Builds imgtool and runs every test suite with ctest. Run as root to include the
# privileged tests (mounts, chown, device nodes) and the real-client checks; as
# another user those tests report themselves skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
bash scripts/build.sh
status=0
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" --timeout 600 "$@" || status=$?
exit $status
