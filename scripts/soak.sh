#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make fuzz and make soak: boot the test kernel and run the long modes of the fuzzer and of
# the race and scale tests in it (selftests/soak_vm.sh), for as long as asked:
#   scripts/soak.sh fuzz SECONDS   (make fuzz FUZZ_SECONDS=...; default 600 per case)
#   scripts/soak.sh soak ROUNDS    (make soak SOAK_ROUNDS=...; default 1,000,000; with
#                                   VNZC_CYCLES module load/unload cycles, default 1,000)
# The output is kept in .results/MODE-DATE/log; the exit status is the verdict.
set -euo pipefail
VNZC_TAG=soak
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

mode=$1
amount=$2
kdir=$(vnzc_kdir)
results=$VNZC_ROOT/.results/$mode-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"
vnzc_log "$mode: $amount; output in $results/log"
set +e
bash "$VNZC_ROOT/scripts/vm.sh" "$kdir" \
	"VNZC_CYCLES=${VNZC_CYCLES:-1000} bash $VNZC_ROOT/selftests/soak_vm.sh $mode $amount $kdir" \
	2>"$results/vm.stderr" | tee "$results/log"
set -e
grep -qx 'SOAK PASSED' "$results/log"
