#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The long runs of make fuzz and make soak, inside the test VM as root:
#   soak_vm.sh fuzz SECONDS KDIR   the fuzzer (vnzc_fuzz) for SECONDS per case
#   soak_vm.sh soak ROUNDS KDIR    ROUNDS reset/completion/expiry interleavings
#                             (completion_races_offline, 10,000 a run, VNZC_SOAK_JOBS
#                             runs at once), then vnzc_scale with VNZC_CYCLES (1,000)
#                             module load/unload cycles
# Ends, as the suite does, with the kernel log and kmemleak checks; prints one line
# "SOAK PASSED" or "SOAK FAILED" and exits with the verdict.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TESTS=$ROOT/selftests
VNZC_KO=$ROOT/vhost_net_zc.ko
mode=$1
amount=$2
KDIR=$3		# the test kernel tree, whose modules lib_vm.sh loads
# shellcheck source=selftests/lib_vm.sh
. "$TESTS/lib_vm.sh"

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
for m in tun macvtap veth dummy sch_plug; do
	kmod_load "$m" || echo "# could not load $m"
done
# The fuzzer's differential cases compare with stock vhost-net, zero copy on.
kmod_load vhost_net experimental_zcopytx=1 || echo "# could not load vhost_net"
kmod_load_zc || { echo "SOAK FAILED: vhost_net_zc did not load"; exit 1; }

rc=0
start=$(date +%s)
case $mode in
fuzz)
	VNZC_FUZZ_SECONDS=$amount "$TESTS/vnzc_fuzz" 2>&1 | tee /tmp/vnzc_fuzz.out
	[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
	# Each case prints "N operations in E episodes, S s, R ops/s": the total of them.
	awk '/ operations in [0-9]+ episodes, / {
		for (i = 1; i < NF; i++) {
			if ($(i + 1) == "operations") ops += $i
			if ($(i + 1) == "s,") secs += $i
		}
	     }
	     END { printf "# fuzz total: %d operations in %.1f s, %.0f ops/s\n", ops, secs,
		   secs ? ops / secs : 0 }' /tmp/vnzc_fuzz.out
	;;
soak)
	# VNZC_SOAK_JOBS (2) processes at once, each in a network namespace of its own (the
	# fixture's interface names are fixed), each with a device of its own: runs of
	# 10,000 rounds until the total is reached.
	jobs=${VNZC_SOAK_JOBS:-2}
	runs=$(( (amount + 9999) / 10000 ))
	out=$(mktemp -d)
	for j in $(seq 1 "$jobs"); do
		(
			for i in $(seq "$j" "$jobs" "$runs"); do
				echo "# interleavings: job $j, run $i of $runs (10,000 rounds each)"
				unshare -nm --propagation private sh -c \
					'mount -t sysfs sysfs /sys && exec "$@"' soak \
					"$TESTS/vnzc_offline_safety" -t completion_races_offline ||
					{ echo "# job $j: run $i FAILED"; exit 1; }
			done
		) >"$out/job$j" 2>&1 &
	done
	for j in $(seq 1 "$jobs"); do
		wait -n || rc=1
	done
	cat "$out"/job*
	# Each run prints "N rounds, F frames: Z zero-copy, O offlined, C completed; ...".
	awk '/ rounds, [0-9]+ frames: / {
		for (i = 2; i <= NF; i++) {
			if ($i == "rounds,") {
				n = $(i - 1)
				sub(/.*:/, "", n)	# "completion_races_offline:N"
				rounds += n
			}
			if ($i == "frames:") frames += $(i - 1)
			if ($i == "offlined,") off += $(i - 1)
			if ($i == "completed;") done += $(i - 1)
		}
	     }
	     END { printf "# interleavings total: %d rounds (resets) in %d s (%.0f/s), %d buffers each raced against its expiry and the reset: %d offlined, %d completed in all\n",
		   rounds, secs, secs ? rounds / secs : 0, frames, off, done }' \
		secs=$(( $(date +%s) - start )) "$out"/job*
	rm -rf "$out"
	VNZC_KO=$VNZC_KO VNZC_CYCLES=${VNZC_CYCLES:-1000} "$TESTS/vnzc_scale" || rc=1
	;;
*)
	echo "usage: soak_vm.sh fuzz SECONDS KDIR | soak ROUNDS KDIR" >&2
	exit 2
	;;
esac
echo "# $mode ran for $(( $(date +%s) - start )) s"
kmemleak_check || rc=1
dmesg_check || rc=1
if [ "$rc" -eq 0 ]; then
	echo "SOAK PASSED"
else
	echo "SOAK FAILED"
fi
exit $rc
