#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make run`: boot the test kernel and run the demonstration (samples/demo_vm.sh).
set -euo pipefail
VNZC_TAG=run
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
results=$VNZC_ROOT/.results/run-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"
out=$results/console.log
timeout -k 10 "${VNZC_RUN_TIMEOUT:-900}" bash "$VNZC_ROOT/scripts/vm.sh" "$kdir" \
	"bash $VNZC_ROOT/samples/demo_vm.sh $results $kdir" 2>"$results/vm.stderr" | tee "$out" | cat
grep -q '^DEMO OK$' "$out" || vnzc_die "the demonstration failed; see $results"
