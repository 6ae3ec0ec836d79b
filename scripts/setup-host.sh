#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install what building and testing vhost-net-zc needs on a Debian 12 (bookworm) host.
# Idempotent: a second run with everything present only checks and returns.
#
# Suites: bookworm-backports supplies clang/lld/llvm 19 and qemu-system-x86 (the host's
# qemu-utils already comes from there); trixie-backports supplies only the kernel source,
# fetched with `apt-get download` and pinned to priority 1 so that nothing is ever installed
# from it (installing from trixie would replace this machine's libc).
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		log "must run as root (apt-get, modules, /dev/kvm); re-run with sudo"
		exit 1
	fi
}

# The mirror the host already uses, read from its own apt configuration so that no host
# name is written into this project.
debian_mirror() {
	local uri
	uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
	      awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
	if [ -z "$uri" ]; then
		uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null |
		      awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
	fi
	[ -n "$uri" ] || { log "cannot find the Debian mirror in /etc/apt"; exit 1; }
	printf '%s\n' "$uri"
}

add_suites() {
	local f=/etc/apt/sources.list.d/vhost-net-zc.sources mirror changed=0
	mirror=$(debian_mirror)
	if [ ! -f "$f" ]; then
		cat >"$f" <<EOT
# Added by vhost-net-zc scripts/setup-host.sh
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
		changed=1
	fi
	local p=/etc/apt/preferences.d/vhost-net-zc-trixie
	if [ ! -f "$p" ]; then
		cat >"$p" <<EOT
# Added by vhost-net-zc: trixie-backports is only for 'apt-get download linux-source-*'.
Package: *
Pin: release n=trixie-backports
Pin-Priority: 1
EOT
		changed=1
	fi
	if [ "$changed" = 1 ] || [ ! -d /var/lib/apt/lists ] ||
	   ! ls /var/lib/apt/lists/*trixie-backports*Packages* >/dev/null 2>&1; then
		log "apt-get update"
		apt-get update -qq
	fi
}

# All from bookworm-backports where it has a newer version (clang/lld/llvm 19 and
# qemu-system-x86 exist only there; the host's qemu-utils already comes from there).
# gcc-multilib: the selftests' 32-bit (-m32) builds, a 32-bit VMM's view of the device.
APT_PKGS=(clang-19 lld-19 llvm-19 libclang-19-dev flex bison bc libelf-dev libssl-dev
	  cpio rsync kmod patch busybox-static iproute2 udev python3-pip python3-venv dwarves zstd xz-utils
	  make gcc libc6-dev pkg-config file qemu-system-x86 dkms dh-dkms debhelper shellcheck
	  dh-exec python3-docutils lintian gcc-multilib procps)

# install_pkgs SUITE PACKAGE...: installs those of the packages that are missing, from
# SUITE where it has them (-t), else from the host's own suites.
install_pkgs() {
	local suite=$1 missing=() p
	shift
	for p in "$@"; do
		[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *'ok installed' ]] ||
			missing+=("$p")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		log "installing: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${suite:+-t "$suite"} \
			--no-install-recommends "${missing[@]}" >/dev/null
	fi
}

install_apt() {
	install_pkgs bookworm-backports "${APT_PKGS[@]}"
}

# The Rust toolchain. Where rustup is installed (this project's build machines), its
# toolchain with rust-src. On a plain Debian 12 host without rustup, Debian's own current
# toolchain: rustc-web, cargo-web, rust-web-src and rustfmt-web (bookworm keeps them current
# through its security updates for the browsers; 7.3 needs a newer rustc than bookworm's
# rustc 1.63). They put the library source where the kernel looks for it,
# $(rustc --print sysroot)/lib/rustlib/src/rust. Debian 12 has no clippy: the lint step
# of `make check` needs rustup's and says so.
RUST_WEB_PKGS=(rustc-web cargo-web rust-web-src rustfmt-web)

install_rust() {
	export PATH="$HOME/.cargo/bin:$PATH"
	if command -v rustup >/dev/null; then
		if ! grep -q '^rust-src' <<<"$(rustup component list --installed 2>/dev/null)"; then
			log "rustup component add rust-src"
			rustup component add rust-src >/dev/null
		fi
	else
		install_pkgs "" "${RUST_WEB_PKGS[@]}"
	fi
	local src
	src=$(rustc --print sysroot)/lib/rustlib/src/rust/library/core/src/lib.rs
	[ -f "$src" ] || { log "rustc $(rustc --version) has no library source ($src)"; exit 1; }
	if ! command -v bindgen >/dev/null; then
		log "cargo install bindgen-cli (a few minutes)"
		LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install bindgen-cli --locked --quiet
	fi
}

# virtme-ng, where its vng is not on PATH already: with pip into the Python that python3
# is, where that Python lets pip install (a pyenv or self-built Python); where it does not
# (Debian 12's own Python is marked EXTERNALLY-MANAGED, PEP 668), in a virtual environment
# beside the kernel cache, its commands linked into $VNZC_CACHE/bin, which scripts/lib.sh
# puts on PATH.
install_vng() {
	local cache=${VNZC_CACHE:-$HOME/.cache/vhost-net-zc} c stdlib
	[ -d "$HOME/.pyenv/shims" ] && PATH="$PATH:$HOME/.pyenv/shims"
	PATH="$PATH:$cache/bin"
	command -v vng >/dev/null && return
	stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
	if [ ! -e "$stdlib/EXTERNALLY-MANAGED" ]; then
		log "pip install virtme-ng"
		python3 -m pip install --quiet --root-user-action=ignore virtme-ng
		return
	fi
	log "pip install virtme-ng (in $cache/vng: $stdlib is EXTERNALLY-MANAGED)"
	python3 -m venv "$cache/vng"
	"$cache/vng/bin/pip" install --quiet virtme-ng
	mkdir -p "$cache/bin"
	for c in "$cache"/vng/bin/vng "$cache"/vng/bin/virtme-*; do
		[ -e "$c" ] && ln -sf "$c" "$cache/bin/"
	done
	command -v vng >/dev/null || { log "virtme-ng installed, but vng is missing"; exit 1; }
}

install_sphinx() {
	# The documentation is render-checked by `make check` (scripts/lint.sh); Sphinx lives
	# in its own virtual environment beside the kernel cache, not in the system's Python.
	local venv=${VNZC_CACHE:-$HOME/.cache/vhost-net-zc}/sphinx
	if [ ! -x "$venv/bin/sphinx-build" ]; then
		log "pip install sphinx (in $venv)"
		python3 -m venv "$venv"
		"$venv/bin/pip" install --quiet sphinx
	fi
	# lxml, and libvirt's RELAX NG schemas (from Debian's libvirt0 package, unpacked, not
	# installed): the libvirt sample is validated against them.
	"$venv/bin/python" -c 'import lxml' 2>/dev/null || "$venv/bin/pip" install --quiet lxml
	local lv=${VNZC_CACHE:-$HOME/.cache/vhost-net-zc}/libvirt
	if [ ! -f "$lv/usr/share/libvirt/schemas/domain.rng" ]; then
		log "libvirt's domain schema (apt-get download libvirt0)"
		rm -rf "$lv" && mkdir -p "$lv/deb"
		(cd "$lv/deb" && apt-get download -q -o APT::Sandbox::User=root libvirt0 \
			>/dev/null 2>&1)
		dpkg -x "$lv"/deb/libvirt0_*.deb "$lv"
	fi
}

start_udev() {
	# virtme-ng names its virtio-serial ports through udev; without a running udevd the
	# guest's console output is lost.
	if ! pgrep -x systemd-udevd >/dev/null 2>&1; then
		if [ -x /lib/systemd/systemd-udevd ]; then
			/lib/systemd/systemd-udevd --daemon >/dev/null 2>&1 || true
			udevadm trigger >/dev/null 2>&1 || true
			udevadm settle -t 10 >/dev/null 2>&1 || true
		fi
	fi
}

need_root
add_suites
install_apt
install_rust
install_vng
install_sphinx
start_udev
log "host ready"
