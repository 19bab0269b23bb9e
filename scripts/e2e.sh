#!/usr/bin/env bash
# e2e.sh SCRIPT [vm-run.sh options]: run a guest script (scripts/guest/SCRIPT)
# against real ublk devices. Natively when this host has (or can load) the
# ublk driver, on loop devices over scratch image files; otherwise in the
# qemu VM with Debian's 6.12 kernel (scripts/vm-run.sh).
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPTS_DIR")
SCRIPT=${1:?usage: e2e.sh SCRIPT [vm-run.sh options]}
shift

log() { printf 'e2e: %s\n' "$*" >&2; }

have_ublk() {
	[[ -c /dev/ublk-control ]] || modprobe ublk_drv 2>/dev/null && [[ -c /dev/ublk-control ]]
}

run_native() {
	local work loops=() i
	work=$(mktemp -d "${TMPDIR:-/tmp}/btrfsdio-e2e.XXXXXX")
	trap 'for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done; rm -rf "$work"' EXIT
	(cd "$REPO_DIR" && CGO_ENABLED=0 go build -o "$work/btrfsdio" ./cmd/btrfsdio)
	for i in 0 1 2 3; do
		truncate -s 256M "$work/disk$i.img"
		loops+=("$(losetup -f --show "$work/disk$i.img")")
	done
	log "native run on ${loops[*]}"
	BTRFSDIO_DISKS="${loops[*]}" BTRFSDIO_RESULTS="$work/results" BTRFSDIO_BIN="$work/btrfsdio" \
		sh "$SCRIPTS_DIR/guest/$SCRIPT"
}

if have_ublk; then
	run_native
else
	log "no ublk driver on this host: running in the VM"
	exec "$SCRIPTS_DIR/vm-run.sh" --tests "$SCRIPTS_DIR/guest" --script "$SCRIPT" --disks 4 --disk-size 256M "$@"
fi
