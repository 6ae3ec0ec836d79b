# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Shared settings for the vhost-net-zc scripts: toolchain paths, cache location, and the
# test kernel's identity. Sourced, never run.

VNZC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VNZC_CACHE=${VNZC_CACHE:-$HOME/.cache/vhost-net-zc}
# The Debian source package of the test kernel (trixie-backports).
VNZC_KPKG=${VNZC_KPKG:-linux-source-7.3}
export PATH="/usr/lib/llvm-19/bin:$HOME/.cargo/bin:$PATH"
# pip-installed commands (virtme-ng) where Python comes from pyenv, even in a shell that did
# not read ~/.bashrc.
[ -d "$HOME/.pyenv/shims" ] && PATH="$PATH:$HOME/.pyenv/shims"
# virtme-ng installed in a virtual environment by scripts/setup-host.sh (plain Debian 12).
PATH="$PATH:$VNZC_CACHE/bin"
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
export LLVM=1

vnzc_log() { printf '%s: %s\n' "${VNZC_TAG:-vnzc}" "$*" >&2; }
vnzc_die() { vnzc_log "error: $*"; exit 1; }

# The kernel variant: empty for the test kernel (.config.fragment), "bench" for the
# benchmark kernel (.config.fragment with .config.bench taking the place of its debug lines).
VNZC_KVARIANT=${VNZC_KVARIANT:-}
case "$VNZC_KVARIANT" in
"" | bench) ;;
*) vnzc_die "VNZC_KVARIANT=$VNZC_KVARIANT: the variants are '' (test) and 'bench'" ;;
esac

# The configuration fragment of the current variant, on stdout: for the benchmark kernel,
# the test fragment without the symbols .config.bench names, then .config.bench.
vnzc_fragment() {
	local over=$VNZC_ROOT/.config.$VNZC_KVARIANT
	if [ -z "$VNZC_KVARIANT" ]; then
		cat "$VNZC_ROOT/.config.fragment"
		return
	fi
	awk 'NR == FNR {
		if (match($0, /CONFIG_[A-Za-z0-9_]+/)) over[substr($0, RSTART, RLENGTH)] = 1
		next
	     }
	     match($0, /CONFIG_[A-Za-z0-9_]+/) && (substr($0, RSTART, RLENGTH) in over) { next }
	     { print }' "$over" "$VNZC_ROOT/.config.fragment"
	grep -E '^(CONFIG_|# CONFIG_)' "$over"
}

# The cache key of a kernel build: the source package version, the config fragment, the
# base-config recipe in scripts/kernel.sh, the kernel patches in patches/, and the exact
# rustc (a module must be built by the very rustc its kernel was built with). The
# benchmark kernel's key also covers its own lines and is named <version>-bench-<hash>.
vnzc_kernel_key() {
	local ver sum
	ver=$(apt-cache policy "$VNZC_KPKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
	[ -n "$ver" ] && [ "$ver" != "(none)" ] || vnzc_die "no candidate for $VNZC_KPKG (run scripts/setup-host.sh)"
	sum=$( { cat "$VNZC_ROOT/.config.fragment"
		 sed -n '/^# >>> config recipe/,/^# <<< config recipe/p' "$VNZC_ROOT/scripts/kernel.sh"
		 cat "$VNZC_ROOT"/patches/*.patch 2>/dev/null
		 rustc --version --verbose; bindgen --version; clang --version | head -n 1
		 [ -z "$VNZC_KVARIANT" ] || cat "$VNZC_ROOT/.config.$VNZC_KVARIANT"; } |
	       sha256sum | cut -c1-12)
	printf '%s%s-%s\n' "${ver//[~+:]/_}" "${VNZC_KVARIANT:+-$VNZC_KVARIANT}" "$sum"
}

# The directory of the built kernel tree (exists only once the build finished).
vnzc_kdir() {
	printf '%s/kernel/%s/linux\n' "$VNZC_CACHE" "$(vnzc_kernel_key)"
}
