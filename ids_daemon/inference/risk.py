"""Risk score and severity, following the seed's ``predict_attack_risk``: the predicted
class's family weight times the model's confidence, cut into four severities."""

from __future__ import annotations

import numpy as np

from ..predictions.vocabulary import FAMILIES

# How much damage a family of attack does to an IoT gateway's network, in [0, 1].
FAMILY_WEIGHT: dict[str, float] = {
    "Benign": 0.0, "Recon": 0.4, "Spoofing": 0.7, "BruteForce": 0.7, "Web": 0.8,
    "DoS": 0.8, "DDoS": 0.9, "Mirai": 1.0,
}
assert set(FAMILY_WEIGHT) == set(FAMILIES), "a family without a weight"
UNKNOWN_WEIGHT = 0.5  # a class outside the CICIoT2023 taxonomy (labels used as they are)
_CUTS = np.array([0.2, 0.5, 0.8])


def family_weights(families: list[str]) -> np.ndarray:
    """Weight of each class's family (benign names weigh 0)."""
    return np.array([FAMILY_WEIGHT.get(f, 0.0 if f.lower().startswith("benign") else UNKNOWN_WEIGHT)
                     for f in families], dtype=np.float64)


def risk_scores(probs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class, confidence, risk) for (n, classes) probabilities."""
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    return pred, conf, np.clip(weights[pred] * conf, 0.0, 1.0)


def kind_thresholds(op: dict) -> tuple[float, float] | None:
    """(flow, pool) thresholds of an operating point chosen per window kind (`by_window_kind`,
    ids-trainer's ``threshold_by_window_kind``); None when it has one threshold for all windows."""
    kinds = op.get("by_window_kind")
    if not isinstance(kinds, dict) or op.get("threshold") is None:
        return None
    return float(kinds["flow"]["threshold"]), float(kinds["pool"]["threshold"])


def by_kind(kt: tuple[float, float], pools: np.ndarray) -> np.ndarray:
    """Each row's threshold of the (flow, pool) pair ``kt`` (``pools``: its window is a pool)."""
    return np.where(pools, kt[1], kt[0])


def row_thresholds(op: dict, pools: np.ndarray | None) -> float | np.ndarray | None:
    """The threshold of each row (``pools``: its window is a pool of short flows) under the
    operating point ``op``: one number when it has one threshold for all windows (or no kinds are
    given), else one per row."""
    kt = kind_thresholds(op)
    if kt is None or pools is None:
        return op.get("threshold")
    return by_kind(kt, pools)


def decide(probs: np.ndarray, weights: np.ndarray, threshold: float | np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(class, confidence, risk, p_attack, is_attack) under an operating point.

    p_attack = 1 - P(benign). With a threshold (one, or one per row), ``is_attack = p_attack >= threshold``
    and the class named is the likeliest attack class when it is an attack, the benign
    class otherwise; risk is the named family's weight times p_attack (0 when benign).
    Without one (models older than operating points), the argmax rule of `risk_scores`.
    """
    benign = weights == 0.0
    if not benign.any():
        pred, conf, risk = risk_scores(probs, weights)
        return pred, conf, risk, np.ones(len(pred)), np.ones(len(pred), dtype=bool)
    b = int(np.flatnonzero(benign)[0])
    p_attack = np.clip(1.0 - probs[:, b], 0.0, 1.0)
    if threshold is None:
        pred, conf, risk = risk_scores(probs, weights)
        return pred, conf, risk, p_attack, ~benign[pred]
    is_attack = p_attack >= threshold
    masked = np.where(benign[None, :], -1.0, probs)
    pred = np.where(is_attack, masked.argmax(axis=1), b)
    conf = probs[np.arange(len(pred)), pred]
    risk = np.where(is_attack, np.clip(weights[pred] * p_attack, 0.0, 1.0), 0.0)
    return pred, conf, risk, p_attack, is_attack


def severity_index(risk: np.ndarray) -> np.ndarray:
    """0 low (< 0.2), 1 medium (< 0.5), 2 high (< 0.8), 3 critical."""
    return np.searchsorted(_CUTS, risk, side="right")
