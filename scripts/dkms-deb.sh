#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make dkms-deb`: the Debian packages vhost-net-zc-dkms (dh-dkms), vhost-net-zc-dev and
# vhost-net-zc-tools, from the files git tracks, into dist/; lintian checks them.
set -euo pipefail
VNZC_TAG=dkms-deb
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

for t in dpkg-buildpackage dh dh_dkms dh-exec rst2man lintian; do
	command -v "$t" >/dev/null ||
		vnzc_die "$t missing (run scripts/setup-host.sh: debhelper, dh-dkms, dh-exec, python3-docutils, lintian)"
done
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$VNZC_ROOT/dkms.conf")
changelog=$(dpkg-parsechangelog -l "$VNZC_ROOT/debian/changelog" -S Version)
[ "$version" = "$changelog" ] ||
	vnzc_die "dkms.conf has version $version, debian/changelog $changelog: make them one"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git -C "$VNZC_ROOT" ls-files -z | (cd "$VNZC_ROOT" && xargs -0 tar -cf -) | tar -xf - -C "$work/src"
(cd "$work/src" && dpkg-buildpackage -us -uc >"$work/build.log" 2>&1) ||
	{ tail -n 30 "$work/build.log" >&2; vnzc_die "dpkg-buildpackage failed"; }
# Lintian over the source and the binary packages: errors fail, anything else is shown.
changes=$(ls "$work"/vhost-net-zc_*.changes)
lintian --fail-on error --info --display-info --pedantic "$changes" >"$work/lintian.log" 2>&1 ||
	{ cat "$work/lintian.log" >&2; vnzc_die "lintian: errors in the packages"; }
grep -qv '^N: ' "$work/lintian.log" && cat "$work/lintian.log" >&2
vnzc_log "lintian: no errors ($(grep -c '^[WIP]: ' "$work/lintian.log") other tags)"
# The tools build against the installed packages' headers alone: the system's UAPI and
# vhost-net-zc-dev's <linux/vhost_net_zc.h>, not the project tree's.
dpkg-deb -x "$work"/vhost-net-zc-dev_"$version"_all.deb "$work/dev"
make -s -C "$work/src/samples" clean
make -s -C "$work/src/samples" VNZC_UAPI="$work/dev/usr/include" tools ||
	vnzc_die "the tools do not build against vhost-net-zc-dev's header"
mkdir -p "$VNZC_ROOT/dist"
rm -f "$VNZC_ROOT"/dist/vhost-net-zc*.deb
cp "$work"/*.deb "$VNZC_ROOT/dist/"
vnzc_log "built $(cd "$VNZC_ROOT/dist" && ls ./*.deb | tr '\n' ' ')"
