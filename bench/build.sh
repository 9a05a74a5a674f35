#!/usr/bin/env bash
# The same 7-step build as an imgtool recipe and as a Containerfile for
# `buildah build --layers`, on the same busybox base, side by side:
#   cold    base present, no step cached
#   warm    everything cached
#   changed the content of one copied file changed
# Usage (root): bench/build.sh [RUNS]   (IMGTOOL=path/to/imgtool to pick the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
imgtool=${IMGTOOL:-$PWD/build/cli/imgtool}
command -v buildah >/dev/null || { echo "needs buildah" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (busybox-static)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/imgtool-bench-build-XXXXXX)
cleanup() { buildah --root "$work/bh/root" --runroot "$work/bh/run" rm --all >/dev/null 2>&1 || true; grep -o "$work[^ ]*merged" /proc/mounts | xargs -r umount 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The base: busybox-static with its applets.
mkdir -p "$work/base/bin" "$work/base/tmp" "$work/base/etc"
cp /bin/busybox "$work/base/bin/busybox"
/bin/busybox --install -s "$work/base/bin"
for l in "$work"/base/bin/*; do [ -L "$l" ] && ln -sf busybox "$l"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/base/etc/passwd"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/base" -cf "$work/base.tar" .

# The context: 500 small files to copy.
ctx=$work/ctx
mkdir -p "$ctx/files"
for i in $(seq 500); do echo "file $i" > "$ctx/files/f$i"; done

cat > "$ctx/recipe.yaml" <<'RECIPE'
from: { image: localhost/bench-base:latest }
steps:
  - run: mkdir /gen && i=0 && while [ $i -lt 2000 ]; do echo $i > /gen/f$i; i=$((i+1)); done
  - copy: { src: files/, dest: /app/files/ }
  - run: dd if=/dev/urandom of=/big bs=1M count=50 2>/dev/null
  - env: { APP: bench }
  - workdir: /app
  - run: rm -f /gen/f1*
  - run: echo done > /app/done
RECIPE
cat > "$ctx/Containerfile" <<'CF'
FROM localhost/bench-base:latest
RUN mkdir /gen && i=0 && while [ $i -lt 2000 ]; do echo $i > /gen/f$i; i=$((i+1)); done
COPY files/ /app/files/
RUN dd if=/dev/urandom of=/big bs=1M count=50 2>/dev/null
ENV APP=bench
WORKDIR /app
RUN rm -f /gen/f1*
RUN echo done > /app/done
CF

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }

imgtool_setup() {
  rm -rf "$work/it" "$work/it-state"
  "$imgtool" --root "$work/it" import "$work/base.tar" localhost/bench-base:latest >/dev/null
}
imgtool_build() {
  "$imgtool" --root "$work/it" build --network none -q -t bench:it "$ctx/recipe.yaml" >/dev/null
}
buildah_args=(--root "$work/bh/root" --runroot "$work/bh/run")
buildah_setup() {
  buildah "${buildah_args[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$work/bh"
  "$imgtool" --root "$work/it" save localhost/bench-base:latest -o "$work/base-docker.tar"
  buildah "${buildah_args[@]}" pull -q "docker-archive:$work/base-docker.tar" >/dev/null
  buildah "${buildah_args[@]}" tag "$(buildah "${buildah_args[@]}" images -q | head -1)" localhost/bench-base:latest
}
buildah_build() {
  buildah "${buildah_args[@]}" build --layers --runtime runc --network none -q -t bench:bh -f "$ctx/Containerfile" "$ctx" >/dev/null
}

echo "load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
declare -A total
for run in $(seq "$runs"); do
  for tool in imgtool buildah; do
    ${tool}_setup
    echo "file 1" > "$ctx/files/f1"
    t0=$(now); ${tool}_build; t1=$(now)
    ${tool}_build; t2=$(now)
    echo "changed $run" > "$ctx/files/f1"
    ${tool}_build; t3=$(now)
    total[$tool.cold]="${total[$tool.cold]:-} $(elapsed "$t0" "$t1")"
    total[$tool.warm]="${total[$tool.warm]:-} $(elapsed "$t1" "$t2")"
    total[$tool.changed]="${total[$tool.changed]:-} $(elapsed "$t2" "$t3")"
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '| case | imgtool (s) | buildah --layers (s) | ratio |\n|---|---|---|---|\n'
for case in cold warm changed; do
  i=$(echo "${total[imgtool.$case]}" | median)
  b=$(echo "${total[buildah.$case]}" | median)
  printf '| %s | %.3f | %.3f | %.1fx |\n' "$case" "$i" "$b" "$(echo "$b / $i" | bc -l)"
done
echo "(median of $runs runs; $(nproc) cores; $(uname -r); load average at end: $(cut -d" " -f1-3 /proc/loadavg))"
