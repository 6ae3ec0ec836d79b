# SPDX-License-Identifier: GPL-2.0
#
# vhost-net-zc: the user-facing targets. Kbuild reads ./Kbuild (not this file) when it
# builds the module, so this Makefile is free for the project's own commands.
#
#   make run     set up the host, build the kernel (cached) and module, boot, demonstrate
#   make check   the same set-up, then lints and the full selftest suite in the VM
#   make check-vmm  QEMU booting a Linux guest over the device (and over stock), in the VM
#   make bench   the benchmarks in the VM of the benchmark kernel, with a report
#   make fuzz    the fuzzer for FUZZ_SECONDS a case (default 600), in the test VM
#   make soak    SOAK_ROUNDS reset/completion/expiry interleavings (default 10^6) and the
#                scale tests, in the test VM
#   make dkms-deb  the Debian package vhost-net-zc-dkms, into dist/
#   make module  build the module against the cached kernel (CLIPPY=1 for clippy)
#   make clean   remove module build products (the kernel cache stays)

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
SHELL := /bin/bash

.PHONY: all run check check-vmm bench fuzz soak dkms-deb dkms-prebuild setup kernel guest-kernel module lint selftests clean

all: module

setup:
	@bash $(ROOT)/scripts/setup-host.sh

kernel: setup
	@bash $(ROOT)/scripts/kernel.sh >/dev/null

# The benchmark variant of the test kernel (no debug options): make bench boots it, and the
# QEMU test of make check runs its bzImage as the nested guest.
guest-kernel: kernel
	@VNZC_KVARIANT=bench bash $(ROOT)/scripts/kernel.sh >/dev/null

module: kernel
	@bash $(ROOT)/scripts/build-module.sh

lint: kernel
	@bash $(ROOT)/scripts/lint.sh

selftests: kernel
	@bash $(ROOT)/scripts/build-selftests.sh

run: module selftests
	@bash $(ROOT)/scripts/run.sh

check: lint module selftests dkms-prebuild
	@bash $(ROOT)/scripts/check.sh

check-vmm: module selftests guest-kernel
	@VNZC_SUITE=vmm bash $(ROOT)/scripts/check.sh

dkms-deb: setup
	@bash $(ROOT)/scripts/dkms-deb.sh

dkms-prebuild: kernel dkms-deb
	@bash $(ROOT)/scripts/dkms-prebuild.sh

bench: guest-kernel selftests
	@bash $(ROOT)/scripts/bench.sh

FUZZ_SECONDS ?= 600
fuzz: module selftests
	@bash $(ROOT)/scripts/soak.sh fuzz $(FUZZ_SECONDS)

SOAK_ROUNDS ?= 1000000
soak: module selftests
	@bash $(ROOT)/scripts/soak.sh soak $(SOAK_ROUNDS)

clean:
	@bash -c '. $(ROOT)/scripts/lib.sh; kdir=$$(vnzc_kdir); \
	  if [ -d "$$kdir" ]; then $(MAKE) -s -C "$$kdir" M=$(ROOT) LLVM=1 clean; fi'
	@$(MAKE) -s -C $(ROOT)/selftests clean
	@rm -f $(ROOT)/rust/bindings_generated.rs
