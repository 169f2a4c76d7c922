"""Micro-batching: sequences arrive in bursts of any size; the model runs on batches of
at most ``max_batch``, full ones at once, a partial one when its oldest sequence has
waited ``max_wait_ms`` (so a quiet link still gets its predictions within that time)."""

from __future__ import annotations

import time
from typing import Callable

from ..sequence import SequenceBatch


class MicroBatcher:
    """Collects `SequenceBatch`es and hands back batches for the model, in arrival order.

    No thread of its own: the worker asks `timeout` how long it may wait for more input,
    then calls `add` (input arrived), `expired` (the wait ran out) or `flush` (the end,
    or a model switch)."""

    def __init__(self, max_batch: int, max_wait_ms: float, clock: Callable[[], float] = time.monotonic):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = int(max_batch)
        self.max_wait = max(float(max_wait_ms), 0.0) / 1000.0
        self._clock = clock
        self._parts: list[SequenceBatch] = []
        self._n = 0
        self._oldest = 0.0  # when the oldest pending sequence arrived

    def __len__(self) -> int:
        return self._n

    def timeout(self) -> float | None:
        """Seconds until the pending sequences are due (0: now); None when nothing waits."""
        if not self._n:
            return None
        return max(0.0, self._oldest + self.max_wait - self._clock())

    def add(self, seq: SequenceBatch) -> list[SequenceBatch]:
        """Take ``seq``; return the full batches now ready (the rest keeps waiting)."""
        if not len(seq):
            return []
        if not self._n:
            self._oldest = self._clock()
        self._parts.append(seq)
        self._n += len(seq)
        if self._n < self.max_batch:
            return [] if self.timeout() else self.flush()  # max_wait_ms 0: run at once
        return self._cut(force=False)

    def expired(self) -> list[SequenceBatch]:
        """The pending sequences when the oldest has waited ``max_wait_ms``, else nothing."""
        return self.flush() if self._n and self.timeout() == 0.0 else []

    def flush(self) -> list[SequenceBatch]:
        """Everything pending, in batches of at most ``max_batch``."""
        return self._cut(force=True)

    def _cut(self, force: bool) -> list[SequenceBatch]:
        if not self._n:
            return []
        allseq = SequenceBatch.concat(self._parts)
        n, mb = len(allseq), self.max_batch
        out = [allseq.take(slice(i, i + mb)) for i in range(0, n - n % mb if not force else n, mb)]
        done = sum(len(b) for b in out)
        rest = allseq.take(slice(done, n)) if done < n else None
        self._parts = [rest] if rest is not None else []
        self._n = n - done
        # what is left arrived after the batches just cut: its wait starts now (as before)
        self._oldest = self._clock()
        return out
