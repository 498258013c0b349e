#!/usr/bin/env bash
# Lazy image start benchmark: the cold start of `python3 -c 'import numpy'`
# from a Debian + python3 + numpy image in a registry on loopback, reached
# through a proxy that models a WAN link (benches/wanproxy.py: 20 ms round
# trips, 100 Mbit/s each way; this kernel has no netem). Compared in the
# same run:
#   rcfs lazy     rcfs pull (zstd:chunked: tables of contents only) + rcfs
#                 mount + the import in a chroot of the mount
#   rcfs learned  the next cold start of the zstd:chunked image: a first
#                 start (untimed) in the same store, unmounted, the cache
#                 emptied (gc --all); then rcfs mount + the import (the
#                 layers fetch what the first start read, first)
#   rcfs full     rcfs pull --full (gzip image, every layer streamed and
#                 indexed) + rcfs mount + the import
#   skopeo+umoci  skopeo copy to an OCI layout + umoci unpack + the import in
#                 a chroot of the unpacked tree (what a full pull costs)
#   rcfs run      `rcfs run --rm` of the gzip image, the import its command:
#                 the image pulled while the container runs (each streamed
#                 layer's files served once its digest is checked, where the
#                 binary does that)
#   rcfs run unverified   the same with --unverified-streaming (files served
#                 as they arrive), where the binary has that option
#   podman run    podman (as root, overlay driver, an empty storage each run)
#                 `run --rm --net=host` of the gzip image, the import its
#                 command
#   podman-user   the same as an unprivileged user (rcfs-bench): rootless
#                 podman with the overlay driver over fuse-overlayfs, a new
#                 empty storage (and pause process) each run
#   podman-als    podman (as root, empty storage) with `rcfs als` (an empty
#                 rcfs store, started untimed) as its Additional Layer Store:
#                 `run --rm` of the image `rcfs convert` made zstd:chunked
#   podman-als-traced  the same with the image `rcfs convert --trace` made
#                 (the files a start reads first in each layer)
#   podman5-chunked  podman 5.4 (scripts/podman5's Debian 13 chroot, as root,
#                 storage emptied untimed) `run --rm` of that same image: its
#                 own zstd:chunked partial pull
#   podman-warm, podman-als-warm  a warm `podman run --rm` (the image pulled
#                 and run once untimed, page cache kept): layers pulled
#                 normally (gzip) against layers from `rcfs als`
# Every run starts from an empty store / empty dirs with the page cache
# dropped. Also measured: bytes the proxy delivered against the bytes of the
# files the start opened, the rcfs server's RSS after the start, and the
# first stat-walk of a 64-layer against a 2-layer version of the image
# (image layers: their tables of contents are in memory, no network).
#
# Run as root on Debian 12 after `cargo build --release`:
#     benches/lazy.sh
# Knobs: RUNS=3, BENCH_DIR=/var/tmp/rcfs-lazy (the image is built there once
# with debootstrap, ~400 MB), RTT_MS=20, MBIT=100, RCFS=target/release/rcfs.
# BINS="before=/path/a after=/path/b" measures several rcfs binaries in the
# same run, in turn (each case's runs interleaved: a b, then b a, ...); the
# first is the reference the others are compared with, the last one builds
# the images (SETUP_RCFS=). CASES="lazy learned traced full run run-unverified umoci
# podman podman-user podman-als podman-als-traced podman5-chunked podman-warm podman-als-warm" (the default: all). IDLE_WAIT=S waits up to S seconds before each
# run for the machine to be under IDLE_BUSY=25 % busy (default 0: no wait).
# Needs: debootstrap, docker-registry, skopeo, umoci, python3, fuse3 (it
# installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/rcfs-lazy}
RTT_MS=${RTT_MS:-20}
MBIT=${MBIT:-100}
RCFS=${RCFS:-$REPO/target/release/rcfs}
BINS=${BINS:-rcfs=$RCFS}
CASES=${CASES:-lazy learned traced full run run-unverified umoci podman podman-user podman-als podman-als-traced podman5-chunked podman-warm podman-als-warm}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_BUSY=${IDLE_BUSY:-25}
OUT=${OUT:-$REPO/benches/results/lazy-$(date +%Y%m%d-%H%M%S).md}
HELPER_SRC=$REPO/benches/union-helper.c
source "$REPO/benches/lib.sh"
log() { echo "$*" >&2; }

die() { echo "lazy.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (chroot, drop_caches)"
# The binaries: LABELS in order, BIN[label] its path.
declare -A BIN
LABELS=()
for b in $BINS; do
    l=${b%%=*}; p=${b#*=}
    [ -x "$p" ] || die "$p missing: cargo build --release -p rcfs"
    LABELS+=("$l"); BIN[$l]=$p
done
RCFS=${SETUP_RCFS:-${BIN[${LABELS[-1]}]}}
has_case() { [[ " $CASES " == *" $1 "* ]]; }
# Which binaries can serve a streamed layer unverified on request.
declare -A UNVERIFIED
for l in "${LABELS[@]}"; do
    "${BIN[$l]}" run --help 2>/dev/null | grep -q -- --unverified-streaming && UNVERIFIED[$l]=1 || UNVERIFIED[$l]=0
done
if ! command -v podman >/dev/null; then
    has_case podman && log "podman not installed: the podman cases are left out"
    CASES=$(tr ' ' '\n' <<<"$CASES" | grep -v '^podman' | tr '\n' ' ')
fi
need=()
for p in debootstrap docker-registry skopeo umoci; do command -v $p >/dev/null || need+=($p); done
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$BENCH_DIR" "$(dirname "$OUT")"

# --- the image, built once -------------------------------------------------
ROOTFS=$BENCH_DIR/rootfs
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    log "building the image's tree with debootstrap (once)..."
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$ROOTFS" http://deb.debian.org/debian >"$BENCH_DIR/debootstrap.log" 2>&1 \
        || die "debootstrap failed: see $BENCH_DIR/debootstrap.log"
    rm -rf "$ROOTFS/var/cache/apt/archives"/*.deb
fi

# An OCI layout from a list of layer trees (bottom first): plain tars.
make_layout() { # DIR TAG LAYERDIR...
    local dir=$1 tag=$2; shift 2
    rm -rf "$dir"; mkdir -p "$dir/blobs/sha256"
    local layers= diffs= t sum size
    for l in "$@"; do
        t=$dir/layer.tar
        # Times as installed: python's .pyc files name their source's mtime, and
        # one made-up time for every file would make each start compile
        # every module again.
        tar --sort=name --numeric-owner --xattrs -cf "$t" -C "$l" .
        sum=$(sha256sum "$t" | cut -d' ' -f1); size=$(stat -c %s "$t")
        mv "$t" "$dir/blobs/sha256/$sum"
        layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$sum\",\"size\":$size}"
        diffs+="${diffs:+,}\"sha256:$sum\""
    done
    printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/usr/bin/python3"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
        "$(dpkg --print-architecture)" "$diffs" > "$dir/c.json"
    sum=$(sha256sum "$dir/c.json" | cut -d' ' -f1); size=$(stat -c %s "$dir/c.json"); mv "$dir/c.json" "$dir/blobs/sha256/$sum"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
        "$sum" "$size" "$layers" > "$dir/m.json"
    sum=$(sha256sum "$dir/m.json" | cut -d' ' -f1); size=$(stat -c %s "$dir/m.json"); mv "$dir/m.json" "$dir/blobs/sha256/$sum"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$sum" "$size" "$tag" > "$dir/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
}

# 2 layers: the Debian base, and python's files on top. 64 layers: the
# same files dealt round-robin by directory into 64 layers (each layer
# repeating the parent dirs of what it holds, as image layers do).
LAYERS=$BENCH_DIR/layers
if [ ! -f "$BENCH_DIR/layouts.done" ]; then
    log "splitting the tree into 2 and 64 layers (once)..."
    rm -rf "$LAYERS"; mkdir -p "$LAYERS/two/0" "$LAYERS/two/1"
    (cd "$ROOTFS" && find . -path ./proc -prune -o -path ./sys -prune -o -print0 | sort -z) > "$BENCH_DIR/all.list"
    (cd "$ROOTFS" && tar -cf - --null --no-recursion -T "$BENCH_DIR/all.list") | tar -C "$LAYERS/two/0" -xf -
    for p in usr/lib/python3 usr/lib/python3.11 usr/lib/python3/dist-packages; do
        if [ -d "$LAYERS/two/0/$p" ]; then
            mkdir -p "$LAYERS/two/1/$(dirname "$p")"
            cp -a "$LAYERS/two/0/$p" "$LAYERS/two/1/$(dirname "$p")/" 2>/dev/null || true
            rm -rf "$LAYERS/two/0/${p:?}"
        fi
    done
    for i in $(seq 0 63); do mkdir -p "$LAYERS/many/$i"; done
    (cd "$ROOTFS" && find . -path ./proc -prune -o -path ./sys -prune -o -type d -print) | sort > "$BENCH_DIR/dirs.list"
    n=0
    while read -r d; do
        i=$((n % 64)); n=$((n + 1))
        mkdir -p "$LAYERS/many/$i/$d"
        find "$ROOTFS/$d" -mindepth 1 -maxdepth 1 ! -type d -exec cp -a {} "$LAYERS/many/$i/$d/" \; 2>/dev/null || true
    done < "$BENCH_DIR/dirs.list"
    # Every dir in the bottom layer, as in an image.
    (cd "$ROOTFS" && find . -path ./proc -prune -o -path ./sys -prune -o -type d -print0 | tar -cf - --null --no-recursion -T -) | tar -C "$LAYERS/many/0" -xf -
    make_layout "$BENCH_DIR/oci-two" v1 "$LAYERS/two/0" "$LAYERS/two/1"
    make_layout "$BENCH_DIR/oci-many" v1 $(for i in $(seq 0 63); do echo "$LAYERS/many/$i"; done)
    touch "$BENCH_DIR/layouts.done"
fi

# --- registry and proxy -------------------------------------------------------
RUN=$BENCH_DIR/run
rm -rf "$RUN"; mkdir -p "$RUN"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REG_PORT=$(free_port); PROXY_PORT=$(free_port)
# The user of the rootless podman case.
! has_case podman-user || useradd -M -d /nonexistent rcfs-bench 2>/dev/null || true
cat > "$RUN/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $RUN/registry
http:
  addr: 127.0.0.1:$REG_PORT
EOF
docker-registry serve "$RUN/registry.yml" >"$RUN/registry.log" 2>&1 &
REG_PID=$!
python3 "$REPO/benches/wanproxy.py" "$PROXY_PORT" "$REG_PORT" --rtt-ms "$RTT_MS" --mbit "$MBIT" --stats "$RUN/proxy.stats" &
PROXY_PID=$!
cleanup() {
    for m in "$RUN"/mnt*; do mountpoint -q "$m" 2>/dev/null && "$RCFS" umount "$m" || true; done
    { grep -o " $RUN/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    kill "$REG_PID" "$PROXY_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REG_PORT") 2>/dev/null && break; sleep 0.1; done
REG=127.0.0.1:$REG_PORT
PROXY=127.0.0.1:$PROXY_PORT
rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
skopeo copy -q --dest-tls-verify=false --dest-compress-format zstd:chunked "oci:$BENCH_DIR/oci-two:v1" "docker://$REG/lazy/py:v1"
rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
skopeo copy -q --dest-tls-verify=false --dest-compress-format gzip "oci:$BENCH_DIR/oci-two:v1" "docker://$REG/full/py:v1"
IMAGE_BYTES=$(du -sb "$RUN/registry" | cut -f1)
# The walk images, 2 and 64 layers, made zstd:chunked by rcfs convert (the
# skopeo of Debian 12 fails to push the 64-layer one: "short write").
for img in two many; do
    "$RCFS" --root "$RUN/conv" pull -q "oci:$BENCH_DIR/oci-$img:v1"
    "$RCFS" --root "$RUN/conv" convert "oci:$BENCH_DIR/oci-$img:v1" "$REG/walk/$img:v1" 2>/dev/null
    "$RCFS" --root "$RUN/conv" push --tls-verify=false "$REG/walk/$img:v1" 2>/dev/null
done
rm -rf "$RUN/conv"

# A trace of the start (on the registry directly), and the image converted
# with it: the files a start reads first in each layer.
mkdir -p "$RUN/mnt-trace"
"$RCFS" --root "$RUN/store-trace" pull -q --tls-verify=false "$REG/lazy/py:v1"
"$RCFS" --root "$RUN/store-trace" mount --record-trace "$RUN/trace" "$REG/lazy/py:v1" "$RUN/mnt-trace"
chroot "$RUN/mnt-trace" /usr/bin/python3 -c 'import numpy' >/dev/null
"$RCFS" umount "$RUN/mnt-trace"
"$RCFS" --root "$RUN/conv" pull -q --full --tls-verify=false "$REG/full/py:v1"
"$RCFS" --root "$RUN/conv" convert --trace "$RUN/trace" "$REG/full/py:v1" "$REG/lazy/traced:v1" 2>/dev/null
"$RCFS" --root "$RUN/conv" push --tls-verify=false "$REG/lazy/traced:v1" 2>/dev/null
# The same image made zstd:chunked by rcfs convert without a trace (TOC and
# tar-split, as podman 5's partial pull needs): podman's ALS and podman 5 cases.
"$RCFS" --root "$RUN/conv" convert "$REG/full/py:v1" "$REG/lazy/conv:v1" 2>/dev/null
"$RCFS" --root "$RUN/conv" push --tls-verify=false "$REG/lazy/conv:v1" 2>/dev/null
rm -rf "$RUN/conv" "$RUN/store-trace"
if has_case podman5-chunked; then
    "$REPO/scripts/podman5" build >&2
fi

proxy_bytes() { kill -USR1 "$PROXY_PID"; sleep 0.2; awk '/bytes_to_client/ {print $2}' "$RUN/proxy.stats"; }
now() { date +%s.%N; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
START='import numpy; print(numpy.__version__)'

declare -A T B OK
declare -A RSS READ NFILES SRVCPU
CLK_TCK=$(getconf CLK_TCK)
# podman as root, its storage under DIR (made empty): overlay driver,
# cgroupfs, file events, runc (crun 1.x refuses a host with hybrid
# cgroups); the proxy is plain HTTP.
podman_in() { # DIR ARGS...
    local d=$1; shift
    podman --root "$d/root" --runroot "$d/runroot" --tmpdir "$d/tmp" --storage-driver overlay \
        --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}
# Without CAP_SYS_RESOURCE (a sandbox), podman's default limits for root
# (nofile 1048576) cannot be set: ask for what the host allows.
PODMAN_RUN_OPTS=()
if (( ! ($(awk '/^CapBnd/ {print "0x" $2}' /proc/self/status) >> 24 & 1) )); then
    PODMAN_RUN_OPTS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=10000:10000)
fi
# Unmounts what is mounted under DIR (podman's overlay driver keeps its
# home a mount), deepest first.
umount_under() {
    { grep -o " $1/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
# `rcfs als` (binary RCFS) at DIR/als over the store DIR/rcfs, started;
# podman_als DIR ARGS... is podman_in $RUN/pa (podman's runroot path may
# not pass 50 characters; one such case runs at a time) with it as its
# store.
start_als() { # RCFS DIR
    mkdir -p "$2/als"
    RUST_LOG=warn "$1" --root "$2/rcfs" als --tls-verify=false "$2/als" >"$2/als.log" 2>&1 &
    for _ in $(seq 200); do grep -q " $2/als " /proc/self/mounts && return; sleep 0.05; done
    die "rcfs als did not start: $(cat "$2/als.log")"
}
podman_als() { # DIR ARGS...
    local d=$1; shift
    podman_in "$RUN/pa" --storage-opt "overlay.additionallayerstore=$d/als:ref" "$@"
}
stop_als() { # DIR
    umount_under "$RUN/pa"
    rm -rf "$RUN/pa"
    umount "$1/als" 2>/dev/null || true
    sleep 0.2
}
# podman 5 in its chroot (scripts/podman5), as root.
podman5() { "$REPO/scripts/podman5" shell -- podman "$@"; }
# One run of case NAME (with the binary LABEL; "-" for the cases that use
# no rcfs) as sample I. Records T (ms), B (bytes via the proxy), OK (0/1).
run_case() { # NAME LABEL I
    local name=$1 label=$2 i=$3 rcfs= store mnt b0 t0 t1 out rc=0
    [ "$label" = - ] || rcfs=${BIN[$label]}
    store=$RUN/store-$name-$label-$i mnt=$RUN/mnt-$name-$label-$i out=$RUN/out-$name-$label-$i
    mkdir -p "$mnt"
    if [ "$name" = learned ]; then
        # Untimed: a first start, which the layers keep as their start
        # order when it is unmounted; then the cache emptied.
        "$rcfs" --root "$store" pull -q --tls-verify=false "$PROXY/lazy/py:v1"
        "$rcfs" --root "$store" mount "$PROXY/lazy/py:v1" "$mnt"
        chroot "$mnt" /usr/bin/python3 -c "$START" >/dev/null
        "$rcfs" umount "$mnt"
        "$rcfs" --root "$store" gc --all >/dev/null
    fi
    if [ "$name" = podman-user ]; then
        # Untimed: the user's empty storage and podman's configuration.
        podman_user rcfs-bench "$store/home" "$store/run" "$PROXY_PORT"
    fi
    case $name in
        # Untimed: the store started, empty.
        podman-als | podman-als-traced) start_als "$rcfs" "$store" ;;
        podman5-chunked) podman5 system reset -f >/dev/null 2>&1 ;;
        # Untimed: the image pulled (from the registry itself) and run once.
        podman-warm)
            podman_in "$RUN/pw" pull -q --tls-verify=false "$REG/full/py:v1" >/dev/null
            podman_in "$RUN/pw" run --rm --net=host "${PODMAN_RUN_OPTS[@]}" "$REG/full/py:v1" \
                /usr/bin/python3 -c "$START" >/dev/null ;;
        podman-als-warm)
            start_als "$rcfs" "$store"
            podman_als "$store" pull -q --tls-verify=false "$REG/lazy/conv:v1" >/dev/null
            podman_als "$store" run --rm --net=host "${PODMAN_RUN_OPTS[@]}" "$REG/lazy/conv:v1" \
                /usr/bin/python3 -c "$START" >/dev/null ;;
    esac
    wait_idle
    case $name in *-warm) ;; *) cold ;; esac
    b0=$(proxy_bytes)
    t0=$(now)
    case $name in
        lazy)
            "$rcfs" --root "$store" pull -q --tls-verify=false "$PROXY/lazy/py:v1" &&
            "$rcfs" --root "$store" mount --record-trace "$RUN/trace-$label-$i" "$PROXY/lazy/py:v1" "$mnt" &&
            chroot "$mnt" /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        learned)
            "$rcfs" --root "$store" mount "$PROXY/lazy/py:v1" "$mnt" &&
            chroot "$mnt" /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        traced)
            "$rcfs" --root "$store" pull -q --tls-verify=false "$PROXY/lazy/traced:v1" &&
            "$rcfs" --root "$store" mount "$PROXY/lazy/traced:v1" "$mnt" &&
            chroot "$mnt" /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        full)
            "$rcfs" --root "$store" pull -q --full --tls-verify=false "$PROXY/full/py:v1" &&
            "$rcfs" --root "$store" mount "$PROXY/full/py:v1" "$mnt" &&
            chroot "$mnt" /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        run)
            "$rcfs" --root "$store" run --rm --tls-verify=false "$PROXY/full/py:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        run-unverified)
            "$rcfs" --root "$store" run --rm --tls-verify=false --unverified-streaming "$PROXY/full/py:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        umoci)
            { skopeo copy -q --src-tls-verify=false "docker://$PROXY/full/py:v1" "oci:$RUN/oci-$i:v1" &&
              { umoci unpack -q --image "$RUN/oci-$i:v1" "$RUN/bundle-$i" >/dev/null 2>&1 || umoci unpack --image "$RUN/oci-$i:v1" "$RUN/bundle-$i" >/dev/null; } &&
              chroot "$RUN/bundle-$i/rootfs" /usr/bin/python3 -c "$START" >"$out"; } 2>"$out.err" || rc=$? ;;
        podman)
            podman_in "$store" run --rm --tls-verify=false --net=host "${PODMAN_RUN_OPTS[@]}" "$PROXY/full/py:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        podman-als)
            podman_als "$store" run --rm --tls-verify=false --net=host "${PODMAN_RUN_OPTS[@]}" "$PROXY/lazy/conv:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        podman-als-traced)
            podman_als "$store" run --rm --tls-verify=false --net=host "${PODMAN_RUN_OPTS[@]}" "$PROXY/lazy/traced:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        podman5-chunked)
            podman5 run --rm --tls-verify=false --net=host "$PROXY/lazy/conv:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        podman-warm)
            podman_in "$RUN/pw" run --rm --net=host "${PODMAN_RUN_OPTS[@]}" "$REG/full/py:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        podman-als-warm)
            podman_als "$store" run --rm --net=host "${PODMAN_RUN_OPTS[@]}" "$REG/lazy/conv:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
        podman-user)
            setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$store/home" XDG_RUNTIME_DIR="$store/run" \
                podman run --rm --tls-verify=false --net=host "$PROXY/full/py:v1" \
                /usr/bin/python3 -c "$START" >"$out" 2>"$out.err" || rc=$? ;;
    esac
    t1=$(now)
    local k=$name,$label,$i
    T[$k]=$(echo "($t1 - $t0) * 1000" | bc -l | xargs printf '%.0f')
    B[$k]=$(( $(proxy_bytes) - b0 ))
    # A start counts when the import printed numpy's version.
    if [ "$rc" = 0 ] && grep -qE '^[0-9]+\.[0-9]+' "$out"; then OK[$k]=1; else
        OK[$k]=0
        log "  $name $label run $i FAILED (exit $rc): $(tail -n 3 "$out.err" | tr '\n' ' ')"
        cp "$out.err" "$BENCH_DIR/failed-$name-$label-$i.err" 2>/dev/null || true
    fi
    case $name in lazy | traced | full)
        # The CPU time the rcfs server used for the start (all its threads).
        local spid
        spid=$(pgrep -f -- "--root $store mount" | head -1 || true)
        [ -z "$spid" ] || SRVCPU[$k]=$(awk -v t="$CLK_TCK" '{print ($14 + $15) * 1000 / t}' "/proc/$spid/stat") ;;
    esac
    if [ "$name" = lazy ] && [ "${OK[$k]}" = 1 ]; then
        # The server's memory with the start's files read.
        local pid
        pid=$(pgrep -f -- "--root $store mount" | head -1)
        RSS[$label,$i]=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        # Bytes of the files the start opened (from the trace).
        # (The trace's other lines, "/read ...", are the chunks read.)
        READ[$label,$i]=$(cd "$mnt" && grep -v '^/read ' "$RUN/trace-$label-$i" | tr '\n' '\0' | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
        NFILES[$label,$i]=$(grep -cv '^/read ' "$RUN/trace-$label-$i")
    fi
    mountpoint -q "$mnt" && "$rcfs" umount "$mnt"
    case $name in
        podman) umount_under "$store" ;;
        podman-warm) umount_under "$RUN/pw"; rm -rf "$RUN/pw" ;;
        podman-als | podman-als-traced | podman-als-warm) stop_als "$store" ;;
    esac
    if [ "$name" = podman-user ] && [ -f "$store/run/libpod/tmp/pause.pid" ]; then
        # Its namespace (and fuse-overlayfs mounts) go with its pause process.
        kill "$(cat "$store/run/libpod/tmp/pause.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    rm -rf "$store" "$RUN/oci-$i" "$RUN/bundle-$i" "$out" "$out.err"
    log "  $name $label run $i: ${T[$k]} ms, ${B[$k]} bytes"
}
# The binaries in turn: in LABELS' order in odd runs, reversed in even ones.
order() { # I
    if (($1 % 2)); then printf '%s\n' "${LABELS[@]}"; else printf '%s\n' "${LABELS[@]}" | tac; fi
}
PER_BIN="lazy learned traced full run run-unverified podman-als podman-als-traced podman-als-warm"
for i in $(seq 1 "$RUNS"); do
    for name in $CASES; do
        if [[ " $PER_BIN " == *" $name "* ]]; then
            for l in $(order "$i"); do
                [ "$name" != run-unverified ] || [ "${UNVERIFIED[$l]}" = 1 ] || continue
                run_case "$name" "$l" "$i"
            done
        else
            run_case "$name" - "$i"
        fi
    done
done

# First stat-walk of the image layers, 64 vs 2 (TOCs pulled, no data needed).
cc -O2 -o "$RUN/union-helper" "$HELPER_SRC" -lm
declare -A W
for l in "${LABELS[@]}"; do
    for img in two many; do
        "${BIN[$l]}" --root "$RUN/store-walk-$l-$img" pull -q --tls-verify=false "$REG/walk/$img:v1"
    done
done
for i in $(seq 1 "$RUNS"); do
    for l in $(order "$i"); do
        for img in two many; do
            store=$RUN/store-walk-$l-$img
            mnt=$RUN/mnt-walk-$l-$img-$i; mkdir -p "$mnt"
            "${BIN[$l]}" --root "$store" mount "$REG/walk/$img:v1" "$mnt"
            cold
            W[$img,$l,$i]=$("$RUN/union-helper" walk "$mnt" | awk '{printf "%.1f", $1 / 1e6}')
            "${BIN[$l]}" umount "$mnt"
        done
    done
done

median() { sort -g | awk 'NF {a[++n]=$1} END {if (!n) print "-"; else if (n%2) print a[(n+1)/2]; else {m=(a[n/2]+a[n/2+1])/2; if (m==int(m)) printf "%d\n", m; else printf "%.1f\n", m}}'; }
# Samples of case NAME with LABEL that succeeded: their times, their bytes.
okt() { local i; for i in $(seq 1 "$RUNS"); do if [ "${OK[$1,$2,$i]:-0}" = 1 ]; then echo "${T[$1,$2,$i]}"; fi; done; }
okb() { local i; for i in $(seq 1 "$RUNS"); do if [ "${OK[$1,$2,$i]:-0}" = 1 ]; then echo "${B[$1,$2,$i]}"; fi; done; }
nok() { local i n=0; for i in $(seq 1 "$RUNS"); do if [ "${OK[$1,$2,$i]:-0}" = 1 ]; then n=$((n + 1)); fi; done; echo "$n/$RUNS"; }
med() { okt "$1" "$2" | median; }
medb() { okb "$1" "$2" | median; }
ratio() { case "$1$2" in *-*) echo - ;; *) echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./' ;; esac; }
# The median of the per-run ratios of LABEL to the reference (first) label,
# over the runs where both succeeded: runs i were taken next to each other.
paired() { # NAME LABEL
    local i ref=${LABELS[0]} m
    m=$(for i in $(seq 1 "$RUNS"); do
        if [ "${OK[$1,$2,$i]:-0}" = 1 ] && [ "${OK[$1,$ref,$i]:-0}" = 1 ]; then
            echo "scale=4; ${T[$1,$2,$i]} / ${T[$1,$ref,$i]}" | bc -l
        fi
    done | median)
    if [ "$m" = - ]; then echo -; else printf '%.3f\n' "$m"; fi
}
tu=-; has_case umoci && tu=$(med umoci -)
tp=-; has_case podman && tp=$(med podman -)
t5=-; has_case podman5-chunked && t5=$(med podman5-chunked -)
tw=-; has_case podman-warm && tw=$(med podman-warm -)
declare -A DESC=(
    [lazy]="rcfs lazy (zstd:chunked as skopeo pushed it)"
    [learned]="rcfs lazy, the next cold start (store kept, cache emptied: the first start's order)"
    [traced]="rcfs lazy (\`rcfs convert --trace\` of the same image)"
    [full]="rcfs pull --full (gzip) + mount"
    [run]="rcfs run --rm (gzip, pulled while it runs)"
    [run-unverified]="rcfs run --rm --unverified-streaming (gzip)"
    [umoci]="skopeo copy + umoci unpack"
    [podman]="podman run --rm (gzip; root, overlay, empty storage)"
    [podman-user]="podman run --rm (gzip; rootless, overlay over fuse-overlayfs, empty storage)"
    [podman-als]="podman run --rm (zstd:chunked; root, empty storage, \`rcfs als\` as its layer store)"
    [podman-als-traced]="podman run --rm (\`rcfs convert --trace\` image; root, empty storage, \`rcfs als\`)"
    [podman5-chunked]="podman 5.4 run --rm (zstd:chunked, its partial pull; root, empty storage)"
    [podman-warm]="podman run --rm, warm (gzip pulled normally)"
    [podman-als-warm]="podman run --rm, warm (layers from \`rcfs als\`)"
)
target() { # NAME TIME
    case $1 in lazy | learned | traced) awk -v r="$(ratio "$2" "$tu")" 'BEGIN{print (r == "-") ? "≤ 0.2x full pull | -" : (r <= 0.2) ? "≤ 0.2x full pull | ok" : "≤ 0.2x full pull | MISS"}' ;;
        podman-als | podman-als-traced) awk -v a="$(ratio "$2" "$tp")" -v b="$(ratio "$2" "$t5")" 'BEGIN{
            ok = (a != "-" && a <= 0.2 && b != "-" && b <= 0.5); printf "≤ 0.2x podman, ≤ 0.5x podman 5 (%sx) | %s\n", b, (a == "-" || b == "-") ? "-" : ok ? "ok" : "MISS"}' ;;
        podman-als-warm) awk -v r="$(ratio "$2" "$tw")" 'BEGIN{printf "≤ 1.05x podman warm (%sx) | %s\n", r, (r == "-") ? "-" : (r <= 1.05) ? "ok" : "MISS"}' ;;
        *) echo " | " ;; esac
}
ref=${LABELS[0]}
{
    echo "# Lazy start: \`python3 -c 'import numpy'\` from a registry over a modelled WAN"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), RUNS=$RUNS, RTT ${RTT_MS} ms, ${MBIT} Mbit/s; bench scripts at $(git -C "$REPO" rev-parse --short HEAD)."
    for l in "${LABELS[@]}"; do echo "- rcfs \`$l\`: ${BIN[$l]} ($("${BIN[$l]}" --version 2>/dev/null | head -1 || true))"; done
    echo "- images converted and pushed with ${RCFS}"
    has_case podman && echo "- $(podman --version), runc $(runc --version | head -1 | awk '{print $3}'), as root, overlay driver, a new empty --root each run${PODMAN_RUN_OPTS:+, ${PODMAN_RUN_OPTS[*]} (no CAP_SYS_RESOURCE here for its default limits)}"
    has_case podman-user && echo "- podman-user: the same podman as rcfs-bench (rootless), overlay driver with fuse-overlayfs as its mount program, cgroupfs, a new empty storage each run"
    echo
    echo "Image: Debian bookworm minbase + python3 + python3-numpy, 2 layers, $(du -sh "$ROOTFS" | cut -f1) unpacked; registry holds $IMAGE_BYTES bytes (all three pushes)."
    echo "Every run from an empty store, page cache dropped; timed from the first command to the import's end (rcfs run, podman run: to their exit)."
    echo
    echo "| case | rcfs | time (ms, median) | vs \`$ref\` (medians) | vs \`$ref\` (paired, median) | vs full pull (skopeo+umoci) | vs podman | bytes fetched (median) | runs ok | target | |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    for name in $CASES; do
        if [[ " $PER_BIN " == *" $name "* ]]; then
            for l in "${LABELS[@]}"; do
                [ "$name" != run-unverified ] || [ "${UNVERIFIED[$l]}" = 1 ] || continue
                t=$(med "$name" "$l")
                vr=- vp=-
                if [ "$l" != "$ref" ] && { [ "$name" != run-unverified ] || [ "${UNVERIFIED[$ref]}" = 1 ]; }; then
                    vr=$(ratio "$t" "$(med "$name" "$ref")"); vp=$(paired "$name" "$l")
                fi
                echo "| ${DESC[$name]} | $l | $t | $vr | $vp | $(ratio "$t" "$tu") | $(ratio "$t" "$tp") | $(medb "$name" "$l") | $(nok "$name" "$l") | $(target "$name" "$t") |"
            done
        else
            t=$(med "$name" -)
            echo "| ${DESC[$name]} | - | $t | | | $(ratio "$t" "$tu") | $(ratio "$t" "$tp") | $(medb "$name" -) | $(nok "$name" -) | | |"
        fi
    done
    echo
    echo "| measure | rcfs | value | target | |"
    echo "| --- | --- | ---: | --- | --- |"
    if has_case lazy; then
        for l in "${LABELS[@]}"; do
            rd=$(for i in $(seq 1 "$RUNS"); do echo "${READ[$l,$i]:-}"; done | median)
            nf=$(for i in $(seq 1 "$RUNS"); do echo "${NFILES[$l,$i]:-}"; done | median)
            rss=$(for i in $(seq 1 "$RUNS"); do echo "${RSS[$l,$i]:-}"; done | median)
            bl=$(medb lazy "$l"); fr=$(ratio "$bl" "$rd")
            echo "| files the start opened | $l | $nf | | |"
            echo "| bytes of those files | $l | $rd | | |"
            echo "| bytes fetched / bytes read (lazy) | $l | $fr | ≤ 3x | $(awk -v r="$fr" 'BEGIN{print (r == "-") ? "-" : (r <= 3) ? "ok" : "MISS"}') |"
            [ "$rss" = - ] || echo "| rcfs server RSS after the start | $l | $((rss / 1024)) MiB | ≤ 64 MiB | $([ "$rss" -le 65536 ] && echo ok || echo MISS) |"
        done
    fi
    for name in lazy traced full; do
        has_case "$name" || continue
        for l in "${LABELS[@]}"; do
            c=$(for i in $(seq 1 "$RUNS"); do if [ "${OK[$name,$l,$i]:-0}" = 1 ]; then echo "${SRVCPU[$name,$l,$i]:-}"; fi; done | median)
            echo "| rcfs server CPU time for the start, $name (ms) | $l | $c | | |"
        done
    done
    for l in "${LABELS[@]}"; do
        w2=$(for i in $(seq 1 "$RUNS"); do echo "${W[two,$l,$i]}"; done | median)
        w64=$(for i in $(seq 1 "$RUNS"); do echo "${W[many,$l,$i]}"; done | median)
        echo "| first stat-walk, 2 image layers (ms) | $l | $w2 | | |"
        echo "| first stat-walk, 64 image layers (ms) | $l | $w64 | | |"
        echo "| 64 / 2 | $l | $(ratio "$w64" "$w2") | ≤ 1.3x | $(awk -v r="$(ratio "$w64" "$w2")" 'BEGIN{print (r <= 1.3) ? "ok" : "MISS"}') |"
    done
    echo
    ((NOISY == 0)) || echo "Runs that started on a busy machine (over ${IDLE_BUSY}% CPU after ${IDLE_WAIT} s of waiting): $NOISY."
    echo
    echo "<details><summary>samples (ms / bytes via the proxy, in run order; FAILED: the import did not print numpy's version)</summary>"
    echo
    for name in $CASES; do
        ls=-; [[ " $PER_BIN " == *" $name "* ]] && ls="${LABELS[*]}"
        for l in $ls; do
            [ "$name" != run-unverified ] || [ "$l" = - ] || [ "${UNVERIFIED[$l]}" = 1 ] || continue
            if [ "$l" = - ]; then echo -n "- $name:"; else echo -n "- $name $l:"; fi
            for i in $(seq 1 "$RUNS"); do
                [ "${OK[$name,$l,$i]:-0}" = 1 ] && f= || f=" FAILED"
                echo -n " ${T[$name,$l,$i]:-?} ms / ${B[$name,$l,$i]:-?} B$f;"
            done
            echo
        done
    done
    for l in "${LABELS[@]}"; do
        echo "- walk $l, 2 layers: $(for i in $(seq 1 "$RUNS"); do echo -n "${W[two,$l,$i]} "; done); 64 layers: $(for i in $(seq 1 "$RUNS"); do echo -n "${W[many,$l,$i]} "; done)"
        has_case lazy && echo "- server RSS $l (KiB): $(for i in $(seq 1 "$RUNS"); do echo -n "${RSS[$l,$i]:-?} "; done)"
        for name in lazy traced full; do
            has_case "$name" && echo "- server CPU ms, $name $l: $(for i in $(seq 1 "$RUNS"); do echo -n "${SRVCPU[$name,$l,$i]:-?} "; done)"
        done
    done
    echo
    echo "</details>"
} | tee "$OUT"
