"""Overload: what the capture thread holds back while the worker's queue is full (live).

The worker is given each key's newest sequence rather than every sequence: a key's newer
sequence holds its last T windows, the older ones' windows among them (all of them once
it has T windows of history), so a verdict on the newest judges the key on what it did
most recently. While the queue is full, the sequences built meanwhile wait here, and of
those only each key's newest is kept (``coalesced``: the superseded older ones). The
pending work is then bounded by the number of distinct keys, not by the packet rate; at
most ``max_keys`` keys wait, and a key new to the pending set beyond that is dropped
(``dropped``): the keys already waiting keep their place, since a key still active
builds another sequence soon, while one that ended waits with its only one.

Array-based: one `np.unique` over the pending keys per compaction, which runs only when
the pending rows pass ``max_keys`` or when they are about to be queued.
"""

from __future__ import annotations

import numpy as np

from ..sequence import SequenceBatch


class Coalescer:
    """Sequences waiting for room in the worker's queue, newest per key."""

    def __init__(self, max_keys: int):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = int(max_keys)
        self._parts: list[SequenceBatch] = []
        self._rows = 0
        # since the last pop_counts: the pipeline folds them into its counters
        self.coalesced = 0  # sequences superseded by a newer one of the same key
        self.dropped = 0  # sequences of keys that found no room (more than max_keys distinct keys)

    def __len__(self) -> int:
        return self._rows

    def add(self, seq: SequenceBatch) -> None:
        """Hold ``seq`` behind what already waits."""
        if not len(seq):
            return
        before = self._rows
        self._parts.append(seq)
        self._rows += len(seq)
        if self._rows > self.max_keys:  # rows past the bound: duplicates, or keys with no room
            self._compact(before)

    def pop_counts(self) -> tuple[int, int]:
        """(coalesced, dropped) since the last call."""
        out = (self.coalesced, self.dropped)
        self.coalesced = self.dropped = 0
        return out

    def take(self) -> SequenceBatch | None:
        """Everything waiting, newest per key, in the order of each key's newest sequence;
        None when nothing waits."""
        if not self._rows:
            return None
        self._compact(self._rows)
        out = self._parts[0]
        self._parts, self._rows = [], 0
        return out

    def _compact(self, held: int) -> None:
        """One row per key, the newest; past ``max_keys`` keys, the keys of the first ``held``
        rows (those that waited before the last `add`: never more than ``max_keys`` keys,
        as every `add` ends under the bound) keep their place."""
        merged = SequenceBatch.concat(self._parts)
        keys = merged.windows.key
        n = len(keys)
        # the newest row of each key is its first in the reversed order
        _, first_rev = np.unique(keys[::-1], return_index=True)
        keep = np.sort(n - 1 - first_rev)
        if len(keep) > self.max_keys:
            old = np.isin(keys[keep], keys[:held]) if held else np.zeros(len(keep), dtype=bool)
            room = self.max_keys - int(old.sum())
            new = np.flatnonzero(~old)
            # the new keys whose newest sequence came first get the room left (a full queue drops what comes last)
            ok = old.copy()
            ok[new[:room]] = True
            keep = keep[ok]
            lost = np.isin(keys, keys[keep], invert=True)
            n_lost = int(lost.sum())
        else:
            n_lost = 0
        self.dropped += n_lost
        self.coalesced += n - len(keep) - n_lost
        out = merged.take(keep)
        self._parts, self._rows = [out], len(out)
