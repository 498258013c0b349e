#!/usr/bin/env bash
# Start cost against image size: what a mount, a first deep lookup and a
# warm container start cost as an image grows from 1,000 to 300,000 entries,
# rootless, as one unprivileged user (rcfs-scale). Compared in the same run,
# over the same generated images:
#   rcfs mount IMAGE MNT            from the start of the command until a
#                                    stat of MNT's root answers (it returns
#                                    once the background server has mounted)
#   first stat of the deepest path  a file 9 levels down, on a fresh mount
#                                    (new server, nothing looked up yet)
#   rcfs run --rm --net none IMAGE /bin/busybox true   (warm: image in the
#                                    store, keeper running, one untimed run)
#   server memory                   VmRSS/VmHWM of the `rcfs mount` server
#                                    after the deep stat, and of the `rcfs
#                                    run` process (it serves the container's
#                                    union from its own threads, see
#                                    cli/src/run.rs) while `busybox sleep 2`
#                                    runs in the container
#   fuse-overlayfs over the image's layers as plain dirs (lowerdir only):
#                                    mount to first stat, deep stat, its RSS;
#                                    and fuse-overlayfs (upper/work) + bwrap
#                                    --unshare-all + busybox true +
#                                    fusermount3 -u, as run.sh's fovl_bwrap
#   podman run --rm --net=host IMAGE /bin/busybox true   (rootless, podman 4
#                                    with runc and overlay over
#                                    fuse-overlayfs, lib.sh's podman_user;
#                                    left out, with the reason printed, when
#                                    /var/tmp lacks room for its copy)
# Every timed command runs as rcfs-scale under a python monotonic clock
# started in a process of that user (no setpriv in the times); medians of
# RUNS, with the targets (a mount ≤ 5 ms and a warm run ≤ 25 ms at every
# size, each within 1.2x of its value at the smallest size; server RSS ≤
# 16 MiB) checked in the table.
#
# The images (generated, seeded: the same for a size on every run): about
# SIZE entries, dirs ~8% (a /usr-like tree, depth up to 8, a few dirs with
# thousands of entries: usr/share/doc's package dirs, usr/lib/x86_64-linux-gnu,
# heavy-tailed others), symlinks 3%, a handful of hard links, files of 0-16
# KiB (mean ~3.5 KiB, each unique: a line naming it, then bytes of a seeded
# random pool), 3 large files (2, 4, 8 MiB), /bin/busybox (the host's
# busybox-static), /etc, /proc, /dev, /sys, /tmp. Three layers: a base with
# ~87% of the files, a second adding ~12% (into the base's dirs and dirs of
# its own, the deep file among them) with one whiteout of a base file, a
# third with /etc/hostname and ~1% of the files. Plain tar layers in an OCI
# layout (lib.sh's mk_layout), pushed with skopeo to Debian's
# docker-registry on loopback; `rcfs pull --full` indexes them into the
# user's store; podman pulls them into its own.
#
# Run as root after `cargo build --release -p rcfs`:  sudo benches/scale.sh
# Knobs:
#   RUNS=7                       repetitions per size (medians)
#   SIZES="1000 10000 100000 300000"   entries per image; ratios are to the
#                                first (smallest) size
#   RCFS=target/release/rcfs     (copied to the work dir at the start, so a
#                                rebuild meanwhile does not change it)
#   PODMAN=1                     0: leave podman out
#   KEEP=0                       1: keep the generated images (layer dirs and
#                                OCI layout) in CACHE and reuse them on later
#                                runs, keyed by size and generator version
#   CACHE=/var/tmp/rcfs-scale-cache
#   IDLE_WAIT=0 IDLE_BUSY=30     before each repetition, wait up to IDLE_WAIT
#                                s for the machine to be under IDLE_BUSY %
#                                busy; how busy it was (over 0.5 s) is listed
#                                with the samples either way
#   OUT=benches/results/scale-DATE.md
# Needs fuse-overlayfs fuse3 bubblewrap docker-registry skopeo busybox-static
# python3, and for podman: podman runc uidmap (installed if missing). Disk:
# the 300k image is ~1.1 GB unpacked; with its tar layers, the registry's
# copy, rcfs's store and podman's store, ~6 GB at the peak in /var/tmp.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source benches/lib.sh
RUNS=${RUNS:-7}
SIZES=${SIZES:-"1000 10000 100000 300000"}
RCFS=${RCFS:-$PWD/target/release/rcfs}
PODMAN=${PODMAN:-1}
KEEP=${KEEP:-0}
CACHE=${CACHE:-/var/tmp/rcfs-scale-cache}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_BUSY=${IDLE_BUSY:-30}
OUT=${OUT:-$PWD/benches/results/scale-$(date +%Y%m%d-%H%M%S).md}
# Bump when the generator changes: cached images of another version are
# not reused.
GEN_VERSION=2
BUSER=rcfs-scale
log() { printf '%s\n' "$*" >&2; }
die() { log "scale.sh: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$RCFS" ] || die "$RCFS missing: cargo build --release -p rcfs"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
read -r -a SZ <<<"$SIZES"
[ "${#SZ[@]}" -gt 0 ] || die "SIZES is empty"
for n in "${SZ[@]}"; do [[ $n =~ ^[0-9]+$ ]] && ((n >= 500)) || die "SIZES: $n is not a number of entries ≥ 500"; done
mapfile -t SZ < <(printf '%s\n' "${SZ[@]}" | sort -n -u)
BASE=${SZ[0]}
need_packages fuse3 fuse-overlayfs bubblewrap docker-registry skopeo busybox-static python3
need_podman
scripts/setup-fuse
START=$SECONDS
W=$(mktemp -d /var/tmp/rcfs-scale.XXXXXX)
chmod 755 "$W"
REG=
BG=
# At exit: a container run still under way (the RSS probe's), the user's
# mounts, then lib.sh's cleanup (keeper, pause process, registry, mounts, W).
scale_cleanup() {
    [ -z "$BG" ] || kill "$BG" 2>/dev/null || true
    if [ -d "$W/m" ]; then
        for m in "$W"/m/*; do mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }; done
    fi
    if [ -z "$NO_PODMAN" ] && [ -d "$W/home/.config/containers" ]; then as_podman rm -a -f -t 0 >/dev/null 2>&1 || true; fi
    cleanup
}
trap scale_cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$W/bin" "$W/py" "$W/m" "$W/home" "$W/run"
# The binary as it is now: other builds may replace target/release/rcfs
# while this runs.
install -m 755 "$RCFS" "$W/bin/rcfs"
RCFS_REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[ -z "$(GIT_OPTIONAL_LOCKS=0 git status --porcelain -uno 2>/dev/null || true)" ] || RCFS_REV+="+changes"
R=$W/bin/rcfs

# ---------------------------------------------------------------- helpers --
# gen.py N OUT BUSYBOX: the layer dirs OUT/l0 (bottom) OUT/l1 OUT/l2 and
# OUT/meta.json (counts, the deep path, the whiteout).
cat >"$W/py/gen.py" <<'EOF'
import os, random, sys, json, shutil, time
N, out, busybox = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0 = time.monotonic()
rnd = random.Random(1000003 * N + 17)
POOL = rnd.randbytes(32 << 20)
MAXD = 8
L = [os.path.join(out, 'l%d' % k) for k in range(3)]
for d in L:
    os.makedirs(d)
letters = 'abcdefghijklmnopqrstuvwxyz'
alnum = letters + '0123456789' + '_-'
EXT = ['', '', '', '.so', '.so.1', '.py', '.pyc', '.h', '.txt', '.gz', '.conf', '.json', '.html', '.mo',
       '.pl', '.rb', '.png', '.svg', '.1.gz', '.js']
names = {}  # dir -> names in it, all layers
def newname(parent, ext=''):
    s = names.setdefault(parent, set())
    while True:
        n = rnd.choice(letters) + ''.join(rnd.choice(alnum) for _ in range(rnd.randint(2, 14))) + ext
        if n not in s:
            s.add(n)
            return n
dirs, depth_of, layer_of = [], {}, {}
def adddir(path, layer):
    dirs.append(path); depth_of[path] = path.count('/') + 1; layer_of[path] = layer
    names.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
for p in ['bin', 'etc', 'proc', 'dev', 'sys', 'tmp', 'usr', 'usr/bin', 'usr/lib', 'usr/lib/x86_64-linux-gnu',
          'usr/share', 'usr/share/doc', 'usr/include']:
    adddir(p, 0)
# A chain to the deepest level: the deep file's dirs, in the base layer.
chain = ['usr/lib/python3', 'usr/lib/python3/dist-packages', 'usr/lib/python3/dist-packages/scalepkg',
         'usr/lib/python3/dist-packages/scalepkg/core', 'usr/lib/python3/dist-packages/scalepkg/core/impl',
         'usr/lib/python3/dist-packages/scalepkg/core/impl/backends']
for p in chain:
    adddir(p, 0)
DEEPDIR = chain[-1]
assert depth_of[DEEPDIR] == MAXD
NFIXED = 6  # busybox, sh, passwd, group, hosts, hostname
ND = max(len(dirs), round(0.08 * N))
NS = round(0.03 * N)
NH = min(8, max(1, N // 200))
NB = 3
NF = N - ND - NS - NH - NB - NFIXED - 1  # 1: the whiteout
assert NF > 10, 'too few entries'
# New dirs: a depth (levels 2..8, /usr-like), a parent at the level above;
# 12% go into usr/share/doc (thousands of package dirs side by side).
DW = {2: 0.2, 3: 14, 4: 25, 5: 25, 6: 17, 7: 11, 8: 7.8}
bydepth = {}
for p in dirs:
    if p.split('/')[0] == 'usr':
        bydepth.setdefault(depth_of[p], []).append(p)
lvls = list(DW); lw = [DW[k] for k in lvls]
for i in range(ND - len(dirs)):
    layer = 0 if rnd.random() < 0.93 else (1 if rnd.random() < 0.85 else 2)
    if rnd.random() < 0.12:
        parent = 'usr/share/doc'
    else:
        while True:
            cand = bydepth.get(rnd.choices(lvls, lw)[0] - 1)
            if cand:
                break
        parent = rnd.choice(cand)
    layer = max(layer, layer_of[parent])
    p = parent + '/' + newname(parent)
    adddir(p, layer)
    bydepth.setdefault(depth_of[p], []).append(p)
# Files into dirs by heavy-tailed weights, a few fixed big dirs.
w = [rnd.paretovariate(1.15) for _ in dirs]
# No drawn dir above 1% of the files (an unlucky draw of a tail this heavy
# could put half the image in one dir).
cap = 0.01 * sum(w)
w = [min(x, cap) for x in w]
for p in ('bin', 'etc', 'proc', 'dev', 'sys', 'tmp', 'usr', 'usr/share', 'usr/share/doc'):
    w[dirs.index(p)] = 0
# The deep path's dirs: few files of their own (their sizes are the tree's
# doing, not the draw's), the same at every size.
for p in chain:
    w[dirs.index(p)] = 1.0
alloc = []
for p, f in (('usr/bin', 0.02), ('usr/lib/x86_64-linux-gnu', 0.03), ('usr/include', 0.01)):
    alloc += [p] * int(f * NF)
alloc += rnd.choices(dirs, weights=w, k=NF - 1 - len(alloc))
def fsize():
    if rnd.random() < 0.05:
        return 0
    return min(16384, int(rnd.expovariate(1 / 3500.0)) + 1)
files = []  # (path, size, mode, layer)
for p in alloc:
    x = rnd.random()
    layer = max(0 if x < 0.87 else (1 if x < 0.99 else 2), layer_of[p])
    ext = '' if p.endswith('bin') else rnd.choice(EXT)
    mode = 0o755 if p.endswith('bin') or ext.startswith('.so') else 0o644
    files.append((p + '/' + newname(p, ext), fsize(), mode, layer))
DEEP = DEEPDIR + '/' + newname(DEEPDIR, '.py')
files.append((DEEP, 2345, 0o644, 1))  # second layer, in base-layer dirs
big = [('usr/lib/x86_64-linux-gnu/libscale-big%d.so' % i, s << 20, 0o755, 0) for i, s in enumerate((2, 4, 8))]
for p in dirs:
    os.makedirs(os.path.join(L[layer_of[p]], p), exist_ok=True)
made, total = set(), 0
for i, (p, size, mode, layer) in enumerate(files + big):
    d = os.path.dirname(p)
    if (layer, d) not in made:
        os.makedirs(os.path.join(L[layer], d), exist_ok=True)
        made.add((layer, d))
    head = ('%s %d\n' % (p, i)).encode()
    if size <= len(head):
        data = head[:size]
    else:
        off = rnd.randrange(0, len(POOL) - size)
        data = head + POOL[off:off + size - len(head)]
    fd = os.open(os.path.join(L[layer], p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    os.close(fd)
    total += size
shutil.copyfile(busybox, os.path.join(L[0], 'bin/busybox'))
os.chmod(os.path.join(L[0], 'bin/busybox'), 0o755)
os.symlink('busybox', os.path.join(L[0], 'bin/sh'))
for name, text in (('passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n'),
                   ('group', 'root:x:0:\nnogroup:x:65534:\n'), ('hosts', '127.0.0.1 localhost\n')):
    with open(os.path.join(L[0], 'etc', name), 'w') as f:
        f.write(text)
os.makedirs(os.path.join(L[2], 'etc'), exist_ok=True)
with open(os.path.join(L[2], 'etc/hostname'), 'w') as f:
    f.write('scale\n')
# Symlinks in the base layer to base files: 70% relative, 30% absolute.
base_files = [f[0] for f in files if f[3] == 0]
base_dirs = [p for p in dirs if layer_of[p] == 0 and p.startswith('usr')]
for _ in range(NS):
    tgt = rnd.choice(base_files)
    d = rnd.choice(base_dirs) if rnd.random() < 0.5 else os.path.dirname(tgt)
    link = d + '/' + newname(d, rnd.choice(EXT))
    os.symlink('/' + tgt if rnd.random() < 0.3 else os.path.relpath(tgt, d), os.path.join(L[0], link))
# Hard links in the base layer (to base files, from other dirs).
used = set()
for _ in range(NH):
    src = rnd.choice(base_files)
    d = rnd.choice(('usr/bin', 'usr/lib', 'usr/share'))
    os.link(os.path.join(L[0], src), os.path.join(L[0], d + '/' + newname(d)))
    used.add(src)
# The second layer deletes one base file (an OCI whiteout, which
# fuse-overlayfs reads too).
while True:
    gone = rnd.choice(base_files)
    if gone not in used and gone != DEEP:
        break
os.makedirs(os.path.join(L[1], os.path.dirname(gone)), exist_ok=True)
open(os.path.join(L[1], os.path.dirname(gone), '.wh.' + os.path.basename(gone)), 'w').close()
fan = {}
for p in [f[0] for f in files] + dirs:
    d = os.path.dirname(p); fan[d] = fan.get(d, 0) + 1
path_fan = [fan.get(os.path.dirname(DEEP).rsplit('/', k)[0] if k else os.path.dirname(DEEP), 0) for k in range(MAXD - 1, -1, -1)]
path_fan = [fan.get('', 0)] + path_fan  # the root, then each dir down to the deep file's
meta = dict(entries=N, dirs=len(dirs), files=len(files) + len(big) + NFIXED - 2, symlinks=NS + 1, hardlinks=NH,
            whiteouts=1, deep='/' + DEEP, whiteout='/' + gone, largest_dir=max(fan.values()),
            largest_dir_name='/' + max(fan, key=fan.get), dirs_over_1000=sum(1 for v in fan.values() if v >= 1000),
            file_bytes=total + os.path.getsize(busybox), deep_path_fan=path_fan, gen_s=round(time.monotonic() - t0, 1))
with open(os.path.join(out, 'meta.json'), 'w') as f:
    json.dump(meta, f)
EOF
# mountprobe.py KIND MNT DEEP MOUNTCMD...: as the user, times MOUNTCMD until
# a stat of MNT's root answers, then a stat of MNT/DEEP; reads the server's
# VmRSS/VmHWM/RssAnon/RssFile (the process whose arguments name MNT),
# unmounts (rcfs umount, or fusermount3 -u) and waits for the server to
# exit. Prints "mount_ms deep_ms rss hwm anon file" (KiB).
cat >"$W/py/mountprobe.py" <<'EOF'
import os, sys, time, subprocess
kind, mnt, deep, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def status(pid):
    v = {}
    with open('/proc/%d/status' % pid) as f:
        for l in f:
            k, _, rest = l.partition(':')
            v[k] = rest.split()[0] if rest.split() else ''
    return v
def server():
    me = os.getpid()
    for d in os.listdir('/proc'):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if mnt.encode() in args:
            return int(d)
    return None
pdev = os.stat(os.path.dirname(mnt)).st_dev
t0 = time.monotonic_ns()
r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
st = os.stat(mnt)
t1 = time.monotonic_ns()
if r.returncode != 0 or st.st_dev == pdev:
    sys.exit('%s: mount failed (%d): %s' % (kind, r.returncode, r.stderr.decode(errors='replace')))
t2 = time.monotonic_ns()
os.stat(mnt + deep)
t3 = time.monotonic_ns()
pid = server()
s = status(pid) if pid else {}
umount = [cmd[0], 'umount', mnt] if kind == 'rcfs' else ['fusermount3', '-u', mnt]
subprocess.run(umount, check=True, stdout=subprocess.DEVNULL)
for _ in range(2000):
    if not pid or not os.path.exists('/proc/%d' % pid):
        break
    time.sleep(0.005)
print('%.2f %.3f %s %s %s %s' % ((t1 - t0) / 1e6, (t3 - t2) / 1e6, s.get('VmRSS', '-'), s.get('VmHWM', '-'),
                                  s.get('RssAnon', '-'), s.get('RssFile', '-')))
EOF
# timer.py CMD [';;' CMD...]: runs the commands one after the other, prints
# the ms they took together (on failure: their stderr, exit 1).
cat >"$W/py/timer.py" <<'EOF'
import sys, time, subprocess
cmds, cur = [], []
for a in sys.argv[1:]:
    if a == ';;':
        cmds.append(cur); cur = []
    else:
        cur.append(a)
cmds.append(cur)
t0 = time.monotonic_ns()
for c in cmds:
    r = subprocess.run(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit('%s failed (%d): %s' % (' '.join(c), r.returncode, r.stderr.decode(errors='replace')[-2000:]))
print('%.1f' % ((time.monotonic_ns() - t0) / 1e6))
EOF
# runprobe.py PID: (root) waits for a descendant of PID running `busybox
# sleep`, then prints "VmRSS VmHWM Threads RssAnon RssFile" of the process that serves the
# container's union: of PID and its descendants, the one holding /dev/fuse
# fds (`rcfs run` itself: cli/src/run.rs serves from its threads).
cat >"$W/py/runprobe.py" <<'EOF'
import os, sys, time
top = int(sys.argv[1])
def tree():
    kids = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/stat' % d) as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [top], [top]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c); todo.append(c)
    return out
def args(p):
    try:
        with open('/proc/%d/cmdline' % p, 'rb') as f:
            return f.read().split(b'\0')
    except OSError:
        return []
def fuse_fds(p):
    try:
        return sum(1 for fd in os.listdir('/proc/%d/fd' % p) if os.readlink('/proc/%d/fd/%s' % (p, fd)) == '/dev/fuse')
    except OSError:
        return 0
for _ in range(1000):
    if any(args(p)[:2] == [b'/bin/busybox', b'sleep'] for p in tree()):
        break
    time.sleep(0.01)
else:
    sys.exit('runprobe: no busybox sleep under %d' % top)
time.sleep(0.3)
servers = [p for p in tree() if fuse_fds(p) > 0]
if len(servers) != 1:
    sys.exit('runprobe: %d processes under %d hold /dev/fuse, expected 1' % (len(servers), top))
v = {}
with open('/proc/%d/status' % servers[0]) as f:
    for l in f:
        k, _, rest = l.partition(':')
        v[k] = rest.split()[0] if rest.split() else ''
print(v['VmRSS'], v['VmHWM'], v['Threads'], v['RssAnon'], v['RssFile'])
EOF
chmod 755 "$W/py"; chmod 644 "$W"/py/*

useradd -M -d "$W/home" "$BUSER" 2>/dev/null || true
chmod 700 "$W/run"; chown "$BUSER:" "$W/home" "$W/run" "$W/m"
chmod 666 /dev/fuse
as_user() { setpriv --reuid="$BUSER" --regid="$BUSER" --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" "$@"; }
as_podman() { as_user podman "$@"; }
T() { as_user python3 "$W/py/timer.py" "$@"; }
start_registry "$W"
[ -n "$NO_PODMAN" ] || podman_user "$BUSER" "$W/home" "$W/run" "$PORT"
mkdir -p "$W/m"; chown "$BUSER:" "$W/m"

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (!NR) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A S # S[size,metric]: samples, space-separated
declare -A I # I[size,what]: one value per size
med() { median <<<"${S[$1,$2]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
secs() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 1000 }'; }

for n in "${SZ[@]}"; do
    log "== $n entries"
    # The image: from the cache (KEEP=1), or generated.
    if [ "$KEEP" = 1 ]; then
        img=$CACHE/v$GEN_VERSION-$n
    else
        img=$W/img-$n
    fi
    if [ -f "$img/.complete" ]; then
        log "  image from the cache: $img"
        I[$n,gen]=cached
    else
        rm -rf "$img"; mkdir -p "$img"; chmod 755 "$img"
        [ "$KEEP" != 1 ] || chmod 755 "$CACHE"
        t0=$(date +%s%N)
        python3 "$W/py/gen.py" "$n" "$img" /bin/busybox
        mk_layout "$img/layout" "$img/l0" "$img/l1" "$img/l2"
        I[$n,gen]=$(secs $((($(date +%s%N) - t0) / 1000000)))
        touch "$img/.complete"
        log "  generated in ${I[$n,gen]} s"
    fi
    I[$n,meta]=$(cat "$img/meta.json")
    meta() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "${I[$n,meta]}" "$1"; }
    DEEP=$(meta deep)
    I[$n,layers]=$(du -sb "$img/layout/blobs" | awk '{printf "%.0f", $1 / 1e6}')
    I[$n,unpacked]=$(du -sb "$img/l0" "$img/l1" "$img/l2" | awk '{s += $1} END {print s}')
    LOWER=$img/l2:$img/l1:$img/l0
    IMAGE=127.0.0.1:$PORT/scale-$n:v1
    t0=$(date +%s%N)
    skopeo copy -q --dest-tls-verify=false "oci:$img/layout:v1" "docker://$IMAGE"
    I[$n,push]=$(secs $((($(date +%s%N) - t0) / 1000000)))
    I[$n,pull]=$(secs "$(T "$R" pull --full -q --tls-verify=false "$IMAGE")")
    I[$n,store]=$(du -sb "$W/home/.local/share/rcfs" | awk '{printf "%.0f", $1 / 1e6}')
    log "  pushed in ${I[$n,push]} s, rcfs pull ${I[$n,pull]} s (store ${I[$n,store]} MB)"
    # podman: only where its copy fits (twice the unpacked image and 2 GiB
    # to spare in /var/tmp, where its store is).
    I[$n,nopodman]=$NO_PODMAN
    if [ -z "$NO_PODMAN" ]; then
        avail=$(df --output=avail -B1 "$W" | tail -n 1)
        need=$((2 * I[$n,unpacked] + (2 << 30)))
        if ((avail < need)); then
            I[$n,nopodman]="needs $((need >> 20)) MiB free in /var/tmp, has $((avail >> 20)) MiB"
        elif ! p=$(T podman pull -q "$IMAGE" 2>&1); then
            I[$n,nopodman]="podman pull failed: $(echo "$p" | tail -n 3 | tr '\n' ' ')"
        else
            I[$n,ppull]=$(secs "$p")
            log "  podman pull ${I[$n,ppull]} s"
            if ! e=$(T podman run --rm --net=host "$IMAGE" /bin/busybox true 2>&1); then
                I[$n,nopodman]="podman run failed: $(echo "$e" | tail -n 3 | tr '\n' ' ')"
            fi
        fi
        [ -z "${I[$n,nopodman]}" ] || log "  podman left out: ${I[$n,nopodman]}"
    fi
    # Untimed first runs: binaries and layer files in the page cache, the
    # user namespace rcfs's keeper holds (podman's: its pause process).
    M=$W/m/mnt
    mkdir -p "$M" "$W/fb"; chown "$BUSER:" "$M" "$W/fb"
    T "$R" run --rm --net none "$IMAGE" /bin/busybox true >/dev/null
    as_user python3 "$W/py/mountprobe.py" rcfs "$M" "$DEEP" "$R" mount "$IMAGE" "$M" >/dev/null
    as_user python3 "$W/py/mountprobe.py" fovl "$M" "$DEEP" fuse-overlayfs -o "lowerdir=$LOWER" "$M" >/dev/null
    fb() { # the fuse-overlayfs + bwrap start, in fresh upper and work dirs
        local d=$W/fb/$1; rm -rf "$d"; mkdir -p "$d/u" "$d/w" "$d/m"; chown -R "$BUSER:" "$d"
        T fuse-overlayfs -o "lowerdir=$LOWER,upperdir=$d/u,workdir=$d/w" "$d/m" ';;' \
            bwrap --unshare-all --die-with-parent --bind "$d/m" / --proc /proc --dev /dev /bin/busybox true ';;' \
            fusermount3 -u "$d/m"
    }
    fb warm >/dev/null
    for i in $(seq 1 "$RUNS"); do
        wait_idle
        S[$n,busy]+="$(cpu_busy) "
        read -r a b c d e f < <(as_user python3 "$W/py/mountprobe.py" rcfs "$M" "$DEEP" "$R" mount "$IMAGE" "$M")
        S[$n,rmount]+="$a " S[$n,rdeep]+="$b " S[$n,rrss]+="$c " S[$n,rhwm]+="$d " S[$n,ranon]+="$e " S[$n,rfile]+="$f "
        read -r a b c d e f < <(as_user python3 "$W/py/mountprobe.py" fovl "$M" "$DEEP" fuse-overlayfs -o "lowerdir=$LOWER" "$M")
        S[$n,fmount]+="$a " S[$n,fdeep]+="$b " S[$n,frss]+="$c " S[$n,fhwm]+="$d "
        S[$n,rrun]+="$(T "$R" run --rm --net none "$IMAGE" /bin/busybox true) "
        S[$n,fbwrap]+="$(fb "$i") "
        [ -n "${I[$n,nopodman]}" ] || S[$n,podman]+="$(T podman run --rm --net=host "$IMAGE" /bin/busybox true) "
        # The run's server, found under $! (setpriv and env exec into `rcfs
        # run`; not through as_user, which would put a bash in between).
        setpriv --reuid="$BUSER" --regid="$BUSER" --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" \
            "$R" run --rm --net none "$IMAGE" /bin/busybox sleep 2 & BG=$!
        read -r a b c d e < <(python3 "$W/py/runprobe.py" "$BG")
        wait "$BG"; BG=
        S[$n,runrss]+="$a " S[$n,runhwm]+="$b " S[$n,runthreads]+="$c " S[$n,runanon]+="$d " S[$n,runfile]+="$e "
        log "  run $i/$RUNS: $(for k in rmount fmount rdeep fdeep rrun fbwrap podman rrss runrss frss; do read -r -a v <<<"${S[$n,$k]:-}"; [ "${#v[@]}" = 0 ] || echo -n "$k ${v[-1]} "; done)"
    done
    log "  rcfs mount $(med "$n" rmount) ms, deep stat $(med "$n" rdeep) ms, run $(med "$n" rrun) ms, server $(med "$n" rrss) KiB, run process $(med "$n" runrss) KiB; fuse-overlayfs mount $(med "$n" fmount) ms, + bwrap $(med "$n" fbwrap) ms"
    # Free the disk for the next size.
    { as_user "$R" rmi "$IMAGE" && as_user "$R" gc; } >/dev/null 2>&1 || log "  warning: rcfs rmi/gc failed"
    [ -n "${I[$n,nopodman]}" ] || as_podman rmi -f "$IMAGE" >/dev/null 2>&1 || log "  warning: podman rmi failed"
    rm -rf "$W/fb"
    [ "$KEEP" = 1 ] || rm -rf "$img"
done
TOTAL=$((SECONDS - START))

# ---------------------------------------------------------------- report --
ok() { awk "BEGIN { print ($1) ? \"ok\" : \"MISS\" }"; }
mkdir -p "$(dirname "$OUT")"
{
    echo "# Start cost against image size"
    echo
    echo "rcfs $RCFS_REV, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r); RUNS=$RUNS, medians; as the unprivileged user $BUSER."
    echo "$(fuse-overlayfs --version 2>&1 | grep -m1 -i 'fuse-overlayfs' || echo fuse-overlayfs), $(bwrap --version)."
    echo
    echo "| entries | rcfs mount ms | fovl mount ms | rcfs deep stat ms | fovl deep stat ms | rcfs warm run ms | fovl+bwrap ms | podman ms | rcfs mount RSS KiB | rcfs run RSS KiB | fovl RSS KiB |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for n in "${SZ[@]}"; do
        p=-; [ -n "${I[$n,nopodman]}" ] || p=$(med "$n" podman)
        echo "| $n | $(med "$n" rmount) | $(med "$n" fmount) | $(med "$n" rdeep) | $(med "$n" fdeep) | $(med "$n" rrun) | $(med "$n" fbwrap) | $p | $(med "$n" rrss) | $(med "$n" runrss) | $(med "$n" frss) |"
    done
    echo
    echo "rcfs against its values at $BASE entries, and the targets: a mount ≤ 5 ms and a warm run ≤ 25 ms, each ≤ 1.2x its $BASE-entry value; the server's VmRSS ≤ 16 MiB (the mount's server after the deep stat; the \`rcfs run\` process, which serves the container's union, while the container runs). RSS as VmRSS = RssAnon + RssFile (file: mapped pages of the binary, libraries and the store's tree indexes)."
    echo
    echo "| entries | mount ms | x | | deep stat x | warm run ms | x | | mount server RSS MiB (anon + file) | x | | run process RSS MiB (anon + file) | x | |"
    echo "| ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | --- |"
    for n in "${SZ[@]}"; do
        m=$(med "$n" rmount) mq=$(ratio "$(med "$n" rmount)" "$(med "$BASE" rmount)")
        r=$(med "$n" rrun) rq=$(ratio "$(med "$n" rrun)" "$(med "$BASE" rrun)")
        dq=$(ratio "$(med "$n" rdeep)" "$(med "$BASE" rdeep)")
        s=$(med "$n" rrss) sq=$(ratio "$s" "$(med "$BASE" rrss)")
        u=$(med "$n" runrss) uq=$(ratio "$u" "$(med "$BASE" runrss)")
        mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }'; }
        echo "| $n | $m | $mq | $(ok "$m <= 5 && $mq <= 1.2") | $dq | $r | $rq | $(ok "$r <= 25 && $rq <= 1.2") | $(mib "$s") ($(mib "$(med "$n" ranon)") + $(mib "$(med "$n" rfile)")) | $sq | $(ok "$s <= 16384") | $(mib "$u") ($(mib "$(med "$n" runanon)") + $(mib "$(med "$n" runfile)")) | $uq | $(ok "$u <= 16384") |"
    done
    echo
    echo "The images (entries by kind; the deep path is 9 levels down, in the second layer under the base's dirs), and setting up: generation (python + tar layers), skopeo push, \`rcfs pull --full\` (indexing into the user's store), podman pull."
    echo
    echo "| entries | dirs | files | symlinks | hard links | largest dir | dirs ≥ 1000 | unpacked MB | layers MB | generated s | push s | rcfs pull s | rcfs store MB | podman pull s |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for n in "${SZ[@]}"; do
        mm() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "${I[$n,meta]}" "$1"; }
        echo "| $n | $(mm dirs) | $(mm files) | $(mm symlinks) | $(mm hardlinks) | $(mm largest_dir) | $(mm dirs_over_1000) | $(awk -v b="${I[$n,unpacked]}" 'BEGIN{printf "%.0f", b/1e6}') | ${I[$n,layers]} | ${I[$n,gen]} | ${I[$n,push]} | ${I[$n,pull]} | ${I[$n,store]} | ${I[$n,ppull]:--} |"
    done
    echo
    for n in "${SZ[@]}"; do
        if [ -n "${I[$n,nopodman]}" ]; then echo "- podman at $n entries: not measured (${I[$n,nopodman]})."; fi
    done
    [ -n "$NO_PODMAN" ] || echo "- podman: $(podman --version), runtime $(runc --version | head -n 1), rootless, --net=host."
    busy=$(for n in "${SZ[@]}"; do echo "${S[$n,busy]}"; done | tr ' ' '\n' | awk -v b="$IDLE_BUSY" '$1 != "" && $1 >= b {c++} END {print c + 0}')
    echo "- Repetitions that started with the machine (other processes) busier than ${IDLE_BUSY}%$( ((IDLE_WAIT > 0)) && echo " after waiting up to ${IDLE_WAIT} s"): $busy of $((RUNS * ${#SZ[@]})) (samples: busy)."
    echo "- Whole run: $TOTAL s."
    echo
    echo "Samples (ms; KiB):"
    echo
    for n in "${SZ[@]}"; do
        echo "- $n entries (deep path $(python3 -c 'import json,sys; m = json.loads(sys.argv[1]); print(m["deep"] + "; entries of /, /usr, ... and the deep file'"'"'s dir: " + " ".join(map(str, m["deep_path_fan"])))' "${I[$n,meta]}")):"
        for k in busy rmount fmount rdeep fdeep rrun fbwrap podman rrss rhwm ranon rfile runrss runhwm runanon runfile runthreads frss fhwm; do
            [ -z "${S[$n,$k]:-}" ] || echo "  - $k: ${S[$n,$k]}"
        done
    done
    echo
    echo "Keys: busy: % of CPU time not idle over 0.5 s before the repetition; rmount/fmount: rcfs/fuse-overlayfs mount to the root's first stat; rdeep/fdeep: the deep stat; rrun: rcfs run; fbwrap: fuse-overlayfs + bwrap; rrss/rhwm/ranon/rfile: rcfs mount server VmRSS/VmHWM/RssAnon/RssFile; runrss/runhwm/runanon/runfile/runthreads: the rcfs run process; frss/fhwm: fuse-overlayfs."
} | tee "$OUT"
