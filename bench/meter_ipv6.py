"""Meter CPU time per packet on a spoofed SYN flood over IPv4 and the same flood over IPv6.

    PYTHONPATH=. .venv/bin/python bench/meter_ipv6.py [--packets 100000]

Every packet is a new flow from a random source (the meter's worst case: one insert per
packet). The captures are written byte by byte (tests/pcapgen.py), read and decoded once;
the meter's CPU time (Meter.process + flush, best of 8) is divided by the packets. CPU
time rather than wall time: on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ids_daemon.capture.batch import PacketBatch  # noqa: E402
from ids_daemon.capture.pcap import PcapSource  # noqa: E402
from ids_daemon.config import MeterConfig  # noqa: E402
from ids_daemon.features.meter import Meter  # noqa: E402
from tests.pcapgen import write_pcap  # noqa: E402


def flood(path: Path, version: int, n: int, seed: int = 1) -> list[PacketBatch]:
    """Write a spoofed SYN flood towards one host and return its decoded batches."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        src = int(rng.integers(1, 2**32 - 1)).to_bytes(4, "big")
        seg = struct.pack(">HHIIBBHHH", 1024 + i % 60000, 80, 1, 0, 5 << 4, 2, 1024, 0, 0)
        if version == 4:
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src, bytes([10, 0, 0, 80]))
            frame = b"\x02" * 12 + b"\x08\x00" + ip + seg
        else:
            ip = struct.pack(">IHBB16s16s", 6 << 28, 20, 6, 64, b"\x20\x01\x0d\xb8" + bytes(8) + src,
                             b"\x20\x01\x0d\xb8" + bytes(11) + b"\x50")
            frame = b"\x02" * 12 + b"\x86\xdd" + ip + seg
        frames.append((1_700_000_000 + i * 1e-5, frame))
    write_pcap(path, frames)
    with PcapSource(path) as src_:
        batches = []
        while (b := src_.next_batch()) is not None:
            batches.append(b)
    return batches


def meter_ns(batches: list[PacketBatch], repeat: int = 8) -> float:
    """Best CPU time per packet of Meter.process over the batches, plus the flush."""
    Meter(MeterConfig()).process(batches[0])  # compiled before the clock starts
    n = sum(len(b) for b in batches)
    best = float("inf")
    for _ in range(repeat):
        m = Meter(MeterConfig())
        t = time.process_time()
        for b in batches:
            m.process(b)
        m.flush()
        best = min(best, time.process_time() - t)
        assert m.counters.packets == n
    return best / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=100_000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ids-bench-"))
    res = {v: meter_ns(flood(tmp / f"flood{v}.pcap", v, a.packets)) for v in (4, 6)}
    print(f"spoofed SYN flood, {a.packets:,} packets, every packet a new flow: "
          + ", ".join(f"IPv{v} {ns:.0f} ns/packet ({1e3 / ns:.2f} M packets/s)" for v, ns in res.items()))


if __name__ == "__main__":
    main()
