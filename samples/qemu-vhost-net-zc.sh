#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# QEMU with its virtio-net device served by vhost-net-zc instead of vhost-net. QEMU takes an
# already open vhost device as vhostfd=N and drives it with the vhost-net ioctls, which
# /dev/vhost-net-zc speaks unchanged; samples/vhost-net-zc-exec opens the device, sets its
# zero-copy deadline through the project's UAPI, and runs QEMU with it as fd 3.
# selftests/vnzc_qemu.py runs this command line (TCG, a busybox guest) in the test VM.
#
#   sh qemu-vhost-net-zc.sh KERNEL INITRD [TAP [TIMEOUT_MS]]
set -e
kernel=${1:?usage: $0 KERNEL INITRD [TAP [TIMEOUT_MS]]}
initrd=${2:?usage: $0 KERNEL INITRD [TAP [TIMEOUT_MS]]}
tap=${3:-vnzc0}
timeout=${4:-200}
here=$(dirname "$0")

# A persistent tap with a vnet header; attach it to a bridge of the host's as needed.
ip tuntap add dev "$tap" mode tap vnet_hdr 2>/dev/null || true
ip link set "$tap" up

accel=tcg
[ -w /dev/kvm ] && accel=kvm
exec "$here/vhost-net-zc-exec" -t "$timeout" 3 \
	qemu-system-x86_64 -accel "$accel" -m 512M -nographic \
	-kernel "$kernel" -initrd "$initrd" -append "console=ttyS0" \
	-netdev tap,id=net0,ifname="$tap",script=no,downscript=no,vhost=on,vhostfd=3 \
	-device virtio-net-pci,netdev=net0
