"""What the detector tests share: a capture through a `DetectorSet` batch by batch, and a pcap
of crafted packets written in time order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scapy.all import wrpcap

from ids_daemon.capture.batch import PacketBatch
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import DetectorsConfig
from ids_daemon.detectors import DetectorSet


def run_with(ds: DetectorSet, path: Path, batch_size: int = 65536) -> tuple[PacketBatch, np.ndarray, list]:
    """The capture's frames, the class each was flagged with (-1: none) and the findings."""
    batches, classes, findings = [], [], []
    with PcapSource(path, batch_size=batch_size) as src:
        while (b := src.next_batch()) is not None:
            r = ds.process(b)
            assert r.frame_class.dtype == np.int16 and r.frame_class.shape == (len(b),)
            batches.append(b)
            classes.append(r.frame_class)
            findings += r.findings
    return PacketBatch.concat(batches), np.concatenate(classes), findings


def run(path: Path, cfg: DetectorsConfig | None = None, batch_size: int = 65536) -> tuple[PacketBatch, np.ndarray, list]:
    """`run_with` a fresh `DetectorSet` of ``cfg``."""
    return run_with(DetectorSet(cfg), path, batch_size)


def write_sorted(tmp_path: Path, name: str, pkts: list) -> Path:
    """The packets (their ``time`` set) as a pcap, in time order."""
    path = tmp_path / name
    wrpcap(str(path), sorted(pkts, key=lambda p: p.time))
    return path
