"""Training: Adam with weight decay, class-weighted cross-entropy, validation every epoch,
early stopping on validation macro-F1, the best checkpoint kept, seeds fixed."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ids_daemon.config import Config
from ids_daemon.inference.risk import row_thresholds
from ids_daemon.inference.worker import resolve_device
from ids_daemon.model.artifacts import LoadedModel, save_model
from ids_daemon.model.classes import FAMILY_OF, canonical_class
from ids_daemon.model.encoding import FeatureEncoder
from ids_daemon.model.lstm import RealDataLSTMPredictor


from .dataset import Dataset, iter_batches
from .metrics import (benign_index, binary_rates, choose_threshold, classification_metrics, plot_confusion,
                      plot_curves, write_json)
from .split import Split, make_split


def pick_device(name: str) -> torch.device:
    """``resolve_device``'s choice as a torch device (training always runs in torch)."""
    return torch.device(str(resolve_device(name)))

ENCODER_FIT_ROWS = 500_000  # rows sampled to fit the encoder's quantiles on large data
PRE_ENCODE_BYTES = 1 << 30  # encode everything once when it fits, else per batch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What a training run produced."""

    model: RealDataLSTMPredictor
    encoder: FeatureEncoder
    split: Split
    metrics: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    out: Path | None = None


class _Encoded:
    """Encoded inputs for a set of rows: precomputed when small, per batch otherwise."""

    def __init__(self, ds: Dataset, idx: np.ndarray, enc: FeatureEncoder):
        self.ds, self.idx, self.enc = ds, idx, enc
        size = len(idx) * ds.x.shape[1] * enc.output_size * 4
        self.pre = enc.transform(ds.x[idx]) if size <= PRE_ENCODE_BYTES else None

    def batch(self, pos: np.ndarray) -> np.ndarray:
        if self.pre is not None:
            return self.pre[pos]
        return self.enc.transform(self.ds.x[self.idx[pos]])


def _evaluate(model: nn.Module, data: _Encoded, y: np.ndarray, device: torch.device, loss_fn: nn.Module,
              batch: int) -> tuple[float, np.ndarray]:
    model.eval()
    preds, loss, n = [], 0.0, 0
    with torch.inference_mode():
        for pos in iter_batches(len(y), max(batch, 1024), None):
            xb = torch.from_numpy(data.batch(pos)).to(device)
            yb = torch.from_numpy(y[pos]).to(device)
            logits = model(xb)
            loss += float(loss_fn(logits, yb)) * len(pos)
            n += len(pos)
            preds.append(logits.argmax(1).cpu().numpy())
    return loss / max(n, 1), (np.concatenate(preds) if preds else np.zeros(0, np.int64))


def train(ds: Dataset, cfg: Config, out: Path | None = None, *, progress: bool = True,
          name: str = "ids-lstm", version: str = "1", split: Split | None = None,
          extra: dict[str, Any] | None = None) -> TrainResult:
    """Train on ``ds`` with ``cfg.lstm``; evaluate on the held-out split; write the model
    directory and report to ``out`` when given.

    ``split`` replaces the configured one (the by-source evaluation holds out a whole
    repository). The operating point (the p_attack threshold for the target false-alarm
    rate) is chosen on the validation part's benign sequences, weighted by packets.
    """
    tc, fc = cfg.lstm.train, cfg.lstm.features
    seed_everything(tc.seed)
    # Late in training the LSTM's gradients underflow into denormal floats, which the
    # CPU handles in microcode: measured here, a 20-epoch fold took 40 s with them
    # flushed to zero and over 300 s without. No effect on the results' precision.
    torch.set_flush_denormal(True)
    device = pick_device(tc.device)
    if split is None:
        split = make_split(ds.y, ds.groups, ds.order, tc.split, tc.test_fraction, tc.val_fraction, tc.seed,
                           benign_index(ds.classes))
    if len(split.train) == 0 or (len(split.test) == 0 and len(split.val) == 0):
        raise ValueError("the split left no training or no test data; give more data")
    # a final model trained on everything reports on its validation part (its honest
    # figures come from the by-source evaluation)
    evaluated_on = "held-out test part of the split"
    if len(split.test) == 0:
        split = Split(split.train, split.val, split.val, split.method, split.detail)
        evaluated_on = "validation part (no test part: see the by-source figures)"
    rng = np.random.default_rng(tc.seed)
    fit_rows = ds.x[split.train].reshape(-1, ds.x.shape[2])
    if len(fit_rows) > ENCODER_FIT_ROWS:
        fit_rows = fit_rows[rng.choice(len(fit_rows), ENCODER_FIT_ROWS, replace=False)]
    enc = FeatureEncoder(ds.columns, fc.method, fc.bins).fit(fit_rows)
    mcfg = cfg.lstm.model.model_copy(update={"input_size": enc.output_size, "num_classes": len(ds.classes)})
    model = RealDataLSTMPredictor(mcfg).to(device)

    counts = np.bincount(ds.y[split.train], minlength=len(ds.classes)).astype(np.float64)
    weights = None
    if tc.class_weights:
        # inverse frequency to a power: 1 (the default) is "balanced"; 0.5 still lifts a
        # class 1000x rarer by ~30x without letting a handful of rows dominate the loss
        w = np.where(counts > 0, (counts.sum() / (len(ds.classes) * np.maximum(counts, 1))) ** tc.class_weight_power,
                     0.0)
        weights = torch.tensor(w, dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=tc.label_smoothing)
    eval_loss = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.epochs)

    tr = _Encoded(ds, split.train, enc)
    va = _Encoded(ds, split.val, enc) if len(split.val) else tr
    y_tr = ds.y[split.train]
    y_va = ds.y[split.val] if len(split.val) else y_tr
    history: dict[str, list[float]] = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": [],
                                       "val_macro_f1": []}
    best_f1, best_state, best_epoch, stale = -1.0, None, 0, 0
    # Weight averaging over the last epochs of the cosine schedule (SWA): the averaged
    # network is kept when it beats the best single epoch on validation.
    swa_start = int(tc.epochs * (1.0 - tc.swa_fraction)) if tc.swa_fraction > 0 else tc.epochs
    swa = torch.optim.swa_utils.AveragedModel(model) if swa_start < tc.epochs else None
    swa_n = 0
    mlflow = _start_mlflow(tc.mlflow, cfg, ds)
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=tc.epochs, desc="training", unit="epoch", file=sys.stderr, leave=False)
    t0 = time.time()
    for epoch in range(tc.epochs):
        model.train()
        tot, correct, seen = 0.0, 0, 0
        for pos in iter_batches(len(y_tr), tc.batch_size, rng):
            xb = torch.from_numpy(tr.batch(pos)).to(device, non_blocking=True)
            yb = torch.from_numpy(y_tr[pos]).to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(pos)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(pos)
        sched.step()
        if swa is not None and epoch >= swa_start:
            swa.update_parameters(model)
            swa_n += 1
        vloss, vpred = _evaluate(model, va, y_va, device, eval_loss, tc.batch_size)
        vm = classification_metrics(y_va, vpred, ds.classes)
        history["train_loss"].append(tot / max(seen, 1))
        history["train_accuracy"].append(correct / max(seen, 1))
        history["val_loss"].append(vloss)
        history["val_accuracy"].append(vm["accuracy"])
        history["val_macro_f1"].append(vm["macro_f1"])
        if mlflow is not None:
            mlflow.log_metrics({k: v[-1] for k, v in history.items()}, step=epoch)
        if vm["macro_f1"] > best_f1:
            best_f1, best_epoch, stale = vm["macro_f1"], epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if bar is not None:
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", val_f1=f"{vm['macro_f1']:.3f}")
            bar.update(1)
        elif progress:  # not a terminal (a log, CI): one line per epoch
            print(f"epoch {epoch + 1}/{tc.epochs}: loss {history['train_loss'][-1]:.4f}, "
                  f"validation macro-F1 {vm['macro_f1']:.4f}{' (best)' if stale == 0 else ''}",
                  file=sys.stderr, flush=True)
        if stale >= tc.patience and (swa is None or epoch < swa_start):
            break  # no early stop once averaging has begun: the average needs its epochs
    if bar is not None:
        bar.close()
    assert best_state is not None
    chosen = f"epoch {best_epoch}"
    if swa is not None and swa_n:
        _, spred = _evaluate(swa.module, va, y_va, device, eval_loss, tc.batch_size)
        swa_f1 = classification_metrics(y_va, spred, ds.classes)["macro_f1"]
        if swa_f1 >= best_f1:
            best_state = {k: v.detach().clone() for k, v in swa.module.state_dict().items()}
            best_f1, chosen = swa_f1, f"average of the last {swa_n} epochs"
    model.load_state_dict(best_state)
    calibration = _fit_temperature(model, va, y_va, device) if tc.temperature else None

    op = _operating_point(model, va, y_va, ds, split.val if len(split.val) else split.train, device, tc)

    te = _Encoded(ds, split.test, enc)
    _, tpred = _evaluate(model, te, ds.y[split.test], device, eval_loss, tc.batch_size)
    metrics = classification_metrics(ds.y[split.test], tpred, ds.classes)
    metrics["split"] = split.describe()
    metrics["evaluated_on"] = evaluated_on
    training = {"epochs_run": len(history["train_loss"]), "best_epoch": best_epoch, "weights": chosen,
                "best_val_macro_f1": best_f1, "seconds": round(time.time() - t0, 1), "device": str(device),
                **tc.model_dump()}
    metrics["training"] = training
    if calibration is not None:
        op["calibration"] = calibration
    metrics["operating_point"] = op
    if ds.summary.get("sequences"):  # how sequences were built (T=1 when rows are not in capture order)
        metrics["sequences"] = ds.summary["sequences"]
    if op.get("threshold") is not None:
        pa = _p_attack(model, te, device, ds.classes)
        metrics["binary_at_threshold"] = binary_rates(
            ds.y[split.test], pa, ds.weights_of(split.test), ds.classes,
            row_thresholds(op, ds.pools[split.test] if ds.pools is not None else None))
    result = TrainResult(model=model, encoder=enc, split=split, metrics=metrics, history=history, out=out)
    if out is not None:
        write_model(result, ds, cfg, out, name=name, version=version, extra=extra)
        if mlflow is not None:
            mlflow.log_metrics({"test_macro_f1": metrics["macro_f1"], "test_accuracy": metrics["accuracy"]})
            mlflow.log_artifacts(str(out))
    if mlflow is not None:
        mlflow.end_run()
    return result


def _families(classes: list[str]) -> dict[str, str]:
    out = {}
    for c in classes:
        canon = canonical_class(c)
        out[c] = FAMILY_OF.get(canon, c) if canon else c
    return out


def write_model(result: TrainResult, ds: Dataset, cfg: Config, out: Path, *, name: str, version: str,
                extra: dict[str, Any] | None = None) -> None:
    """The model directory: weights, metadata, metrics.json and the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    data = {**ds.summary, "columns": ds.columns, "leaking_included": cfg.lstm.features.include_leaking,
            "classes": ds.classes}
    save_model(out, result.model, result.encoder, ds.classes, families=_families(ds.classes),
               window=cfg.meter.window, seq_len=ds.x.shape[1], label_scheme=ds.summary.get("label_scheme", "34"),
               name=name, version=version, data=data,
               metrics={k: result.metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "split")},
               training=result.metrics.get("training"), operating_point=result.metrics.get("operating_point"),
               extra=extra)
    write_json(out / "metrics.json", result.metrics)
    write_json(out / "history.json", result.history)
    plot_confusion(out / "confusion_matrix.png", result.metrics, f"{name}: held-out {result.split.method} split")
    plot_curves(out / "training_curves.png", result.history)


def probabilities(model: nn.Module, encoder: FeatureEncoder, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Class probabilities (double precision: p_attack is compared near 1) of raw sequences."""
    out = []
    model.eval()
    with torch.inference_mode():
        for pos in iter_batches(len(x), batch, None):
            out.append(torch.softmax(model(torch.from_numpy(encoder.transform(x[pos]))).double(), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def evaluate(loaded: LoadedModel, ds: Dataset, device: str = "auto", batch: int = 4096) -> dict[str, Any]:
    """Metrics of a trained model on every sequence of ``ds`` (classes mapped by name)."""
    classes = loaded.classes
    unknown = sorted(set(ds.classes) - set(classes))
    if unknown:
        raise ValueError(f"the data has classes the model does not know: {', '.join(unknown)}")
    remap = np.array([classes.index(c) for c in ds.classes])
    y = remap[ds.y]
    dev = pick_device(device)
    model = loaded.model.to(dev)
    model.eval()
    preds = []
    with torch.inference_mode():
        for pos in iter_batches(len(y), batch, None):
            xb = torch.from_numpy(loaded.encoder.transform(ds.x[pos])).to(dev)
            preds.append(model(xb).argmax(1).cpu().numpy())
    m = classification_metrics(y, np.concatenate(preds), classes)
    m["evaluated_on"] = "every sequence of the given data"
    return m


def _logits(model: nn.Module, data: _Encoded, device: torch.device) -> torch.Tensor:
    model.eval()
    out = []
    with torch.inference_mode():
        for pos in iter_batches(len(data.idx), 4096, None):
            out.append(model(torch.from_numpy(data.batch(pos)).to(device)).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1, dtype=torch.float64)


def _calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error of the top class (equal-width confidence bins)."""
    conf, pred = p.max(dim=1)
    right = (pred == y).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    err = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            err += float(m.double().mean() * (conf[m].mean() - right[m].mean()).abs())
    return err


def _fit_temperature(model: RealDataLSTMPredictor, va: "_Encoded", y_va: np.ndarray,
                     device: torch.device) -> dict[str, Any] | None:
    """Temperature scaling (Guo et al. 2017): the one T > 0 that minimises the validation
    part's negative log-likelihood of softmax(logits / T), folded into the last linear layer
    so the saved network emits calibrated logits (the daemon needs no change). Label
    smoothing trains outputs towards 1 - eps at best; T < 1 undoes that where the model is
    in fact right, T > 1 tempers overconfidence. The argmax never changes."""
    z = _logits(model, va, device)
    if len(z) < 10:
        return None
    y = torch.from_numpy(np.asarray(y_va, dtype=np.int64))
    nll = nn.CrossEntropyLoss()
    # a 1-D convex problem in log T: a coarse grid, then a fine one around its best
    grid = torch.linspace(-3.0, 3.0, 61, dtype=torch.float64)
    losses = torch.stack([nll(z / torch.exp(g), y) for g in grid])
    best = grid[int(losses.argmin())]
    fine = torch.linspace(float(best) - 0.1, float(best) + 0.1, 41, dtype=torch.float64)
    losses = torch.stack([nll(z / torch.exp(g), y) for g in fine])
    t = float(torch.exp(fine[int(losses.argmin())]))
    before = {"nll": float(nll(z, y)), "ece": _calibration_error(torch.softmax(z, 1), y)}
    after = {"nll": float(nll(z / t, y)), "ece": _calibration_error(torch.softmax(z / t, 1), y)}
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.div_(t)
        last.bias.div_(t)
    return {"method": "temperature scaling on the validation part", "temperature": t,
            "validation_nll": {"before": before["nll"], "after": after["nll"]},
            "validation_ece": {"before": before["ece"], "after": after["ece"]}}


def _p_attack(model: nn.Module, data: _Encoded, device: torch.device, classes: list[str]) -> np.ndarray:
    """1 - P(benign) of every row of ``data`` (the benign class by name)."""
    b = benign_index(classes)
    n = len(data.idx)
    out = np.zeros(n)
    if b is None:
        return out
    model.eval()
    with torch.inference_mode():
        for pos in iter_batches(n, 4096, None):
            p = torch.softmax(model(torch.from_numpy(data.batch(pos)).to(device)).double(), dim=1)
            out[pos] = 1.0 - p[:, b].cpu().numpy()
    return out


# below this many validation benign sequences of a window kind, its own threshold is noise:
# the kind keeps the shared one
MIN_KIND_BENIGN = 50


def _benign_weights(ds: Dataset, idx: np.ndarray, benign: np.ndarray, by: str) -> np.ndarray:
    """The packet weights of the benign rows ``idx[benign]``; by captures, each capture's sum to 1."""
    wb = ds.weights_of(idx)[benign]
    if by == "captures" and wb.size:
        # each validation capture weighs the same: a big easy one (a PLC polled all day) must
        # not buy a threshold that flags a small site's traffic wholesale
        _, g = np.unique(ds.groups[idx][benign], return_inverse=True)
        wb = wb / np.bincount(g, weights=wb)[g]
    return wb


def _operating_point(model: nn.Module, va: "_Encoded", y_va: np.ndarray, ds: Dataset, idx: np.ndarray,
                     device: torch.device, tc: Any) -> dict[str, Any]:
    """The model's operating point on the validation rows ``idx`` (`operating_point`)."""
    if benign_index(ds.classes) is None:
        return {"threshold": None, "why": "no benign class"}
    return operating_point(_p_attack(model, va, device, ds.classes), y_va, ds, idx, tc)


def operating_point(pa: np.ndarray, y_va: np.ndarray, ds: Dataset, idx: np.ndarray, tc: Any) -> dict[str, Any]:
    """The p_attack threshold that flags ``target_fpr`` of the validation benign packets (``pa``,
    ``y_va``: the validation rows ``idx``' p_attack and labels); with ``threshold_by_window_kind``
    and the rows' window kinds known, also one per window kind (flow, pool), each at least the
    shared one and holding the target on that kind's own benign packets."""
    b = benign_index(ds.classes)
    w = ds.weights_of(idx)
    benign = y_va == b
    by = getattr(tc, "threshold_by", "packets")
    thr = choose_threshold(pa[benign], _benign_weights(ds, idx, benign, by), tc.target_fpr)
    op: dict[str, Any] = {"threshold": thr, "target_fpr": tc.target_fpr,
                          "chosen_on": f"validation benign sequences, by {by}", "benign_sequences": int(benign.sum()),
                          **binary_rates(y_va, pa, w, ds.classes, thr)}
    if getattr(tc, "threshold_by_window_kind", False) and ds.pools is not None:
        # A pool gathers a served host's short flows, whoever their peers: its windows score
        # otherwise than a flow's, and a shared threshold fit mostly on flows (they carry most
        # benign packets) let pools through; held out by source, pools carried 1,099 of the
        # model's 1,624 flagged benign packets from 6 % of them (docs/detection.md)
        pool = ds.pools[idx]
        kinds: dict[str, Any] = {}
        for name, m in (("flow", ~pool), ("pool", pool)):
            mb = benign & m
            own = (choose_threshold(pa[mb], _benign_weights(ds, idx, mb, by), tc.target_fpr)
                   if mb.sum() >= MIN_KIND_BENIGN else None)
            kinds[name] = {"threshold": max(thr, own) if own is not None else thr, "own": own,
                           "benign_sequences": int(mb.sum())}
        rates = binary_rates(y_va, pa, w, ds.classes, row_thresholds({**op, "by_window_kind": kinds}, pool))
        op["by_window_kind"] = {**kinds, "benign_flagged": rates["benign_flagged"],
                                "attack_flagged": rates["attack_flagged"]}
    return op


def _start_mlflow(asked: bool, cfg: Config, ds: Dataset):
    if not asked:
        return None
    try:
        import mlflow  # type: ignore[import-not-found]
    except ImportError:
        print("ids-trainer: warning: MLflow logging asked for but mlflow is not installed; continuing without",
              file=sys.stderr)
        return None
    mlflow.start_run(run_name="ids-lstm")
    mlflow.log_params({**{f"model.{k}": v for k, v in cfg.lstm.model.model_dump().items()},
                       **{f"train.{k}": v for k, v in cfg.lstm.train.model_dump().items()},
                       "features.method": cfg.lstm.features.method, "features.bins": cfg.lstm.features.bins,
                       "classes": len(ds.classes), "sequences": len(ds.y)})
    return mlflow
