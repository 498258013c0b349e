#!/usr/bin/env bash
# Everyday container operations, rootless, rcfs against podman in the same
# run, both as the same unprivileged user (rcfs-bench) on the same small
# image (busybox and /etc, 2 layers, run.sh's) already in each tool's store:
#   1. warm start of /bin/true with each tool's default network:
#        rcfs run --rm IMAGE /bin/busybox true    (a network namespace of its
#                                                  own, connected by
#                                                  slirp4netns)
#        podman run --rm IMAGE /bin/busybox true  (podman 4.3 rootless:
#                                                  slirp4netns)
#      and, as extra rows, both with the host's network (--net host).
#   2. exec: `rcfs exec b1 /bin/busybox true` against `podman exec ...` into
#      a detached `busybox sleep 1000` container of each.
#   3. detach + first log line: from the start of `run -d --name dN IMAGE sh
#      -c 'echo ready; exec busybox sleep 1000'` until `logs dN` (polled in a
#      tight loop) prints "ready"; the container removed after, untimed.
#   4. published port: a container serves 1 GiB of zeros on port 8080 (busybox
#      `nc -l -p 8080 -e dd if=/dev/zero bs=1M count=1024`: dd writes to the
#      socket itself; `dd | nc -l` would measure nc's small copy buffer, about
#      130 MB/s even on the host), published as 127.0.0.1:HOSTPORT; the host
#      reads it all (python, from connect to EOF), MB/s. rcfs forwards with
#      its own splice forwarder (slirp4netns's network), podman 4.3 with
#      slirp4netns's default port handler, rootlessport
#      (rootlesskit's builtin driver: a host process that copies to a socket
#      in the netns).
#      Reference row: the same server with rcfs --net host (no forwarding: the
#      ceiling of dd and the python reader).
# podman is Debian 12's 4.3 configured by lib.sh's podman_user: runc,
# cgroupfs, overlay over fuse-overlayfs, the registry on loopback insecure.
# Every command is timed by a python monotonic clock (as run.sh's `ms`),
# including the setpriv that drops to rcfs-bench, for both tools alike;
# rcfs and podman runs are interleaved; the tables show medians.
# Run as root after `cargo build --release`:  benches/ops.sh
# Knobs: RUNS=10, PORT_RUNS=5, RCFS=target/release/rcfs,
# OUT=benches/results/ops-DATE.md; IDLE_WAIT=S waits up to S seconds before
# each rcfs/podman pair of runs for the machine to be under IDLE_BUSY=25 %
# busy (default 0: no wait; the results count the pairs that started busy).
# Needs docker-registry skopeo busybox-static podman runc uidmap slirp4netns
# passt fuse-overlayfs (installed if missing).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${RUNS:-10}
PORT_RUNS=${PORT_RUNS:-5}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_BUSY=${IDLE_BUSY:-25}
log() { echo "$*" >&2; }
RCFS=${RCFS:-$PWD/target/release/rcfs}
OUT=${OUT:-$PWD/benches/results/ops-$(date +%Y%m%d-%H%M%S).md}
[ "$(id -u)" = 0 ] || { echo "ops.sh: run as root" >&2; exit 1; }
[ -x "$RCFS" ] || { echo "ops.sh: $RCFS missing: cargo build --release -p rcfs" >&2; exit 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in docker-registry skopeo busybox-static podman runc uidmap slirp4netns passt fuse-overlayfs; do
    installed "$p" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
scripts/setup-fuse
START=$SECONDS BUSY0=$(cpu_busy)
W=$(mktemp -d /var/tmp/rcfs-opsbench.XXXXXX)
chmod 755 "$W"
REG=
as_user() { setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" "$@"; }
R() { as_user "$RCFS" "$@"; }
P() { as_user podman "$@"; }
# At exit: the containers still there (detached ones: rcfs's monitors,
# podman's conmons), then lib.sh's cleanup (keeper, pause process, registry,
# mounts, W).
ops_cleanup() {
    if [ -d "$W/home" ]; then
        local n; n=$(R ps -a 2>/dev/null | awk 'NR > 1 {print $1}' || true)
        [ -z "$n" ] || { R stop -t 0 $n; R rm $n; } >/dev/null 2>&1 || true
        P rm -a -f -t 0 >/dev/null 2>&1 || true
    fi
    cleanup
}
trap ops_cleanup EXIT
# Interrupted: exit (and clean up) once the command under way has ended, not
# while it still writes under $W.
trap 'exit 130' INT TERM
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
# Rootless podman for rcfs-bench (config, store and runtime dir under $W);
# logs in a file (k8s-file: no journald here), as rcfs's.
podman_user rcfs-bench "$W/home" "$W/run" "$PORT"
printf '[containers]\nlog_driver = "k8s-file"\n' >> "$W/home/.config/containers/containers.conf"
R pull -q --tls-verify=false "$IMAGE"
P pull -q "$IMAGE" >/dev/null
# The timers. ms CMD...: the command's wall time in ms (its stderr shown if
# it fails). ready LOGS_CMD RUN_CMD...: ms from the start of RUN_CMD (run -d)
# until LOGS_CMD (one shell-quoted string) prints "ready". recv PORT BYTES:
# connects to 127.0.0.1:PORT until data comes (the server may not listen
# yet), reads to EOF, checks BYTES came, prints MB/s (10^6 bytes) from
# connect to EOF.
cat > "$W/t.py" <<'EOF'
import shlex, socket, subprocess as sp, sys, time
def run(cmd):
    r = sp.run(cmd, stdout=sp.DEVNULL, stderr=sp.PIPE)
    if r.returncode: sys.exit("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.decode()[-500:]))
m, a = sys.argv[1], sys.argv[2:]
t = time.monotonic()
if m == "ms":
    run(a)
elif m == "ready":
    logs = shlex.split(a[0]); run(a[1:])
    while b"ready" not in sp.run(logs, stdout=sp.PIPE, stderr=sp.DEVNULL).stdout:
        if time.monotonic() - t > 30: sys.exit("no 'ready' from %s in 30 s" % a[0])
elif m == "recv":
    buf, n = bytearray(1 << 20), 0
    while not n:
        if time.monotonic() - t > 60: sys.exit("no data on port %s in 60 s" % a[0])
        try: s = socket.create_connection(("127.0.0.1", int(a[0])))
        except OSError: time.sleep(0.01); continue
        c, e = time.monotonic(), "EOF"
        try:
            while k := s.recv_into(buf): n += k
        except OSError as x: e = repr(x)
        s.close()
        if not n: time.sleep(0.01)
    if n != int(a[1]): sys.exit("port %s: %d bytes, not %s, then %s" % (a[0], n, a[1], e))
    print("%.0f" % (n / 1e6 / (time.monotonic() - c))); sys.exit()
print("%.1f" % ((time.monotonic() - t) * 1000))
EOF
ms() { python3 "$W/t.py" ms "$@"; }
U=(setpriv --reuid=rcfs-bench --regid=rcfs-bench --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run")
declare -A T
# One untimed run of each first: binaries in the page cache, the user
# namespace rcfs's keeper holds (podman's: its pause process) made.
R run --rm "$IMAGE" /bin/busybox true; R run --rm --net host "$IMAGE" /bin/busybox true
P run --rm "$IMAGE" /bin/busybox true; P run --rm --net=host "$IMAGE" /bin/busybox true
echo "ops.sh: 1. warm start ($RUNS runs)" >&2
for i in $(seq 1 "$RUNS"); do
    wait_idle
    T[start-rcfs,$i]=$(ms "${U[@]}" "$RCFS" run --rm "$IMAGE" /bin/busybox true)
    T[start-podman,$i]=$(ms "${U[@]}" podman run --rm "$IMAGE" /bin/busybox true)
    T[host-rcfs,$i]=$(ms "${U[@]}" "$RCFS" run --rm --net host "$IMAGE" /bin/busybox true)
    T[host-podman,$i]=$(ms "${U[@]}" podman run --rm --net=host "$IMAGE" /bin/busybox true)
done
echo "ops.sh: 2. exec" >&2
R run -d --name b1 "$IMAGE" /bin/busybox sleep 1000 >/dev/null
P run -d --name b1 "$IMAGE" /bin/busybox sleep 1000 >/dev/null
R exec b1 /bin/busybox true; P exec b1 /bin/busybox true
PNET=$(P inspect --format '{{.HostConfig.NetworkMode}}' b1)
for i in $(seq 1 "$RUNS"); do
    wait_idle
    T[exec-rcfs,$i]=$(ms "${U[@]}" "$RCFS" exec b1 /bin/busybox true)
    T[exec-podman,$i]=$(ms "${U[@]}" podman exec b1 /bin/busybox true)
done
R stop -t 0 b1 >/dev/null 2>&1; R rm b1 >/dev/null; P rm -f -t 0 b1 >/dev/null
echo "ops.sh: 3. run -d until the first log line" >&2
SH='echo ready; exec /bin/busybox sleep 1000'
for i in $(seq 1 "$RUNS"); do
    wait_idle
    T[logs-rcfs,$i]=$(python3 "$W/t.py" ready "${U[*]} $RCFS logs d$i" "${U[@]}" "$RCFS" run -d --name "d$i" "$IMAGE" /bin/busybox sh -c "$SH")
    T[logs-podman,$i]=$(python3 "$W/t.py" ready "${U[*]} podman logs d$i" "${U[@]}" podman run -d --name "d$i" "$IMAGE" /bin/busybox sh -c "$SH")
    R stop -t 0 "d$i" >/dev/null 2>&1; R rm "d$i" >/dev/null; P rm -f -t 0 "d$i" >/dev/null
done
echo "ops.sh: 4. 1 GiB from a published port ($PORT_RUNS runs)" >&2
# port TOOL NAME OPTS...: MB/s of 1 GiB read from the container's port 8080
# published as a free host port (with --net host in OPTS: that port itself,
# no forwarding); the container removed after, untimed.
port() {
    local tool=$1 name=$2 hp cp=8080; shift 2; hp=$(free_port)
    local pub=(-p "127.0.0.1:$hp:8080"); [[ "$*" == *host* ]] && { pub=(); cp=$hp; }
    # The container lives on after serving: its end would tear down the
    # forwarder, maybe before the last bytes are through (rcfs stops its forwarder).
    local sh="/bin/busybox nc -l -p $cp -e /bin/busybox dd if=/dev/zero bs=1M count=1024; exec /bin/busybox sleep 1000"
    if [ "$tool" = rcfs ]; then R run -d --name "$name" "${pub[@]}" "$@" "$IMAGE" /bin/busybox sh -c "$sh" >/dev/null
    else P run -d --name "$name" "${pub[@]}" "$@" "$IMAGE" /bin/busybox sh -c "$sh" >/dev/null; fi
    # What forwards podman's port (rootlessport is slirp4netns's default).
    [ "$tool" = rcfs ] || { pgrep -u rcfs-bench -x rootlessport >/dev/null && echo rootlessport || echo "not rootlessport"; } > "$W/ph"
    python3 "$W/t.py" recv "$hp" $((1 << 30)) || { echo "ops.sh: port $tool $name ${*:-} failed" >&2; return 1; }
    if [ "$tool" = rcfs ]; then R stop -t 0 "$name" >/dev/null 2>&1; R rm "$name" >/dev/null; else P rm -f -t 0 "$name" >/dev/null; fi
}
for i in $(seq 1 "$PORT_RUNS"); do
    wait_idle
    T[port-rcfs,$i]=$(port rcfs "p$i")
    T[port-podman,$i]=$(port podman "p$i")
    T[port-host,$i]=$(port rcfs "h$i" --net host)
done
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
n_of() { [[ $1 == port-* ]] && echo "$PORT_RUNS" || echo "$RUNS"; }
med() { for i in $(seq 1 "$(n_of "$1")"); do echo "${T[$1,$i]}"; done | median; }
# row LABEL KEY TARGET CHECK: rcfs, podman, ratio rcfs/podman, target met?
# (CHECK: an awk condition on r, the rcfs median, and q, the exact ratio).
row() {
    local r p q ok=; r=$(med "$2-rcfs"); p=$(med "$2-podman"); q=$(awk -v r="$r" -v p="$p" 'BEGIN {printf "%.2f", r / p}')
    [ -z "$4" ] || ok=$(awk -v r="$r" -v p="$p" "BEGIN {q = r / p; print ($4) ? \"ok\" : \"MISS\"}")
    echo "| $1 | $r | $p | ${q}x | $3 | $ok |"
}
mkdir -p "$(dirname "$OUT")"
{
    echo "# Container operations, rootless: rcfs against podman"
    echo
    echo "rcfs $(git rev-parse --short HEAD) ($RCFS), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, RUNS=$RUNS, PORT_RUNS=$PORT_RUNS;"
    echo "both as the unprivileged user rcfs-bench; medians."
    echo
    echo "| operation | rcfs | podman | rcfs/podman | target | |"
    echo "| --- | ---: | ---: | ---: | --- | --- |"
    row "run --rm true, default network (both: slirp4netns), ms" start "≤ 0.2x and < 50 ms" "q <= 0.2 && r < 50"
    row "run --rm true, --net host, ms" host "" ""
    row "exec true into a running container, ms" exec "≤ 0.2x" "q <= 0.2"
    row "run -d until logs shows its first line, ms" logs "≤ 0.2x" "q <= 0.2"
    row "1 GiB from a published port (rcfs: slirp4netns + its forwarder; podman: slirp4netns + rootlessport), MB/s" port "≥ 1.0x" "q >= 1.0"
    echo "| (reference) the same server with rcfs --net host, no forwarding, MB/s | $(med port-host) | | | | |"
    echo
    echo "podman: $(podman --version), $(runc --version | head -n 1), $(slirp4netns --version | head -n 1);" \
        "its default network as inspected: $PNET; its published port forwarded by: $(cat "$W/ph")."
    echo "rcfs's network: slirp4netns $(dpkg-query -W -f='${Version}' slirp4netns). Total time of the script: $((SECONDS - START)) s."
    echo "CPU busy at the start: $BUSY0 %; pairs of runs that started over $IDLE_BUSY % busy (IDLE_WAIT=$IDLE_WAIT s): $( ((IDLE_WAIT > 0)) && echo "$NOISY" || echo "not checked")."
    echo
    for k in start-rcfs start-podman host-rcfs host-podman exec-rcfs exec-podman logs-rcfs logs-podman port-rcfs port-podman port-host; do
        echo -n "- $k:"; for i in $(seq 1 "$(n_of "$k")"); do echo -n " ${T[$k,$i]}"; done; echo
    done
} | tee "$OUT"
