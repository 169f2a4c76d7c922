"""The skeleton every detector copies: `Detector.process(batch, verdict) -> list[Finding]`.

A detector looks at one `PacketBatch` (numpy columns, in capture order), writes the
index of its class into ``verdict`` for the frames it flags (``verdict`` is shared by
all detectors; -1 means nobody flagged the frame) and returns the findings that are
new in this batch. Its per-host state lives in bounded `LRU` tables whose evictions
are counted, so a flood of spoofed sources cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..capture.batch import PacketBatch
from ..model.classes import FAMILY_OF

# Classes the detectors can report (index = value in DetectorResult.frame_class).
DETECTOR_CLASSES: tuple[str, ...] = (
    "MITM-ArpSpoofing", "DNS_Spoofing", "Recon-PortScan", "Recon-PingSweep", "Recon-HostDiscovery",
)
CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(DETECTOR_CLASSES)}


@dataclass
class Finding:
    """One protocol fact a detector established (one prediction once published)."""

    detector: str  # "arp", "dns", "scan"
    cls: str  # a CICIoT2023 class name (one of DETECTOR_CLASSES)
    first_ts: float
    last_ts: float
    packets: int  # frames of this finding flagged in the batch that reported it
    attacker: str  # IP or MAC of the party the evidence points at
    victim: str | None
    protocol: str  # "arp", "udp", "tcp", "icmp"
    evidence: str
    suppressed: int = 0  # repeats folded into this one by the publisher's rate limit

    @property
    def family(self) -> str:
        return FAMILY_OF.get(self.cls, self.cls)


class Detector(Protocol):
    """What `DetectorSet` runs on each batch."""

    name: str
    counters: dict[str, int]

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]: ...


class LRU(OrderedDict):
    """A dict with a hard cap: inserting beyond it evicts the least recently touched
    entry and counts it in ``counters[counter]``."""

    def __init__(self, cap: int, counters: dict[str, int], counter: str):
        super().__init__()
        self.cap = cap
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    def touch(self, key: Any, value: Any) -> None:
        if key in self:
            self.move_to_end(key)
        self[key] = value
        while len(self) > self.cap:
            self.popitem(last=False)
            self.counters[self.counter] += 1

    def get_touch(self, key: Any, default: Any = None) -> Any:
        v = self.get(key, default)
        if key in self:
            self.move_to_end(key)
        return v


def mark(verdict: np.ndarray, mask: np.ndarray, cls: str) -> int:
    """Flag the frames of ``mask`` not yet flagged by an earlier detector; returns how
    many frames ``mask`` holds."""
    verdict[mask & (verdict < 0)] = CLASS_INDEX[cls]
    return int(np.count_nonzero(mask))


def first_ts(batch: PacketBatch, mask: np.ndarray) -> tuple[float, float]:
    ts = batch.ts[mask]
    return (float(ts.min()), float(ts.max())) if ts.size else (0.0, 0.0)

