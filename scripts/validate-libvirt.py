#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Validates samples/libvirt-interface.xml against libvirt's domain schema.

    validate-libvirt.py SCHEMA_DIR SAMPLE

The sample is an <interface> element; it is checked inside a minimal domain, with
libvirt's own RELAX NG schema (domain.rng, from Debian's libvirt0 package).
"""

import sys

from lxml import etree


def main():
    schemas, sample = sys.argv[1], sys.argv[2]
    rng = etree.RelaxNG(etree.parse(f"{schemas}/domain.rng"))
    interface = etree.parse(sample).getroot()
    domain = etree.fromstring(
        "<domain type='qemu'><name>vnzc</name><memory unit='MiB'>256</memory>"
        "<os><type arch='x86_64'>hvm</type><kernel>/boot/vmlinuz</kernel></os>"
        "<devices/></domain>")
    domain.find("devices").append(interface)
    if not rng.validate(etree.ElementTree(domain)):
        for e in rng.error_log:
            print(f"{sample}: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
