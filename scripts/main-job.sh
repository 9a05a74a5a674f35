#!/usr/bin/env bash
# The main job: make a small root filesystem, import it as an image, look at it,
# save it in the formats other tools read, and check the result with skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."
imgtool=${IMGTOOL:-$PWD/build/cli/imgtool}
root=${IMGTOOL_DEMO_ROOT:-/var/tmp/imgtool-demo}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export IMGTOOL_ROOT=$root

mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh echo cat ls uname; do ln -sf busybox "$work/rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
echo 'hello from imgtool' > "$work/rootfs/greeting"
tar --sort=name --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .

set -x
"$imgtool" import "$work/rootfs.tar" demo/hello:latest
"$imgtool" images
"$imgtool" history demo/hello:latest
"$imgtool" save demo/hello:latest --format oci-archive -o "$work/hello.oci.tar"
skopeo inspect "oci-archive:$work/hello.oci.tar" | head -n 12
"$imgtool" export demo/hello:latest -o - | tar -xO greeting
"$imgtool" fsck
