#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the test kernel under virtme-ng and run one command in it:
#   scripts/vm.sh KDIR 'command' [extra vng args]
# The host's root file system is the guest's (read-only), with $VNZC_ROOT and the result
# directory writable. KVM is used only if a short bounded probe shows it really boots here
# (on some hosts /dev/kvm exists but guests hang at "Decompressing Linux"); otherwise TCG.
# Override with VNZC_KVM=1 (force KVM) or VNZC_KVM=0 (force TCG).
set -euo pipefail
VNZC_TAG=vm
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

kdir=$1
shift
cmd=$1
shift

VNZC_VM_MEMORY=${VNZC_VM_MEMORY:-3G}
VNZC_VM_CPUS=${VNZC_VM_CPUS:-2}

# One virtual machine at a time: a second would halve the first's two CPUs and break its
# timing bounds. The lock is held by vng (fd 9) until the VM exits.
mkdir -p "$VNZC_CACHE"
exec 9>"$VNZC_CACHE/vm.lock"
flock 9

accel=()
case "${VNZC_KVM:-auto}" in
1) ;;
0) accel=(--disable-kvm) ;;
*)
	mkdir -p "$VNZC_CACHE"
	boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
	stamp=$VNZC_CACHE/kvm-probe.$boot
	if [ ! -f "$stamp" ]; then
		if [ -c /dev/kvm ]; then
			vnzc_log "probing KVM (bounded to 45 s)"
			if timeout -k 5 45 vng --run "$kdir" --memory 512M --cpus 1 \
				--exec 'echo VNZC_KVM_OK' </dev/null 2>/dev/null | grep -c VNZC_KVM_OK >/dev/null; then
				echo kvm >"$stamp"
			else
				echo tcg >"$stamp"
			fi
		else
			echo tcg >"$stamp"
		fi
		vnzc_log "virtual machines on this host use: $(cat "$stamp")"
	fi
	[ "$(cat "$stamp")" = kvm ] || accel=(--disable-kvm)
	;;
esac

# 4-level paging (no5lvl): with 5-level paging (TCG's -cpu max has LA57) and inline
# KASAN, Linux 7.3 may report a false "KASAN: wild-memory-access in do_raw_spin_lock" in
# early boot. identify_cpu() clears and re-reads the boot CPU's feature bits; an interrupt
# in that window computes KASAN's shadow bounds for 4-level paging, and a 5-level direct-map
# address looks wild (the upstream report and fix: "kasan: Fix false-positive
# wild-memory-access on x86 under 5-level paging", June 2026). Without LA57 the two views
# agree. Nothing here depends on 5-level paging.
exec vng --run "$kdir" --memory "$VNZC_VM_MEMORY" --cpus "$VNZC_VM_CPUS" --append no5lvl \
	--rwdir "$VNZC_ROOT" --rwdir "$VNZC_CACHE" "${accel[@]}" "$@" --exec "$cmd" </dev/null
