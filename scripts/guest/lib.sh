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
	name=$1
	shift
	if "$@"; then
		echo "ok - $name"
		PASS=$((PASS + 1))
	else
		echo "not ok - $name"
		FAIL=$((FAIL + 1))
	fi
}

# is_positive N: N is a number above zero.
is_positive() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ]; }

# finish: the closing line the CI reads, and the exit code.
finish() {
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ]
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
	for d in $DISKS; do
		[ "$i" -lt "$n" ] || break
		out="$out -f $d"
		i=$((i + 1))
	done
	echo "$out"
}

# disk_list PROFILE: the same disks as plain words.
disk_list() { disk_args "$1" | sed 's/-f //g'; }

# wipe PROFILE [MiB]: zero the start of the profile's disks, so that the
# copies of a fresh volume agree before the test writes anything.
wipe() {
	for d in $(disk_list "$1"); do
		dd if=/dev/zero of="$d" bs=1M count="${2:-160}" conv=fsync 2>/dev/null
	done
}

# add_dev ID PROFILE MODE [extra add flags...]: start a btrfsdio device
# and wait for its block node.
add_dev() {
	id=$1
	prof=$2
	mode=$3
	shift 3
	# shellcheck disable=SC2046 # disk_args is a flag list
	"$BIN" add -t btrfsdio -n "$id" --profile "$prof" --dio "$mode" $(disk_args "$prof") "$@" >"$RESULTS/add-$id.txt" 2>&1 || {
		cat "$RESULTS/add-$id.txt"
		cat /var/log/btrfsdio/ublk"$id".log 2>/dev/null | tail -20
		return 1
	}
	i=0
	while [ ! -b /dev/ublkb"$id" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -b /dev/ublkb"$id" ]
}

# del_dev ID: delete the device and wait for its nodes to go.
del_dev() {
	"$BIN" del -n "$1" || return 1
	i=0
	while [ -e /dev/ublkc"$1" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
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
