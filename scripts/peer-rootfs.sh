#!/usr/bin/env bash
# peer-rootfs.sh: build (once) the Debian 12 guest root filesystem that runs
# the peer suites (fstests, blktests) against our device, and print its path.
#
# Usage: scripts/peer-rootfs.sh [--print-key] [--force]
#   --print-key   print the cache key (hash of the inputs) and exit
#   --force       rebuild even when the cached image exists
#
# The image is an ext4 filesystem image (sparse, read-only in the guest, an
# overlay on tmpfs takes the writes) made of:
#  - Debian 12 (mmdebstrap --variant=minbase from this host's Debian mirror)
#    with the packages of PACKAGES below (bash, perl, gawk, xfsprogs, fio,
#    dmsetup, attr/acl tools ...);
#  - fstests in /opt/fstests and blktests in /opt/blktests, built on this host
#    (Debian 12 too: the same libraries) from the snapshots in
#    $PEER_SUITES (default /work/shared/peer-suites), never from our tree;
#  - the cached Debian 6.12 kernel's modules in /lib/modules (modprobe for
#    loop, dm-flakey, dm-log-writes, xfs, scsi_debug ...);
#  - fstests' users (fsgqa, 123456-fsgqa, fsgqa2).
# It is cached as $BTRFSDIO_CACHE/peer/rootfs-<key>.img, <key> a hash of the
# package list, the mirror lines, the tarballs, the kernel release and this
# script; rebuilt only when one of them changes. Build dependencies
# (mmdebstrap, the -dev packages) are apt-get installed when missing.
# Env: BTRFSDIO_CACHE (default /var/cache/btrfsdio), PEER_SUITES,
#      PEER_MIRROR (default: the deb.debian.org URIs of the host's sources).
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$SCRIPTS_DIR/$(basename "${BASH_SOURCE[0]}")
readonly SCRIPTS_DIR SELF
BTRFSDIO_CACHE=${BTRFSDIO_CACHE:-/var/cache/btrfsdio}
PEER_SUITES=${PEER_SUITES:-/work/shared/peer-suites}
readonly FSTESTS_TGZ=fstests-63a29724a85f.tar.gz
readonly BLKTESTS_TGZ=blktests-613b8377e4d3.tar.gz
readonly IMG_SIZE=3G

# What the guest runs: fstests' and blktests' documented dependencies plus
# the runtime libraries of their C helpers (checked with ldd after the build);
# bsdextrautils for blktests' column and hexdump (block/012).
readonly PACKAGES=(bash perl gawk bc psmisc attr acl util-linux kmod xfsprogs e2fsprogs
	fio dmsetup sed grep coreutils findutils procps diffutils file hostname passwd
	libaio1 liburing2 libgdbm6 libuuid1 libattr1 libacl1 libinih1 libcap2-bin uuid-runtime
	xz-utils keyutils quota jq udev bsdextrautils)
# Host build dependencies of fstests and blktests.
readonly BUILD_DEPS=(mmdebstrap make gcc g++ autoconf automake libtool pkg-config
	xfslibs-dev uuid-dev libattr1-dev libacl1-dev libaio-dev libgdbm-dev liburing-dev
	libinih-dev libblkid-dev libcap-dev)

FORCE=0 PRINT_KEY=0 WORK=''

log() { printf 'peer-rootfs: %s\n' "$*" >&2; }
die() { printf 'peer-rootfs: error: %s\n' "$*" >&2; exit 1; }

parse_args() {
	while [[ $# -gt 0 ]]; do
		case $1 in
		--force) FORCE=1; shift ;;
		--print-key) PRINT_KEY=1; shift ;;
		-h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit 2 ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
}

# mirror_lines: one-line apt sources for mmdebstrap, from PEER_MIRROR or the
# host's deb822 debian.sources (only the Debian archive, no third parties).
mirror_lines() {
	if [[ -n ${PEER_MIRROR:-} ]]; then
		printf '%s\n' "$PEER_MIRROR"
		return 0
	fi
	local uri='' sec='' f=/etc/apt/sources.list.d/debian.sources
	if [[ -f $f ]]; then
		uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' "$f")
		sec=$(awk '/^URIs:/ && $2 ~ /security/ { print $2; exit }' "$f")
	fi
	printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
		"${uri:-http://deb.debian.org/debian}" "${uri:-http://deb.debian.org/debian}" \
		"${sec:-http://deb.debian.org/debian-security}"
}

cache_key() {
	{
		sha256sum "$SELF" | cut -d' ' -f1
		printf '%s\n' "${PACKAGES[@]}"
		mirror_lines
		sha256sum "$PEER_SUITES/$FSTESTS_TGZ" "$PEER_SUITES/$BLKTESTS_TGZ" | cut -d' ' -f1
		echo "$BTRFSDIO_KVER"
	} | sha256sum | cut -c1-16
}

install_build_deps() {
	local missing=() p
	for p in "${BUILD_DEPS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	log "apt-get install ${missing[*]}"
	{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } \
		>>"$BTRFSDIO_CACHE/apt.log" 2>&1 || die "apt-get install failed (see $BTRFSDIO_CACHE/apt.log)"
}

# build_suites DIR: unpack and build fstests and blktests under DIR.
build_suites() {
	local dir=$1
	tar -xzf "$PEER_SUITES/$FSTESTS_TGZ" -C "$dir"
	tar -xzf "$PEER_SUITES/$BLKTESTS_TGZ" -C "$dir"
	[[ -d $dir/fstests && -d $dir/blktests ]] || die "tarballs did not unpack into fstests/ and blktests/"
	log "building fstests (log: $dir/fstests-build.log)"
	make -C "$dir/fstests" -j"$(nproc)" >"$dir/fstests-build.log" 2>&1 ||
		{ tail -n 30 "$dir/fstests-build.log" >&2; die "fstests build failed"; }
	log "building blktests (log: $dir/blktests-build.log)"
	make -C "$dir/blktests" -j"$(nproc)" >"$dir/blktests-build.log" 2>&1 ||
		{ tail -n 30 "$dir/blktests-build.log" >&2; die "blktests build failed"; }
}

# check_libs ROOT: every ELF helper of the suites must find its libraries in ROOT.
check_libs() {
	local root=$1 missing
	# shellcheck disable=SC2016 # expanded by the chroot's bash
	missing=$(chroot "$root" /bin/bash -c '
		find /opt/fstests/src /opt/fstests/ltp /opt/blktests/src -type f -perm -u+x 2>/dev/null |
		while read -r f; do
			head -c 4 "$f" | grep -q ELF || continue
			ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$f: |"
		done' || true)
	[[ -z $missing ]] || { printf '%s\n' "$missing" >&2; die "helpers miss libraries in the rootfs (add them to PACKAGES)"; }
}

# customize ROOT: users, suites, modules, fstab-free config.
customize() {
	local root=$1
	chroot "$root" groupadd -f fsgqa
	chroot "$root" useradd -m -g fsgqa fsgqa 2>/dev/null || true
	chroot "$root" useradd -m 123456-fsgqa 2>/dev/null || true
	chroot "$root" useradd -m fsgqa2 2>/dev/null || true
	mkdir -p "$root/opt"
	tar -C "$WORK" --exclude='*.o' --exclude='*.lo' -cf - fstests blktests | tar -xf - -C "$root/opt"
	mkdir -p "$root/lib/modules"
	cp -a "$BTRFSDIO_MODDIR" "$root/lib/modules/"
	echo btrfsdio-peer >"$root/etc/hostname"
	mkdir -p "$root/results" "$root/peer" "$root/mnt/test" "$root/mnt/scratch"
	check_libs "$root"
}

build_image() {
	local key=$1 out=$2 root start=$SECONDS
	WORK=$(mktemp -d "$BTRFSDIO_CACHE/peer/build.XXXXXX")
	trap 'umount -R "$WORK/root" 2>/dev/null || true; rm -rf -- "$WORK"' EXIT
	install_build_deps
	build_suites "$WORK"
	root=$WORK/root
	log "mmdebstrap bookworm (log: $BTRFSDIO_CACHE/peer/mmdebstrap.log)"
	mirror_lines | mmdebstrap --variant=minbase --mode=root --include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)" bookworm "$root" - >"$BTRFSDIO_CACHE/peer/mmdebstrap.log" 2>&1 ||
		{ tail -n 30 "$BTRFSDIO_CACHE/peer/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
	customize "$root"
	rm -f -- "$out.tmp"
	truncate -s "$IMG_SIZE" "$out.tmp"
	mkfs.ext4 -q -F -L peer-rootfs -d "$root" "$out.tmp" || die "mkfs.ext4 -d failed"
	mv -f -- "$out.tmp" "$out"
	echo "$((SECONDS - start))" >"$out.buildtime"
	# Images of older inputs are never used again.
	find "$BTRFSDIO_CACHE/peer" -maxdepth 1 -name 'rootfs-*.img*' ! -name "rootfs-$key.img*" -delete
	log "built $out in $((SECONDS - start))s"
}

main() {
	local key out
	parse_args "$@"
	[[ -f $PEER_SUITES/$FSTESTS_TGZ && -f $PEER_SUITES/$BLKTESTS_TGZ ]] ||
		die "no $FSTESTS_TGZ / $BLKTESTS_TGZ in $PEER_SUITES"
	if [[ -z ${BTRFSDIO_KVER:-} || -z ${BTRFSDIO_MODDIR:-} ]]; then
		eval "$("$SCRIPTS_DIR/vm-deps.sh")"
	fi
	key=$(cache_key)
	if [[ $PRINT_KEY == 1 ]]; then
		echo "$key"
		return 0
	fi
	[[ $(id -u) == 0 ]] || die "must run as root (mmdebstrap --mode=root, chroot)"
	mkdir -p "$BTRFSDIO_CACHE/peer"
	out=$BTRFSDIO_CACHE/peer/rootfs-$key.img
	exec 9>"$BTRFSDIO_CACHE/peer/.lock"
	flock 9
	if [[ $FORCE == 1 || ! -f $out ]]; then
		build_image "$key" "$out"
	fi
	echo "$out"
}

main "$@"
