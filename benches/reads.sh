#!/usr/bin/env bash
# Rootless reads through a mount, against fuse-overlayfs, as the unprivileged
# user rcfs-bench: no FUSE passthrough (an unprivileged user cannot use it),
# so every read is a FUSE request served by the mount's process.
#
# The layers (built here):
#   layer 0  /data/big: 1 GiB from /dev/urandom
#   layer 1  /usr: copies of the host's USR_SRC trees (python3 and perl
#            libraries by default; the table says how many files and bytes)
# Peers, each a fresh mount per run:
#   rcfs-image  rcfs mount IMAGE: the image pulled (`rcfs pull oci:LAYOUT`)
#               into rcfs-bench's store, its files served from the store
#   rcfs-dirs   rcfs mount --lower usr:data (what rcfs-overlay runs)
#   fovl        fuse-overlayfs -o lowerdir=usr:data (the yardstick)
# Cases (CASES):
#   seqread  dd if=MNT/data/big of=/dev/null bs=1M     (1 GiB)
#   readusr  find MNT/usr -type f -exec cat {} + > /dev/null
# The host's files (store and layer dirs) are read once before each run, so
# what is measured is the mount, not the disk; each case runs on a new
# mount, whose kernel page cache starts empty. Peers take turns run by run;
# medians of RUNS, and the ratio of each to fuse-overlayfs's median; and the
# server's CPU time over each run (steadier than wall time on a shared VM).
#
# Run as root after `cargo build --release`:  benches/reads.sh
# Knobs: RUNS=7  RCFS=target/release/rcfs  CASES="seqread readusr"
#        PEERS="rcfs-image rcfs-dirs fovl"  WORK_DIR=/var/tmp (needs ~3 GB)
#        USR_SRC="/usr/lib/python3 /usr/lib/python3.11 /usr/share/perl /usr/lib/*-linux-gnu/perl"
#        IDLE_WAIT=30 (see lib.sh)  OUT=benches/results/reads-DATE.md
# Needs fuse3 and fuse-overlayfs (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${RUNS:-7}
RCFS=${RCFS:-$PWD/target/release/rcfs}
CASES=${CASES:-"seqread readusr"}
PEERS=${PEERS:-"rcfs-image rcfs-dirs fovl"}
WORK_DIR=${WORK_DIR:-/var/tmp}
USR_SRC=${USR_SRC:-"/usr/lib/python3 /usr/lib/python3.11 /usr/share/perl /usr/lib/*-linux-gnu/perl"}
IDLE_WAIT=${IDLE_WAIT:-30}
IDLE_BUSY=${IDLE_BUSY:-15}
OUT=${OUT:-$PWD/benches/results/reads-$(date +%Y%m%d-%H%M%S).md}
log() { echo "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "reads.sh: run as root" >&2; exit 1; }
[ -x "$RCFS" ] || { echo "reads.sh: no rcfs binary at $RCFS (cargo build --release, or RCFS=...)" >&2; exit 1; }
need_packages fuse3 fuse-overlayfs
scripts/setup-fuse

W=$(mktemp -d "$WORK_DIR/rcfs-reads.XXXXXX")
chmod 755 "$W"
REG=
trap cleanup EXIT

log "building the layers in $W ..."
mkdir -p "$W/data/data" "$W/usr"
head -c 1G /dev/urandom > "$W/data/data/big"
# shellcheck disable=SC2086 # unquoted: globs expand
copy_trees "$W/usr" $USR_SRC || { echo "reads.sh: none of USR_SRC ($USR_SRC) exists" >&2; exit 1; }
USR_FILES=$(find "$W/usr" -type f | wc -l)
USR_BYTES=$(find "$W/usr" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
mk_layout "$W/layout" "$W/data" "$W/usr"
chmod -R a+rX "$W/data" "$W/usr" "$W/layout"

useradd -M -d "$W/home" rcfs-bench 2>/dev/null || true
mkdir -p "$W/home" "$W/mnt" "$W/up"
chown rcfs-bench: "$W/home" "$W/mnt" "$W/up"
as_user() { setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" "$@"; }
log "pulling the image into rcfs-bench's store ..."
as_user "$RCFS" pull -q "oci:$W/layout:v1"
STORE=$W/home/.local/share/rcfs
rm -rf "$W/layout"

# warm: the host's copies of what a peer reads, in the page cache.
warm() {
    case $1 in
    rcfs-image) find "$STORE" -type f -exec cat {} + > /dev/null ;;
    *) find "$W/data" "$W/usr" -type f -exec cat {} + > /dev/null ;;
    esac
}
# mount_peer PEER: mounts PEER on $W/mnt as rcfs-bench (a new upper dir).
mount_peer() {
    as_user rm -rf "$W/up/u" "$W/up/w"
    as_user mkdir "$W/up/u" "$W/up/w"
    case $1 in
    rcfs-image) as_user "$RCFS" mount "oci:$W/layout:v1" "$W/mnt" ;; # by its name in the store
    rcfs-dirs) as_user "$RCFS" mount --lower "$W/usr:$W/data" --upper "$W/up/u" --work "$W/up/w" "$W/mnt" ;;
    fovl) as_user fuse-overlayfs -o "lowerdir=$W/usr:$W/data,upperdir=$W/up/u,workdir=$W/up/w" "$W/mnt" ;;
    esac
}
case_cmd() {
    case $1 in
    seqread) echo "dd if=$W/mnt/data/big of=/dev/null bs=1M status=none" ;;
    readusr) echo "find $W/mnt/usr -type f -exec cat {} + > /dev/null" ;;
    esac
}
# check PEER: the peer's mount serves the layers' bytes (untimed, once).
check() {
    mount_peer "$1"
    local a b
    a=$(as_user sh -c "cat $W/mnt/data/big | sha256sum")
    b=$(as_user sh -c "cd $W/mnt/usr && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum")
    fusermount3 -u "$W/mnt"
    [ "$a" = "$BIG_SUM" ] && [ "$b" = "$USR_SUM" ] || { echo "reads.sh: $1 serves other bytes" >&2; exit 1; }
}
BIG_SUM=$(cat "$W/data/data/big" | sha256sum)
USR_SUM=$(cd "$W/usr" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum)
for p in $PEERS; do check "$p"; done

# server_pid PEER: the process serving the mount on $W/mnt.
server_pid() {
    case $1 in
    fovl) pgrep -n -u rcfs-bench -x fuse-overlayfs ;;
    *) pgrep -n -u rcfs-bench -f "^$RCFS mount" ;;
    esac
}
# cpu_ms PID: the user + system CPU time of PID (all its threads), in ms.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / hz }' "/proc/$1/stat"; }

declare -A T C
for c in $CASES; do
    for r in $(seq "$RUNS"); do
        for p in $PEERS; do
            warm "$p"
            mount_peer "$p"
            pid=$(server_pid "$p")
            wait_idle
            c0=$(cpu_ms "$pid")
            a=$(date +%s%N)
            as_user sh -c "$(case_cmd "$c")"
            b=$(date +%s%N)
            c1=$(cpu_ms "$pid")
            fusermount3 -u "$W/mnt"
            T[$c.$p]+=" $(((b - a) / 1000000))"
            C[$c.$p]+=" $((c1 - c0))"
            log "  $c $p run $r: $(((b - a) / 1000000)) ms, server CPU $((c1 - c0)) ms"
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
{
    echo "# Rootless reads through a mount ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "Command: \`benches/reads.sh\` (RUNS=$RUNS), rcfs $(git rev-parse --short HEAD), $(nproc) CPU, kernel $(uname -r), $NOISY run(s) started on a busy machine."
    echo "Layers: /data/big 1 GiB; /usr $USR_FILES files, $((USR_BYTES / 1048576)) MiB. Medians in ms, each run on a new mount (host page cache warm), peers in turn."
    echo
    echo "| case | $(echo "$PEERS" | sed 's/ / | /g') | $(for p in $PEERS; do [ "$p" = fovl ] || printf '%s / fovl | ' "$p"; done | sed 's/ | $//') |"
    echo "| --- |$(for p in $PEERS $PEERS; do [ "$p" = fovl ] && continue; printf ' --- |'; done) --- |"
    for c in $CASES; do
        line="| $c"
        f=$(echo "${T[$c.fovl]:-}" | median)
        for p in $PEERS; do line+=" | $(echo "${T[$c.$p]}" | median)"; done
        for p in $PEERS; do
            [ "$p" = fovl ] && continue
            line+=" | $(awk -v a="$(echo "${T[$c.$p]}" | median)" -v b="$f" 'BEGIN { printf (b > 0) ? "%.2fx" : "-", a / b }')"
        done
        echo "$line |"
    done
    echo
    echo "The mount's server's CPU time (user + system, all threads) over the same runs, medians in ms:"
    echo
    echo "| case | $(echo "$PEERS" | sed 's/ / | /g') |"
    echo "| --- |$(for _ in $PEERS; do printf ' --- |'; done)"
    for c in $CASES; do
        line="| $c"
        for p in $PEERS; do line+=" | $(echo "${C[$c.$p]}" | median)"; done
        echo "$line |"
    done
    echo
    echo "All runs (ms, wall / server CPU):"
    for c in $CASES; do for p in $PEERS; do echo "- $c $p:${T[$c.$p]} /${C[$c.$p]}"; done; done
} | tee "$OUT"
log "written to $OUT"
