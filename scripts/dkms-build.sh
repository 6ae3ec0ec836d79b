#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build vhost_net_zc.ko for an installed kernel, as DKMS does (dkms.conf):
#   dkms-build.sh KDIR KVER [VAR=value...]   KDIR: the kernel's build directory
# A Rust out-of-tree module needs more of the kernel than a C one. Each requirement is
# checked first, and a missing one is named with how to get it, rather than left to fail
# as a compiler error:
# - a kernel built with CONFIG_RUST=y, whose build directory keeps the Rust metadata
#   (rust/libkernel.rmeta and friends, as `make modules_prepare` leaves them);
# - the exact rustc the kernel was built with, and bindgen;
# - clang/ld.lld if the kernel was built with LLVM (every Rust kernel is, in practice);
# - the vhost core's private header drivers/vhost/vhost.h, which Debian's linux-headers
#   packages do not ship: from the build directory if it has the source, else from
#   VNZC_KSRC (a kernel source tree of the same version, e.g. linux-source-X.Y unpacked).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
die() {
	printf 'vhost-net-zc: cannot build for %s: %s\n' "${kver:-this kernel}" "$*" >&2
	exit 1
}

[ $# -ge 2 ] || { echo "usage: $0 KDIR KVER [VAR=value...]" >&2; exit 2; }
kdir=$1 kver=$2
shift 2
# DKMS appends CC=clang LD=ld.lld for a kernel built with them: passed on to make.
for a in "$@"; do
	case $a in *=*) ;; *) echo "$0: not a make variable: $a" >&2; exit 2 ;; esac
done

[ -f "$kdir/.config" ] ||
	die "no kernel build directory at $kdir (install the kernel's headers/build tree)"
conf() { sed -n "s/^$1=//p" "$kdir/.config" | tr -d '"'; }

# Toolchains installed the usual ways: rustup's cargo bin, and Debian's versioned LLVM of
# the major version the kernel was built with, first.
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH="$PATH:${HOME:-/root}/.cargo/bin"
clang_version=$(conf CONFIG_CLANG_VERSION)
clang_major=$(( ${clang_version:-0} / 10000 ))
[ -d "/usr/lib/llvm-$clang_major/bin" ] && PATH="/usr/lib/llvm-$clang_major/bin:$PATH"
export PATH
[ "$(conf CONFIG_RUST)" = y ] ||
	die "the kernel was built without Rust support; vhost-net-zc needs CONFIG_RUST=y"
[ -f "$kdir/rust/libkernel.rmeta" ] && [ -f "$kdir/rust/libmacros.so" ] ||
	die "$kdir lacks the kernel's Rust metadata (rust/libkernel.rmeta, rust/libmacros.so); the build tree must be kept as 'make modules_prepare' leaves it"
# With static keys, the crate's static_branch_unlikely! (the module's tracepoints) includes
# an assembly template generated in the kernel's build tree.
[ "$(conf CONFIG_JUMP_LABEL)" != y ] || [ -f "$kdir/rust/kernel/generated_arch_static_branch_asm.rs" ] ||
	die "$kdir lacks rust/kernel/generated_arch_static_branch_asm.rs, which a kernel with CONFIG_JUMP_LABEL=y generates; the build tree must be kept as 'make modules_prepare' leaves it"
want=$(conf CONFIG_RUSTC_VERSION_TEXT)
have=$(rustc --version 2>/dev/null || true)
[ -n "$have" ] || die "no rustc in PATH; the kernel was built with: $want"
[ "$have" = "$want" ] ||
	die "rustc is '$have' but the kernel was built with '$want': Rust modules must be built by the same rustc (rustup toolchain install <version>)"
command -v bindgen >/dev/null ||
	die "no bindgen in PATH; the kernel used: $(conf CONFIG_BINDGEN_VERSION_TEXT) (cargo install bindgen-cli)"
llvm=()
if [ "$(conf CONFIG_CC_IS_CLANG)" = y ]; then
	command -v clang >/dev/null && command -v ld.lld >/dev/null ||
		die "the kernel was built with clang $(conf CONFIG_CLANG_VERSION); install clang and lld of that version"
	llvm=(LLVM=1)
	if [ -z "${LIBCLANG_PATH:-}" ]; then
		LIBCLANG_PATH=$(dirname "$(dirname "$(command -v clang)")")/lib
		export LIBCLANG_PATH
	fi
fi
vhost_dir=$kdir/drivers/vhost
[ -f "$vhost_dir/vhost.h" ] || vhost_dir=$kdir/source/drivers/vhost
if [ ! -f "$vhost_dir/vhost.h" ]; then
	[ -n "${VNZC_KSRC:-}" ] && [ -f "$VNZC_KSRC/drivers/vhost/vhost.h" ] ||
		die "drivers/vhost/vhost.h is not in $kdir (distribution header packages do not ship it); unpack the kernel source of version $kver and set VNZC_KSRC to it"
	vhost_dir=$VNZC_KSRC/drivers/vhost
fi
make -C "$kdir" M="$here" "${llvm[@]}" VNZC_VHOST_DIR="$vhost_dir" "$@" modules
