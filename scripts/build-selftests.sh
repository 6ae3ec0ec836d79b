#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the selftests against the test kernel's UAPI headers (installed once into the kernel
# cache) and its kselftest harness.
set -euo pipefail
VNZC_TAG=selftests
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
uapi=$kdir/../uapi
if [ ! -f "$uapi/include/linux/vhost.h" ]; then
	rm -rf "$uapi.tmp"
	make -s -C "$kdir" headers_install INSTALL_HDR_PATH="$uapi.tmp" >/dev/null
	mv "$uapi.tmp" "$uapi"
fi
# The userspace programs use the host's gcc and libc: the VM runs the host's root file system.
make -s -C "$VNZC_ROOT/selftests" KDIR="$kdir" UAPI="$uapi" CC=gcc LLVM= all
make -s -C "$VNZC_ROOT/samples" UAPI="$uapi" CC=gcc LLVM= all
# The kernel's own vhost-net test program, built from the test tree (never copied here).
# In 7.3 tools/virtio needs the tree's exported headers (usr/include) and, for
# <linux/device-id/virtio.h> which its private copies lack, the tree's include/ searched last.
if [ ! -x "$kdir/tools/virtio/vhost_net_test" ]; then
	make -s -C "$kdir" headers >/dev/null
	if ! CFLAGS="-idirafter $kdir/include" make -s -C "$kdir/tools/virtio" CC=gcc LLVM= \
		vhost_net_test >"$kdir/../vhost_net_test.log" 2>&1; then
		vnzc_log "warning: tools/virtio/vhost_net_test did not build: $kdir/../vhost_net_test.log"
	fi
fi
