# Pieces the benchmark scripts share; `source benches/lib.sh` (bash).

# installed PKG: whether the Debian package PKG is installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# need_packages PKG...: installs those of the Debian packages PKG that are
# not installed.
need_packages() {
    local p
    for p in "$@"; do
        installed "$p" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
    done
}

# need_podman: with PODMAN=1 (the default), installs podman, runc and uidmap
# if missing; sets NO_PODMAN to why podman is left out ("" when it is not).
need_podman() {
    local p
    NO_PODMAN=
    if [ "${PODMAN:-1}" = 1 ]; then
        for p in podman runc uidmap; do
            installed "$p" || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null 2>&1 \
                || NO_PODMAN="apt-get install $p failed"
        done
    else
        NO_PODMAN="PODMAN=0"
    fi
}

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# mk_layout DIR LAYERDIR...: an OCI image layout at DIR whose layers are
# plain tars of the LAYERDIRs (bottom first), tagged v1, Cmd busybox true.
mk_layout() {
    local d=$1; shift; mkdir -p "$d/blobs/sha256"; local layers= diffs=
    for l in "$@"; do
        tar --sort=name --numeric-owner --owner=0 --group=0 -cf "$d/t" -C "$l" .
        local s; s=$(sha256sum "$d/t" | cut -d' ' -f1); local n; n=$(stat -c %s "$d/t"); mv "$d/t" "$d/blobs/sha256/$s"
        layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$s\",\"size\":$n}"
        diffs+="${diffs:+,}\"sha256:$s\""
    done
    printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/busybox","true"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$(dpkg --print-architecture)" "$diffs" > "$d/c"
    local cs; cs=$(sha256sum "$d/c" | cut -d' ' -f1); local cn; cn=$(stat -c %s "$d/c"); mv "$d/c" "$d/blobs/sha256/$cs"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$cs" "$cn" "$layers" > "$d/m"
    local ms; ms=$(sha256sum "$d/m" | cut -d' ' -f1); local mn; mn=$(stat -c %s "$d/m"); mv "$d/m" "$d/blobs/sha256/$ms"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$ms" "$mn" > "$d/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$d/oci-layout"
}

# copy_trees DEST SRC...: copies each existing dir SRC (globs expanded by
# the caller) to DEST/SRC; sets COPIED to the ones copied, and fails when
# none exists.
copy_trees() {
    local dest=$1 d; shift
    COPIED=
    for d in "$@"; do
        [ -d "$d" ] || continue
        mkdir -p "$dest$(dirname "$d")"
        cp -a "$d" "$dest$d"
        COPIED+="${COPIED:+ }$d"
    done
    [ -n "$COPIED" ] || { echo "none of $* exists" >&2; return 1; }
}

# cleanup: at exit, removes the work dir W and what lives in it: the
# registry REG, podman's pause process, anything still mounted there (a run
# that was interrupted).
cleanup() {
    # The user namespaces podman's pause process and rcfs's keeper hold.
    for p in "$W/run/libpod/tmp/pause.pid" "$W/run/rcfs/userns.pid"; do
        if [ -f "$p" ]; then kill "$(cat "$p")" 2>/dev/null || true; fi
    done
    [ -z "${REG:-}" ] || kill "$REG" 2>/dev/null || true
    { grep -o " $W/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$W"
}

# start_registry DIR: Debian's docker-registry on a free loopback port,
# storing under DIR/registry; sets PORT and REG (its pid, for the caller's
# cleanup) and returns once it accepts connections.
start_registry() {
    PORT=$(free_port)
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$1/registry" "$PORT" > "$1/reg.yml"
    docker-registry serve "$1/reg.yml" >/dev/null 2>&1 & REG=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "the registry on 127.0.0.1:$PORT did not start" >&2; return 1
}

# podman_user USER HOME RUNDIR PORT: rootless podman for USER (PEERS.md):
# subordinate ids (useradd gives them only with SUB_UID_MIN.. in login.defs;
# the range after the highest in use), its config in HOME/.config/containers
# (overlay over fuse-overlayfs, cgroupfs, file events, runc, the registry on
# PORT insecure), its runtime dir RUNDIR.
podman_user() {
    local user=$1 home=$2 run=$3 port=$4 s f o
    s=$(awk -F: '$2+$3 > m {m = $2+$3} END {print (m < 100000) ? 100000 : m}' /etc/subuid /etc/subgid)
    for f in subuid subgid; do
        grep -q "^$user:" "/etc/$f" && continue
        [ "$f" = subuid ] && o=--add-subuids || o=--add-subgids
        usermod "$o" "$s-$((s + 65535))" "$user"
    done
    mkdir -p "$home/.config/containers" "$run"
    chmod 700 "$run"
    printf '[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n' \
        > "$home/.config/containers/storage.conf"
    printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n' \
        > "$home/.config/containers/containers.conf"
    printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" \
        > "$home/.config/containers/registries.conf"
    chown -R "$user:" "$home" "$run"
}

# cpu_busy: percent of CPU time not idle over 0.5 s.
cpu_busy() {
    local a b
    a=$(head -1 /proc/stat); sleep 0.5; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { n = split(a, x); split(b, y); t = 0
        for (i = 2; i <= n; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6]); printf "%d", t ? 100 * (t - idle) / t : 0 }'
}

# wait_idle: before a timed run, waits up to IDLE_WAIT s for the machine to
# use under IDLE_BUSY % CPU; counts in NOISY the runs that started busy.
# Needs log().
NOISY=0
wait_idle() {
    ((IDLE_WAIT > 0)) || return 0
    local start=$SECONDS busy
    while :; do
        busy=$(cpu_busy)
        ((busy < IDLE_BUSY)) && return 0
        if ((SECONDS - start >= IDLE_WAIT)); then
            log "  warning: machine still busy (${busy}% CPU) after ${IDLE_WAIT}s; measuring anyway"
            NOISY=$((NOISY + 1))
            return 0
        fi
        ((SECONDS - start < 1)) && log "  waiting for the machine to be idle (${busy}% CPU busy) ..."
    done
}
