"""What the protocol-fact detectors cost against the meter, detector by detector, in one run.

    .venv/bin/python bench/detectors.py [--packets N]

On the flood-heavy and benign-heavy captures of bench/gen.py (and any --pcap given), the
batches are read and decoded once, then timed through (a) the meter alone, (b) every
detector alone on fresh state, and (c) the whole `DetectorSet` as the daemon runs it. It
prints seconds and packets/s of each, and each detector's time as a share of the meter's.
The goal (issue "Detection that holds beyond the corpus"): all detectors together at most a
quarter of the meter's time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

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


def timed(fn, batches: list) -> float:
    t = time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - t


def measure(name: str, path: Path, cfg: Config) -> None:
    batches = batches_of(path, cfg.capture.batch_size)
    n = sum(len(b) for b in batches)
    meter = Meter(cfg.meter)
    t_meter = timed(meter.process, batches)
    meter.flush()
    rows = [("meter", t_meter)]
    full = DetectorSet(cfg.detectors)
    for det in full.detectors:
        fresh = type(det)(getattr(cfg.detectors, det.name))
        rows.append((f"detector:{det.name}", timed(lambda b: fresh.process(b, np.full(len(b), -1, np.int16)), batches)))
    # address ids are cached on the batch: a fresh copy so the set pays for them as the daemon does
    batches = batches_of(path, cfg.capture.batch_size)
    rows.append(("all detectors", timed(DetectorSet(cfg.detectors).process, batches)))
    print(f"\n{name}: {n:,} packets in {len(batches)} batches")
    for what, s in rows:
        print(f"  {what:22s} {s:7.3f} s {n / s / 1e3:9.0f} k packets/s {s / t_meter:7.2f} x meter")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=400_000)
    ap.add_argument("--pcap", type=Path, action="append", default=[])
    a = ap.parse_args()
    cfg = Config()
    with tempfile.TemporaryDirectory() as d:
        flood = gen.write_flood_pcap(Path(d) / "flood.pcap", a.packets)
        benign = gen.write_benign_pcap(Path(d) / "benign.pcap", a.packets)
        measure("flood-heavy", flood, cfg)
        measure("benign-heavy", benign, cfg)
        for p in a.pcap:
            measure(p.name, p, cfg)


if __name__ == "__main__":
    main()
