#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Tries scripts/setup-host.sh the way a new user of a plain Debian 12 host would: in a clean
# Debian 12 root made with debootstrap (minbase, plus git and ca-certificates), as root,
# after `apt-get install make`; then a second run, which must only check. With --kernel,
# scripts/kernel.sh then builds the test kernel there, with the toolchain setup-host
# installed (about 10 minutes on 2 cores when nothing else runs).
#
#   scripts/setup-on-clean-debian.sh [--kernel] [ROOT]   (ROOT: /var/tmp/vnzc-debian12)
#
# The root keeps the host's apt mirror, its DNS configuration and the CA certificates the
# host added itself (/usr/local/share/ca-certificates: a proxy's, where there is one). The
# log is ROOT/root/setup.log; the exit status is the verdict.
set -euo pipefail

kernel=0
if [ "${1:-}" = --kernel ]; then
	kernel=1
	shift
fi
root=${1:-/var/tmp/vnzc-debian12}
src=$(cd "$(dirname "$0")/.." && pwd)

[ "$(id -u)" -eq 0 ] || { echo "must run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null ||
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
	 awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)

if [ ! -x "$root/usr/bin/apt-get" ]; then
	echo "debootstrap bookworm into $root"
	debootstrap --variant=minbase --include=git,ca-certificates bookworm "$root" "$mirror" \
		>"$root.debootstrap.log" 2>&1 ||
		{ tail -n 20 "$root.debootstrap.log" >&2; exit 1; }
	# A Debian 12 install's suites: the release, its updates and its security updates.
	security=${mirror%/debian}/debian-security
	printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
		"$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
	chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
for m in proc sys dev dev/pts; do
	mountpoint -q "$root/$m" || mount --bind "/$m" "$root/$m"
done
trap 'for m in dev/pts dev sys proc; do umount "$root/$m" 2>/dev/null || true; done' EXIT
rm -rf "$root/root/vhost-net-zc"
git clone -q "$src" "$root/root/vhost-net-zc"

cat >"$root/root/new-user.sh" <<'EOF'
#!/bin/bash
set -e
cd /root/vhost-net-zc
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
t0=$(date +%s)
bash scripts/setup-host.sh
echo "setup-host: $(( $(date +%s) - t0 )) s; a second run:"
bash scripts/setup-host.sh
export PATH="$HOME/.cargo/bin:$PATH:$HOME/.cache/vhost-net-zc/bin"
echo "rustc: $(rustc --version); bindgen: $(bindgen --version); vng: $(vng --version)"
if [ "$1" = 1 ]; then
	t0=$(date +%s)
	bash scripts/kernel.sh
	echo "kernel: $(( $(date +%s) - t0 )) s"
fi
EOF
chmod +x "$root/root/new-user.sh"
chroot "$root" env -i HOME=/root TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/root/new-user.sh "$kernel" 2>&1 | tee "$root/root/setup.log"
