"""Fitting a model to a site: its operating point from the site's own benign traffic.

A site's normal traffic is not the corpus's: a camera that streams all day or a PLC
polled ten times a second may sit higher on p_attack than anything the model was
validated on. ``ids-trainer calibrate`` meters the site's benign captures exactly as
the daemon will, scores every sequence, and raises the threshold until at most
``target_fpr`` of the site's benign packets would be flagged. It never lowers the
threshold below the model's own operating point, so detection on everything else stays
what the by-source evaluation measured unless the site needs it stricter; what it did is
recorded in the new model's metadata (``operating_point.calibration``).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ids_daemon.config import MeterConfig
from ids_daemon.features.ciciot import INDEX
from ids_daemon.features.window import POOL_PROTO_ARP, WindowBatch
from ids_daemon.model.artifacts import METADATA, WEIGHTS, LoadedModel, load_model
from ids_daemon.model.sequences import last_t_index

from .dataset import meter_capture
from .metrics import benign_index, choose_threshold


def site_scores(loaded: LoadedModel, windows: WindowBatch) -> tuple[np.ndarray, np.ndarray]:
    """(p_attack, packets) of every sequence the daemon would classify in ``windows``."""
    import torch

    wb = windows
    if loaded.meta.get("lstm_skips_arp"):
        wb = wb.take(wb.proto != POOL_PROTO_ARP)
    if not len(wb):
        return np.zeros(0), np.zeros(0)
    ci = np.array([INDEX[c] for c in loaded.columns])
    idx = last_t_index(wb.key, wb.first_ts, loaded.seq_len)
    x = wb.features[:, ci].astype(np.float32)[idx]
    b = benign_index(loaded.classes)
    model = loaded.model.cpu().eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 4096):
            p = torch.softmax(model(torch.from_numpy(loaded.encoder.transform(x[i:i + 4096]))).float(), dim=1)
            out.append(1.0 - p[:, b].numpy() if b is not None else np.ones(len(p)))
    return np.concatenate(out), wb.packets.astype(np.float64)


def flagged_share(p_attack: np.ndarray, packets: np.ndarray, threshold: float | None) -> float:
    """Share of packets in sequences at or above ``threshold`` (None: 0.5)."""
    tot = packets.sum()
    if not tot:
        return 0.0
    t = 0.5 if threshold is None else threshold
    return float(packets[p_attack >= t].sum() / tot)


def calibrate(model_dir: Path, benign: list[Path], out: Path, target_fpr: float,
              meter: MeterConfig | None = None) -> dict[str, Any]:
    """Write ``out``: the model of ``model_dir`` with its threshold fitted to ``benign``."""
    loaded = load_model(model_dir)
    if benign_index(loaded.classes) is None:
        raise ValueError(f"{model_dir}: the model has no benign class; there is no p_attack to calibrate")
    mcfg = (meter or MeterConfig()).model_copy(update={"window": loaded.window})
    scores, weights, files = [], [], []
    for f in benign:
        wb = meter_capture(f, mcfg)
        pa, w = site_scores(loaded, wb)
        scores.append(pa)
        weights.append(w)
        files.append({"path": str(f), "windows": int(len(wb)), "packets": int(wb.packets.sum())})
    pa = np.concatenate(scores) if scores else np.zeros(0)
    w = np.concatenate(weights) if weights else np.zeros(0)
    if not w.sum():
        raise ValueError("the benign captures hold no traffic the model classifies")
    op = dict(loaded.meta.get("operating_point") or {})
    before = op.get("threshold")
    site = choose_threshold(pa, w, target_fpr)
    new = max(site, before) if before is not None else site
    record = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files, "sequences": int(len(pa)), "packets": int(w.sum()), "target_fpr": target_fpr,
        "threshold_before": before, "site_threshold": site, "threshold": new,
        "flagged_before": flagged_share(pa, w, before), "flagged_after": flagged_share(pa, w, new),
        "rule": "the site's threshold for the target rate, never below the model's own",
    }
    op.update({"threshold": new, "target_fpr": target_fpr, "chosen_on": "site benign traffic (ids-trainer calibrate)",
               "calibration": record})
    if out.resolve() != model_dir.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for p in model_dir.iterdir():
            if p.is_file():
                shutil.copy2(p, out / p.name)
    meta = json.loads((model_dir / METADATA).read_text())
    meta["operating_point"] = op
    meta["calibrated_from"] = {"name": meta.get("name"), "version": meta.get("version"), "path": str(model_dir)}
    meta["version"] = f"{meta.get('version', '1')}+site"
    (out / METADATA).write_text(json.dumps(meta, indent=1) + "\n")
    assert (out / WEIGHTS).is_file()
    load_model(out)  # the written directory must load (checksum, shape)
    return record
