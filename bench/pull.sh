#!/usr/bin/env bash
# Pull from a local registry into an empty store, ending ready to run:
#   imgtool pull (blobs verified while streaming, layers unpacked into snapshots
#   before the tag is set)  vs  podman pull (private --root/--runroot)
#   vs  skopeo copy docker://... oci:DIR followed by pigz -dc | tar -x of its layers.
# And push: imgtool push vs skopeo copy oci:... docker://... of the same image.
# Images: the Debian bookworm minbase (1 layer), the same tree split into 5 layers,
# and a ~500 MB image of 24k files. The registry is docker-registry (plain HTTP)
# on a free loopback port, its storage on the journaled ext4 loop mount.
# Usage (root): bench/pull.sh [RUNS]   prints markdown tables of medians and ratios.
source "$(dirname "$0")/lib.sh"
runs=${1:-5}
# Another benchmark may be using the mount: unmount only what we mounted.
was_mounted=0
mountpoint -q "$BENCH_DIR" && was_mounted=1
bench_mount
out=$BENCH_DIR/results
mkdir -p "$out"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
regdir=$BENCH_DIR/registry
rm -rf "$regdir"
mkdir -p "$regdir/data"
cat >"$regdir/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $regdir/data}, delete: {enabled: true}}
http: {addr: "$reg", secret: bench}
YAML
docker-registry serve "$regdir/config.yml" >"$regdir/log" 2>&1 &
regpid=$!
cleanup() {
  kill "$regpid" 2>/dev/null || true
  wait "$regpid" 2>/dev/null || true
  [ "$was_mounted" = 1 ] || bench_unmount
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

# An OCI layout with one gzip layer per tar given (pigz -n: no name or mtime),
# config diff_ids computed here. Deterministic: same tars, same digests.
oci_from_tars() {
  local layout=$1; shift
  if [ -f "$layout/index.json" ]; then return; fi
  rm -rf "$layout"; mkdir -p "$layout/blobs/sha256"
  python3 - "$layout" "$@" <<'PY'
import hashlib, json, os, subprocess, sys
layout, tars = sys.argv[1], sys.argv[2:]
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(layout, "blobs/sha256", d), "wb").write(data)
    return "sha256:" + d, len(data)
layers, diff_ids = [], []
for t in tars:
    raw = open(t, "rb").read()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = subprocess.run(["pigz", "-n", "-c", t], check=True, stdout=subprocess.PIPE).stdout
    d, n = blob(gz)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
config = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}}
cd, cn = blob(json.dumps(config, separators=(",", ":")).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": layers}
md, mn = blob(json.dumps(manifest, separators=(",", ":")).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
          open(os.path.join(layout, "index.json"), "w"))
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
}

# The Debian tree in 5 layers: usr/lib, usr/share, the rest of usr, var, everything else.
five_layer_tars() {
  local tar=$1 dir=$BENCH_CACHE/five
  if [ -s "$dir/5.tar" ]; then echo "$dir/1.tar $dir/2.tar $dir/3.tar $dir/4.tar $dir/5.tar"; return; fi
  rm -rf "$dir" "$BENCH_DIR/five-src"; mkdir -p "$dir" "$BENCH_DIR/five-src"
  tar -C "$BENCH_DIR/five-src" -xf "$tar"
  local t="tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C $BENCH_DIR/five-src"
  $t -cf "$dir/1.tar" ./usr/lib
  $t -cf "$dir/2.tar" ./usr/share
  $t -cf "$dir/3.tar" --exclude=./usr/lib --exclude=./usr/share ./usr
  $t -cf "$dir/4.tar" ./var
  $t -cf "$dir/5.tar" --exclude=./usr --exclude=./var .
  rm -rf "$BENCH_DIR/five-src"
  echo "$dir/1.tar $dir/2.tar $dir/3.tar $dir/4.tar $dir/5.tar"
}

debian_tar=$(bench_debian_tar)
big_tar=$(bench_big_tar)
oci_from_tars "$BENCH_CACHE/pull-debian-oci" "$debian_tar"
# shellcheck disable=SC2046
oci_from_tars "$BENCH_CACHE/pull-five-oci" $(five_layer_tars "$debian_tar")
oci_from_tars "$BENCH_CACHE/pull-big-oci" "$big_tar"

layers_of() { bench_layer_blobs "$1" | xargs -n1 basename; }

echo "### pull (plain HTTP, $runs runs, medians)"
echo
echo "| image | imgtool pull | podman pull | skopeo copy + pigz\|tar | imgtool/podman | imgtool/(skopeo+extract) |"
echo "|---|---|---|---|---|---|"
for name in debian five big; do
  layout=$BENCH_CACHE/pull-$name-oci
  skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$reg/bench/$name:latest"
  hexes=$(layers_of "$layout" | tr '\n' ' ')
  d=$BENCH_DIR/run-$name
  ref=$reg/bench/$name:latest
  hyperfine -N --runs "$runs" --warmup 1 --export-json "$out/pull-$name.json" \
    --prepare "sh -c 'rm -rf $d; mkdir -p $d; sync'" \
    "$IMGTOOL --root $d/store pull -q --tls-verify=false $ref" \
    --prepare "sh -c 'rm -rf $d; mkdir -p $d; sync'" \
    "podman --root $d/podman --runroot $d/podman-run --storage-driver overlay pull -q --tls-verify=false docker://$ref" \
    --prepare "sh -c 'rm -rf $d; mkdir -p $d/tree; sync'" \
    "sh -c 'skopeo copy -q --src-tls-verify=false docker://$ref oci:$d/oci:latest && for h in $hexes; do pigz -dc $d/oci/blobs/sha256/\$h | tar -x -C $d/tree; done'" >&2
  i=$(bench_median "$out/pull-$name.json" 0)
  p=$(bench_median "$out/pull-$name.json" 1)
  s=$(bench_median "$out/pull-$name.json" 2)
  python3 -c "import sys; i,p,s=map(float,sys.argv[2:]); print('| %s | %.2f s | %.2f s | %.2f s | %.2fx | %.2fx |' % (sys.argv[1], i, p, s, i/p, i/s))" "$name" "$i" "$p" "$s"
  rm -rf "$d"
done

echo
echo "### push (plain HTTP, $runs runs, medians; each run to a new repository)"
echo
echo "| image | imgtool push | skopeo copy oci: -> docker:// | imgtool/skopeo |"
echo "|---|---|---|---|"
for name in debian five big; do
  layout=$BENCH_CACHE/pull-$name-oci
  store=$BENCH_DIR/push-store-$name
  rm -rf "$store" "$store-state"
  skopeo copy -q "oci:$layout:latest" "oci-archive:$BENCH_DIR/push-$name.tar:bench/$name:latest"
  "$IMGTOOL" --root "$store" load -q -i "$BENCH_DIR/push-$name.tar"
  # skopeo's blob-info cache would turn its uploads into cross-repository
  # mounts of the blobs pushed above; both tools upload every byte here.
  hyperfine -N --runs "$runs" --warmup 1 --export-json "$out/push-$name.json" \
    --prepare "rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb" \
    "sh -c '$IMGTOOL --root $store push -q --tls-verify=false bench/$name:latest $reg/push/i\$(date +%s%N):1'" \
    --prepare "rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb" \
    "sh -c 'skopeo copy -q --dest-tls-verify=false oci:$layout:latest docker://$reg/push/s\$(date +%s%N):1'" >&2
  i=$(bench_median "$out/push-$name.json" 0)
  s=$(bench_median "$out/push-$name.json" 1)
  python3 -c "import sys; i,s=map(float,sys.argv[2:]); print('| %s | %.2f s | %.2f s | %.2fx |' % (sys.argv[1], i, s, i/s))" "$name" "$i" "$s"
  rm -rf "$store" "$store-state" "$BENCH_DIR/push-$name.tar"
done
