#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The `make run` demonstration, inside the test VM: load vhost-net-zc, show its device and
# parameters, and have a VMM's first ioctls answered, next to stock vhost-net.
#   demo_vm.sh RESULT_DIR KDIR
set -u
RESULTS=$1
KDIR=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KTAP=$RESULTS/demo.log
VNZC_KO=$ROOT/vhost_net_zc.ko
: >"$KTAP"
. "$ROOT/selftests/lib_vm.sh"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'DEMO FAILED: %s\n' "$*"; exit 1; }

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

step "unload"
rmmod vhost_net_zc || fail "rmmod"
[ ! -e /dev/vhost-net-zc ] || fail "device still present after rmmod"
echo "vhost_net_zc unloaded, /dev/vhost-net-zc gone"
if dmesg | grep -E 'WARNING:|BUG:|KASAN|panicked at|Oops|Call Trace'; then
	fail "kernel log has a splat"
fi
printf '\nDEMO OK\n'
