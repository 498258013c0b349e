#!/usr/bin/env bash
# Warm container start: `/bin/true` in a container of a small image (busybox
# and /etc, 2 layers) already in the store, as root and as an unprivileged
# user. Compared in the same run:
#   rcfs run --rm --net none IMAGE /bin/busybox true
#                                              (namespaces, the image's union
#                                               mounted, init, exec, teardown;
#                                               no network, as bwrap's
#                                               --unshare-all: benches/ops.sh
#                                               times the default network)
#   fuse-overlayfs mount of the same 2 layers + bwrap --unshare-all into it
#   + fusermount -u                             (what a rootless runtime over
#                                               fuse-overlayfs does)
#   podman run --rm --net=host IMAGE /bin/busybox true
#                                              (rootless only: podman 4 with
#                                               runc, cgroupfs and the overlay
#                                               driver over fuse-overlayfs, as
#                                               /work/shared/PEERS.md says; the
#                                               image pulled into its store first)
# Run as root after `cargo build --release`:  benches/run.sh
# Knobs: RUNS=20, RCFS=target/release/rcfs, PODMAN=1 (0: leave podman out).
# Needs the packages bubblewrap fuse-overlayfs docker-registry skopeo
# busybox-static, and for podman: podman runc uidmap (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${RUNS:-20}
RCFS=${RCFS:-$PWD/target/release/rcfs}
OUT=${OUT:-$PWD/benches/results/run-$(date +%Y%m%d-%H%M%S).md}
PODMAN=${PODMAN:-1}
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
need_packages bubblewrap fuse-overlayfs docker-registry skopeo busybox-static
# Why podman is left out, if it is (printed with the results).
need_podman
scripts/setup-fuse
W=$(mktemp -d /var/tmp/rcfs-runbench.XXXXXX)
chmod 755 "$W"
REG=
trap cleanup EXIT
mkdir -p "$W/l0/bin" "$W/l1/etc" "$W/l0/etc" "$W/l0/proc" "$W/l0/dev" "$W/l0/sys" "$W/l0/tmp"
cp /bin/busybox "$W/l0/bin/busybox"
echo bench > "$W/l1/etc/hostname"
# The image: the same two trees as layers, in a registry on loopback.
mk_layout "$W/layout" "$W/l0" "$W/l1"
start_registry "$W"
skopeo copy -q --dest-tls-verify=false "oci:$W/layout:v1" "docker://127.0.0.1:$PORT/bench:v1"
IMAGE=127.0.0.1:$PORT/bench:v1
useradd -M -d "$W/home" rcfs-bench 2>/dev/null || true
mkdir -p "$W/home" "$W/run"; chmod 700 "$W/run"; chown rcfs-bench: "$W/home" "$W/run"
chmod 666 /dev/fuse
as_user() { setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" "$@"; }
"$RCFS" --root "$W/store" pull -q --tls-verify=false "$IMAGE"
as_user "$RCFS" pull -q --tls-verify=false "$IMAGE"
# Rootless podman for rcfs-bench: its config in ~/.config/containers, its
# store in ~/.local/share/containers and its runtime dir in $W/run (all under
# $W, removed at exit).
[ -n "$NO_PODMAN" ] || podman_user rcfs-bench "$W/home" "$W/run" "$PORT"
as_podman() { setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" podman "$@"; }
if [ -z "$NO_PODMAN" ]; then
    if ! e=$(as_podman pull -q "$IMAGE" 2>&1 >/dev/null); then
        NO_PODMAN="podman pull failed: $(echo "$e" | tail -n 3 | tr '\n' ' ')"
    elif ! e=$(as_podman run --rm --net=host "$IMAGE" /bin/busybox true 2>&1); then
        NO_PODMAN="podman run failed: $(echo "$e" | tail -n 3 | tr '\n' ' ')"
    fi
fi
ms() { python3 -c 'import sys,time,subprocess; t=time.monotonic(); subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL); print("%.1f"%((time.monotonic()-t)*1000))' "$@"; }
fovl_bwrap() { # UPPER WORK MNT
    fuse-overlayfs -o "lowerdir=$W/l1:$W/l0,upperdir=$1,workdir=$2" "$3"
    bwrap --unshare-all --die-with-parent --bind "$3" / --proc /proc --dev /dev /bin/busybox true
    fusermount3 -u "$3"
}
export -f fovl_bwrap
export W
# One untimed run of each, as of podman above: the binaries in the page
# cache, and for the user the namespace rcfs's keeper holds (podman's: its
# pause process), which later runs join.
"$RCFS" --root "$W/store" run --rm --net none "$IMAGE" /bin/busybox true
as_user "$RCFS" run --rm --net none "$IMAGE" /bin/busybox true
mkdir -p "$W/warm/u" "$W/warm/w" "$W/warm/m"
bash -c "fovl_bwrap $W/warm/u $W/warm/w $W/warm/m"
declare -A T
for i in $(seq 1 "$RUNS"); do
    T[rcfs-root,$i]=$(ms "$RCFS" --root "$W/store" run --rm --net none "$IMAGE" /bin/busybox true)
    d=$W/f-$i; mkdir -p "$d/u" "$d/w" "$d/m"
    T[bwrap-root,$i]=$(ms bash -c "fovl_bwrap $d/u $d/w $d/m")
    T[rcfs-user,$i]=$(ms setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" "$RCFS" run --rm --net none "$IMAGE" /bin/busybox true)
    d=$W/g-$i; mkdir -p "$d/u" "$d/w" "$d/m"; chown -R rcfs-bench: "$d"
    T[bwrap-user,$i]=$(ms setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env W="$W" bash -c "$(declare -f fovl_bwrap); fovl_bwrap $d/u $d/w $d/m")
    [ -n "$NO_PODMAN" ] || T[podman-user,$i]=$(ms setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" podman run --rm --net=host "$IMAGE" /bin/busybox true)
done
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() { for i in $(seq 1 "$RUNS"); do echo "${T[$1,$i]}"; done | median; }
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
mkdir -p "$(dirname "$OUT")"
{
    echo "# Warm container start: /bin/true"
    echo
    echo "rcfs $(git rev-parse --short HEAD) ($RCFS), $(date -u +%Y-%m-%dT%H:%MZ), RUNS=$RUNS, medians in ms."
    echo
    echo "| who | rcfs run | fuse-overlayfs + bwrap | ratio | rootless podman (runc, fuse-overlayfs) | ratio to podman | target | |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    for who in root user; do
        r=$(med rcfs-$who); b=$(med bwrap-$who)
        q=$(ratio "$r" "$b")
        p=- pq=-
        if [ "$who" = user ] && [ -z "$NO_PODMAN" ]; then p=$(med podman-user); pq=$(ratio "$r" "$p"); fi
        ok=$(awk -v r="$r" -v q="$q" 'BEGIN{print (q <= 1.0 && r < 50) ? "ok" : "MISS"}')
        echo "| $who | $r | $b | $q | $p | $pq | ≤ 1.0x (bwrap) and < 50 ms | $ok |"
    done
    echo
    [ -z "$NO_PODMAN" ] && echo "podman: $(podman --version), runtime $(runc --version | head -n 1), rootless as rcfs-bench, root not measured." \
        || echo "podman: not measured ($NO_PODMAN)."
    echo
    keys="rcfs-root bwrap-root rcfs-user bwrap-user"; [ -n "$NO_PODMAN" ] || keys+=" podman-user"
    for k in $keys; do
        echo -n "- $k:"; for i in $(seq 1 "$RUNS"); do echo -n " ${T[$k,$i]}"; done; echo
    done
} | tee "$OUT"
