#!/usr/bin/env bash
# ublksrv-build.sh [TARBALL]: build ublksrv (the C reference ublk server) from
# the peer-suites snapshot and print the path of its `ublk` binary on stdout.
#
# The build goes to $BTRFSDIO_CACHE/ublksrv-<hash>/ (default cache
# /var/cache/btrfsdio), where <hash> covers the tarball and this script, so it
# is rebuilt only when one of them changes; a finished build is marked by the
# file .built there. Only `ublk` and `ublk.loop` (which `ublk add -t loop`
# execs from its own directory) are built. libublksrv is linked statically,
# so they need only liburing, libstdc++ and libc (mkinitramfs.sh --add-bin copies those via ldd). Build
# dependencies are apt-installed if missing (Debian 12: liburing-dev autoconf
# automake libtool pkg-config g++). Logs go to stderr and build.log.
#
# ublksrv's code stays in the cache: it is a reference to measure against,
# never part of this repository.
set -euo pipefail
TARBALL=${1:-${UBLKSRV_TARBALL:-/work/shared/peer-suites/ublksrv-abbfea2b5918.tar.gz}}
CACHE=${BTRFSDIO_CACHE:-/var/cache/btrfsdio}

log() { printf 'ublksrv-build: %s\n' "$*" >&2; }

[[ -f $TARBALL ]] || { log "no tarball at $TARBALL"; exit 1; }
hash=$(cat "$TARBALL" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
dir=$CACHE/ublksrv-$hash
bin=$dir/src/ublk

if [[ -f $dir/.built && -x $bin ]]; then
	echo "$bin"
	exit 0
fi

need=()
dpkg -s liburing-dev >/dev/null 2>&1 || need+=(liburing-dev)
for t in autoconf:autoconf automake:automake libtoolize:libtool pkg-config:pkg-config g++:g++ make:make; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if ((${#need[@]})); then
	log "apt-get install ${need[*]}"
	apt-get install -y "${need[@]}" >&2
fi

log "building $TARBALL in $dir"
rm -rf "$dir"
mkdir -p "$dir/src"
tar -xzf "$TARBALL" -C "$dir/src" --strip-components=1
{
	# Debian 12's liburing 2.3 lacks the buffer-ring helpers (2.4) that
	# ublksrv's batch-IO path links to; that path needs UBLK_F_BATCH_IO, which
	# Linux 6.12 does not have, so stubs that fail with -ENOSYS stand in.
	cat >"$dir/uring-compat.c" <<-'EOF'
		#include <errno.h>
		#include <stddef.h>
		#include <liburing.h>
		struct io_uring_buf_ring *io_uring_setup_buf_ring(struct io_uring *r, unsigned int n, int bgid, unsigned int f, int *ret)
		{ (void)r; (void)n; (void)bgid; (void)f; *ret = -ENOSYS; return NULL; }
		int io_uring_free_buf_ring(struct io_uring *r, struct io_uring_buf_ring *br, unsigned int n, int bgid)
		{ (void)r; (void)br; (void)n; (void)bgid; return -ENOSYS; }
	EOF
	gcc -O2 -c "$dir/uring-compat.c" -o "$dir/uring-compat.o"
	cd "$dir/src"
	autoreconf -i
	./configure --disable-shared --enable-static
	# Only the two programs the benchmarks run; the static C++ library
	# needs libstdc++ at link time.
	make -C lib -j"$(nproc)"
	make -j"$(nproc)" LIBS="-lstdc++ $dir/uring-compat.o -luring" ublk ublk.loop
} >"$dir/build.log" 2>&1 || {
	log "build failed; tail of $dir/build.log:"
	tail -n 30 "$dir/build.log" >&2
	exit 1
}
# With --disable-shared the program is the real ELF, not a libtool wrapper.
# `ublk add -t loop` execs ublk.loop from its own directory.
[[ -x $bin && -x $bin.loop ]] && head -c4 "$bin" | grep -q ELF || { log "no ELF ublk/ublk.loop binaries at $bin"; exit 1; }
touch "$dir/.built"

echo "$bin"
