#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build vhost_net_zc.ko against the cached test kernel. Extra arguments go to kbuild
# (e.g. CLIPPY=1 W=e).
set -euo pipefail
VNZC_TAG=module
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
[ -f "$kdir/../.built" ] || vnzc_die "no built kernel at $kdir (run 'make kernel')"
make -s -C "$kdir" M="$VNZC_ROOT" LLVM=1 -j"$(nproc)" "$@" modules
vnzc_log "built $VNZC_ROOT/vhost_net_zc.ko"
