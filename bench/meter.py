"""Meter throughput and memory, against baselines measured in the same run.

    .venv/bin/python bench/meter.py [--packets N] [--out DIR] [--repeat R]

For a flood-heavy and a benign-heavy capture (generated once under bench/out/ by
bench/gen.py, reused when present) it measures packets/s of
  (a) raw parse: PcapSource reading and decoding every batch, nothing else;
  (b) the meter end to end: PcapSource + Meter.process on every batch + flush
      (default MeterConfig, key_mode flow; once more with key_mode capture; and once
      as "flow+pf" with reading/decoding in a second thread, PrefetchSource, as the
      daemon runs it: both stages release the GIL, so they overlap on two cores);
  (c) dpkt: dpkt.pcap.Reader + dpkt.ethernet.Ethernet per record, touching the
      IP/TCP/UDP header fields (src, dst, p, sport, dport, flags);
then where the time of (b) goes (file reads, record walk, decode, meter kernel, meter
glue), and the memory the meter holds per tracked flow with 1M flows (in a fresh
process, so freed heap from the throughput runs cannot hide growth).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

from ids_daemon.capture import pcap as pcap_mod  # noqa: E402
from ids_daemon.capture.batch import PacketBatch  # noqa: E402
from ids_daemon.capture.pcap import PcapSource  # noqa: E402
from ids_daemon.capture.prefetch import PrefetchSource  # noqa: E402
from ids_daemon.config import MeterConfig  # noqa: E402
from ids_daemon.features import _kernel as K  # noqa: E402
from ids_daemon.features.meter import Meter  # noqa: E402

GEN_VERSION = 1  # bump when gen.py output changes, so stale files are not reused
GOAL_RATIO_RAW = 0.60
GOAL_RATIO_DPKT = 3.0
GOAL_PPS = 300_000
GOAL_BYTES_PER_FLOW = 512


# ---- the measured workloads ------------------------------------------------------------------
def run_parse(path: Path) -> tuple[int, None]:
    n = 0
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            n += len(b)
    return n, None


def run_meter(path: Path, meter: Meter, prefetch: bool = False) -> tuple[int, object]:
    """Read, decode and meter the file; with ``prefetch`` the reading and decoding run in a
    second thread (`PrefetchSource`), overlapping the meter as the daemon's pipeline does."""
    n = 0
    with PcapSource(path) as src:
        source = PrefetchSource(src) if prefetch else src
        if prefetch:
            source.open()
        while (b := source.next_batch()) is not None:
            meter.process(b)
            n += len(b)
        if prefetch:
            source.close()
    meter.flush()
    return n, meter


def new_meter(key_mode: str) -> Meter:
    """Built before the clock starts: its table is preallocated (a startup cost)."""
    return Meter(MeterConfig(key_mode=key_mode))


def run_dpkt(path: Path) -> tuple[int, None]:
    import dpkt

    Ethernet, IP, TCP, UDP = dpkt.ethernet.Ethernet, dpkt.ip.IP, dpkt.tcp.TCP, dpkt.udp.UDP
    n = 0
    acc = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            n += 1
            ip = Ethernet(buf).data
            if isinstance(ip, IP):
                src, dst, p = ip.src, ip.dst, ip.p
                l4 = ip.data
                if isinstance(l4, TCP):
                    acc += l4.sport + l4.dport + l4.flags
                elif isinstance(l4, UDP):
                    acc += l4.sport + l4.dport
                acc += p + len(src) + len(dst)
    return n, None


def timed(fn, *args) -> tuple[float, int, object]:
    gc.collect()
    t = time.perf_counter()
    n, extra = fn(*args)
    return time.perf_counter() - t, n, extra


def measure(fn, make_args, repeat: int) -> dict:
    """Best and median of ``repeat`` timed calls; ``make_args()`` runs outside the clock."""
    secs = []
    n = 0
    extra = None
    for _ in range(repeat):
        args = make_args()
        s, n, extra = timed(fn, *args)
        secs.append(s)
    return {"n": n, "best_s": min(secs), "median_s": statistics.median(secs),
            "best_pps": n / min(secs), "median_pps": n / statistics.median(secs), "extra": extra}


# ---- where the time goes ------------------------------------------------------------------------
def breakdown(path: Path, key_mode: str = "flow", repeat: int = 1) -> dict[str, float]:
    """The instrumented run with the smallest total out of ``repeat``."""
    runs = [_breakdown_once(path, key_mode) for _ in range(repeat)]
    return min(runs, key=lambda a: a["total"])


def _breakdown_once(path: Path, key_mode: str) -> dict[str, float]:
    """One instrumented meter run: the library's own functions wrapped with timers in this
    process only (nothing is edited)."""
    acc = {"fill": 0.0, "walk": 0.0, "decode": 0.0, "open": 0.0, "next_batch": 0.0, "process": 0.0,
           "kernel": 0.0, "flush": 0.0}

    def wrap(name, f):
        def w(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                acc[name] += time.perf_counter() - t
        return w

    saved = [(pcap_mod, "_walk_pcap"), (pcap_mod, "decode_frames"), (K, "meter_packets"),
             (PcapSource, "_fill"), (PcapSource, "open"), (PcapSource, "next_batch"), (Meter, "process"),
             (Meter, "flush")]
    orig = [getattr(o, a) for o, a in saved]
    names = ["walk", "decode", "kernel", "fill", "open", "next_batch", "process", "flush"]
    try:
        for (o, a), f, nm in zip(saved, orig, names):
            setattr(o, a, wrap(nm, f))
        m = new_meter(key_mode)
        s, n, _ = timed(run_meter, path, m)
    finally:
        for (o, a), f in zip(saved, orig):
            setattr(o, a, f)
    acc["total"] = s
    acc["n"] = n
    return acc


# ---- memory per flow (child process) --------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _fill_tcp_syn(b: PacketBatch) -> None:
    b.status[:] = 0
    b.ip_version[:] = 4
    b.ethertype[:] = 0x0800
    b.proto[:] = 6
    b.l4_ok[:] = True
    b.frame_len[:] = 54
    b.cap_len[:] = 60
    b.wire_len[:] = 60
    b.tcp_flags[:] = 2
    b.ttl[:] = 64
    b.dst4[:] = gen.ip("192.168.1.10")
    b.dport[:] = 80
    b.l4_hdr_len[:] = 20
    b.ip_hdr_len[:] = 20
    b.ip_len[:] = 40


def memory_child(n_flows: int, max_flows: int) -> dict:
    # numba warm-up first: compiled code and its caches are not flow state
    warm = PacketBatch.empty(64)
    _fill_tcp_syn(warm)
    warm.src4[:] = np.arange(64)
    warm.ts[:] = 1.0 + np.arange(64) * 1e-6
    Meter(MeterConfig(max_flows=16, idle_timeout=0, promote_after=1)).process(warm)

    bs = 65536
    batch = PacketBatch.empty(bs)  # one batch, refilled in place: not counted below
    _fill_tcp_syn(batch)
    lane = np.arange(bs, dtype=np.int64)
    small = Meter(MeterConfig(max_flows=16, idle_timeout=0, promote_after=1)).memory_bytes
    gc.collect()
    rss0 = _rss_bytes()
    meter = Meter(MeterConfig(max_flows=max_flows, idle_timeout=0, promote_after=1))
    rss_alloc = _rss_bytes()
    t = time.perf_counter()
    base_ip = gen.ip("10.0.0.0")
    for start in range(0, n_flows, bs):
        k = min(bs, n_flows - start)
        b = batch if k == bs else batch.take(np.arange(k))
        i = start + lane[:k]
        b.src4[:] = base_ip + i  # a distinct source address per flow
        b.sport[:] = 1024 + (i % 64000)
        b.ts[:] = 1_700_000_000.0 + i * 1e-6
        meter.process(b)
    secs = time.perf_counter() - t
    gc.collect()
    rss1 = _rss_bytes()
    c = meter.counters
    return {"n_flows": n_flows, "max_flows": max_flows, "memory_bytes": meter.memory_bytes,
            "memory_bytes_16": small, "out_bytes": meter._wf.nbytes + meter._wi.nbytes,
            "keys_tracked": c.keys_tracked, "flows_created": c.flows_created, "evicted": c.evicted,
            "rss0": rss0, "rss_alloc": rss_alloc, "rss1": rss1, "secs": secs}


# ---- output ---------------------------------------------------------------------------------------
def fmt_pps(x: float) -> str:
    return f"{x / 1e3:,.0f}k"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=200_000, help="packets per generated capture (default 200000)")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="where the captures are kept (default bench/out)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; best and median shown")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mem-flows", type=int, default=1_048_576, help="distinct flows fed in the memory test")
    ap.add_argument("--no-memory", action="store_true", help="skip the 1M-flow memory test")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    max_flows = 1_048_576

    if args.memory_child:
        print(json.dumps(memory_child(args.mem_flows, max_flows)))
        return 0

    t_start = time.perf_counter()
    repeat = max(1, args.repeat)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for label, writer, seed in (("flood", gen.write_flood_pcap, args.seed), ("benign", gen.write_benign_pcap, args.seed + 1)):
        p = out / f"{label}-v{GEN_VERSION}-{args.packets}-s{seed}.pcap"
        if p.exists():
            state = "reused"
        else:
            t = time.perf_counter()
            writer(p, args.packets, seed)
            state = f"generated in {time.perf_counter() - t:.2f}s"
        files.append((label, p))
        print(f"{label:7s} {p} ({p.stat().st_size / 1e6:.1f} MB, {state})")

    # warm-up: numba loads/compiles every kernel here, so JIT time is not in the figures
    t = time.perf_counter()
    warm = out / "warmup-v{}.pcap".format(GEN_VERSION)
    if not warm.exists():
        gen.write_flood_pcap(warm, 5000, 99)
    run_parse(warm)
    run_meter(warm, new_meter("flow"))
    run_meter(warm, new_meter("capture"), prefetch=True)
    run_dpkt(warm)
    print(f"warm-up: numba kernels compiled/loaded on a 5000-packet capture in {time.perf_counter() - t:.2f}s "
          f"(excluded from every timing below)")
    print(f"timings: best of {repeat} runs (median also shown), files in the page cache, one process, "
          f"Meter constructed (table preallocated) before the clock starts; {sys.version.split()[0]}, numpy {np.__version__}")
    print()

    results = []
    for label, p in files:
        raw = measure(run_parse, lambda: (p,), repeat)
        flow = measure(run_meter, lambda: (p, new_meter("flow")), repeat)
        cap = measure(run_meter, lambda: (p, new_meter("capture")), repeat)
        pipe = measure(run_meter, lambda: (p, new_meter("flow"), True), repeat)
        dp = measure(run_dpkt, lambda: (p,), repeat)
        for r in (flow, cap, pipe, dp):
            assert r["n"] == raw["n"], (label, r["n"], raw["n"])
        results.append((label, raw, flow, cap, pipe, dp))

    hdr = (f"{'file':7s} {'mode':8s} {'packets':>8s} {'flows':>7s} {'(a) raw':>9s} {'(b) meter':>9s} "
           f"{'(b)/(a)':>7s} {'(c) dpkt':>9s} {'(b)/(c)':>7s}")
    print("packets/s, best of", repeat)
    print(hdr)
    print("-" * len(hdr))
    goals = []
    for label, raw, flow, cap, pipe, dp in results:
        for mode, m in (("flow", flow), ("capture", cap), ("flow+pf", pipe)):
            ra = m["best_pps"] / raw["best_pps"]
            rc = m["best_pps"] / dp["best_pps"]
            flows = m["extra"].counters.flows_created
            print(f"{label:7s} {mode:8s} {m['n']:>8,d} {flows:>7,d} {fmt_pps(raw['best_pps']):>9s} "
                  f"{fmt_pps(m['best_pps']):>9s} {ra:>7.2f} {fmt_pps(dp['best_pps']):>9s} {rc:>7.2f}")
            goals.append((label, mode, m["best_pps"], ra, rc))
    print()
    print("median packets/s")
    print(hdr)
    print("-" * len(hdr))
    for label, raw, flow, cap, pipe, dp in results:
        for mode, m in (("flow", flow), ("capture", cap), ("flow+pf", pipe)):
            flows = m["extra"].counters.flows_created
            print(f"{label:7s} {mode:8s} {m['n']:>8,d} {flows:>7,d} {fmt_pps(raw['median_pps']):>9s} "
                  f"{fmt_pps(m['median_pps']):>9s} {m['median_pps'] / raw['median_pps']:>7.2f} "
                  f"{fmt_pps(dp['median_pps']):>9s} {m['median_pps'] / dp['median_pps']:>7.2f}")
    print()
    print(f"goals (best of {repeat}): meter >= {GOAL_RATIO_RAW:.0%} of raw parse, >= {GOAL_RATIO_DPKT:g}x dpkt, "
          f">= {GOAL_PPS / 1e3:.0f}k packets/s")
    all_ok = True
    for label, mode, pps, ra, rc in goals:
        ok = (ra >= GOAL_RATIO_RAW, rc >= GOAL_RATIO_DPKT, pps >= GOAL_PPS)
        all_ok &= all(ok)
        print(f"  {label:7s} {mode:8s} vs raw {ra:5.2f} {verdict(ok[0])}   vs dpkt {rc:5.2f}x {verdict(ok[1])}   "
              f"{fmt_pps(pps):>6s} pps {verdict(ok[2])}")

    print()
    print(f"where the meter's time goes (key_mode flow; instrumented run with the smallest total of {repeat}; "
          f"the timing wrappers add a little):")
    print(f"  {'file':7s} {'total':>7s} {'read':>7s} {'walk':>7s} {'decode':>7s} {'src-rest':>8s} "
          f"{'kernel':>7s} {'glue':>7s} {'flush':>7s} {'other':>7s}")
    for label, p in files:
        a = breakdown(p, repeat=repeat)
        src_rest = a["open"] + a["next_batch"] - a["fill"] - a["walk"] - a["decode"]
        glue = a["process"] - a["kernel"]
        other = a["total"] - a["open"] - a["next_batch"] - a["process"] - a["flush"]
        cells = [a["total"], a["fill"], a["walk"], a["decode"], src_rest, a["kernel"], glue, a["flush"], other]
        print(f"  {label:7s} " + " ".join(f"{x * 1e3:6.1f}m" if i != 4 else f"{x * 1e3:7.1f}m"
                                          for i, x in enumerate(cells)))
        pct = {k: 100 * v / a["total"] for k, v in
               (("read", a["fill"]), ("walk", a["walk"]), ("decode", a["decode"]), ("kernel", a["kernel"]),
                ("glue", glue))}
        per = 1e9 / a["n"]
        print(f"  {'':7s} " + ", ".join(f"{k} {v:.0f}%" for k, v in pct.items())
              + f"; per packet: parse (read+walk+decode) {(a['fill'] + a['walk'] + a['decode']) * per:.0f} ns, "
              f"kernel {a['kernel'] * per:.0f} ns")
    print("  read = PcapSource._fill (file reads, open's first read included), walk = record-header walk (numba),")
    print("  decode = decode_frames (numpy), src-rest = rest of open + next_batch, kernel = meter_packets (numba),")
    print("  glue = Meter.process minus the kernel, other = the loop itself and close; times in ms")
    print()
    print(f"meter alone on batches decoded beforehand (Meter.process + flush, no reading; best/median of {repeat}):")
    for label, p in files:
        with PcapSource(p) as src:
            batches = []
            while (b := src.next_batch()) is not None:
                batches.append(b)
        for mode in ("flow", "capture"):
            def run_pre(meter, batches=batches):
                for b in batches:
                    meter.process(b)
                meter.flush()
                return sum(len(b) for b in batches), None
            r = measure(run_pre, lambda mode=mode: (new_meter(mode),), repeat)
            print(f"  {label:7s} {mode:8s} {fmt_pps(r['best_pps']):>8s} / {fmt_pps(r['median_pps']):>8s} packets/s "
                  f"({r['best_s'] * 1e9 / r['n']:.0f} ns/packet best)")
        del batches

    if not args.no_memory:
        print()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--mem-flows", str(args.mem_flows)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print("memory test failed:\n" + res.stderr)
            return 2
        m = json.loads(res.stdout.strip().splitlines()[-1])
        mib = 2**20
        alloc_per = m["memory_bytes"] / m["max_flows"]
        alloc_marg = (m["memory_bytes"] - m["memory_bytes_16"]) / (m["max_flows"] - 16)
        grow = m["rss1"] - m["rss0"]
        keys = max(m["keys_tracked"], 1)
        rss_per = grow / keys
        out_b = m["out_bytes"]
        rss_net = (grow - out_b) / keys
        print(f"memory per flow with {m['keys_tracked']:,d} tracked flows. Method: in a fresh process, numba warmed "
              f"up and one 65536-row input PacketBatch allocated first; VmRSS read from /proc/self/status; then "
              f"Meter(MeterConfig(max_flows={m['max_flows']:,d}, idle_timeout=0, promote_after=1)) constructed and fed "
              f"{m['n_flows']:,d} distinct TCP SYN flows (one source address each, the batch refilled in place; "
              f"{m['n_flows'] / m['secs'] / 1e6:.2f}M packets/s; {m['evicted']} evicted); VmRSS read again.")
        print(f"  allocated bound:  meter.memory_bytes / max_flows = {m['memory_bytes']:,d} / {m['max_flows']:,d} "
              f"= {alloc_per:.4f} B/flow (per entry, against a 16-flow meter: {alloc_marg:.2f} B)")
        print(f"  resident, total:  (VmRSS after feeding - VmRSS before constructing) / keys_tracked = "
              f"({m['rss1'] / mib:.1f} - {m['rss0'] / mib:.1f} MiB) / {keys:,d} = {rss_per:.1f} B/flow "
              f"(+{(m['rss_alloc'] - m['rss0']) / mib:.1f} MiB of it resident right after construction)")
        print(f"  resident, without the window output buffers (fixed {out_b / mib:.1f} MiB, sized by batch, not by "
              f"max_flows): {rss_net:.1f} B/flow; growth beyond key table + output buffers: "
              f"{(grow - m['memory_bytes'] - out_b) / mib:.1f} MiB")
        checks = (("allocated bound", alloc_per), ("resident total", rss_per),
                  ("resident without output buffers", rss_net))
        print(f"  goal <= {GOAL_BYTES_PER_FLOW} B/flow: " + "; ".join(
            f"{name} {val:.1f} {verdict(val <= GOAL_BYTES_PER_FLOW)}" for name, val in checks))
        all_ok &= all(val <= GOAL_BYTES_PER_FLOW for _, val in checks)

    print()
    print(f"total {time.perf_counter() - t_start:.1f}s; all goals {'PASS' if all_ok else 'not met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
