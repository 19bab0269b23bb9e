#!/usr/bin/env bash
# vm-smoke.sh: prove the VM harness end to end. Builds a static Go hello
# program in a temp dir (stand-in for /bin/btrfsdio), runs scripts/guest-smoke
# in the VM via vm-run.sh, then checks on the host that the guest's results
# file arrived and that the ext4 image the guest wrote is clean and readable.
# Usage: scripts/vm-smoke.sh [vm-run.sh options]  (default --workdir <repo>/.vm-work/smoke)
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPTS_DIR")
readonly SCRIPTS_DIR REPO_DIR
readonly HELLO=btrfsdio-smoke-hello
TMP=''

log() { printf 'vm-smoke: %s\n' "$*" >&2; }
die() { printf 'vm-smoke: FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() { [[ -z $TMP ]] || rm -rf -- "$TMP"; }

build_hello() {
	mkdir -p "$TMP/hello"
	printf 'module hello\n\ngo 1.21\n' >"$TMP/hello/go.mod"
	printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("%s") }\n' "$HELLO" >"$TMP/hello/main.go"
	(cd "$TMP/hello" && CGO_ENABLED=0 GOFLAGS='' GOWORK=off go build -o "$TMP/hello/hello" .) ||
		die "cannot build the Go hello program"
}

# workdir_of ARGS...: the last --workdir among the arguments.
workdir_of() {
	local wd=$REPO_DIR/.vm-work/smoke
	while [[ $# -gt 0 ]]; do
		[[ $1 == --workdir && $# -ge 2 ]] && wd=$2
		shift
	done
	printf '%s\n' "$wd"
}

check_host_side() {
	local wd=$1 img
	grep -q '^smoke ok' "$wd/results/smoke.txt" 2>/dev/null || die "results/smoke.txt missing on the host"
	img=$wd/disk1.img
	e2fsck -f -n "$img" >/dev/null 2>&1 || die "host e2fsck -n of $img failed"
	debugfs -R 'cat /hello.txt' "$img" 2>/dev/null | grep -q 'btrfsdio smoke test' ||
		die "hello.txt not readable from $img on the host"
	cmp -s -n 8388608 "$wd/disk0.img" /dev/zero && die "fio left $wd/disk0.img all zero"
	log "host checks: results file, e2fsck and debugfs of disk1.img, fio data on disk0.img: ok"
}

main() {
	local wd start=$SECONDS
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/btrfsdio-smoke.XXXXXX")
	trap cleanup EXIT
	command -v go >/dev/null || die "go not found in PATH"
	build_hello
	wd=$(workdir_of "$@")
	"$SCRIPTS_DIR/vm-run.sh" --workdir "$wd" --binary "$TMP/hello/hello" \
		--tests "$SCRIPTS_DIR/guest-smoke" --disks 4 --disk-size 256M \
		--env "SMOKE_HELLO=$HELLO" --timeout 600 "$@" || die "vm-run.sh failed (status $?)"
	check_host_side "$wd"
	log "PASS in $((SECONDS - start))s"
}

main "$@"
