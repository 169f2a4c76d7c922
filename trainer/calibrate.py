"""Fitting a model to a site: its operating point from the site's own benign traffic.

A site's normal traffic is not the corpus's: a camera that streams all day or a PLC
polled ten times a second may sit higher on p_attack than anything the model was
validated on. ``ids-trainer calibrate`` meters the site's benign captures exactly as
the daemon will and scores every sequence.

- Threshold only (default): the threshold rises until at most ``target_fpr`` of the
  site's benign packets would be flagged. It never falls below the model's own
  operating point, so detection elsewhere only changes when the site needs it
  stricter — but then it does: a site whose benign traffic sits where attacks sit costs
  recall.
- ``fine_tune``: the network itself learns the site's normal. It trains a few epochs at
  a low rate on the first 70 % (in time) of the site's benign sequences, mixed with
  attack sequences replayed from a labelled corpus (a synthetic one generated on the
  spot, and the real corpus when given) so that it does not forget the attacks; the
  threshold is then chosen on the last 30 %, which the network did not see.
- Automatic (the default, ``tune=None``): fine-tuning where it helps — when the site's
  own threshold for the target lies above the model's operating point, i.e. the model
  flags the site's benign traffic; otherwise the threshold stays the model's. Measured by
  source, moving the threshold alone cost up to 7 points of the daemon's recall on the
  real attacks where the site needed it, fine-tuning at most a fraction of one.

What it did is recorded in the new model's metadata (``operating_point.calibration``).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ids_daemon.config import DetectorsConfig, MeterConfig
from ids_daemon.features.ciciot import INDEX
from ids_daemon.features.window import KIND_POOL, POOL_PROTO_ARP, WindowBatch
from ids_daemon.inference.risk import row_thresholds
from ids_daemon.model.artifacts import METADATA, WEIGHTS, LoadedModel, load_model, write_weights
from ids_daemon.model.sequences import window_sequences

from .dataset import meter_capture
from .metrics import benign_index, choose_threshold
from .train import probabilities


def _p_attack(loaded: LoadedModel, x: np.ndarray) -> np.ndarray:
    p = probabilities(loaded.model.cpu(), loaded.encoder, x)
    return 1.0 - p[:, benign_index(loaded.classes)] if len(x) else np.zeros(0)


def flagged_share(p_attack: np.ndarray, packets: np.ndarray, threshold: float | np.ndarray | None) -> float:
    """Share of packets in sequences at or above ``threshold`` (one, or one per row; None: 0.5)."""
    tot = packets.sum()
    if not tot:
        return 0.0
    t = 0.5 if threshold is None else threshold
    return float(packets[p_attack >= t].sum() / tot)


def fit_to_site(op: dict[str, Any], site: float) -> dict[str, Any]:
    """The operating point ``op`` with the site's threshold ``site``: the model's per-kind
    thresholds stand where stricter (the site's target holds on its windows at ``site``
    already, and a stricter kind only flags less), the others rise to ``site``."""
    out = {**op, "threshold": site}
    kinds = op.get("by_window_kind")
    if isinstance(kinds, dict):
        out["by_window_kind"] = {**kinds, **{k: {**kinds[k], "threshold": max(float(kinds[k]["threshold"]), site)}
                                             for k in ("flow", "pool")}}
    return out


def _lstm_windows(loaded: LoadedModel, wb: WindowBatch) -> WindowBatch:
    return wb.take(wb.proto != POOL_PROTO_ARP) if loaded.meta.get("lstm_skips_arp") else wb


def sequences_of(loaded: LoadedModel, wb: WindowBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(raw sequences, packets, first_ts, is a pool) of the windows the daemon would classify."""
    wb = _lstm_windows(loaded, wb)
    ci = np.array([INDEX[c] for c in loaded.columns])
    return (window_sequences(wb, ci, loaded.seq_len), wb.packets.astype(np.float64), wb.first_ts,
            wb.kind == KIND_POOL)


def fine_tune(loaded: LoadedModel, site_x: np.ndarray, replay_x: np.ndarray, replay_y: np.ndarray,
              epochs: int = 3, lr: float = 3e-4, seed: int = 0) -> None:
    """Continue training ``loaded.model`` (in place) on site benign sequences plus replayed
    labelled ones; the encoder stays as it was fitted."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(seed)
    b = benign_index(loaded.classes)
    x = np.concatenate([site_x, replay_x])
    y = np.concatenate([np.full(len(site_x), b, np.int64), replay_y])
    counts = np.bincount(y, minlength=len(loaded.classes)).astype(np.float64)
    w = np.where(counts > 0, np.sqrt(counts.sum() / (len(loaded.classes) * np.maximum(counts, 1))), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32), label_smoothing=0.1)
    model = loaded.model.cpu()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    enc = loaded.encoder.transform(x)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), 512):
            pos = order[i:i + 512]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(torch.from_numpy(enc[pos])), torch.from_numpy(y[pos]))
            loss.backward()
            opt.step()
    model.eval()


def claims_of(loaded: LoadedModel, detectors: DetectorsConfig | None) -> Any:
    """The detector-hook factory a model trained with ``detector_claims`` is metered with
    (the frames the detectors flag stay out of its windows, as in the daemon), else None."""
    if not loaded.meta.get("detector_claims"):
        return None
    from .bysource import detector_hooks

    return detector_hooks(detectors or DetectorsConfig())


def replay_corpus(loaded: LoadedModel, meter: MeterConfig, real: Path | None, synthetic_packets: int,
                  seed: int, detectors: DetectorsConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labelled sequences to replay while fine-tuning: attacks (and benign) from a
    synthetic corpus generated now, plus the real corpus when given."""
    import tempfile

    from .bysource import real_windowsets, synthetic_windowsets
    from ids_daemon.model.classes import label_in_scheme

    sets = []
    hooks = claims_of(loaded, detectors)
    if real is not None:
        sets += real_windowsets(real, meter, hooks, claim=hooks is not None)
    if synthetic_packets:
        from .synth import generate_corpus

        with tempfile.TemporaryDirectory() as tmp:
            generate_corpus(Path(tmp), seed=seed, packets=synthetic_packets)
            sets += synthetic_windowsets(Path(tmp) / "manifest.json", meter, hooks)
    scheme = loaded.meta.get("label_scheme", "34")
    lut = {c: i for i, c in enumerate(loaded.classes)}
    xs, ys = [], []
    for s in sets:
        wb = s.windows
        keep = wb.proto != POOL_PROTO_ARP if loaded.meta.get("lstm_skips_arp") else np.ones(len(wb), bool)
        labels = [lut.get(label_in_scheme(v, scheme) if scheme != "as-is" else v, -1) for v in s.labels[keep]]
        x = sequences_of(loaded, wb)[0]
        y = np.array(labels, dtype=np.int64)
        ok = y >= 0
        xs.append(x[ok])
        ys.append(y[ok])
    if not xs:
        return np.zeros((0, loaded.seq_len, len(loaded.columns)), np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def calibrate(model_dir: Path, benign: list[Path], out: Path, target_fpr: float,
              meter: MeterConfig | None = None, *, tune: bool | None = None, real: Path | None = None,
              synthetic_packets: int = 100_000, seed: int = 0,
              detectors: DetectorsConfig | None = None) -> dict[str, Any]:
    """Write ``out``: the model of ``model_dir`` fitted to the site's ``benign`` captures
    (threshold only, fine-tuning and threshold, or ``tune=None``: fine-tuning when the site
    needs a threshold above the model's)."""
    loaded = load_model(model_dir)
    b = benign_index(loaded.classes)
    if b is None:
        raise ValueError(f"{model_dir}: the model has no benign class; there is no p_attack to calibrate")
    mcfg = (meter or MeterConfig()).model_copy(update={"window": loaded.window})
    xs, ws, ts, ps, files = [], [], [], [], []
    hooks = claims_of(loaded, detectors)
    for f in benign:
        wb = meter_capture(f, mcfg, hooks() if hooks is not None else None)
        x, w, t, pool = sequences_of(loaded, wb)
        xs.append(x)
        ws.append(w)
        ps.append(pool)
        # position in time within its own capture, so each file splits 70/30 on its own
        ts.append((np.argsort(np.argsort(t, kind="stable")) + 0.5) / max(len(t), 1))
        files.append({"path": str(f), "windows": int(len(wb)), "packets": int(wb.packets.sum())})
    x = np.concatenate(xs)
    w = np.concatenate(ws)
    pools = np.concatenate(ps)
    rel = np.concatenate(ts)
    if not w.sum():
        raise ValueError("the benign captures hold no traffic the model classifies")
    op = dict(loaded.meta.get("operating_point") or {})
    before = op.get("threshold")
    before_rows = row_thresholds(op, pools)  # the daemon's own: one per window kind where the model has them
    pa = _p_attack(loaded, x)
    record: dict[str, Any] = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files,
                              "sequences": int(len(x)), "packets": int(w.sum()), "target_fpr": target_fpr,
                              "threshold_before": before, "flagged_before": flagged_share(pa, w, before_rows)}
    fit = rel <= 0.7  # fine-tuning trains on the first 70 % (in time) of each capture
    enough = fit.sum() >= 10 and (~fit).sum() >= 10
    if tune is None:
        tune = bool(before is not None and record["flagged_before"] > target_fpr and enough)
        record["fine_tune"] = ("auto: the site needs a threshold above the model's" if tune else
                               "auto: not needed (the model's threshold holds the site's target)" if enough else
                               "auto: too little traffic to fine-tune on (fewer than 20 classified windows)")
    if tune:
        if not enough:
            raise ValueError("fine-tuning needs more benign traffic (at least 20 classified windows)")
        rx, ry = replay_corpus(loaded, mcfg, real, synthetic_packets, seed, detectors)
        att_before = _p_attack(loaded, rx[ry != b]) if len(rx) else np.zeros(0)
        fine_tune(loaded, x[fit], rx, ry, seed=seed)
        pa = _p_attack(loaded, x)
        site = choose_threshold(pa[~fit], w[~fit], target_fpr)
        new = site
        att_after = _p_attack(loaded, rx[ry != b]) if len(rx) else np.zeros(0)
        aw = np.ones(len(att_after))
        record.update({
            "fine_tuned": {"epochs": 3, "learning_rate": 3e-4, "site_sequences": int(fit.sum()),
                           "replayed_sequences": int(len(rx)), "replay": {"real": str(real) if real else None,
                                                                          "synthetic_packets": synthetic_packets}},
            "threshold_chosen_on": "the last 30 % (in time) of each benign capture, not trained on",
            "held_out_flagged_after": flagged_share(pa[~fit], w[~fit], new),
            "replayed_attacks_flagged_before": flagged_share(att_before, aw, before),  # (the shared threshold)
            "replayed_attacks_flagged_after": flagged_share(att_after, aw, new),
            "rule": "fine-tuned on the site's benign traffic with replayed attacks; the site's threshold",
        })
    else:
        site = choose_threshold(pa, w, target_fpr)
        new = max(site, before) if before is not None else site
        record["rule"] = "the site's threshold for the target rate, never below the model's own"
    if tune and op.pop("by_window_kind", None) is not None:
        record["by_window_kind"] = ("dropped: chosen for the weights before fine-tuning; "
                                    "the site's threshold holds for all")
    op = fit_to_site(op, new)
    after_rows = row_thresholds(op, pools)
    record.update({"site_threshold": site, "threshold": new, "flagged_after": flagged_share(pa, w, after_rows)})
    op.update({"threshold": new, "target_fpr": target_fpr, "chosen_on": "site benign traffic (ids-trainer calibrate)",
               "calibration": record})
    if out.resolve() != model_dir.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for p in model_dir.iterdir():
            if p.is_file():
                shutil.copy2(p, out / p.name)
    meta = json.loads((model_dir / METADATA).read_text())
    if tune:  # new weights: write them and their checksum
        meta["weights_sha256"] = write_weights(out, loaded.model)
    meta["operating_point"] = op
    meta["calibrated_from"] = {"name": meta.get("name"), "version": meta.get("version"), "path": str(model_dir)}
    meta["version"] = f"{meta.get('version', '1')}+site"
    (out / METADATA).write_text(json.dumps(meta, indent=1) + "\n")
    assert (out / WEIGHTS).is_file()
    load_model(out)  # the written directory must load (checksum, shape)
    return record
