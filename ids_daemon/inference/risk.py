"""Risk score and severity, following the seed's ``predict_attack_risk``: the predicted
class's family weight times the model's confidence, cut into four severities."""

from __future__ import annotations

import numpy as np

# How much damage a family of attack does to an IoT gateway's network, in [0, 1].
FAMILY_WEIGHT: dict[str, float] = {
    "Benign": 0.0, "Recon": 0.4, "Spoofing": 0.7, "BruteForce": 0.7, "Web": 0.8,
    "DoS": 0.8, "DDoS": 0.9, "Mirai": 1.0,
}
UNKNOWN_WEIGHT = 0.5  # a class outside the CICIoT2023 taxonomy (labels used as they are)
SEVERITIES = ("low", "medium", "high", "critical")
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


def severity_index(risk: np.ndarray) -> np.ndarray:
    """0 low (< 0.2), 1 medium (< 0.5), 2 high (< 0.8), 3 critical."""
    return np.searchsorted(_CUTS, risk, side="right")
