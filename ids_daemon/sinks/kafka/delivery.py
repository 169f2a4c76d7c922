"""The delivery state of the Kafka sink: is the broker up, away or stalled, and what
happened to each record librdkafka was given.

* ``UP``: records go straight to librdkafka (its queue, batching, compression,
  retries, idempotence); delivery reports count them.
* ``AWAY``: librdkafka says every broker is down, or a delivery failed: new records go
  to the spool. Every ``retry_interval_s`` the sink probes the broker (a TCP connect,
  then a metadata request) and replays a small chunk of the spool; once that is
  acknowledged, the spool is replayed in order and the state is ``UP`` again.
* ``STALLED``: records are pending in librdkafka but nothing was acknowledged for
  ``stall_timeout_s`` (a hung broker keeps its connections and answers nothing: no
  send fails before ``message.timeout.ms``). New records go to the spool at once;
  those still queued in librdkafka are purged into the spool; those in flight get
  their answer or their timeout. Left the same way as ``AWAY``.

Delivery reports run on the thread that polls the producer (the sink's worker);
``write_batch`` only calls ``produce`` (never blocks: a full librdkafka queue sends the
rest to the spool).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .replay import is_poison

log = logging.getLogger("ids_daemon.sinks")

UP, AWAY, STALLED = "up", "away", "stalled"


class Delivery:
    """The librdkafka producer, its delivery reports and the up/away/stalled state."""

    def __init__(self, conf: dict[str, Any], bootstrap: str, stall_timeout_s: float):
        self.conf = conf
        self.bootstrap = bootstrap
        self.stall_timeout_s = stall_timeout_s
        self.lock = threading.Lock()
        self.state = AWAY  # until the broker answered once
        self.reason = "not connected yet"
        self.producer = None
        self.produced = 0  # handed to librdkafka directly (not spool replays)
        self.acked = 0
        self.failed_n = 0  # delivery reports with an error (spooled)
        self.poison = 0  # rejected for good (dropped, counted)
        self.failed: list[tuple[bytes, bytes, str, list]] = []  # to spool: (key, value, topic, headers)
        self.last_progress = time.monotonic()
        self.last_error: str | None = None
        self.fatal = False  # librdkafka raised a fatal error: the producer must be replaced
        self.all_down = False
        self.down_logged = False
        self.restarts = 0

    # ------------------------------------------------------------------ producer
    def create(self) -> None:
        """A fresh producer (first start, or after a fatal error). librdkafka connects
        in the background and reconnects by itself."""
        from confluent_kafka import Producer

        conf = dict(self.conf)
        conf["on_delivery"] = self._report
        conf["error_cb"] = self._error
        self.producer = Producer(conf)
        self.fatal = False

    def pending(self) -> int:
        """Records given to librdkafka directly with no delivery report yet."""
        return self.produced - self.acked - self.failed_n - self.poison

    def _report(self, err, msg) -> None:
        if err is None:
            self.acked += 1
            self.last_progress = time.monotonic()
            return
        self.last_error = err.str()
        if is_poison(err):
            self.poison += 1
            log.error("Kafka at %s rejected a prediction for good (%s): dropped", self.bootstrap, err.str())
            return
        self.failed_n += 1
        with self.lock:
            self.failed.append((msg.key(), msg.value(), msg.topic(), msg.headers() or []))
        if err.code() not in _purged_codes():
            self.go(AWAY, f"delivery failed ({err.str()})")

    def _error(self, err) -> None:
        from confluent_kafka import KafkaError

        self.last_error = err.str()
        if err.fatal():
            self.fatal = True
            self.go(AWAY, f"fatal producer error ({err.str()})")
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.all_down = True
            self.go(AWAY, f"no broker answers ({err.str()})")

    def go(self, state: str, why: str) -> None:
        """Change state (logged once per change)."""
        with self.lock:
            if state == self.state:
                return
            self.state, self.reason = state, why
        if state == UP:
            if self.down_logged:
                log.warning("Kafka at %s answers again; sending directly", self.bootstrap)
            else:
                log.info("Kafka producer connected to %s", self.bootstrap)
            self.down_logged = False
        elif not self.down_logged:
            log.warning("Kafka at %s: %s; spooling predictions", self.bootstrap, why)
            self.down_logged = True

    def check_stall(self, now: float) -> bool:
        """``UP`` with records pending and nothing acknowledged for ``stall_timeout_s``:
        the broker hangs. Returns True when the state changed to ``STALLED``."""
        if self.state != UP or self.pending() <= 0:
            if self.pending() <= 0:
                self.last_progress = now
            return False
        if now - self.last_progress > self.stall_timeout_s:
            self.go(STALLED, f"no acknowledgement for {self.stall_timeout_s:g} s")
            return True
        return False

    def take_failed(self) -> list[tuple[bytes, bytes, str, list]]:
        with self.lock:
            out, self.failed = self.failed, []
        return out

    def purge_queued(self, in_flight: bool = False) -> None:
        """Fail what librdkafka still holds (its reports put it in ``failed``)."""
        if self.producer is None:
            return
        try:
            self.producer.purge(in_queue=True, in_flight=in_flight, blocking=False)
        except Exception:  # noqa: BLE001 - nothing to purge, or a closed producer
            pass
        self.producer.poll(0)


_PURGED: set = set()


def _purged_codes() -> set:
    if not _PURGED:
        from confluent_kafka import KafkaError

        _PURGED.update({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
    return _PURGED
