#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# DKMS builds the packaged module (dist/vhost-net-zc-dkms_*.deb, from `make dkms-deb`) for
# the test kernel, on this host, against the cached tree, and archives the result as a
# DKMS tarball (dist/vhost-net-zc-<version>.dkms.tar.gz) that the package's postinst loads
# in the test VM instead of compiling there: under TCG the same build takes about 25
# minutes (VNZC_DKMS_BUILD_IN_VM=1 makes the VM test do it anyway). DKMS runs with trees
# of its own here; nothing is installed on the host.
set -euo pipefail
VNZC_TAG=dkms
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
kver=$(make -s -C "$kdir" kernelrelease)
deb=$(ls "$VNZC_ROOT"/dist/vhost-net-zc-dkms_*.deb 2>/dev/null | tail -n 1)
[ -n "$deb" ] || vnzc_die "no package in dist/ (make dkms-deb)"
command -v dkms >/dev/null || vnzc_die "dkms missing (run scripts/setup-host.sh)"
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$VNZC_ROOT/dkms.conf")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg -x "$deb" "$work/root"
mkdir "$work/dkms"
trees=(--dkmstree "$work/dkms" --sourcetree "$work/root/usr/src")
m=(-m vhost-net-zc -v "$version")
dkms add "${trees[@]}" "${m[@]}" >/dev/null
dkms build "${trees[@]}" "${m[@]}" -k "$kver" --kernelsourcedir "$kdir" >"$work/build.out" 2>&1 ||
	{ cat "$work"/dkms/vhost-net-zc/"$version"/build/make.log >&2; vnzc_die "dkms build failed"; }
dkms mktarball "${trees[@]}" "${m[@]}" -k "$kver" \
	--archive "vhost-net-zc-$version.dkms.tar.gz" >/dev/null
cp "$work/dkms/vhost-net-zc/$version/tarball/vhost-net-zc-$version.dkms.tar.gz" "$VNZC_ROOT/dist/"
vnzc_log "DKMS built vhost-net-zc $version for $kver: dist/vhost-net-zc-$version.dkms.tar.gz"
