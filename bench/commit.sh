#!/usr/bin/env bash
# Layer commit after a 100 MiB file was added to a Debian bookworm minbase
# rootfs: imgtool's differ (reads the overlay upper dir, writes a deterministic
# parallel gzip layer, or zstd) vs `umoci repack` of the same change, and vs
# gzip -6, pigz -6 and zstd -T0 of the file alone, side by side in one hyperfine
# run on a journaled ext4 loop mount.
# Usage (root): bench/commit.sh [RUNS]   prints a markdown table of medians and ratios.
source "$(dirname "$0")/lib.sh"
runs=${1:-5}
LAYER_BENCH=${LAYER_BENCH:-$BENCH_SRC/build/tests/layer_bench}
bench_mount
trap bench_unmount EXIT
out=$BENCH_DIR/results
mkdir -p "$out"

tar=$(bench_debian_tar)
layout=$(bench_oci_from_tar "$tar" debian)
# The added file: the first 100 MiB of the rootfs tar, so its content is as
# compressible as real binaries and text are.
file=$BENCH_CACHE/file-100m.bin
[ -s "$file" ] || head -c $((100 << 20)) "$tar" > "$file"

d=$BENCH_DIR/commit
rm -rf "$d"
mkdir -p "$d/upper/opt" "$d/saved"
cp "$file" "$d/upper/opt/big.bin"
# umoci: the image unpacked once; each run restores the bundle's metadata so
# that repack sees the same one-file change again.
cp -a "$layout" "$d/layout"
umoci unpack --image "$d/layout:latest" "$d/bundle" >/dev/null
cp "$file" "$d/bundle/rootfs/opt/big.bin"
find "$d/bundle" -maxdepth 1 -type f -exec cp -a {} "$d/saved/" \;
restore_cmd="find $d/bundle -maxdepth 1 -type f -delete; cp -a $d/saved/. $d/bundle/; rm -f $d/out.*; sync"
restore="sh -c '$restore_cmd'"

hyperfine -N --runs "$runs" --warmup 1 --export-json "$out/commit.json" \
  --prepare "$restore" "$LAYER_BENCH $d/upper $d/out.tar.gz" \
  --prepare "$restore" "$LAYER_BENCH $d/upper $d/out.tar.zst --zstd" \
  --prepare "$restore" "umoci repack --image $d/layout:latest $d/bundle" \
  --prepare "$restore" "sh -c 'gzip -6 -c $file > $d/out.gz'" \
  --prepare "$restore" "sh -c 'pigz -6 -c $file > $d/out.pigz'" \
  --prepare "$restore" "sh -c 'zstd -q -T0 -3 -c $file > $d/out.zst'" >&2

# Determinism: the same tree committed twice, with 1 and with all threads, gives
# the same blob.
a=$("$LAYER_BENCH" "$d/upper" "$d/a.tar.gz" --threads 1 | cut -d' ' -f1)
b=$("$LAYER_BENCH" "$d/upper" "$d/b.tar.gz" | cut -d' ' -f1)
[ "$a" = "$b" ] || { echo "layer digest differs between 1 and all threads: $a $b" >&2; exit 1; }

# Sizes: imgtool's gzip and zstd blobs, and the layer umoci repack added.
gzip_size=$("$LAYER_BENCH" "$d/upper" "$d/s.tar.gz" | cut -d' ' -f2)
zstd_size=$("$LAYER_BENCH" "$d/upper" "$d/s.tar.zst" --zstd | cut -d' ' -f2)
sh -c "$restore_cmd"
umoci repack --image "$d/layout:latest" "$d/bundle" >/dev/null
umoci_size=$(python3 - "$d/layout" <<'PY'
import json, os, sys
layout = sys.argv[1]
idx = json.load(open(os.path.join(layout, "index.json")))
man = [m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0]
man = json.load(open(os.path.join(layout, "blobs/sha256", man["digest"].split(":")[1])))
print(man["layers"][-1]["size"])
PY
)

m() { bench_median "$out/commit.json" "$1"; }
ig=$(m 0) iz=$(m 1) um=$(m 2) gz=$(m 3) pz=$(m 4) zs=$(m 5)
echo "| imgtool gzip | imgtool zstd | umoci repack | gzip -6 (file) | pigz -6 (file) | zstd -T0 (file) | imgtool gzip/umoci | imgtool zstd/umoci |"
echo "|---|---|---|---|---|---|---|---|"
python3 -c "import sys; ig,iz,um,gz,pz,zs=map(float,sys.argv[1:]); print('| %.2f s | %.2f s | %.2f s | %.2f s | %.2f s | %.2f s | %.2fx | %.2fx |' % (ig,iz,um,gz,pz,zs,ig/um,iz/um))" \
  "$ig" "$iz" "$um" "$gz" "$pz" "$zs"
echo "layer digest (gzip, 1 and $(nproc) threads): $a"
echo "layer sizes: imgtool gzip $gzip_size, imgtool zstd $zstd_size, umoci repack $umoci_size bytes"
rm -rf "$d"
