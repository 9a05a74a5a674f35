#!/usr/bin/env bash
# Load + unpack to a ready snapshot: imgtool vs umoci unpack vs pigz -dc | tar -x,
# on a Debian bookworm minbase image (~170 MB) and a ~500 MB image of 24k files,
# side by side in one hyperfine run per image, on a journaled ext4 loop mount.
# Usage (root): bench/unpack.sh [RUNS]   prints a markdown table of medians and ratios.
source "$(dirname "$0")/lib.sh"
runs=${1:-5}
bench_mount
trap bench_unmount EXIT
out=$BENCH_DIR/results
mkdir -p "$out"

echo "| image | imgtool load+unpack | umoci unpack | pigz -dc \| tar -x | imgtool/umoci | imgtool/pigz+tar |"
echo "|---|---|---|---|---|---|"
for name in debian big; do
  case $name in
    debian) tar=$(bench_debian_tar) ;;
    big) tar=$(bench_big_tar) ;;
  esac
  layout=$(bench_oci_from_tar "$tar" "$name")
  blobs=$(bench_layer_blobs "$layout" | tr '\n' ' ')
  d=$BENCH_DIR/run-$name
  hyperfine -N --runs "$runs" --warmup 1 --export-json "$out/$name.json" \
    --prepare "sh -c 'rm -rf $d; mkdir -p $d; sync'" \
    "$IMGTOOL --root $d/store load -i $BENCH_CACHE/$name.oci.tar" \
    --prepare "sh -c 'rm -rf $d; mkdir -p $d; sync'" \
    "umoci unpack --image $layout:latest $d/bundle" \
    --prepare "sh -c 'rm -rf $d; mkdir -p $d/tree; sync'" \
    "sh -c 'for b in $blobs; do pigz -dc \$b | tar -x -C $d/tree; done'" >&2
  i=$(bench_median "$out/$name.json" 0)
  u=$(bench_median "$out/$name.json" 1)
  p=$(bench_median "$out/$name.json" 2)
  python3 -c "import sys; i,u,p=map(float,sys.argv[2:]); print('| %s | %.2f s | %.2f s | %.2f s | %.2fx | %.2fx |' % (sys.argv[1], i, u, p, i/u, i/p))" "$name" "$i" "$u" "$p"
  rm -rf "$d"
done
