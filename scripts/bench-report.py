#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The report of `make bench`: Markdown tables and an SVG chart from samples/bench_vm.sh's
raw lines.

    bench-report.py RAW.txt OUTDIR    writes OUTDIR/report.md and OUTDIR/chart.svg
"""

import math
import statistics
import sys
from collections import defaultdict

VARIANTS = ["stock-copy", "stock-zc", "zc-copy", "zc-zc"]
LABELS = {
    "stock-copy": "stock, copy",
    "stock-zc": "stock, zero-copy",
    "zc-copy": "vhost-net-zc, copy",
    "zc-zc": "vhost-net-zc, zero-copy",
}
# The compared pairs of the per-repetition ratios: vhost-net-zc's variant, stock's
# variant(s) (of two, the better one in each repetition), label.
PAIRS = [
    ("zc-copy", ("stock-copy",), "zc copy / stock copy"),
    ("zc-zc", ("stock-zc",), "zc zero-copy / stock zero-copy"),
    ("zc-zc", ("stock-copy", "stock-zc"), "zc zero-copy (its default) / the better of stock"),
]
# t(0.975, df) for df = 1..30: a two-sided 95% confidence interval of a mean of n values is
# mean +- t(0.975, n - 1) * s / sqrt(n). Above df 30, df 30's value (a little wide).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def fields(words):
    out = {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = v
    return out


def parse(path):
    """The facts ("key: text" lines; "load" and "order" are lists, of (when, loadavg) and
    of the "# order" comments' cells), the throughput runs, the TIMER lines and the resets.
    Files of earlier runs lack the seed, load, order and watchdog lines."""
    facts, runs, timers, resets = {"load": [], "order": []}, [], [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("# order "):
                cell, order = line[len("# order "):].split(":", 1)
                facts["order"].append((cell, order.split()))
            if not line or line.startswith("#"):
                continue
            head = line.split(":", 1)[0]
            if head in ("machine", "accel", "config", "date", "seed", "watchdog"):
                facts[head] = line.split(":", 1)[1].strip()
            elif head == "load":
                when, avg = line.split(":", 1)[1].rsplit(":", 1)
                facts["load"].append((when.strip(), avg.split()))
            elif line.startswith("TIMER "):
                words = line.split()
                timers.append({words[i].rstrip(":"): words[i + 1]
                               for i in range(2, len(words) - 1, 2)})
            elif " BENCH " in f" {line} ":
                d = fields(line.split())
                if d.get("mode") == "reset":
                    resets.append(d)
                elif "mode" in d:
                    runs.append(d)
    return facts, runs, timers, resets


def med(values):
    return statistics.median(values) if values else float("nan")


def si(v):
    if v != v:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.1f}{unit}"
    return f"{v:.0f}"


def throughput(runs, mode):
    """{(size, variant): {"pps": [...], "gbit": [...], "cpu": [...], "zc": [...]}}"""
    t = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["mode"] != mode:
            continue
        key = (int(r["size"]), r["variant"])
        t[key]["pps"].append(float(r["pps"]))
        t[key]["gbit"].append(float(r["gbit"]))
        t[key]["cpu"].append(float(r["worker_ns_per_packet"]))
        t[key]["zc"].append(int(r["zerocopy"]))
        t[key]["copy"].append(int(r["copy"]))
    return t


def by_rep(runs, mode):
    """{(size, variant): {rep: (pps, worker ns/packet)}}"""
    t = defaultdict(dict)
    for r in runs:
        if r["mode"] == mode:
            t[(int(r["size"]), r["variant"])][int(r["rep"])] = (
                float(r["pps"]), float(r["worker_ns_per_packet"]))
    return t


def rep_ratios(t, size, variant, refs, i, better):
    """Per repetition, value i (0 pps, 1 ns/packet) of variant over the reference's: refs'
    better one by better (max, min) in that repetition; repetitions missing one or with a
    value of 0 (no packets) are left out."""
    out = []
    for rep, v in sorted(t.get((size, variant), {}).items()):
        ref = [t.get((size, r), {}).get(rep) for r in refs]
        if None in ref:
            continue
        b = better(x[i] for x in ref)
        if b > 0 and v[i] > 0:
            out.append(v[i] / b)
    return out


def ratio_cells(ratios):
    """The cells of per-repetition ratios: "median (min..max)" and "mean [95% CI]"."""
    n = len(ratios)
    if not n:
        return ["-", "-"]
    spread = f"{med(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})"
    mean = statistics.fmean(ratios)
    if n < 2:
        return [spread, f"{mean:.2f} [-]"]
    h = T975[min(n - 1, len(T975)) - 1] * statistics.stdev(ratios) / math.sqrt(n)
    return [spread, f"{mean:.2f} [{mean - h:.2f}, {mean + h:.2f}]"]


def ratio_table(runs, mode):
    """Per (size, pair): the ratios of the repetitions, of packets/s and of worker
    ns/packet."""
    t = by_rep(runs, mode)
    out = ["| size | pair | reps | packets/s ratio, median (min..max) | packets/s ratio, mean "
           "[95% CI] | ns/packet ratio (lower is better), median (min..max) | ns/packet ratio "
           "(lower is better), mean [95% CI] |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in sorted({s for s, _ in t}):
        for variant, refs, label in PAIRS:
            pps = rep_ratios(t, s, variant, refs, 0, max)
            cpu = rep_ratios(t, s, variant, refs, 1, min)
            out.append(f"| {s} B | {label} | {len(pps)} | " +
                       " | ".join(ratio_cells(pps) + ratio_cells(cpu)) + " |")
    return out


def table(t, mode):
    sizes = sorted({s for s, _ in t})
    out = [f"| size | " + " | ".join(LABELS[v] for v in VARIANTS) +
           " | zc / stock zc | zc copy / stock copy |",
           "| --- | " + " | ".join("---" for _ in VARIANTS) + " | --- | --- |"]
    for s in sizes:
        cells = []
        for v in VARIANTS:
            d = t.get((s, v))
            if not d:
                cells.append("-")
                continue
            p = d["pps"]
            cells.append(f"{si(med(p))} pps ({si(min(p))}-{si(max(p))}), "
                         f"{med(d['gbit']):.3f} Gbit/s, {med(d['cpu']):.0f} ns/pkt")
        ratio = []
        for a, b in (("zc-zc", "stock-zc"), ("zc-copy", "stock-copy")):
            if (s, a) in t and (s, b) in t and med(t[(s, b)]["pps"]) > 0:
                ratio.append(f"{med(t[(s, a)]['pps']) / med(t[(s, b)]['pps']):.2f}")
            else:
                ratio.append("-")
        out.append(f"| {s} B | " + " | ".join(cells) + " | " + " | ".join(ratio) + " |")
    if mode == "tx":
        zc = []
        for s in sizes:
            d = t.get((s, "zc-zc"))
            if d:
                sent = sum(d["zc"]) + sum(d["copy"])
                zc.append(f"{s} B: {100 * sum(d['zc']) / sent:.0f}%" if sent else f"{s} B: -")
        out.append("")
        out.append("Share of vhost-net-zc's zero-copy variant's packets sent zero-copy (its "
                   "counters): " + ", ".join(zc) + ".")
    return out


def chart(tx, rx, path):
    """Bars: vhost-net-zc's median packets/s over stock's of the same kind (copy, zero
    copy), per workload; 1.0 is parity."""
    pairs = [("zc-copy", "stock-copy", "copy: vhost-net-zc / stock"),
             ("zc-zc", "stock-zc", "zero-copy: vhost-net-zc / stock")]
    colours = ["#64b5f6", "#1565c0"]
    groups = []
    for name, t in (("TX", tx), ("RX", rx)):
        for s in sorted({s for s, _ in t}):
            groups.append((f"{name} {s} B",
                           [med(t[(s, a)]["pps"]) / med(t[(s, b)]["pps"])
                            if (s, a) in t and (s, b) in t else 0 for a, b, _ in pairs]))
    top = max([max(r) for _, r in groups] + [1.0]) * 1.1
    step = 0.25 if top <= 2 else 0.5 if top <= 4 else 1.0
    bw, gap, h, left = 28, 34, 240, 50
    width = max(left + len(groups) * (2 * bw + gap) + 20, 520)
    height = h + 110
    y = lambda v: 30 + h - v / top * h
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           '<!-- SPDX-License-Identifier: GPL-2.0 -->',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="16" font-size="13">Median packets/s, vhost-net-zc over '
           f'stock vhost-net, same boot (1.0 = parity)</text>']
    v = 0.0
    while v <= top:
        colour = "#999" if v == 1.0 else "#e0e0e0"
        svg.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="{colour}"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v:.2f}</text>')
        v += step
    for g, (label, ratios) in enumerate(groups):
        x0 = left + gap / 2 + g * (2 * bw + gap)
        for i, r in enumerate(ratios):
            svg.append(f'<rect x="{x0 + i * bw:.1f}" y="{y(r):.1f}" width="{bw - 3}" '
                       f'height="{y(0) - y(r):.1f}" fill="{colours[i]}"><title>'
                       f'{pairs[i][2]}: {r:.2f}</title></rect>')
            svg.append(f'<text x="{x0 + i * bw + (bw - 3) / 2:.1f}" y="{y(r) - 3:.1f}" '
                       f'text-anchor="middle" font-size="9">{r:.2f}</text>')
        svg.append(f'<text x="{x0 + bw:.1f}" y="{y(0) + 16:.1f}" '
                   f'text-anchor="middle">{label}</text>')
    for i, (_, _, label) in enumerate(pairs):
        lx = left + i * 240
        svg.append(f'<rect x="{lx}" y="{height - 30}" width="12" height="12" '
                   f'fill="{colours[i]}"/><text x="{lx + 16}" y="{height - 20}">{label}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def targets(tx, timers, resets):
    """The issue's targets, each reported met or missed with its numbers."""
    out = ["## Targets (reported, not asserted)", ""]
    sizes = sorted({s for s, _ in tx})

    def ratios(a, b):
        return {s: med(tx[(s, a)]["pps"]) / med(tx[(s, b)]["pps"])
                for s in sizes if (s, a) in tx and (s, b) in tx}

    zc = ratios("zc-zc", "stock-zc")
    if zc:
        ok = all(v >= 1.0 for v in zc.values())
        out.append(f"- zero-copy TX packets/s at least stock zero-copy's at every size: "
                   f"{'met' if ok else 'missed'} (" +
                   ", ".join(f"{s} B: {v:.2f}" for s, v in zc.items()) + ")")
    cp = ratios("zc-copy", "stock-copy")
    if cp:
        ok = all(abs(v - 1) <= 0.05 for v in cp.values())
        out.append(f"- copy path equal to stock copy within noise (5%): "
                   f"{'met' if ok else 'missed'} (" +
                   ", ".join(f"{s} B: {v:.2f}" for s, v in cp.items()) + ")")
    zr = [d for d in resets if d["variant"] == "zc-zc"]
    if zr:
        met = sum(float(d["max_ms"]) <= int(d["timeout_ms"]) + 10 for d in zr)
        out.append(f"- reset max <= T + 10 ms with the queue idle: "
                   f"{'met' if met == len(zr) else 'missed'} in {met} of {len(zr)} cells")
    if timers and sizes:
        q = med([float(t["per_queue_timer_ns_per_packet"]) for t in timers])
        shares = [100 * q / med(tx[(s, "zc-zc")]["cpu"]) for s in sizes if (s, "zc-zc") in tx]
        out.append(f"- timer cost per packet under 2% of the per-packet cost: "
                   f"{'met' if max(shares) < 2 else 'missed'} (at most {max(shares):.2f}%)")
    out.append("")
    return out


def header_order(facts):
    """The header's words on the variants' order and its seed."""
    seed = facts.get("seed", "not recorded")
    cells = len(facts["order"])
    if not cells:
        return ("the four variants alternated within each (mode, size) cell (their order: "
                f"not recorded; seed: {seed})")
    return (f"the four variants alternated within each (mode, size) cell, in a random order "
            f"per cell (seed {seed}, `VNZC_BENCH_SEED`; the {cells} cells' orders are raw.txt's "
            "`# order` lines)")


def header_load(facts):
    """The header's line of the load averages."""
    if not facts["load"]:
        return "- load (/proc/loadavg of the host and of the benchmark VM): not recorded"
    return ("- load (/proc/loadavg: 1, 5, 15 min, runnable/threads; \"host\": the machine's, "
            "the others the benchmark VM's): " +
            "; ".join(f"{when} {' '.join(avg[:4])}" for when, avg in facts["load"]))


def reset_rows(resets, facts):
    """The rows of the reset table, and the note on stock's rows below it."""
    rows, stock = [], []
    for d in resets:
        if d["variant"] == "zc-zc":
            ok = float(d["max_ms"]) <= int(d["timeout_ms"]) + 10
            rows.append(f"| vhost-net-zc | {d['frames']} | {d['timeout_ms']} | "
                        f"{d['rounds']} | {d['p50_ms']} | {d['p99_ms']} | {d['max_ms']} | "
                        f"{'met' if ok else 'missed'} |")
        elif int(d["blocked_by_plug"]):
            stock.append(d)
            rows.append(f"| stock, zero-copy | {d['frames']} | - | {d['rounds']} | blocked | "
                        f"blocked | blocked | blocked until the plug was released, in "
                        f"{d['blocked_by_plug']} of {d['rounds']} resets |")
        else:
            rows.append(f"| stock, zero-copy | {d['frames']} | - | {d['rounds']} | "
                        f"{d['p50_ms']} | {d['p99_ms']} | {d['max_ms']} | - |")
    note = []
    if stock:
        wd = facts.get("watchdog")
        wd = (f"the watchdog released it after {wd.split()[0]} ms" if wd else
              "the watchdog's release time is not recorded in this raw.txt")
        note = ["", "Stock vhost-net's reset does not return while the plug holds its buffers: "
                f"in the rows above, it blocked until the plug was released ({wd}), so its "
                "times are the watchdog's, not a latency of the reset (the call returned at "
                "most " + ", ".join(f"{d['max_ms']} ms at K = {d['frames']}" for d in stock) +
                " after it was made)."]
    return rows, note


def main():
    raw, outdir = sys.argv[1], sys.argv[2]
    facts, runs, timers, resets = parse(raw)
    tx, rx = throughput(runs, "tx"), throughput(runs, "rx")
    reps = max([int(r["rep"]) for r in runs] + [0])
    r = ["<!-- SPDX-License-Identifier: GPL-2.0 -->", "# vhost-net-zc benchmarks", "",
         f"- kernel: {facts.get('machine', '?')}",
         f"- accelerator: {facts.get('accel', '?')}; under TCG absolute numbers mean little, "
         "the ratios within one run are the result",
         f"- kernel configuration: the benchmark variant (`.config.bench`: "
         f"{facts.get('config', '?')})",
         f"- run: {facts.get('date', '?')}, {reps} repetitions, {header_order(facts)}; "
         "medians with (min-max)",
         header_load(facts),
         "- CPU per packet: the run time of the device's worker thread (the one named "
         "vhost-<pid> of the benchmark process, its schedstat), divided by the packets; "
         "reports before 2026-12-07 summed every thread whose name began with vhost-, the "
         "benchmark's own included",
         "- ratios per repetition: in each repetition r, ratio_r = vhost-net-zc's value / "
         "stock's, both of the same cell; their median with (min..max), and their mean with "
         "its 95% confidence interval (t-distribution, n - 1 degrees of freedom). Packets/s: "
         "higher is better (above 1.00 vhost-net-zc is faster); worker ns/packet: lower is "
         "better (below 1.00 vhost-net-zc spends less CPU per packet). \"the better of "
         "stock\": in each repetition, the higher packets/s of stock's copy and zero-copy "
         "variants (for ns/packet, the lower)", ""]
    r += ["## TX", "", "The userspace guest posts its whole ring, kicks once, and reposts "
          "what comes back; frames go through a bridge to a dummy device, which frees them "
          "(no local delivery). 65000 B is one TCP segment marked for GSO.", ""]
    r += table(tx, "tx") + [""]
    r += ["Ratios per repetition, TX:", ""] + ratio_table(runs, "tx") + [""]
    r += ["## RX", "", "A packet socket writes frames into the tap's queue as fast as it "
          "can; the guest keeps its ring full.", ""]
    r += table(rx, "rx") + [""]
    r += ["Ratios per repetition, RX:", ""] + ratio_table(runs, "rx") + [""]
    r += ["![vhost-net-zc over stock, packets/s](chart.svg)", ""]
    if timers:
        q = med([float(t["per_queue_timer_ns_per_packet"]) for t in timers])
        b = med([float(t["per_buffer_timer_ns_per_packet"]) for t in timers])
        r += ["## Deadline timers", "",
              "One hrtimer per virtqueue armed for the earliest deadline (built) against "
              "one per buffer (started at the send, cancelled at the completion), "
              "measured by the module (`vhost-net-zc/timer_cost`):", "",
              "| design | ns/packet | share of the per-packet worker time, TX zero-copy |",
              "| --- | --- | --- |"]
        for name, v in (("per virtqueue (built)", q), ("per buffer", b)):
            shares = []
            for s in sorted({s for s, _ in tx}):
                if (s, "zc-zc") in tx:
                    shares.append(f"{s} B: {100 * v / med(tx[(s, 'zc-zc')]['cpu']):.2f}%")
            r.append(f"| {name} | {v:.0f} | {', '.join(shares)} |")
        t0 = timers[0]
        r += ["", "## Memory per outstanding buffer", "",
              f"- vhost-net-zc: {t0.get('pool_bytes_per_buffer', '?')} bytes (its pool is "
              "allocated whole per device, for 128 buffers with 20 address ranges each); a "
              f"timer per buffer would add {t0.get('hrtimer_bytes', '?')} bytes",
              f"- stock vhost-net: {t0.get('stock_bytes_per_buffer', '?')} bytes "
              "(`ubuf_info_msgzc` and a used element, for 1024 buffers per queue)", ""]
    if resets:
        r += ["## Reset under a stall", "",
              "K zero-copy buffers held in a plugged qdisc, `VHOST_NET_SET_BACKEND` -1 at "
              "once (the queue idle, no buffer yet past its deadline T). vhost-net-zc waits "
              "until the deadline, then offlines and returns the buffers; target: max <= "
              "T + 10 ms. K stops at 128: both devices keep at most 128 zero-copy buffers "
              "of a queue in flight.", "",
              "| device | K | T, ms | resets | p50, ms | p99, ms | max, ms | target |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        rows, note = reset_rows(resets, facts)
        r += rows + note + [""]
    r += targets(tx, timers, resets)
    with open(f"{outdir}/report.md", "w") as f:
        f.write("\n".join(r) + "\n")
    chart(tx, rx, f"{outdir}/chart.svg")


if __name__ == "__main__":
    main()
