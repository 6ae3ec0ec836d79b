#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks, inside the VM of the benchmark kernel (run by `make bench`; see
# scripts/bench.sh):
#   bench_vm.sh RESULT_DIR KDIR MODULE
# Writes RESULT_DIR/raw.txt: one "BENCH ..." line per run of samples/vhost-net-zc-bench,
# each prefixed with "rep=<n> variant=<name>", and the machine facts; scripts/bench-report.py
# makes the report from it on the host. The variants, alternated within each (mode, rep, size)
# cell in a random order per cell (a "# order" line of raw.txt records it):
#   stock-copy   /dev/vhost-net, experimental_zcopytx=0 (stock's default)
#   stock-zc     /dev/vhost-net, experimental_zcopytx=1
#   zc-copy      /dev/vhost-net-zc, zcopy_tx=0
#   zc-zc        /dev/vhost-net-zc, zcopy_tx=1 (its default)
# Environment: VNZC_BENCH_REPS (5), VNZC_BENCH_SECONDS (3), VNZC_BENCH_SIZES
# ("64 1500 65000"), VNZC_BENCH_ROUNDS (resets per cell, 20), VNZC_BENCH_SEED (the seed of
# the variants' orders, 1: a run's orders can be drawn again).
set -u
RESULTS=$1
KDIR=$2
VNZC_KO=$3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KTAP=$RESULTS/bench.log
RAW=$RESULTS/raw.txt
BENCH=$ROOT/samples/vhost-net-zc-bench
REPS=${VNZC_BENCH_REPS:-5}
SECS=${VNZC_BENCH_SECONDS:-3}
SIZES=${VNZC_BENCH_SIZES:-64 1500 65000}
ROUNDS=${VNZC_BENCH_ROUNDS:-20}
SEED=${VNZC_BENCH_SEED:-1}
VARIANTS=(stock-copy stock-zc zc-copy zc-zc)
# The time after which the watchdog of stock vhost-net's reset runs releases the plug.
WATCHDOG_MS=1000
: >"$KTAP"
echo "# SPDX-License-Identifier: GPL-2.0" >"$RAW"
# shellcheck source=selftests/lib_vm.sh
. "$ROOT/selftests/lib_vm.sh"

note() { echo "$*" | tee -a "$RAW"; }

case $SEED in
'' | *[!0-9]*) echo "VNZC_BENCH_SEED: a number, not '$SEED'" >&2; exit 1 ;;
esac

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
for m in tun dummy sch_plug; do kmod_load "$m" || exit 1; done

# load_variant NAME: the device of variant NAME, loaded with its parameters; prints its path.
load_variant() {
	case "$1" in
	stock-*)
		rmmod vhost_net 2>/dev/null
		kmod_load vhost_net "experimental_zcopytx=$([ "$1" = stock-zc ] && echo 1 || echo 0)" ||
			return 1
		echo /dev/vhost-net
		;;
	zc-*)
		rmmod vhost_net_zc 2>/dev/null
		kmod_load_zc "zcopy_tx=$([ "$1" = zc-zc ] && echo 1 || echo 0)" || return 1
		echo /dev/vhost-net-zc
		;;
	esac
}

# shuffle WORD...: sets ORDER to a random permutation of the words (Fisher-Yates), drawn
# from $RANDOM. Called in this shell, never in a subshell: a subshell draws from a generator
# of its own, and the orders would not follow from the seed.
shuffle() {
	local i j t
	ORDER=("$@")
	for ((i = ${#ORDER[@]} - 1; i > 0; i--)); do
		j=$((RANDOM % (i + 1)))
		t=${ORDER[i]}
		ORDER[i]=${ORDER[j]}
		ORDER[j]=$t
	done
}

note "machine: $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
note "accel: $(dmesg | grep -qi 'Hypervisor detected: KVM' && echo KVM || echo TCG)"
note "config: $(zcat /proc/config.gz 2>/dev/null | grep -cE '^CONFIG_(KASAN|PROVE_LOCKING|DEBUG_KMEMLEAK)=y') debug options of KASAN/lockdep/kmemleak set"
note "date: $(date -u +%FT%TZ)"
note "seed: $SEED"
RANDOM=$SEED

# The throughput fixture: tap vnzbtap in bridge vnzbb, whose other port, dummy vnzbd0
# (no queue: it frees what it is given), receives every frame for 02:00:00:00:00:b0.
ip link add vnzbb type bridge &&
	ip link add vnzbd0 type dummy &&
	ip tuntap add dev vnzbtap mode tap vnet_hdr &&
	ip link set vnzbd0 master vnzbb && ip link set vnzbtap master vnzbb &&
	ip link set vnzbd0 up && ip link set vnzbtap up && ip link set vnzbb up &&
	bridge fdb add 02:00:00:00:00:b0 dev vnzbd0 master static || exit 1
for _ in $(seq 100); do
	[ "$(cat /sys/class/net/vnzbtap/brport/state)" = 3 ] &&
		[ "$(cat /sys/class/net/vnzbd0/brport/state)" = 3 ] && break
	sleep 0.1
done

note "load: start of the throughput runs: $(cat /proc/loadavg)"
for mode in tx rx; do
	for rep in $(seq "$REPS"); do
		for size in $SIZES; do
			shuffle "${VARIANTS[@]}"
			echo "# order $mode rep=$rep size=$size: ${ORDER[*]}" >>"$RAW"
			for v in "${ORDER[@]}"; do
				dev=$(load_variant "$v") || { note "# $v: could not load"; continue; }
				# RX goes to a tap outside the bridge, whose MTU the program sets.
				tap=vnzbtap
				[ "$mode" = rx ] && tap=vnzbrx
				out=$(timeout -k 5 $((SECS + 60)) "$BENCH" "$mode" "$dev" "$tap" "$size" "$SECS" 2>&1)
				printf '%s\n' "$out" | grep -v '^BENCH' | sed "s/^/# $mode $size $v: /" >>"$RAW"
				printf '%s\n' "$out" | grep '^BENCH' | sed "s/^/rep=$rep variant=$v /" | tee -a "$RAW"
			done
		done
	done
	ip link del vnzbrx 2>/dev/null
done
note "load: end of the throughput runs: $(cat /proc/loadavg)"
ip link del vnzbb
ip link del vnzbd0
ip link del vnzbtap

# The timer machinery and memory per buffer, from vhost-net-zc's debugfs.
load_variant zc-zc >/dev/null
for rep in $(seq "$REPS"); do
	tr '\n' ' ' </sys/kernel/debug/vhost-net-zc/timer_cost | sed "s/^/TIMER rep=$rep /" >>"$RAW"
	echo >>"$RAW"
done

# The stalled-queue reset: K buffers stuck x timeout T, reset with the queue idle (right
# after the frames were taken, before their deadline). K stops at 128: both devices keep at
# most 128 zero-copy buffers of a queue in flight (stock: VHOST_MAX_PEND), so 256 cannot be
# stuck at once.
stall_fixture_up || exit 1
export VNZC_BLOCK="tc qdisc change dev vnzcd0 root plug block"
export VNZC_RELEASE="tc qdisc change dev vnzcd0 root plug release_indefinite"
note "load: before the reset runs: $(cat /proc/loadavg)"
for k in 1 64 128; do
	for t in 1 10 100; do
		out=$(timeout -k 5 600 "$BENCH" reset /dev/vhost-net-zc vnzctap "$k" "$t" "$ROUNDS" 2>&1)
		printf '%s\n' "$out" | grep -v '^BENCH' | sed "s/^/# reset $k $t: /" >>"$RAW"
		printf '%s\n' "$out" | grep '^BENCH' | sed "s/^/variant=zc-zc /" | tee -a "$RAW"
	done
done
load_variant stock-zc >/dev/null
note "watchdog: $WATCHDOG_MS ms, after which stock vhost-net's reset runs release the plug"
for k in 1 64 128; do
	out=$(VNZC_WATCHDOG_MS=$WATCHDOG_MS timeout -k 5 600 "$BENCH" reset /dev/vhost-net vnzctap "$k" 0 3 2>&1)
	printf '%s\n' "$out" | grep -v '^BENCH' | sed "s/^/# reset stock $k: /" >>"$RAW"
	printf '%s\n' "$out" | grep '^BENCH' | sed "s/^/variant=stock-zc /" | tee -a "$RAW"
done
eval "$VNZC_RELEASE"
stall_fixture_down
rmmod vhost_net_zc
dmesg >"$RESULTS/dmesg"
echo "BENCH_DONE" >>"$RAW"
