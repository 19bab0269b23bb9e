# The kernel's own btrfs and an fsync-heavy ext4 job in make bench-vm's
# rounds (issue 17, points 2 and 3), sourced by scripts/guest/bench after
# lib.sh and its run_fio, sample and stats helpers.
#
# Kernel btrfs: mkfs.btrfs (Debian's btrfs-progs, put in the initramfs with
# --add-bin) on two loop devices over the same kind of image files our
# device gets, RAID1 mounted default (datasum) and -o nodatasum, and -d
# single beside it; fio 1 MiB O_DIRECT psync on a file in it. Around every
# O_DIRECT write the kernel's nr_dirtied (/proc/vmstat, pages dirtied in the
# page cache) is read: a direct write that goes straight to the devices
# dirties none, one that takes btrfs's buffered fallback (968f19c5b1b7 for
# datasum inodes, 7c2830f00c3e for duplicated profiles) dirties every page
# it writes. That count is the trace that says which path the guest
# kernel took; the throughput beside it is its signature.
#
# fsync-heavy: ext4 on our device (bounce, raid1, nodatasum) and on the
# kernel loop device over one image of the same kind, fio 4 KiB random
# writes with an fsync after every write, BENCH_FSYNC_SECONDS each.
#
# BENCH_KERNEL=0 skips both.

KB_ON=${BENCH_KERNEL:-1}
KB_MNT=/mnt/kbench
KB_FSYNC_SECONDS=${BENCH_FSYNC_SECONDS:-10}
KB_FSYNC_SIZE=${BENCH_FSYNC_SIZE:-32M}
KB_DIRTIED=$RESULTS/bench-vm.dirtied
# The kernel configurations: ROW:mkfs data profile:mount options.
KB_CONFIGS="kbtrfs-raid1-nodatasum:raid1:nodatasum kbtrfs-raid1-datasum:raid1:defaults
kbtrfs-single-nodatasum:single:nodatasum kbtrfs-single-datasum:single:defaults"

# kb_die MSG: stop the whole bench, loudly: a missing tool would leave
# rows out of the table without anyone noticing.
kb_die() {
	echo "bench: $*" >&2
	echo "0 passed, 1 failed"
	exit 2
}

# kb_check_tools: every tool and kernel feature this part needs, before
# anything is measured.
kb_check_tools() {
	[ "$KB_ON" = 1 ] || return 0
	for _t in fio losetup mkfs.btrfs mkfs.ext4 mount umount awk; do
		command -v "$_t" >/dev/null 2>&1 ||
			kb_die "$_t is missing in the guest (make bench-vm adds mkfs.btrfs with --add-bin; BENCH_KERNEL=0 skips the kernel rows)"
	done
	grep -qw btrfs /proc/filesystems ||
		kb_die "the kernel has no btrfs (make bench-vm loads it with --module btrfs)"
	[ -e /dev/loop-control ] || grep -q '^ *[0-9]* loop$' /proc/devices ||
		kb_die "the kernel has no loop devices (make bench-vm loads them with --module loop)"
	grep -q '^nr_dirtied ' /proc/vmstat || kb_die "/proc/vmstat has no nr_dirtied"
	mkdir -p "$KB_MNT"
	: >"$KB_DIRTIED"
}

# kb_split ROW:PROFILE:OPTS: sets _c, _p and _o.
kb_split() {
	_c=${1%%:*} _o=${1#*:}
	_p=${_o%%:*} _o=${_o#*:}
}

kb_nr_dirtied() { awk '$1 == "nr_dirtied" { print $2 }' /proc/vmstat; }

# kb_loop IMG: attach a loop device to IMG and print its name.
kb_loop() {
	_kl=$(losetup -f) && losetup "$_kl" "$1" && echo "$_kl"
}

# kb_btrfs ROW PROFILE OPTS: one kernel btrfs configuration on fresh
# images: mkfs, mount, fio write then read of a file, the write's dirtied
# pages recorded.
kb_btrfs() {
	_row=$1 _prof=$2 _opts=$3
	wipe raid1
	# shellcheck disable=SC2046
	set -- $(disk_list raid1)
	_l0=$(kb_loop "$1") || kb_die "losetup $1 failed"
	_l1=$(kb_loop "$2") || kb_die "losetup $2 failed"
	if ! mkfs.btrfs -f -d "$_prof" -m raid1 "$_l0" "$_l1" >"$RESULTS/mkfs-$_row.txt" 2>&1; then
		cat "$RESULTS/mkfs-$_row.txt"
		kb_die "mkfs.btrfs -d $_prof failed"
	fi
	mount -t btrfs -o "$_opts,device=$_l0,device=$_l1" "$_l0" "$KB_MNT" || kb_die "mount -t btrfs -o $_opts failed"
	_d0=$(kb_nr_dirtied)
	_w=$(run_fio "$_row-w" "$KB_MNT/f" write --direct=1 --fallocate=none) && sample "$_row" write "$_w"
	_d1=$(kb_nr_dirtied)
	_r=$(run_fio "$_row-r" "$KB_MNT/f" read --direct=1) && sample "$_row" read "$_r"
	echo "$_row $((_d1 - _d0))" >>"$KB_DIRTIED"
	printf '  %-22s read %8s  write %8s MiB/s  (the write dirtied %s pages)\n' "$_row" "$_r" "$_w" "$((_d1 - _d0))"
	umount "$KB_MNT"
	losetup -d "$_l0"
	losetup -d "$_l1"
	[ "$_r" != fail ] && [ "$_w" != fail ]
}

# kb_fsync ROW DEV: ext4 on DEV, then the fsync-heavy job on a file in it;
# its IOPS go to the samples as op "fsync-iops".
kb_fsync() {
	_row=$1 _dev=$2
	mkfs.ext4 -q -F "$_dev" >"$RESULTS/mkfs-$_row.txt" 2>&1 || { cat "$RESULTS/mkfs-$_row.txt"; kb_die "mkfs.ext4 $_dev failed"; }
	mount -t ext4 "$_dev" "$KB_MNT" || kb_die "mount ext4 on $_dev failed"
	_j=$RESULTS/fio-$_row.json
	_iops=fail
	if fio --name="$_row" --filename="$KB_MNT/f" --rw=randwrite --bs=4k --size="$KB_FSYNC_SIZE" --fsync=1 \
		--ioengine=psync --runtime="$KB_FSYNC_SECONDS" --time_based=1 \
		--output-format=json --output="$_j" >/dev/null 2>&1; then
		_iops=$(awk '$1 == "\"write\"" && $2 == ":" { w = 1 } w && $1 == "\"iops\"" { v = $3; sub(/,$/, "", v); printf "%.1f\n", v; exit }' "$_j")
		sample "$_row" fsync-iops "$_iops"
	fi
	printf '  %-22s %8s IOPS (4 KiB random writes, fsync after each)\n' "$_row" "$_iops"
	umount "$KB_MNT"
	[ "$_iops" != fail ]
}

# kb_round: this round's kernel rows and fsync jobs.
kb_round() {
	[ "$KB_ON" = 1 ] || return 0
	for _cfg in $KB_CONFIGS; do
		kb_split "$_cfg"
		kb_btrfs "$_c" "$_p" "$_o" || echo "  $_c: a job failed (see $RESULTS/fio-$_c-*.json)"
	done
	if add_mode bounce nodatasum; then
		kb_fsync fsync-bounce-nodatasum /dev/ublkb0 || true
		del_dev 0
	else
		check "add bounce nodatasum for the fsync job" false
	fi
	wipe raid1
	# shellcheck disable=SC2046
	set -- $(disk_list raid1)
	_l0=$(kb_loop "$1") || kb_die "losetup $1 failed"
	kb_fsync fsync-loop "$_l0" || true
	losetup -d "$_l0"
}

# kb_paired A B OP: the median over rounds of A's figure over B's, each
# round's pair measured in that round (the samples are in round order).
kb_paired() {
	awk -v a="$1" -v b="$2" -v op="$3" '
		$2 == op && $1 == a { x[++na] = $3 }
		$2 == op && $1 == b { y[++nb] = $3 }
		END {
			n = 0
			for (i = 1; i <= na && i <= nb; i++) if (y[i] > 0) r[++n] = x[i] / y[i]
			if (n == 0) { print "-"; exit }
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
			m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
			printf "%.2fx (rounds:", m
			for (i = 1; i <= n; i++) printf " %.2f", r[i]
			print ")"
		}' "$SAMPLES"
}

# kb_verdict ROW: what the write's dirtied pages say about its path.
kb_verdict() {
	awk -v row="$1" -v size="$SIZE" '
		function bytes(s,  n, u) { n = s + 0; u = substr(s, length(s)); if (u == "G") return n * 1073741824; if (u == "M") return n * 1048576; if (u == "K") return n * 1024; return n }
		$1 == row { d += $2; k++ }
		END {
			if (k == 0) { print "-"; exit }
			mib = d / k * 4096 / 1048576
			path = "direct"
			if (mib >= bytes(size) / 1048576 / 2) path = "buffered fallback"
			printf "%.1f MiB of %s: %s\n", mib, size, path
		}' "$KB_DIRTIED"
}

# kb_report: the kernel rows, ours beside them, and the fsync jobs.
kb_report() {
	[ "$KB_ON" = 1 ] || return 0
	echo
	echo "kernel btrfs, Linux $(uname -r), $(mkfs.btrfs --version 2>&1 | head -n 1): 2 loop devices over"
	echo "the same kind of image files (-m raid1), fio 1 MiB O_DIRECT psync QD1 on a file, $SIZE per job,"
	echo "in the same $ROUNDS rounds as the table; MiB/s median (min-max); the write's pages dirtied in the"
	echo "page cache (/proc/vmstat nr_dirtied, mean per round) tell the path it took"
	printf '%-24s | %-22s | %-22s | %s\n' "" read write "O_DIRECT write dirtied"
	for _cfg in $KB_CONFIGS; do
		kb_split "$_cfg"
		set -- $(stats "$_c" read)
		_rd="$2 ($1-$3)"
		set -- $(stats "$_c" write)
		printf '%-24s | %-22s | %-22s | %s\n' "$_c" "$_rd" "$2 ($1-$3)" "$(kb_verdict "$_c")"
	done
	for _s in nodatasum datasum; do
		set -- $(stats "bounce-$_s" write)
		printf '%-24s | %-22s | %-22s | %s\n' "ours bounce-$_s" "$(stats "bounce-$_s" read | awk '{ printf "%s (%s-%s)", $2, $1, $3 }')" "$2 ($1-$3)" "ublk device, raw"
	done
	echo "ratios, median of the rounds' own (write):"
	echo "  ours bounce raid1 nodatasum / kernel raid1 nodatasum: $(kb_paired bounce-nodatasum kbtrfs-raid1-nodatasum write)  (goal >= 3x)"
	echo "  ours bounce raid1 datasum   / kernel raid1 datasum:   $(kb_paired bounce-datasum kbtrfs-raid1-datasum write)"
	echo "  kernel single nodatasum (zero-copy) / kernel raid1 nodatasum: $(kb_paired kbtrfs-single-nodatasum kbtrfs-raid1-nodatasum write)"
	echo "  ours bounce raid1 nodatasum / kernel single nodatasum: $(kb_paired bounce-nodatasum kbtrfs-single-nodatasum write)"
	echo
	echo "fsync-heavy: ext4 (mkfs.ext4 defaults), fio 4 KiB random writes, fsync=1, psync QD1,"
	echo "${KB_FSYNC_SECONDS}s on a $KB_FSYNC_SIZE file per job, same rounds; IOPS median (min-max)"
	for _r in fsync-bounce-nodatasum fsync-loop; do
		set -- $(stats "$_r" fsync-iops)
		printf '  %-24s %8s (%s-%s)\n' "$_r" "$2" "$1" "$3"
	done
	echo "  ours (bounce, raid1: two images) / kernel loop (one image): $(kb_paired fsync-bounce-nodatasum fsync-loop fsync-iops)"
}

# kb_checks: every kernel row and fsync job has its samples.
kb_checks() {
	[ "$KB_ON" = 1 ] || return 0
	for _cfg in $KB_CONFIGS; do
		kb_split "$_cfg"
		_n=$(awk -v row="$_c" '$1 == row' "$SAMPLES" | wc -l)
		check "kernel btrfs $_c: read and write every round ($_n samples)" test "$_n" -eq $((2 * ROUNDS))
	done
	for _r in fsync-bounce-nodatasum fsync-loop; do
		_n=$(awk -v row="$_r" '$1 == row' "$SAMPLES" | wc -l)
		check "fsync job $_r every round ($_n samples)" test "$_n" -eq "$ROUNDS"
	done
}
