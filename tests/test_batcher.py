"""The micro-batcher (`ids_daemon.inference.batcher`), in process, on a clock the test moves."""

from __future__ import annotations

import numpy as np
import pytest

from ids_daemon.features.window import WindowBatch
from ids_daemon.inference.batcher import MicroBatcher
from ids_daemon.sequence import SequenceBatch


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def seqs(start: int, n: int) -> SequenceBatch:
    """``n`` sequences whose window keys are start..start+n-1 (their identity in the test)."""
    wb = WindowBatch.empty(n)
    wb.key[:] = np.arange(start, start + n, dtype=np.uint64)
    return SequenceBatch(np.zeros((n, 2, 3), dtype=np.float32), wb, np.ones(n, dtype=np.int64))


def keys(batches: list[SequenceBatch]) -> list[int]:
    return [int(k) for b in batches for k in b.windows.key]


def test_full_batches_go_at_once_in_order_and_the_rest_waits() -> None:
    clock = Clock()
    b = MicroBatcher(4, 20, clock=clock)
    assert b.timeout() is None and b.add(seqs(0, 3)) == [] and len(b) == 3
    assert b.timeout() == pytest.approx(0.02)
    out = b.add(seqs(3, 6))  # 9 pending: two full batches, one left
    assert [len(x) for x in out] == [4, 4] and keys(out) == list(range(8)) and len(b) == 1
    assert keys(b.flush()) == [8] and len(b) == 0 and b.timeout() is None


def test_a_partial_batch_runs_when_its_oldest_sequence_waited_max_wait() -> None:
    clock = Clock()
    b = MicroBatcher(1024, 20, clock=clock)
    b.add(seqs(0, 5))
    clock.t += 0.015
    b.add(seqs(5, 5))
    assert b.timeout() == pytest.approx(0.005)  # counted from the oldest, not the newest
    assert b.expired() == []
    clock.t += 0.005
    assert b.timeout() == 0.0
    out = b.expired()
    assert keys(out) == list(range(10)) and len(b) == 0


def test_zero_wait_runs_every_arrival_and_flush_empties() -> None:
    b = MicroBatcher(3, 0, clock=Clock())
    assert keys(b.add(seqs(0, 2))) == [0, 1]  # max_wait_ms 0: nothing waits
    b2 = MicroBatcher(3, 1000, clock=Clock())
    b2.add(seqs(0, 2))
    b2.add(seqs(2, 5))  # 7: two full batches handed back, one waiting
    assert len(b2) == 1
    assert b2.add(seqs(9, 0)) == [] and len(b2) == 1  # an empty arrival changes nothing
    assert keys(b2.flush()) == [6] and b2.flush() == []


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(0, 20)
