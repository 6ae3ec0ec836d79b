#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: boot the benchmark kernel (the test kernel without its debug options,
# VNZC_KVARIANT=bench) and run the workloads of samples/bench_vm.sh against stock
# vhost-net and vhost-net-zc in the same boot. They measure; they pass or fail nothing but
# their own running. The raw lines and the kernel log are kept in .results/bench-<date>/;
# the report (Markdown and an SVG chart) is written there and to bench/results/.
set -euo pipefail
VNZC_TAG=bench
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

export VNZC_KVARIANT=bench
kdir=$(vnzc_kdir)
[ -f "$kdir/../.built" ] || vnzc_die "no benchmark kernel at $kdir (run 'make guest-kernel')"

# The module for the benchmark kernel, built out of a copy of the sources (the project's
# own build products are for the test kernel).
build=$VNZC_CACHE/build/$(vnzc_kernel_key)
mkdir -p "$build"
(cd "$VNZC_ROOT" && git ls-files -co --exclude-standard Kbuild rust include scripts/vnzc-bindgen.py |
	tar -cf - -T -) | tar -xf - -C "$build"
make -s -C "$kdir" M="$build" LLVM=1 -j"$(nproc)" VNZC_BENCH=1 modules
vnzc_log "module for $(basename "$(dirname "$kdir")") built in $build"

results=$VNZC_ROOT/.results/bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"
# The host's load around the VM (its 2 CPUs run the VM's): anything else running on the
# host shows here, next to the VM's own load lines.
host_load_before=$(cat /proc/loadavg)
timeout -k 10 "${VNZC_BENCH_TIMEOUT:-3600}" bash "$VNZC_ROOT/scripts/vm.sh" "$kdir" \
	"VNZC_BENCH_REPS=${VNZC_BENCH_REPS:-5} VNZC_BENCH_SECONDS=${VNZC_BENCH_SECONDS:-3} VNZC_BENCH_ROUNDS=${VNZC_BENCH_ROUNDS:-20} VNZC_BENCH_SEED=${VNZC_BENCH_SEED:-1} VNZC_BENCH_SIZES='${VNZC_BENCH_SIZES:-64 1500 65000}' bash $VNZC_ROOT/samples/bench_vm.sh $results $kdir $build/vhost_net_zc.ko" \
	2>"$results/vm.stderr" | cat >"$results/console.log"
grep -q '^BENCH_DONE' "$results/raw.txt" 2>/dev/null ||
	vnzc_die "the benchmarks did not finish; see $results/console.log"
printf 'load: host, before the VM: %s\nload: host, after the VM: %s\n' \
	"$host_load_before" "$(cat /proc/loadavg)" >>"$results/raw.txt"
python3 "$VNZC_ROOT/scripts/bench-report.py" "$results/raw.txt" "$results"
out=$VNZC_ROOT/bench/results
mkdir -p "$out"
cp "$results/report.md" "$results/chart.svg" "$results/raw.txt" "$out/"
cat "$results/report.md"
vnzc_log "report: $out/report.md (and $results)"
