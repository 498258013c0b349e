#!/usr/bin/env bash
# Rootless data path inside a container, where no FUSE passthrough helps (an
# unprivileged user cannot use it): each case runs in a fresh container of the
# same image, as the unprivileged user rcfs-bench,
#   rcfs run --rm IMAGE /bin/busybox sh -c CASE
#   podman run --rm --net=host IMAGE /bin/busybox sh -c CASE
#                      (podman 4, runc, cgroupfs, overlay driver over
#                       fuse-overlayfs: /work/shared/PEERS.md)
# and only the case itself is timed, from inside the container (busybox
# `ts %.s` before and after: microseconds), so start-up does not count.
#
# The image (an OCI layout built here, pushed to a registry on loopback with
# skopeo, which gzips the layers; `rcfs pull` and `podman pull` before timing):
#   layer 0  /bin/busybox (busybox-static), /etc, /proc, /dev, /sys, /tmp
#   layer 1  /usr: copies of the host's USR_SRC trees (python3 and perl
#            libraries and /usr/include by default, ~14k files, ~270 MB here;
#            the table says how many files and bytes)
#   layer 2  /data/big: 1 GiB from /dev/urandom (incompressible)
#            /data/log: 256 MiB from /dev/urandom
# Cases (CASES):
#   seqread     busybox dd if=/data/big of=/dev/null bs=1M     (1 GiB)
#   readusr     busybox find /usr -type f -exec busybox cat {} + > /dev/null
#   append      busybox dd if=/dev/zero bs=1M count=64 >> /data/log: the open
#               copies the 256 MiB lower file up first; no fsync, so the
#               time ends when close() returns (data in the union's upper
#               file, in the page cache)
#   appendsync  the same, then busybox sync /data/log (fsync: the 320 MiB
#               upper file on disk)
# Cache modes (CACHE):
#   cold  sync + echo 3 > /proc/sys/vm/drop_caches (as root) right before the
#         container starts: the image's files are read from disk
#   warm  sync only; the same case ran just before in a container of the same
#         peer (the cold run, or an untimed one when CACHE has no cold), so the
#         store's files are in the host page cache; the container's union is
#         new all the same
# Before the timed runs each peer is checked once (untimed): the sha256 of
# /data/big, the number of files and bytes read under /usr match the layers
# built here; each append run checks that /data/log grew to 320 MiB.
#
# Run as root after `cargo build --release`:  benches/datapath.sh
# (setup as root, measurements as rcfs-bench; its rcfs store, podman store and
# config are under a temporary HOME in WORK_DIR, removed at exit)
# Knobs: RUNS=5  RCFS=target/release/rcfs  CASES="seqread readusr append appendsync"
#        CACHE="cold warm"  PEERS="rcfs podman"
#        USR_SRC="/usr/lib/python3 /usr/lib/python3.11 /usr/share/perl /usr/lib/*-linux-gnu/perl /usr/include"
#        (missing ones are skipped)  WORK_DIR=/var/tmp (needs ~7 GB)
#        IDLE_WAIT=60: before each timed run wait up to this many s for the
#        machine to be idle (< IDLE_BUSY=15 % CPU over 0.5 s); 0 = off
#        OUT=benches/results/datapath-DATE.md
# Needs the packages busybox-static docker-registry skopeo fuse-overlayfs
# podman runc uidmap (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${RUNS:-5}
RCFS=${RCFS:-$PWD/target/release/rcfs}
CASES=${CASES:-"seqread readusr append appendsync"}
CACHE=${CACHE:-"cold warm"}
PEERS=${PEERS:-"rcfs podman"}
USR_SRC=${USR_SRC:-"/usr/lib/python3 /usr/lib/python3.11 /usr/share/perl /usr/lib/*-linux-gnu/perl /usr/include"}
WORK_DIR=${WORK_DIR:-/var/tmp}
IDLE_WAIT=${IDLE_WAIT:-60}
IDLE_BUSY=${IDLE_BUSY:-15}
OUT=${OUT:-$PWD/benches/results/datapath-$(date +%Y%m%d-%H%M%S).md}
BIG_MB=1024 LOG_MB=256 APPEND_MB=64
[ "$(id -u)" = 0 ] || { echo "datapath.sh: run as root" >&2; exit 1; }
[ -x "$RCFS" ] || { echo "datapath.sh: no rcfs binary at $RCFS (cargo build --release, or RCFS=...)" >&2; exit 1; }
log() { echo "$*" >&2; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkgs="busybox-static docker-registry skopeo"
[[ " $PEERS " == *" podman "* ]] && pkgs+=" fuse-overlayfs podman runc uidmap"
for p in $pkgs; do
    installed "$p" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
scripts/setup-fuse

W=$(mktemp -d "$WORK_DIR/rcfs-datapath.XXXXXX")
chmod 755 "$W"
REG=
trap cleanup EXIT

# --- the image ---------------------------------------------------------------
log "building the image in $W ..."
mkdir -p "$W/l0/bin" "$W/l0/etc" "$W/l0/proc" "$W/l0/dev" "$W/l0/sys" "$W/l0/tmp" "$W/l1/usr" "$W/l2/data"
cp /bin/busybox "$W/l0/bin/busybox"
echo bench > "$W/l0/etc/hostname"
# shellcheck disable=SC2086 # unquoted: globs expand
copy_trees "$W/l1" $USR_SRC || { echo "datapath.sh: none of USR_SRC ($USR_SRC) exists" >&2; exit 1; }
USR_USED=$COPIED
USR_FILES=$(find "$W/l1/usr" -type f | wc -l)
USR_BYTES=$(find "$W/l1/usr" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
head -c "${BIG_MB}M" /dev/urandom > "$W/l2/data/big"
head -c "${LOG_MB}M" /dev/urandom > "$W/l2/data/log"
BIG_SHA=$(sha256sum "$W/l2/data/big" | cut -d' ' -f1)
mk_layout "$W/layout" "$W/l0" "$W/l1" "$W/l2"
rm -rf "$W/l1" "$W/l2" # in the layout now
start_registry "$W"
log "pushing it to 127.0.0.1:$PORT (gzip) ..."
skopeo copy -q --dest-tls-verify=false "oci:$W/layout:v1" "docker://127.0.0.1:$PORT/datapath:v1"
rm -rf "$W/layout"
IMAGE=127.0.0.1:$PORT/datapath:v1

# --- the user, its stores and podman's config ---------------------------------
useradd -M -d "$W/home" rcfs-bench 2>/dev/null || true
mkdir -p "$W/home" "$W/run"
chmod 700 "$W/run"
[[ " $PEERS " != *" podman "* ]] || podman_user rcfs-bench "$W/home" "$W/run" "$PORT"
chown -R rcfs-bench: "$W/home" "$W/run"
as_user() { setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" "$@"; }
# peer_run PEER SCRIPT: the script in a fresh container of the image, as rcfs-bench
peer_run() {
    case $1 in
    rcfs) as_user "$RCFS" run --rm "$IMAGE" /bin/busybox sh -c "$2" ;;
    podman) as_user podman run --rm --net=host "$IMAGE" /bin/busybox sh -c "$2" ;;
    *) echo "datapath.sh: unknown peer $1" >&2; return 1 ;;
    esac
}
for p in $PEERS; do
    log "pulling into $p's store ..."
    case $p in
    rcfs) as_user "$RCFS" pull -q --tls-verify=false "$IMAGE" ;;
    podman) as_user podman pull -q "$IMAGE" >/dev/null ;;
    esac
done

# --- check what each peer reads (untimed) --------------------------------------
B=/bin/busybox
declare -A ROOTFS # the container's / as /proc/mounts shows it: "SOURCE TYPE OPTIONS"
for p in $PEERS; do
    log "checking $p's view of the image ..."
    got=$(peer_run "$p" "$B awk '\$2 == \"/\" {r = \$1 \" \" \$3 \" \" \$4} END {print r}' /proc/mounts; $B sha256sum /data/big | $B cut -d' ' -f1; $B find /usr -type f | $B wc -l; $B find /usr -type f -exec $B cat {} + | $B wc -c" 2>"$W/err") \
        || { cat "$W/err" >&2; echo "datapath.sh: $p failed" >&2; exit 1; }
    ROOTFS[$p]=$(echo "$got" | head -n 1)
    want=$(printf '%s\n%s\n%s' "$BIG_SHA" "$USR_FILES" "$USR_BYTES")
    [ "$(echo "$got" | tail -n +2 | tr -d ' ')" = "$want" ] || { printf 'datapath.sh: %s reads other data: got\n%s\nwant\n%s\n' "$p" "$got" "$want" >&2; exit 1; }
done

# How podman runs fuse-overlayfs for a --rm container (its options: whether
# the upper dir is volatile, i.e. fsync is ignored, as for rcfs run --rm).
FOVL_ARGS=-
if [[ " $PEERS " == *" podman "* ]]; then
    peer_run podman "$B sleep 2" >/dev/null 2>&1 & bg=$!
    for _ in $(seq 30); do
        FOVL_ARGS=$(ps -eo args | grep -E '^(/usr/bin/)?fuse-overlayfs ' | grep -o -- '-o [^ ]*' | head -1 | sed -E 's/(lowerdir|upperdir|workdir)=[^,]*/\1=…/g') || true
        [ -n "$FOVL_ARGS" ] && break
        sleep 0.1
    done
    wait "$bg" || true
fi

# --- the timed runs ----------------------------------------------------------
now="$B echo | $B ts %.s"
case_script() { # CASE: prints "RESULT T0 T1 [LOGSIZE]"
    local op extra=
    case $1 in
    seqread) op="$B dd if=/data/big of=/dev/null bs=1M 2>/dev/null" ;;
    readusr) op="$B find /usr -type f -exec $B cat {} + > /dev/null" ;;
    append) op="$B dd if=/dev/zero bs=1M count=$APPEND_MB 2>/dev/null >> /data/log"; extra='$('"$B"' stat -c %s /data/log)' ;;
    appendsync) op="$B dd if=/dev/zero bs=1M count=$APPEND_MB 2>/dev/null >> /data/log && $B sync /data/log"; extra='$('"$B"' stat -c %s /data/log)' ;;
    *) echo "datapath.sh: unknown case $1" >&2; return 1 ;;
    esac
    echo "t0=\$($now) && $op && t1=\$($now) && echo RESULT \$t0 \$t1 $extra"
}
# timed PEER CASE MODE: one timed run; prints ms
timed() {
    local out r
    sync
    [ "$3" = cold ] && echo 3 > /proc/sys/vm/drop_caches
    wait_idle
    out=$(peer_run "$1" "$(case_script "$2")" 2>"$W/err") || { cat "$W/err" >&2; echo "datapath.sh: $1 $2 failed" >&2; return 1; }
    r=$(echo "$out" | grep '^RESULT ' | tail -n 1) || { echo "datapath.sh: $1 $2: no result in: $out" >&2; return 1; }
    set -- "$1" "$2" $r
    if [ -n "${6:-}" ] && [ "$6" != $(((LOG_MB + APPEND_MB) * 1048576)) ]; then
        echo "datapath.sh: $1 $2: /data/log is $6 bytes after the append" >&2; return 1
    fi
    awk -v a="$4" -v b="$5" 'BEGIN {printf "%.1f", (b - a) * 1000}'
}
declare -A T
for i in $(seq 1 "$RUNS"); do
    order=$PEERS; ((i % 2)) || order=$(echo "$PEERS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for c in $CASES; do
        for p in $order; do
            [[ " $CACHE " == *" cold "* ]] || timed "$p" "$c" warm >/dev/null # warm-up
            for m in $CACHE; do
                T[$p,$c,$m,$i]=$(timed "$p" "$c" "$m")
                log "run $i $c $p $m: ${T[$p,$c,$m,$i]} ms"
            done
        done
    done
done

# --- the table ---------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() { for i in $(seq 1 "$RUNS"); do echo "${T[$1,$i]}"; done | median; }
ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
declare -A LABEL=(
    [seqread]="sequential read of a ${BIG_MB} MiB file (dd bs=1M)"
    [readusr]="read all files of /usr ($USR_FILES files, $((USR_BYTES / 1048576)) MiB; find -exec cat)"
    [append]="append ${APPEND_MB} MiB to a ${LOG_MB} MiB lower file (copy-up), no fsync"
    [appendsync]="append ${APPEND_MB} MiB to a ${LOG_MB} MiB lower file (copy-up), then fsync"
)
mkdir -p "$(dirname "$OUT")"
{
    echo "# Rootless data path in a container"
    echo
    echo "rcfs $(git rev-parse --short HEAD) ($RCFS), $(podman --version 2>/dev/null || echo 'no podman'), $(runc --version 2>/dev/null | head -n 1 || true);"
    echo "$(date -u +%Y-%m-%dT%H:%MZ), RUNS=$RUNS, medians in ms of the command inside a fresh container, as an unprivileged user."
    echo "/usr in the image: $USR_USED."
    for p in $PEERS; do echo "$p's / in the container: \`${ROOTFS[$p]}\`."; done
    echo "podman's fuse-overlayfs for a --rm container: \`${FOVL_ARGS:--}\`."
    [ "$NOISY" = 0 ] || echo "$NOISY timed runs started on a busy machine (> $IDLE_BUSY % CPU after ${IDLE_WAIT}s)."
    echo
    hdr="| case | cache |"; sep="| --- | --- |"
    for p in $PEERS; do
        case $p in rcfs) hdr+=" rcfs run |" ;; podman) hdr+=" podman (runc, fuse-overlayfs) |" ;; esac
        sep+=" ---: |"
    done
    both=; [[ " $PEERS " == *" rcfs "* && " $PEERS " == *" podman "* ]] && both=1
    [ -z "$both" ] || { hdr+=" ratio | target | |"; sep+=" ---: | --- | --- |"; }
    echo "$hdr"; echo "$sep"
    for c in $CASES; do
        for m in $CACHE; do
            row="| ${LABEL[$c]} | $m |"
            for p in $PEERS; do row+=" $(med "$p,$c,$m") |"; done
            if [ -n "$both" ]; then
                q=$(ratio "$(med "rcfs,$c,$m")" "$(med "podman,$c,$m")")
                ok=$(awk -v q="$q" 'BEGIN{print (q <= 1.0) ? "ok" : "MISS"}')
                row+=" $q | ≤ 1.0x podman | $ok |"
            fi
            echo "$row"
        done
    done
    echo
    for c in $CASES; do for m in $CACHE; do for p in $PEERS; do
        echo -n "- $c $m $p:"; for i in $(seq 1 "$RUNS"); do echo -n " ${T[$p,$c,$m,$i]}"; done; echo
    done; done; done
} | tee "$OUT"
