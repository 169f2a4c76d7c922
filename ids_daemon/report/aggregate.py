"""What a report shows, aggregated while the predictions are read: one pass, bounded
memory (a day of predictions is millions of lines and none of them is kept).

- `TimeBins`: flagged packets per family over packet time, in bins whose width grows
  with the span seen (so their number stays bounded while reading);
- `HostTally`: flagged packets, predictions and families per host (attacked: the host a
  window is about, ``flow.dst_ip``; attacking: ``flow.src_ip``);
- `Aggregate`: those, the counts by severity and family, the detectors' findings and the
  run's totals (time spans, sensors, models).

A prediction is *flagged* as the alerting consumer counts it: ``is_attack`` and a family
that is not Benign. A *detector finding* is a prediction of a protocol detector
(``flow.kind`` "detector", ``model.name`` "detector:NAME"), not of the model.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ..predictions.decode import Prediction
from ..predictions.vocabulary import SEVERITIES

# Bin widths in seconds, each a whole multiple of the one before, so bins of one width
# merge exactly into bins of a later one (edges are multiples of the width since the
# epoch). Past the last, widths double.
BIN_WIDTHS: tuple[float, ...] = (0.001, 0.002, 0.01, 0.02, 0.1, 0.2, 1, 2, 10, 20, 60, 120, 600, 1200, 3600, 7200,
                                 21600, 43200, 86400, 604800)


def bin_width(level: int) -> float:
    """The width of bins at ``level`` (an index into `BIN_WIDTHS`, then doublings)."""
    if level < len(BIN_WIDTHS):
        return BIN_WIDTHS[level]
    return BIN_WIDTHS[-1] * 2 ** (level - len(BIN_WIDTHS) + 1)


class TimeBins:
    """Packets per family in time bins. A window's packets are spread over the bins its
    span [first_ts, last_ts] overlaps, in proportion to the overlap (a detector's finding
    covers a whole flood). When the span seen would need more than ``max_bins`` bins the
    width steps up and the bins merge; `chart` picks the width the page draws with."""

    def __init__(self, max_bins: int = 4096) -> None:
        self.max_bins = max_bins
        self.level = 0
        self.bins: dict[int, dict[str, float]] = {}  # bin index (start = index * width) -> family -> packets
        self.lo = math.inf
        self.hi = -math.inf

    @property
    def width(self) -> float:
        return bin_width(self.level)

    def add(self, first: float, last: float, family: str, packets: float) -> None:
        """Count ``packets`` of ``family`` seen between ``first`` and ``last`` (packet time)."""
        if last < first:
            first, last = last, first
        self.extend(first, last)
        w = self.width
        a, b = math.floor(first / w), math.floor(last / w)
        if a == b:
            self._put(a, family, packets)
            return
        per_s = packets / (last - first)
        for i in range(a, b + 1):
            overlap = min(last, (i + 1) * w) - max(first, i * w)
            if overlap > 0:
                self._put(i, family, per_s * overlap)

    def extend(self, first: float, last: float) -> None:
        """Widen the span the chart covers to [first, last] (a window with nothing flagged:
        the chart then shows the whole input's time, quiet stretches too)."""
        self.lo, self.hi = min(self.lo, first, last), max(self.hi, first, last)
        while self._span_bins(self.level) > self.max_bins:
            self._merge(self.level + 1)

    def chart(self, target: int = 100) -> tuple[float, list[tuple[float, dict[str, float]]]]:
        """The bins to draw: the narrowest width that covers the span in at most ``target``
        bins, and every bin of the span (empty ones too) as (start, packets by family);
        none when nothing was counted. Leaves this object as it was."""
        if not self.bins:
            return self.width, []
        level = self.level
        while self._span_bins(level) > target:
            level += 1
        merged = self._merged(level)
        w = bin_width(level)
        first, last = math.floor(self.lo / w), math.floor(self.hi / w)
        return w, [(i * w, merged.get(i, {})) for i in range(first, last + 1)]

    def _span_bins(self, level: int) -> int:
        w = bin_width(level)
        return math.floor(self.hi / w) - math.floor(self.lo / w) + 1

    def _put(self, i: int, family: str, packets: float) -> None:
        fams = self.bins.setdefault(i, {})
        fams[family] = fams.get(family, 0.0) + packets

    def _merged(self, level: int) -> dict[int, dict[str, float]]:
        """The bins at the coarser ``level`` (each of its widths is a whole multiple of ours)."""
        factor = round(bin_width(level) / self.width)
        merged: dict[int, dict[str, float]] = {}
        for i, fams in self.bins.items():
            into = merged.setdefault(i // factor, {})
            for fam, n in fams.items():
                into[fam] = into.get(fam, 0.0) + n
        return merged

    def _merge(self, level: int) -> None:
        self.bins, self.level = self._merged(level), level


@dataclass
class HostRow:
    """One host's flagged traffic."""

    packets: int = 0
    predictions: int = 0
    families: Counter = field(default_factory=Counter)  # family -> packets


class HostTally:
    """Flagged packets per host. At most ``max_hosts`` hosts are kept: past that the half
    with the fewest packets is dropped (counted in ``pruned`` and said on the page), so a
    spoofed-source flood cannot grow memory without bound; the top rows stay exact unless
    a host that was dropped came back."""

    def __init__(self, max_hosts: int = 200_000) -> None:
        self.max_hosts = max_hosts
        self.rows: dict[str, HostRow] = {}
        self.pruned = 0  # hosts dropped to stay under max_hosts

    def add(self, host: str, family: str, packets: int) -> None:
        row = self.rows.get(host)
        if row is None:
            if len(self.rows) >= self.max_hosts:
                self._prune()
            row = self.rows[host] = HostRow()
        row.packets += packets
        row.predictions += 1
        row.families[family] += packets

    def top(self, n: int) -> list[tuple[str, HostRow]]:
        """The ``n`` hosts with the most flagged packets (then predictions, then address)."""
        return sorted(self.rows.items(), key=lambda kv: (-kv[1].packets, -kv[1].predictions, kv[0]))[:n]

    def _prune(self) -> None:
        keep = self.top(self.max_hosts // 2)
        self.pruned += len(self.rows) - len(keep)
        self.rows = dict(keep)


@dataclass
class Finding:
    """One detector finding, as the page lists it."""

    first_ts: float
    last_ts: float
    detector: str
    attack: str
    family: str
    severity: str
    src: str | None
    dst: str | None
    packets: int
    evidence: str
    sensor: str


def is_flagged(p: Prediction) -> bool:
    """Flagged as the alerting consumer counts it: an attack, and not of a Benign family."""
    return p.is_attack and not p.family.lower().startswith("benign")


def is_detector(p: Prediction) -> bool:
    """A protocol detector's finding (not the model's prediction)."""
    return p.flow.kind == "detector" or p.model_name.startswith("detector:")


class Aggregate:
    """Everything the report shows, from predictions fed one at a time to `add`.
    Memory is bounded by the caps (bins, hosts, findings listed), not by the input."""

    def __init__(self, max_bins: int = 4096, max_hosts: int = 200_000, max_findings: int = 500,
                 max_names: int = 20) -> None:
        self.bins = TimeBins(max_bins)
        self.attacked = HostTally(max_hosts)
        self.attacking = HostTally(max_hosts)
        self.max_findings = max_findings
        self.max_names = max_names
        self.predictions = 0
        self.flagged = 0
        self.flagged_packets = 0
        self.packets = 0  # in every prediction's window, flagged or not
        self.severity_all: Counter = Counter()
        self.severity_flagged: Counter = Counter()
        self.family_predictions: Counter = Counter()  # flagged
        self.family_packets: Counter = Counter()  # flagged
        self.classes: Counter = Counter()  # flagged predictions per predicted class
        self.detector_findings = 0
        self.detector_counts: Counter = Counter()  # (detector, class) -> findings
        self.detector_packets: Counter = Counter()  # (detector, class) -> packets
        self.findings: list[Finding] = []  # the first max_findings, in input order
        self.packet_lo = math.inf  # packet time span of the windows (first_ts .. last_ts)
        self.packet_hi = -math.inf
        self.time_lo = math.inf  # when the predictions were made (their `time`)
        self.time_hi = -math.inf
        self.sensors: Counter = Counter()  # up to max_names distinct; the rest in other_sensors
        self.models: Counter = Counter()  # "name version"
        self.other_names = 0  # predictions of sensors or models past max_names distinct

    def add(self, p: Prediction) -> None:
        """Count one prediction."""
        self.predictions += 1
        w = p.window
        self.packets += w.packets
        self.severity_all[p.severity] += 1
        self.packet_lo, self.packet_hi = min(self.packet_lo, w.first_ts), max(self.packet_hi, w.last_ts)
        self.time_lo, self.time_hi = min(self.time_lo, p.time), max(self.time_hi, p.time)
        self.bins.extend(w.first_ts, w.last_ts)
        self._name(self.sensors, p.sensor)
        detector = is_detector(p)
        self._name(self.models, p.model_name if detector else f"{p.model_name} {p.model_version}")
        if detector:
            self._finding(p)
        if not is_flagged(p):
            return
        self.flagged += 1
        self.flagged_packets += w.packets
        self.severity_flagged[p.severity] += 1
        self.family_predictions[p.family] += 1
        self.family_packets[p.family] += w.packets
        self.classes[p.predicted_attack] += 1
        self.bins.add(w.first_ts, w.last_ts, p.family, w.packets)
        if p.flow.dst_ip:
            self.attacked.add(p.flow.dst_ip, p.family, w.packets)
        if p.flow.src_ip:
            self.attacking.add(p.flow.src_ip, p.family, w.packets)

    def severities(self) -> list[tuple[str, int, int]]:
        """(severity, predictions, flagged), in rank order."""
        return [(s, self.severity_all[s], self.severity_flagged[s]) for s in SEVERITIES]

    def _name(self, counter: Counter, name: str) -> None:
        if name in counter or len(counter) < self.max_names:
            counter[name] += 1
        else:
            self.other_names += 1

    def _finding(self, p: Prediction) -> None:
        self.detector_findings += 1
        name = p.model_name.removeprefix("detector:")
        self.detector_counts[(name, p.predicted_attack)] += 1
        self.detector_packets[(name, p.predicted_attack)] += p.window.packets
        if len(self.findings) < self.max_findings:
            self.findings.append(Finding(p.window.first_ts, p.window.last_ts, name, p.predicted_attack, p.family,
                                         p.severity, p.flow.src_ip, p.flow.dst_ip, p.window.packets,
                                         p.evidence or "", p.sensor))
