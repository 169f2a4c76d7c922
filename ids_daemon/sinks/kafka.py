"""Predictions to Kafka, with a bounded on-disk spool for when the broker is away.

Flow of a record::

    write_batch ──► inbox ──► worker thread ──► KafkaProducer.send ──► ack: delivered
        │ (broker known down)       │ (spool not empty: keep order)        │ error / no ack
        ▼                           ▼                                      ▼
      DiskSpool ◄───────────────────┴──────────────────────────────────────┘
        │ replayed in order, a chunk at a time, when a probe chunk is acknowledged
        ▼
      KafkaProducer.send ──► ack: committed out of the spool (respooled_delivered)

* ``write_batch`` never waits on the network: it appends to an in-memory inbox (the
  worker sends it) or, while the broker is known to be away, to the spool (a buffered
  file append). The inbox is bounded; if the worker falls behind, the inbox goes to
  the spool.
* The broker is "away" when the producer cannot be created, when sends fail, or when
  no acknowledgement arrived for ``stall_timeout_s`` while records were pending (a
  dead broker only fails a send after the delivery timeout; the stall rule spools
  new records within ``stall_timeout_s`` instead).
* While away, every ``retry_interval_s`` the worker sends a small probe chunk from
  the head of the spool; once it is acknowledged, the spool is replayed in order
  (new records keep going to the spool's tail until it is empty, so a flow's
  predictions stay in order), then sends go direct again and the spool's files are
  removed.
* At-least-once: a record leaves the spool only after the broker acknowledged it, a
  direct send that fails is spooled, and records still in flight at ``close`` are
  spooled too. Duplicates are possible (a chunk partly acknowledged before a failure
  is sent again); losses are not, except when the spool is full: then the OLDEST
  predictions are dropped, counted in ``stats.dropped`` and logged.
* Records the broker will never take (larger than its limit) are dropped, counted
  and logged instead of blocking the spool for ever.

Idempotence is off by default: kafka-python's idempotent producer goes into a fatal
state when the broker forgets its producer id (a broker restart with lost state, a
producer id expired after a long outage), and would then fail every send. With
``max_in_flight_requests_per_connection=1`` retries cannot reorder a partition, and
duplicates are already part of the contract. A producer whose sends fail with a
non-retriable error is closed and created afresh.

The spooled records keep key and value; on replay their headers are the sink's
(``schema`` = the schema of the last batch written, ``sensor``), which is what
they had unless the schema changed across a restart (the value carries its own
``schema`` field as well).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import deque
from pathlib import Path

from ..errors import ConfigError
from .base import EncodedBatch, SinkStats
from .spool import DiskSpool

log = logging.getLogger("ids_daemon.sinks")

MiB = 1 << 20
KiB = 1 << 10

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


class KafkaSinkError(ConfigError):
    """The Kafka sink is configured with a value it cannot use."""


def parse_bootstrap(bootstrap: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"host:port[,host:port...]"`` (or a list of them) -> ``["host:port", ...]``;
    a missing port means Kafka's 9092. Raises :class:`KafkaSinkError` with the bad
    entry named."""
    if isinstance(bootstrap, (list, tuple)):
        entries = [str(e) for e in bootstrap]
    elif isinstance(bootstrap, str):
        entries = bootstrap.split(",")
    else:
        raise KafkaSinkError(f"kafka bootstrap must be a string like 'host:9092', got {bootstrap!r}")
    out = []
    for raw in entries:
        e = raw.strip()
        if not e:
            raise KafkaSinkError(f"kafka bootstrap {bootstrap!r} has an empty entry (expected 'host:port[,host:port]')")
        if "://" in e:
            raise KafkaSinkError(
                f"kafka bootstrap entry {e!r} has a URL scheme: give host:port (e.g. {e.split('://', 1)[1]!r})"
            )
        if e.startswith("["):  # [IPv6]:port
            m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::(.*))?$", e)
            if not m:
                raise KafkaSinkError(f"kafka bootstrap entry {e!r} is not '[ipv6]:port'")
            host, port = m.group(1), m.group(2)
            hostpart = f"[{host}]"
        else:
            if e.count(":") > 1:
                raise KafkaSinkError(f"kafka bootstrap entry {e!r}: write IPv6 addresses as '[addr]:port'")
            host, _, port = e.partition(":")
            if not _HOST_RE.match(host):
                raise KafkaSinkError(f"kafka bootstrap entry {e!r} has an invalid host name {host!r}")
            hostpart = host
            if not _:
                port = None
        if port is None:
            port_n = 9092
        else:
            if not port.isdigit() or not (1 <= int(port) <= 65535):
                raise KafkaSinkError(f"kafka bootstrap entry {e!r} has an invalid port {port!r} (1-65535)")
            port_n = int(port)
        out.append(f"{hostpart}:{port_n}")
    return out


def _codec_available(name: str) -> tuple[bool, str]:
    from kafka import codec

    check = {
        "gzip": (codec.has_gzip, "built in"),
        "snappy": (codec.has_snappy, "pip install python-snappy (or cramjam)"),
        "lz4": (codec.has_lz4, "pip install lz4"),
        "zstd": (codec.has_zstd, "pip install zstandard"),
    }[name]
    return bool(check[0]()), check[1]


def _error_name(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text and text != "None" else type(exc).__name__


def _is_poison(exc: BaseException) -> bool:
    """An error the same record would get again on every retry."""
    from kafka import errors as E

    kinds = tuple(
        k for k in (getattr(E, n, None) for n in ("MessageSizeTooLargeError", "InvalidRecordError")) if k is not None
    )
    return isinstance(exc, kinds + (TypeError, ValueError))


def _is_retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


class _Chunk:
    """Records from the head of the spool that are being sent."""

    __slots__ = ("start", "n", "pending", "acked", "failed", "poison", "error", "fatal", "t0", "probe")

    def __init__(self, start: int, n: int, probe: bool):
        self.start = start
        self.n = n
        self.pending = n
        self.acked = 0
        self.failed = 0
        self.poison = 0
        self.error: BaseException | None = None
        self.fatal = False
        self.t0 = time.monotonic()
        self.probe = probe


class KafkaSink:
    """The Kafka sink: see the module docstring for the delivery contract."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        spool_dir: str | Path,
        spool_max_bytes: int = 256 * MiB,
        acks: str | int = "all",
        compression: str | None = "gzip",
        linger_ms: int = 20,
        batch_bytes: int = 256 * KiB,
        client_id: str = "ids-daemon",
        headers: list[tuple[str, bytes]] | None = None,
        retry_interval_s: float = 2.0,
        request_timeout_ms: int = 5000,
        sensor: str | None = None,
        stall_timeout_s: float = 1.5,
        close_timeout_s: float = 10.0,
        drain_chunk: int = 5000,
        probe_chunk: int = 100,
        max_inbox: int = 10_000,
        enable_idempotence: bool = False,
        producer_config: dict | None = None,
    ):
        self.servers = parse_bootstrap(bootstrap)
        self.bootstrap = ",".join(self.servers)
        if not isinstance(topic, str) or not _TOPIC_RE.match(topic) or topic in (".", ".."):
            raise KafkaSinkError(
                f"kafka topic {topic!r} is invalid: 1-249 characters of letters, digits, '.', '_', '-'"
            )
        self.topic = topic
        if spool_dir is None or str(spool_dir) == "":
            raise KafkaSinkError("kafka spool_dir is required (where predictions wait while the broker is away)")
        self.spool_dir = Path(spool_dir)
        if int(spool_max_bytes) <= 0:
            raise KafkaSinkError(f"kafka spool_max_bytes must be positive, got {spool_max_bytes}")
        self.spool_max_bytes = int(spool_max_bytes)
        acks_map = {"all": "all", "-1": "all", -1: "all", "0": 0, 0: 0, "1": 1, 1: 1}
        if acks not in acks_map:
            raise KafkaSinkError(f"kafka acks must be 'all', 1 or 0, got {acks!r}")
        self.acks = acks_map[acks]
        comp = None if compression in (None, "", "none", "None") else str(compression).lower()
        if comp is not None:
            if comp not in ("gzip", "snappy", "lz4", "zstd"):
                raise KafkaSinkError(f"kafka compression must be none, gzip, snappy, lz4 or zstd, got {compression!r}")
            ok, how = _codec_available(comp)
            if not ok:
                raise KafkaSinkError(f"kafka compression {comp!r} needs a library that is not installed: {how}")
        self.compression = comp
        for nm, v in (("linger_ms", linger_ms), ("batch_bytes", batch_bytes), ("request_timeout_ms", request_timeout_ms)):
            if not isinstance(v, int) or v < 0 or (nm != "linger_ms" and v == 0):
                raise KafkaSinkError(f"kafka {nm} must be a {'non-negative' if nm == 'linger_ms' else 'positive'} integer, got {v!r}")
        if retry_interval_s <= 0 or stall_timeout_s <= 0:
            raise KafkaSinkError("kafka retry_interval_s and stall_timeout_s must be positive")
        self.linger_ms = linger_ms
        self.batch_bytes = batch_bytes
        self.client_id = client_id
        self.retry_interval_s = float(retry_interval_s)
        self.request_timeout_ms = request_timeout_ms
        self.stall_timeout_s = float(stall_timeout_s)
        self.close_timeout_s = float(close_timeout_s)
        self.drain_chunk = max(1, int(drain_chunk))
        self.probe_chunk = max(1, int(probe_chunk))
        self.max_inbox = max(1, int(max_inbox))
        self.sensor = sensor
        base = list(headers) if headers is not None else [("schema", b"ids.prediction.v1")]
        for h in base:
            if not (isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], bytes)):
                raise KafkaSinkError(f"kafka headers must be (str, bytes) pairs, got {h!r}")
        self._schema = next((v for k, v in base if k == "schema"), b"ids.prediction.v1")
        self._base_headers = [(k, v) for k, v in base if k not in ("schema", "sensor")]
        if sensor:
            self._base_headers.append(("sensor", str(sensor).encode()))
        self._headers_cache: dict[bytes, list] = {}
        self._producer_cfg = self._producer_config(enable_idempotence, producer_config or {})

        self.stats = SinkStats()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._inbox: deque[EncodedBatch] = deque()
        self._inbox_n = 0
        self._dispatching = False
        self._spool: DiskSpool | None = None
        self._producer = None
        self._up = False
        self._down_since = time.monotonic()
        self._down_logged = False
        self._last_ack = 0.0
        self._inflight: dict[int, tuple[bytes, bytes]] = {}
        self._gen = 0  # producer generation: callbacks of a closed producer change no state
        self._inflight_since = 0.0
        self._next_id = 0
        self._chunk: _Chunk | None = None
        self._next_connect = 0.0
        self._next_probe = 0.0
        self._recreate = False
        self._suspect = False  # the producer saw the broker go away: replace it
        self._failures = 0  # failed connects and replays (flush stops waiting on the spool)
        self._drop_pending = 0
        self._drop_last_log = float("-inf")
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._opened = False
        self.producer_restarts = 0

    # ------------------------------------------------------------------ setup
    def _producer_config(self, idempotence: bool, extra: dict) -> dict:
        from kafka import KafkaProducer

        known = set(KafkaProducer.DEFAULT_CONFIG)
        delivery_timeout_ms = self.request_timeout_ms + self.linger_ms + 1000
        cfg = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "acks": self.acks,
            "compression_type": self.compression,
            "linger_ms": self.linger_ms,
            "batch_size": self.batch_bytes,
            "max_request_size": max(1 * MiB, self.batch_bytes),
            "request_timeout_ms": self.request_timeout_ms,
            "delivery_timeout_ms": delivery_timeout_ms,
            # send() only blocks for metadata or buffer space: the worker waits, never the caller
            "max_block_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.request_timeout_ms,  # kafka-python 3
            "api_version_auto_timeout_ms": self.request_timeout_ms,  # kafka-python 2
            "reconnect_backoff_ms": 50,
            "reconnect_backoff_max_ms": min(1000, int(self.retry_interval_s * 1000)),
            "retry_backoff_ms": 100,
            "enable_idempotence": bool(idempotence),
            "max_in_flight_requests_per_connection": 5 if idempotence else 1,
        }
        if "delivery_timeout_ms" not in known:  # kafka-python 2.0: retries are counted
            cfg["retries"] = 3
        cfg.update(extra)
        unknown = sorted(k for k in extra if k not in known)
        if unknown:
            raise KafkaSinkError(f"kafka producer_config has options kafka-python does not know: {', '.join(unknown)}")
        return {k: v for k, v in cfg.items() if k in known}

    def _headers(self, schema: bytes) -> list:
        h = self._headers_cache.get(schema)
        if h is None:
            h = self._base_headers + [("schema", schema)]
            self._headers_cache[schema] = h
        return h

    def open(self) -> None:
        if self._opened:
            return
        self._spool = DiskSpool(self.spool_dir, self.spool_max_bytes)
        self._opened = True
        n = len(self._spool)
        if self._spool.discarded:
            log.warning(
                "Kafka spool at %s: discarded %d damaged record(s) at the end of a segment (an interrupted write)",
                self.spool_dir, self._spool.discarded,
            )
        if n:
            log.info("Kafka spool at %s holds %d predictions from a previous run; they are sent first", self.spool_dir, n)
        self._update_spool_stats()
        self._thread = threading.Thread(target=self._run, name="ids-kafka-sink", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side
    def write_batch(self, batch: EncodedBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        if not self._opened or self._closed:
            raise KafkaSinkError("the Kafka sink is not open")
        with self._cv:
            self.stats.received += n
            self._schema = batch.schema.encode() if isinstance(batch.schema, str) else batch.schema
            if self._up:
                self._inbox.append(batch)
                self._inbox_n += n
                if self._inbox_n > self.max_inbox:  # the worker is stuck (blocked send): go to disk
                    self._spool_inbox_locked()
            else:
                self._spool_inbox_locked()
                self._spool_locked(list(zip(batch.keys, batch.values)))
            self._cv.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until what was written is acknowledged or spooled; if the broker is
        reachable, until the spool is replayed too. At most ``timeout`` seconds."""
        if not self._opened:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            failures0 = self._failures
            self._next_probe = self._next_connect = 0.0  # try the broker now
            self._cv.notify_all()
            while self._inbox or self._dispatching:
                if not self._wait(deadline):
                    return
            producer = self._producer
            have_inflight = bool(self._inflight)
        if producer is not None and have_inflight:
            try:
                rem = None if deadline is None else max(0.0, deadline - time.monotonic())
                producer.flush(timeout=rem)
            except Exception:  # timeout, closed producer: the wait below decides
                pass
        with self._cv:
            while True:
                if self._thread is None or not self._thread.is_alive():
                    return
                if not self._inbox and not self._dispatching and not self._inflight:
                    if self._chunk is None and len(self._spool) == 0:
                        return
                    if not self._up and self._failures > failures0:
                        return  # the broker was tried since flush began: it is away
                if not self._wait(deadline):
                    return

    def _wait(self, deadline) -> bool:
        if deadline is None:
            self._cv.wait(0.05)
            return True
        rem = deadline - time.monotonic()
        if rem <= 0:
            return False
        self._cv.wait(min(rem, 0.05))
        return True

    def close(self) -> None:
        if not self._opened or self._closed:
            return
        try:
            # broker away: do not wait for a probe's delivery timeout, the spool keeps it all
            self.flush(self.close_timeout_s if self._up else min(self.close_timeout_s, 1.0))
        finally:
            with self._cv:
                self._closed = True
                self._stopping = True
                self._cv.notify_all()
            if self._thread is not None:
                self._thread.join(timeout=self.request_timeout_ms / 1000 + 2)
            producer = self._producer
            self._producer = None
            if producer is not None:
                self._close_producer(producer)
            with self._cv:
                self._spool_inbox_locked()
                leftover = list(self._inflight.values())
                self._inflight.clear()
                if leftover:
                    self._spool_locked(leftover, count_failed=False)
                self._log_drops(force=True)
                n = len(self._spool)
                self._update_spool_stats()
                self._spool.close()
            if n:
                log.warning(
                    "Kafka sink closed: %d predictions kept in the spool at %s (sent when the daemon next starts)",
                    n, self.spool_dir,
                )
            else:
                log.info("Kafka sink closed: everything delivered to %s topic %s", self.bootstrap, self.topic)

    def __enter__(self) -> "KafkaSink":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def spool(self) -> DiskSpool | None:
        return self._spool

    @property
    def broker_up(self) -> bool:
        return self._up

    # ------------------------------------------------------------------ spool helpers (lock held)
    def _spool_locked(self, records: list[tuple[bytes, bytes]], count_failed: bool = False) -> None:
        if not records:
            return
        dropped = self._spool.append(records)
        self.stats.spooled += len(records)
        if count_failed:
            self.stats.failed += len(records)
        if dropped:
            self.stats.dropped += dropped
            self._drop_pending += dropped
            self._log_drops()
        self._update_spool_stats()

    def _spool_inbox_locked(self) -> None:
        while self._inbox:
            b = self._inbox.popleft()
            self._spool_locked(list(zip(b.keys, b.values)))
        self._inbox_n = 0

    def _log_drops(self, force: bool = False) -> None:
        if not self._drop_pending:
            return
        now = time.monotonic()
        if force or now - self._drop_last_log >= 1.0:
            log.warning(
                "Kafka spool at %s is full (%d bytes): dropped the %d oldest predictions (%d dropped in all)",
                self.spool_dir, self.spool_max_bytes, self._drop_pending, self.stats.dropped,
            )
            self._drop_pending = 0
            self._drop_last_log = now

    def _update_spool_stats(self) -> None:
        s = self._spool
        self.stats.spool_bytes = s.bytes
        self.stats.extra["spool_records"] = len(s)
        self.stats.extra["spool_discarded_on_open"] = s.discarded
        self.stats.extra["broker_up"] = self._up
        self.stats.extra["producer_restarts"] = self.producer_restarts

    def _go_down(self, why: str) -> None:
        """Lock held. New records go to the spool; the producer is replaced (its
        pending records are spooled) and the spool is replayed once a fresh producer
        connected and a probe from the spool was acknowledged."""
        self._suspect = True
        if self._up:
            self._up = False
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + self.retry_interval_s
            self.stats.extra["broker_up"] = False
            log.warning("Kafka at %s: %s; spooling predictions to %s", self.bootstrap, why, self.spool_dir)
            self._down_logged = True

    def _go_up(self) -> None:
        if not self._up:
            self._up = True
            self.stats.extra["broker_up"] = True
            if self._down_logged:
                n = len(self._spool)
                log.warning(
                    "Kafka at %s answers again%s", self.bootstrap,
                    f"; replaying {n} spooled predictions" if n else "; sending directly",
                )
                self._down_logged = False

    # ------------------------------------------------------------------ producer callbacks (kafka's thread)
    def _on_ack(self, rid: int, _meta) -> None:
        with self._cv:
            if self._inflight.pop(rid, None) is not None:
                self.stats.delivered += 1
            self._last_ack = time.monotonic()
            if not self._inflight:
                self._cv.notify_all()

    def _on_fail(self, gen: int, rid: int, exc: BaseException) -> None:
        with self._cv:
            rec = self._inflight.pop(rid, None)
            if rec is None:
                return
            if _is_poison(exc):
                self._poison_locked(1, exc)
            elif gen != self._gen:  # aborted by our own reset of that producer
                self._spool_locked([rec], count_failed=True)
            else:
                self._spool_locked([rec], count_failed=True)
                if not _is_retriable(exc):
                    self._recreate = True
                self._go_down(f"delivery failed ({_error_name(exc)})")
            self._cv.notify_all()

    def _poison_locked(self, n: int, exc: BaseException) -> None:
        self.stats.dropped += n
        self.stats.failed += n
        log.error(
            "Kafka at %s rejected %d prediction(s) for good (%s): dropped", self.bootstrap, n, _error_name(exc)
        )

    def _chunk_ack(self, chunk: _Chunk, _meta) -> None:
        with self._cv:
            chunk.pending -= 1
            chunk.acked += 1
            self._last_ack = time.monotonic()
            if chunk.pending == 0:
                self._cv.notify_all()

    def _chunk_fail(self, chunk: _Chunk, exc: BaseException) -> None:
        with self._cv:
            chunk.pending -= 1
            if _is_poison(exc):
                chunk.poison += 1
            else:
                chunk.failed += 1
                chunk.error = exc
                if not _is_retriable(exc):
                    chunk.fatal = True
            if chunk.pending == 0:
                self._cv.notify_all()

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._inbox and not self._stopping:
                    self._cv.wait(0.05)
                batches = list(self._inbox)
                self._inbox.clear()
                self._inbox_n = 0
                stopping = self._stopping
                self._dispatching = bool(batches)
            try:
                if batches:
                    self._dispatch(batches)
                if stopping:
                    break
                self._tick()
            except Exception:  # the daemon keeps running; the spool keeps the records
                log.exception("Kafka sink worker error (continuing)")
                time.sleep(0.1)
            finally:
                if batches:
                    with self._cv:
                        self._dispatching = False
                        self._cv.notify_all()

    def _dispatch(self, batches: list[EncodedBatch]) -> None:
        with self._cv:
            direct = self._up and self._producer is not None and self._chunk is None and len(self._spool) == 0
            if not direct:
                for b in batches:
                    self._spool_locked(list(zip(b.keys, b.values)))
                return
            producer = self._producer
            gen = self._gen
        for bi, b in enumerate(batches):
            headers = self._headers(b.schema.encode() if isinstance(b.schema, str) else b.schema)
            keys, values = b.keys, b.values
            for i in range(len(values)):
                key, value = keys[i], values[i]
                with self._lock:
                    rid = self._next_id
                    self._next_id += 1
                    if not self._inflight:
                        self._inflight_since = time.monotonic()
                    self._inflight[rid] = (key, value)
                try:
                    fut = producer.send(self.topic, value=value, key=key, headers=headers)
                except Exception as exc:  # noqa: BLE001 - every failure must end in the spool or the drop count
                    with self._cv:
                        self._inflight.pop(rid, None)
                        if _is_poison(exc):
                            self._poison_locked(1, exc)
                            continue
                        rest = list(zip(keys[i:], values[i:]))
                        for later in batches[bi + 1 :]:
                            rest.extend(zip(later.keys, later.values))
                        self._spool_locked(rest, count_failed=True)
                        self._recreate = not _is_retriable(exc) or self._recreate
                        self._go_down(f"send failed ({_error_name(exc)})")
                    return
                fut.add_callback(self._on_ack, rid)
                fut.add_errback(self._on_fail, gen, rid)

    def _tick(self) -> None:
        now = time.monotonic()
        with self._cv:
            # no acknowledgement for a while although records are pending: the broker is away
            if self._up:
                pending_since = None
                if self._inflight:
                    pending_since = self._inflight_since
                if self._chunk is not None:
                    pending_since = self._chunk.t0 if pending_since is None else min(pending_since, self._chunk.t0)
                if pending_since is not None and now - max(self._last_ack, pending_since) > self.stall_timeout_s:
                    self._go_down(f"no acknowledgement for {self.stall_timeout_s:g} s")
            reset = self._producer is not None and (self._recreate or self._suspect)
        if reset:
            self._reset_producer()
        if self._producer is None:
            self._connect(now)
            if self._producer is None:
                return
        self._drain(now)

    def _reset_producer(self) -> None:
        """Close the producer (its pending records fail and are spooled). A fresh one
        is created by the next connect: new connections, fresh metadata (a topic
        recreated by the cluster, leaders moved), no fatal state carried over."""
        with self._cv:
            producer = self._producer
            self._producer = None
            self._gen += 1
            self._recreate = self._suspect = False
            self._next_connect = time.monotonic() + self.retry_interval_s
            # a chunk in flight stays in the spool (not committed): sent again later
            self._chunk = None
        log.info("Kafka at %s: closing the producer; a new one connects when the broker answers", self.bootstrap)
        self._close_producer(producer)
        with self._cv:  # sends the old producer still held: spool them (errbacks may have raced)
            leftover = list(self._inflight.values())
            self._inflight.clear()
            self._spool_locked(leftover, count_failed=True)
        self.producer_restarts += 1

    def _close_producer(self, producer) -> None:
        try:
            producer.close(timeout=0.5 if self._up else 0)
            return
        except Exception:  # noqa: BLE001
            pass
        # kafka-python's close() flushes first and raises while records are still
        # pending (broker away); abort them (their errbacks spool them), then close.
        try:
            sender = producer._sender
            sender.force_close()
            sender.join(1.0)
            producer.close(timeout=0)
        except Exception:  # noqa: BLE001
            pass

    def _tcp_check(self) -> None:
        """Fail fast when no bootstrap server accepts a TCP connection (kafka-python
        would retry for its whole bootstrap timeout)."""
        if self._producer_cfg.get("proxy_url") or self._producer_cfg.get("socks5_proxy"):
            return
        last: OSError | None = None
        for server in self.servers:
            host, _, port = server.rpartition(":")
            host = host.strip("[]")
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                return
            except OSError as e:
                last = e
        raise ConnectionError(f"no bootstrap server accepts connections ({last.strerror or last})")

    def _connect(self, now: float) -> None:
        with self._cv:
            if now < self._next_connect or self._stopping:
                return
        from kafka import KafkaProducer

        producer = None
        try:
            self._tcp_check()
            producer = KafkaProducer(**self._producer_cfg)
            producer.partitions_for(self.topic)  # metadata (and auto-creation) now, not in send()
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, auth: keep spooling
            if producer is not None:
                self._close_producer(producer)
            with self._cv:
                self._failures += 1
                self._next_connect = time.monotonic() + self.retry_interval_s
                if not self._down_logged:
                    log.warning(
                        "Kafka at %s cannot be used (%s); spooling predictions to %s, retrying every %g s",
                        self.bootstrap, _error_name(exc), self.spool_dir, self.retry_interval_s,
                    )
                    self._down_logged = True
                self._cv.notify_all()
            return
        with self._cv:
            if self._stopping:
                stop = True
            else:
                stop = False
                self._producer = producer
                self._suspect = self._recreate = False
                self._next_probe = 0.0
                if len(self._spool) == 0:
                    self._go_up()
                log.info("Kafka producer connected to %s (topic %s)", self.bootstrap, self.topic)
            self._cv.notify_all()
        if stop:
            self._close_producer(producer)

    def _drain(self, now: float) -> None:
        with self._cv:
            chunk = self._chunk
            if chunk is not None:
                hung = now - chunk.t0 > (self._producer_cfg.get("delivery_timeout_ms", self.request_timeout_ms) / 1000) + 5
                if chunk.pending > 0 and not hung:
                    return
                self._chunk = None
                if chunk.pending == 0 and chunk.failed == 0:
                    if chunk.poison:
                        self._poison_locked(chunk.poison, RuntimeError("record rejected by the broker"))
                    self._spool.commit(chunk.start + chunk.n)
                    self.stats.delivered += chunk.acked
                    self.stats.respooled_delivered += chunk.acked
                    self._update_spool_stats()
                    self._go_up()
                else:
                    # keep them in the spool (the acknowledged ones will be sent again)
                    self.stats.delivered += chunk.acked
                    self.stats.failed += chunk.failed
                    err = chunk.error or TimeoutError("no answer")
                    self._recreate = self._recreate or chunk.fatal or chunk.pending > 0
                    self._go_down(f"replay from the spool failed ({_error_name(err)})")
                    self._next_probe = time.monotonic() + self.retry_interval_s
                    self._failures += 1
                self._cv.notify_all()
                return
            spool_n = len(self._spool)
            if spool_n == 0:
                # nothing to replay: back to direct once the pending sends were answered
                if not self._up and (not self._inflight or self._last_ack > self._down_since):
                    self._go_up()
                return
            if not self._up and now < self._next_probe:
                return
            n = self.drain_chunk if self._up else self.probe_chunk
            start, records = self._spool.peek_seq(n)
            if not records:
                return
            chunk = _Chunk(start, len(records), probe=not self._up)
            self._chunk = chunk
            producer = self._producer
            headers = self._headers(self._schema)
        for i, (key, value) in enumerate(records):
            try:
                fut = producer.send(self.topic, value=value, key=key, headers=headers)
            except Exception as exc:  # noqa: BLE001
                with self._cv:
                    if _is_poison(exc):
                        chunk.poison += 1
                        chunk.pending -= 1
                        continue
                    # the rest of the chunk was never sent: it counts as failed
                    left = len(records) - i
                    chunk.pending -= left
                    chunk.failed += left
                    chunk.error = exc
                    chunk.fatal = chunk.fatal or not _is_retriable(exc)
                    self._cv.notify_all()
                break
            fut.add_callback(self._chunk_ack, chunk)
            fut.add_errback(self._chunk_fail, chunk)
