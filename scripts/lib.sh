# SPDX-License-Identifier: GPL-2.0
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
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
export LLVM=1

vnzc_log() { printf '%s: %s\n' "${VNZC_TAG:-vnzc}" "$*" >&2; }
vnzc_die() { vnzc_log "error: $*"; exit 1; }

# The cache key of a kernel build: the source package version, the config fragment, the
# base-config recipe in scripts/kernel.sh, and the exact rustc (a module must be built by the
# very rustc its kernel was built with).
vnzc_kernel_key() {
	local ver sum
	ver=$(apt-cache policy "$VNZC_KPKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
	[ -n "$ver" ] && [ "$ver" != "(none)" ] || vnzc_die "no candidate for $VNZC_KPKG (run scripts/setup-host.sh)"
	sum=$( { cat "$VNZC_ROOT/.config.fragment"
		 sed -n '/^# >>> config recipe/,/^# <<< config recipe/p' "$VNZC_ROOT/scripts/kernel.sh"
		 rustc --version --verbose; bindgen --version; clang --version | head -n 1; } |
	       sha256sum | cut -c1-12)
	printf '%s-%s\n' "${ver//[~+:]/_}" "$sum"
}

# The directory of the built kernel tree (exists only once the build finished).
vnzc_kdir() {
	printf '%s/kernel/%s/linux\n' "$VNZC_CACHE" "$(vnzc_kernel_key)"
}
