#!/usr/bin/env bash
# Full pulls over a modelled WAN: `rcfs pull --full` of a zstd:chunked image
# (by its chunks: the tar rebuilt from its tar-split and checked against the
# config's diff_id, as podman 5's partial pulls) against the same tars as a
# gzip image (each blob streamed whole), from an empty store; and the same
# full pull after a lazy start of the image, when part of it is already in
# the store. The image is lazy.sh's (Debian bookworm minbase + python3 +
# numpy, 2 layers), converted by `rcfs convert` (which writes a tar-split)
# and, for gzip, recompressed by skopeo: both name the same diff_ids. The
# link is benches/wanproxy.py's (20 ms round trips, 100 Mbit/s). Every run
# starts with an empty store and the page cache dropped.
#
# Run as root on Debian 12 after `cargo build --release` and one run of
# benches/lazy.sh (which builds the image's layout, once):
#     benches/fullpull.sh
# Knobs: RUNS=3, BENCH_DIR=/var/tmp/rcfs-lazy, RTT_MS=20, MBIT=100,
# RCFS=target/release/rcfs, OUT=benches/results/fullpull-DATE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/rcfs-lazy}
RTT_MS=${RTT_MS:-20}
MBIT=${MBIT:-100}
RCFS=${RCFS:-$REPO/target/release/rcfs}
OUT=${OUT:-$REPO/benches/results/fullpull-$(date +%Y%m%d-%H%M%S).md}
source benches/lib.sh

die() { echo "fullpull.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (chroot, drop_caches)"
[ -x "$RCFS" ] || die "$RCFS missing: cargo build --release -p rcfs"
LAYOUT=$BENCH_DIR/oci-two
[ -f "$LAYOUT/index.json" ] || die "$LAYOUT missing: run benches/lazy.sh once (it builds the image)"
mkdir -p "$(dirname "$OUT")"

W=$(mktemp -d /var/tmp/rcfs-fullpull.XXXXXX)
start_registry "$W"
PROXY_PORT=$(free_port)
python3 benches/wanproxy.py "$PROXY_PORT" "$PORT" --rtt-ms "$RTT_MS" --mbit "$MBIT" --stats "$W/proxy.stats" &
PROXY_PID=$!
trap 'kill $PROXY_PID 2>/dev/null || true; for m in "$W"/mnt*; do mountpoint -q "$m" 2>/dev/null && "$RCFS" umount "$m"; done; cleanup' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break; sleep 0.1; done

REGISTRY=127.0.0.1:$PORT
VIA=127.0.0.1:$PROXY_PORT
"$RCFS" --root "$W/conv" pull -q "oci:$LAYOUT:v1"
"$RCFS" --root "$W/conv" convert "oci:$LAYOUT:v1" "$REGISTRY/py/chunked:v1" >/dev/null
"$RCFS" --root "$W/conv" push --tls-verify=false "$REGISTRY/py/chunked:v1" >/dev/null
rm -rf "$W/conv"
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-compress-format gzip \
    "docker://$REGISTRY/py/chunked:v1" "docker://$REGISTRY/py/gz:v1"

proxy_bytes() { kill -USR1 "$PROXY_PID"; sleep 0.2; awk '/bytes_to_client/ {print $2}' "$W/proxy.stats"; }
now() { date +%s.%N; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
ms() { echo "($2 - $1) * 1000" | bc -l | xargs printf '%.0f'; }

declare -A T B
for i in $(seq "$RUNS"); do
    for case in chunks whole after-lazy; do
        store=$W/store-$case-$i
        if [ "$case" = after-lazy ]; then
            # A lazy start first (not timed): its chunks stay in the store.
            mkdir -p "$W/mnt-$i"
            "$RCFS" --root "$store" pull -q --tls-verify=false "$VIA/py/chunked:v1"
            "$RCFS" --root "$store" mount "$VIA/py/chunked:v1" "$W/mnt-$i"
            chroot "$W/mnt-$i" /usr/bin/python3 -c 'import numpy' >/dev/null
            "$RCFS" umount "$W/mnt-$i"
        fi
        image=$VIA/py/chunked:v1
        [ "$case" = whole ] && image=$VIA/py/gz:v1
        cold
        b0=$(proxy_bytes)
        t0=$(now)
        "$RCFS" --root "$store" pull -q --full --tls-verify=false "$image"
        t1=$(now)
        T[$case,$i]=$(ms "$t0" "$t1")
        B[$case,$i]=$(( $(proxy_bytes) - b0 ))
        rm -rf "$store"
        echo "run $i $case: ${T[$case,$i]} ms, ${B[$case,$i]} bytes" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
col() { local c=$1 k=$2 out=; for i in $(seq "$RUNS"); do if [ "$k" = T ]; then out+="${T[$c,$i]} "; else out+="${B[$c,$i]} "; fi; done; echo "$out"; }
mw=$(col whole T | median)
{
    echo "# Full pulls over a modelled WAN ($RTT_MS ms RTT, $MBIT Mbit/s)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), rcfs $(git -C "$REPO" rev-parse --short HEAD), $RUNS runs each, in turn; empty store, cold page cache."
    echo
    echo '| case | time (ms, median) | vs gzip streamed whole | bytes fetched (median) | samples (ms) |'
    echo '| --- | ---: | ---: | ---: | --- |'
    for c in chunks whole after-lazy; do
        case $c in
            chunks) name='zstd:chunked by its chunks (tar rebuilt, diff_id checked)' ;;
            whole) name='the same tars as gzip, streamed whole' ;;
            after-lazy) name='zstd:chunked by its chunks after a lazy start (`import numpy`)' ;;
        esac
        m=$(col "$c" T | median)
        echo "| $name | $m | $(echo "$m / $mw" | bc -l | xargs printf '%.2f') | $(col "$c" B | median) | $(col "$c" T) |"
    done
} > "$OUT"
cat "$OUT"
