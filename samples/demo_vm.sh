#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The `make run` demonstration, inside the test VM: load vhost-net-zc, show its device and
# parameters, have a VMM's first ioctls answered, then the product's point: a device reset
# while zero-copy TX buffers are stuck in a plugged qdisc, on stock vhost-net with zero copy
# (blocks until the qdisc is released) and on vhost-net-zc (returns after the deadline,
# every head back, the guest's bytes intact).
#   demo_vm.sh RESULT_DIR KDIR
set -u
RESULTS=$1
KDIR=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KTAP=$RESULTS/demo.log
VNZC_KO=$ROOT/vhost_net_zc.ko
: >"$KTAP"
# shellcheck source=selftests/lib_vm.sh
. "$ROOT/selftests/lib_vm.sh"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'DEMO FAILED: %s\n' "$*"; exit 1; }

# A splat while the kernel booted, before the module was loaded, is not the demonstration's
# (seen rarely under TCG in early boot): say so, and let scripts/run.sh boot again.
if boot_splat "$RESULTS"; then
	printf 'DEMO BOOT SPLAT\n'
	exit 0
fi

step "kernel $(uname -r) with $(grep -c ^processor /proc/cpuinfo) CPUs"
kmod_load vhost_net || fail "stock vhost_net did not load"
kmod_load_zc || fail "vhost_net_zc did not load"
dmesg | grep 'vhost_net_zc:' | tail -n 3

step "the device"
ls -l /dev/vhost-net-zc /dev/vhost-net || fail "device nodes missing"

step "module parameters"
modinfo -F parm "$VNZC_KO"

step "features, as a VMM reads them (VHOST_GET_FEATURES, VHOST_GET_BACKEND_FEATURES)"
"$ROOT/samples/vhost-net-zc-info" /dev/vhost-net-zc /dev/vhost-net || fail "feature ioctls"

step "the project's own ioctls: set the timeout, read the counters (samples/vhost-net-zc-counters)"
"$ROOT/samples/vhost-net-zc-counters" 500 || fail "vhost-net-zc ioctls"

step "the stall: a tap in a bridge whose egress port's qdisc is plug (holds every skb)"
stall_fixture_up || fail "could not build the bridge"
STALL=$ROOT/samples/vhost-net-zc-stall

step "stock vhost-net, experimental_zcopytx=1: the reset waits for the skbs (watchdog releases the qdisc after 5 s)"
rmmod vhost_net && kmod_load vhost_net experimental_zcopytx=1 || fail "reload vhost_net with zero copy"
( sleep 5; state=$(awk '{print $3}' /proc/"$(pgrep -f "vhost-net-zc-stall /dev/vhost-net ")"/stat 2>/dev/null)
  echo "watchdog: after 5 s the VMM is in state ${state:-?} (D: uninterruptible); releasing the qdisc"; stall_release ) &
stock=$("$STALL" /dev/vhost-net vnzctap 8) || fail "stall sample on stock"
printf '%s\n' "$stock" | grep -v ^RESULT
wait
stall_block

step "vhost-net-zc: the same stall, the same reset (timeout 500 ms)"
zc=$("$STALL" /dev/vhost-net-zc vnzctap 8) || fail "stall sample on vhost-net-zc"
printf '%s\n' "$zc" | grep -v ^RESULT
stall_release
rmmod vhost_net && kmod_load vhost_net

read -r _ _ stock_ms _ _ <<<"$(printf '%s\n' "$stock" | grep ^RESULT)"
read -r _ _ zc_ms zc_heads zc_intact <<<"$(printf '%s\n' "$zc" | grep ^RESULT)"
step "report"
printf '  stock vhost-net (zero copy): reset blocked %s ms, until the qdisc was released\n' "$stock_ms"
printf '  vhost-net-zc:                reset returned in %s ms with %s of 8 heads, guest bytes %s\n' \
	"$zc_ms" "$zc_heads" "$([ "$zc_intact" = 1 ] && echo intact || echo CHANGED)"
[ "$zc_heads" = 8 ] && [ "$zc_intact" = 1 ] && [ "$zc_ms" -lt "$stock_ms" ] ||
	fail "vhost-net-zc did not return every head intact, faster than stock"
stall_fixture_down

step "unload (after the stack freed the skbs)"
for _ in $(seq 100); do rmmod vhost_net_zc 2>/dev/null && break; sleep 0.1; done
[ ! -e /dev/vhost-net-zc ] || fail "device still present after rmmod"
echo "vhost_net_zc unloaded, /dev/vhost-net-zc gone"
if dmesg | grep -E "$SPLAT"; then
	fail "kernel log has a splat"
fi
printf '\nDEMO OK\n'
