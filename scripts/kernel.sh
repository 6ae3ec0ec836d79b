#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetch, configure and build the vhost-net-zc test kernel, cached outside the repository in
# $VNZC_CACHE/kernel/<package version>-<config hash>/linux. A cached tree is reused as is;
# prints the tree's path on stdout. With VNZC_KVARIANT=bench, the benchmark kernel instead
# (.config.bench over the fragment, no debug options), in <package version>-bench-<hash>.
set -euo pipefail
VNZC_TAG=kernel
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

key=$(vnzc_kernel_key)
top=$VNZC_CACHE/kernel/$key
kdir=$top/linux
mkdir -p "$top"

# One kernel build at a time on this machine (2 cores): wait for another to finish.
exec 9>"$VNZC_CACHE/kernel/.lock"
flock 9

if [ -f "$top/.built" ]; then
	printf '%s\n' "$kdir"
	exit 0
fi

fetch_source() {
	local dl=$VNZC_CACHE/src ver deb
	mkdir -p "$dl"
	ver=$(apt-cache policy "$VNZC_KPKG" | awk '/Candidate:/ {print $2}')
	deb=$(ls "$dl"/"${VNZC_KPKG}_${ver/*:/}"_all.deb 2>/dev/null || true)
	if [ -z "$deb" ]; then
		vnzc_log "downloading $VNZC_KPKG $ver"
		# The cache is under a home _apt cannot enter: download as root without
		# apt's sandbox user (it warns otherwise).
		(cd "$dl" && apt-get download -q -o APT::Sandbox::User=root \
			"$VNZC_KPKG=$ver" >/dev/null)
		deb=$(ls "$dl"/"${VNZC_KPKG}"_*_all.deb | head -n 1)
	fi
	rm -rf "$top/pkg" "$kdir" "$top/.patched"
	dpkg -x "$deb" "$top/pkg"
	vnzc_log "unpacking the source"
	mkdir -p "$kdir"
	tar -xf "$top"/pkg/usr/src/"$VNZC_KPKG".tar.* -C "$kdir" --strip-components=1
	rm -rf "$top/pkg"
}

# Every line of the fragment must have survived olddefconfig, or the kernel is not the one
# the tests assume.
check_config() {
	local bad=0 line sym want got
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			sym=${line%%=*}; want=${line#*=}
			got=$(grep -E "^$sym=" "$kdir/.config" | cut -d= -f2- || true)
			[ "$got" = "$want" ] || { vnzc_log "config: $sym=$want requested, got '${got:-unset}'"; bad=1; }
			;;
		"# CONFIG_"*" is not set")
			sym=${line#\# }; sym=${sym%% *}
			grep -qE "^$sym=[ym]" "$kdir/.config" && { vnzc_log "config: $sym should be unset"; bad=1; }
			;;
		esac
	done < <(vnzc_fragment)
	[ "$bad" = 0 ] || vnzc_die "the fragment did not apply; see above"
}

[ -f "$kdir/Makefile" ] || fetch_source

# The kernel patches the project carries (patches/, part of the cache key), applied once.
if [ ! -f "$top/.patched" ]; then
	for p in "$VNZC_ROOT"/patches/*.patch; do
		[ -e "$p" ] || continue
		vnzc_log "applying $(basename "$p")"
		patch -d "$kdir" -p1 -s -N <"$p" || vnzc_die "$(basename "$p") does not apply to $VNZC_KPKG"
	done
	touch "$top/.patched"
fi

cd "$kdir"
# >>> config recipe (part of the cache key)
KCONFIG_ALLCONFIG="$VNZC_ROOT/.config.fragment" make -s LLVM=1 allnoconfig
make -s LLVM=1 olddefconfig
# <<< config recipe
if [ -n "$VNZC_KVARIANT" ]; then
	# The variant's fragment over the same base, in place of the test fragment.
	vnzc_fragment >"$top/fragment"
	KCONFIG_ALLCONFIG="$top/fragment" make -s LLVM=1 allnoconfig
	make -s LLVM=1 olddefconfig
fi
check_config

vnzc_log "building $key with $(nproc) jobs (a fresh build takes a while)"
start=$(date +%s)
if ! make -s LLVM=1 -j"$(nproc)" bzImage modules >"$top/build.log" 2>&1; then
	tail -n 40 "$top/build.log" >&2
	vnzc_die "kernel build failed; full log: $top/build.log"
fi
echo $(( $(date +%s) - start )) >"$top/.build-seconds"
vnzc_log "kernel built in $(cat "$top/.build-seconds") s"
touch "$top/.built"

# Keep the two newest built trees of this variant (a config change should not cost a rebuild
# to go back one step), remove older ones and any half-built leftovers of earlier keys.
(cd "$VNZC_CACHE/kernel" && ls -1dt -- */ 2>/dev/null | sed 's,/$,,' |
	{ if [ -n "$VNZC_KVARIANT" ]; then grep -- "-$VNZC_KVARIANT-"; else grep -v -- '-bench-'; fi || true; } |
	tail -n +3 |
	while read -r old; do
		[ "$old" = "$key" ] || { vnzc_log "pruning cached tree $old"; rm -rf -- "$old"; }
	done)
printf '%s\n' "$kdir"
