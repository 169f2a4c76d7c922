"""Spooled records and their replay: what the sink keeps on disk while the broker is
away, and how it sends it back in order.

Each spooled record keeps its topic and headers (in the spool's ``meta``), so a record
spooled for topic ``t1`` is delivered to ``t1`` whichever run replays it, with the
headers it had. Records of the previous spool format carry no meta: they go to the
replaying sink's topic with its headers.

The replay sends a chunk from the head of the spool and commits it out of the spool
only once every record of the chunk was acknowledged; a chunk with a failure stays
(acknowledged records of it are sent again: duplicates, never losses).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

Headers = list  # [(str, bytes)]


class MetaCodec:
    """(topic, headers) <-> the spool's meta bytes, cached both ways (one sink writes few
    distinct combinations: one per schema)."""

    def __init__(self, default_topic: str, default_headers: Headers):
        self.default = (default_topic, list(default_headers))
        self._enc: dict[tuple, bytes] = {}
        self._dec: dict[bytes, tuple[str, Headers]] = {}

    def encode(self, topic: str, headers: Headers) -> bytes:
        """The meta of a record sent to ``topic`` with ``headers``."""
        k = (topic, tuple(headers))
        m = self._enc.get(k)
        if m is None:
            m = orjson.dumps({"t": topic, "h": [[hk, hv.decode("latin-1")] for hk, hv in headers]})
            self._enc[k] = m
        return m

    def decode(self, meta: bytes) -> tuple[str, Headers]:
        """(topic, headers) of a spooled record; the defaults for a record without meta."""
        if not meta:
            return self.default
        d = self._dec.get(meta)
        if d is None:
            o = orjson.loads(meta)
            d = (o["t"], [(hk, hv.encode("latin-1")) for hk, hv in o["h"]])
            if len(self._dec) < 1024:
                self._dec[meta] = d
        return d


@dataclass
class Chunk:
    """Records from the head of the spool being sent; delivery reports update it (on the
    sink's worker thread, which polls the producer)."""

    start: int  # spool sequence number of the first record
    n: int
    probe: bool  # sent while the broker was away: one small chunk to see if it is back
    pending: int = 0
    acked: int = 0
    failed: int = 0
    poison: int = 0
    error: str | None = None
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.pending = self.n

    def report(self, err, _msg) -> None:
        """librdkafka's delivery report for one record of the chunk."""
        self.pending -= 1
        if err is None:
            self.acked += 1
        elif is_poison(err):
            self.poison += 1
        else:
            self.failed += 1
            self.error = err.str()

    @property
    def done(self) -> bool:
        return self.pending <= 0

    @property
    def ok(self) -> bool:
        return self.done and self.failed == 0


def is_poison(err) -> bool:
    """An error the same record would get on every retry: dropped (counted), never spooled."""
    return err.code() in _POISON_CODES or (err.code() in _poison_codes())


_POISON_CODES: set = set()


def _poison_codes() -> set:
    if not _POISON_CODES:
        from confluent_kafka import KafkaError

        for name in ("MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "INVALID_MSG", "INVALID_RECORD",
                     "INVALID_MSG_SIZE", "CORRUPT_MESSAGE"):
            code = getattr(KafkaError, name, None)
            if code is not None:
                _POISON_CODES.add(code)
    return _POISON_CODES
