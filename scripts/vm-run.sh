#!/usr/bin/env bash
# vm-run.sh: run guest test scripts against our server on Debian's 6.12 kernel
# in qemu (TCG unless KVM works), with N virtio-blk disks and a results share.
#
# Usage: scripts/vm-run.sh [options]
#   --binary PATH       server binary for /bin/btrfsdio (default: build ./cmd/btrfsdio)
#   --tests DIR         guest scripts, copied to /tests (default scripts/guest-smoke)
#   --script NAME       run /tests/NAME instead of /tests/run
#   --disks N           number of virtio disks /dev/vda.. (default 4)
#   --disk-size SIZE    size of each sparse raw image (default 256M)
#   --keep-disks        reuse existing images instead of recreating them
#   --workdir DIR       images, initramfs, console.log, results/ (default <repo>/.vm-work)
#   --timeout SEC       kill qemu and fail after SEC seconds (default 900)
#   --accel MODE        auto|kvm|tcg (default auto: KVM only if a probe boot works)
#   --disk-cache MODE   qemu cache= for the images: auto|none|writeback (default auto)
#   --no-9p             no 9p share: results come back over the serial console
#   --env KEY=VALUE     export KEY to the guest script (repeatable, no spaces)
#   --append ARGS       extra kernel command line
#   --ro-disk PATH,SERIAL  attach PATH read-only as one more virtio disk after the
#                       scratch disks, with that serial (the peer suites' rootfs)
#   --module NAME, --optional-module NAME, --add-bin PATH   passed to mkinitramfs.sh
# Env: BTRFSDIO_CACHE (download cache, default /var/cache/btrfsdio),
#      BTRFSDIO_VM_MEM (default 2G), BTRFSDIO_VM_SMP (default 2).
# Exit status: the guest script's (from "BTRFSDIO-VM: EXIT <code>"), 1 when the
# marker is missing or the kernel logged BUG:/WARNING:/Oops/Kernel panic, 124 on timeout.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPTS_DIR")
readonly SCRIPTS_DIR REPO_DIR
readonly QBOOT=/usr/share/qemu/qboot.rom
readonly KERNEL_ERROR_RE='\[ *[0-9]+\.[0-9]+\] .*(BUG:|WARNING:|Oops|Kernel panic)'

BINARY='' TESTS=$SCRIPTS_DIR/guest-smoke SCRIPT='' NDISKS=4 DISK_SIZE=256M KEEP_DISKS=0
WORKDIR=$REPO_DIR/.vm-work TIMEOUT=900 ACCEL=auto DISK_CACHE=auto USE_9P=1 APPEND=''
GUEST_ENV=() MKINITRAMFS_ARGS=() RO_DISKS=()
MEM=${BTRFSDIO_VM_MEM:-2G} SMP=${BTRFSDIO_VM_SMP:-2}
QEMU_JOB='' QEMU_PIDFILE=''

log() { printf 'vm-run: %s\n' "$*" >&2; }
die() { printf 'vm-run: error: %s\n' "$*" >&2; exit 1; }

usage() {
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

parse_args() {
	while [[ $# -gt 0 ]]; do
		case $1 in
		--binary) BINARY=${2:?}; shift 2 ;;
		--tests) TESTS=${2:?}; shift 2 ;;
		--script) SCRIPT=${2:?}; shift 2 ;;
		--disks) NDISKS=${2:?}; shift 2 ;;
		--disk-size) DISK_SIZE=${2:?}; shift 2 ;;
		--keep-disks) KEEP_DISKS=1; shift ;;
		--workdir) WORKDIR=${2:?}; shift 2 ;;
		--timeout) TIMEOUT=${2:?}; shift 2 ;;
		--accel) ACCEL=${2:?}; shift 2 ;;
		--disk-cache) DISK_CACHE=${2:?}; shift 2 ;;
		--no-9p) USE_9P=0; shift ;;
		--env) GUEST_ENV+=("${2:?}"); shift 2 ;;
		--append) APPEND+=" ${2:?}"; shift 2 ;;
		--ro-disk) RO_DISKS+=("${2:?}"); shift 2 ;;
		--module | --optional-module | --add-bin) MKINITRAMFS_ARGS+=("$1" "${2:?}"); shift 2 ;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	[[ $NDISKS =~ ^[0-9]+$ && $NDISKS -le 20 ]] || die "--disks must be 0..20, got $NDISKS"
	[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"
	[[ $ACCEL =~ ^(auto|kvm|tcg)$ ]] || die "--accel must be auto, kvm or tcg"
	[[ $DISK_CACHE =~ ^(auto|none|writeback)$ ]] || die "--disk-cache must be auto, none or writeback"
	[[ -d $TESTS ]] || die "tests dir $TESTS does not exist"
	[[ -z $SCRIPT || $SCRIPT =~ ^[A-Za-z0-9._/-]+$ ]] || die "bad --script name: $SCRIPT"
	local kv
	for kv in "${RO_DISKS[@]}"; do
		[[ $kv =~ ^[^,]+,[A-Za-z0-9_-]+$ && -f ${kv%,*} ]] || die "bad --ro-disk $kv (an existing PATH,SERIAL)"
	done
	for kv in "${GUEST_ENV[@]}"; do
		[[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*$ ]] || die "bad --env $kv (KEY=VALUE, no spaces)"
	done
}

# ---- qemu process handling ------------------------------------------------

# stop_qemu: end the qemu this script started (timeout wrapper, then pidfile).
stop_qemu() {
	local pid
	if [[ -n $QEMU_JOB ]] && kill -0 "$QEMU_JOB" 2>/dev/null; then
		kill -TERM "$QEMU_JOB" 2>/dev/null || true
	fi
	if [[ -n $QEMU_PIDFILE && -s $QEMU_PIDFILE ]]; then
		pid=$(<"$QEMU_PIDFILE")
		if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == qemu-system-* ]]; then
			kill -TERM "$pid" 2>/dev/null || true
			sleep 1
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	QEMU_JOB=''
}

on_exit() { stop_qemu; }

# run_qemu SECONDS LOGFILE ARGS...: qemu with the serial console on stdout and
# in LOGFILE; returns qemu's status (124 on timeout).
run_qemu() {
	local secs=$1 logfile=$2 rc=0
	shift 2
	rm -f -- "$logfile" "$QEMU_PIDFILE"
	timeout -k 10 "$secs" qemu-system-x86_64 -nodefaults -nographic -no-reboot \
		-pidfile "$QEMU_PIDFILE" \
		-chardev "stdio,id=con0,signal=off,logfile=$logfile" -serial chardev:con0 \
		"$@" </dev/null &
	QEMU_JOB=$!
	wait "$QEMU_JOB" || rc=$?
	QEMU_JOB=''
	return "$rc"
}

# ---- preparation ----------------------------------------------------------

lock_workdir() {
	mkdir -p "$WORKDIR" || die "cannot create workdir $WORKDIR"
	WORKDIR=$(cd "$WORKDIR" && pwd)
	exec 8>"$WORKDIR/.lock"
	flock -n 8 || die "workdir $WORKDIR is in use by another vm-run (pass --workdir)"
	QEMU_PIDFILE=$WORKDIR/qemu.pid
}

build_binary() {
	if [[ -n $BINARY ]]; then
		[[ -f $BINARY && -x $BINARY ]] || die "--binary $BINARY is not an executable file"
		return 0
	fi
	[[ -d $REPO_DIR/cmd/btrfsdio ]] || die "no $REPO_DIR/cmd/btrfsdio yet: pass --binary PATH"
	command -v go >/dev/null || die "go not found in PATH (needed to build ./cmd/btrfsdio)"
	mkdir -p "$WORKDIR/out"
	log "building ./cmd/btrfsdio (CGO_ENABLED=0)"
	(cd "$REPO_DIR" && CGO_ENABLED=0 go build -o "$WORKDIR/out/btrfsdio" ./cmd/btrfsdio) ||
		die "go build ./cmd/btrfsdio failed"
	BINARY=$WORKDIR/out/btrfsdio
}

build_initramfs() {
	"$SCRIPTS_DIR/mkinitramfs.sh" --binary "$BINARY" --tests "$TESTS" \
		--output "$WORKDIR/initramfs.cpio.gz" "${MKINITRAMFS_ARGS[@]}" ||
		die "mkinitramfs.sh failed"
}

make_disks() {
	local i img
	if [[ $KEEP_DISKS == 0 ]]; then
		rm -f -- "$WORKDIR"/disk*.img
	fi
	for ((i = 0; i < NDISKS; i++)); do
		img=$WORKDIR/disk$i.img
		[[ -f $img ]] || truncate -s "$DISK_SIZE" "$img" || die "cannot create $img ($DISK_SIZE)"
	done
}

# pick_disk_cache: cache=none (O_DIRECT on the host) where the workdir's
# filesystem supports O_DIRECT, writeback otherwise (tmpfs).
pick_disk_cache() {
	[[ $DISK_CACHE != auto ]] && return 0
	if dd if=/dev/zero of="$WORKDIR/.odirect-probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
		DISK_CACHE=none
	else
		DISK_CACHE=writeback
	fi
	rm -f -- "$WORKDIR/.odirect-probe"
}

# kvm_works: boot the kernel without an initramfs under KVM; it must reach
# the "no root fs" panic (and reboot, i.e. exit) quickly. Cached per host.
kvm_works() {
	local stamp log
	[[ -r /dev/kvm && -w /dev/kvm ]] || return 1
	stamp=$BTRFSDIO_CACHE/kvm-probe-$( (uname -r; qemu-system-x86_64 --version | head -n 1; echo "$BTRFSDIO_KVER") | sha256sum | cut -c1-12)
	if [[ ! -f $stamp ]]; then
		log "probing KVM"
		log=$WORKDIR/kvm-probe.log
		if run_qemu 30 "$log" -accel kvm -cpu max -smp 1 -m 512M -kernel "$BTRFSDIO_VMLINUZ" \
			-append "console=ttyS0 panic=-1 loglevel=1" >/dev/null 2>&1 &&
			grep -q 'Kernel panic' "$log"; then
			echo yes >"$stamp"
		else
			echo no >"$stamp"
		fi
	fi
	[[ $(<"$stamp") == yes ]]
}

pick_accel() {
	if [[ $ACCEL == auto ]]; then
		ACCEL=tcg
		kvm_works && ACCEL=kvm
	fi
	case $ACCEL in
	kvm) ACCEL_ARGS=(-accel kvm -cpu max) ;;
	*) ACCEL_ARGS=(-accel "tcg,thread=multi" -cpu max) ;;
	esac
}

qemu_args() {
	local i cmdline kv
	cmdline="console=ttyS0 panic=-1 loglevel=5 printk.time=1 edd=off"
	[[ -n $SCRIPT ]] && cmdline+=" btrfsdio.script=$SCRIPT"
	for kv in "${GUEST_ENV[@]}"; do cmdline+=" btrfsdio.env=$kv"; done
	cmdline+=$APPEND
	QEMU_ARGS=("${ACCEL_ARGS[@]}" -smp "$SMP" -m "$MEM")
	# qboot: a minimal firmware that boots -kernel directly (no SeaBIOS screen codes).
	[[ -f $QBOOT ]] && QEMU_ARGS+=(-bios "$QBOOT")
	QEMU_ARGS+=(-kernel "$BTRFSDIO_VMLINUZ" -initrd "$WORKDIR/initramfs.cpio.gz" -append "$cmdline")
	for ((i = 0; i < NDISKS; i++)); do
		QEMU_ARGS+=(-drive "file=$WORKDIR/disk$i.img,if=none,id=vd$i,format=raw,cache=$DISK_CACHE"
			-device "virtio-blk-pci,drive=vd$i,serial=btrfsdio-disk$i")
	done
	for ((i = 0; i < ${#RO_DISKS[@]}; i++)); do
		kv=${RO_DISKS[$i]}
		QEMU_ARGS+=(-drive "file=${kv%,*},if=none,id=ro$i,format=raw,readonly=on,cache=$DISK_CACHE"
			-device "virtio-blk-pci,drive=ro$i,serial=${kv##*,}")
	done
	if [[ $USE_9P == 1 ]]; then
		QEMU_ARGS+=(-virtfs "local,path=$WORKDIR/results,mount_tag=results,security_model=none,id=results")
	fi
}

# ---- after the run --------------------------------------------------------

# strip_console: qemu logs the raw serial stream; drop the CRs of its CRLFs.
strip_console() {
	[[ -f $WORKDIR/console.log ]] || : >"$WORKDIR/console.log"
	sed -i 's/\r$//' "$WORKDIR/console.log"
}

# fetch_serial_results: unpack the base64 tar.gz the guest printed when it had no 9p share.
fetch_serial_results() {
	local log=$WORKDIR/console.log
	grep -aq '^BTRFSDIO-VM: RESULTS serial' "$log" || return 0
	if ! grep -aq '^BTRFSDIO-VM: RESULTS-END' "$log"; then
		log "warning: results were sent over serial but RESULTS-END is missing"
		return 0
	fi
	sed -n '/^BTRFSDIO-VM: RESULTS-BEGIN/,/^BTRFSDIO-VM: RESULTS-END/p' "$log" |
		grep -E '^[A-Za-z0-9+/=]+$' | base64 -d | tar -xzf - -C "$WORKDIR/results" ||
		log "warning: could not unpack the results sent over serial"
}

# kernel_errors: prints kernel BUG/WARNING/Oops/panic lines from the console and dmesg.
kernel_errors() {
	local files=("$WORKDIR/console.log")
	[[ -f $WORKDIR/results/dmesg.txt ]] && files+=("$WORKDIR/results/dmesg.txt")
	grep -ahE "$KERNEL_ERROR_RE" "${files[@]}" | sort -u || true
}

guest_exit_code() {
	{ grep -aoE 'BTRFSDIO-VM: EXIT [0-9]+' "$WORKDIR/console.log" || true; } | tail -n 1 | cut -d' ' -f3
}

# verdict QEMU_RC: logs every reason for failure; returns 124 on timeout,
# else the guest's non-zero code, else 1 for any other failure, else 0.
verdict() {
	local qemu_rc=$1 code errors rc=0
	code=$(guest_exit_code)
	errors=$(kernel_errors)
	if [[ -n $errors ]]; then
		log "FAIL: the kernel reported errors:"
		printf '%s\n' "$errors" >&2
		rc=1
	fi
	if [[ -z $code ]]; then
		log "FAIL: no 'BTRFSDIO-VM: EXIT' marker (qemu status $qemu_rc)"
		rc=1
	elif [[ $code != 0 ]]; then
		log "FAIL: guest script exited with $code"
		rc=$code
	fi
	if [[ $qemu_rc == 124 || $qemu_rc == 137 ]]; then
		log "FAIL: timeout after ${TIMEOUT}s, qemu killed"
		rc=124
	fi
	if [[ $rc == 0 ]]; then
		log "PASS (results: $WORKDIR/results, console: $WORKDIR/console.log)"
	else
		log "console: $WORKDIR/console.log"
	fi
	return "$rc"
}

main() {
	local env qemu_rc=0 start
	parse_args "$@"
	trap on_exit EXIT
	trap 'die "interrupted"' INT TERM
	env=$("$SCRIPTS_DIR/vm-deps.sh") || die "vm-deps.sh failed"
	eval "$env"
	lock_workdir
	build_binary
	build_initramfs
	make_disks
	rm -rf -- "$WORKDIR/results"
	mkdir -p "$WORKDIR/results"
	pick_disk_cache
	pick_accel
	qemu_args
	log "booting $BTRFSDIO_KVER ($ACCEL, ${SMP} cpus, $MEM, $NDISKS disks of $DISK_SIZE, cache=$DISK_CACHE, timeout ${TIMEOUT}s)"
	start=$SECONDS
	run_qemu "$TIMEOUT" "$WORKDIR/console.log" "${QEMU_ARGS[@]}" || qemu_rc=$?
	log "qemu finished after $((SECONDS - start))s with status $qemu_rc"
	strip_console
	fetch_serial_results
	verdict "$qemu_rc"
}

main "$@"
