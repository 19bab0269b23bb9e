#!/usr/bin/env bash
# vm-deps.sh: install the host tools of the VM harness (from Debian via apt-get)
# and fetch + unpack Debian's linux-image-6.12.*+deb12-amd64-unsigned into the
# cache. A second run finds the stamp of the unpacked kernel and does nothing.
#
# Usage: scripts/vm-deps.sh            # prints "export VAR=value" lines
#        eval "$(scripts/vm-deps.sh)"  # BTRFSDIO_VMLINUZ, BTRFSDIO_MODDIR, ...
# Env:   BTRFSDIO_CACHE       cache dir (default /var/cache/btrfsdio)
#        BTRFSDIO_KERNEL_PKG  exact kernel package (default: newest known to apt)
# The same assignments are written to $BTRFSDIO_CACHE/kernel.env.
# All progress messages go to stderr; stdout carries only the assignments.
set -euo pipefail

# btrfs-progs: make bench-vm puts its mkfs.btrfs in the initramfs (--add-bin).
readonly HOST_PACKAGES=(qemu-system-x86 busybox-static cpio fio e2fsprogs xz-utils zstd kmod dmsetup btrfs-progs)
readonly KERNEL_RE='^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$'
CACHE=${BTRFSDIO_CACHE:-/var/cache/btrfsdio}
APT_UPDATED=0
APT_LOG=$CACHE/apt.log

log() { printf 'vm-deps: %s\n' "$*" >&2; }
die() { printf 'vm-deps: error: %s\n' "$*" >&2; exit 1; }

apt_update_once() {
	[[ $APT_UPDATED == 1 ]] && return 0
	log "apt-get update"
	apt-get update >"$APT_LOG" 2>&1 || apt_failed "apt-get update failed (is the Debian mirror reachable?)"
	APT_UPDATED=1
}

apt_failed() {
	tail -n 20 "$APT_LOG" >&2
	die "$1 (full log: $APT_LOG)"
}

is_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

install_host_packages() {
	local missing=() p
	for p in "${HOST_PACKAGES[@]}"; do
		is_installed "$p" || missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	[[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
	apt_update_once
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		"${missing[@]}" >>"$APT_LOG" 2>&1 || apt_failed "apt-get install ${missing[*]} failed"
}

newest_kernel_pkg_from_apt() {
	apt-cache pkgnames linux-image-6.12. 2>/dev/null | grep -E "$KERNEL_RE" | sort -V | tail -n 1
}

# newest_cached_kernel_pkg: the newest kernel already unpacked (offline fallback).
newest_cached_kernel_pkg() {
	local d
	for d in "$CACHE"/kernel/*/.unpacked; do
		[[ -e $d ]] && basename "$(dirname "$d")"
	done | sort -V | tail -n 1
}

choose_kernel_pkg() {
	local pkg=${BTRFSDIO_KERNEL_PKG:-}
	if [[ -z $pkg ]]; then
		pkg=$(newest_kernel_pkg_from_apt)
		if [[ -z $pkg ]]; then
			pkg=$(newest_cached_kernel_pkg)
			if [[ -z $pkg ]]; then
				apt_update_once
				pkg=$(newest_kernel_pkg_from_apt)
			fi
		fi
	fi
	[[ -n $pkg ]] || die "no package matching $KERNEL_RE in the apt lists"
	[[ $pkg =~ $KERNEL_RE ]] || log "warning: $pkg does not look like a Debian 6.12 amd64 kernel"
	printf '%s\n' "$pkg"
}

# download_deb PKG: prints the .deb path, downloading it only if absent.
download_deb() {
	local pkg=$1 dir=$CACHE/debs deb
	mkdir -p "$dir"
	deb=$(find_deb "$pkg")
	if [[ -z $deb ]]; then
		log "downloading $pkg"
		if ! apt_download "$pkg"; then
			# Stale lists point at versions the mirror no longer has.
			apt_update_once
			apt_download "$pkg" || apt_failed "apt-get download $pkg failed"
		fi
		deb=$(find_deb "$pkg")
		[[ -n $deb ]] || die "apt-get download left no ${pkg}_*.deb in $dir"
	fi
	printf '%s\n' "$deb"
}

apt_download() {
	(cd "$CACHE/debs" && apt-get download -o APT::Sandbox::User=root "$1" >>"$APT_LOG" 2>&1)
}

find_deb() {
	local f
	for f in "$CACHE/debs/$1"_*_amd64.deb; do
		[[ -f $f ]] && { printf '%s\n' "$f"; return 0; }
	done
	return 0
}

# unpack_kernel PKG DEB: dpkg-deb -x into kernel/PKG once, then depmod
# (Debian's package ships no modules.dep: its postinst generates it).
unpack_kernel() {
	local pkg=$1 deb=$2 dest=$CACHE/kernel/$1 tmp kver
	[[ -e $dest/.unpacked ]] && return 0
	tmp=$dest.tmp.$$
	rm -rf -- "$tmp"
	mkdir -p "$tmp"
	log "unpacking $(basename "$deb")"
	dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb -x $deb failed"
	kver=$(kver_of "$tmp") || die "no lib/modules/<version> in $deb"
	depmod -b "$tmp" "$kver" || die "depmod failed for $kver"
	printf '%s\n' "$kver" >"$tmp/.unpacked"
	rm -rf -- "$dest"
	mv -- "$tmp" "$dest"
}

kver_of() {
	local d
	for d in "$1"/lib/modules/* "$1"/usr/lib/modules/*; do
		[[ -d $d/kernel ]] && { basename "$d"; return 0; }
	done
	return 1
}

moddir_of() {
	local root=$1 kver=$2
	if [[ -d $root/lib/modules/$kver ]]; then
		printf '%s\n' "$root/lib/modules/$kver"
	else
		printf '%s\n' "$root/usr/lib/modules/$kver"
	fi
}

emit_env() {
	local pkg=$1 root=$CACHE/kernel/$1 kver vmlinuz moddir
	kver=$(<"$root/.unpacked")
	vmlinuz=$root/boot/vmlinuz-$kver
	moddir=$(moddir_of "$root" "$kver")
	[[ -f $vmlinuz ]] || die "missing $vmlinuz"
	[[ -f $moddir/modules.dep ]] || die "missing $moddir/modules.dep"
	{
		printf 'export BTRFSDIO_CACHE=%q\n' "$CACHE"
		printf 'export BTRFSDIO_KERNEL_PKG=%q\n' "$pkg"
		printf 'export BTRFSDIO_KVER=%q\n' "$kver"
		printf 'export BTRFSDIO_VMLINUZ=%q\n' "$vmlinuz"
		printf 'export BTRFSDIO_MODDIR=%q\n' "$moddir"
	} | tee "$CACHE/kernel.env"
}

main() {
	local pkg deb
	[[ $# -eq 0 ]] || die "usage: $0   (configure with BTRFSDIO_CACHE / BTRFSDIO_KERNEL_PKG)"
	mkdir -p "$CACHE" || die "cannot create cache dir $CACHE"
	exec 9>"$CACHE/.lock"
	flock 9 || die "cannot lock $CACHE/.lock"
	install_host_packages
	pkg=$(choose_kernel_pkg)
	if [[ ! -e $CACHE/kernel/$pkg/.unpacked ]]; then
		deb=$(download_deb "$pkg")
		unpack_kernel "$pkg" "$deb"
	fi
	emit_env "$pkg"
}

main "$@"
