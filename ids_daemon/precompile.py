"""Compile every numba kernel of the runtime into numba's cache, once, at install.

numba compiles a kernel on its first call and caches the machine code beside the source
(`__pycache__/*.nbi|nbc`); later processes load it in milliseconds. A fresh install has no
cache, so its first `ids-daemon run` or `replay` spent about 90 s of CPU compiling before
the first packet (measured on the 2-core build machine; the ARP claims pass and the meter
are the largest), and two processes started together (a test run's workers, two sensors
after an upgrade) each compiled the same kernels. `ids-daemon compile` (run by
`scripts/setup.sh`) splits the kernels into groups compiled by parallel processes, then runs
the bundled capture through the meter and every detector and loads the bundled model in this
process, counting what still had to be compiled: 0 when the groups covered every kernel and
signature the pipeline calls (tests/test_precompile.py checks a replay after it compiles none).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources

# Each group is compiled by its own process, in this order (the next starts when a process is
# free); cold CPU seconds measured alone: scans 41, ARP 28, capture sources and meter 24, the
# rest 12, the bundled model's engine (its encoding and window-cache kernels) 5, so two processes end within seconds of each other. Every group with a scan or
# reflection detector builds the flood detector too: DetectorSet hands them its held floods,
# which their kernels' signatures see.
GROUPS: dict[str, tuple[str, ...]] = {
    "scan": ("scan", "flood", "volume"),
    "arp": ("arp",),
    "capture": (),
    "claims": ("dns", "osscan", "web", "bruteforce", "shell", "flood", "slowhttp", "reflection"),
    "model": (),
}
_ALL_DETECTORS = ("arp", "dns", "osscan", "scan", "web", "bruteforce", "shell", "flood", "slowhttp", "reflection",
                  "volume")


@dataclass
class CompileReport:
    """What `compile_all` did: seconds of wall time, and kernels the final pass still
    compiled (signatures no group reached) against those it loaded from the cache."""

    seconds: float
    compiled_after: int
    failed_groups: list[str]


def _sample_batch():  # -> PacketBatch
    from .capture.pcap import PcapSource

    sample = str(resources.files("ids_daemon") / "data" / "sample.pcap")
    with PcapSource(sample) as src:
        return src.next_batch()


def _detectors(names: tuple[str, ...]):  # -> DetectorSet
    from .config import DetectorsConfig
    from .detectors import DetectorSet

    return DetectorSet(DetectorsConfig.model_validate({n: {"enabled": n in names} for n in _ALL_DETECTORS}))


def _capture_kernels() -> None:
    """The file and ring walkers, decoding from read-only (file) and writable (ring) bytes,
    the raw-frame copy, the alert pcap writer and the meter."""
    import mmap

    import numpy as np

    from .builder import warm_up
    from .capture.decode import decode_frames
    from .capture.live import _walk_ring
    from .capture.pcap import PcapSource
    from .capture.rawframes import keep_raw
    from .capture.rawframes import warm_up as warm_up_raw
    from .sinks.alertpcap import _records

    warm_up()  # the pcap walker, decoding and the meter, on the bundled capture
    warm_up_raw()
    _records(np.zeros(1, np.uint8), np.array([0, 1]), np.array([0]), np.zeros(1), np.zeros(1, np.uint32),
             np.zeros(17, np.uint8))
    # pcapng: a section header and one Ethernet interface, no packets
    shb = (b"\x0a\x0d\x0d\x0a" + (28).to_bytes(4, "little") + b"\x4d\x3c\x2b\x1a" + b"\x01\x00\x00\x00"
           + b"\xff" * 8 + (28).to_bytes(4, "little"))
    idb = (1).to_bytes(4, "little") + (20).to_bytes(4, "little") + b"\x01\x00\x00\x00" + b"\x00" * 4 \
        + (20).to_bytes(4, "little")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "empty.pcapng")
        with open(path, "wb") as fh:
            fh.write(shb + idb)
        with PcapSource(path) as src:
            src.warm_up()
    # the live ring: its arrays are views of an mmap, as LiveSource makes them
    mm = mmap.mmap(-1, 4096)
    ring8 = np.frombuffer(mm, dtype=np.uint8)
    n = 4
    off, cap, wire = np.zeros(n, np.int64), np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    ts, vlan, done = np.zeros(n, np.float64), np.zeros(n, np.bool_), np.zeros(1, np.int64)
    _walk_ring(ring8, ring8.view(np.uint16), ring8.view(np.uint32), 4096, 1, np.zeros(3, np.int64), 0, True,
               off, cap, wire, ts, vlan, done)
    o, c, w, t = off[:1].copy(), cap[:1].copy(), wire[:1].copy(), ts[:1].copy()
    c[0], w[0] = 64, 64
    b = decode_frames(ring8, o, c, w, t, 1, first_index=0, source="precompile")
    keep_raw(b, ring8, o, c)
    del ring8, b
    mm.close()


def _model_kernels() -> None:
    """The CPU engine's kernels (encoding, window cache): the worker runs them on probe
    sequences at load, checking the engine against the whole encoding."""
    from .builder import make_worker
    from .config import Config

    make_worker(Config())


def compile_group(name: str) -> None:
    """Compile one group's kernels in this process (run its detectors over the bundled capture:
    a detector's first batch reaches kernels its constructor's warm-up does not)."""
    if name == "capture":
        _capture_kernels()
        return
    if name == "model":
        _model_kernels()
        return
    batch = _sample_batch()
    if batch is not None:
        _detectors(GROUPS[name]).process(batch)


def compile_all(jobs: int = 2) -> CompileReport:
    """Compile the groups in up to ``jobs`` parallel processes, then run the bundled capture
    through the meter and all detectors here and count the kernels that still compiled."""
    from numba.core import event

    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    pending = list(GROUPS)
    running: list[tuple[str, subprocess.Popen]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            g = pending.pop(0)
            running.append((g, subprocess.Popen([sys.executable, "-m", "ids_daemon.precompile", g], env=env)))
        time.sleep(0.05)
        for g, p in [r for r in running if r[1].poll() is not None]:
            running.remove((g, p))
            if p.returncode != 0:
                failed.append(g)  # the final pass below compiles what it left, in this process

    compiled = 0

    class _Count(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            nonlocal compiled
            compiled += 1

        def on_end(self, ev: event.Event) -> None:
            pass

    listener = _Count()
    event.register("numba:compile", listener)
    try:
        _capture_kernels()
        _model_kernels()
        batch = _sample_batch()
        if batch is not None:
            _detectors(_ALL_DETECTORS).process(batch)
    finally:
        event.unregister("numba:compile", listener)
    return CompileReport(seconds=time.perf_counter() - t0, compiled_after=compiled, failed_groups=failed)


if __name__ == "__main__":
    compile_group(sys.argv[1])
