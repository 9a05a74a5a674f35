#!/usr/bin/env bash
# Fresh Debian 12 machine, as root: install what is needed, build, run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
bash scripts/main-job.sh
