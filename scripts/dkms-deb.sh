#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make dkms-deb`: the Debian package vhost-net-zc-dkms (dh-dkms), from the files git
# tracks, into dist/.
set -euo pipefail
VNZC_TAG=dkms-deb
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

for t in dpkg-buildpackage dh dh_dkms; do
	command -v "$t" >/dev/null || vnzc_die "$t missing (run scripts/setup-host.sh: debhelper, dh-dkms)"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git -C "$VNZC_ROOT" ls-files -z | (cd "$VNZC_ROOT" && xargs -0 tar -cf -) | tar -xf - -C "$work/src"
(cd "$work/src" && dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1) ||
	{ tail -n 30 "$work/build.log" >&2; vnzc_die "dpkg-buildpackage failed"; }
mkdir -p "$VNZC_ROOT/dist"
cp "$work"/*.deb "$VNZC_ROOT/dist/"
vnzc_log "built $(cd "$VNZC_ROOT/dist" && ls ./*.deb | tr '\n' ' ')"
