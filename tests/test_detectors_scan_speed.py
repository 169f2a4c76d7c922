"""The scan detector's compiled state: bounded, evictions counted, as the dict-based one was."""

from __future__ import annotations

import numpy as np

from ids_daemon.capture.batch import PacketBatch
from ids_daemon.config import ScanDetectorConfig
from ids_daemon.detectors.scan import ScanDetector

HOST = 0x0A000009


def syn_scans(sources: int, ports: int, t0: float, gap: float = 0.01) -> PacketBatch:
    """``sources`` hosts each sending crafted SYNs to ports 1..``ports`` of HOST, one after another,
    ``gap`` seconds apart (0.01: each fails, unanswered for answer_s, within the batch, in order)."""
    n = sources * ports
    b = PacketBatch.empty(n)
    b.ts[:] = t0 + np.arange(n) * gap
    b.ethertype[:] = 0x0800
    b.ip_version[:] = 4
    b.proto[:] = 6
    b.l4_ok[:] = True
    b.src4[:] = 0x0B000001 + np.repeat(np.arange(sources), ports)
    b.dst4[:] = HOST
    b.sport[:] = 40000
    b.dport[:] = np.tile(np.arange(1, ports + 1), sources)
    b.tcp_flags[:] = 2
    b.l4_hdr_len[:] = 20
    b.ip_hdr_len[:] = 20
    b.ip_len[:] = 40
    return b


def test_scanners_beyond_the_caps_are_evicted_and_counted() -> None:
    det = ScanDetector(ScanDetectorConfig(max_pending=4096, max_groups=16))
    det.process(first := syn_scans(64, 30, 1000.0), np.full(len(first), -1, np.int16))
    later = syn_scans(1, 1, 1050.0)  # the last of the first batch's probes time out here
    v = np.full(len(later), -1, np.int16)
    det.process(later, v)
    c = det.counters
    assert c["probes"] == 64 * 30 + 1 and c["failed_probes"] == 64 * 30
    assert c["scanners"] == 64 and c["scanner_evictions"] == 64 - 16
    assert len(det.active) == 16 and len(det.targets) <= 16 and c["target_evictions"] > 0
    assert len(det.groups) == 16 and c["group_evictions"] > 0
    assert len(det.pending) == 1 and c["pending_evictions"] == 0


def test_pending_probes_beyond_the_cap_are_evicted_and_counted() -> None:
    det = ScanDetector(ScanDetectorConfig(max_pending=100, max_groups=5000))
    b = syn_scans(1000, 1, 1000.0, gap=1e-5)  # one probe from each of 1000 sources, none timed out yet
    det.process(b, np.full(len(b), -1, np.int16))
    assert len(det.pending) == 100 and det.counters["pending_evictions"] == 900
    assert det.counters["scanners"] == 0
