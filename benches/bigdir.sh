#!/usr/bin/env bash
# One big lower directory: how much memory the FUSE server needs for it and
# how long `ls -l` of it takes, rcfs vs fuse-overlayfs vs kernel overlayfs.
# Results: a markdown table on stdout and in benches/results/.
#
# Run as root on Debian 12 after `cargo build --release -p rcfs`:
#     benches/bigdir.sh
# Needs: fusermount3 (fuse3), fuse-overlayfs, overlay in the kernel.
#
# Knobs (environment):
#   N=200000          entries in the directory (empty files, 12-byte names)
#   RUNS=3            runs per filesystem (median reported)
#   FS="rcfs fuse-overlayfs kernel"
#   BENCH_DIR=/var/tmp/rcfs-bench   (the directory lives in BENCH_DIR/bigdir)
#   RCFS=target/release/rcfs  RCFS_OPTS=...  extra `rcfs mount` arguments
#   OUT=benches/results/bigdir-DATE.md
#
# Each run mounts the filesystem afresh (empty upper dir), drops the caches,
# then times `ls -l` of the directory twice: "cold" (first listing: the
# server loads the directory) and "again" (the same mount, kernel caches
# dropped again: what the server kept answers). The server's resident set
# (VmRSS) is read after each listing; "per entry" is its growth over the
# freshly mounted server's, divided by N.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-200000}
RUNS=${RUNS:-3}
FS=${FS:-"rcfs fuse-overlayfs kernel"}
BENCH_DIR=${BENCH_DIR:-/var/tmp/rcfs-bench}
RCFS=${RCFS:-$REPO/target/release/rcfs}
RCFS_OPTS=${RCFS_OPTS:-}
OUT=${OUT:-$REPO/benches/results/bigdir-$(date +%Y%m%d-%H%M%S).md}

W=$BENCH_DIR/bigdir
LOWER=$W/lower-$N UP=$W/upper WK=$W/work MNT=$W/mnt

log() { printf '%s\n' "$*" >&2; }
die() { log "bigdir.sh: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (kernel overlay mounts, drop_caches)"
[[ $N =~ ^[1-9][0-9]*$ && $RUNS =~ ^[1-9][0-9]*$ ]] || die "N and RUNS must be positive integers"
for fs in $FS; do
	case $fs in
	rcfs) [[ -x $RCFS ]] || die "$RCFS missing: cargo build --release -p rcfs" ;;
	fuse-overlayfs) command -v fuse-overlayfs >/dev/null || die "fuse-overlayfs missing: apt-get install fuse-overlayfs" ;;
	kernel) ;;
	*) die "unknown filesystem '$fs' in FS (rcfs, fuse-overlayfs, kernel)" ;;
	esac
done

mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
server() { pgrep -f -- "$MNT" | head -1; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
now_ns() { date +%s%N; }

umount_all() {
	local pid
	mounted || return 0
	pid=$(server || true)
	umount "$MNT" 2>/dev/null || umount -l "$MNT"
	# wait for a FUSE server to exit, so it does not compete with the next run
	while [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}
trap 'umount_all; rm -rf "$UP" "$WK"' EXIT

if [[ ! -e $LOWER/.complete ]]; then
	log "creating $N files in $LOWER/dir ..."
	rm -rf "$LOWER" && mkdir -p "$LOWER/dir"
	(cd "$LOWER/dir" && seq -f 'entry%07g' 1 "$N" | xargs touch)
	touch "$LOWER/.complete"
fi
mkdir -p "$MNT"

do_mount() {
	rm -rf "$UP" "$WK" && mkdir -p "$UP" "$WK"
	case $1 in
	# shellcheck disable=SC2086
	rcfs) "$RCFS" mount --lower "$LOWER" --upper "$UP" --work "$WK" $RCFS_OPTS "$MNT" ;;
	fuse-overlayfs) fuse-overlayfs -o "lowerdir=$LOWER,upperdir=$UP,workdir=$WK" "$MNT" 2>/dev/null ;;
	kernel) mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UP,workdir=$WK" "$MNT" ;;
	esac
	mounted || die "$1: mount failed"
}

listing() { # prints "ms entries"
	local t0 t1 n
	sync && echo 3 >/proc/sys/vm/drop_caches
	t0=$(now_ns)
	n=$(ls -l "$MNT/dir" | wc -l)
	t1=$(now_ns)
	echo "$(((t1 - t0) / 1000000)) $((n - 1))"
}

declare -A S # S[fs,metric] = space-separated samples
fss=($FS)
for ((r = 0; r < RUNS; r++)); do
	for ((i = 0; i < ${#fss[@]}; i++)); do
		fs=${fss[(i + r) % ${#fss[@]}]} # rotate the order from run to run
		do_mount "$fs"
		pid="" base=0
		if [[ $fs != kernel ]]; then
			pid=$(server)
			base=$(rss_kb "$pid")
		fi
		read -r ms n < <(listing)
		[[ $n == "$N" ]] || die "$fs: ls -l listed $n entries, expected $N"
		S[$fs,cold]+="$ms " first=$ms
		[[ -n $pid ]] && S[$fs,rss1]+="$(rss_kb "$pid") "
		read -r ms n < <(listing)
		S[$fs,again]+="$ms "
		if [[ -n $pid ]]; then
			rss=$(rss_kb "$pid")
			S[$fs,rss]+="$rss "
			S[$fs,per]+="$(((rss - base) * 1024 / N)) "
		fi
		log "run $((r + 1))/$RUNS $fs: ls -l $first ms, again $ms ms${pid:+, server ${rss} kB}"
		umount_all
	done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
med() { median <<<"${S[$1,$2]:-}"; }
ratio() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ && $2 != 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "-"; }
mb() { [[ $1 =~ ^[0-9]+$ ]] && awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }' || echo "-"; }

{
	echo "## A lower directory of $N entries: \`ls -l\` and server memory"
	echo
	echo "- rcfs $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')${RCFS_OPTS:+ ($RCFS_OPTS)}; $(fuse-overlayfs --version 2>&1 | grep -m1 '^fuse-overlayfs' || echo 'fuse-overlayfs: n/a'); kernel $(uname -r)"
	echo "- medians of $RUNS runs (\`RUNS=$RUNS N=$N benches/bigdir.sh\`); times in ms, memory = the server's VmRSS"
	echo
	echo "| | kernel | fuse-overlayfs | rcfs | rcfs/fuse-ovl |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	row() { # label metric formatter
		local k f r
		k=$(med kernel "$2") f=$(med fuse-overlayfs "$2") r=$(med rcfs "$2")
		[[ $3 == mb ]] && echo "| $1 | - | $(mb "$f") | $(mb "$r") | $(ratio "$r" "$f") |" ||
			echo "| $1 | $k | $f | $r | $(ratio "$r" "$f") |"
	}
	row "ls -l, first listing (ms)" cold plain
	row "ls -l again, caches dropped (ms)" again plain
	row "server after the first listing" rss1 mb
	row "server after the second listing" rss mb
	row "server growth per entry (bytes)" per plain
	echo
	echo "Samples:"
	for fs in $FS; do
		echo "- $fs: ls -l ${S[$fs,cold]:-}/ again ${S[$fs,again]:-}${S[$fs,rss]:+; VmRSS kB ${S[$fs,rss]}}"
	done
} | tee "$OUT"
