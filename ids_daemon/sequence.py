"""`WindowBatch` → `SequenceBatch`: the last T windows of each key.

A sequence is ready every time its key completes a window, and when a key expires
with a partial window (the meter hands that window on with its close reason), so the
end of a flow is classified too. A key seen fewer than T times repeats its first
window at the front, the same rule the trainer uses (`ids_daemon.model.sequences`).
History is bounded like the flow table: at most ``max_keys`` keys, least recently
used first out; a key whose last window was final (idle, active, evicted, end) is
forgotten at once. Its memory bound is max_keys × T × F float32 (the history) plus
16 bytes a key, reserved at start (pages are touched as keys arrive); the daemon
checks it against the memory it may use (`ids_daemon.memory`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .features.window import REASON_FULL, WindowBatch


@dataclass
class SequenceBatch:
    """Sequences ready for the model, with the window that completed each one."""

    x: np.ndarray  # (n, T, F) float32 raw values of the model's columns
    windows: WindowBatch  # the n windows that completed them (identity for the predictions)
    lengths: np.ndarray  # (n,) windows of real history in each sequence (1..T)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def concat(cls, parts: list["SequenceBatch"]) -> "SequenceBatch":
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.x for p in parts]), WindowBatch.concat([p.windows for p in parts]),
                   np.concatenate([p.lengths for p in parts]))

    def take(self, idx: slice | np.ndarray) -> "SequenceBatch":
        return SequenceBatch(self.x[idx], self.windows.take(idx), self.lengths[idx])


class SequenceBuffer:
    """Keeps the last ``t`` windows (model columns ``cols``) of up to ``max_keys`` keys."""

    def __init__(self, t: int, cols: np.ndarray, max_keys: int):
        self.t = int(t)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.max_keys = int(max_keys)
        f = len(self.cols)
        self._hist = np.zeros((self.max_keys, self.t, f), dtype=np.float32)
        self._count = np.zeros(self.max_keys, dtype=np.int64)
        self._slot: OrderedDict[int, int] = OrderedDict()
        # free slots as a stack in an array: a list of max_keys Python ints would cost
        # 36 bytes a key up front (2.3 GiB at 2^26 keys)
        self._free = np.arange(self.max_keys - 1, -1, -1, dtype=np.int64)
        self._nfree = self.max_keys
        self.evicted = 0
        self.sequences = 0

    def __len__(self) -> int:
        return len(self._slot)

    def push(self, wb: WindowBatch) -> SequenceBatch:
        """One sequence per window, in window order."""
        n = len(wb)
        f = len(self.cols)
        out = np.empty((n, self.t, f), dtype=np.float32)
        lengths = np.empty(n, dtype=np.int64)
        feats = wb.model_features()[:, self.cols].astype(np.float32)
        keys = wb.key.tolist()
        final = (wb.reason != REASON_FULL).tolist()
        t = self.t
        ring = np.arange(t)
        for i in range(n):  # per window, not per packet: windows are N times fewer
            k = keys[i]
            s = self._slot.get(k)
            if s is None:
                s = self._new_slot(k)
            else:
                self._slot.move_to_end(k)
            c = int(self._count[s])
            self._hist[s, c % t] = feats[i]
            c += 1
            self._count[s] = c
            have = min(c, t)
            # oldest to newest; missing history repeats the key's first window
            order = (c - have + ring) % t
            seq = self._hist[s, order[:have]]
            if have < t:
                out[i, : t - have] = seq[0]
            out[i, t - have:] = seq
            lengths[i] = have
            if final[i]:
                self._release(k)
        self.sequences += n
        return SequenceBatch(out, wb, lengths)

    def _new_slot(self, k: int) -> int:
        if not self._nfree:
            _, old_slot = self._slot.popitem(last=False)  # the least recently used key goes
            self._push_free(old_slot)
            self.evicted += 1
        self._nfree -= 1
        s = int(self._free[self._nfree])
        self._count[s] = 0
        self._slot[k] = s
        return s

    def _push_free(self, s: int) -> None:
        self._free[self._nfree] = s
        self._nfree += 1

    def _release(self, k: int) -> None:
        s = self._slot.pop(k, None)
        if s is not None:
            self._push_free(s)
