"""Deterministic protocol-fact detectors beside the LSTM (ARP spoofing, DNS spoofing, scans,
web attacks, dictionary brute force, remote shells, floods, slow HTTP, reflection, OS fingerprinting).

`DetectorSet(cfg).process(batch)` runs every enabled detector on one `PacketBatch`
(batches in capture order) and returns a `DetectorResult`: ``frame_class[i]`` is the
index in `DETECTOR_CLASSES` of the class a detector flagged frame ``i`` with, or -1,
and ``findings`` the facts established in this batch. The daemon publishes the
findings as predictions (`publish.encode_findings`); the trainer can use
``frame_class`` offline to see which packets a detector flagged. See docs/detectors.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..capture.batch import PacketBatch
from ..config import DetectorsConfig
from .arp import ArpDetector
from .base import CLASS_INDEX, DETECTOR_CLASSES, Detector, Finding
from .bruteforce import BruteForceDetector
from .dns import DnsDetector
from .flood import FloodDetector
from .osscan import OsScanDetector
from .reflection import ReflectionDetector
from .scan import ScanDetector
from .shell import ShellDetector
from .slowhttp import SlowHttpDetector
from .volume import VolumeDetector
from .web import WebDetector

__all__ = ["DETECTOR_CLASSES", "CLASS_INDEX", "Detector", "DetectorResult", "DetectorSet", "Finding"]


@dataclass
class DetectorResult:
    frame_class: np.ndarray  # (n,) int16: -1, or an index into DETECTOR_CLASSES
    findings: list[Finding] = field(default_factory=list)

    def flagged(self) -> int:
        return int(np.count_nonzero(self.frame_class >= 0))


class DetectorSet:
    """All enabled detectors, run in a fixed order (ARP, DNS, OS fingerprinting, scans, web, brute
    force, remote shells, floods, ...) on each batch; the first detector to flag a frame gives it its class."""

    def __init__(self, cfg: DetectorsConfig | None = None):
        self.cfg = cfg or DetectorsConfig()
        self.detectors: list[Detector] = []
        if self.cfg.enabled:
            if self.cfg.arp.enabled:
                self.detectors.append(ArpDetector(self.cfg.arp))
            if self.cfg.dns.enabled:
                self.detectors.append(DnsDetector(self.cfg.dns))
            if self.cfg.osscan.enabled:  # before the scan detector: a fingerprinting run's TCP probes are its
                self.detectors.append(OsScanDetector(self.cfg.osscan))
            if self.cfg.scan.enabled:
                self.detectors.append(ScanDetector(self.cfg.scan))
            if self.cfg.web.enabled:
                self.detectors.append(WebDetector(self.cfg.web))
            if self.cfg.bruteforce.enabled:
                self.detectors.append(BruteForceDetector(self.cfg.bruteforce))
            if self.cfg.shell.enabled:  # after brute force: a loader's password guessing stays what it is
                self.detectors.append(ShellDetector(self.cfg.shell))
            if self.cfg.flood.enabled:
                self.detectors.append(FloodDetector(self.cfg.flood))
            if self.cfg.slowhttp.enabled:
                self.detectors.append(SlowHttpDetector(self.cfg.slowhttp))
            if self.cfg.reflection.enabled:
                self.detectors.append(ReflectionDetector(self.cfg.reflection))
            if self.cfg.volume.enabled:  # last: a crowd, a scan or a reflection names its packets first
                self.detectors.append(VolumeDetector(self.cfg.volume))
            # a datagram of a flood the crowd-flood detector holds (its count of the batch run first) is neither a
            # scan probe nor a reflection query (docs/detectors.md, Scans: "Datagrams of a held flood")
            floods = next((d for d in self.detectors if isinstance(d, FloodDetector)), None)
            for d in self.detectors:
                if isinstance(d, (ScanDetector, ReflectionDetector)):
                    d.floods = floods

    def process(self, batch: PacketBatch) -> DetectorResult:
        verdict = np.full(len(batch), -1, dtype=np.int16)
        findings: list[Finding] = []
        if len(batch):
            for d in self.detectors:
                findings.extend(d.process(batch, verdict))
        return DetectorResult(frame_class=verdict, findings=findings)

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        return {d.name: dict(d.counters) for d in self.detectors}
