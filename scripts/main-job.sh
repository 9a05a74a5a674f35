#!/usr/bin/env bash
# The main job: build the default recipe (a minimal Debian bookworm made by
# mmdebstrap with its default mirror, plus two steps) and run the image; then
# save it and check the archive with skopeo, and check the store with fsck.
# A second run is quick: the base and every step come from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
imgtool=${IMGTOOL:-$PWD/build/cli/imgtool}
root=${IMGTOOL_DEMO_ROOT:-/var/tmp/imgtool-demo}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export IMGTOOL_ROOT=$root

set -x
"$imgtool" build recipes/debian-hello.yaml
"$imgtool" run --rm localhost/debian-hello:latest
"$imgtool" run --rm --net none localhost/debian-hello:latest cat /etc/debian_version
"$imgtool" images
"$imgtool" history localhost/debian-hello:latest
"$imgtool" save localhost/debian-hello:latest --format oci-archive -o "$work/hello.oci.tar"
skopeo inspect "oci-archive:$work/hello.oci.tar" | head -n 12
"$imgtool" fsck
