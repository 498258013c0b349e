#!/usr/bin/env bash
# Union filesystem benchmark: rcfs vs fuse-overlayfs vs kernel overlayfs over
# the same generated layers (data and timed ops: benches/union-helper.c).
# Results: a markdown table on stdout and in benches/results/.
#
# Run as root on Debian 12 after `cargo build --release`:
#     benches/union.sh
# Needs: a C compiler (cc; the Rust toolchain needs one anyway), fusermount3
# (package fuse3), fuse-overlayfs (package fuse-overlayfs), overlay in the kernel.
#
# Knobs (environment):
#   RUNS=5                      runs per case and filesystem (median reported)
#   FS="rcfs fuse-overlayfs kernel"
#   CASES="walk2 walk64 rewalk2 rewalk64 readall2 readall64 seqread append rwappend chmod create"
#                               rewalk*: the walk again on the same mount after
#                               `echo 2 > drop_caches` (the kernel forgets its
#                               dentries and inodes; what a filesystem keeps in
#                               its own memory, such as rcfs's merged views, stays)
#   CACHE="cold warm"           cold: page/dentry/inode caches dropped right
#                               before the timed op; warm: the same op was run
#                               once on a throwaway mount of the same fs first.
#                               Either way the timed op runs on a fresh mount
#                               with a fresh, empty upper dir.
#   BENCH_DIR=/var/tmp/rcfs-bench   data (generated once, ~1.1 GB) + scratch;
#                               must be a disk filesystem, not tmpfs
#   RCFS=target/release/rcfs    RCFS_OPTS=...  extra `rcfs mount` arguments
#   FO_OPTS=...                 extra fuse-overlayfs -o options
#   KOVL_OPTS=...               extra kernel overlay -o options
#   CREATE_N=10000 CREATE_SIZE=100  the create case
#   OP_TIMEOUT=600              seconds before a timed op counts as failed
#   IDLE_WAIT=120               before each timed run wait up to this many s
#                               for the machine to be idle (other processes
#                               using < IDLE_BUSY=15 % CPU over 0.5 s); 0 = off
#   OUT=benches/results/union-DATE.md
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/benches/lib.sh"
RUNS=${RUNS:-5}
FS=${FS:-"rcfs fuse-overlayfs kernel"}
CASES=${CASES:-"walk2 walk64 rewalk2 rewalk64 readall2 readall64 seqread append rwappend chmod create"}
CACHE=${CACHE:-"cold warm"}
BENCH_DIR=${BENCH_DIR:-/var/tmp/rcfs-bench}
RCFS=${RCFS:-$REPO/target/release/rcfs}
RCFS_OPTS=${RCFS_OPTS:-}
FO_OPTS=${FO_OPTS:-}
KOVL_OPTS=${KOVL_OPTS:-}
CREATE_N=${CREATE_N:-10000}
CREATE_SIZE=${CREATE_SIZE:-100}
OP_TIMEOUT=${OP_TIMEOUT:-600}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-15}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$REPO/benches/results/union-$STAMP.md}

DATA_VERSION=1 # bump when the generator in union-helper.c changes
DATA=$BENCH_DIR/data-v$DATA_VERSION
SCRATCH=$BENCH_DIR/run
UP=$SCRATCH/upper WK=$SCRATCH/work MNT=$SCRATCH/mnt
TRASH=$SCRATCH/trash DELETE_STAMP=$BENCH_DIR/.mass-delete-time
HELPER=$BENCH_DIR/bin/union-helper
BIG_REL=opt/blob-256M.bin
NMANY=64

log() { printf '%s\n' "$*" >&2; }
die() { log "union.sh: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
want_fs() { [[ " $FS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- checks
[[ $(id -u) == 0 ]] || die "run as root (kernel overlay mounts, drop_caches)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
for fs in $FS; do
	case $fs in
	rcfs | fuse-overlayfs | kernel) ;;
	*) die "unknown filesystem '$fs' in FS (rcfs, fuse-overlayfs, kernel)" ;;
	esac
done
for c in $CASES; do
	case $c in
	walk2 | walk64 | rewalk2 | rewalk64 | readall2 | readall64 | seqread | append | rwappend | chmod | create) ;;
	*) die "unknown case '$c' in CASES" ;;
	esac
done
for m in $CACHE; do [[ $m == cold || $m == warm ]] || die "CACHE must be cold and/or warm"; done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
have cc || die "no C compiler: apt-get install gcc"
if want_fs rcfs || want_fs fuse-overlayfs; then
	have fusermount3 || die "fusermount3 missing: apt-get install fuse3"
	[[ -c /dev/fuse ]] || die "/dev/fuse missing (modprobe fuse)"
fi
if want_fs fuse-overlayfs; then
	have fuse-overlayfs || die "fuse-overlayfs missing: apt-get install fuse-overlayfs (or drop it from FS)"
fi
RCFS_INFO=""
if want_fs rcfs; then
	[[ -x $RCFS ]] || die "$RCFS missing: cargo build --release -p rcfs (or FS=\"fuse-overlayfs kernel\")"
	"$RCFS" mount --help >/dev/null 2>&1 || die "'$RCFS mount --help' fails: rcfs not usable yet"
	# run a private copy, so a rebuild during the benchmark cannot mix versions
	mkdir -p "$BENCH_DIR/bin"
	cp "$RCFS" "$BENCH_DIR/bin/rcfs.tmp" && mv "$BENCH_DIR/bin/rcfs.tmp" "$BENCH_DIR/bin/rcfs"
	RCFS_INFO="binary built $(date -u -r "$RCFS" '+%Y-%m-%d %H:%M UTC')"
	RCFS=$BENCH_DIR/bin/rcfs
fi
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
[[ -z $(git -C "$REPO" status --porcelain -- fs cli runtime Cargo.toml Cargo.lock 2>/dev/null) ]] || GIT_REV="$GIT_REV+uncommitted changes"
if want_fs kernel; then
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
		die "kernel has no overlay filesystem"
fi

mkdir -p "$BENCH_DIR"
fstype=$(stat -f -c %T "$BENCH_DIR")
case $fstype in tmpfs | ramfs | overlayfs | fuse*) die "BENCH_DIR=$BENCH_DIR is on $fstype; use a disk filesystem" ;; esac

# ---------------------------------------------------------------- cleanup
RESULTS=$(mktemp -d /tmp/union-bench.XXXXXX)

mnt_type() { awk -v m="$MNT" '$2 == m { t = $3 } END { print t }' /proc/mounts; }

do_umount() {
	local t pids="" i
	t=$(mnt_type)
	[[ -n $t ]] || return 0
	if [[ $t == overlay ]]; then
		umount "$MNT" || umount -l "$MNT"
	else
		# the FUSE daemon serving $MNT: wait for it to exit after unmount so
		# it does not compete with the next run (we only wait, never kill)
		pids=$(pgrep -f -- "$MNT" || true)
		fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null || umount -l "$MNT"
		for ((i = 0; i < 200; i++)); do
			local alive=""
			for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
			[[ -z $alive ]] && break
			sleep 0.05
		done
		[[ -z ${alive:-} ]] || log "warning: FUSE daemon(s) $pids still running 10 s after unmount"
	fi
	[[ -z $(mnt_type) ]] || do_umount
}

cleanup() {
	local rc=$?
	do_umount || true
	rm -rf "$UP" "$WK" || true
	if [[ -n $(ls -A "$TRASH" 2>/dev/null) ]]; then
		log "removing the create case's upper dirs ..."
		rm -rf "$TRASH" && date +%s >"$DELETE_STAMP"
	fi
	rm -rf "$RESULTS"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A server left over from an earlier, killed run would be waited for after
# every unmount, and could answer for the mountpoint: refuse to start.
stale=$(pgrep -f -- "$MNT" || true)
[[ -z $stale ]] || die "processes of an earlier run still name $MNT (pids: $(echo $stale)); kill them first (kill -9 $(echo $stale))"

# ---------------------------------------------------------------- helper + data
mkdir -p "$BENCH_DIR/bin" "$SCRATCH"
if [[ -n $(ls -A "$TRASH" 2>/dev/null) ]]; then
	rm -rf "$TRASH" && date +%s >"$DELETE_STAMP"
fi
mkdir -p "$TRASH"
cc -O2 -Wall -o "$HELPER.tmp" "$REPO/benches/union-helper.c" -lm && mv "$HELPER.tmp" "$HELPER"

if [[ ! -e $DATA/.complete ]]; then
	avail=$(df -P -k "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
	((avail > 3 * 1024 * 1024)) || die "less than 3 GB free under $BENCH_DIR"
	log "generating layers into $DATA (once; ~1.1 GB) ..."
	rm -rf "$DATA"
	"$HELPER" gen "$DATA" 2> >(tee "$DATA.info" >&2)
	sync
	mv "$DATA.info" "$DATA/INFO"
	touch "$DATA/.complete"
fi

if [[ " $CASES " == *" create "* ]]; then
	# create uppers are kept until exit (see reset_upper): ~4 KiB per file
	nmodes=$(wc -w <<<"$CACHE")
	need=$((RUNS * $(wc -w <<<"$FS") * (nmodes + $([[ $CACHE == *warm* ]] && echo 1 || echo 0)) * CREATE_N * 4 + 600 * 1024))
	avail=$(df -P -k "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
	((avail > need)) || die "need ~$((need / 1024)) MB free under $BENCH_DIR for scratch, have $((avail / 1024)) MB"
fi

LOWER_TWO="$DATA/two/l1:$DATA/two/l0"
LOWER_MANY=$(for ((l = NMANY - 1; l >= 0; l--)); do printf '%s/many/l%02d\n' "$DATA" "$l"; done | paste -sd:)

# ---------------------------------------------------------------- mounting
# ext4 without a journal (this VM's root fs) skips inodes freed in the last
# 60-360 s when it allocates new ones (recently_deleted() in ialloc.c); that
# scan made `create` up to 10x slower and very noisy when each run deleted
# the previous run's 10k files.  So the uppers of the create case go to a
# trash dir that is emptied only on exit, and on such a filesystem a create
# series waits until the last mass deletion is 370 s old.
CUR_CASE=""
reset_upper() {
	if [[ $CUR_CASE == create && -d $UP ]]; then
		local t
		t=$(mktemp -d "$TRASH/XXXXXX")
		mv "$UP" "$WK" "$t/"
	else
		rm -rf "$UP" "$WK"
	fi
	mkdir -p "$UP" "$WK" "$MNT"
}

NOJOURNAL=""
dev=$(df -P "$BENCH_DIR" | awk 'NR == 2 { print $1 }')
[[ $(cat "/sys/fs/ext4/${dev##*/}/journal_task" 2>/dev/null) == "<none>" ]] && NOJOURNAL=1

wait_recent_deletes() {
	[[ -n $NOJOURNAL && -e $DELETE_STAMP ]] || return 0
	local age=$(($(date +%s) - $(cat "$DELETE_STAMP")))
	if ((age < 370)); then
		log "  ext4 without journal: sleeping $((370 - age)) s until the last mass deletion is old enough to not slow down inode allocation"
		sleep $((370 - age))
	fi
}

do_mount() { # fs variant
	local fs=$1 lowers rc=0
	[[ $2 == two ]] && lowers=$LOWER_TWO || lowers=$LOWER_MANY
	[[ -z $(mnt_type) ]] || die "$MNT is still mounted"
	case $fs in
	rcfs)
		# shellcheck disable=SC2086
		"$RCFS" mount --lower "$lowers" --upper "$UP" --work "$WK" $RCFS_OPTS "$MNT" ;;
	fuse-overlayfs)
		# (its "unknown argument ignored: lazytime" notice is noise)
		fuse-overlayfs -o "lowerdir=$lowers,upperdir=$UP,workdir=$WK${FO_OPTS:+,$FO_OPTS}" "$MNT" \
			2> >(grep -v 'unknown argument ignored: lazytime' >&2) ;;
	kernel)
		mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$UP,workdir=$WK${KOVL_OPTS:+,$KOVL_OPTS}" "$MNT" ;;
	esac || rc=$?
	if [[ -z $(mnt_type) ]]; then
		log "  $fs: mount failed (exit $rc)"
		return 1
	fi
}

case_variant() { case $1 in walk64 | rewalk64 | readall64) echo many ;; *) echo two ;; esac; }

timed_op() { # case -> prints "ns check..." (the helper times only the op)
	local args
	case $1 in
	walk2 | walk64 | rewalk2 | rewalk64) args=(walk "$MNT") ;;
	readall2 | readall64) args=(readall "$MNT") ;;
	seqread) args=(seqread "$MNT/$BIG_REL") ;;
	append) args=(append "$MNT/$BIG_REL") ;;
	rwappend) args=(rwappend "$MNT/$BIG_REL") ;;
	chmod) args=(chmod "$MNT/$BIG_REL") ;;
	create) args=(create "$MNT/bench-new" "$CREATE_N" "$CREATE_SIZE") ;;
	esac
	timeout "$OP_TIMEOUT" "$HELPER" "${args[@]}"
}

layer_ratio_rows() { # case-prefix label: the 64-layer / 2-layer time ratio, per cache mode
	[[ " $CASES " == *" ${1}2 "* && " $CASES " == *" ${1}64 "* ]] || return 0
	local mode fs cells v
	for mode in $CACHE; do
		cells=() v="-"
		for fs in kernel fuse-overlayfs rcfs; do
			cells+=("$(ratio "$(val "${1}64.$mode" $fs)" "$(val "${1}2.$mode" $fs)")x")
		done
		[[ ${cells[2]} == "-x" ]] || { le "${cells[2]%x}" 1.3 && v=ok || v=MISS; }
		echo "| $2 | $mode | ${cells[0]} | ${cells[1]} | ${cells[2]} | | | rcfs ≤ 1.3x | $v |"
	done
}

measure() { # case mode fs run
	local c=$1 mode=$2 fs=$3 r=$4 v out ns
	v=$(case_variant "$c")
	if [[ $mode == warm ]]; then
		reset_upper
		if do_mount "$fs" "$v"; then
			timed_op "$c" >/dev/null || log "warning: warm-up $c on $fs failed"
			do_umount
		fi
	fi
	reset_upper
	sync
	wait_idle
	if ! do_mount "$fs" "$v"; then
		echo "FAIL (mount)" >>"$RESULTS/$c.$mode.$fs.check"
		return 0
	fi
	if [[ $c == rewalk* ]]; then
		"$HELPER" walk "$MNT" >/dev/null || log "warning: first walk of $c on $fs failed"
		echo 2 >/proc/sys/vm/drop_caches
	fi
	sync
	[[ $mode == cold ]] && echo 3 >/proc/sys/vm/drop_caches
	if out=$(timed_op "$c"); then
		ns=${out%% *}
		echo "$ns" >>"$RESULTS/$c.$mode.$fs"
		echo "${out#* }" >>"$RESULTS/$c.$mode.$fs.check"
		log "$(printf '  %-9s %-4s run %d/%d  %-14s %10.3f ms   %s' "$c" "$mode" "$r" "$RUNS" "$fs" "$(awk -v n="$ns" 'BEGIN { print n / 1e6 }')" "${out#* }")"
	else
		echo "FAIL" >>"$RESULTS/$c.$mode.$fs.check"
		log "  $c $mode run $r/$RUNS $fs: FAILED"
	fi
	do_umount
}

# ---------------------------------------------------------------- run
read -r -a FSA <<<"$FS"
nfs=${#FSA[@]}
START=$(date +%s)
for c in $CASES; do
	for mode in $CACHE; do
		CUR_CASE=$c
		[[ $c != create ]] || wait_recent_deletes
		for ((r = 1; r <= RUNS; r++)); do
			# rotate the order of filesystems from run to run
			for ((k = 0; k < nfs; k++)); do
				measure "$c" "$mode" "${FSA[(k + r - 1) % nfs]}" "$r"
			done
		done
		do_umount
		reset_upper
		CUR_CASE=""
	done
done
ELAPSED=$(($(date +%s) - START))

# ---------------------------------------------------------------- report
median() { # file -> median in ns (empty if no samples)
	[[ -s $1 ]] || return 0
	sort -n "$1" | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt_ms() { # ns -> ms with ~3 significant digits
	[[ -n $1 ]] || { echo "-"; return; }
	awk -v n="$1" 'BEGIN { m = n / 1e6; if (m < 1) printf "%.3f", m; else if (m < 10) printf "%.2f", m; else if (m < 100) printf "%.1f", m; else printf "%.0f", m }'
}
ratio() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "-"; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

target_of() {
	case $1 in
	walk2 | walk64 | rewalk2 | rewalk64 | readall2 | readall64) echo "≤ 0.6x fuse-overlayfs" ;;
	seqread) echo "≤ 1.0x fuse-overlayfs, ≤ 1.25x kernel (≥ 0.8x its MB/s)" ;;
	chmod) echo "< 10 ms, ≤ 1.0x fuse-overlayfs" ;;
	*) echo "≤ 1.0x fuse-overlayfs" ;;
	esac
}

verdict() { # case rcfs_ns fo_ns k_ns
	local c=$1 r=$2 f=$3 k=$4 v=ok
	[[ -n $r ]] || { echo "-"; return; }
	case $c in
	walk2 | walk64 | rewalk2 | rewalk64 | readall2 | readall64) [[ -z $f ]] || le "$r" "$(awk -v f="$f" 'BEGIN { print 0.6 * f }')" || v=MISS ;;
	seqread)
		[[ -z $f ]] || le "$r" "$f" || v=MISS
		[[ -z $k ]] || le "$r" "$(awk -v k="$k" 'BEGIN { print 1.25 * k }')" || v=MISS ;;
	chmod)
		le "$r" 10000000 || v=MISS
		[[ -z $f ]] || le "$r" "$f" || v=MISS ;;
	*) [[ -z $f ]] || le "$r" "$f" || v=MISS ;;
	esac
	[[ -n $f || $c == chmod ]] || v="-"
	echo "$v"
}

desc_of() {
	case $1 in
	walk2) echo "stat-walk, 2 layers" ;;
	walk64) echo "stat-walk, 64 layers" ;;
	rewalk2) echo "stat-walk again (dirs seen), 2 layers" ;;
	rewalk64) echo "stat-walk again (dirs seen), 64 layers" ;;
	readall2) echo "read all files, 2 layers" ;;
	readall64) echo "read all files, 64 layers" ;;
	seqread) echo "seq. read 256 MiB lower file" ;;
	append) echo "append 16 B to 256 MiB lower file, write-only open (copy-up)" ;;
	rwappend) echo "append 16 B to 256 MiB lower file, read-write open (data copy-up)" ;;
	chmod) echo "chmod 256 MiB lower file (copy-up)" ;;
	create) echo "create $CREATE_N × ${CREATE_SIZE} B files" ;;
	esac
}

val() { if want_fs "$2"; then median "$RESULTS/$1.$2"; fi; }

report() {
	local ncpu
	ncpu=$(nproc)
	echo "# Union filesystem benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
	echo
	echo "- rcfs: tree $GIT_REV${RCFS_INFO:+, $RCFS_INFO}; $(fuse-overlayfs --version 2>&1 | grep -m1 '^fuse-overlayfs' || echo 'fuse-overlayfs: n/a'); kernel $(uname -r)"
	echo "- $ncpu CPU ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; data on $(df -P -T "$BENCH_DIR" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
	echo "- data: $(tail -1 "$DATA/INFO" 2>/dev/null); 2-layer set = same tree + a 256 MiB file in the bottom layer"
	echo "- median of RUNS=$RUNS; each run on a fresh mount with a fresh empty upper dir; filesystem order rotated per run"
	echo "- cold = \`sync; echo 3 > /proc/sys/vm/drop_caches\` after mounting, right before the op; warm = the op was run once on a throwaway mount of the same fs (underlying caches hot), then timed on a fresh mount"
	echo "- times in ms, only the operation is timed (C helper, CLOCK_MONOTONIC; mount/unmount excluded). Mount options: rcfs \`${RCFS_OPTS:-default}\`, fuse-overlayfs \`${FO_OPTS:-default}\`, kernel \`${KOVL_OPTS:-default}\`"
	echo "- total wall time ${ELAPSED}s; $NOISY timed runs started while other processes kept the CPU busy (IDLE_WAIT=$IDLE_WAIT s, IDLE_BUSY=$IDLE_BUSY %)"
	echo
	echo "| case | cache | kernel | fuse-overlayfs | rcfs | rcfs/fuse-ovl | rcfs/kernel | target | rcfs |"
	echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"
	local c mode k f r
	for c in $CASES; do
		for mode in $CACHE; do
			k=$(val "$c.$mode" kernel)
			f=$(val "$c.$mode" fuse-overlayfs)
			r=$(val "$c.$mode" rcfs)
			echo "| $(desc_of "$c") | $mode | $(fmt_ms "$k") | $(fmt_ms "$f") | $(fmt_ms "$r") | $(ratio "$r" "$f") | $(ratio "$r" "$k") | $(target_of "$c") | $(verdict "$c" "$r" "$f" "$k") |"
		done
	done
	# derived rows
	layer_ratio_rows walk "stat-walk 64 layers / 2 layers"
	layer_ratio_rows rewalk "stat-walk again 64 layers / 2 layers"
	if [[ " $CASES " == *" seqread "* ]]; then
		for mode in $CACHE; do
			local cells=() fs t
			for fs in kernel fuse-overlayfs rcfs; do
				t=$(val "seqread.$mode" $fs)
				[[ -n $t ]] && cells+=("$(awk -v t="$t" 'BEGIN { printf "%.0f", 256 * 1048576 / (t / 1e9) / 1e6 }')") || cells+=("-")
			done
			echo "| seq. read throughput, MB/s | $mode | ${cells[0]} | ${cells[1]} | ${cells[2]} | | | | |"
		done
	fi
	# consistency: the check fields must agree across filesystems and runs
	local warn=""
	for c in $CASES; do
		for mode in $CACHE; do
			local n
			n=$(cat "$RESULTS/$c.$mode".*.check 2>/dev/null | sort -u | wc -l)
			if ((n > 1)); then
				warn+=$'\n'"- **$c/$mode: results differ between filesystems** (merged view or op result not identical):"
				for fs in $FS; do
					[[ -e $RESULTS/$c.$mode.$fs.check ]] && warn+=$'\n'"  - $fs: $(sort -u "$RESULTS/$c.$mode.$fs.check" | paste -sd';')"
				done
			fi
		done
	done
	echo
	if [[ -n $warn ]]; then
		echo "Consistency WARNINGS:$warn"
	else
		echo "Consistency: every filesystem returned the same merged view / op result (entry counts, sizes, modes, content digests)."
	fi
	echo
	echo "<details><summary>all samples (ms)</summary>"
	echo
	for c in $CASES; do
		for mode in $CACHE; do
			for fs in $FS; do
				[[ -s $RESULTS/$c.$mode.$fs ]] || continue
				echo "- $c $mode $fs: $(while read -r ns; do fmt_ms "$ns"; echo; done <"$RESULTS/$c.$mode.$fs" | paste -sd' ')"
			done
		done
	done
	echo
	echo "checks:"
	for c in $CASES; do
		echo "- $c: $(cat "$RESULTS/$c".*.check 2>/dev/null | sort -u | paste -sd';')"
	done
	echo
	echo "</details>"
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
log "written to $OUT"
