"""Alerts from the prediction stream: thresholds, de-duplication, a global rate limit and
outputs (stdout, JSON lines, syslog RFC 5424, webhook, Suricata EVE).

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
the rate limit expire on that clock. One record cannot run the clock ahead: the decoder
rejects a time more than a day ahead of this host's clock, and the engine moves its clock
at most ``max_clock_ahead_s`` past this host's clock (the prediction still alerts, stamped
with the engine clock; ``stats.clock_ahead`` counts such records, and the first is
logged). While predictions are quiet the driver
(`run_alerts`) moves the clock on by the real time elapsed since the last prediction
(`AlertEngine.flush(now)` every ``tick_s``), so the last window of a flood that stopped
is reported about ``dedupe_window_s`` later, not when the next prediction arrives.

Alerts are ``ids.alert.v1`` JSON objects (orjson), see `Alert`.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Iterable

from ...predictions.decode import Prediction
from ...predictions.vocabulary import SEVERITIES, SEVERITY_RANK
from .alert import Alert, AlertStats, _Acc, _Group
from .config import AlertConfig
from .outputs import AlertOutput, _quiet, build_outputs

log = logging.getLogger("ids_daemon.consumers.alerts")

RATE_WINDOW_S = 60.0

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
        t = self._believable(p.time)
        if t > self.clock:
            self._advance(t, out)
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
            g = _Group(key=key, window_end=self.clock + self.window, pending=_Acc(self.config.examples))
            g.pending.add(p)
            g.total = 1
            self._groups[key] = g
            self._push(g)
            self._report(g, self.clock, out)
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
            now = self._believable(float(now), record=False)
            if now > self.clock:
                self._advance(now, out)
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

    def _believable(self, t: float, record: bool = True) -> float:
        """``t``, or this host's clock + max_clock_ahead_s when it is further ahead: the
        engine clock never runs ahead of the real world on the word of one record.
        Records that were capped are counted (``record``; the driver's ticks are not)."""
        now = time.time()
        cap = now + self.config.max_clock_ahead_s
        if t <= cap:
            return t
        if record:
            self.stats.clock_ahead += 1
            if self.stats.clock_ahead == 1:
                log.warning("alerts: a prediction is stamped %.6g s ahead of this host's clock; the engine clock "
                            "moves at most %.0f s ahead (sensor clock skew?)", t - now, self.config.max_clock_ahead_s)
        return cap

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
            prediction=acc.first, packets_first=acc.pkt_first, packets_last=acc.pkt_last,
            max_p_attack=acc.max_p_attack,
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
            targets=list(h.targets), packets_first=h.pkt_first, packets_last=h.pkt_last,
            max_p_attack=h.max_p_attack,
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
                if not last or engine.clock > last[0]:
                    last[:] = [engine.clock, time.monotonic()]
    finally:
        done.set()
        ticker.join(cfg.tick_s + 1.0)
        with lock:
            engine.close()
        log.info("alerts: %s", engine.stats.summary().replace("\n", "; "))
    return engine.stats
