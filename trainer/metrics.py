"""Classification metrics and the report files (metrics.json, PNGs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ids_daemon.model.classes import is_benign


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support, confusion matrix
    (rows: true class, columns: predicted), and the benign false-positive rate."""
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # classes absent from the evaluated data do not count in the means
    n = int(support.sum())
    out: dict[str, Any] = {
        "samples": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "labels": list(classes),
    }
    benign = [i for i, c in enumerate(classes) if is_benign(c)]
    if benign:
        b = benign[0]
        nb = cm[b].sum()
        out["benign_false_positive_rate"] = float((nb - cm[b, b]) / nb) if nb else None
        attack = [i for i in range(k) if i != b]
        na = cm[attack].sum()
        out["attack_detection_rate"] = float((na - cm[attack, b].sum()) / na) if na else None
    return out


def benign_index(classes: list[str]) -> int | None:
    """Index of the benign class, or None."""
    return next((i for i, c in enumerate(classes) if is_benign(c)), None)


def choose_threshold(p_attack: np.ndarray, weights: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold t (is_attack = p_attack >= t) at which at most
    ``target_fpr`` of the benign weight (packets) is flagged.

    Ties at the cut make it higher, never lower, so the rate on the data it was chosen
    on never exceeds the target. No benign data: 0.5.
    """
    p = np.asarray(p_attack, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.size == 0 or w.sum() <= 0:
        return 0.5
    order = np.argsort(-p, kind="stable")
    ps, cw = p[order], np.cumsum(w[order])
    allowed = target_fpr * w.sum()
    # flagging everything with p >= ps[k] costs cw[last index with that value]
    k = int(np.searchsorted(cw, allowed, side="right"))  # rows that fit in the budget
    if k >= len(ps):
        return float(np.nextafter(ps[-1], -np.inf)) if ps[-1] > 0 else 0.0
    t = float(np.nextafter(ps[k], np.inf))  # just above the first row that does not fit
    return min(max(t, 1e-6), 1.0)


def binary_rates(y: np.ndarray, p_attack: np.ndarray, weights: np.ndarray, classes: list[str],
                 threshold: float | np.ndarray) -> dict[str, Any]:
    """Shares of benign and attack weight (packets) flagged at ``threshold`` (one, or one per row)."""
    b = benign_index(classes)
    flagged = np.asarray(p_attack) >= threshold
    w = np.asarray(weights, dtype=np.float64)
    benign = np.asarray(y) == b
    bw, aw = w[benign].sum(), w[~benign].sum()
    return {"threshold": float(threshold) if np.ndim(threshold) == 0 else None,
            "benign_flagged": float(w[benign & flagged].sum() / bw) if bw else None,
            "attack_flagged": float(w[~benign & flagged].sum() / aw) if aw else None}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def plot_confusion(path: Path, metrics: dict[str, Any], title: str) -> None:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    labels = metrics["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.32 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\nmacro-F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}", fontsize=9)
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: Path, history: dict[str, list[float]]) -> None:
    """Loss and accuracy/macro-F1 per epoch, training and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = np.arange(1, len(history["train_loss"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, history["train_loss"], label="train")
    a.plot(ep, history["val_loss"], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(ep, history["train_accuracy"], label="train accuracy")
    b.plot(ep, history["val_accuracy"], label="validation accuracy")
    b.plot(ep, history["val_macro_f1"], label="validation macro-F1")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
