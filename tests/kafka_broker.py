"""The test broker lives in the package (the demo starts one too); re-exported here,
with the one way tests read a topic back (confluent-kafka, as the daemon's consumers)."""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from ids_daemon.devbroker import TansuBroker, TansuNotFound, free_port, tansu_binary  # noqa: F401


class Record(NamedTuple):
    """One record read back (the fields tests look at)."""

    key: bytes | None
    value: bytes
    headers: list
    partition: int
    offset: int
    timestamp: int


def open_reader(bootstrap: str, topic: str, timeout: float = 20.0):
    """A confluent-kafka consumer assigned every partition of ``topic`` from the
    beginning (no group join), or None when the topic has no partitions in time."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100, "logger": _Quiet()})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            md = c.list_topics(topic, timeout=2.0).topics.get(topic)
            if md is not None and md.error is None and md.partitions:
                c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.partitions)])
                return c
        except Exception:  # noqa: BLE001 - broker not (back) yet
            pass
        time.sleep(0.2)
    c.close()
    return None


def poll_records(c, timeout: float = 0.1) -> list[Record]:
    """What ``c`` has now (errors, such as a broker going away, are skipped)."""
    return [Record(m.key(), m.value(), list(m.headers() or []), m.partition(), m.offset(), m.timestamp()[1])
            for m in c.consume(1000, timeout=timeout) if m.error() is None]


def read_topic(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 20.0,
               idle: float = 0.5) -> list[Record]:
    """Every record of ``topic`` from the beginning of each partition, until ``expected``
    arrived and ``idle`` seconds passed with nothing new (to catch duplicates), or
    ``timeout``; with ``expected`` None, until nothing new came for ``idle`` seconds."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    c = open_reader(bootstrap, topic, timeout)
    if c is None:
        return out
    try:
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            got = poll_records(c)
            if got:
                last_new = time.monotonic()
                out.extend(got)
            elif (expected is None or len(out) >= expected) and time.monotonic() - last_new >= idle:
                break
    finally:
        c.close()
    return out


class _Quiet:
    def log(self, *a) -> None:
        pass
