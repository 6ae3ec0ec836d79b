#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The long runs of make fuzz and make soak, inside the test VM as root:
#   soak_vm.sh fuzz SECONDS KDIR   the fuzzer (vnzc_fuzz) for SECONDS per case
#   soak_vm.sh soak ROUNDS KDIR    ROUNDS reset/completion/expiry interleavings
#                             (completion_races_offline, 10,000 a run), then vnzc_scale
#                             with 1,000 module load/unload cycles
# Ends, as the suite does, with the kernel log and kmemleak checks; prints one line
# "SOAK PASSED" or "SOAK FAILED" and exits with the verdict.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TESTS=$ROOT/selftests
VNZC_KO=$ROOT/vhost_net_zc.ko
mode=$1
amount=$2
KDIR=$3		# the test kernel tree, whose modules lib_vm.sh loads
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
	runs=$(( (amount + 9999) / 10000 ))
	for i in $(seq 1 "$runs"); do
		echo "# interleavings: run $i of $runs (10,000 rounds each)"
		"$TESTS/vnzc_offline_safety" -t completion_races_offline || { rc=1; break; }
	done
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
