# Shared helpers of the guest scripts (POSIX sh, busybox-compatible).
# In the VM, /init sets BTRFSDIO_VM=1, BTRFSDIO_DISKS, BTRFSDIO_RESULTS and
# BTRFSDIO_BIN. On a host with /dev/ublk-control set them yourself, with
# scratch devices only: the scripts overwrite every disk they are given.

BIN=${BTRFSDIO_BIN:-/bin/btrfsdio}
RESULTS=${BTRFSDIO_RESULTS:-/results}
DISKS=${BTRFSDIO_DISKS:-}
PASS=0
FAIL=0
mkdir -p "$RESULTS"

if [ "${BTRFSDIO_VM:-0}" != 1 ] && [ -z "$DISKS" ]; then
	echo "refusing to run outside the VM without BTRFSDIO_DISKS (scratch disks)" >&2
	exit 2
fi

# check NAME CMD...: run a check, count it, print TAP-like lines.
check() {
	_check_name=$1
	shift
	if "$@"; then
		echo "ok - $_check_name"
		PASS=$((PASS + 1))
	else
		echo "not ok - $_check_name"
		FAIL=$((FAIL + 1))
	fi
}

# is_positive N: N is a number above zero.
is_positive() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ]; }

# finish: the closing line the CI reads, and the exit code.
finish() {
	mkdir -p "$RESULTS/logs" && cp /var/log/btrfsdio/*.log "$RESULTS/logs/" 2>/dev/null
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ]
}

# Backing stores: DEVS is what -f gets. use_disks keeps the virtio disks
# (their images can be inspected from the host); use_images gives every
# device fresh sparse image files on a tmpfs, so no test sees another's data.
DEVS=$DISKS
IMGDIR=${BTRFSDIO_IMGDIR:-/scratch}
use_disks() { DEVS=$DISKS; }
use_images() {
	mkdir -p "$IMGDIR"
	mountpoint -q "$IMGDIR" 2>/dev/null || mount -t tmpfs -o size=1200m scratch "$IMGDIR"
	DEVS="$IMGDIR/d0.img $IMGDIR/d1.img $IMGDIR/d2.img $IMGDIR/d3.img"
}

# ndisks PROFILE: devices the profile is tested with.
ndisks() {
	case $1 in
	single | dup) echo 1 ;;
	raid0 | raid1) echo 2 ;;
	raid1c3 | raid5) echo 3 ;;
	*) echo 4 ;;
	esac
}

# disk_args PROFILE: "-f /dev/vda -f /dev/vdb ..." for the profile.
disk_args() {
	n=$(ndisks "$1")
	out=
	i=0
	for d in $DEVS; do
		[ "$i" -lt "$n" ] || break
		out="$out -f $d"
		i=$((i + 1))
	done
	echo "$out"
}

# disk_list PROFILE: the same disks as plain words.
disk_list() { disk_args "$1" | sed 's/-f //g'; }

# wipe PROFILE [MiB]: make the profile's stores blank, so that the copies of
# a fresh volume agree before the test writes anything: new sparse images,
# or the first MiB of each disk zeroed (enough for tests that stay there).
wipe() {
	for d in $(disk_list "$1"); do
		if [ -b "$d" ]; then
			dd if=/dev/zero of="$d" bs=1M count="${2:-160}" conv=fsync 2>/dev/null
		else
			rm -f "$d" && truncate -s "${IMG_SIZE:-192M}" "$d"
		fi
	done
}

# add_dev ID PROFILE MODE [extra add flags...]: start a btrfsdio device
# and wait for its block node.
add_dev() {
	_id=$1
	_prof=$2
	_mode=$3
	shift 3
	# shellcheck disable=SC2046 # disk_args is a flag list
	"$BIN" add -t btrfsdio -n "$_id" --profile "$_prof" --dio "$_mode" $(disk_args "$_prof") "$@" >"$RESULTS/add-$_id.txt" 2>&1 || {
		cat "$RESULTS/add-$_id.txt"
		tail -20 /var/log/btrfsdio/ublk"$_id".log 2>/dev/null
		return 1
	}
	_i=0
	while [ ! -b /dev/ublkb"$_id" ] && [ $_i -lt 100 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	[ -b /dev/ublkb"$_id" ]
}

# del_dev ID: delete the device and wait for its nodes to go.
del_dev() {
	"$BIN" del -n "$1" || return 1
	_i=0
	while [ -e /dev/ublkc"$1" ] && [ $_i -lt 100 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	[ ! -e /dev/ublkc"$1" ]
}

# scrub_diffs PROFILE: differing sectors + parity mismatches found offline.
scrub_diffs() {
	# shellcheck disable=SC2046
	out=$("$BIN" scrub --profile "$1" $(disk_args "$1") 2>&1)
	echo "$out" >>"$RESULTS/scrub.txt"
	echo "$out" | sed -n 's/.* checked, \([0-9]*\) differing, \([0-9]*\) parity.*/\1 \2/p' |
		awk '{print $1 + $2}'
}

# fio_mibs ARGS...: run one fio job and print its bandwidth in MiB/s.
fio_mibs() {
	fio --output-format=terse --terse-version=3 --eta=never "$@" 2>/dev/null |
		awk -F';' '{ r = $7; w = $48; printf "%.1f\n", (r + w) / 1024 }'
}
