"""`WindowBatch` → `SequenceBatch`: the last T windows of each key.

A sequence is ready every time its key completes a window, and when a key expires
with a partial window (the meter hands that window on with its close reason), so the
end of a flow is classified too. A key seen fewer than T times repeats its first
window at the front, the same rule the trainer uses (`ids_daemon.model.sequences`).
History is bounded like the flow table: at most ``max_keys`` keys, least recently
used first out; a key whose last window was final (idle, active, evicted, end) is
forgotten at once. Its memory bound is max_keys × T × F float32 (the history) plus
the key table (a 48-byte node a key and an index of 16-32 bytes a key), reserved at
start (pages are touched as keys arrive); the daemon checks it against the memory it
may use (`ids_daemon.memory`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from .detectors._scan_kernel import C_VAL, M_EVICT, M_SIZE, new_table, t_delete, t_touch
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
    """Keeps the last ``t`` windows (model columns ``cols``) of up to ``max_keys`` keys.

    The keys live in a compiled LRU table (`ids_daemon.detectors._scan_kernel`'s: an
    open-addressing index over nodes in a doubly linked list, least recently used first) whose
    node number is the key's row of the history, and `push` is one compiled pass over the
    windows: the per-window Python loop it replaced (an OrderedDict of slots) was the capture
    thread's largest cost on benign traffic, 15 µs a window against the meter's 0.3 µs a packet."""

    def __init__(self, t: int, cols: np.ndarray, max_keys: int):
        self.t = int(t)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.max_keys = int(max_keys)
        f = len(self.cols)
        self._hist = np.zeros((self.max_keys, self.t, f), dtype=np.float32)
        # one value per node: the key's windows so far (its history's write position)
        self._table = new_table(self.max_keys, 1)
        self.sequences = 0

    def __len__(self) -> int:
        return int(self._table[0][M_SIZE])

    @property
    def evicted(self) -> int:
        """Keys the table let go, least recently used first, to make room for a new one."""
        return int(self._table[0][M_EVICT])

    @property
    def nbytes(self) -> int:
        """Bytes the buffer holds (history, the table's nodes and its index)."""
        meta, idx, nodes, _ = self._table
        return self._hist.nbytes + meta.nbytes + idx.nbytes + nodes.nbytes

    def push(self, wb: WindowBatch) -> SequenceBatch:
        """One sequence per window, in window order."""
        n = len(wb)
        out = np.empty((n, self.t, len(self.cols)), dtype=np.float32)
        lengths = np.empty(n, dtype=np.int64)
        if n:
            feats = np.ascontiguousarray(wb.model_features()[:, self.cols], dtype=np.float32)
            meta, idx, nodes, _ = self._table
            _push(meta, idx, nodes, self._hist, feats, np.ascontiguousarray(wb.key, dtype=np.uint64),
                  np.ascontiguousarray(wb.reason != REASON_FULL), out, lengths)
        self.sequences += n
        return SequenceBatch(out, wb, lengths)


@nb.njit(cache=True, nogil=True)
def _push(meta, idx, nodes, hist, feats, keys, final, out, lengths):
    """`SequenceBuffer.push`'s pass: each window into its key's ring of the last T (a new key
    takes a node, evicting the least recently used when the table is full), its sequence
    oldest to newest into ``out`` (history a key lacks repeats its first window, the trainer's
    rule), and a key whose window was final let go at once."""
    t = hist.shape[1]
    f = hist.shape[2]
    zero = np.uint64(0)
    for i in range(keys.size):
        s, new, _ = t_touch(meta, idx, nodes, keys[i], zero, zero)
        c = np.int64(0) if new else nodes[s, C_VAL]
        ring = hist[s]
        ring[c % t, :] = feats[i]
        c += 1
        nodes[s, C_VAL] = c
        have = min(c, t)
        for j in range(t):
            # out's first t - have steps repeat the oldest window held (the key's first)
            r = ring[(c - have + max(j - (t - have), 0)) % t]
            o = out[i, j]
            for k in range(f):
                o[k] = r[k]
        lengths[i] = have
        if final[i]:
            t_delete(meta, idx, nodes, s)


def warm_up() -> None:
    """Compile (or load) `_push` (ids-daemon compile; the pipeline's first batch otherwise)."""
    from .features.window import WindowBatch as _WB

    wb = _WB.empty(2)
    SequenceBuffer(2, np.arange(3), 16).push(wb)
