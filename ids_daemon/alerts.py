"""Alerts from the prediction stream: thresholds, de-duplication, a global rate limit and
outputs (stdout, JSON lines, syslog RFC 5424, webhook).

How predictions become alerts
-----------------------------

A prediction can alert when it is an attack (Benign never alerts: ``is_attack`` false or
a family named Benign*), its family or class is in ``families`` (None: all), its severity
is at least ``min_severity`` and its risk at least ``min_risk``. Predictions whose id was
already seen (at-least-once redelivery) are dropped first.

Alertable predictions are grouped by **(target, family)**: the target is the host the
window is about (``flow.host``, the responder / pooled host) or, when a prediction has
none, its flow key; the family is the predicted CICIoT2023 family (DDoS, DoS, Mirai,
Recon, Spoofing, Web, BruteForce, or the class itself for other label sets). So a flood
of many classes of one family against one host is one incident, and a *different* family
on the same host is a different incident that alerts at once.

- The first prediction of a group opens a **dedupe window** of ``dedupe_window_s`` and
  emits a ``new`` alert (count 1).
- Further predictions of the group inside the window are **suppressed**: counted, with
  their first/last time, highest risk and severity, classes and a few example ids.
- When the window ends and it suppressed predictions, one ``update`` alert summarises
  them (count = suppressed = the predictions of that window) and the next window starts
  right away, so a flood that goes on gives one update per window. A window that ends
  without suppressed predictions closes the incident silently; the group's next
  prediction is ``new`` again.
- ``flush()`` (end of input) and ``close()`` close every open window the same way, so a
  window's suppressed predictions are always reported.

Example: ``dedupe_window_s`` 600 and a flood on one host from t0 to t0 + 30 min -
``new`` at t0, ``update`` at t0 + 600 and t0 + 1200, and the last ``update`` at flush:
four alerts whose counts add up to the flood's predictions.

Every alertable prediction is covered by exactly one emitted alert: the sum of ``count``
over all alerts equals ``stats.alertable`` once the engine is closed.

**Rate limit**: at most ``rate_limit_per_min`` alerts (new and update) in any 60 s of
engine time. An alert beyond that is not emitted but folded into a ``summary`` alert
(``key`` "rate_limited", ``rate_limited`` = alerts folded, ``count`` = predictions they
covered, ``targets`` = their targets, up to 100) that goes out 60 s after the first
folded alert, or at flush - at most one summary a minute, and summaries are not
themselves limited. An incident whose ``new`` alert was folded stays open (its later
predictions are still de-duplicated), and its next emitted alert is of kind ``new``.

Time
----

Engine time is **prediction time** (``Prediction.time``, when the daemon classified the
sequence: its wall clock, increasing per sensor), never the alerting host's clock, so the
same stream always gives the same alerts (tests are deterministic) and a backlog read
from Kafka is judged by when things happened, not when it was read. The engine clock is
the highest prediction time seen (a late prediction does not move it back). Windows and
the rate limit expire on that clock. While predictions are quiet the driver
(`run_alerts`) moves the clock on by the real time elapsed since the last prediction
(`AlertEngine.flush(now)` every ``tick_s``), so the last window of a flood that stopped
is reported about ``dedupe_window_s`` later, not when the next prediction arrives.

Alerts are ``ids.alert.v1`` JSON objects (orjson), see `Alert`.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, BinaryIO, Iterable, Literal, Protocol, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError
from .records import SEVERITY_RANK, Prediction

log = logging.getLogger("ids_daemon.alerts")

ALERT_SCHEMA = "ids.alert.v1"
SEVERITIES = ("low", "medium", "high", "critical")
RATE_WINDOW_S = 60.0
MAX_SUMMARY_TARGETS = 100

# ---------------------------------------------------------------------------------------
# configuration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StdoutOutputConfig(_Model):
    """One JSON alert per line on standard output."""

    type: Literal["stdout"] = "stdout"


class JsonlOutputConfig(_Model):
    """One JSON alert per line, appended to a file."""

    type: Literal["jsonl"] = "jsonl"
    path: str = Field(..., min_length=1, description="file the alerts are appended to")


SYSLOG_FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "audit": 13, "console": 14, "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
# alert severity -> RFC 5424 severity code
SYSLOG_SEVERITY: dict[str, int] = {"critical": 2, "high": 3, "medium": 4, "low": 5}


class SyslogOutputConfig(_Model):
    """RFC 5424 messages to a syslog receiver over UDP (RFC 5426) or TCP (RFC 6587 octet counting)."""

    type: Literal["syslog"] = "syslog"
    host: str = Field("127.0.0.1", description="syslog receiver host")
    port: int = Field(514, ge=1, le=65535, description="syslog receiver port")
    protocol: Literal["udp", "tcp"] = Field("udp", description="udp: one datagram per alert; tcp: octet-counting framing")
    app_name: str = Field("ids-daemon", min_length=1, max_length=48, description="APP-NAME field")
    facility: Union[int, str] = Field("local0", description="facility name (local0..local7, auth, daemon, ...) or code 0-23")
    hostname: str | None = Field(None, description="HOSTNAME field (default: the alert's sensor name)")
    msg_format: Literal["text", "json"] = Field("text", description="MSG: a readable sentence or the alert's JSON")
    timeout_s: float = Field(2.0, gt=0, description="TCP connect/send timeout")
    retry_interval_s: float = Field(5.0, ge=0, description="after a failed TCP connect, alerts fail at once for this long")

    @field_validator("facility")
    @classmethod
    def _facility(cls, v: int | str) -> int | str:
        facility_code(v)
        return v


def facility_code(v: int | str) -> int:
    """The numeric facility of a name or number; ValueError when unknown."""
    if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
        code = int(v)
        if not 0 <= code <= 23:
            raise ValueError(f"syslog facility {code} outside 0-23")
        return code
    try:
        return SYSLOG_FACILITIES[str(v).lower()]
    except KeyError:
        raise ValueError(f"unknown syslog facility {v!r} (one of {', '.join(SYSLOG_FACILITIES)} or 0-23)") from None


class WebhookOutputConfig(_Model):
    """HTTP POST of each alert's JSON, from a background thread (never blocks the engine)."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(..., description="http(s) URL the alerts are POSTed to")
    timeout_s: float = Field(2.0, gt=0, description="per-request timeout")
    retries: int = Field(3, ge=0, le=20, description="further attempts after a failed one (5xx, 408, 429, network errors)")
    backoff_s: float = Field(0.5, ge=0, description="wait before the first retry, doubled for each next one")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (e.g. Authorization)")
    queue_size: int = Field(1000, ge=1, description="alerts waiting for delivery; beyond it they are counted as failed")
    close_timeout_s: float = Field(10.0, ge=0, description="at close, wait this long for queued alerts (the rest fail, counted)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urllib.parse.urlsplit(v)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"not an http(s) URL: {_redact(v)!r}")
        return v


OutputConfig = Annotated[
    Union[StdoutOutputConfig, JsonlOutputConfig, SyslogOutputConfig, WebhookOutputConfig],
    Field(discriminator="type"),
]


class AlertConfig(_Model):
    """Alerting on the prediction stream (``ids-daemon alerts``); see ids_daemon/alerts.py."""

    min_severity: Literal["low", "medium", "high", "critical"] = Field(
        "high", description="lowest prediction severity that alerts")
    min_risk: float = Field(0.0, ge=0, le=1, description="lowest risk score that alerts")
    families: list[str] | None = Field(
        None, description="attack families (or classes) that alert, case-insensitive; null: all. Benign never alerts")
    dedupe_window_s: float = Field(
        600.0, gt=0, description="one alert per (target host, family) per window; the window's other "
        "predictions are counted and reported in one update alert when it ends")
    rate_limit_per_min: int = Field(
        60, ge=0, description="at most this many alerts in any 60 s (0: no limit); the excess is counted "
        "and reported in a summary alert, never dropped")
    max_open: int = Field(
        100_000, ge=1, description="open (target, family) windows kept; beyond it the oldest is closed early")
    examples: int = Field(3, ge=0, le=100, description="prediction ids quoted in each alert")
    duplicate_ids: int = Field(
        65536, ge=0, description="recent prediction ids remembered to drop redelivered duplicates (0: off)")
    tick_s: float = Field(1.0, gt=0, description="how often the driver closes windows that ended while predictions are quiet")
    outputs: list[OutputConfig] = Field(
        default_factory=lambda: [StdoutOutputConfig()],
        description="where alerts go: stdout | jsonl (path) | syslog (host, port, protocol, ...) | webhook (url, ...)")


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class _Acc:
    """What a set of predictions (or of held-back alerts) adds up to."""

    __slots__ = ("count", "suppressed", "first_seen", "last_seen", "max_risk", "sev", "attacks", "families",
                 "examples", "sensor", "flow_key", "targets", "alerts", "n_examples")

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

    def add(self, p: Prediction) -> None:
        t = p.time
        if not self.count:
            self.sensor = p.sensor
            self.flow_key = p.flow.key
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
    outputs: dict[str, OutputStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------
# the engine


class AlertEngine:
    """Predictions in, alerts out (returned and sent to every output).

    ``outputs``: objects with open/send/flush/close and ``stats``; None builds them from
    ``config.outputs``. They are opened here and closed by `close`. Not thread-safe: one
    caller at a time (`run_alerts` holds a lock).
    """

    def __init__(self, config: AlertConfig | None = None, outputs: list["AlertOutput"] | None = None,
                 id_prefix: str | None = None):
        self.config = cfg = config or AlertConfig()
        self.outputs: list[AlertOutput] = build_outputs(cfg.outputs) if outputs is None else list(outputs)
        self.stats = AlertStats()
        self.window = float(cfg.dedupe_window_s)
        self.min_sev = SEVERITY_RANK[cfg.min_severity]
        self.min_risk = float(cfg.min_risk)
        self.families = None if cfg.families is None else {f.lower() for f in cfg.families}
        self.id_prefix = id_prefix or f"alert-{uuid.uuid4().hex[:12]}"
        self._seq = 0
        self.clock = float("-inf")
        self._groups: dict[tuple[str, str], _Group] = {}
        self._heap: list[tuple[float, int, _Group]] = []
        self._heap_seq = 0
        self._sent_times: deque[float] = deque()  # emission times within the last RATE_WINDOW_S
        self._held: _Acc | None = None  # alerts held back by the rate limit
        self._held_due = 0.0
        self._seen_ids: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._closed = False
        self.stats.outputs = {getattr(o, "name", str(i)): o.stats for i, o in enumerate(self.outputs)}
        opened: list[AlertOutput] = []
        try:
            for o in self.outputs:
                o.open()
                opened.append(o)
        except BaseException:
            for o in opened:
                _quiet(o.close)
            raise

    # -- the stream --------------------------------------------------------------------

    def process(self, p: Prediction) -> list[Alert]:
        """Take one prediction; returns the alerts it caused (windows it closed, and a new one)."""
        st = self.stats
        st.predictions += 1
        if not p.is_attack or p.family.lower().startswith("benign"):
            st.benign += 1
            return []
        if self.families is not None and p.family.lower() not in self.families \
                and p.predicted_attack.lower() not in self.families:
            st.filtered_family += 1
            return []
        if SEVERITY_RANK[p.severity] < self.min_sev:
            st.below_severity += 1
            return []
        if p.risk_score < self.min_risk:
            st.below_risk += 1
            return []
        if self.config.duplicate_ids:
            if p.id in self._seen_ids:
                st.duplicates += 1
                return []
            self._seen_ids.add(p.id)
            self._seen_order.append(p.id)
            if len(self._seen_order) > self.config.duplicate_ids:
                self._seen_ids.discard(self._seen_order.popleft())
        st.alertable += 1
        out: list[Alert] = []
        if p.time > self.clock:
            self._advance(p.time, out)
        target = p.flow.host or p.flow.key
        key = (target, p.family)
        g = self._groups.get(key)
        if g is not None:
            g.pending.add(p)
            g.pending.suppressed += 1
            g.total += 1
            st.suppressed += 1
        else:
            if len(self._groups) >= self.config.max_open:
                self._evict_one(out)
            g = _Group(key=key, window_end=max(self.clock, p.time) + self.window, pending=_Acc(self.config.examples))
            g.pending.add(p)
            g.total = 1
            self._groups[key] = g
            self._push(g)
            self._report(g, max(self.clock, p.time), out)
        st.open = len(self._groups)
        self._send(out)
        return out

    def flush(self, now: float | None = None) -> list[Alert]:
        """With ``now``: move the clock on to ``now`` (never back) and close the windows that
        ended by then - the driver's tick while predictions are quiet. Without: close every
        open window and emit the pending rate-limit summary (end of input), then flush the
        outputs."""
        out: list[Alert] = []
        if now is not None:
            if now > self.clock:
                self._advance(float(now), out)
        else:
            t = self.clock if self.clock != float("-inf") else time.time()
            for g in sorted(self._groups.values(), key=lambda g: g.window_end):
                if g.pending.count:
                    self._report(g, t, out)
            self._groups.clear()
            self._heap.clear()
            if self._held is not None:
                out.append(self._summary(t))
        self.stats.open = len(self._groups)
        self._send(out)
        if now is None:
            for o in self.outputs:
                _quiet(o.flush)
        return out

    def close(self) -> list[Alert]:
        """Close every window (`flush`), then the outputs. Idempotent."""
        if self._closed:
            return []
        out = self.flush()
        self._closed = True
        for o in self.outputs:
            _quiet(o.close)
        self._collect_output_stats()
        return out

    def __enter__(self) -> "AlertEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def open_windows(self) -> int:
        return len(self._groups)

    # -- internals ---------------------------------------------------------------------

    def _push(self, g: _Group) -> None:
        self._heap_seq += 1
        heapq.heappush(self._heap, (g.window_end, self._heap_seq, g))

    def _advance(self, t: float, out: list[Alert]) -> None:
        """Clock to ``t``: windows ending by then report (and roll over) or close."""
        self.clock = t
        heap, groups = self._heap, self._groups
        while True:
            end = heap[0][0] if heap else float("inf")
            if self._held is not None and self._held_due <= t and self._held_due <= end:
                out.append(self._summary(self._held_due))  # in time order with the windows
                continue
            if end > t:
                break
            end, _, g = heapq.heappop(heap)
            if groups.get(g.key) is not g or g.window_end != end:
                continue  # stale entry
            if g.pending.count:
                self._report(g, end, out)
                g.window_end = end + self.window
                self._push(g)
            else:
                del groups[g.key]

    def _evict_one(self, out: list[Alert]) -> None:
        while self._heap:
            end, _, g = heapq.heappop(self._heap)
            if self._groups.get(g.key) is not g or g.window_end != end:
                continue
            if g.pending.count:
                self._report(g, self.clock, out)
            del self._groups[g.key]
            self.stats.evicted += 1
            return

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self.id_prefix}-{self._seq}"

    def _report(self, g: _Group, t: float, out: list[Alert]) -> None:
        """Turn the group's pending predictions into an alert (emitted or held back)."""
        acc = g.pending
        kind = "new" if g.incident is None else "update"
        aid = self._next_id()
        target, family = g.key
        a = Alert(
            id=aid, kind=kind, time=t, sensor=acc.sensor, target=target, key=f"{target}|{family}",
            incident=g.incident or aid, family=family, attack=acc.attacks.most_common(1)[0][0],
            attacks=dict(acc.attacks), severity=SEVERITIES[acc.sev], max_risk=acc.max_risk,
            first_seen=acc.first_seen, last_seen=acc.last_seen, count=acc.count, suppressed=acc.suppressed,
            rate_limited=0, examples=list(acc.examples), flow_key=acc.flow_key, targets=[target],
        )
        g.pending = _Acc(self.config.examples)
        if self._allow(t):
            if g.incident is None:
                g.incident = aid
            self._count(a)
            out.append(a)
        else:
            self.stats.rate_limited += 1
            if self._held is None:
                self._held = _Acc(self.config.examples)
                self._held_due = t + RATE_WINDOW_S
            self._held.merge(a)

    def _allow(self, t: float) -> bool:
        cap = self.config.rate_limit_per_min
        if not cap:
            return True
        q = self._sent_times
        while q and q[0] <= t - RATE_WINDOW_S:
            q.popleft()
        if len(q) >= cap:
            return False
        q.append(t)
        return True

    def _summary(self, t: float) -> Alert:
        h = self._held
        assert h is not None
        self._held = None
        aid = self._next_id()
        fam = h.families.most_common(1)[0][0] if len(h.families) == 1 else "*"
        a = Alert(
            id=aid, kind="summary", time=t, sensor=h.sensor, target=None, key="rate_limited", incident=None,
            family=fam, attack=h.attacks.most_common(1)[0][0], attacks=dict(h.attacks), severity=SEVERITIES[h.sev],
            max_risk=h.max_risk, first_seen=h.first_seen, last_seen=h.last_seen, count=h.count,
            suppressed=h.suppressed, rate_limited=h.alerts, examples=list(h.examples), flow_key=h.flow_key,
            targets=list(h.targets),
        )
        log.warning("alerts: rate limit (%d a minute) held back %d alerts covering %d predictions; one summary sent",
                    self.config.rate_limit_per_min, h.alerts, h.count)
        self._count(a)
        return a

    def _count(self, a: Alert) -> None:
        st = self.stats
        st.alerts += 1
        if a.kind == "new":
            st.new += 1
        elif a.kind == "update":
            st.updates += 1
        else:
            st.summaries += 1

    def _send(self, alerts: list[Alert]) -> None:
        for a in alerts:
            for o in self.outputs:
                try:
                    o.send(a)
                except Exception as e:  # noqa: BLE001 - an output never stops the engine
                    o.stats.failed += 1
                    log.warning("alert output %s failed: %s", getattr(o, "name", o), e)

    def _collect_output_stats(self) -> None:
        self.stats.outputs = {getattr(o, "name", str(i)): o.stats for i, o in enumerate(self.outputs)}


def _quiet(fn: Any) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        log.warning("alert output: %s", e)


# ---------------------------------------------------------------------------------------
# outputs


class AlertOutput(Protocol):
    """Where alerts go. ``send`` never raises for delivery problems: they are counted."""

    name: str
    stats: OutputStats

    def open(self) -> None: ...

    def send(self, alert: Alert) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class StdoutOutput:
    """One JSON line per alert on standard output (flushed at once)."""

    def __init__(self, stream: BinaryIO | None = None):
        self.name = "stdout"
        self.stats = OutputStats()
        self._given = stream
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        self._fh = self._given if self._given is not None else sys.stdout.buffer

    def send(self, alert: Alert) -> None:
        if self._fh is None:
            self.open()
        try:
            self._fh.write(alert.to_json() + b"\n")  # type: ignore[union-attr]
            self._fh.flush()  # type: ignore[union-attr]
            self.stats.sent += 1
        except (OSError, ValueError) as e:
            self.stats.failed += 1
            log.warning("alert output stdout: %s", e)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            _quiet(self._fh.flush)
        self._fh = None


class JsonlOutput:
    """One JSON line per alert appended to a file (flushed after each alert)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.name = f"jsonl:{self.path}"
        self.stats = OutputStats()
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        try:
            self._fh = open(self.path, "ab")
        except OSError as e:
            raise ConfigError(f"alerts output {self.path}: cannot open: {e.strerror}") from None

    def send(self, alert: Alert) -> None:
        if self._fh is None:
            self.stats.failed += 1
            return
        try:
            self._fh.write(alert.to_json() + b"\n")
            self._fh.flush()
            self.stats.sent += 1
        except OSError as e:
            self.stats.failed += 1
            log.warning("alert output %s: %s", self.path, e)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            _quiet(self._fh.close)
        self._fh = None


_SD_ESCAPE = re.compile(r'(["\\\]])')


def _sd_escape(v: str) -> str:
    """An SD-PARAM value: '"', '\\' and ']' escaped with a backslash (RFC 5424 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", v)


def _header_field(s: str | None, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without space, or NILVALUE."""
    s = "".join(c for c in (s or "") if 33 <= ord(c) <= 126)[:limit]
    return s or "-"


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _alert_text(a: Alert) -> str:
    if a.kind == "summary":
        return (f"IDS alerts held back by the rate limit: {a.rate_limited} alerts, {a.count} predictions, "
                f"{len(a.targets)} targets, severity up to {a.severity}, max risk {a.max_risk:.2f}")
    attack = a.attack if a.attack != a.family else ""
    return (f"IDS alert {a.kind}: {a.family}{f' ({attack})' if attack else ''} on {a.target}, "
            f"severity {a.severity}, max risk {a.max_risk:.2f}, {a.count} prediction(s), {a.suppressed} suppressed")


def format_rfc5424(alert: Alert, *, facility: int = 16, app_name: str = "ids-daemon", hostname: str | None = None,
                   procid: str | None = None, msg_format: str = "text", sd_id: str = "ids@32473") -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`` for one alert.

    PRI = facility * 8 + severity (critical 2, high 3, medium 4, low 5). MSGID is
    ``alert.<kind>``. The structured data element ``ids@32473`` (the enterprise number
    reserved for documentation, RFC 5612) carries the alert's main fields. MSG is a
    sentence or the alert's JSON; non-ASCII text starts with a BOM as RFC 5424 asks.
    """
    pri = facility * 8 + SYSLOG_SEVERITY[alert.severity]
    host = _header_field(hostname or alert.sensor, 255)
    params = {
        "id": alert.id, "kind": alert.kind, "target": alert.target or "-", "family": alert.family,
        "attack": alert.attack, "severity": alert.severity, "max_risk": f"{alert.max_risk:.4f}",
        "count": str(alert.count), "suppressed": str(alert.suppressed), "rate_limited": str(alert.rate_limited),
        "incident": alert.incident or "-",
    }
    sd = "[" + sd_id + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    msg = alert.to_json().decode() if msg_format == "json" else _alert_text(alert)
    head = (f"<{pri}>1 {_rfc3339(alert.time)} {host} {_header_field(app_name, 48)} "
            f"{_header_field(procid if procid is not None else str(os.getpid()), 128)} "
            f"{_header_field('alert.' + alert.kind, 32)} {sd} ")
    body = msg.encode("utf-8")
    if not msg.isascii():
        body = b"\xef\xbb\xbf" + body
    return head.encode("utf-8") + body


class SyslogOutput:
    """RFC 5424 alerts to a syslog receiver: one UDP datagram each, or TCP with RFC 6587
    octet-counting framing (``LEN SP MSG``), reconnecting after a failure."""

    MAX_UDP = 65000

    def __init__(self, host: str = "127.0.0.1", port: int = 514, protocol: str = "udp", app_name: str = "ids-daemon",
                 facility: int | str = "local0", hostname: str | None = None, msg_format: str = "text",
                 timeout_s: float = 2.0, retry_interval_s: float = 5.0):
        if protocol not in ("udp", "tcp"):
            raise ValueError("protocol must be udp or tcp")
        self.host, self.port, self.protocol = host, int(port), protocol
        self.app_name, self.facility = app_name, facility_code(facility)
        self.hostname, self.msg_format = hostname, msg_format
        self.timeout_s, self.retry_interval_s = timeout_s, retry_interval_s
        self.name = f"syslog:{protocol}://{host}:{port}"
        self.stats = OutputStats()
        self._sock: socket.socket | None = None
        self._addr: Any = None
        self._down_until = 0.0
        self._procid = str(os.getpid())

    def open(self) -> None:
        if self.protocol == "udp":
            self._resolve()

    def _resolve(self) -> bool:
        try:
            fam, _, _, _, addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
        except OSError as e:
            log.warning("alert output %s: cannot resolve %s: %s", self.name, self.host, e)
            return False
        self._sock = socket.socket(fam, socket.SOCK_DGRAM)
        self._addr = addr
        return True

    def _connect(self) -> None:
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)

    def _drop_conn(self) -> None:
        if self._sock is not None:
            _quiet(self._sock.close)
        self._sock = None

    def send(self, alert: Alert) -> None:
        msg = format_rfc5424(alert, facility=self.facility, app_name=self.app_name, hostname=self.hostname,
                             procid=self._procid, msg_format=self.msg_format)
        if self.protocol == "udp":
            if self._sock is None and not self._resolve():
                self.stats.failed += 1
                return
            try:
                self._sock.sendto(msg[: self.MAX_UDP], self._addr)  # type: ignore[union-attr]
                self.stats.sent += 1
            except OSError as e:
                self.stats.failed += 1
                log.warning("alert output %s: alert %s not sent: %s", self.name, alert.id, e)
            return
        frame = str(len(msg)).encode() + b" " + msg
        for attempt in range(2):  # a broken connection is reopened once
            if self._sock is None:
                if time.monotonic() < self._down_until:
                    self.stats.failed += 1
                    return
                try:
                    self._connect()
                except OSError as e:
                    self._down_until = time.monotonic() + self.retry_interval_s
                    self.stats.failed += 1
                    log.warning("alert output %s: cannot connect (%s); alert %s not sent", self.name, e, alert.id)
                    return
            try:
                self._sock.sendall(frame)  # type: ignore[union-attr]
                self.stats.sent += 1
                return
            except OSError as e:
                self._drop_conn()
                if attempt:
                    self.stats.failed += 1
                    log.warning("alert output %s: alert %s not sent: %s", self.name, alert.id, e)
                else:
                    self.stats.retries += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._drop_conn()


def _redact(url: str) -> str:
    """scheme://host[:port] only: webhook URLs often carry a secret in the path or query."""
    try:
        u = urllib.parse.urlsplit(url)
        return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}"
    except ValueError:
        return "<url>"


class _Permanent(Exception):
    """An HTTP answer that retrying will not change (4xx other than 408 and 429)."""


class WebhookOutput:
    """POST each alert's JSON to a URL from a background thread: a timeout per request,
    ``retries`` more attempts with exponential backoff on network errors, timeouts, 5xx,
    408 and 429, then one logged line and a counted failure. ``send`` only queues, so a
    slow or dead endpoint never holds up the engine; a full queue counts as a failure."""

    def __init__(self, url: str, timeout_s: float = 2.0, retries: int = 3, backoff_s: float = 0.5,
                 headers: dict[str, str] | None = None, queue_size: int = 1000, close_timeout_s: float = 10.0):
        self.url = url
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.headers = {"Content-Type": "application/json", "User-Agent": "ids-daemon-alerts/1",
                        **(headers or {})}
        self.queue_size, self.close_timeout_s = int(queue_size), float(close_timeout_s)
        self.name = f"webhook:{_redact(url)}"
        self.stats = OutputStats()
        self._q: queue.Queue[Alert | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        if self._thread is None:
            self._abort.clear()
            self._thread = threading.Thread(target=self._run, name="alerts-webhook", daemon=True)
            self._thread.start()

    def send(self, alert: Alert) -> None:
        if self._thread is None:
            self.open()
        with self._cond:
            if self._pending >= self.queue_size:
                self.stats.failed += 1
                full = True
            else:
                self._pending += 1
                full = False
        if full:
            log.warning("alert output %s: queue full (%d); alert %s not sent", self.name, self.queue_size, alert.id)
            return
        self._q.put(alert)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was delivered or failed (at most ``timeout``,
        default close_timeout_s); True when the queue drained."""
        limit = self.close_timeout_s if timeout is None else timeout
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, limit)

    def close(self) -> None:
        if self._thread is None:
            return
        if not self.flush():
            log.warning("alert output %s: %d alerts still queued after %.1f s; counted as failed",
                        self.name, self._pending, self.close_timeout_s)
        self._abort.set()
        self._q.put(None)
        self._thread.join(self.timeout_s + 1.0)
        self._thread = None
        # whatever the thread did not take is lost: count it
        while True:
            try:
                a = self._q.get_nowait()
            except queue.Empty:
                break
            if a is not None:
                self._done(ok=False)

    def _done(self, ok: bool) -> None:
        with self._cond:
            if ok:
                self.stats.sent += 1
            else:
                self.stats.failed += 1
            self._pending -= 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            a = self._q.get()
            if a is None:
                return
            if self._abort.is_set():
                self._done(ok=False)
                continue
            self._done(ok=self._deliver(a))

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - http(s) checked in config
                resp.read()
        except urllib.error.HTTPError as e:
            e.close()
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise _Permanent(f"HTTP {e.code} {e.reason}") from None
            raise

    def _deliver(self, a: Alert) -> bool:
        body = a.to_json()
        err: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                with self._cond:
                    self.stats.retries += 1
                if self._abort.wait(self.backoff_s * (2 ** (attempt - 1))):
                    break
            try:
                self._post(body)
                return True
            except _Permanent as e:
                err = e
                break
            except (OSError, ValueError) as e:  # URLError, timeouts, connection errors, bad answers
                err = e
            except Exception as e:  # noqa: BLE001 - http.client oddities must not kill the thread
                err = e
        reason = getattr(err, "reason", None) or err
        log.warning("alert output %s: alert %s not delivered after %d attempt(s): %s",
                    self.name, a.id, attempt + 1, reason)
        return False


def build_outputs(configs: Iterable[Any]) -> list[AlertOutput]:
    """Output objects for ``AlertConfig.outputs`` entries (not opened yet)."""
    outs: list[AlertOutput] = []
    for c in configs:
        if isinstance(c, StdoutOutputConfig):
            outs.append(StdoutOutput())
        elif isinstance(c, JsonlOutputConfig):
            outs.append(JsonlOutput(c.path))
        elif isinstance(c, SyslogOutputConfig):
            outs.append(SyslogOutput(c.host, c.port, c.protocol, c.app_name, c.facility, c.hostname, c.msg_format,
                                     c.timeout_s, c.retry_interval_s))
        elif isinstance(c, WebhookOutputConfig):
            outs.append(WebhookOutput(c.url, c.timeout_s, c.retries, c.backoff_s, dict(c.headers), c.queue_size,
                                      c.close_timeout_s))
        else:
            raise ConfigError(f"unknown alert output {c!r}")
    return outs


# ---------------------------------------------------------------------------------------
# the driver


def run_alerts(predictions: Iterable[Prediction | None], config: AlertConfig | None = None,
               outputs: list[AlertOutput] | None = None, stop: threading.Event | None = None) -> AlertStats:
    """Feed ``predictions`` (e.g. a PredictionSubscriber; a None item is just an idle poll)
    through an `AlertEngine` until the iterable ends or ``stop`` is set, then close every
    window and the outputs. Returns the engine's stats (outputs included).

    A ticker thread closes windows while predictions are quiet: every ``tick_s`` it moves
    the engine clock to the last prediction's time plus the real time elapsed since it
    arrived (never the local wall clock, so a sensor's clock skew does not matter).
    """
    cfg = config or AlertConfig()
    engine = AlertEngine(cfg, outputs)
    lock = threading.Lock()
    last: list[float] = []  # [prediction time, monotonic time it arrived]
    done = threading.Event()

    def tick() -> None:
        while not done.wait(cfg.tick_s):
            with lock:
                if last and not engine._closed:
                    engine.flush(last[0] + (time.monotonic() - last[1]))

    ticker = threading.Thread(target=tick, name="alerts-tick", daemon=True)
    ticker.start()
    try:
        for p in predictions:
            if stop is not None and stop.is_set():
                break
            if p is None:
                continue
            with lock:
                engine.process(p)
                if not last or p.time >= last[0]:
                    last[:] = [p.time, time.monotonic()]
    finally:
        done.set()
        ticker.join(cfg.tick_s + 1.0)
        with lock:
            engine.close()
        st = engine.stats
        log.info("alerts: %d predictions, %d alertable, %d alerts (%d new, %d updates, %d summaries), "
                 "%d suppressed, %d rate-limited; outputs: %s", st.predictions, st.alertable, st.alerts, st.new,
                 st.updates, st.summaries, st.suppressed, st.rate_limited,
                 ", ".join(f"{n} sent {s.sent} failed {s.failed}" for n, s in st.outputs.items()) or "none")
    return engine.stats
