#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the nested guest of vnzc_qemu.py (busybox, in an initramfs made at test time).
# Brings eth0 up as 10.77.0.2/24 and asks the host (10.77.0.1, TCP 5000) what to do, until
# told to stay idle. Each step prints a VNZC_* line on the serial console for the host:
#   traffic N  ping the host; send N MiB of random bytes to the host (TCP 5001), receive N
#              MiB from it (TCP 5002); print the MD5 sums of both and how long each took
#   stall      send 1100 short datagrams and 8 of 1000 bytes to 10.77.0.99 (a MAC the host
#              queues in a plugged qdisc), then wait for the reset
#   idle       print that it is up, and wait
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp
echo "VNZC_GUEST_UP $(cut -d' ' -f1 /proc/uptime)"
ip link set lo up
ip link set eth0 up
ip addr add 10.77.0.2/24 dev eth0

ms() { cut -d' ' -f1 /proc/uptime | tr -d .; }

while :; do
	cmd=$(nc 10.77.0.1 5000 </dev/null 2>/dev/null)
	# shellcheck disable=SC2086 # the command line is split into its words on purpose
	set -- $cmd
	case "$1" in
	traffic)
		echo "VNZC_PING $(ping -c 20 -i 0.2 -W 2 10.77.0.1 | grep 'packets transmitted')"
		dd if=/dev/urandom of=/tmp/tx bs=1048576 count="$2" 2>/dev/null
		echo "VNZC_TX_MD5 $(md5sum </tmp/tx | cut -d' ' -f1)"
		t0=$(ms)
		nc 10.77.0.1 5001 </tmp/tx
		echo "VNZC_TX_DONE $(( ($(ms) - t0) * 10 ))"
		rm -f /tmp/tx
		t0=$(ms)
		nc 10.77.0.1 5002 </dev/null >/tmp/rx
		echo "VNZC_RX_DONE $(( ($(ms) - t0) * 10 ))"
		echo "VNZC_RX_MD5 $(md5sum </tmp/rx | cut -d' ' -f1) $(wc -c </tmp/rx)"
		rm -f /tmp/rx
		;;
	stall)
		arp -s 10.77.0.99 02:00:00:00:00:d0
		/bin/guest_udp 10.77.0.99 9 1100 8 1000
		;;
	idle)
		echo "VNZC_IDLE"
		exec sleep 100000
		;;
	*)
		sleep 1
		;;
	esac
done
