#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the test kernel and run the selftest suite in it (selftests/run_vm.sh). The suite's
# KTAP goes to the terminal and to a result file; the verdict is counted here from that file,
# so a VM that dies or hangs part way fails the run too. Ends with the summary line
# "N passed, N failed, N skipped"; the exit status is the verdict.
set -euo pipefail
VNZC_TAG=check
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
# The suite: main (make check) or vmm (make check-vmm: QEMU over the device).
suite=${VNZC_SUITE:-main}
guest=
if [ "$suite" = vmm ]; then
	# The nested QEMU guest's kernel: the benchmark variant (make guest-kernel).
	guest=$(VNZC_KVARIANT=bench vnzc_kdir)/arch/x86/boot/bzImage
	[ -f "$guest" ] || vnzc_die "no guest kernel at $guest (run 'make guest-kernel')"
fi
# Whole-suite bound: a hang in the kernel under test must fail the run, not stall it.
limit=${VNZC_CHECK_TIMEOUT:-4800}

# run_suite DIR: boot and run the suite once, results in DIR; sets vm_rc.
run_suite() {
	mkdir -p "$1"
	set +e
	# Through a pipe: QEMU reopens its stdout by path, which would truncate a log file
	# the caller redirected this script's output to.
	timeout -k 10 "$limit" bash "$VNZC_ROOT/scripts/vm.sh" "$kdir" \
		"VNZC_SUITE=$suite VNZC_INJECT_FAILURE=${VNZC_INJECT_FAILURE:-0} VNZC_GUEST_KERNEL=$guest VNZC_QEMU_ARGS='${VNZC_QEMU_ARGS:-}' bash $VNZC_ROOT/selftests/run_vm.sh $1 $kdir" \
		2>"$1/vm.stderr" | cat
	vm_rc=${PIPESTATUS[0]}
	set -e
}

start=$(date +%s)
tag=check
[ "$suite" = main ] || tag=check-$suite
results=$VNZC_ROOT/.results/$tag-$(date +%Y%m%d-%H%M%S)
run_suite "$results"
# A splat during boot, before any test ran (seen rarely under TCG in early boot, outside
# the module), turns lockdep off for that boot: boot once more rather than test without it.
if [ -f "$results/boot-splat" ]; then
	vnzc_log "the kernel reported a splat while booting (see $results/boot-splat); booting again"
	results=$results-retry
	run_suite "$results"
fi
elapsed=$(( $(date +%s) - start ))

ktap=$results/ktap
pass=0 fail=0 skip=0 planned=0
if [ -f "$ktap" ]; then
	planned=$(sed -n '/^1\.\.[0-9]\+$/ { s/^1\.\.//p; q }' "$ktap")
	planned=${planned:-0}
	skip=$(grep -cE '^ok [0-9]+ .*# SKIP' "$ktap" || true)
	pass=$(( $(grep -cE '^ok [0-9]+ ' "$ktap" || true) - skip ))
	fail=$(grep -cE '^not ok [0-9]+ ' "$ktap" || true)
fi
seen=$(( pass + fail + skip ))
# The plan must come before the first result: known before the tests ran. (No "| head"
# anywhere here: under pipefail, the writer's SIGPIPE once head has quit would end this
# script with status 141 after a run that passed.)
if [ -f "$ktap" ]; then
	plan_at=$(grep -m 1 -nE '^1\.\.[0-9]+$' "$ktap" | cut -d: -f1)
	first_at=$(grep -m 1 -nE '^(not )?ok [0-9]+ ' "$ktap" | cut -d: -f1)
	if [ -n "$plan_at" ] && [ -n "$first_at" ] && [ "$plan_at" -gt "$first_at" ]; then
		vnzc_log "the plan was printed after the first result: counting the run as failed"
		fail=$(( fail + 1 ))
	fi
fi
# A SKIP is a failure unless selftests/expected-skips lists it, with its reason.
unexpected=0
while IFS= read -r line; do
	name=${line#ok * }
	name=${name%% # SKIP*}
	if ! awk -v n="$name" '!/^#/ && $1 == n { found = 1 } END { exit !found }' \
		"$VNZC_ROOT/selftests/expected-skips"; then
		vnzc_log "unexpected skip (not in selftests/expected-skips): $line"
		unexpected=$(( unexpected + 1 ))
	fi
done < <(grep -E '^ok [0-9]+ .*# SKIP' "$ktap" 2>/dev/null || true)
fail=$(( fail + unexpected ))
if [ "$vm_rc" -ne 0 ]; then
	vnzc_log "the VM exited with status $vm_rc (124: the ${limit}s bound); last lines of its stderr:"
	tail -n 20 "$results/vm.stderr" >&2 || true
fi
if [ "$seen" -ne "$planned" ] || [ "$planned" -eq 0 ]; then
	vnzc_log "the suite reported $seen of $planned planned tests: counting the rest as failed"
	fail=$(( fail + (planned > seen ? planned - seen : 1) ))
fi
vnzc_log "VM run took ${elapsed}s; results in $results"
echo "${pass} passed, ${fail} failed, ${skip} skipped"
[ "$fail" -eq 0 ] && [ "$vm_rc" -eq 0 ]
