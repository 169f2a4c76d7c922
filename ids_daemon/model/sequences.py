"""Sequences of the last T windows of one key: the same rule in training and serving."""

from __future__ import annotations

import numpy as np


def last_t_index(group: np.ndarray, order: np.ndarray, t: int) -> np.ndarray:
    """For each row, the row indices of its key's last ``t`` windows ending at it.

    ``group`` identifies the key of each row (any sortable values), ``order`` its
    position in time. Returns (n, t) indices; a key's first rows, with fewer than ``t``
    windows before them, repeat their key's first window at the front, so a short
    sequence looks like a key that was steady before it was seen.
    """
    n = group.shape[0]
    out = np.empty((n, t), dtype=np.int64)
    if n == 0:
        return out
    idx = np.lexsort((order, group))  # rows sorted by key, then time
    g = group[idx]
    start_of_run = np.ones(n, dtype=bool)
    start_of_run[1:] = g[1:] != g[:-1]
    run_start = np.maximum.accumulate(np.where(start_of_run, np.arange(n), 0))
    pos = np.arange(n)
    for k in range(t):
        back = t - 1 - k
        src = np.maximum(pos - back, run_start)
        out[idx, k] = idx[src]
    return out


def window_sequences(windows, columns: np.ndarray, t: int) -> np.ndarray:
    """(n, t, len(columns)) float32: the last ``t`` windows of each window's key, model
    columns ``columns`` (indices into the 46), as the daemon's sequence buffer builds them."""
    idx = last_t_index(windows.key, windows.first_ts, t)
    return windows.model_features()[:, columns].astype(np.float32)[idx]
