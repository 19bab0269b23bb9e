#!/usr/bin/env bash
# mkinitramfs.sh: build the gzip'd newc initramfs of the btrfsdio test VM.
#
# Usage: scripts/mkinitramfs.sh --binary PATH --tests DIR --output FILE
#            [--module NAME]... [--optional-module NAME]... [--add-bin PATH]...
#
# The image is two concatenated cpio.gz archives (the kernel unpacks both):
#  base    busybox-static + applet links, scripts/vm-init as /init, fio and
#          e2fsprogs with their shared libraries and the dynamic loader, and the
#          kernel modules (decompressed, load order from modules.dep). Cached
#          in $BTRFSDIO_CACHE/initramfs/ under a hash of all of its inputs.
#  overlay /bin/btrfsdio (the --binary) and /tests (a copy of --tests DIR),
#          rebuilt on every call.
# The kernel comes from BTRFSDIO_MODDIR/BTRFSDIO_KVER; when unset, vm-deps.sh
# is run to provide them.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPTS_DIR
readonly DEFAULT_MODULES=(ublk_drv virtio_blk ext4 crc32c_generic)
readonly DEFAULT_OPTIONAL_MODULES=(crc32c_intel 9p 9pnet_virtio)
# Host programs copied with their libraries (fio, e2fsprogs).
readonly BASE_BINS=(/usr/bin/fio /sbin/mke2fs /sbin/e2fsck /sbin/tune2fs
	/sbin/dumpe2fs /sbin/debugfs /sbin/resize2fs)
# Symlinks to the above, as e2fsprogs installs them.
readonly BASE_LINKS=(/sbin/mkfs.ext4:mke2fs /sbin/mkfs.ext2:mke2fs
	/sbin/fsck.ext4:e2fsck /sbin/fsck.ext2:e2fsck)
# Loaded with dlopen by glibc (pthread_cancel unwinding), so ldd misses it.
readonly DLOPEN_LIBS=(/lib/x86_64-linux-gnu/libgcc_s.so.1)

BINARY='' TESTS='' OUTPUT=''
MODULES=("${DEFAULT_MODULES[@]}")
OPTIONAL_MODULES=("${DEFAULT_OPTIONAL_MODULES[@]}")
ADD_BINS=()
WORK=''

log() { printf 'mkinitramfs: %s\n' "$*" >&2; }
die() { printf 'mkinitramfs: error: %s\n' "$*" >&2; exit 1; }

usage() {
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

parse_args() {
	while [[ $# -gt 0 ]]; do
		case $1 in
		--binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
		--tests) TESTS=${2:?--tests needs a directory}; shift 2 ;;
		-o | --output) OUTPUT=${2:?--output needs a file}; shift 2 ;;
		--module) MODULES+=("${2:?--module needs a name}"); shift 2 ;;
		--optional-module) OPTIONAL_MODULES+=("${2:?--optional-module needs a name}"); shift 2 ;;
		--add-bin)
			# The guest mounts a tmpfs on /tmp (vm-init): a program
			# put there would be hidden under it.
			[[ ${2:?--add-bin needs a path} != /tmp/* ]] || die "--add-bin $2: the guest's /tmp is a tmpfs that hides it; build it elsewhere (e.g. a --workdir outside /tmp)"
			ADD_BINS+=("$2")
			shift 2
			;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	[[ -n $BINARY && -n $TESTS && -n $OUTPUT ]] || die "--binary, --tests and --output are required"
	[[ -f $BINARY && -x $BINARY ]] || die "binary $BINARY is not an executable file"
	[[ -d $TESTS ]] || die "tests dir $TESTS does not exist"
	[[ -f $TESTS/run ]] || log "warning: $TESTS/run missing (name another script with btrfsdio.script=)"
}

cleanup() {
	[[ -z $WORK ]] || rm -rf -- "$WORK"
}

# new_stage NAME: an empty staging dir below WORK (removed on exit).
new_stage() {
	rm -rf -- "${WORK:?}/$1"
	mkdir -p "$WORK/$1"
	printf '%s\n' "$WORK/$1"
}

ensure_kernel() {
	if [[ -z ${BTRFSDIO_MODDIR:-} || -z ${BTRFSDIO_KVER:-} ]]; then
		local env
		env=$("$SCRIPTS_DIR/vm-deps.sh") || die "vm-deps.sh failed"
		eval "$env"
	fi
	[[ -f $BTRFSDIO_MODDIR/modules.dep ]] || die "no modules.dep in $BTRFSDIO_MODDIR"
	CACHE=${BTRFSDIO_CACHE:-/var/cache/btrfsdio}
}

# ---- modules -------------------------------------------------------------

declare -A MOD_PATH=()  # normalized name -> path relative to the modules dir
declare -A MOD_DEPS=()  # path -> space separated dependency paths
declare -A BUILTIN=()   # normalized name -> 1
declare -A VISITED=()
MOD_ORDER=()

mod_name() {
	local n=${1##*/}
	n=${n%%.ko*}
	printf '%s\n' "${n//-/_}"
}

read_module_tables() {
	local line path deps name
	while IFS= read -r line; do
		path=${line%%:*}
		deps=${line#*:}
		name=${path##*/}
		name=${name%%.ko*}
		MOD_PATH[${name//-/_}]=$path
		MOD_DEPS[$path]=${deps# }
	done <"$BTRFSDIO_MODDIR/modules.dep"
	while IFS= read -r line; do
		name=${line##*/}
		name=${name%%.ko*}
		BUILTIN[${name//-/_}]=1
	done <"$BTRFSDIO_MODDIR/modules.builtin"
}

visit_module() {
	local path=$1 dep
	[[ -n ${VISITED[$path]:-} ]] && return 0
	VISITED[$path]=1
	for dep in ${MOD_DEPS[$path]}; do
		visit_module "$dep"
	done
	MOD_ORDER+=("$path")
}

# resolve_module NAME required|optional
resolve_module() {
	local name
	name=$(mod_name "$1")
	if [[ -n ${MOD_PATH[$name]:-} ]]; then
		visit_module "${MOD_PATH[$name]}"
	elif [[ -n ${BUILTIN[$name]:-} ]]; then
		log "module $name is built into $BTRFSDIO_KVER"
	elif [[ $2 == required ]]; then
		die "module $name not found in $BTRFSDIO_MODDIR (neither modules.dep nor modules.builtin)"
	else
		log "optional module $name not available, skipped"
	fi
}

resolve_modules() {
	local m
	read_module_tables
	for m in "${MODULES[@]}"; do resolve_module "$m" required; done
	for m in "${OPTIONAL_MODULES[@]}"; do resolve_module "$m" optional; done
	log "modules (load order): $(for p in "${MOD_ORDER[@]}"; do mod_name "$p"; done | tr '\n' ' ')"
}

# install_modules STAGE: decompress every module of MOD_ORDER and write the
# load list /etc/btrfsdio/modules (paths relative to /lib/modules/KVER).
install_modules() {
	local stage=$1 path src dst rel list
	list=$stage/etc/btrfsdio/modules
	mkdir -p "$(dirname "$list")"
	: >"$list"
	for path in "${MOD_ORDER[@]}"; do
		src=$BTRFSDIO_MODDIR/$path
		rel=${path%.xz}
		rel=${rel%.zst}
		rel=${rel%.gz}
		dst=$stage/lib/modules/$BTRFSDIO_KVER/$rel
		mkdir -p "$(dirname "$dst")"
		case $path in
		*.ko.xz) xz -dc "$src" >"$dst" ;;
		*.ko.zst) zstd -qdc "$src" >"$dst" ;;
		*.ko.gz) gzip -dc "$src" >"$dst" ;;
		*.ko) cp "$src" "$dst" ;;
		*) die "unexpected module file $path" ;;
		esac || die "cannot decompress $src"
		printf '%s\n' "$rel" >>"$list"
	done
}

# ---- programs ------------------------------------------------------------

# shared_libs BIN: the libraries and loader BIN needs (nothing for static ones).
shared_libs() {
	local out
	if ! out=$(LC_ALL=C ldd "$1" 2>&1); then
		[[ $out == *"not a dynamic executable"* ]] && return 0
		die "ldd $1 failed: $out"
	fi
	[[ $out != *"not found"* ]] || die "$1 has unresolved libraries: $out"
	awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}

# copy_file SRC STAGE [DEST]: copy dereferenced SRC to STAGE/DEST (default SRC).
copy_file() {
	local dst=$2${3:-$1}
	mkdir -p "$(dirname "$dst")"
	rm -f -- "$dst"
	cp -L -- "$1" "$dst" || die "cannot copy $1"
}

# install_prog STAGE SRC [DEST]: the program and its libraries.
install_prog() {
	local stage=$1 src=$2 dest=${3:-$2} lib
	[[ -x $src ]] || die "missing program $src (vm-deps.sh installs it)"
	copy_file "$src" "$stage" "$dest"
	while IFS= read -r lib; do
		[[ -e $stage$lib ]] || copy_file "$lib" "$stage"
	done < <(shared_libs "$src")
}

# make_skeleton STAGE: merged-/usr layout so any path ldd prints resolves.
make_skeleton() {
	local s=$1 d
	mkdir -p "$s"/usr/{bin,sbin,lib,lib64}
	ln -s usr/bin "$s/bin"
	ln -s usr/sbin "$s/sbin"
	ln -s usr/lib "$s/lib"
	ln -s usr/lib64 "$s/lib64"
	for d in dev proc sys tmp run root results tests mnt etc/btrfsdio var/tmp; do
		mkdir -p "$s/$d"
	done
	mknod -m 600 "$s/dev/console" c 5 1 2>/dev/null || true
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$s/etc/passwd"
	printf 'root:x:0:\n' >"$s/etc/group"
	ln -s /proc/mounts "$s/etc/mtab"
	[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$s/etc/"
	install -m 755 "$SCRIPTS_DIR/vm-init" "$s/init"
}

install_busybox() {
	local s=$1 applet
	copy_file /bin/busybox "$s" /usr/bin/busybox
	while IFS= read -r applet; do
		[[ -e $s/$applet || -L $s/$applet ]] || ln -s /usr/bin/busybox "$s/$applet"
	done < <(/bin/busybox --list-full)
}

install_base_progs() {
	local s=$1 p l
	for p in "${BASE_BINS[@]}" "${ADD_BINS[@]}"; do install_prog "$s" "$p"; done
	for l in "${BASE_LINKS[@]}"; do
		rm -f -- "$s${l%%:*}"
		ln -s "${l#*:}" "$s${l%%:*}"
	done
	for l in "${DLOPEN_LIBS[@]}"; do
		[[ -e $l ]] && copy_file "$l" "$s"
	done
}

# ---- archives ------------------------------------------------------------

# write_cpio STAGE OUT LEVEL
write_cpio() {
	local tmp=$2.tmp.$$
	(cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --quiet -R 0:0) | gzip -n "-$3" >"$tmp" ||
		die "cpio/gzip of $1 failed"
	mv -f -- "$tmp" "$2"
}

# base_key: hash of everything the base archive is made of (independent of
# the path the scripts are called by).
base_key() {
	local p files=(/bin/busybox /etc/mke2fs.conf)
	for p in "${BASE_BINS[@]}" "${ADD_BINS[@]}" "${DLOPEN_LIBS[@]}"; do
		files+=("$p")
		mapfile -t -O "${#files[@]}" files < <(shared_libs "$p")
	done
	for p in "${MOD_ORDER[@]}"; do files+=("$BTRFSDIO_MODDIR/$p"); done
	{
		printf '%s\n' "$BTRFSDIO_KVER" "${MOD_ORDER[@]}"
		stat -L -c '%n %s %Y' "${files[@]}" 2>/dev/null || true
		cat "$SCRIPTS_DIR/vm-init" "${BASH_SOURCE[0]}"
	} | sha256sum | cut -c1-16
}

# build_base: prints the cached base archive, building it when missing.
build_base() {
	local dir=$CACHE/initramfs key out stage
	mkdir -p "$dir"
	key=$(base_key)
	out=$dir/base-$BTRFSDIO_KVER-$key.cpio.gz
	if [[ ! -s $out ]]; then
		log "building base archive $(basename "$out")"
		stage=$(new_stage base)
		make_skeleton "$stage"
		install_busybox "$stage"
		install_base_progs "$stage"
		install_modules "$stage"
		write_cpio "$stage" "$out" 6
		prune_old_bases "$dir"
	fi
	printf '%s\n' "$out"
}

# prune_old_bases DIR: keep the 3 newest base archives.
prune_old_bases() {
	local f
	while IFS= read -r f; do rm -f -- "$f"; done < <(find "$1" -maxdepth 1 -name 'base-*.cpio.gz' \
		-printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2-)
}

build_overlay() {
	local out=$1 stage
	stage=$(new_stage overlay)
	mkdir -p "$stage/usr/bin" "$stage/tests"
	install_prog "$stage" "$BINARY" /usr/bin/btrfsdio
	cp -R -- "$TESTS"/. "$stage/tests/"
	write_cpio "$stage" "$out" 1
}

main() {
	local base overlay
	parse_args "$@"
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/btrfsdio-initramfs.XXXXXX")
	trap cleanup EXIT
	ensure_kernel
	resolve_modules
	base=$(build_base)
	overlay=$WORK/overlay.cpio.gz
	build_overlay "$overlay"
	mkdir -p "$(dirname "$OUTPUT")"
	cat "$base" "$overlay" >"$OUTPUT.tmp.$$"
	mv -f -- "$OUTPUT.tmp.$$" "$OUTPUT"
	log "wrote $OUTPUT ($(du -h "$OUTPUT" | cut -f1))"
}

main "$@"
