"""What the protocol-fact detectors cost against the meter, detector by detector, in one run.

    .venv/bin/python bench/detectors.py [--packets N] [--repeat R] [--batch-sizes 4096,65536]

On the flood-heavy and benign-heavy captures of bench/gen.py (and any --pcap given), the
batches are read and decoded once, then timed through (a) the meter alone and (b) the whole
`DetectorSet` as the daemon runs it, each on fresh state and the best of ``--repeat`` passes, in
CPU seconds of the process (on a shared machine wall time mostly measures the neighbours; nothing
here runs threads). Every figure is also given as
a share of the meter's time. Within (b), each detector's own time is printed, and the per-batch
columns the detectors share (`address_ids`, cached on the batch, paid by the first detector that
asks) as "shared columns". The flood detector's count of a batch's sources, which the scan
detector has run first (`FloodDetector.count`: a flood held from this batch on is no probes), is
timed as the flood detector's. The goal (issue 17): all detectors together at most a quarter of the
meter's time.

``--kernels`` adds, per capture, one more pass with every compiled kernel the detectors call
from Python (the numba dispatchers of the ``_*_kernel`` modules) timed on its own, largest
first, and what is left of the set's time (the Python around them): where a redesign would
have to cut.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if not os.environ.get("PYTHONPATH"):  # else PYTHONPATH's tree is timed (an older one, side by side)
    sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

from ids_daemon import detectors as _detectors_pkg  # noqa: E402

from ids_daemon.capture.batch import address_ids  # noqa: E402
from ids_daemon.capture.pcap import PcapSource  # noqa: E402
from ids_daemon.config import Config  # noqa: E402
from ids_daemon.detectors import DetectorSet  # noqa: E402
from ids_daemon.features.meter import Meter  # noqa: E402


def batches_of(path: Path, batch_size: int) -> list:
    with PcapSource(path, batch_size=batch_size) as src:
        out = []
        while (b := src.next_batch()) is not None:
            out.append(b)
    return out


def fresh(batches: list) -> list:
    """The batches without the derived columns a detector pass cached on them."""
    for b in batches:
        for k in [k for k in b.__dict__ if k.startswith("_")]:
            del b.__dict__[k]
    return batches


def meter_pass(batches: list, cfg: Config) -> float:
    meter = Meter(cfg.meter)
    t = time.process_time()
    for b in batches:
        meter.process(b)
    meter.flush()
    return time.process_time() - t


def detector_pass(batches: list, cfg: Config) -> tuple[float, dict[str, float]]:
    """The set's time over the batches, and its parts (as `DetectorSet.process` runs them)."""
    ds = DetectorSet(cfg.detectors)
    # the flood detector's per-batch count, which a newer tree runs at the scan detector's request
    flood = next((d for d in ds.detectors if d.name == "flood" and hasattr(d, "count")), None)
    parts: dict[str, float] = defaultdict(float)
    parts["shared columns"] = 0.0
    for d in ds.detectors:  # (printed in the set's order)
        parts[d.name] = 0.0
    fresh(batches)
    t0 = time.process_time()
    for b in batches:
        t = time.process_time()
        address_ids(b)
        verdict = np.full(len(b), -1, dtype=np.int16)
        parts["shared columns"] += time.process_time() - t
        if flood is not None:  # counted before the scan detector asks for its held floods: its own time
            t = time.process_time()
            flood.count(b)
            parts[flood.name] += time.process_time() - t
        for d in ds.detectors:
            t = time.process_time()
            d.process(b, verdict)
            parts[d.name] += time.process_time() - t
    return time.process_time() - t0, parts


KERNEL_MODULES = ("_arp_kernel", "_flood_kernel", "_keys_kernel", "_osscan_kernel", "_reflection_kernel",
                  "_scan_kernel", "_volume_kernel")


@contextmanager
def timed_kernels():
    """Every numba dispatcher of the detectors' kernel modules wrapped, while the block runs,
    with a CPU-time counter (yields {module.kernel: seconds}); restored after. Only calls made
    from Python are counted: a kernel that another kernel calls runs inside its caller's time.
    (Run it after a plain pass: a kernel compiled while its neighbours are wrapped would see
    the wrappers.)"""
    import importlib

    spent: dict[str, float] = defaultdict(float)
    saved = []
    for mod_name in KERNEL_MODULES:
        mod = importlib.import_module(f"{_detectors_pkg.__name__}.{mod_name}")
        for attr, fn in list(vars(mod).items()):
            if not hasattr(fn, "py_func"):
                continue

            def wrapper(*a, _fn=fn, _name=f"{mod_name.strip('_')}.{attr}", **k):
                t = time.process_time()
                try:
                    return _fn(*a, **k)
                finally:
                    spent[_name] += time.process_time() - t

            saved.append((mod, attr, fn))
            setattr(mod, attr, wrapper)
    try:
        yield spent
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)


def measure(name: str, path: Path, cfg: Config, repeat: int, kernels: bool = False,
            batch_size: int | None = None) -> None:
    batches = batches_of(path, batch_size or cfg.capture.batch_size)
    n = sum(len(b) for b in batches)
    meter_pass(batches[:1], cfg)  # compiled kernels loaded before the clock runs
    t_meter = min(meter_pass(batches, cfg) for _ in range(repeat))
    t_all, parts = min((detector_pass(batches, cfg) for _ in range(repeat)), key=lambda x: x[0])
    print(f"\n{name}: {n:,} packets in {len(batches)} batches of up to {batch_size or cfg.capture.batch_size:,} "
          f"(best of {repeat})")
    rows = [("meter", t_meter), ("all detectors", t_all)] + [(f"  {k}", v) for k, v in parts.items()]
    for what, s in rows:
        print(f"  {what:22s} {s:7.4f} s {n / s / 1e3:9.0f} k packets/s {s / t_meter:7.3f} x meter")
    if kernels:
        with timed_kernels() as spent:
            t_set, _ = detector_pass(batches, cfg)
        print(f"  compiled kernels called from Python (one pass, {t_set:.4f} s in all):")
        for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
            if v >= 0.0001:
                print(f"    {k:38s} {v:7.4f} s {v / t_meter:7.3f} x meter")
        rest = t_set - sum(spent.values())
        print(f"    {'the rest (Python, numpy)':38s} {rest:7.4f} s {rest / t_meter:7.3f} x meter")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pcap", type=Path, action="append", default=[])
    ap.add_argument("--kernels", action="store_true", help="also time each compiled kernel (one more pass)")
    ap.add_argument("--batch-sizes", default="",
                    help="comma-separated frames per batch (default: capture.batch_size, what a replay reads); "
                         "live capture hands over what the ring holds, a few thousand frames a block")
    a = ap.parse_args()
    cfg = Config()
    sizes = [int(x) for x in a.batch_sizes.split(",") if x.strip()] or [None]
    with tempfile.TemporaryDirectory() as d:
        flood = gen.write_flood_pcap(Path(d) / "flood.pcap", a.packets)
        benign = gen.write_benign_pcap(Path(d) / "benign.pcap", a.packets)
        for bs in sizes:
            measure("flood-heavy", flood, cfg, a.repeat, a.kernels, bs)
            measure("benign-heavy", benign, cfg, a.repeat, a.kernels, bs)
            for p in a.pcap:
                measure(p.name, p, cfg, a.repeat, a.kernels, bs)


if __name__ == "__main__":
    main()
