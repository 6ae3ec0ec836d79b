#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
#
# Generate the module's FFI declarations with bindgen, using the exact flags the target kernel
# used for its own `kernel::bindings` (recorded by kbuild in
# rust/bindings/.bindings_generated.rs.cmd), so that layouts and configuration match the
# running kernel.
#
# Only named items are generated (--no-recursive-allowlist): every type they reference comes
# from `kernel::bindings` through a glob import in rust/ffi.rs. Generating dependent types
# again would duplicate them as distinct Rust types, and some of them (structs embedding
# `struct sock`) exist in `kernel::bindings` only as opaque stubs, which would give a wrong
# layout. bindgen's layout assertions stay on: a struct whose size or field offsets disagree
# with clang's fails to compile.

import argparse
import os
import shlex
import subprocess
import sys

# bindgen options of the kernel's own invocation that also apply to ours.
KEEP_FLAGS = {"--use-core", "--with-derive-default", "--enable-function-attribute-detection"}
KEEP_WITH_VALUE = {"--rust-target", "--ctypes-prefix", "--no-debug", "--opaque-type"}


def kernel_invocation(objtree):
    path = os.path.join(objtree, "rust", "bindings", ".bindings_generated.rs.cmd")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        sys.exit(f"vnzc-bindgen: cannot read {path}: {e}\n"
                 "vnzc-bindgen: the kernel tree must be built with CONFIG_RUST=y")
    cmd = text.split(":=", 1)[1]
    # The recorded command ends with a `; sed ...` post-processing step of the kernel's.
    cmd = cmd.split(" ; ", 1)[0].split(";", 1)[0]
    tokens = shlex.split(cmd)
    if "--" not in tokens or tokens[0] != "bindgen":
        sys.exit(f"vnzc-bindgen: unexpected command in {path}")
    sep = tokens.index("--")
    return tokens[1:sep], tokens[sep + 1:]


def select_bindgen_flags(args):
    out = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in KEEP_FLAGS:
            out.append(a)
        elif a in KEEP_WITH_VALUE and i + 1 < len(args):
            out += [a, args[i + 1]]
            i += 1
        elif a in ("-o",) or a.startswith("--with-attribute-custom") or a in (
                "--blocklist-type", "--blocklist-item", "--blocklist-function",
                "--newtype-enum", "--with-derive-custom-struct",
                "--with-derive-custom-union"):
            i += 1
        i += 1
    return out


def select_clang_flags(args, depfile, vhost_dir):
    out = []
    for a in args:
        if a.startswith("-Wp,-MMD,") or a.startswith("-DKBUILD_") or \
           a.startswith("-D__KBUILD_MODNAME"):
            continue
        out.append(a)
    out += [f"-Wp,-MMD,{depfile}",
            f"-I{vhost_dir}",
            '-DKBUILD_MODNAME="vhost_net_zc"', "-D__KBUILD_MODNAME=vhost_net_zc"]
    return out


def absolutize_depfile(depfile, objtree):
    """clang names the headers it read relative to its working directory (the kernel
    tree); fixdep reads the file from the module's directory."""
    with open(depfile, encoding="utf-8") as f:
        text = f.read()
    out = []
    for tok in text.split(" "):
        core = tok.rstrip("\n\\")
        if core and not core.startswith("/") and not core.endswith(":"):
            tok = os.path.join(objtree, core) + tok[len(core):]
        out.append(tok)
    with open(depfile, "w", encoding="utf-8") as f:
        f.write(" ".join(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--objtree", required=True)
    p.add_argument("--srctree", required=True)
    p.add_argument("--vhost-dir", required=True)
    p.add_argument("--depfile", required=True)
    p.add_argument("--header", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--bindgen", default=os.environ.get("BINDGEN", "bindgen"))
    p.add_argument("items", nargs=argparse.REMAINDER)
    a = p.parse_args()
    items = a.items[1:] if a.items[:1] == ["--"] else a.items
    # kbuild runs this from the module's directory, but the kernel's clang flags name
    # include directories relative to the kernel tree, where bindgen is run.
    a.header, a.output, a.depfile, a.srctree, a.vhost_dir = (
        os.path.abspath(x) for x in (a.header, a.output, a.depfile, a.srctree, a.vhost_dir))

    bg, clang = kernel_invocation(a.objtree)
    cmd = [a.bindgen, a.header, "--no-recursive-allowlist", "--no-doc-comments"]
    cmd += select_bindgen_flags(bg) + items + ["-o", a.output, "--"]
    cmd += select_clang_flags(clang, a.depfile, a.vhost_dir)
    r = subprocess.run(cmd, cwd=a.objtree)
    if r.returncode == 0:
        absolutize_depfile(a.depfile, a.objtree)
    if r.returncode != 0:
        try:
            os.unlink(a.output)
        except OSError:
            pass
        sys.exit(r.returncode)


if __name__ == "__main__":
    main()
