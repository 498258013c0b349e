#!/usr/bin/env bash
# Lazy image start benchmark: the cold start of `python3 -c 'import numpy'`
# from a Debian + python3 + numpy image in a registry on loopback, reached
# through a proxy that models a WAN link (benches/wanproxy.py: 20 ms round
# trips, 100 Mbit/s each way; this kernel has no netem). Compared in the
# same run:
#   rcfs lazy     rcfs pull (zstd:chunked: tables of contents only) + rcfs
#                 mount + the import in a chroot of the mount
#   rcfs full     rcfs pull --full (gzip image, every layer streamed and
#                 indexed) + rcfs mount + the import
#   skopeo+umoci  skopeo copy to an OCI layout + umoci unpack + the import in
#                 a chroot of the unpacked tree (what a full pull costs)
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
OUT=${OUT:-$REPO/benches/results/lazy-$(date +%Y%m%d-%H%M%S).md}
HELPER_SRC=$REPO/benches/union-helper.c

die() { echo "lazy.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (chroot, drop_caches)"
[ -x "$RCFS" ] || die "$RCFS missing: cargo build --release -p rcfs"
need=()
for p in debootstrap docker-registry skopeo umoci; do command -v $p >/dev/null || need+=($p); done
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$BENCH_DIR" "$(dirname "$OUT")"
log() { echo "$*" >&2; }

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
rm -rf "$RUN/conv" "$RUN/store-trace"

proxy_bytes() { kill -USR1 "$PROXY_PID"; sleep 0.2; awk '/bytes_to_client/ {print $2}' "$RUN/proxy.stats"; }
now() { date +%s.%N; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
START='import numpy; print(numpy.__version__)'

declare -A T B
run_case() { # NAME RUN
    local name=$1 i=$2 store=$RUN/store-$name-$i mnt=$RUN/mnt-$name-$i b0 t0 t1
    mkdir -p "$mnt"
    cold
    b0=$(proxy_bytes)
    t0=$(now)
    case $name in
        lazy)
            "$RCFS" --root "$store" pull -q --tls-verify=false "$PROXY/lazy/py:v1"
            "$RCFS" --root "$store" mount --record-trace "$RUN/trace-$i" "$PROXY/lazy/py:v1" "$mnt"
            chroot "$mnt" /usr/bin/python3 -c "$START" >/dev/null ;;
        traced)
            "$RCFS" --root "$store" pull -q --tls-verify=false "$PROXY/lazy/traced:v1"
            "$RCFS" --root "$store" mount "$PROXY/lazy/traced:v1" "$mnt"
            chroot "$mnt" /usr/bin/python3 -c "$START" >/dev/null ;;
        full)
            "$RCFS" --root "$store" pull -q --full --tls-verify=false "$PROXY/full/py:v1"
            "$RCFS" --root "$store" mount "$PROXY/full/py:v1" "$mnt"
            chroot "$mnt" /usr/bin/python3 -c "$START" >/dev/null ;;
        umoci)
            skopeo copy -q --src-tls-verify=false "docker://$PROXY/full/py:v1" "oci:$RUN/oci-$i:v1"
            umoci unpack -q --image "$RUN/oci-$i:v1" "$RUN/bundle-$i" >/dev/null 2>&1 || umoci unpack --image "$RUN/oci-$i:v1" "$RUN/bundle-$i" >/dev/null
            chroot "$RUN/bundle-$i/rootfs" /usr/bin/python3 -c "$START" >/dev/null ;;
    esac
    t1=$(now)
    T[$name,$i]=$(echo "($t1 - $t0) * 1000" | bc -l | xargs printf '%.0f')
    B[$name,$i]=$(( $(proxy_bytes) - b0 ))
    if [ "$name" = lazy ]; then
        # The server's memory with the start's files read.
        local pid
        pid=$(pgrep -f "rcfs --root $store mount" | head -1)
        RSS[$i]=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        # Bytes of the files the start opened (from the trace).
        # (The trace's other lines, "/read ...", are the chunks read.)
        READ[$i]=$(cd "$mnt" && grep -v '^/read ' "$RUN/trace-$i" | tr '\n' '\0' | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
        NFILES[$i]=$(grep -cv '^/read ' "$RUN/trace-$i")
    fi
    mountpoint -q "$mnt" && "$RCFS" umount "$mnt"
    rm -rf "$store" "$RUN/oci-$i" "$RUN/bundle-$i"
    log "  $name run $i: ${T[$name,$i]} ms, ${B[$name,$i]} bytes"
}
declare -A RSS READ NFILES
for i in $(seq 1 "$RUNS"); do
    for name in lazy traced full umoci; do run_case "$name" "$i"; done
done

# First stat-walk of the image layers, 64 vs 2 (TOCs pulled, no data needed).
cc -O2 -o "$RUN/union-helper" "$HELPER_SRC" -lm
declare -A W
for img in two many; do
    store=$RUN/store-walk-$img
    "$RCFS" --root "$store" pull -q --tls-verify=false "$REG/walk/$img:v1"
    for i in $(seq 1 "$RUNS"); do
        mnt=$RUN/mnt-walk-$img-$i; mkdir -p "$mnt"
        "$RCFS" --root "$store" mount "$REG/walk/$img:v1" "$mnt"
        cold
        W[$img,$i]=$("$RUN/union-helper" walk "$mnt" | awk '{printf "%.1f", $1 / 1e6}')
        "$RCFS" umount "$mnt"
    done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() { local k=$1; for i in $(seq 1 "$RUNS"); do echo "${T[$k,$i]}"; done | median; }
medb() { local k=$1; for i in $(seq 1 "$RUNS"); do echo "${B[$k,$i]}"; done | median; }
medw() { local k=$1; for i in $(seq 1 "$RUNS"); do echo "${W[$k,$i]}"; done | median; }
tl=$(med lazy); tt=$(med traced); tf=$(med full); tu=$(med umoci)
bl=$(medb lazy); bt=$(medb traced); bf=$(medb full); bu=$(medb umoci)
rd=$(for i in $(seq 1 "$RUNS"); do echo "${READ[$i]}"; done | median)
nf=$(for i in $(seq 1 "$RUNS"); do echo "${NFILES[$i]}"; done | median)
rss=$(for i in $(seq 1 "$RUNS"); do echo "${RSS[$i]}"; done | median)
w2=$(medw two); w64=$(medw many)
ratio() { echo "scale=3; $1 / $2" | bc -l | sed 's/^\./0./'; }
{
    echo "# Lazy start: \`python3 -c 'import numpy'\` from a registry over a modelled WAN"
    echo
    echo "rcfs $(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ), RUNS=$RUNS, RTT ${RTT_MS} ms, ${MBIT} Mbit/s."
    echo "Image: Debian bookworm minbase + python3 + python3-numpy, 2 layers, $(du -sh "$ROOTFS" | cut -f1) unpacked; registry holds $IMAGE_BYTES bytes (all three pushes)."
    echo
    echo "| case | time (ms, median) | vs full pull (skopeo+umoci) | bytes fetched | target | |"
    echo "| --- | ---: | ---: | ---: | --- | --- |"
    echo "| rcfs lazy (zstd:chunked as skopeo pushed it) | $tl | $(ratio "$tl" "$tu") | $bl | ≤ 0.2x full pull | $(awk -v r="$(ratio "$tl" "$tu")" 'BEGIN{print (r <= 0.2) ? "ok" : "MISS"}') |"
    echo "| rcfs lazy (\`rcfs convert --trace\` of the same image) | $tt | $(ratio "$tt" "$tu") | $bt | ≤ 0.2x full pull | $(awk -v r="$(ratio "$tt" "$tu")" 'BEGIN{print (r <= 0.2) ? "ok" : "MISS"}') |"
    echo "| rcfs pull --full (gzip) | $tf | $(ratio "$tf" "$tu") | $bf | | |"
    echo "| skopeo copy + umoci unpack | $tu | 1 | $bu | | |"
    echo
    echo "| measure | value | target | |"
    echo "| --- | ---: | --- | --- |"
    echo "| files the start opened | $nf | | |"
    echo "| bytes of those files | $rd | | |"
    echo "| bytes fetched / bytes read (lazy) | $(ratio "$bl" "$rd") | ≤ 3x | $(awk -v r="$(ratio "$bl" "$rd")" 'BEGIN{print (r <= 3) ? "ok" : "MISS"}') |"
    echo "| rcfs server RSS after the start | $((rss / 1024)) MiB | ≤ 64 MiB | $([ "$rss" -le 65536 ] && echo ok || echo MISS) |"
    echo "| first stat-walk, 2 image layers (ms) | $w2 | | |"
    echo "| first stat-walk, 64 image layers (ms) | $w64 | | |"
    echo "| 64 / 2 | $(ratio "$w64" "$w2") | ≤ 1.3x | $(awk -v r="$(ratio "$w64" "$w2")" 'BEGIN{print (r <= 1.3) ? "ok" : "MISS"}') |"
    echo
    echo "<details><summary>samples</summary>"
    echo
    for k in lazy traced full umoci; do
        echo "- $k: $(for i in $(seq 1 "$RUNS"); do echo -n "${T[$k,$i]} ms / ${B[$k,$i]} B; "; done)"
    done
    echo "- walk 2 layers: $(for i in $(seq 1 "$RUNS"); do echo -n "${W[two,$i]} "; done); 64 layers: $(for i in $(seq 1 "$RUNS"); do echo -n "${W[many,$i]} "; done)"
    echo "- server RSS (KiB): ${RSS[*]}"
    echo
    echo "</details>"
} | tee "$OUT"
