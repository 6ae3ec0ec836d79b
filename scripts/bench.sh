#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: boot the test kernel and run the benchmarks (samples/bench_vm.sh). They
# measure; they pass or fail nothing but their own running. The report is printed and kept
# in .results/bench-<date>/report.md.
set -euo pipefail
VNZC_TAG=bench
. "$(dirname "$0")/lib.sh"

kdir=$(vnzc_kdir)
results=$VNZC_ROOT/.results/bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"
timeout -k 10 "${VNZC_BENCH_TIMEOUT:-1200}" bash "$VNZC_ROOT/scripts/vm.sh" "$kdir" \
	"bash $VNZC_ROOT/samples/bench_vm.sh $results $kdir" 2>"$results/vm.stderr" |
	cat >"$results/console.log"
[ -s "$results/report.md" ] || vnzc_die "no report; see $results/console.log"
cat "$results/report.md"
vnzc_log "report: $results/report.md"
