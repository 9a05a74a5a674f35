# Shared setup for the benchmarks. Source it; needs root.
#
# Trees are written on a journaled ext4 loop mount made here: the VM's root
# filesystem is ext4 without a journal, where creating many files right after
# deleting many runs about 3x slower, which would distort every unpack number.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/mnt/imgtool-bench}
BENCH_IMG=${BENCH_IMG:-/var/tmp/imgtool-bench.ext4}
BENCH_CACHE=${BENCH_CACHE:-/var/cache/imgtool-bench}
BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMGTOOL=${IMGTOOL:-$BENCH_SRC/build/cli/imgtool}

bench_mount() {
  mkdir -p "$BENCH_DIR" "$BENCH_CACHE"
  if ! mountpoint -q "$BENCH_DIR"; then
    if [ ! -f "$BENCH_IMG" ]; then
      truncate -s 12G "$BENCH_IMG"
      mkfs.ext4 -q -F -O has_journal "$BENCH_IMG"
    fi
    mount -o loop "$BENCH_IMG" "$BENCH_DIR"
  fi
  bench_install_imgtool
}

# The binary the benchmarks run is an installed copy, as `cmake --install`
# or a package puts it in place (the peers run from /usr/bin too), not the
# linker's output file: the page cache holds a file the linker wrote in small
# folios, and `imgtool run` from it measured 0.6 ms slower a run than from an
# installed copy of the same bytes (bench/BENCHMARKS.md). Set
# IMGTOOL_AS_LINKED=1 to run the build output as it is.
bench_install_imgtool() {
  if [ -n "${IMGTOOL_AS_LINKED:-}" ] || [ "$IMGTOOL" = "$BENCH_DIR/bin/imgtool" ]; then return; fi
  mkdir -p "$BENCH_DIR/bin"
  install -m 0755 "$IMGTOOL" "$BENCH_DIR/bin/imgtool"
  IMGTOOL=$BENCH_DIR/bin/imgtool
}

bench_unmount() {
  if mountpoint -q "$BENCH_DIR"; then umount "$BENCH_DIR"; fi
}

# Debian bookworm minbase rootfs tar (about 170 MB), made once by mmdebstrap with
# its default mirror.
bench_debian_tar() {
  local out=$BENCH_CACHE/bookworm-minbase.tar
  if [ ! -s "$out" ]; then
    mmdebstrap --variant=minbase --mode=root bookworm "$out.tmp" >&2
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

# A ~500 MB tree of 24k files (text-like and random content), as a tar, made
# deterministically from a fixed seed.
bench_big_tar() {
  local out=$BENCH_CACHE/big-24k.tar
  if [ ! -s "$out" ]; then
    local dir=$BENCH_DIR/big-src
    rm -rf "$dir"
    python3 - "$dir" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(20261129)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
         for _ in range(4000)]
total = 0
for i in range(24000):
    d = os.path.join(root, "d%02d" % (i % 60), "s%03d" % (i % 400))
    os.makedirs(d, exist_ok=True)
    size = int(rng.paretovariate(1.2) * 4000) if i % 10 else rng.randint(40000, 120000)
    size = min(size, 4 << 20)
    if i % 3 == 0:
        data = os.urandom(size)
    else:
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words) + b" "
        data = bytes(out[:size])
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(data)
    total += size
print("generated %d bytes" % total, file=sys.stderr)
PY
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -cf "$out.tmp" .
    rm -rf "$dir"
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

# Makes an OCI layout with one gzip layer from a rootfs tar, using umoci (the peer),
# and an oci-archive of it for imgtool load. Prints the layout dir.
bench_oci_from_tar() {
  local tar=$1 name=$2
  local layout=$BENCH_CACHE/$name-oci
  if [ ! -f "$layout/index.json" ]; then
    rm -rf "$layout" "$BENCH_DIR/bundle-$name"
    umoci init --layout "$layout"
    umoci new --image "$layout:latest"
    umoci unpack --image "$layout:latest" "$BENCH_DIR/bundle-$name" >/dev/null
    tar -C "$BENCH_DIR/bundle-$name/rootfs" -xf "$tar"
    umoci repack --image "$layout:latest" "$BENCH_DIR/bundle-$name" >/dev/null
    rm -rf "$BENCH_DIR/bundle-$name"
    umoci gc --layout "$layout"
  fi
  if [ ! -f "$BENCH_CACHE/$name.oci.tar" ]; then
    skopeo copy -q "oci:$layout:latest" "oci-archive:$BENCH_CACHE/$name.oci.tar:bench/$name:latest"
  fi
  echo "$layout"
}

# The blob path of the (single or last) layer of an OCI layout.
bench_layer_blobs() {
  local layout=$1
  python3 - "$layout" <<'PY'
import json, sys, os
layout = sys.argv[1]
idx = json.load(open(os.path.join(layout, "index.json")))
man_digest = idx["manifests"][0]["digest"].split(":")[1]
man = json.load(open(os.path.join(layout, "blobs/sha256", man_digest)))
for layer in man["layers"]:
    print(os.path.join(layout, "blobs/sha256", layer["digest"].split(":")[1]))
PY
}

# Median seconds of a hyperfine JSON export for command index $2.
bench_median() {
  python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"
}
