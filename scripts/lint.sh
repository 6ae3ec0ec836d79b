#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The lint gate of `make check`: rustfmt with the kernel's configuration over the crate
# (`make rustfmtcheck` skips M= modules), the module built with clippy and W=e, checkpatch
# over the C files, Sphinx over the documentation, the libvirt sample against libvirt's
# schema and shellcheck over the shell scripts.
set -euo pipefail
VNZC_TAG=lint
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
mapfile -t files < <(cd "$VNZC_ROOT" && git ls-files 'rust/*.rs' 2>/dev/null ||
		     ls rust/*.rs)
files=("${files[@]/#/$VNZC_ROOT/}")
if ! rustfmt --check --edition 2021 --config-path "$kdir/.rustfmt.toml" "${files[@]}"; then
	vnzc_die "rustfmt: the crate is not formatted (run: rustfmt --config-path $kdir/.rustfmt.toml rust/*.rs)"
fi
vnzc_log "rustfmt clean"
# Debian 12's own Rust toolchain (rustc-web, see setup-host.sh) has no clippy.
command -v clippy-driver >/dev/null ||
	vnzc_die "clippy-driver not found: the lint gate needs clippy, which rustup's toolchain has and Debian 12 does not package"
if ! bash "$VNZC_ROOT/scripts/build-module.sh" CLIPPY=1 W=e; then
	vnzc_die "clippy / W=e build failed"
fi
vnzc_log "clippy W=e clean"
# The C files in kernel style: checkpatch errors fail, warnings are shown.
mapfile -t cfiles < <(cd "$VNZC_ROOT" && git ls-files '*.c' '*.h' 2>/dev/null)
cfiles=("${cfiles[@]/#/$VNZC_ROOT/}")
report=$(perl "$kdir/scripts/checkpatch.pl" --no-tree --terse --no-summary -f "${cfiles[@]}" || true)
[ -z "$report" ] || printf '%s\n' "$report" >&2
if grep -q ': ERROR:' <<<"$report"; then
	vnzc_die "checkpatch: errors in the C files"
fi
vnzc_log "checkpatch: no errors"
# The UAPI header: kernel-doc comments without warnings, and an ioctl type that the test
# kernel's Documentation/userspace-api/ioctl/ioctl-number.rst does not assign.
uapi_h=$VNZC_ROOT/include/uapi/linux/vhost_net_zc.h
report=$("$kdir/scripts/kernel-doc" -none -Wall "$uapi_h" 2>&1) || true
[ -z "$report" ] || { printf '%s\n' "$report" >&2; vnzc_die "kernel-doc: warnings in $uapi_h"; }
type=$(sed -n 's/^#define VHOST_NET_ZC_IOC_TYPE[[:space:]]*\(0x[0-9A-Fa-f]*\).*/\1/p' "$uapi_h")
[ -n "$type" ] || vnzc_die "no VHOST_NET_ZC_IOC_TYPE in $uapi_h"
numbers=$kdir/Documentation/userspace-api/ioctl/ioctl-number.rst
[ -f "$numbers" ] || vnzc_die "no $numbers in the test kernel tree"
if grep -iq "^$type " "$numbers"; then
	grep -i "^$type " "$numbers" >&2
	vnzc_die "ioctl type $type is assigned in ioctl-number.rst"
fi
vnzc_log "UAPI header: kernel-doc clean, ioctl type $type unassigned in ioctl-number.rst"
# The documentation: Sphinx with warnings as errors (scripts/setup-host.sh installs it).
sphinx=$VNZC_CACHE/sphinx/bin/sphinx-build
[ -x "$sphinx" ] || vnzc_die "no $sphinx: run scripts/setup-host.sh"
out=$(mktemp -d)
if ! "$sphinx" -q -W --keep-going -C -D master_doc=index -D project=vhost-net-zc \
	-b html "$VNZC_ROOT/Documentation" "$out"; then
	rm -rf "$out"
	vnzc_die "Sphinx: the documentation has warnings"
fi
rm -rf "$out"
vnzc_log "Documentation: Sphinx clean"
# The libvirt sample against libvirt's own domain schema (scripts/setup-host.sh fetches it).
if ! "$VNZC_CACHE/sphinx/bin/python" "$VNZC_ROOT/scripts/validate-libvirt.py" \
	"$VNZC_CACHE/libvirt/usr/share/libvirt/schemas" "$VNZC_ROOT/samples/libvirt-interface.xml"; then
	vnzc_die "samples/libvirt-interface.xml does not validate against libvirt's schema"
fi
vnzc_log "libvirt sample: valid"
# Every shell script (by name or by its #! line), with the project's .shellcheckrc.
shfiles=()
while IFS= read -r -d '' f; do
	first=
	case $f in
	*.sh) ;;
	*) IFS= read -r first <"$VNZC_ROOT/$f" || true
	   case $first in '#!'*sh | '#!'*sh\ *) ;; *) continue ;; esac ;;
	esac
	shfiles+=("$f")
done < <(git -C "$VNZC_ROOT" ls-files -z)
command -v shellcheck >/dev/null || vnzc_die "shellcheck is not installed: run scripts/setup-host.sh"
if ! (cd "$VNZC_ROOT" && shellcheck -x "${shfiles[@]}"); then
	vnzc_die "shellcheck: findings in the shell scripts"
fi
vnzc_log "shellcheck: ${#shfiles[@]} scripts clean"
