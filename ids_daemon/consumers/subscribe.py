"""The client RL agents (and ``ids-daemon subscribe``) use to read predictions from Kafka.

    from ids_daemon.consumers.subscribe import PredictionSubscriber

    with PredictionSubscriber(bootstrap="kafka:9092", topic="ids.predictions", group_id="agent-1",
                              min_severity="high") as sub:
        for p in sub:                      # typed, validated ids_daemon.predictions.Prediction
            act(p)
            sub.commit()                   # or commit every N records / seconds

Delivery
--------
* Records come from a consumer group (``group_id``: the group's members split the
  topic's partitions; each prediction goes to one member) or, with ``group_id=None``,
  from all partitions of the topic by manual assignment (once the topic exists;
  partitions added later are read after a restart), without commits.
* What the caller gets: :class:`~ids_daemon.predictions.Prediction` records, parsed and
  checked, with ``topic``/``partition``/``offset`` set. One flow's predictions share
  a record key, hence a partition, hence arrive in order.
* Commits cover only records already handed to the caller: :meth:`commit` commits,
  for each assigned partition, the offset after the last record handed out (records
  skipped by the filters or as malformed count as handed: the caller never needs
  them). Records fetched but not yet handed (the rest of a batch the iterator is
  walking through) are never committed. ``auto_commit=True`` commits the same way
  every ``auto_commit_interval_ms`` and at :meth:`close`; librdkafka's own
  auto-commit is off because it commits what was *fetched*.
* Rebalances: when the group takes partitions away from this member, the handed-out
  records of those partitions are committed first (``commit_on_rebalance=True``):
  the member only loses partitions inside a poll, that is after the caller asked
  for more records, so it is done with the ones it has. Records buffered but not
  handed out for those partitions are dropped; the new owner reads them. A member
  evicted from the group (``on_partitions_lost``) cannot commit: what it handed out
  since its last commit is delivered again to the new owner (at-least-once; dedupe
  on ``Prediction.id``).
* :meth:`close` leaves the group cleanly (the others take over its partitions at
  once); it commits only when ``auto_commit`` is on.

Where reading starts (``start``)
--------------------------------
* ``"committed"`` (default): the group's committed offset; a partition the group
  never committed starts at the beginning (``auto_offset_reset='earliest'``, which
  ``consumer_config`` may override with ``auto.offset.reset``).
* ``"earliest"``: the beginning of every partition. With a group this is done with a
  rebalance listener: the first time *this instance* is assigned a partition it seeks
  to the beginning; a partition that comes back to it in a later rebalance resumes at
  the group's committed offset (so a rebalance does not replay history). Members of
  one group started together with ``"earliest"`` may each replay the head of a
  partition handed over during their first joins; use ``"committed"`` for a group that
  shares its progress and ``"earliest"`` to replay history.
* a time (``float`` epoch seconds, a ``datetime`` — naive means local time — or, for
  the command line, see :func:`parse_start`): for each partition (first assignment to
  this instance, as above), the first record whose Kafka timestamp is >= that time,
  and everything after it, found with one ``offsets_for_times`` request per
  assignment (a partition with no record that recent starts at its end). Where the
  broker lacks it (the request fails), or with ``use_offsets_for_times=False``: seek
  to the beginning and skip the older records client-side (counted in
  ``stats.before_start``), which costs about as much as reading the topic.

Bad messages never stop the stream
----------------------------------
* A message of another major schema version (``ids.prediction.v2`` ...) is skipped,
  counted in ``stats.unknown_schema``, and logged once per major version (logger
  ``ids_daemon.consumers.subscribe``).
* A malformed message (not JSON, missing or mistyped fields, an empty value) is
  skipped, counted in ``stats.malformed`` and logged (the first few, then at most one
  line a minute).
* With ``dead_letter_topic`` set, both are produced to that topic: the raw key and
  value, the original headers, plus ``dlq.reason`` (``malformed`` | ``unknown_schema``),
  ``dlq.error`` (the error text), ``dlq.topic``, ``dlq.partition``, ``dlq.offset`` and
  ``dlq.timestamp``. :meth:`commit` waits (``dead_letter_flush_s``) for the dead-letter
  sends before committing past them; failures are counted in
  ``stats.dead_letter_failed`` and logged, never raised.

Joining a group
---------------
librdkafka joins and rebalances in its own thread; rebalance callbacks run inside the
caller's poll. The subscriber logs "joining group X" when it subscribes and "assigned
N partitions" (info level) when the group hands it partitions: a fresh group's first
join takes the broker's initial rebalance delay (Kafka:
``group.initial.rebalance.delay.ms``, 3 s by default; tansu: about half the session
timeout). ``consumer_config`` takes librdkafka consumer properties
(``session.timeout.ms`` ...); TLS and SASL come from ``security``
(``ids_daemon.config.KafkaSecurity``, the settings the daemon's producer uses).

Threads
-------
A subscriber is used by one thread (the iterator or :meth:`poll`). :meth:`close` may be
called from another thread: it waits for the poll in progress (at most
``poll_timeout_ms``) and closes; the iterator then ends. From a signal handler call
:meth:`stop` (it only sets a flag): the iterator ends after the poll in progress and
the owner closes.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, Iterable, Iterator, NamedTuple

import orjson

from ..errors import ConfigError
from ..predictions.decode import MalformedPrediction, Prediction, UnknownSchema
from ..predictions.vocabulary import SEVERITY_RANK

log = logging.getLogger("ids_daemon.consumers.subscribe")

_MALFORMED_LOG_FIRST = 5
_MALFORMED_LOG_EVERY_S = 60.0
# settings this class owns: passing them in consumer_config would break its guarantees
_OWNED_SETTINGS = {
    "bootstrap.servers": "bootstrap",
    "group.id": "group_id",
    "enable.auto.commit": "auto_commit (the subscriber commits only what it handed out)",
    "enable.auto.offset.store": "auto_commit (the subscriber commits only what it handed out)",
    "on_commit": "nothing",
    "security.protocol": "security (the shared kafka.security settings)",
}


class SubscribeError(ConfigError):
    """The subscriber is configured with a value it cannot use, or cannot reach Kafka."""


@dataclass
class SubscriberStats:
    """What the subscriber did with the records it read (counters only grow).

    ``received == delivered + filtered + malformed + unknown_schema + before_start``."""

    received: int = 0  # records taken from Kafka and examined
    delivered: int = 0  # predictions handed to the caller
    filtered: int = 0  # valid predictions the filters rejected
    malformed: int = 0  # not a valid prediction (bad JSON, missing/mistyped field, empty value)
    unknown_schema: int = 0  # a prediction of a major schema version this client does not read
    before_start: int = 0  # skipped because older than a timestamp start
    dead_lettered: int = 0  # acknowledged by the dead-letter topic
    dead_letter_failed: int = 0  # could not be produced to the dead-letter topic
    commits: int = 0  # successful offset commits
    commit_failures: int = 0
    rebalances: int = 0  # partition assignments received from the group


class Message(NamedTuple):
    """A prediction with the Kafka record it came from (``value`` is the JSON exactly as
    published)."""

    prediction: Prediction | None  # None with check="schema" (the record was not decoded)
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp: int | None  # the record's timestamp, epoch milliseconds


@dataclass(frozen=True)
class PredictionFilter:
    """Client-side filters; ``None`` / empty means "any"."""

    min_severity: str | None = None
    min_risk: float | None = None
    families: frozenset[str] | None = None
    sensors: frozenset[str] | None = None
    attacks_only: bool = False

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITY_RANK:
            raise SubscribeError(
                f"min_severity {self.min_severity!r} is not one of {', '.join(SEVERITY_RANK)}"
            )
        if self.min_risk is not None:
            try:
                r = float(self.min_risk)
            except (TypeError, ValueError):
                raise SubscribeError(f"min_risk must be a number in [0, 1], got {self.min_risk!r}") from None
            if not 0.0 <= r <= 1.0 or math.isnan(r):
                raise SubscribeError(f"min_risk must be in [0, 1], got {self.min_risk!r}")
            object.__setattr__(self, "min_risk", r)
        object.__setattr__(self, "families", _str_set(self.families, "families"))
        object.__setattr__(self, "sensors", _str_set(self.sensors, "sensors"))
        object.__setattr__(self, "_rank", None if self.min_severity is None else SEVERITY_RANK[self.min_severity])

    @property
    def active(self) -> bool:
        return bool(self.min_severity or self.min_risk is not None or self.families or self.sensors
                    or self.attacks_only)

    def accepts(self, p: Prediction) -> bool:
        if self.attacks_only and not p.is_attack:
            return False
        if self._rank is not None and SEVERITY_RANK[p.severity] < self._rank:  # type: ignore[attr-defined]
            return False
        if self.min_risk is not None and p.risk_score < self.min_risk:
            return False
        if self.families and p.family not in self.families:
            return False
        if self.sensors and p.sensor not in self.sensors:
            return False
        return True


def _str_set(v: Any, name: str) -> frozenset[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    try:
        out = frozenset(str(x) for x in v)
    except TypeError:
        raise SubscribeError(f"{name} must be a set of strings, got {v!r}") from None
    return out or None


_RELATIVE_RE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_start(value: Any, now: float | None = None) -> str | float:
    """``start`` as given by a caller or on the command line -> ``"committed"``,
    ``"earliest"`` or epoch seconds (float).

    Accepted: ``committed``; ``earliest`` (or ``beginning``); epoch seconds (``1714550400``,
    ``1714550400.5``); an ISO 8601 time (``2024-05-01T12:00:00Z``; without a zone it is
    local time); a time relative to now (``-30s``, ``-15m``, ``-2h``, ``-1d``); a
    ``datetime``. Raises :class:`SubscribeError`."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool):
        raise SubscribeError(f"start must be 'committed', 'earliest' or a time, got {value!r}")
    if isinstance(value, (int, float)):
        t = float(value)
    elif isinstance(value, str):
        s = value.strip()
        low = s.lower()
        if low in ("committed", "earliest"):
            return low
        if low in ("beginning", "begin"):
            return "earliest"
        m = _RELATIVE_RE.match(low)
        if m:
            return (time.time() if now is None else now) - float(m.group(1)) * _UNIT_S[m.group(2)]
        try:
            t = float(s)
        except ValueError:
            iso = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
            try:
                return datetime.fromisoformat(iso).timestamp()
            except ValueError:
                raise SubscribeError(
                    f"start {value!r} is not 'committed', 'earliest', epoch seconds, an ISO 8601 time "
                    "(2024-05-01T12:00:00Z) or a relative time (-15m, -2h, -1d)"
                ) from None
    else:
        raise SubscribeError(f"start must be 'committed', 'earliest' or a time, got {value!r}")
    if math.isnan(t) or math.isinf(t) or t < 0:
        raise SubscribeError(f"start time must be non-negative epoch seconds, got {value!r}")
    if t > 1e11:
        raise SubscribeError(f"start time {value!r} looks like milliseconds: give epoch seconds")
    return t


def _check_schema_only(value: bytes) -> None:
    """``check="schema"``: a JSON object whose ``schema`` is ids.prediction.v1[.x], nothing
    more (about 6x faster than the typed decoder); raises like the decoder."""
    try:
        d = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise MalformedPrediction(f"not JSON: {e}") from None
    schema = d.get("schema") if isinstance(d, dict) else None
    if isinstance(schema, str) and schema.startswith(_V1) and schema[len(_V1):len(_V1) + 1] in ("", "."):
        return None
    # not an object, no schema, another major version: the decoder's own error
    Prediction.from_dict({"schema": schema} if isinstance(d, dict) else d)
    raise MalformedPrediction(f"unreadable schema version {schema!r}")


_V1 = "ids.prediction.v1"


def _ck():
    import confluent_kafka  # noqa: F401 - imported lazily: the daemon runs without a subscriber

    return confluent_kafka


class PredictionSubscriber:
    """Typed predictions from a Kafka topic: see the module docstring."""

    def __init__(
        self,
        bootstrap: str | list[str],
        topic: str = "ids.predictions",
        group_id: str | None = None,
        start: Any = "committed",
        auto_commit: bool = False,
        min_severity: str | None = None,
        min_risk: float | None = None,
        families: Iterable[str] | None = None,
        sensors: Iterable[str] | None = None,
        attacks_only: bool = False,
        poll_timeout_ms: int = 1000,
        max_records: int = 500,
        dead_letter_topic: str | None = None,
        consumer_config: dict | None = None,
        *,
        security: Any = None,
        check: str = "full",
        use_offsets_for_times: bool = True,
        auto_commit_interval_ms: int = 5000,
        commit_on_rebalance: bool = True,
        dead_letter_flush_s: float = 10.0,
        connect_timeout_s: float = 30.0,
        client_id: str = "ids-subscriber",
    ):
        from ..broker import BrokerConfigError, check_topic, parse_bootstrap

        try:
            self.servers = parse_bootstrap(bootstrap)
            check_topic(topic, "topic")
            if dead_letter_topic is not None:
                check_topic(dead_letter_topic, "dead_letter_topic")
        except BrokerConfigError as e:
            raise SubscribeError(str(e)) from None
        self.bootstrap = ",".join(self.servers)
        if dead_letter_topic is not None and dead_letter_topic == topic:
            raise SubscribeError("dead_letter_topic must differ from topic (poison would loop)")
        if group_id is not None and (not isinstance(group_id, str) or not group_id.strip()):
            raise SubscribeError(f"group_id must be a non-empty string or None, got {group_id!r}")
        for name, v in (("poll_timeout_ms", poll_timeout_ms), ("max_records", max_records),
                        ("auto_commit_interval_ms", auto_commit_interval_ms)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise SubscribeError(f"{name} must be a positive integer, got {v!r}")
        if check not in ("full", "schema"):
            raise SubscribeError(f"check must be 'full' or 'schema', got {check!r}")
        self.topic = topic
        self.group_id = group_id
        self.check = check
        self.start = parse_start(start)
        self.start_ms = None if isinstance(self.start, str) else int(math.ceil(self.start * 1000))
        self.auto_commit = bool(auto_commit) and group_id is not None
        self.filter = PredictionFilter(min_severity, min_risk, families, sensors, bool(attacks_only))
        if check == "schema" and self.filter.active:
            raise SubscribeError("filters need the typed prediction: use check='full'")
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        self.dead_letter_topic = dead_letter_topic
        self.use_offsets_for_times = bool(use_offsets_for_times)
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000.0
        self.commit_on_rebalance = bool(commit_on_rebalance)
        self.dead_letter_flush_s = float(dead_letter_flush_s)
        self.security = security
        self.stats = SubscriberStats()

        user_cfg = dict(consumer_config or {})
        for k, instead in _OWNED_SETTINGS.items():
            if k in user_cfg:
                raise SubscribeError(f"consumer_config must not set {k!r}: use {instead}")
        for k in user_cfg:
            if "." not in k:
                raise SubscribeError(f"consumer_config key {k!r} is not a librdkafka property "
                                     "(they read like session.timeout.ms)")
        self._user_cfg = user_cfg

        # state shared by the polling thread and the rebalance callbacks (which run inside its poll)
        self._state_lock = threading.Lock()
        self._buffer: deque = deque()  # fetched, not yet examined
        self._handed: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset
        self._committed: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._started: set[tuple[str, int]] = set()  # partitions this instance positioned per `start`
        self._skip_before: dict[tuple[str, int], int] = {}  # scan fallback: skip records older than this (ms)
        self._seen_majors: set[int] = set()
        self._malformed_logged = 0
        self._malformed_last_log = float("-inf")
        self._errors_logged: set = set()
        self._dlq = None
        self._dlq_lock = threading.Lock()

        # the consumer is used by one thread at a time: the poll in progress holds this
        self._poll_lock = threading.RLock()
        self._poll_owner: int | None = None
        self._stop_requested = False
        self._close_pending = False
        self._closing = False
        self._closed = False
        self._next_auto_commit = time.monotonic() + self.auto_commit_interval_s
        self._next_assign_try = 0.0

        from ..broker import client_config, wait_for_listener

        ck = _ck()
        self._TP = ck.TopicPartition
        # a consumer without a group still needs a group.id in librdkafka: a private one, never joined or committed
        gid = group_id if group_id is not None else f"ids-subscriber-{uuid.uuid4().hex[:12]}"
        cfg = client_config(self.servers, client_id, security, {
            "group.id": gid,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            **user_cfg,
        }, logger="ids_daemon.consumers.librdkafka")
        # a refused port is known in microseconds; librdkafka would retry in the background for ever
        why = wait_for_listener(self.servers, connect_timeout_s)
        if why is not None:
            raise SubscribeError(f"no Kafka broker answers at {self.bootstrap} (waited {connect_timeout_s:g} s: {why})")
        try:
            self._consumer = ck.Consumer(cfg)
        except ck.KafkaException as e:
            raise SubscribeError(f"invalid Kafka consumer setting: {e}") from None
        try:
            if group_id is not None:
                log.info("joining group %s for %s at %s", group_id, topic, self.bootstrap)
                self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                         on_lost=self._on_lost)
            else:
                self._try_assign(initial=True)
        except BaseException:
            self._consumer.close()
            raise

    # ------------------------------------------------------------------ public API
    def __enter__(self) -> "PredictionSubscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Prediction]:
        """Predictions one by one, waiting up to ``poll_timeout_ms`` per poll, until
        :meth:`close` or :meth:`stop`."""
        for m in self.messages():
            yield m.prediction

    def messages(self) -> Iterator[Message]:
        """Like iterating the subscriber, with the Kafka record (raw value, key, headers)."""
        while not (self._stop_requested or self._closed):
            rec = self._next_buffered()
            if rec is None:
                self._fetch(self.poll_timeout_ms)
                continue
            msg = self._process(rec)
            if msg is not None:
                yield msg

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Prediction]:
        """The predictions available now, waiting up to ``timeout_ms`` (default
        ``poll_timeout_ms``) for at least one; possibly empty. All returned records count
        as handed out (:meth:`commit` covers them)."""
        return [m.prediction for m in self.poll_messages(timeout_ms, max_records)]

    def poll_messages(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Message]:
        """:meth:`poll` with the Kafka records. At most ``max_records`` (default
        ``max_records``) are handed out; the rest stay buffered for the next call."""
        timeout_ms = self.poll_timeout_ms if timeout_ms is None else int(timeout_ms)
        limit = self.max_records if max_records is None else int(max_records)
        if limit <= 0:
            raise ValueError("max_records must be positive")
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        out: list[Message] = []
        fetched = False
        while not (self._stop_requested or self._closed):
            with self._state_lock:  # a run of records at once: at most what may still be handed out
                buf = self._buffer
                recs = [buf.popleft() for _ in range(min(len(buf), limit - len(out)))]
            if recs:
                process = self._process
                for rec in recs:
                    msg = process(rec)
                    if msg is not None:
                        out.append(msg)
                if len(out) >= limit:
                    break
                continue
            if out:
                break
            left = deadline - time.monotonic()
            if left <= 0 and fetched:
                break
            self._fetch(max(0, int(left * 1000)))  # at least one fetch, even with timeout 0
            fetched = True
        return out

    def commit(self) -> bool:
        """Commit, for each assigned partition, the offset after the last record handed
        out. Returns True when committed (or nothing was new), False when the commit
        failed (logged; those records will be delivered again after a rebalance). A
        subscriber without a group does not commit (returns True)."""
        if self.group_id is None or self._closed:
            return True
        with self._poll_lock:
            if self._closed:
                return True
            self._flush_dead_letters()
            offsets = self._uncommitted()
            if not offsets:
                return True
            return self._commit(offsets, "")

    def stop(self) -> None:
        """Ask the iterator / poll to end after the poll in progress (safe from a signal
        handler and from any thread). Call :meth:`close` afterwards."""
        self._stop_requested = True

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit (only with ``auto_commit``), flush the dead-letter producer, leave the
        group and close. Idempotent; callable from another thread."""
        self._stop_requested = True
        if self._closed:
            return
        if self._poll_owner == threading.get_ident():
            # called from this thread's own poll (a signal handler): finish when it returns
            self._close_pending = True
            return
        with self._poll_lock:
            self._do_close(timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed

    def assignment(self) -> set[tuple[str, int]]:
        """The partitions this subscriber reads now, as ``(topic, partition)`` pairs."""
        with self._state_lock:
            return set(self._assigned)

    # ------------------------------------------------------------------ fetching
    def _next_buffered(self):
        with self._state_lock:
            return self._buffer.popleft() if self._buffer else None

    def _fetch(self, timeout_ms: int) -> None:
        if self.auto_commit and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self.auto_commit_interval_s
            self.commit()
        with self._poll_lock:
            if self._closed or self._stop_requested:
                return
            self._poll_owner = threading.get_ident()
            try:
                if self.group_id is None and not self._assigned:
                    if not self._try_assign():
                        time.sleep(min(timeout_ms, 500) / 1000.0)
                        return
                # rebalance callbacks run inside this call, on this thread
                records = self._consumer.consume(self.max_records, timeout=timeout_ms / 1000.0)
            finally:
                self._poll_owner = None
            if records:
                good = []
                for r in records:
                    err = r.error()
                    if err is None:
                        good.append(r)
                    elif err.code() not in self._errors_logged:
                        self._errors_logged.add(err.code())
                        log.warning("%s: %s (further errors of this kind are not logged)", self.topic, err.str())
                with self._state_lock:
                    self._buffer.extend(r for r in good if (r.topic(), r.partition()) in self._assigned)
            if self._close_pending:
                self._do_close(10.0)

    def _try_assign(self, initial: bool = False) -> bool:
        """Manual assignment (no group): all partitions of the topic, once it exists."""
        now = time.monotonic()
        if not initial and now < self._next_assign_try:
            return False
        self._next_assign_try = now + 1.0
        try:
            md = self._consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
        except Exception as e:  # noqa: BLE001 - the broker is away for now: try again later
            if initial:
                log.warning("cannot read the metadata of %s at %s (%s); retrying", self.topic, self.bootstrap, e)
            return False
        parts = sorted(md.partitions) if md is not None and md.error is None and md.partitions else []
        if not parts:
            if initial:
                log.warning("topic %s has no partitions yet on %s; waiting for it", self.topic, self.bootstrap)
            return False
        tps = self._positioned([self._TP(self.topic, p) for p in parts])
        self._consumer.assign(tps)
        with self._state_lock:
            self._assigned = {(tp.topic, tp.partition) for tp in tps}
        log.info("reading %s: assigned %d partitions %s (no consumer group)", self.topic, len(parts), parts)
        return True

    def _positioned(self, tps: list) -> list:
        """Apply ``start`` to the partitions this instance sees for the first time: their
        start offsets (the others resume at the group's committed offset)."""
        ck = _ck()
        with self._state_lock:
            new = [tp for tp in tps if (tp.topic, tp.partition) not in self._started]
            self._started.update((tp.topic, tp.partition) for tp in new)
        if not new or self.start == "committed":
            # the group's committed offset, else auto.offset.reset (earliest)
            return tps
        if self.start == "earliest":
            for tp in new:
                tp.offset = ck.OFFSET_BEGINNING
            return tps
        found = None
        if self.use_offsets_for_times:
            try:
                found = self._consumer.offsets_for_times(
                    [self._TP(tp.topic, tp.partition, self.start_ms) for tp in new], timeout=10.0)
            except Exception as e:  # noqa: BLE001 - fall back to the portable scan
                log.warning("offsets_for_times failed (%s); scanning %s from the beginning instead", e, self.topic)
        by_tp = {(f.topic, f.partition): f for f in (found or [])}
        for tp in new:
            f = by_tp.get((tp.topic, tp.partition))
            if f is not None and f.error is None:
                tp.offset = f.offset if f.offset >= 0 else ck.OFFSET_END  # -1: nothing that recent yet
            else:
                tp.offset = ck.OFFSET_BEGINNING
                with self._state_lock:
                    self._skip_before[(tp.topic, tp.partition)] = self.start_ms
        return tps

    # ------------------------------------------------------------------ records
    def _process(self, rec: Any) -> Message | None:
        st = self.stats
        st.received += 1
        topic, partition, offset = rec.topic(), rec.partition(), rec.offset()
        tp = (topic, partition)
        ts = rec.timestamp()[1]
        # no lock: the polling thread is the only writer (rebalance callbacks run inside its poll)
        self._handed[tp] = offset + 1
        if self._skip_before:
            skip = self._skip_before.get(tp)
            if skip is not None:
                if 0 <= ts < skip:
                    st.before_start += 1
                    return None
                self._skip_before.pop(tp, None)  # the first record at or after the start time
        value = rec.value()
        try:
            if not value:
                raise MalformedPrediction("empty value")
            p = _check_schema_only(value) if self.check == "schema" else \
                Prediction.from_json(value, topic=topic, partition=partition, offset=offset)
        except UnknownSchema as e:
            st.unknown_schema += 1
            self._log_unknown(value, e)
            self._dead_letter(rec, "unknown_schema", str(e))
            return None
        except Exception as e:  # noqa: BLE001 - MalformedPrediction, or anything odd: never crash the agent
            st.malformed += 1
            text = str(e) if isinstance(e, MalformedPrediction) else f"{type(e).__name__}: {e}"
            self._log_malformed(rec, text)
            self._dead_letter(rec, "malformed", text)
            return None
        if p is not None and not self.filter.accepts(p):
            st.filtered += 1
            return None
        st.delivered += 1
        return Message(p, rec.key(), value, list(rec.headers() or ()), ts if ts >= 0 else None)

    def _log_unknown(self, value: bytes, e: Exception) -> None:
        schema = None
        try:
            schema = orjson.loads(value).get("schema")
            major = int(str(schema).rsplit(".v", 1)[1].split(".")[0])
        except Exception:  # noqa: BLE001
            major = -1
        if major in self._seen_majors:
            return
        self._seen_majors.add(major)
        log.warning(
            "%s: skipping predictions of schema %s (this client reads ids.prediction.v1); "
            "upgrade ids-daemon to read them. Further ones are only counted (stats.unknown_schema)%s",
            self.topic, schema, f", and sent to {self.dead_letter_topic}" if self.dead_letter_topic else "",
        )

    def _log_malformed(self, rec: Any, text: str) -> None:
        self._malformed_logged += 1
        now = time.monotonic()
        if self._malformed_logged <= _MALFORMED_LOG_FIRST or now - self._malformed_last_log >= _MALFORMED_LOG_EVERY_S:
            self._malformed_last_log = now
            log.warning(
                "skipping a malformed message at %s[%d]@%d: %s (%d malformed so far)%s",
                rec.topic(), rec.partition(), rec.offset(), text, self.stats.malformed,
                f"; sent to {self.dead_letter_topic}" if self.dead_letter_topic else "",
            )

    # ------------------------------------------------------------------ dead letters
    def _dead_letter(self, rec: Any, reason: str, error: str) -> None:
        if self.dead_letter_topic is None:
            return
        try:
            if self._dlq is None:
                self._dlq = self._make_dlq_producer()
            headers = [(k, v) for k, v in (rec.headers() or ()) if not k.startswith("dlq.")]
            headers += [
                ("dlq.reason", reason.encode()),
                ("dlq.error", error.encode("utf-8", "replace")[:4096]),
                ("dlq.topic", rec.topic().encode()),
                ("dlq.partition", str(rec.partition()).encode()),
                ("dlq.offset", str(rec.offset()).encode()),
                ("dlq.timestamp", str(rec.timestamp()[1]).encode()),
            ]
            self._dlq.produce(self.dead_letter_topic, rec.value(), rec.key(), headers=headers,
                              on_delivery=self._dlq_result)
            self._dlq.poll(0)
        except Exception as e:  # noqa: BLE001
            self._dlq_result(e, None)

    def _dlq_result(self, err: Any, _msg: Any) -> None:
        with self._dlq_lock:
            if err is None:
                self.stats.dead_lettered += 1
                return
            self.stats.dead_letter_failed += 1
            n = self.stats.dead_letter_failed
        if n <= _MALFORMED_LOG_FIRST or n % 1000 == 0:
            log.warning("could not produce to the dead-letter topic %s: %s (%d failed)", self.dead_letter_topic, err, n)

    def _make_dlq_producer(self):
        from ..broker import client_config

        return _ck().Producer(client_config(self.servers, "ids-subscriber-dlq", self.security,
                                            {"acks": "all", "linger.ms": 5, "enable.idempotence": True},
                                            logger="ids_daemon.consumers.librdkafka"))

    def _flush_dead_letters(self, timeout_s: float | None = None) -> None:
        if self._dlq is None:
            return
        left = self._dlq.flush(self.dead_letter_flush_s if timeout_s is None else timeout_s)
        if left:
            # the sends still pending may fail later: their reports count them
            log.warning("the dead-letter topic %s did not acknowledge %d record(s) in time", self.dead_letter_topic, left)

    # ------------------------------------------------------------------ commits and rebalances
    def _uncommitted(self) -> dict:
        with self._state_lock:
            return {tp: off for tp, off in self._handed.items()
                    if tp in self._assigned and self._committed.get(tp) != off}

    def _commit(self, offsets: dict, when: str) -> bool:
        try:
            self._consumer.commit(offsets=[self._TP(t, p, off) for (t, p), off in offsets.items()],
                                  asynchronous=False)
        except Exception as e:  # noqa: BLE001 - rebalance in progress, coordinator away
            self.stats.commit_failures += 1
            log.warning("offset commit%s failed for %s: %s (those records will be delivered again)",
                        f" {when}" if when else "", sorted((p, off) for (_, p), off in offsets.items()), e)
            return False
        with self._state_lock:
            for tp, off in offsets.items():
                if tp in self._assigned:  # (a partition committed on its way out is forgotten)
                    self._committed[tp] = off
            self.stats.commits += 1
        return True

    def _on_revoke(self, consumer: Any, partitions: list) -> None:
        """Rebalance callback (inside this thread's poll): commit what was handed out of
        the partitions going away, drop what they had buffered."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        if self.commit_on_rebalance and not self._closing and self.group_id is not None:
            offsets = {tp: off for tp, off in self._uncommitted().items() if tp in revoked}
            if offsets:
                self._commit(offsets, "before the rebalance")
        self._forget(revoked)

    def _on_lost(self, consumer: Any, partitions: list) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        if lost and not self._closing:
            log.warning("evicted from group %s: lost partitions %s without committing", self.group_id,
                        sorted(p for _, p in lost))
        self._forget(lost)

    def _forget(self, tps: set) -> None:
        with self._state_lock:
            self._assigned -= tps
            if self._buffer:
                self._buffer = deque(r for r in self._buffer if (r.topic(), r.partition()) not in tps)
            for tp in tps:
                self._handed.pop(tp, None)
                self._committed.pop(tp, None)
                self._skip_before.pop(tp, None)

    def _on_assign(self, consumer: Any, partitions: list) -> None:
        tps = self._positioned(list(partitions))
        consumer.assign(tps)  # with the start offsets of the partitions seen for the first time
        with self._state_lock:
            self._assigned |= {(tp.topic, tp.partition) for tp in tps}
            self.stats.rebalances += 1
            mine = sorted(p for _, p in self._assigned)
        log.info("group %s: assigned %d partitions of %s %s", self.group_id, len(mine), self.topic, mine)

    def _do_close(self, timeout_s: float) -> None:
        if self._closed:
            return
        try:
            if self.auto_commit:
                self.commit()
            self._flush_dead_letters(min(timeout_s, self.dead_letter_flush_s))
        except Exception as e:  # noqa: BLE001 - closing must finish
            log.warning("error while closing the subscriber: %s", e)
        self._closing = True
        try:
            self._consumer.close()  # leaves the group: the others take over at once
        except Exception as e:  # noqa: BLE001
            log.warning("error while leaving the group: %s", e)
        with self._state_lock:
            self._buffer.clear()
        self._closed = True


# ---------------------------------------------------------------------- the command line
# What a terminal must not receive raw from a message: C0/C1 controls (escape sequences
# can clear the screen or move the cursor; CR/LF forge lines), and the Unicode line
# separators and direction overrides that reorder what is shown.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control and reordering characters shown as escapes (``\\x1b``, ``\\u202e``)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def format_prediction(p: Prediction) -> str:
    """One line: time (UTC), sensor, severity, risk, predicted class, family, flow key;
    the message's text fields with control characters escaped, and a time no calendar
    can show (the decoder rejects those, but a Prediction may be built elsewhere) as its number."""
    try:
        t = datetime.fromtimestamp(p.time, tz=timezone.utc)
        ts = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    except (OverflowError, OSError, ValueError):
        ts = f"time={p.time!r}"
    return (f"{ts}  {printable(p.sensor):<12} {printable(p.severity):<8} {p.risk_score:4.2f}  "
            f"{printable(p.predicted_attack):<24} {printable(p.family):<10} {printable(p.flow.key)}")


def run_subscribe(
    bootstrap: str,
    topic: str,
    group: str | None = None,
    start: Any = "committed",
    count: int | None = None,
    as_json: bool = False,
    min_severity: str | None = None,
    *,
    min_risk: float | None = None,
    families: Iterable[str] | None = None,
    sensors: Iterable[str] | None = None,
    attacks_only: bool = False,
    dead_letter_topic: str | None = None,
    consumer_config: dict | None = None,
    security: Any = None,
    poll_timeout_ms: int = 500,
    connect_timeout_s: float = 10.0,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """``ids-daemon subscribe``: print predictions, one per line — the JSON exactly as
    published (``as_json``) or :func:`format_prediction` — until ``count`` were printed
    (``None``: until SIGINT/SIGTERM). With a group, what was printed is committed (every
    5 s and at the end). Returns 0 (also on Ctrl-C and on a closed pipe); raises
    :class:`SubscribeError` (an ``IdsError``) for a bad argument or an unreachable broker."""
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise SubscribeError(f"count must be a non-negative integer, got {count!r}")
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    sub = PredictionSubscriber(
        bootstrap, topic, group_id=group, start=start, auto_commit=group is not None,
        min_severity=min_severity, min_risk=min_risk, families=families, sensors=sensors,
        attacks_only=attacks_only, poll_timeout_ms=poll_timeout_ms, dead_letter_topic=dead_letter_topic,
        consumer_config=consumer_config, connect_timeout_s=connect_timeout_s, security=security,
        check="schema" if as_json and not PredictionFilter(min_severity, min_risk, families, sensors,
                                                           attacks_only).active else "full",
    )
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda _s, _f: sub.stop())
    printed = 0
    try:
        while count is None or printed < count:
            want = sub.max_records if count is None else min(sub.max_records, count - printed)
            batch = sub.poll_messages(max_records=want)
            if sub.closed or sub._stop_requested:
                if not batch:
                    break
            if batch:
                if as_json:
                    out.write("".join(m.value.decode("utf-8", "replace") + "\n" for m in batch))
                else:
                    out.write("".join(format_prediction(m.prediction) + "\n" for m in batch))
                out.flush()
                printed += len(batch)
            if sub._stop_requested:
                break
    except BrokenPipeError:
        pass  # `ids-daemon subscribe | head`: the reader is gone
    except KeyboardInterrupt:
        pass
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
        sub.close()
    st = sub.stats
    skipped = []
    if st.filtered:
        skipped.append(f"{st.filtered} filtered")
    if st.malformed:
        skipped.append(f"{st.malformed} malformed")
    if st.unknown_schema:
        skipped.append(f"{st.unknown_schema} of an unknown schema")
    if st.before_start:
        skipped.append(f"{st.before_start} before the start time")
    try:
        print(f"subscribe: {printed} predictions from {topic}"
              + (f" (skipped: {', '.join(skipped)})" if skipped else ""), file=err)
    except (BrokenPipeError, ValueError):
        pass
    return 0
