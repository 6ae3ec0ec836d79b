# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
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
	local bound=${VNZC_HARNESS_TIMEOUT:-300} start=$SECONDS
	timeout -k 5 "$bound" "$prog" "$@" >"$out" 2>&1
	rc=$?
	echo "$base took $((SECONDS - start)) s of its ${bound} s bound" >>"$out"
	if [ "$rc" -eq 124 ]; then
		blocked_tasks "$base" >>"$out"
		fixtures_down >>"$out"
	fi
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

# blocked_tasks NAME: after program NAME ran out of time, what was stuck: every task in
# uninterruptible sleep with its kernel stack, and the kernel log's last splat, so that a
# hang in an unattended run can be diagnosed from the result stream alone.
blocked_tasks() {
	local pid comm n=0
	echo "$1 ran out of time; tasks in uninterruptible sleep:"
	for pid in $(ps -e -o pid=,stat= | awk '$2 ~ /^D/ { print $1 }'); do
		comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
		echo "task $pid ($comm), kernel stack:"
		sed 's/^/  /' "/proc/$pid/stack" 2>/dev/null
		n=$((n + 1))
	done
	echo "$n tasks in uninterruptible sleep"
	dmesg | grep -E -A25 "$SPLAT" | tail -n 60
}

# fixtures_down: removes the network fixtures (every interface named vnzc*) a program
# killed before its teardown left behind: a plug qdisc it left holds skbs, and with them
# the module, until its device goes.
fixtures_down() {
	local link
	for link in $(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
		      grep '^vnzc'); do
		ip link del "$link" 2>/dev/null && echo "removed the leftover interface $link"
	done
}

# kmod_load_zc [PARAMS...]: load vhost_net_zc.ko from the project after its dependencies.
# shellcheck disable=SC2120 # the parameters are optional
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

# kmemleak_check: scans for leaks (twice, as kmemleak reports an object only after two
# scans); fails if there is one of this module's, or if kmemleak is missing or failed.
kmemleak_check() {
	local f=/sys/kernel/debug/kmemleak
	# The test kernel has kmemleak: its absence, or a scan that fails, fails the case.
	[ -w $f ] || { echo "kmemleak not available"; return 1; }
	if dmesg | grep -q 'kmemleak: .*disabled'; then
		echo "kmemleak disabled itself:"
		dmesg | grep 'kmemleak:' | tail -n 5
		return 1
	fi
	# Objects must stay unreferenced for two scans (and their minimum age) to be reported.
	echo scan >$f || { echo "kmemleak scan failed"; return 1; }
	sleep 6
	echo scan >$f || { echo "kmemleak scan failed"; return 1; }
	# One leak is stock vhost-net's own, not this module's: its release clears the TX
	# queue's ubufs pointer without freeing it when a zero-copy backend is still attached
	# (vhost_net_vq_reset(), drivers/vhost/net.c in 7.3), which the diagnostic run of
	# vhost_net_test on stock with experimental_zcopytx=1 above does. Such objects
	# (allocated in vhost_net_ioctl() of [vhost_net]) are listed, not counted.
	awk '/^unreferenced object/ { n++ } { obj[n] = obj[n] $0 "\n" }
	     END { for (i = 1; i <= n; i++) {
		     stock = obj[i] ~ /vhost_net_ioctl\+[^ ]* \[vhost_net\]/
		     printf "%s%s", (stock ? "stock vhost_net, not counted: " : "LEAK: "), obj[i] } }' \
		$f >/tmp/kmemleak.txt
	head -n 80 /tmp/kmemleak.txt
	if grep -q '^LEAK: ' /tmp/kmemleak.txt; then
		return 1
	fi
	echo "no leaks of this module"
}

# dmesg_check: fails if the kernel log has a splat, or no longer holds the whole boot.
dmesg_check() {
	local pat=$SPLAT
	# The log must still hold the whole run (CONFIG_LOG_BUF_SHIFT), its first line the
	# boot's, or a splat could have been overwritten.
	if ! dmesg | head -n 1 | grep -q 'Linux version'; then
		echo "the kernel log wrapped: its first line is not the boot's: $(dmesg | head -n 1)"
		return 1
	fi
	# vnzc_faults fails allocations on purpose: the warnings a failed page allocation
	# prints between its two marker lines (a header, then a stack trace to </TASK>) are
	# the injection's, not splats. Everything else is checked.
	dmesg | awk '/vnzc_faults: fault injection begins/ { inj = 1 }
		     /vnzc_faults: fault injection ends/ { inj = 0 }
		     inj && /page allocation failure|vmalloc error:/ { skip = 1 }
		     skip { if (/<\/TASK>/) skip = 0; next }
		     { print }' >/tmp/dmesg-checked.txt
	if grep -E "$pat" /tmp/dmesg-checked.txt; then
		grep -E -B5 -A30 "$pat" /tmp/dmesg-checked.txt | head -n 120
		return 1
	fi
	echo "kernel log clean"
}
