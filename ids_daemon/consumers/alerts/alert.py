"""An alert (``ids.alert.v1``) and the counts the engine and its outputs keep."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from ...predictions.decode import Prediction
from ...predictions.vocabulary import SEVERITY_RANK

ALERT_SCHEMA = "ids.alert.v1"
MAX_SUMMARY_TARGETS = 100

# ---------------------------------------------------------------------------------------
# alerts


@dataclass(slots=True)
class Alert:
    """One alert, ``ids.alert.v1``.

    kind: ``new`` (the first prediction of a (target, family) incident), ``update`` (the
    predictions of one dedupe window that were suppressed) or ``summary`` (alerts held
    back by the rate limit). ``count`` is the predictions the alert covers; ``suppressed``
    those of them that were de-duplicated (0 for new); ``rate_limited`` the alerts a
    summary stands for. ``time`` is engine (prediction) time when the alert was made.
    """

    id: str
    kind: str
    time: float
    sensor: str
    target: str | None
    key: str
    incident: str | None
    family: str
    attack: str
    attacks: dict[str, int]
    severity: str
    max_risk: float
    first_seen: float
    last_seen: float
    count: int
    suppressed: int
    rate_limited: int
    examples: list[str]
    flow_key: str | None
    targets: list[str]
    schema: str = ALERT_SCHEMA
    # What outputs that speak other formats (EVE) need, never part of ids.alert.v1: the
    # alert's first prediction (None for a rate-limit summary), the packet times its
    # predictions span (window.first_ts .. window.last_ts) and their highest p_attack.
    prediction: Prediction | None = field(default=None, repr=False, compare=False)
    packets_first: float | None = field(default=None, repr=False, compare=False)
    packets_last: float | None = field(default=None, repr=False, compare=False)
    max_p_attack: float | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = {}
        for f in fields(self):
            if f.name in _NOT_SERIALISED:
                continue
            v = getattr(self, f.name)
            d[f.name] = v.copy() if isinstance(v, (list, dict)) else v
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


_NOT_SERIALISED = frozenset({"prediction", "packets_first", "packets_last", "max_p_attack"})


class _Acc:
    """What a set of predictions (or of held-back alerts) adds up to."""

    __slots__ = ("count", "suppressed", "first_seen", "last_seen", "max_risk", "sev", "attacks", "families",
                 "examples", "sensor", "flow_key", "targets", "alerts", "n_examples", "first", "pkt_first", "pkt_last",
                 "max_p_attack")

    def __init__(self, n_examples: int):
        self.n_examples = n_examples
        self.count = 0
        self.suppressed = 0
        self.alerts = 0
        self.first_seen = float("inf")
        self.last_seen = float("-inf")
        self.max_risk = 0.0
        self.sev = 0
        self.attacks: Counter[str] = Counter()
        self.families: Counter[str] = Counter()
        self.examples: list[str] = []
        self.sensor = ""
        self.flow_key: str | None = None
        self.targets: dict[str, None] = {}
        self.first: Prediction | None = None
        self.pkt_first: float | None = None
        self.pkt_last: float | None = None
        self.max_p_attack: float | None = None

    def _span(self, first: float | None, last: float | None, p_attack: float | None) -> None:
        if first is not None and (self.pkt_first is None or first < self.pkt_first):
            self.pkt_first = first
        if last is not None and (self.pkt_last is None or last > self.pkt_last):
            self.pkt_last = last
        if p_attack is not None and (self.max_p_attack is None or p_attack > self.max_p_attack):
            self.max_p_attack = p_attack

    def add(self, p: Prediction) -> None:
        t = p.time
        if not self.count:
            self.sensor = p.sensor
            self.flow_key = p.flow.key
            self.first = p
        self._span(p.window.first_ts, p.window.last_ts, p.p_attack)
        self.count += 1
        if t < self.first_seen:
            self.first_seen = t
        if t > self.last_seen:
            self.last_seen = t
        if p.risk_score > self.max_risk:
            self.max_risk = p.risk_score
        r = SEVERITY_RANK[p.severity]
        if r > self.sev:
            self.sev = r
        self.attacks[p.predicted_attack] += 1
        if len(self.examples) < self.n_examples:
            self.examples.append(p.id)

    def merge(self, a: Alert) -> None:
        """Fold in an alert that the rate limit held back."""
        if not self.alerts:
            self.sensor = a.sensor
            self.flow_key = a.flow_key
        self.alerts += 1
        self._span(a.packets_first, a.packets_last, a.max_p_attack)
        self.count += a.count
        self.suppressed += a.suppressed
        self.first_seen = min(self.first_seen, a.first_seen)
        self.last_seen = max(self.last_seen, a.last_seen)
        self.max_risk = max(self.max_risk, a.max_risk)
        self.sev = max(self.sev, SEVERITY_RANK[a.severity])
        self.attacks.update(a.attacks)
        self.families[a.family] += a.count
        for e in a.examples:
            if len(self.examples) >= self.n_examples:
                break
            self.examples.append(e)
        if a.target is not None and len(self.targets) < MAX_SUMMARY_TARGETS:
            self.targets[a.target] = None


@dataclass(slots=True, eq=False)
class _Group:
    """One open (target, family) incident and its current dedupe window."""

    key: tuple[str, str]
    window_end: float
    pending: _Acc
    incident: str | None = None  # id of its first emitted alert
    total: int = 0


@dataclass
class OutputStats:
    """What an output did with the alerts it was given."""

    sent: int = 0
    failed: int = 0
    retries: int = 0


@dataclass
class AlertStats:
    """The engine's counters. Once closed, sum(alert.count) == alertable."""

    predictions: int = 0  # handed to process()
    benign: int = 0  # not attacks: never alert
    filtered_family: int = 0  # family/class not in `families`
    below_severity: int = 0
    below_risk: int = 0
    duplicates: int = 0  # prediction ids seen before (redelivery)
    alertable: int = 0  # passed every filter: each is covered by exactly one alert
    alerts: int = 0  # emitted, every kind
    new: int = 0
    updates: int = 0
    summaries: int = 0
    suppressed: int = 0  # predictions de-duplicated into an update
    rate_limited: int = 0  # alerts held back by the rate limit and folded into a summary
    evicted: int = 0  # windows closed early because max_open was reached
    open: int = 0  # windows open now
    clock_ahead: int = 0  # predictions stamped further ahead of this host's clock than max_clock_ahead_s
    outputs: dict[str, OutputStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """What the engine did, for people (the end of ``ids-daemon alerts``): three lines
        - what was read and why it did or did not alert, the alerts, the outputs. Counts
        follow their labels ("new: 1"), so no noun has to agree with a number."""
        skipped = [("benign", self.benign), ("other families", self.filtered_family),
                   ("below min_severity", self.below_severity), ("below min_risk", self.below_risk),
                   ("redelivered duplicates", self.duplicates), ("stamped in the future", self.clock_ahead)]
        why = ", ".join(f"{what}: {n:,}" for what, n in skipped if n)
        read = f"predictions read: {self.predictions:,}, alertable: {self.alertable:,}" + (f" ({why})" if why else "")
        alerts = (f"alerts: {self.alerts:,} (new: {self.new:,}, updates: {self.updates:,}, rate-limit summaries: "
                  f"{self.summaries:,}); predictions folded into updates: {self.suppressed:,}; alerts held back by "
                  f"the rate limit: {self.rate_limited:,}"
                  + (f"; incidents closed early (max_open): {self.evicted:,}" if self.evicted else ""))
        outs = "; ".join(f"{name} sent {o.sent:,}, failed {o.failed:,}" + (f", retries {o.retries:,}" if o.retries else "")
                         for name, o in self.outputs.items()) or "none"
        return f"{read}\n{alerts}\noutputs: {outs}"

