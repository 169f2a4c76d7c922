"""Held-out splits that do not flatter the model.

- ``capture``: whole captures (files) are held out, per class, so no window of a test
  capture was seen in training — the honest measure for a model meant for new traffic.
- ``time``: within each capture, the last part is held out (a model is always run on
  traffic newer than it was trained on).
- ``stratified``: rows at random per class. Only when asked: neighbouring windows of one
  capture are near copies, so a random split leaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """Indices of the train/validation/test parts and how they were chosen."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    method: str
    detail: dict

    def describe(self) -> dict:
        return {"method": self.method, "train": int(len(self.train)), "validation": int(len(self.val)),
                "test": int(len(self.test)), **self.detail}


def _majority_label(y: np.ndarray, groups: np.ndarray, benign: int | None = None) -> dict[int, int]:
    """Each capture's class: its most frequent one, or with ``benign`` given, its most
    frequent attack class when it has any (an attack capture is mostly its victims' benign
    traffic: a man in the middle's)."""
    out = {}
    for g in np.unique(groups):
        counts = np.bincount(y[groups == g])
        if benign is not None and benign < len(counts) and counts.sum() > counts[benign]:
            counts = counts.copy()
            counts[benign] = 0
        out[int(g)] = int(counts.argmax())
    return out


def capture_split_possible(y: np.ndarray, groups: np.ndarray, benign: int | None = None) -> bool:
    """True when every class has at least two captures (one to train on, one to test)."""
    maj = _majority_label(y, groups, benign)
    counts = np.bincount(list(maj.values()), minlength=int(y.max()) + 1)
    return bool((counts[np.unique(y)] >= 2).all())


def make_split(y: np.ndarray, groups: np.ndarray, order: np.ndarray, method: str, test_fraction: float,
               val_fraction: float, seed: int, benign: int | None = None) -> Split:
    """Split by ``method`` (auto, capture, time, stratified); validation comes out of the
    training part, stratified, for early stopping."""
    rng = np.random.default_rng(seed)
    n = len(y)
    detail: dict = {"test_fraction": test_fraction, "seed": seed}
    if method == "auto":
        method = "capture" if capture_split_possible(y, groups, benign) else "time"
        detail["chosen_by"] = "auto"
    if method == "capture":
        if not capture_split_possible(y, groups, benign):
            raise ValueError("a split by capture needs at least two captures (files) of every class")
        maj = _majority_label(y, groups, benign)
        test_groups = []
        for c in sorted(set(maj.values())):
            gs = np.array(sorted(g for g, m in maj.items() if m == c))
            rng.shuffle(gs)
            k = min(max(1, int(round(len(gs) * test_fraction))), len(gs) - 1)
            test_groups += gs[:k].tolist()
        is_test = np.isin(groups, test_groups)
        detail["test_captures"] = sorted(int(g) for g in test_groups)
    elif method == "time":
        is_test = np.zeros(n, dtype=bool)
        for g in np.unique(groups):
            for c in np.unique(y[groups == g]):
                idx = np.flatnonzero((groups == g) & (y == c))
                idx = idx[np.argsort(order[idx], kind="stable")]
                k = int(round(len(idx) * test_fraction))
                if len(idx) >= 2:
                    is_test[idx[len(idx) - max(k, 1):]] = True
    elif method == "stratified":
        is_test = np.zeros(n, dtype=bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            is_test[idx[:int(round(len(idx) * test_fraction))]] = True
    else:
        raise ValueError(f"unknown split {method!r}")
    train_all = np.flatnonzero(~is_test)
    test = np.flatnonzero(is_test)
    val_mask = np.zeros(len(train_all), dtype=bool)
    for c in np.unique(y[train_all]):
        pos = np.flatnonzero(y[train_all] == c)
        rng.shuffle(pos)
        k = int(round(len(pos) * val_fraction))
        if len(pos) >= 3:
            val_mask[pos[:max(k, 1)]] = True
    return Split(train=train_all[~val_mask], val=train_all[val_mask], test=test, method=method, detail=detail)
