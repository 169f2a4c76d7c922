"""Predictions to Kafka (confluent-kafka, i.e. librdkafka), with a bounded on-disk
spool for when the broker is away.

Flow of a record::

    write_batch ──► librdkafka (queue, batches, compression, retries, idempotence)
        │ broker away / stalled,            │ delivery report: error
        │ or the spool is being replayed    ▼
        └──────────────────────────────► DiskSpool (topic and headers kept per record)
                                            │ replayed in order, a chunk at a time,
                                            ▼ once a probe chunk is acknowledged
                                         librdkafka ──► ack: committed out of the spool

Guarantees (the module layout: this file is the sink interface, ``delivery`` the
up/away/stalled state and librdkafka's reports, ``replay`` the spool replay):

* acks=all by default, record key = flow key, headers ``schema`` (of the batch) and
  ``sensor``; idempotent production where the broker supports it.
* ``write_batch`` never waits on the network: it hands records to librdkafka's queue
  (or, while the broker is away or the spool is being replayed, appends them to the
  spool, so a flow's predictions stay in order). A full librdkafka queue sends the
  rest to the spool.
* At-least-once: a record leaves the spool only once the broker acknowledged it; a
  record whose delivery failed is spooled; records still held by librdkafka at
  ``close`` are spooled. Duplicates are possible (a chunk partly acknowledged before a
  failure is sent again); losses are not, except: the spool is full (by its bound or
  its disk), then the OLDEST predictions are dropped, counted in ``stats.dropped`` and
  logged; a record the broker rejects for good (too large) is dropped, counted and
  logged.
* A spooled record keeps its topic and headers: a later run from the same spool
  delivers it where it was meant to go.

Validation lives in the pydantic config (``ids_daemon.config.KafkaConfig``): the sink
takes that validated object.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ...broker import BrokerConfigError, client_config, parse_bootstrap, tcp_probe
from ...config import KafkaConfig
from ..base import EncodedBatch, SinkStats
from ..spool import DiskSpool
from .delivery import AWAY, STALLED, UP, Delivery
from .replay import Chunk, MetaCodec

__all__ = ["KafkaSink", "KafkaSinkError", "producer_config", "parse_bootstrap"]

log = logging.getLogger("ids_daemon.sinks")

KafkaSinkError = BrokerConfigError  # the sink's errors are the broker settings' errors


def producer_config(k: KafkaConfig) -> dict[str, Any]:
    """The librdkafka producer settings of the sink, from the validated config."""
    servers = parse_bootstrap(k.bootstrap or "")
    extra = {
        "acks": {"all": "all", "1": 1, "0": 0}[k.acks],
        "compression.type": k.compression,
        "linger.ms": k.linger_ms,
        "batch.size": k.batch_bytes,
        "request.timeout.ms": k.request_timeout_ms,
        # a record librdkafka could not deliver in this time is reported failed (and spooled)
        "message.timeout.ms": k.request_timeout_ms + k.linger_ms + 1000,
        "socket.connection.setup.timeout.ms": max(1000, k.request_timeout_ms),
        "enable.idempotence": k.enable_idempotence,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": max(100, min(1000, int(k.retry_interval_s * 1000))),
        "retry.backoff.ms": 100,
        **k.producer,
    }
    return client_config(servers, k.client_id, k.security, extra)


class KafkaSink:
    """The Kafka sink: see the module docstring for the delivery contract."""

    name = "kafka"

    def __init__(self, settings: KafkaConfig, *, sensor: str | None = None, spool_dir: str | Path | None = None,
                 owner: tuple[int, int] | None = None, drain_chunk: int = 5000, probe_chunk: int = 100):
        """``settings``: the validated ``kafka`` section; ``spool_dir``: this sink's spool
        (default ``settings.spool_path(sensor)``); ``owner``: (uid, gid) that will write
        the spool after a privilege drop (the directory is created for it)."""
        if not settings.bootstrap:
            raise BrokerConfigError("the Kafka sink needs kafka.bootstrap (--kafka-bootstrap HOST:PORT)")
        self.settings = settings
        self.servers = parse_bootstrap(settings.bootstrap)
        self.bootstrap = settings.bootstrap
        self.topic = settings.topic
        self.sensor = sensor
        self.spool_dir = Path(spool_dir) if spool_dir is not None else settings.spool_path(sensor)
        self.owner = owner
        self.drain_chunk = max(1, int(drain_chunk))
        self.probe_chunk = max(1, int(probe_chunk))
        self.retry_interval_s = settings.retry_interval_s
        self.stats = SinkStats()
        self._base_headers = [("sensor", str(sensor).encode())] if sensor else []
        self._headers_cache: dict[bytes, list] = {}
        self._schema = b"ids.prediction.v1"
        self._meta = MetaCodec(self.topic, self._headers(self._schema))
        self._msg_timeout_s = (settings.request_timeout_ms + settings.linger_ms + 1000) / 1000
        self._delivery = Delivery(producer_config(settings), self.bootstrap, settings.stall_timeout_s)
        self._lock = threading.Lock()  # write_batch vs the worker: direct or spool, never both
        self._spool: DiskSpool | None = None
        self._chunk: Chunk | None = None
        self._next_probe = 0.0
        self._probe_failures = 0
        self._dropped = 0  # spool full (bound or disk), refused by librdkafka
        self._failed_other = 0  # replayed records that failed (they stay in the spool)
        self._replayed = 0  # delivered out of the spool
        self._drop_pending = 0
        self._drop_last_log = float("-inf")
        self._disk_full_logged = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._opened = False
        self._closed = False

    @classmethod
    def from_config(cls, cfg: Any) -> "KafkaSink":
        """The sink a daemon run uses: ``cfg.kafka``, the sensor's name, and the spool
        created for ``capture.user`` when started as root (it writes after the drop)."""
        owner = None
        user = getattr(cfg.capture, "user", None)
        if user and os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam(user)
                owner = (pw.pw_uid, pw.pw_gid)
            except KeyError:
                pass  # the privilege drop names the unknown user
        return cls(cfg.kafka, sensor=cfg.sensor, owner=owner)

    @classmethod
    def create(cls, bootstrap: str, topic: str, spool_dir: str | Path, *, sensor: str | None = None,
               **settings: Any) -> "KafkaSink":
        """A sink from keyword settings (the ``kafka`` section's keys), validated like the
        config file: a bad value is a one-line ``ConfigError`` naming ``kafka.<key>``."""
        from ...config import load_config

        cfg = load_config(None, {f"kafka.{k}": v for k, v in {"bootstrap": bootstrap, "topic": topic,
                                                                **settings}.items()})
        return cls(cfg.kafka, sensor=sensor, spool_dir=spool_dir)

    # ------------------------------------------------------------------ setup
    def _headers(self, schema: bytes) -> list:
        h = self._headers_cache.get(schema)
        if h is None:
            h = [("schema", schema)] + self._base_headers
            self._headers_cache[schema] = h
        return h

    def open(self) -> None:
        """Open the spool (creating it for ``owner``), start the producer and the worker."""
        if self._opened:
            return
        self._make_spool_dir()
        self._spool = DiskSpool(self.spool_dir, int(self.settings.spool_max_mb * (1 << 20)))
        if self.owner is not None:
            self._chown_tree(self.spool_dir)
        if self._spool.discarded:
            log.warning("Kafka spool at %s: discarded %d damaged record(s) at the end of a segment "
                        "(an interrupted write)", self.spool_dir, self._spool.discarded)
        n = len(self._spool)
        if n:
            log.info("Kafka spool at %s holds %d predictions from a previous run; they are sent first",
                     self.spool_dir, n)
        try:
            self._delivery.create()
        except Exception as e:  # noqa: BLE001 - a property librdkafka refuses: one line
            self._spool.close()
            raise BrokerConfigError(f"kafka.producer: librdkafka refuses the settings: {e}") from None
        self._opened = True
        if not n and tcp_probe(self.servers, 0.5) is None:
            # the broker answers now: the first predictions go direct, not through the spool
            try:
                self._delivery.producer.list_topics(self.topic, timeout=2.0)
                self._delivery.go(UP, "connected")
            except Exception:  # noqa: BLE001 - the worker keeps trying
                pass
        self._update_stats()
        self._thread = threading.Thread(target=self._run, name="ids-kafka-sink", daemon=True)
        self._thread.start()

    def _make_spool_dir(self) -> None:
        """Create the spool directory; the parts created now belong to ``owner``."""
        missing = []
        p = self.spool_dir
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BrokerConfigError(f"kafka spool directory {self.spool_dir}: {e.strerror or e}") from None
        if self.owner is not None:
            for d in missing:
                os.chown(d, *self.owner)

    def _chown_tree(self, d: Path) -> None:
        os.chown(d, *self.owner)
        for f in d.iterdir():
            os.chown(f, *self.owner)

    # ------------------------------------------------------------------ caller side
    def write_batch(self, batch: EncodedBatch) -> None:
        """Hand the batch to librdkafka, or to the spool while the broker is away (or the
        spool is being replayed). Never blocks on the network, never raises for a full
        spool (the oldest predictions are dropped and counted)."""
        n = len(batch)
        if n == 0:
            return
        if not self._opened or self._closed:
            raise BrokerConfigError("the Kafka sink is not open")
        schema = batch.schema.encode() if isinstance(batch.schema, str) else batch.schema
        headers = self._headers(schema)
        d = self._delivery
        with self._lock:
            self.stats.received += n
            self._schema = schema
            if d.state != UP or self._chunk is not None or len(self._spool):
                self._spool_records(batch.keys, batch.values, self._meta.encode(self.topic, headers))
                return
            produce = d.producer.produce
            topic, keys, values = self.topic, batch.keys, batch.values
            d.produced += n
            i = 0
            while i < n:
                try:
                    while i < n:
                        produce(topic, values[i], keys[i], headers=headers)
                        i += 1
                except BufferError:  # librdkafka's queue is full: the rest waits on disk
                    d.produced -= n - i
                    self._spool_records(keys[i:], values[i:], self._meta.encode(topic, headers))
                    break
                except Exception as e:  # noqa: BLE001 - a record librdkafka refuses (too large): dropped, counted
                    d.produced -= 1
                    self._dropped += 1
                    self._failed_other += 1
                    log.error("Kafka sink dropped a prediction librdkafka refused: %s", e)
                    i += 1

    def _spool_records(self, keys, values, meta: bytes) -> None:
        """Lock held: append to the spool, count what it dropped."""
        try:
            dropped = self._spool.append([(k, v, meta) for k, v in zip(keys, values)])
        except Exception as e:  # noqa: BLE001 - the pipeline must keep running; the loss is counted
            dropped = len(values)
            log.error("Kafka spool at %s failed (%s): %d predictions dropped", self.spool_dir, e, dropped)
        self.stats.spooled += len(values)
        self.stats.spool_bytes = self._spool.bytes
        self.stats.extra["spool_records"] = len(self._spool)
        if dropped:
            self._dropped += dropped
            self.stats.dropped = self._dropped + self._delivery.poison
            self._drop_pending += dropped
            self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        s = self._spool
        if s.disk_full and not self._disk_full_logged:
            self._disk_full_logged = True
            log.warning("Kafka spool at %s: its disk is full (%s); keeping what fits and dropping the oldest "
                        "predictions (counted); other sinks are not affected", self.spool_dir, s.last_error)
        if not self._drop_pending:
            return
        now = time.monotonic()
        if force or now - self._drop_last_log >= 10.0:
            log.warning("Kafka spool at %s is full (%d bytes): dropped the %d oldest predictions (%d dropped in all)",
                        self.spool_dir, s.max_bytes, self._drop_pending, self._dropped)
            self._drop_pending = 0
            self._drop_last_log = now

    def flush(self, timeout: float | None = None) -> None:
        """Wait until what was written is acknowledged or spooled and, if the broker is
        reachable, until the spool is replayed too. At most ``timeout`` seconds."""
        if not self._opened or self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        failures0 = self._probe_failures
        self._next_probe = 0.0  # try the broker now
        d = self._delivery
        while deadline is None or time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                return
            if d.pending() <= 0 and not d.failed:
                if self._chunk is None and len(self._spool) == 0:
                    break
                if d.state != UP and self._probe_failures > failures0:
                    break  # the broker was tried since flush began: it is away
            time.sleep(0.01)
        time.sleep(0.03)  # the worker's last pass (stats, a failed record to spool)
        self._update_stats()

    def close(self) -> None:
        """Deliver what can be within ``close_timeout_s`` (1 s when the broker is away);
        everything else stays in the spool for the next start."""
        if not self._opened or self._closed:
            return
        d = self._delivery
        try:
            self.flush(self.settings.close_timeout_s if d.state == UP else min(self.settings.close_timeout_s, 1.0))
        finally:
            self._stopping = True
            if self._thread is not None:
                self._thread.join(self._msg_timeout_s + 5)
            self._closed = True
            if d.producer is not None:
                self._purge_producer()
            with self._lock:
                self._spool_failed()
                self._log_drops(force=True)
                n = len(self._spool)
                self._update_stats()
                self._spool.close()
            if n:
                log.warning("Kafka sink closed: %d predictions kept in the spool at %s (sent when the daemon "
                            "next starts)", n, self.spool_dir)
            else:
                # the counts, never "everything": a run that failed at its first packet delivered 0
                (log.warning if self.stats.dropped else log.info)("Kafka sink closed: %s", self.summary())

    def summary(self) -> str:
        """What happened to the predictions, exactly: delivered (and how many of them
        waited in the spool), still in the spool, dropped."""
        st = self.stats
        out = f"{st.delivered} delivered to {self.bootstrap} topic {self.topic}"
        if st.respooled_delivered:
            out += f" ({st.respooled_delivered} of them after waiting in the spool)"
        left = st.extra.get("spool_records", 0)
        if left:
            out += f", {left} kept in the spool at {self.spool_dir} (sent when the daemon next starts)"
        if st.dropped:
            why = "its disk full" if st.extra.get("spool_disk_full") else "the spool full"
            out += f", {st.dropped} dropped ({why}; the oldest first)"
        return out

    def __enter__(self) -> "KafkaSink":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def spool(self) -> DiskSpool | None:
        return self._spool

    @property
    def broker_up(self) -> bool:
        return self._delivery.state == UP

    @property
    def state(self) -> str:
        """up, away or stalled (see ``delivery``)."""
        return self._delivery.state

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        d = self._delivery
        while not self._stopping:
            try:
                d.producer.poll(0.02)  # delivery reports and errors run here
                now = time.monotonic()
                if d.failed:
                    with self._lock:
                        self._spool_failed()
                if d.all_down:
                    # every broker is gone: what librdkafka holds is failed now (into the spool)
                    # instead of at its message timeout
                    d.all_down = False
                    d.purge_queued(in_flight=True)
                if d.fatal:
                    self._replace_producer()
                if d.check_stall(now):
                    d.purge_queued()  # queued, not sent: spool them now rather than at their timeout
                self._replay(now)
                self._update_stats()
            except Exception:  # noqa: BLE001 - the daemon keeps running; the spool keeps the records
                log.exception("Kafka sink worker error (continuing)")
                time.sleep(0.1)

    def _spool_failed(self) -> None:
        """Lock held: records librdkafka reported failed go to the spool, with their topic and headers."""
        for key, value, topic, headers in self._delivery.take_failed():
            self._spool_records([key], [value], self._meta.encode(topic, headers))

    def _purge_producer(self) -> None:
        """Take back what the producer still holds: the delivery reports of purged records
        put them in the delivery state's failed list, which the caller spools."""
        self._delivery.purge_queued(in_flight=True)
        try:
            self._delivery.producer.flush(1.0)
        except Exception:  # noqa: BLE001 - a producer being replaced or closed may refuse
            pass

    def _replace_producer(self) -> None:
        d = self._delivery
        log.info("Kafka at %s: starting a fresh producer (%s)", self.bootstrap, d.reason)
        self._purge_producer()
        with self._lock:
            self._spool_failed()
            self._chunk = None  # its records are still in the spool
            d.produced = d.acked + d.failed_n + d.poison  # the old producer's records are all accounted for
            d.create()
            d.restarts += 1
        self.stats.extra["producer_restarts"] = d.restarts

    def _probe(self) -> bool:
        """Does the broker answer a metadata request for the topic (which also creates it
        where topics are auto-created)?"""
        why = tcp_probe(self.servers, 1.0)
        if why is None:
            try:
                self._delivery.producer.list_topics(self.topic, timeout=min(2.0, self.settings.request_timeout_ms / 1000))
                return True
            except Exception as e:  # noqa: BLE001
                why = str(e)
        self._probe_failures += 1
        d = self._delivery
        if not d.down_logged:
            d.down_logged = True
            log.warning("Kafka at %s cannot be used (%s); spooling predictions to %s, retrying every %g s",
                        self.bootstrap, why, self.spool_dir, self.retry_interval_s)
        return False

    def _replay(self, now: float) -> None:
        d = self._delivery
        chunk = self._chunk
        if chunk is not None:
            if not chunk.done:
                if now - chunk.t0 > self._msg_timeout_s + 1:
                    # not even a timeout report: librdkafka is wedged (an idempotent producer
                    # whose broker forgot its producer id waits for ever); a fresh one is not
                    with self._lock:
                        self._chunk = None
                    d.go(AWAY, "replay from the spool got no answer")
                    d.fatal = True
                    self._next_probe = now
                return
            with self._lock:
                self._chunk = None
                if chunk.ok:
                    self._spool.commit(chunk.start + chunk.n)
                    self._replayed += chunk.acked
                    if chunk.poison:
                        self._dropped += chunk.poison
                        log.error("Kafka at %s rejected %d spooled prediction(s) for good: dropped",
                                  self.bootstrap, chunk.poison)
                    if d.state != UP:
                        d.go(UP, "a replayed chunk was acknowledged")
                else:
                    self._failed_other += chunk.failed
                    self._probe_failures += 1
                    d.go(AWAY, f"replay from the spool failed ({chunk.error})")
                    if chunk.acked == 0:
                        # nothing of it got through: start afresh (new connections, metadata and
                        # producer id; an idempotent producer whose broker lost its state stays
                        # wedged otherwise)
                        d.fatal = True
                    self._next_probe = now + self.retry_interval_s
                    return
        spool_n = len(self._spool)
        if d.state != UP:
            if now < self._next_probe:
                return
            self._next_probe = now + self.retry_interval_s
            if d.pending() > 0 and d.state == STALLED:
                return  # records still in flight: their answer (or timeout) comes first
            if not self._probe():
                return
            if spool_n == 0:
                d.go(UP, "the broker answers")
                return
        if spool_n == 0:
            return
        n = self.drain_chunk if d.state == UP else self.probe_chunk
        start, records = self._spool.peek_seq(n)
        if not records:
            return
        chunk = Chunk(start, len(records), probe=d.state != UP)
        produce = d.producer.produce
        decode = self._meta.decode
        for i, (key, value, meta) in enumerate(records):
            topic, headers = decode(meta)
            try:
                produce(topic, value, key, headers=headers, on_delivery=chunk.report)
            except BufferError:
                left = len(records) - i
                chunk.pending -= left
                chunk.failed += left
                chunk.error = "librdkafka's queue is full"
                break
            except Exception:  # noqa: BLE001 - refused for good (too large)
                chunk.pending -= 1
                chunk.poison += 1
        self._chunk = chunk

    def _update_stats(self) -> None:
        s, d = self._spool, self._delivery
        st = self.stats
        st.delivered = d.acked + self._replayed
        st.respooled_delivered = self._replayed
        st.failed = d.failed_n + d.poison + self._failed_other
        st.dropped = self._dropped + d.poison
        st.spool_bytes = s.bytes
        st.extra["spool_records"] = len(s)
        st.extra["spool_discarded_on_open"] = s.discarded
        st.extra["spool_disk_full"] = s.disk_full
        st.extra["broker_up"] = d.state == UP
        st.extra["state"] = d.state
        st.extra["producer_restarts"] = d.restarts
