"""Stop a packet source after a number of frames or seconds (``run --count/--duration``)."""

from __future__ import annotations

import time

from .base import PacketSource, SourceStats
from .batch import PacketBatch


class LimitedSource:
    """Wraps an opened `PacketSource`; ``next_batch`` ends the stream (returns None) once
    ``count`` frames were handed on (the batch that crosses it is cut) or ``duration``
    seconds passed since the first call. Everything else is the wrapped source's."""

    def __init__(self, source: PacketSource, count: int | None = None, duration: float | None = None):
        self.source = source
        self.name = source.name
        self.count = count
        self.duration = duration
        self.frames = 0
        self._deadline: float | None = None

    @property
    def stats(self) -> SourceStats:
        """The wrapped source's counters."""
        return self.source.stats

    def __getattr__(self, item: str):
        # total_bytes, bytes_read, read_kernel_stats, ... of the wrapped source
        return getattr(self.source, item)

    def open(self) -> None:
        """Nothing to do: the wrapped source is open already."""

    def next_batch(self) -> PacketBatch | None:
        """The wrapped source's next batch, cut at ``count``; None once a limit is reached."""
        now = time.monotonic()
        if self._deadline is None and self.duration is not None:
            self._deadline = now + self.duration
        if self._deadline is not None and now >= self._deadline:
            return None
        if self.count is not None and self.frames >= self.count:
            return None
        batch = self.source.next_batch()
        if batch is None or self.count is None:
            if batch is not None:
                self.frames += len(batch)
            return batch
        if self.frames + len(batch) > self.count:
            batch = batch.take(slice(0, self.count - self.frames))
        self.frames += len(batch)
        return batch

    def close(self) -> None:
        """Close the wrapped source."""
        self.source.close()
