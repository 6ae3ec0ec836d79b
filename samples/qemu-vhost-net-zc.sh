#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# QEMU with its virtio-net device served by vhost-net-zc instead of vhost-net: QEMU takes
# an already open vhost device as vhostfd=N and drives it with the vhost-net ioctls, which
# /dev/vhost-net-zc speaks unchanged. A sketch to adapt (disk image, memory, tap name);
# not run by the test suite (QEMU with a real guest is the project's next step).
#
#   sudo sh qemu-vhost-net-zc.sh DISK.img [TAP]
set -e
disk=${1:?usage: $0 DISK.img [TAP]}
tap=${2:-vnzc0}

# A tap for the guest, attached to whatever bridge the host uses (here: none).
ip tuntap add dev "$tap" mode tap vnet_hdr 2>/dev/null || true
ip link set "$tap" up

# Optional: a deadline of 200 ms for this device's zero-copy buffers would be set through
# VHOST_NET_ZC_SET_TIMEOUT on fd 3 (see samples/vhost-net-zc-counters.c); the module
# parameter timeout_ms is the default.
exec 3<>/dev/vhost-net-zc
exec qemu-system-x86_64 -enable-kvm -m 2G -smp 2 \
	-drive file="$disk",if=virtio \
	-netdev tap,id=net0,ifname="$tap",script=no,downscript=no,vhost=on,vhostfd=3 \
	-device virtio-net-pci,netdev=net0 \
	-nographic
