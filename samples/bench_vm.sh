#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks, inside the test VM (run by `make bench`; see scripts/bench.sh):
# - the timer cost per packet of the two designs for deadlines (one hrtimer per virtqueue
#   armed for the earliest deadline, as built, against one hrtimer per buffer), from the
#   module's vhost-net-zc/timer_cost in debugfs;
# - reset latency under a stall: VHOST_NET_SET_BACKEND -1 with 8 zero-copy frames held in a
#   plugged qdisc (samples/vhost-net-zc-stall), on vhost-net-zc and on stock vhost-net with
#   experimental_zcopytx=1 (whose reset returns only when a watchdog releases the qdisc).
#   bench_vm.sh RESULT_DIR KDIR
set -u
RESULTS=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KTAP=$RESULTS/bench.ktap
VNZC_KO=$ROOT/vhost_net_zc.ko
REPORT=$RESULTS/report.md
RUNS=${VNZC_BENCH_RUNS:-5}
: >"$KTAP"
. "$ROOT/selftests/lib_vm.sh"

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
kmod_load vhost_net experimental_zcopytx=1 || exit 1
for m in tun dummy sch_plug; do kmod_load "$m" || exit 1; done
kmod_load_zc || exit 1

{
	echo "# vhost-net-zc benchmarks"
	echo
	echo "Kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs," \
		"$(grep -q hypervisor /proc/cpuinfo && echo virtual machine), $(date -u +%F)."
	echo "Emulated (TCG) unless the host's KVM works: absolute times are slow; compare"
	echo "within a table."
	echo
	echo "## Deadline timers: cost per packet"
	echo
	echo "One timer per virtqueue armed for the earliest deadline (built) against one timer"
	echo "per buffer (started at the send, cancelled at the completion), 128 in flight,"
	echo "100000 packets per run:"
	echo
	echo "| run | per virtqueue, ns/packet | per buffer, ns/packet |"
	echo "| --- | --- | --- |"
} >"$REPORT"
for run in $(seq "$RUNS"); do
	out=$(cat /sys/kernel/debug/vhost-net-zc/timer_cost)
	q=$(printf '%s\n' "$out" | sed -n 's/^per_queue_timer_ns_per_packet: //p')
	b=$(printf '%s\n' "$out" | sed -n 's/^per_buffer_timer_ns_per_packet: //p')
	echo "| $run | $q | $b |" >>"$REPORT"
done

stall_fixture_up || exit 1
STALL=$ROOT/samples/vhost-net-zc-stall

{
	echo
	echo "## Reset latency under a stall"
	echo
	echo "\`VHOST_NET_SET_BACKEND\` -1 with 8 zero-copy frames of 1000 bytes held in a plugged"
	echo "qdisc, 800 ms after they were sent (vhost-net-zc's timeout set to 500 ms); stock"
	echo "vhost-net (\`experimental_zcopytx=1\`) returns only when a watchdog releases the"
	echo "qdisc, 3 s after the reset began:"
	echo
	echo "| device | run | reset, ms | heads returned | guest bytes |"
	echo "| --- | --- | --- | --- | --- |"
} >>"$REPORT"
for run in $(seq "$RUNS"); do
	r=$("$STALL" /dev/vhost-net-zc vnzctap 8 | sed -n 's/^RESULT //p')
	stall_release
	stall_block
	read -r _ ms heads intact <<<"$r"
	echo "| vhost-net-zc | $run | $ms | $heads/8 | $([ "$intact" = 1 ] && echo intact || echo changed) |" >>"$REPORT"
done
( sleep 3.8; stall_release ) &
r=$("$STALL" /dev/vhost-net vnzctap 8 | sed -n 's/^RESULT //p')
wait
read -r _ ms heads intact <<<"$r"
echo "| stock vhost-net | 1 | $ms | $heads/8 | $([ "$intact" = 1 ] && echo intact || echo changed) |" >>"$REPORT"
stall_release
stall_fixture_down
{
	echo
	echo "Not measured yet: TX packets/s and Gbit/s at 64 B, 1500 B and 64 KiB, CPU per packet."
} >>"$REPORT"
dmesg >"$RESULTS/dmesg"
