# SPDX-License-Identifier: GPL-2.0
#
# Helpers for scripts that run inside the test VM: KTAP output and kernel module loading.
# Sourced by run_vm.sh and the demo; expects KDIR (the test kernel tree) and KTAP (the
# result file) to be set.

VNZC_TESTS_RUN=0

# What the kernel log must never contain: WARN, BUG/KASAN, UBSAN, lockdep and RCU
# reports, debug-object reports, hung tasks, soft and hard lockups, Rust panics, oopses,
# leaks.
SPLAT='WARNING:|BUG:|KASAN:|UBSAN:|circular locking dependency|recursive locking detected|inconsistent lock state|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|blocked for more than|soft lockup|hard LOCKUP|panicked at|Oops|general protection fault|kernel BUG at|unreferenced object|ODEBUG:|Call Trace:'

# boot_splat DIR: whether the kernel reported a splat before anything of ours ran; if so,
# saves the log to DIR/boot-splat and prints the splat as diagnostics.
boot_splat() {
	dmesg | grep -qE "$SPLAT" || return 1
	dmesg >"$1/boot-splat"
	echo "# the kernel reported a splat while booting, before any test ran:"
	dmesg | grep -E -A12 "$SPLAT" | head -n 30 | sed 's/^/# /'
	return 0
}

# ktap LINE: one line of the result stream, to the terminal and to the result file.
ktap() {
	printf '%s\n' "$*"
	printf '%s\n' "$*" >>"$KTAP"
}

ktap_diag() {
	local line
	while IFS= read -r line; do
		ktap "# $line"
	done
}

# ktap_result ok|fail|skip NAME [REASON]
ktap_result() {
	VNZC_TESTS_RUN=$((VNZC_TESTS_RUN + 1))
	case "$1" in
	ok) ktap "ok $VNZC_TESTS_RUN $2" ;;
	skip) ktap "ok $VNZC_TESTS_RUN $2 # SKIP ${3:-}" ;;
	*) ktap "not ok $VNZC_TESTS_RUN $2${3:+ # $3}" ;;
	esac
}

# run_case NAME FUNCTION: a shell test; the function's output becomes diagnostics, its
# status the result (0 pass, 4 skip as in kselftest, anything else fail).
run_case() {
	local name=$1 fn=$2 out rc last
	if [ -n "${PLAN_CASES+set}" ] && [[ " ${PLAN_CASES[*]} " != *" $name "* ]]; then
		ktap_result fail "$name" "not in the plan (PLAN_CASES)"
		return
	fi
	out=$(mktemp)
	"$fn" >"$out" 2>&1
	rc=$?
	ktap_diag <"$out"
	last=$(tail -n 1 "$out")
	rm -f "$out"
	case $rc in
	0) ktap_result ok "$name" ;;
	4) ktap_result skip "$name" "$last" ;;
	*) ktap_result fail "$name" ;;
	esac
}

# harness_cases PROGRAM: how many test points run_harness PROGRAM will report, before it
# runs: for a kselftest_harness program, from its -l listing (per fixture, its variants
# times its tests; the columns are printf'd as %-20s %-25s %s); for vnzc_qemu.py, --count.
harness_cases() {
	case "$1" in
	*.py) "$1" --count ;;
	*) "$1" -l 2>&1 | awk '
		function flush() { if (t) n += (v ? v : 1) * t; v = 0; t = 0 }
		/^# FIXTURE/ { next }
		/^-+$/ { flush(); next }
		length(substr($0, 1, 20)) == 20 && substr($0, 21, 1) != " " { bad = 1 }
		{ var = substr($0, 22, 25); test = substr($0, 48)
		  gsub(/ /, "", var); gsub(/ /, "", test)
		  if (var != "") v++
		  if (test != "") t++ }
		END { flush(); if (bad) n = -1; print n + 0 }' ;;
	esac
}

# run_harness PROGRAM [ARGS...]: a kselftest_harness program (or another that prints TAP);
# each of its test cases becomes a test point of ours, named PROGRAM:CASE. A program that
# dies before reporting every case it planned adds a failed point.
run_harness() {
	local prog=$1 out rc line planned=0 seen=0 base
	shift
	base=$(basename "$prog")
	base=${base%.py}
	if [ -n "${PLAN_HARNESSES+set}" ] && [[ " ${PLAN_HARNESSES[*]} " != *" $base "* ]]; then
		ktap_result fail "$base" "not in the plan (PLAN_HARNESSES)"
		return
	fi
	out=$(mktemp)
	timeout -k 5 "${VNZC_HARNESS_TIMEOUT:-300}" "$prog" "$@" >"$out" 2>&1
	rc=$?
	while IFS= read -r line; do
		case "$line" in
		1..*) planned=${line#1..} ;;
		"ok "[0-9]*|"not ok "[0-9]*)
			seen=$((seen + 1))
			local verdict=ok rest
			[ "${line#not }" != "$line" ] && { verdict=fail; line=${line#not }; }
			rest=${line#ok }
			rest=${rest#* }
			if [ "$verdict" = ok ] && [ "${rest%%# SKIP*}" != "$rest" ]; then
				ktap_result skip "$base:${rest%% # SKIP*}" "${rest#*# SKIP}"
			else
				ktap_result "$verdict" "$base:$rest"
			fi
			;;
		*) ktap "# $line" ;;
		esac
	done <"$out"
	rm -f "$out"
	if [ "$seen" -ne "$planned" ] || [ "$planned" -eq 0 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ] && [ "$rc" -ne 4 ]; }; then
		ktap_result fail "$base" "exit status $rc, $seen of $planned cases reported"
	fi
}

# The .ko of module NAME in the test kernel tree (or the project for vhost_net_zc).
kmod_path() {
	local name=${1//-/_} rel
	rel=$(grep -E "(^|/)$name\.o$" "$KDIR/modules.order" | head -n 1)
	[ -n "$rel" ] || return 1
	printf '%s/%s\n' "$KDIR" "${rel%.o}.ko"
}

kmod_loaded() {
	[ -d "/sys/module/${1//-/_}" ]
}

# kmod_load NAME [PARAMS...]: load a module of the test kernel with its dependencies.
kmod_load() {
	local name=$1 path dep
	shift
	kmod_loaded "$name" && return 0
	path=$(kmod_path "$name") || { echo "no module $name in $KDIR"; return 1; }
	for dep in $(modinfo -F depends "$path" | tr ',' ' '); do
		kmod_load "$dep" || return 1
	done
	insmod "$path" "$@"
}

# kmod_load_zc [PARAMS...]: load vhost_net_zc.ko from the project after its dependencies.
kmod_load_zc() {
	local dep
	for dep in $(modinfo -F depends "$VNZC_KO" | tr ',' ' '); do
		kmod_load "$dep" || return 1
	done
	insmod "$VNZC_KO" "$@"
}

# The stall of the demonstration and the benchmarks: a persistent tap vnzctap in bridge
# vnzcbr whose other port, dummy vnzcd0, has a plug qdisc and receives every frame for
# 02:00:00:00:00:d0. Returns once both ports forward.
stall_fixture_up() {
	local p
	ip link add vnzcbr type bridge &&
		ip link add vnzcd0 type dummy &&
		tc qdisc add dev vnzcd0 root plug limit 100000000 &&
		ip tuntap add dev vnzctap mode tap vnet_hdr &&
		ip link set vnzcd0 master vnzcbr && ip link set vnzctap master vnzcbr &&
		ip link set vnzcd0 up && ip link set vnzctap up && ip link set vnzcbr up &&
		bridge fdb add 02:00:00:00:00:d0 dev vnzcd0 master static || return 1
	for p in vnzctap vnzcd0; do
		for _ in $(seq 100); do
			[ "$(cat /sys/class/net/$p/brport/state)" = 3 ] && break
			sleep 0.1
		done
	done
}

stall_release() { tc qdisc change dev vnzcd0 root plug release_indefinite; }
stall_block() { tc qdisc change dev vnzcd0 root plug block; }
stall_fixture_down() { ip link del vnzcbr; ip link del vnzcd0; ip link del vnzctap; }
