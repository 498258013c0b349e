#!/usr/bin/env bash
# Warm start of a dynamically linked program in a real distribution image:
# `/bin/true` (coreutils, linked to libc through ld.so) in the Debian
# bookworm + python3 + numpy image of benches/lazy.sh (2 layers, 276 MB),
# already in the store, as root and as an unprivileged user (rcfs-bench).
# Compared in the same run, in turn:
#   rcfs run --rm --net none IMAGE /bin/true
#   fuse-overlayfs over the same 2 layers as dirs (a new upper dir each
#   run) + bwrap --unshare-all into it + fusermount3 -u   (run.sh's peer)
# The image and its layer dirs are lazy.sh's (BENCH_DIR, built there once
# with debootstrap): run `sudo benches/lazy.sh` first if BENCH_DIR lacks
# them.
# Run as root after `cargo build --release -p rcfs`:  sudo benches/warm-python.sh
# Knobs: RUNS=15  RCFS=target/release/rcfs  BENCH_DIR=/var/tmp/rcfs-lazy
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${RUNS:-15}
RCFS=${RCFS:-$PWD/target/release/rcfs}
BENCH_DIR=${BENCH_DIR:-/var/tmp/rcfs-lazy}
OUT=${OUT:-$PWD/benches/results/warm-python-$(date +%Y%m%d-%H%M%S).md}
[ "$(id -u)" = 0 ] || { echo "warm-python.sh: run as root" >&2; exit 1; }
[ -x "$RCFS" ] || { echo "warm-python.sh: no rcfs binary at $RCFS (cargo build --release -p rcfs)" >&2; exit 1; }
L=$BENCH_DIR/layers/two
[ -d "$L/0" ] && [ -d "$L/1" ] && [ -f "$BENCH_DIR/oci-two/index.json" ] \
    || { echo "warm-python.sh: $BENCH_DIR has no image yet: run sudo benches/lazy.sh once (it builds it)" >&2; exit 1; }
need_packages bubblewrap fuse-overlayfs uidmap
scripts/setup-fuse
W=$(mktemp -d /var/tmp/rcfs-warmpy.XXXXXX)
chmod 755 "$W"
REG=
trap cleanup EXIT
IMAGE=oci:$BENCH_DIR/oci-two:v1
useradd -M -d "$W/home" rcfs-bench 2>/dev/null || true
# rcfs run maps the user's /etc/subuid range: one past the highest in use.
s=$(awk -F: '$2+$3 > m {m = $2+$3} END {print (m < 100000) ? 100000 : m}' /etc/subuid /etc/subgid)
grep -q '^rcfs-bench:' /etc/subuid || usermod --add-subuids "$s-$((s + 65535))" rcfs-bench
grep -q '^rcfs-bench:' /etc/subgid || usermod --add-subgids "$s-$((s + 65535))" rcfs-bench
mkdir -p "$W/home" "$W/run"
chown rcfs-bench: "$W/home" "$W/run"
as_user() { setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" "$@"; }
"$RCFS" --root "$W/store" pull -q "$IMAGE"
as_user "$RCFS" pull -q "$IMAGE"
fovl_bwrap() { # DIR (with u/, w/, m/)
    fuse-overlayfs -o "lowerdir=$L/1:$L/0,upperdir=$1/u,workdir=$1/w" "$1/m"
    bwrap --unshare-all --die-with-parent --bind "$1/m" / --proc /proc --dev /dev /bin/true
    fusermount3 -u "$1/m"
}
ms() { local a b; a=$(date +%s%N); "$@" >/dev/null 2>&1; b=$(date +%s%N); awk -v d=$((b - a)) 'BEGIN {printf "%.1f", d / 1e6}'; }
newdir() { mkdir -p "$1/u" "$1/w" "$1/m"; [ -z "${2:-}" ] || chown -R "$2": "$1"; }
# One untimed run of each: binaries in the page cache, the user's
# namespace keeper started.
"$RCFS" --root "$W/store" run --rm --net none "$IMAGE" /bin/true
as_user "$RCFS" run --rm --net none "$IMAGE" /bin/true
newdir "$W/f0"; fovl_bwrap "$W/f0"
declare -A T
for i in $(seq "$RUNS"); do
    T[rcfs-root]+=" $(ms "$RCFS" --root "$W/store" run --rm --net none "$IMAGE" /bin/true)"
    newdir "$W/f$i"
    T[bwrap-root]+=" $(ms fovl_bwrap "$W/f$i")"
    T[rcfs-user]+=" $(ms as_user "$RCFS" run --rm --net none "$IMAGE" /bin/true)"
    newdir "$W/g$i" rcfs-bench
    T[bwrap-user]+=" $(ms as_user bash -c "$(declare -f fovl_bwrap); L=$L fovl_bwrap $W/g$i")"
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
{
    echo "# Warm /bin/true in the Debian + python3 + numpy image ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "Command: \`benches/warm-python.sh\` (RUNS=$RUNS), rcfs $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPU, kernel $(uname -r). Medians in ms."
    echo
    echo "| as | rcfs run | fuse-overlayfs + bwrap | rcfs / peer |"
    echo "| --- | ---: | ---: | ---: |"
    for who in root user; do
        a=$(med <<<"${T[rcfs-$who]}") b=$(med <<<"${T[bwrap-$who]}")
        echo "| $who | $a | $b | $(ratio "$a" "$b")x |"
    done
    echo
    echo "All runs (ms):"
    for k in rcfs-root bwrap-root rcfs-user bwrap-user; do echo "- $k:${T[$k]}"; done
} | tee "$OUT"
echo "written to $OUT" >&2
