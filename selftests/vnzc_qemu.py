#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""QEMU with a Linux guest over /dev/vhost-net-zc and over stock /dev/vhost-net.

Runs inside the test VM (selftests/run_vm.sh), prints TAP. For each device, QEMU (TCG) boots
the given bzImage with a busybox initramfs made here (selftests/qemu/guest_init.sh as its
/init); the guest's virtio-net NIC is `-netdev tap,vhost=on,vhostfd=3`, the vhost device
opened and configured by samples/vhost-net-zc-exec. The host end is the stall fixture of
selftests/lib_vm.sh: tap vnzctap in bridge vnzcbr (10.77.0.1/24), whose other port, dummy
vnzcd0 with a plug qdisc, receives every frame for 02:00:00:00:00:d0.

The configurations (--devices):

zc              /dev/vhost-net-zc, one queue pair;
stock           stock /dev/vhost-net with experimental_zcopytx=1, one queue pair;
zc_viommu       /dev/vhost-net-zc behind a vIOMMU, as a guest with its IOMMU on uses it:
                q35, `-device intel-iommu,intremap=on,device-iotlb=on`, the NIC behind a
                PCIe root port with `iommu_platform=on,ats=on`, the guest booted with
                intel_iommu=on; QEMU acknowledges VIRTIO_F_ACCESS_PLATFORM and serves the
                device IOTLB through the device file (poll, read, write);
zc_mq_in_order  /dev/vhost-net-zc with two queue pairs (`fds=100:101,vhostfds=3:4`: two
                devices, two queues of a multiqueue tap, a guest with 2 CPUs) and
                `in_order=on`.

For each but the first two, QEMU's view of what it acknowledged to the kernel
(`x-query-virtio-status`: the vhost device's acked features) must hold the feature the
configuration is about, and the guest's view of the NIC (its sysfs features) too.

Two test points per configuration:

<dev>.traffic       the guest boots, pings the host (no loss), sends and receives a bulk
                    payload over TCP, checksummed at both ends; on vhost-net-zc the
                    device's counters show zero-copy sends.
<dev>.stall_reset   the plug blocks the egress, the guest sends 8 datagrams of 1000 bytes
                    toward it, and past the device's timeout the VMM is told `system_reset`
                    (QMP). vhost-net-zc: QEMU's reset (its RESET event) comes within the
                    timeout plus a bound, the guest boots again and reaches the host, the
                    8 buffers were offlined; stock vhost-net (experimental_zcopytx=1): the
                    reset is blocked, QEMU in D state, until the watchdog releases the plug.
                    On both, the 8 datagrams leave byte-exact once released.
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

HOST_IP = "10.77.0.1"
TAP = "vnzctap"
DUMMY = "vnzcd0"
STALL_MAC = bytes.fromhex("0200000000d0")
STALL_COUNT = 8
STALL_SIZE = 1000
STALL_PORT = 9
VIRTIO_F_ACCESS_PLATFORM = 33
VIRTIO_F_IN_ORDER = 35
VIRTIO_NET_F_MQ = 22

# The configurations: the device, and what QEMU and the guest are given (see above).
CONFIGS = {
    "zc": {"dev": "/dev/vhost-net-zc"},
    "stock": {"dev": "/dev/vhost-net"},
    "zc_viommu": {"dev": "/dev/vhost-net-zc", "viommu": True,
                  "features": [VIRTIO_F_ACCESS_PLATFORM]},
    "zc_mq_in_order": {"dev": "/dev/vhost-net-zc", "queues": 2, "in_order": True,
                       "features": [VIRTIO_F_IN_ORDER]},
}
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by Python's socket module


def diag(msg):
    for line in str(msg).splitlines():
        print(f"# {line}", flush=True)


def now():
    return time.monotonic()


class TestFailure(Exception):
    """A check of a test point failed."""


def check(cond, what):
    if not cond:
        raise TestFailure(what)


# --- the host's end: control, bulk transfer, capture -------------------------------------


class Control:
    """TCP 5000: each connection of the guest's loop gets the next command."""

    def __init__(self):
        self.lock = threading.Lock()
        self.command = "wait"
        self.sock = socket.create_server((HOST_IP, 5000))
        threading.Thread(target=self._serve, daemon=True).start()

    def say(self, command):
        with self.lock:
            self.command = command

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    while conn.recv(4096):
                        pass
                    with self.lock:
                        cmd = self.command
                        if cmd != "idle":
                            self.command = "wait"
                    conn.sendall(cmd.encode() + b"\n")
                except OSError:
                    pass

    def close(self):
        self.sock.close()


class Transfer:
    """A one-shot bulk transfer server: receive (port 5001) or send (5002) `size` bytes."""

    def __init__(self, port, size, send):
        self.size = size
        self.data = os.urandom(size) if send else None
        self.md5 = hashlib.md5(self.data).hexdigest() if send else None
        self.got = 0
        self.seconds = None
        self.error = None
        self.sock = socket.create_server((HOST_IP, port))
        self.thread = threading.Thread(target=self._serve,
                                       args=(self._send if send else self._recv,),
                                       daemon=True)
        self.thread.start()

    def _serve(self, transfer):
        """Accepts the guest's one connection and times `transfer` over it."""
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(600)
                t0 = now()
                transfer(conn)
                self.seconds = now() - t0
        except OSError as e:
            self.error = e
        finally:
            self.sock.close()

    def _recv(self, conn):
        h = hashlib.md5()
        while self.got < self.size:
            chunk = conn.recv(min(1 << 20, self.size - self.got))
            if not chunk:
                break
            h.update(chunk)
            self.got += len(chunk)
        self.md5 = h.hexdigest()

    def _send(self, conn):
        conn.sendall(self.data)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
        self.got = self.size

    def wait(self, timeout):
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self):
        """Stops waiting for the guest (wakes a blocked accept)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def stall_payload(index):
    p = bytearray((index * 37 + i) & 0xFF for i in range(STALL_SIZE))
    p[0:4] = index.to_bytes(4, "big")
    return bytes(p)


class Capture:
    """Frames leaving the dummy port for the stall MAC: the guest's stalled datagrams."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        # The release sends the guest's 1100 short datagrams first, all at once: room for
        # them all, or the 8 that matter are dropped (SO_RCVBUFFORCE: root ignores rmem_max).
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.bind((DUMMY, 0))
        self.sock.settimeout(0.5)
        self.seen = {}
        self.bad = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                frame = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if frame[0:6] != STALL_MAC or frame[12:14] != b"\x08\x00":
                continue
            ihl = (frame[14] & 0x0F) * 4
            if frame[23] != 17:
                continue
            udp = frame[14 + ihl:]
            if int.from_bytes(udp[2:4], "big") != STALL_PORT or len(udp) - 8 != STALL_SIZE:
                continue
            payload = udp[8:8 + STALL_SIZE]
            index = int.from_bytes(payload[0:4], "big")
            if index < STALL_COUNT and payload == stall_payload(index):
                self.seen[index] = self.seen.get(index, 0) + 1
            else:
                self.bad += 1

    def complete(self):
        return len(self.seen) == STALL_COUNT

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


# --- the VMM -------------------------------------------------------------------------------


class Vmm:
    """QEMU with the guest, its serial console in a file, QMP on a Unix socket."""

    def __init__(self, args, name, work):
        self.args = args
        self.config = CONFIGS[name]
        self.device = self.config["dev"]
        self.name = name
        self.serial = os.path.join(work, f"serial-{name}.log")
        self.qmp_path = os.path.join(work, f"qmp-{name}.sock")
        self.events = []
        self.cond = threading.Condition()
        self.replies = []
        for p in (self.serial, self.qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        queues = self.config.get("queues", 1)
        cmd = []
        # One vhost device per queue pair, each opened and set up by vhost-net-zc-exec on
        # its descriptor (3, 4, ...), the next exec running inside the previous one.
        for q in range(queues):
            cmd += [args.exec, "-d", self.device]
            if args.timeout_ms and self.device.endswith("-zc"):
                cmd += ["-t", str(args.timeout_ms)]
            cmd += [str(3 + q)]
        append = "console=ttyS0 panic=-1 quiet"
        netdev = f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=on"
        nic = "virtio-net-pci,id=nic0,netdev=n0,mac=52:54:00:77:00:02,romfile="
        machine = []
        self.tap_fds = []
        if queues > 1:
            # QEMU takes vhostfds= only with the tap's queues as fds=: opened here, one per
            # queue pair, on descriptors above those of the vhost devices.
            self.tap_fds = tap_queues(queues, 100)
            netdev = (f"tap,id=n0,fds={':'.join(map(str, self.tap_fds))},vhost=on,"
                      "vhostfds=" + ":".join(str(3 + q) for q in range(queues)))
            nic += f",mq=on,vectors={2 * queues + 2}"
        else:
            netdev += ",vhostfd=3"
        if self.config.get("in_order"):
            nic += ",in_order=on"
        if self.config.get("viommu"):
            machine = ["-machine", "q35", "-device", "intel-iommu,intremap=on,device-iotlb=on",
                       "-device", "pcie-root-port,id=rp0,chassis=1"]
            nic += ",bus=rp0,iommu_platform=on,ats=on,disable-legacy=on"
            append += " intel_iommu=on"
        cmd += [args.qemu, "-accel", "tcg", "-m", "256M", "-smp", str(queues),
                "-nodefaults", "-no-user-config", "-display", "none", *machine,
                "-kernel", args.kernel, "-initrd", args.initrd,
                "-append", append,
                "-serial", f"file:{self.serial}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-netdev", netdev, "-device", nic]
        diag(" ".join(cmd))
        self.started = now()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, pass_fds=self.tap_fds)
        for fd in self.tap_fds:
            os.close(fd)
        self.qmp = None
        self.boot = None
        self.last_console = ""

    def connect_qmp(self, timeout=60):
        end = now() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.qmp_path)
                break
            except OSError:
                s.close()
                check(now() < end and self.proc.poll() is None, "QMP socket never appeared")
                time.sleep(0.2)
        self.qmp = s
        self.qmp_file = s.makefile("rb")
        json.loads(self.qmp_file.readline())  # the greeting
        threading.Thread(target=self._read_qmp, daemon=True).start()
        self.command("qmp_capabilities")

    def _read_qmp(self):
        while True:
            try:
                line = self.qmp_file.readline()
            except OSError:
                return
            if not line:
                return
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "event" in msg:
                    self.events.append((now(), msg["event"]))
                else:
                    self.replies.append(msg)
                self.cond.notify_all()

    def send(self, name, arguments=None):
        """Sends a QMP command without waiting for its reply."""
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.qmp.sendall(json.dumps(msg).encode() + b"\n")

    def command(self, name, timeout=60, arguments=None):
        with self.cond:
            n = len(self.replies)
        self.send(name, arguments)
        with self.cond:
            self.cond.wait_for(lambda: len(self.replies) > n, timeout)
            check(len(self.replies) > n, f"QMP {name}: no reply in {timeout} s")
            return self.replies[n]

    def wait_event(self, event, after, timeout):
        with self.cond:
            self.cond.wait_for(lambda: any(t >= after and e == event
                                           for t, e in self.events), timeout)
            hits = [t for t, e in self.events if t >= after and e == event]
        return hits[0] if hits else None

    def console(self):
        try:
            with open(self.serial, "rb") as f:
                self.last_console = f.read().decode(errors="replace")
        except OSError:
            pass
        return self.last_console

    def wait_line(self, prefix, count=1, timeout=600):
        """Waits for the count-th console line starting with prefix; returns it."""
        end = now() + timeout
        while True:
            # Whole lines only: a read may end in the middle of the line being written.
            text = self.console()
            text = text[: text.rfind("\n") + 1]
            lines = [l for l in text.splitlines() if l.startswith(prefix)]
            if len(lines) >= count:
                return lines[count - 1]
            if self.proc.poll() is not None:
                raise TestFailure(f"QEMU exited ({self.proc.returncode}) waiting for {prefix}")
            if now() > end:
                raise TestFailure(f"no '{prefix}' on the console in {timeout} s")
            time.sleep(0.2)

    def states(self):
        """The scheduler states of QEMU's threads, e.g. 'SSD'."""
        out = ""
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
                    out += f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            pass
        return out

    def stats(self):
        """vhost-net-zc's counters for this QEMU's devices (debugfs), summed, or {}."""
        base = "/sys/kernel/debug/vhost-net-zc"
        try:
            dirs = [d for d in os.listdir(base) if d.startswith(f"{self.proc.pid}-")]
        except OSError:
            return {}
        total = {}
        for d in dirs:
            with open(os.path.join(base, d, "stats")) as f:
                for k, v in (l.split(": ") for l in f.read().splitlines()):
                    # The settings (timeout_ms, reclaim) are the same on every device.
                    total[k] = int(v) if k in ("timeout_ms", "reclaim") \
                        else total.get(k, 0) + int(v)
        return total

    def devices(self):
        """How many vhost-net-zc devices this QEMU has open (debugfs directories)."""
        try:
            return len([d for d in os.listdir("/sys/kernel/debug/vhost-net-zc")
                        if d.startswith(f"{self.proc.pid}-")])
        except OSError:
            return 0

    def acked_features(self):
        """The features QEMU acknowledged to the kernel's vhost device, and the guest's."""
        r = self.command("x-query-virtio-status",
                         arguments={"path": "/machine/peripheral/nic0/virtio-backend"})
        check("return" in r, f"x-query-virtio-status: {r.get('error')}")
        status = r["return"]
        vhost = status.get("vhost-dev") or {}
        return feature_bits(vhost.get("acked-features")), \
            feature_bits(status.get("guest-features"))

    def quit(self):
        try:
            if self.qmp:
                self.command("quit", timeout=30)
        except (TestFailure, OSError):
            pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        out = self.proc.stdout.read().decode(errors="replace").strip()
        if out:
            diag(f"QEMU said: {out}")


def feature_bits(decoded):
    """The bit numbers in QEMU's decoded feature list ('VIRTIO_F_IN_ORDER: ...' entries),
    as far as this test needs them."""
    names = {"VIRTIO_F_IOMMU_PLATFORM": VIRTIO_F_ACCESS_PLATFORM,
             "VIRTIO_F_ACCESS_PLATFORM": VIRTIO_F_ACCESS_PLATFORM,
             "VIRTIO_F_IN_ORDER": VIRTIO_F_IN_ORDER, "VIRTIO_NET_F_MQ": VIRTIO_NET_F_MQ}
    bits = set()
    for group in ("transports", "dev-features"):
        for entry in (decoded or {}).get(group, []):
            name = entry.split(":")[0].strip()
            if name in names:
                bits.add(names[name])
    return bits


def tap_queues(n, first):
    """Opens n queues of the multiqueue tap, on descriptors first, first + 1, ..."""
    tunsetiff = 0x400454CA
    flags = 0x0002 | 0x1000 | 0x4000 | 0x0100  # IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE
    fds = []
    for q in range(n):
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, tunsetiff, struct.pack("16sH22x", TAP.encode(), flags))
        os.dup2(fd, first + q)
        os.close(fd)
        fds.append(first + q)
    return fds


def set_tap(multi_queue):
    """Makes the bridge's tap a multiqueue one (or a plain one again), as QEMU with
    queues=N needs it. (Its bridge port forwards once QEMU has it open: a tap nobody has
    open has no carrier.)"""
    mq = ["multi_queue"] if multi_queue else []
    subprocess.run(["ip", "link", "del", TAP], check=True)
    subprocess.run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr", *mq],
                   check=True)
    subprocess.run(["ip", "link", "set", TAP, "master", "vnzcbr"], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)


def tc_plug(mode):
    subprocess.run(["tc", "qdisc", "change", "dev", DUMMY, "root", "plug", mode], check=True)


# --- the scenario ------------------------------------------------------------------------


def traffic(args, vmm, control):
    line = vmm.wait_line("VNZC_GUEST_UP", timeout=args.boot_timeout)
    boot = now() - vmm.started
    diag(f"{vmm.name}: guest up {boot:.1f} s after QEMU started ({line})")
    vmm.boot = boot
    vmm.connect_qmp()
    wanted = vmm.config.get("features", [])
    if wanted:
        acked, guest = vmm.acked_features()
        diag(f"{vmm.name}: acknowledged to the vhost device {sorted(acked)}, "
             f"by the guest {sorted(guest)} (of the bits this test looks at)")
        for bit in wanted:
            check(bit in guest, f"the guest did not negotiate feature {bit}")
            check(bit in acked, f"QEMU did not acknowledge feature {bit} to the kernel")
    queues = vmm.config.get("queues", 1)
    if vmm.device.endswith("-zc"):
        check(vmm.devices() == queues,
              f"{vmm.devices()} vhost-net-zc devices open, {queues} expected")
    size = args.bulk_mib << 20
    rx = Transfer(5001, size, send=False)
    tx = Transfer(5002, size, send=True)
    try:
        control.say(f"traffic {args.bulk_mib}")
        bulk(args, vmm, size, rx, tx, boot)
    finally:
        rx.close()
        tx.close()


def bulk(args, vmm, size, rx, tx, boot):
    ping = vmm.wait_line("VNZC_PING", timeout=300)
    diag(f"{vmm.name}: {ping}")
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", ping)
    check(m and m.group(1) == m.group(2) and int(m.group(1)) > 0, "ping lost packets")
    guest_tx = vmm.wait_line("VNZC_TX_MD5", timeout=600).split()[1]
    check(rx.wait(args.bulk_timeout), f"guest to host: {rx.got} of {size} bytes")
    guest_rx = vmm.wait_line("VNZC_RX_MD5", timeout=args.bulk_timeout).split()
    check(tx.wait(60), "host to guest: the transfer did not end")
    for t in (rx, tx):
        check(t.error is None, f"transfer: {t.error}")
    diag(f"{vmm.name}: guest to host {size} bytes in {rx.seconds:.1f} s "
         f"({size * 8 / rx.seconds / 1e6:.1f} Mbit/s), MD5 guest {guest_tx} host {rx.md5}")
    diag(f"{vmm.name}: host to guest {size} bytes in {tx.seconds:.1f} s "
         f"({size * 8 / tx.seconds / 1e6:.1f} Mbit/s), MD5 host {tx.md5} guest {guest_rx[1]}")
    check(rx.got == size and guest_tx == rx.md5, "guest to host: the checksums differ")
    check(guest_rx[2] == str(size) and guest_rx[1] == tx.md5,
          "host to guest: the checksums differ")
    stats = vmm.stats()
    if vmm.device.endswith("-zc"):
        diag(f"{vmm.name}: counters " + ", ".join(f"{k} {v}" for k, v in stats.items()))
        check(stats.get("sent_zerocopy", 0) > 0, "no buffer was sent zero-copy")


def stall_reset(args, vmm, control, boot):
    zc = vmm.device.endswith("-zc")
    # Under VIRTIO_F_IN_ORDER the TX handler offlines a stuck buffer at its deadline,
    # before any reset: count from before the stall.
    start = vmm.stats() if zc else {}
    tc_plug("block")
    control.say("stall")
    vmm.wait_line("VNZC_STALL_SENT", timeout=300)
    sent = now()
    if zc:
        end = now() + 60
        while vmm.stats().get("in_flight", 0) < STALL_COUNT:
            check(now() < end, f"the {STALL_COUNT} datagrams never were in flight "
                  f"zero-copy: {vmm.stats()}")
            time.sleep(0.1)
        # Past the deadline of every buffer.
        time.sleep(args.timeout_ms / 1000 + 0.2)
        before = vmm.stats()
        diag(f"{vmm.name}: before the reset: in_flight {before['in_flight']}, "
             f"in_flight_expired {before['in_flight_expired']}")
    else:
        time.sleep(2)
    capture = Capture()
    released = None
    try:
        # The reply may come only after the reset: QEMU's main loop runs the reset
        # (vhost's VHOST_NET_SET_BACKEND -1) before it writes the reply out.
        t0 = now()
        vmm.send("system_reset")
        reset = vmm.wait_event("RESET", t0, args.watchdog)
        blocked_state = vmm.states()
        if reset is None:
            diag(f"{vmm.name}: no RESET after {args.watchdog} s; QEMU's threads in "
                 f"states '{blocked_state}'; releasing the plug")
            released = now()
            tc_plug("release_indefinite")
            reset = vmm.wait_event("RESET", t0, 120)
            check(reset is not None, "no RESET even after the plug was released")
        wait_ms = (reset - t0) * 1000
        diag(f"{vmm.name}: system_reset to RESET event: {wait_ms:.0f} ms "
             f"({(t0 - sent) * 1000:.0f} ms after the guest sent)")
        if zc:
            check(released is None, "vhost-net-zc: the reset waited for the plug")
            check(wait_ms <= args.timeout_ms + args.bound_ms,
                  f"vhost-net-zc: reset took {wait_ms:.0f} ms, over "
                  f"{args.timeout_ms} + {args.bound_ms} ms")
        else:
            check(released is not None and "D" in blocked_state,
                  "stock vhost-net: the reset was expected to block in D state")
        line = vmm.wait_line("VNZC_GUEST_UP", count=2, timeout=args.boot_timeout)
        diag(f"{vmm.name}: guest up again {now() - reset:.1f} s after the reset "
             f"(first boot: {boot:.1f} s)")
        control.say("idle")
        vmm.wait_line("VNZC_IDLE", timeout=300)
        diag(f"{vmm.name}: the rebooted guest reached the host")
        if released is None:
            tc_plug("release_indefinite")
        end = now() + 30
        while not capture.complete() and now() < end:
            time.sleep(0.2)
        diag(f"{vmm.name}: after the release, {len(capture.seen)} of {STALL_COUNT} "
             f"datagrams left byte-exact, {capture.bad} differed")
        check(capture.complete() and capture.bad == 0,
              "the stalled datagrams did not leave byte-exact")
        if zc:
            end = now() + 30
            while True:
                after = vmm.stats()
                if after.get("held_pages", 1) == 0 or now() > end:
                    break
                time.sleep(0.2)
            diag(f"{vmm.name}: counters " + ", ".join(f"{k} {v}" for k, v in after.items()))
            diag(f"{vmm.name}: offlined at the deadline (IN_ORDER) "
                 f"{before['offlined'] - start.get('offlined', 0)}, at the reset "
                 f"{after['offlined'] - before['offlined']}")
            check(after["offlined"] - start.get("offlined", 0) >= STALL_COUNT,
                  "the stalled buffers were not offlined")
            check(after["held_pages"] == 0, "offlined pages still held after the release")
            check(after["in_flight"] == 0, "buffers still in flight")
    finally:
        capture.close()
        tc_plug("release_indefinite")


def run_device(args, name, control, results):
    mq = CONFIGS[name].get("queues", 1) > 1
    if mq:
        set_tap(True)
    vmm = Vmm(args, name, args.work)
    try:
        try:
            traffic(args, vmm, control)
            results.append((True, f"{name}.traffic", ""))
        except (TestFailure, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            results.append((False, f"{name}.traffic", str(e)))
        if vmm.boot is None or vmm.qmp is None:
            results.append((False, f"{name}.stall_reset", "the guest did not come up"))
            return
        try:
            stall_reset(args, vmm, control, vmm.boot)
            results.append((True, f"{name}.stall_reset", ""))
        except (TestFailure, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            results.append((False, f"{name}.stall_reset", str(e)))
    finally:
        control.say("wait")
        vmm.quit()
        if not all(ok for ok, n, _ in results if n.startswith(name + ".")):
            diag("the guest's console, last lines:\n" +
                 "\n".join(vmm.console().strip().splitlines()[-15:]))
        if mq:
            set_tap(False)


def make_initrd(args):
    root = os.path.join(args.work, "initrd")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(root, d))
    shutil.copy(args.busybox, os.path.join(root, "bin/busybox"))
    applets = subprocess.run([args.busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", a))
    shutil.copy(args.guest_udp, os.path.join(root, "bin/guest_udp"))
    shutil.copy(args.init, os.path.join(root, "init"))
    os.chmod(os.path.join(root, "init"), 0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
                          capture_output=True, check=True).stdout
    args.initrd = os.path.join(args.work, "initrd.cpio")
    with open(args.initrd, "wb") as f:
        f.write(cpio)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", help="the guest's bzImage (required unless --count)")
    ap.add_argument("--count", action="store_true",
                    help="print how many test points a run reports, and exit (the plan)")
    ap.add_argument("--devices", default="zc,stock,zc_viommu,zc_mq_in_order",
                    help="the configurations to run, comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--bulk-mib", type=int, default=32)
    ap.add_argument("--timeout-ms", type=int, default=300,
                    help="vhost-net-zc's deadline, set through its UAPI")
    ap.add_argument("--bound-ms", type=int, default=2000,
                    help="vhost-net-zc's reset must come within timeout + this")
    ap.add_argument("--watchdog", type=float, default=10,
                    help="seconds a blocked reset waits before the plug is released")
    ap.add_argument("--boot-timeout", type=float, default=900)
    ap.add_argument("--bulk-timeout", type=float, default=900)
    ap.add_argument("--work", default="/tmp/vnzc-qemu",
                    help="QEMU's files: serial logs, QMP sockets, the initramfs; keep it "
                    "on a local file system (a 9p share fails reads of a growing file)")
    ap.add_argument("--keep", help="copy the serial logs here at the end")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--exec", default=os.path.join(here, "../samples/vhost-net-zc-exec"))
    ap.add_argument("--guest-udp", default=os.path.join(here, "qemu/guest_udp"))
    ap.add_argument("--init", default=os.path.join(here, "qemu/guest_init.sh"))
    args = ap.parse_args()

    devices = [d for d in args.devices.split(",") if d]
    unknown = [d for d in devices if d not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration {', '.join(unknown)}")
    if args.count:
        print(2 * len(devices))
        return 0
    if not args.kernel:
        ap.error("--kernel is required")
    print("TAP version 13")
    print(f"1..{2 * len(devices)}", flush=True)
    os.makedirs(args.work, exist_ok=True)
    make_initrd(args)
    control = Control()
    results = []
    try:
        for d in devices:
            run_device(args, d, control, results)
    finally:
        control.close()
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for f in os.listdir(args.work):
                if f.startswith("serial-"):
                    shutil.copy(os.path.join(args.work, f), args.keep)
    for i, (ok, name, why) in enumerate(results, 1):
        print(f"{'ok' if ok else 'not ok'} {i} {name}{' # ' + why if why else ''}", flush=True)
    return 0 if all(ok for ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
