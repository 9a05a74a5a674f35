#!/usr/bin/env bash
# Pull from a local registry into an empty store, ending ready to run:
#   imgtool pull (blobs verified while streaming, layers unpacked into snapshots
#   before the tag is set)  vs  podman pull (private --root/--runroot)
#   vs  skopeo copy docker://... oci:DIR followed by pigz -dc | tar -x of its layers.
# And push: imgtool push vs skopeo copy oci:... docker://... of the same image.
# Images: the Debian bookworm minbase (1 layer), the same tree split into 5 layers,
# and a ~500 MB image of 24k files. The registry is docker-registry (plain HTTP)
# on a free loopback port, its storage on the journaled ext4 loop mount; the
# pull table is then repeated against a second instance with TLS (a CA made
# here) and htpasswd basic auth.
# Usage (root): bench/pull.sh [RUNS]   prints markdown tables of medians and ratios,
# each pull table followed by the load average before and after each image (the
# machine is shared: compare ratios of one run, and say how loaded it was).
source "$(dirname "$0")/lib.sh"
runs=${1:-5}
# PULL_IMAGES: a subset of "debian five big" (all by default).
images=${PULL_IMAGES:-debian five big}
# PULL_PARTS: a subset of "plain tls push" (all by default).
parts=${PULL_PARTS:-plain tls push}
want() { case " $parts " in *" $1 "*) return 0;; esac; return 1; }
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
tregpid=
cleanup() {
  if [ -n "$tregpid" ]; then kill "$tregpid" 2>/dev/null || true; fi
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

# pull_table LABEL REGISTRY IMGTOOL_FLAGS PODMAN_FLAGS SKOPEO_FLAGS: one table.
pull_table() {
  local label=$1 r=$2 iflags=$3 pflags=$4 sflags=$5
  echo "### pull ($label, $runs runs, medians)"
  echo
  echo "| image | imgtool pull | podman pull | skopeo copy + pigz\|tar | imgtool/podman | imgtool/(skopeo+extract) |"
  echo "|---|---|---|---|---|---|"
  local loads=""
  for name in $images; do
    layout=$BENCH_CACHE/pull-$name-oci
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    skopeo copy -q $(echo "$sflags" | sed 's/--src-/--dest-/g') "oci:$layout:latest" "docker://$r/bench/$name:latest"
    hexes=$(layers_of "$layout" | tr '\n' ' ')
    d=$BENCH_DIR/run-$name
    ref=$r/bench/$name:latest
    hyperfine -N --runs "$runs" --warmup 1 --export-json "$out/pull-$name.json" \
      --prepare "sh -c 'rm -rf $d; mkdir -p $d; sync'" \
      "$IMGTOOL --root $d/store pull -q $iflags $ref" \
      --prepare "sh -c 'rm -rf $d; mkdir -p $d; sync'" \
      "podman --root $d/podman --runroot $d/podman-run --storage-driver overlay pull -q $pflags docker://$ref" \
      --prepare "sh -c 'rm -rf $d; mkdir -p $d/tree; sync'" \
      "sh -c 'skopeo copy -q $sflags docker://$ref oci:$d/oci:latest && for h in $hexes; do pigz -dc $d/oci/blobs/sha256/\$h | tar -x -C $d/tree; done'" >&2
    i=$(bench_median "$out/pull-$name.json" 0)
    p=$(bench_median "$out/pull-$name.json" 1)
    s=$(bench_median "$out/pull-$name.json" 2)
    python3 -c "import sys; i,p,s=map(float,sys.argv[2:]); print('| %s | %.2f s | %.2f s | %.2f s | %.2fx | %.2fx |' % (sys.argv[1], i, p, s, i/p, i/s))" "$name" "$i" "$p" "$s"
    rm -rf "$d"
    loads="$loads $name: $load_before -> $(cut -d' ' -f1 /proc/loadavg);"
  done
  echo
  echo "Load average (1 min) before -> after each image:$loads"
  echo
}

want plain && pull_table "plain HTTP" "$reg" "--tls-verify=false" "--tls-verify=false" "--src-tls-verify=false"

if want tls; then
# The same over TLS (a CA made here) with htpasswd Basic auth, as a
# self-hosted registry is usually run: every tool verifies the certificate
# with the CA given and sends the credentials.
tls=$BENCH_DIR/registry-tls
rm -rf "$tls"
mkdir -p "$tls/certs" "$tls/data"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/certs/ca.crt" \
  -subj /CN=imgtool-bench-ca -days 2 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$tls/server.key" -out "$tls/server.csr" \
  -subj /CN=localhost 2>/dev/null
echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$tls/ext.cnf"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/certs/ca.crt" -CAkey "$tls/ca.key" \
  -CAcreateserial -out "$tls/server.crt" -days 2 -extfile "$tls/ext.cnf" 2>/dev/null
htpasswd -Bbn bench s3cret >"$tls/htpasswd"
tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
treg=127.0.0.1:$tport
cat >"$tls/config.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $tls/data}, delete: {enabled: true}}
http: {addr: "$treg", secret: bench, tls: {certificate: $tls/server.crt, key: $tls/server.key}}
auth: {htpasswd: {realm: bench, path: $tls/htpasswd}}
YAML
docker-registry serve "$tls/config.yml" >"$tls/log" 2>&1 &
tregpid=$!
for _ in $(seq 100); do curl -fs --cacert "$tls/certs/ca.crt" -u bench:s3cret "https://$treg/v2/" >/dev/null && break; sleep 0.1; done
pull_table "TLS + basic auth" "$treg" "--cert-dir $tls/certs --creds bench:s3cret" \
  "--cert-dir $tls/certs --creds bench:s3cret" "--src-cert-dir $tls/certs --src-creds bench:s3cret"
kill "$tregpid" 2>/dev/null || true
wait "$tregpid" 2>/dev/null || true
fi

want push || exit 0
echo
echo "### push (plain HTTP, $runs runs alternating, medians; each run to a new repository)"
echo
echo "| image | imgtool push | skopeo copy oci: -> docker:// | imgtool/skopeo |"
echo "|---|---|---|---|"
for name in $images; do
  layout=$BENCH_CACHE/pull-$name-oci
  store=$BENCH_DIR/push-store-$name
  rm -rf "$store" "$store-state"
  skopeo copy -q "oci:$layout:latest" "oci-archive:$BENCH_DIR/push-$name.tar:bench/$name:latest"
  "$IMGTOOL" --root "$store" load -q -i "$BENCH_DIR/push-$name.tar"
  # The store was just written on the disk the registry writes to: its
  # writeback must not run during imgtool's pushes only.
  sync
  # skopeo's blob-info cache would turn its uploads into cross-repository
  # mounts of the blobs pushed above; both tools upload every byte here.
  # The two alternate, run by run (a warm-up pair first): every upload
  # leaves hundreds of MB for the registry's disk to write back, and with
  # one tool's runs all before the other's that favoured the second.
  for r in $(seq 0 "$runs"); do
    for tool in imgtool skopeo; do
      rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
      sync
      start=$(date +%s.%N)
      if [ $tool = imgtool ]; then
        "$IMGTOOL" --root "$store" push -q --tls-verify=false "bench/$name:latest" "$reg/push/i$r$$:1" >/dev/null
      else
        skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$reg/push/s$r$$:1"
      fi
      end=$(date +%s.%N)
      [ "$r" = 0 ] || echo "$tool $(echo "$end - $start" | bc)"
    done
  done >"$out/push-$name.times"
  python3 - "$out/push-$name.times" "$out/push-$name.json" <<'PY'
import json, sys
times = {"imgtool": [], "skopeo": []}
for line in open(sys.argv[1]):
    tool, t = line.split()
    times[tool].append(float(t))
import statistics
json.dump({"results": [{"command": k, "times": v, "median": statistics.median(v)}
                       for k, v in times.items()]}, open(sys.argv[2], "w"))
PY
  i=$(bench_median "$out/push-$name.json" 0)
  s=$(bench_median "$out/push-$name.json" 1)
  python3 -c "import sys; i,s=map(float,sys.argv[2:]); print('| %s | %.2f s | %.2f s | %.2fx |' % (sys.argv[1], i, s, i/s))" "$name" "$i" "$s"
  rm -rf "$store" "$store-state" "$BENCH_DIR/push-$name.tar"
done
