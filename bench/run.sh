#!/usr/bin/env bash
# The full lifecycle of /bin/true in one Debian bookworm minbase rootfs, side by
# side in one hyperfine run: imgtool run --rm --net none, crun run and runc run
# of a prepared bundle, podman run --rm --network=none, and bwrap with the same
# namespaces as the floor; then with bridge networking, imgtool vs podman.
# Prints a markdown table of medians and ratios against crun.
#
# crun refuses to run on this host's hybrid cgroup layout ("cgroups in hybrid
# mode not supported"), so everything runs in a private mount namespace where
# /sys/fs/cgroup/unified is hidden under an empty tmpfs: all commands see the
# same (v1) layout there.
#
# Two measurements, each one hyperfine run:
# - back to back: each command's runs follow each other without a pause, as
#   hyperfine runs them by default;
# - spaced: hyperfine sleeps 50 ms (untimed, --prepare) before every run.
#   crun (and runc) move the container into its cgroup by writing its pid to
#   cgroup.procs, which takes the kernel's cgroup_threadgroup_rwsem for
#   writing and waits for an RCU grace period (about 10 ms here) unless the
#   previous such write was less than about 20 ms before. Back to back, crun's
#   own previous run often was; after any pause of 20 ms or more it never is,
#   and crun takes about 27 ms instead of 16 (bench/BENCHMARKS.md). imgtool
#   and bwrap take the same time either way.
#
# Usage (root): bench/run.sh [RUNS]   (default 100 runs of each command: with
# 30, a slow spell of the VM's host during one command's block of about a
# third of a second moved that command's median by up to 2 ms)
source "$(dirname "$0")/lib.sh"
runs=${1:-100}
bench_mount
d=$BENCH_DIR/run
cleanup() {
  podman --root "$d/podman/root" --runroot "$d/podman/runroot" --storage-driver overlay \
    system reset -f >/dev/null 2>&1 || true
  rm -rf "$d"
  bench_unmount || true
}
trap cleanup EXIT
rm -rf "$d"
mkdir -p "$d"
out=$BENCH_DIR/results
mkdir -p "$out"
tar=$(bench_debian_tar)

# imgtool: the tar as an image, unpacked by a first run.
"$IMGTOOL" --root "$d/store" import "$tar" bench/debian:latest >/dev/null
"$IMGTOOL" --root "$d/store" run --rm --net none bench/debian /bin/true

# crun and runc: one bundle, the same rootfs, the default spec's namespaces
# (pid, net, ipc, uts, mount, cgroup), no terminal.
mkdir -p "$d/bundle/rootfs"
tar -C "$d/bundle/rootfs" -xf "$tar"
(cd "$d/bundle" && crun spec)
python3 - "$d/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
spec["root"]["readonly"] = False
names = {ns["type"] for ns in spec["linux"]["namespaces"]}
if "cgroup" not in names:
    spec["linux"]["namespaces"].append({"type": "cgroup"})
json.dump(spec, open(path, "w"), indent=1)
PY

# podman: its own root on the bench filesystem, the same tar as an image.
P=(podman --root "$d/podman/root" --runroot "$d/podman/runroot" --storage-driver overlay
   --cgroup-manager cgroupfs --events-backend file --runtime runc)
"${P[@]}" import "$tar" bench/debian:latest >/dev/null
PODMAN_RUN="${P[*]} run --rm --ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
$PODMAN_RUN --network=none bench/debian /bin/true

BWRAP="bwrap --bind $d/bundle/rootfs / --proc /proc --dev /dev --unshare-pid --unshare-net \
--unshare-ipc --unshare-uts --unshare-cgroup /bin/true"

# The set-up above (podman import, the bundle's tar) leaves writeback behind:
# flushed first, so that it does not land on whichever command runs first.
sync
sleep 2

# Load average at the start, for the table.
load=$(cut -d' ' -f1-3 /proc/loadavg)

# The commands, as hyperfine's -n NAME COMMAND pairs: the same list for the
# back-to-back runs and the spaced one.
NONE=(-n 'imgtool run --rm --net none' "$IMGTOOL --root $d/store run --rm --net none bench/debian /bin/true"
      -n 'crun run' "crun run -b $d/bundle bench-crun"
      -n 'runc run' "runc run -b $d/bundle bench-runc"
      -n 'podman run --rm --network=none' "$PODMAN_RUN --network=none bench/debian /bin/true"
      -n 'bwrap' "$BWRAP")
BRIDGE=(-n 'imgtool run --rm (bridge)' "$IMGTOOL --root $d/store run --rm bench/debian /bin/true"
        -n 'podman run --rm (bridge)' "$PODMAN_RUN bench/debian /bin/true")
HF=(hyperfine -N --runs "$runs" --warmup 3)

unshare -m --propagation private bash -c "$(declare -p NONE BRIDGE HF)
  set -e
  mount -t tmpfs none /sys/fs/cgroup/unified
  \"\${HF[@]}\" --export-json $out/run-none.json \"\${NONE[@]}\" >&2
  \"\${HF[@]}\" --export-json $out/run-bridge.json \"\${BRIDGE[@]}\" >&2
  \"\${HF[@]}\" --prepare 'sleep 0.05' --export-json $out/run-spaced.json \\
    \"\${NONE[@]}\" \"\${BRIDGE[@]}\" >&2
"

python3 - "$out/run-none.json" "$out/run-bridge.json" "$out/run-spaced.json" "$load" <<'PY'
import json, sys
none = json.load(open(sys.argv[1]))["results"]
bridge = json.load(open(sys.argv[2]))["results"]
spaced = json.load(open(sys.argv[3]))["results"]
print("Load average at start: %s (2 cores)\n" % sys.argv[4])
for title, results in (("Back to back", none + bridge), ("Spaced (50 ms untimed pause before each run)", spaced)):
    crun = [r for r in results if r["command"] == "crun run"][0]["median"]
    print("%s:\n" % title)
    print("| command | median | min | max | / crun |")
    print("|---|---|---|---|---|")
    for r in results:
        print("| %s | %.1f ms | %.1f ms | %.1f ms | %.2fx |" % (
            r["command"], r["median"] * 1e3, r["min"] * 1e3, r["max"] * 1e3, r["median"] / crun))
    median = {r["command"]: r["median"] for r in results}
    none = median["imgtool run --rm --net none"]
    goals = (("imgtool --net none / crun", none / crun, "<= 0.6x", none / crun <= 0.6),
             ("podman --network=none / imgtool --net none",
              median["podman run --rm --network=none"] / none, ">= 20x",
              median["podman run --rm --network=none"] / none >= 20),
             ("imgtool bridge / crun", median["imgtool run --rm (bridge)"] / crun, "<= 1.5x",
              median["imgtool run --rm (bridge)"] / crun <= 1.5))
    print()
    for name, ratio, goal, met in goals:
        print("- %s: %.2fx (goal %s: %s)" % (name, ratio, goal, "met" if met else "NOT met"))
    print()
PY
