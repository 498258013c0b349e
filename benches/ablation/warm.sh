#!/usr/bin/env bash
# Warm start ablation: what the seccomp filter and the container's new /dev
# cost `rcfs run --rm IMAGE /bin/busybox true` (benches/run.sh's start), as
# root and as an unprivileged user. Variants of the same start, taken in
# turn (each round runs every variant once, the order rotated each round),
# so that the machine's drift hits all alike; reported as medians and as
# median paired differences (with a bootstrap 95% interval).
#
# Run as root:
#     benches/ablation/warm.sh VARIANT...
# where each VARIANT is LABEL=BINARY[,OPTION...], e.g.
#     after=/tmp/rcfs-after
#     after-unconfined=/tmp/rcfs-after,--security-opt,seccomp=unconfined
#     devold-unconfined=/tmp/rcfs-devold,--security-opt,seccomp=unconfined
# The variant whose container /dev is made as before the hardening (53e9c55:
# a tmpfs with the host's nodes bound in, devpts, shm, the links; no mqueue,
# no read-only binds, no mknod) is built from a scratch copy, never from the
# product tree:
#     mkdir /tmp/rcfs-variant && git archive HEAD | tar -x -C /tmp/rcfs-variant
#     cd /tmp/rcfs-variant && patch -p1 < benches/ablation/dev-as-before.patch
#     cargo build --release -p rcfs && cp target/release/rcfs /tmp/rcfs-devold
# Pairs reported: PAIRS="a:b ..."
# (a minus b). Knobs: ROUNDS=40, BENCH_USER=newbie (must have subuid and
# subgid ranges), OUT=benches/results/warm-ablation-DATE.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/lib.sh
ROUNDS=${ROUNDS:-40}
export BENCH_USER=${BENCH_USER:-newbie}
OUT=${OUT:-$PWD/benches/results/warm-ablation-$(date +%Y%m%d-%H%M%S).md}
PAIRS=${PAIRS:-}
[ "$(id -u)" = 0 ] || { echo "warm.sh: run as root" >&2; exit 1; }
[ $# -gt 0 ] || { echo "warm.sh: name the variants (LABEL=BINARY[,OPTION...])" >&2; exit 1; }
grep -q "^$BENCH_USER:" /etc/subuid || { echo "warm.sh: $BENCH_USER has no subuid range" >&2; exit 1; }
W=$(mktemp -d /var/tmp/rcfs-ablation.XXXXXX)
chmod 755 "$W"
REG=
trap cleanup EXIT
mkdir -p "$W/l0/bin" "$W/l1/etc" "$W/l0/etc" "$W/l0/proc" "$W/l0/dev" "$W/l0/sys" "$W/l0/tmp"
cp /bin/busybox "$W/l0/bin/busybox"
echo bench > "$W/l1/etc/hostname"
mk_layout "$W/layout" "$W/l0" "$W/l1"
start_registry "$W"
skopeo copy -q --dest-tls-verify=false "oci:$W/layout:v1" "docker://127.0.0.1:$PORT/bench:v1"
IMAGE=127.0.0.1:$PORT/bench:v1
mkdir -p "$W/home" "$W/run"; chmod 700 "$W/run"; chown "$BENCH_USER": "$W/home" "$W/run"
# The user's store in $W/home (XDG_DATA_HOME), its keeper's pid file in
# $W/run (removed by cleanup).
USER_ENV=(setpriv --reuid="$BENCH_USER" --regid="$BENCH_USER" --init-groups env HOME="$W/home" XDG_RUNTIME_DIR="$W/run" XDG_DATA_HOME="$W/home/data")
first=${1#*=}; first=${first%%,*}
"$first" --root "$W/store" pull -q --tls-verify=false "$IMAGE"
"${USER_ENV[@]}" "$first" pull -q --tls-verify=false "$IMAGE"
python3 - "$ROUNDS" "$OUT" "$W" "$IMAGE" "$PAIRS" "$@" <<'PY'
import json, os, random, statistics, subprocess, sys, time
rounds, out, w, image, pairs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
variants = []
for v in sys.argv[6:]:
    label, rest = v.split("=", 1)
    parts = rest.split(",")
    variants.append((label, parts[0], parts[1:]))
user_env = ["setpriv", "--reuid=" + os.environ["BENCH_USER"], "--regid=" + os.environ["BENCH_USER"],
            "--init-groups", "env", "HOME=%s/home" % w, "XDG_RUNTIME_DIR=%s/run" % w,
            "XDG_DATA_HOME=%s/home/data" % w]
def cmd(who, binary, opts):
    if who == "root":
        return [binary, "--root", w + "/store", "run", "--rm"] + opts + [image, "/bin/busybox", "true"]
    return user_env + [binary, "run", "--rm"] + opts + [image, "/bin/busybox", "true"]
def once(c):
    t = time.monotonic()
    subprocess.run(c, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return (time.monotonic() - t) * 1000
T = {}
for who in ("root", "user"):
    # Untimed first runs: binaries in the page cache, the seccomp program
    # compiled into the store, the user's namespace keeper started.
    for _, b, o in variants:
        for _ in range(2):
            once(cmd(who, b, o))
    for r in range(rounds):
        k = r % len(variants)
        for label, b, o in variants[k:] + variants[:k]:
            T.setdefault((who, label), []).append(once(cmd(who, b, o)))
def ci(d):
    rnd = random.Random(1)
    ms = sorted(statistics.median(rnd.choices(d, k=len(d))) for _ in range(2000))
    return ms[50], ms[1949]
with open(out, "w") as f:
    def p(s=""):
        print(s); f.write(s + "\n")
    p("# Warm start ablation: `rcfs run --rm IMAGE /bin/busybox true`")
    p()
    p("%s, %d rounds (every variant once per round, order rotated), ms." % (time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), rounds))
    for label, b, o in variants:
        p("- `%s`: %s run --rm %s" % (label, b, " ".join(o)))
    p()
    p("| who | variant | median | mean | min |")
    p("| --- | --- | ---: | ---: | ---: |")
    for who in ("root", "user"):
        for label, _, _ in variants:
            s = T[(who, label)]
            p("| %s | %s | %.2f | %.2f | %.2f |" % (who, label, statistics.median(s), statistics.mean(s), min(s)))
    if pairs:
        p()
        p("Paired: the difference a - b within each round, median and a bootstrap 95% interval of the median; ratio a / b median.")
        p()
        p("| who | a - b | median diff (ms) | 95% interval | median ratio | a faster in |")
        p("| --- | --- | ---: | --- | ---: | ---: |")
        for who in ("root", "user"):
            for pr in pairs.split():
                a, b = pr.split(":")
                d = [x - y for x, y in zip(T[(who, a)], T[(who, b)])]
                q = [x / y for x, y in zip(T[(who, a)], T[(who, b)])]
                lo, hi = ci(d)
                p("| %s | %s - %s | %+.2f | %+.2f … %+.2f | %.3f | %d/%d |" % (who, a, b, statistics.median(d), lo, hi, statistics.median(q), sum(1 for x in d if x < 0), len(d)))
    p()
    p("<details><summary>samples (ms, in round order)</summary>")
    p()
    for who in ("root", "user"):
        for label, _, _ in variants:
            p("- %s %s: %s" % (who, label, " ".join("%.1f" % x for x in T[(who, label)])))
    p()
    p("</details>")
PY
