#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The Debian packages (make dkms-deb) installed with dpkg: DKMS builds the module for the
# running kernel against its build directory (the cached tree this kernel was built from),
# the module loads from updates/dkms, DKMS skips a kernel without Rust, the tools of
# vhost-net-zc-tools run, and removing the packages removes them again.
# Run in the test VM (selftests/run_vm.sh) with vhost_net_zc loaded from VNZC_KO; leaves it
# loaded from there again. Exit status 0: pass, 1: fail.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=selftests/lib_vm.sh
. "$ROOT/selftests/lib_vm.sh"
: "${VNZC_KO:?the module to reload after the test}"
# Whatever happens, the project's module is loaded again at the end.
trap 'kmod_loaded vhost_net_zc || kmod_load_zc' EXIT
kver=$(uname -r)

# A kernel that cannot take the module is named with what it lacks, not a compiler error.
fake=$(mktemp -d)
expect_refusal() { # WHAT PATTERN
	local out
	out=$(bash "$ROOT/scripts/dkms-build.sh" "$fake" 0.0.0-fake 2>&1) &&
		{ echo "built for a kernel without $1"; exit 1; }
	printf '%s\n' "$out" | grep -q "$2" || { echo "no clear message without $1: $out"; exit 1; }
	echo "without $1: $out"
}
echo "CONFIG_CC_IS_CLANG=y" >"$fake/.config"
expect_refusal CONFIG_RUST "needs CONFIG_RUST=y"
printf 'CONFIG_RUST=y\n' >"$fake/.config"
expect_refusal "the Rust metadata" "lacks the kernel's Rust metadata"
mkdir "$fake/rust" && touch "$fake/rust/libkernel.rmeta" "$fake/rust/libmacros.so"
printf 'CONFIG_RUST=y\nCONFIG_RUSTC_VERSION_TEXT="rustc 0.0.1"\n' >"$fake/.config"
expect_refusal "the same rustc" "must be built by the same rustc"
cp "/lib/modules/$kver/build/.config" "$fake/.config"
expect_refusal "drivers/vhost/vhost.h" "set VNZC_KSRC"
rm -rf "$fake"

deb=$(ls "$ROOT"/dist/vhost-net-zc-dkms_*.deb 2>/dev/null | tail -n 1)
dev=$(ls "$ROOT"/dist/vhost-net-zc-dev_*.deb 2>/dev/null | tail -n 1)
tools=$(ls "$ROOT"/dist/vhost-net-zc-tools_*.deb 2>/dev/null | tail -n 1)
[ -n "$deb" ] && [ -n "$dev" ] && [ -n "$tools" ] ||
	{ echo "no packages in dist/ (make dkms-deb)"; exit 1; }
command -v dkms >/dev/null || { echo "dkms is not installed on the host"; exit 1; }
[ -e "/lib/modules/$kver/build/.config" ] || { echo "no build directory for $kver"; exit 1; }
# The VM's root is the host's under overlayfs, where renaming a directory fails (EXDEV),
# as dpkg and dkms do: the directories they create in get a tmpfs of their own.
for d in /usr/src /usr/share/doc /var/lib/dkms; do
	mkdir -p "$d" && mount -t tmpfs vnzc-dkms "$d" || exit 1
done
trap 'umount /usr/src /usr/share/doc /var/lib/dkms 2>/dev/null
      kmod_loaded vhost_net_zc || kmod_load_zc' EXIT
# The module as DKMS built it on the host (scripts/dkms-prebuild.sh): the package's
# postinst loads a DKMS tarball found in /usr/share/vhost-net-zc-dkms/ instead of
# compiling, which takes about 25 minutes under TCG. VNZC_DKMS_BUILD_IN_VM=1: compile here.
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$ROOT/dkms.conf")
tarball=$ROOT/dist/vhost-net-zc-$version.dkms.tar.gz
if [ "${VNZC_DKMS_BUILD_IN_VM:-0}" != 1 ]; then
	[ -f "$tarball" ] || { echo "no $tarball (scripts/dkms-prebuild.sh)"; exit 1; }
	mkdir -p /usr/share/vhost-net-zc-dkms && cp "$tarball" /usr/share/vhost-net-zc-dkms/ || exit 1
	echo "DKMS tarball built on the host: $(basename "$tarball")"
fi
rmmod vhost_net_zc || exit 1
# No man-db index rebuild for the man pages: its trigger runs while this file exists, and
# under TCG it indexes the whole system's pages (the VM's root is an overlay: the host's
# file stays).
rm -f /var/lib/man-db/auto-update
dpkg -i "$deb" "$dev" "$tools" >/tmp/dkms-install.log 2>&1
rc=$?
tail -n 5 /tmp/dkms-install.log
[ $rc -eq 0 ] || { cat /var/lib/dkms/vhost-net-zc/*/build/make.log 2>/dev/null | tail -n 30; exit 1; }
dkms status vhost-net-zc
# A kernel without Rust is not applicable (BUILD_EXCLUSIVE_CONFIG), not a failed build:
# dkms build exits 77 ("should not be built") without running the build.
norust=$(mktemp -d)
mkdir "$norust/include" && echo "CONFIG_CC_IS_CLANG=y" >"$norust/.config"
out=$(dkms build "vhost-net-zc/$version" -k 0.0-norust --kernelsourcedir "$norust" 2>&1)
rc=$?
rm -rf "$norust"
printf '%s\n' "$out" | grep -q "BUILD_EXCLUSIVE" && [ $rc -eq 77 ] ||
	{ echo "a kernel without CONFIG_RUST: dkms build exited $rc: $out"; exit 1; }
! printf '%s\n' "$out" | grep -q "Building module" &&
	! dkms status "vhost-net-zc/$version" -k 0.0-norust | grep -Eq "built|installed" ||
	{ echo "a kernel without CONFIG_RUST: DKMS ran the build: $out"; exit 1; }
echo "a kernel without CONFIG_RUST: skipped by DKMS (exit 77)"
ko=$(modinfo -n vhost_net_zc 2>/dev/null)
echo "modinfo -n: $ko"
case $ko in */updates/dkms/*) ;; *) echo "not the DKMS build"; exit 1 ;; esac
modprobe vhost_net_zc || exit 1
[ -c /dev/vhost-net-zc ] || { echo "no /dev/vhost-net-zc"; exit 1; }
# The node as distributions give /dev/vhost-net: group kvm, mode 0660, from the package's
# udev rule, applied by the udevd that runs in this VM (without the rule: root, 0600).
udevadm settle -t 10
node=$(stat -c '%U:%G %a' /dev/vhost-net-zc)
[ "$node" = "root:kvm 660" ] ||
	{ echo "/dev/vhost-net-zc is $node, not root:kvm 660 (lib/udev/rules.d/60-vhost-net-zc.rules)"
	  exit 1; }
echo "/dev/vhost-net-zc: $node, by the packaged udev rule"
# The tools package's programs, on the DKMS-built module; the header and man pages.
info=$(/usr/sbin/vhost-net-zc-info /dev/vhost-net-zc) &&
	printf '%s\n' "$info" | grep -q "^/dev/vhost-net-zc: features 0x" ||
	{ echo "vhost-net-zc-info: $info"; exit 1; }
counters=$(/usr/sbin/vhost-net-zc-counters 250) &&
	printf '%s\n' "$counters" | grep -Eq "^timeout_ms +250$" ||
	{ echo "vhost-net-zc-counters 250: $counters"; exit 1; }
for f in /usr/include/linux/vhost_net_zc.h /usr/share/man/man4/vhost-net-zc.4.gz \
	 /usr/share/man/man8/vhost-net-zc-exec.8.gz; do
	[ -f "$f" ] || { echo "$f not installed"; exit 1; }
done
echo "tools: vhost-net-zc-info and vhost-net-zc-counters ran; header and man pages installed"
rmmod vhost_net_zc || exit 1
dpkg -r vhost-net-zc-tools vhost-net-zc-dev vhost-net-zc-dkms >/tmp/dkms-remove.log 2>&1 ||
	{ tail /tmp/dkms-remove.log; exit 1; }
[ ! -e /usr/sbin/vhost-net-zc-exec ] && [ ! -e /usr/include/linux/vhost_net_zc.h ] &&
	[ ! -e /lib/udev/rules.d/60-vhost-net-zc.rules ] ||
	{ echo "the tools, the header or the udev rule left behind"; exit 1; }
rm -rf /usr/share/vhost-net-zc-dkms
[ ! -e "$ko" ] || { echo "$ko left behind"; exit 1; }
[ -z "$(ls -d /usr/src/vhost-net-zc-* 2>/dev/null)" ] || { echo "/usr/src left behind"; exit 1; }
[ -z "$(dkms status vhost-net-zc 2>/dev/null)" ] || { echo "dkms still lists it"; exit 1; }
echo "installed, built by DKMS for $kver, loaded, removed"
