#!/usr/bin/env bash
# bench-vm-loop.sh [--rounds N] [--runtime SEC] [--base COMMIT] [--configs A,B,...]
#                  [--jobs A,B,...] [--cpu-profile] [--workdir DIR] [vm-run.sh options]
# Runs scripts/guest/bench-loop in the VM (make bench-vm-loop): our loop
# target, ublksrv's (scripts/ublksrv-build.sh, its ublk and ublk.loop added to
# the initramfs) and the kernel loop device on the same file, with our
# server's per-request counters in WORKDIR/results/profile/ (and its CPU
# profile with --cpu-profile: off by default, since the profiler's SIGPROF
# ticks interrupt the queue's io_uring_enter, which ublksrv does not pay;
# --jobs picks fio jobs of scripts/guest/bench-loop). --base COMMIT
# also builds btrfsdio at COMMIT (git archive into a temporary directory) for
# the base-qN columns, measured in the same run.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPTS_DIR")
ROUNDS=1 RUNTIME=3 BASE="" CONFIGS="" JOBS="" CPU=0 WORKDIR=$REPO_DIR/.vm-bench-loop
EXTRA=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--rounds) ROUNDS=${2:?}; shift 2 ;;
	--runtime) RUNTIME=${2:?}; shift 2 ;;
	--base) BASE=${2?}; shift 2 ;;
	--configs) CONFIGS=${2:?}; shift 2 ;;
	--jobs) JOBS=${2:?}; shift 2 ;;
	--cpu-profile) CPU=1; shift ;;
	--workdir) WORKDIR=${2:?}; shift 2 ;;
	*) EXTRA+=("$1"); shift ;;
	esac
done

ublk=$("$SCRIPTS_DIR/ublksrv-build.sh")
args=(--add-bin "$ublk" --add-bin "$ublk.loop" --env "UBLKSRV=$ublk")
default=ours-q1,ours-q2,ublksrv-q1,ublksrv-q2,kloop
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-vm-loop.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [[ -n $BASE ]]; then
	(cd "$REPO_DIR" && git archive "$BASE") | tar -x -C "$tmp"
	mkdir -p "$WORKDIR"
	(cd "$tmp" && CGO_ENABLED=0 go build -o "$WORKDIR/btrfsdio-base" ./cmd/btrfsdio)
	args+=(--add-bin "$WORKDIR/btrfsdio-base" --env "BENCH_BASE_BIN=$WORKDIR/btrfsdio-base")
	default=base-q1,ours-q1,base-q2,ours-q2,ublksrv-q1,ublksrv-q2,kloop
fi
exec "$SCRIPTS_DIR/vm-run.sh" --tests "$SCRIPTS_DIR/guest" --script bench-loop --disks 1 --disk-size 16M \
	--module loop --workdir "$WORKDIR" --timeout 5400 "${args[@]}" \
	--env "BENCH_ROUNDS=$ROUNDS" --env "BENCH_RUNTIME=$RUNTIME" --env "BENCH_CONFIGS=${CONFIGS:-$default}" \
	--env BTRFSDIO_PROFILE_DIR=/results/profile --env "BTRFSDIO_PROFILE_CPU=$CPU" \
	${JOBS:+--env "BENCH_JOBS=$JOBS"} "${EXTRA[@]}"
