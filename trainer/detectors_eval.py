"""The protocol-fact detectors alone on the real corpus, per capture and per repository.

Each capture goes through a fresh `DetectorSet` and the daemon's meter with per-packet
labels (`trainer.data.real.meter_labelled`), and is measured by packets: the share of its
benign packets a detector flagged, the share of its attack packets flagged, and the share
of its attack packets whose detector class names the capture's family (DDoS and DoS as
one). The lockbox's repositories are left out unless asked for (``lockbox="only"``: the
one final evaluation). This is what detector rules are tuned against; the model's figures
come from ``ids-trainer evaluate --by-source``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ids_daemon.config import DetectorsConfig, MeterConfig

from .bysource import family_key
from .data.real import meter_labelled, read_tsv_manifest


def capture_figures(manifest: Path, detectors: DetectorsConfig, meter: MeterConfig, lockbox: str = "exclude",
                    progress: bool = False) -> list[dict[str, Any]]:
    """One row per capture: packets, benign/attack packets, flagged, family right, classes named."""
    from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet

    fam = np.array([family_key(c) for c in DETECTOR_CLASSES] + [""], dtype=object)  # index -1: ""
    rows = []
    for e in read_tsv_manifest(manifest, lockbox=lockbox):
        if progress:
            print(f"detectors: {e.name}", file=sys.stderr, flush=True)
        ds = DetectorSet(detectors)
        lc = meter_labelled(e, meter, lambda b: ds.process(b).frame_class)
        det, att = lc.row_detector, lc.row_attack
        flagged = det >= 0
        right = fam[det] == family_key(e.label)
        named: dict[str, int] = defaultdict(int)
        for c, n in zip(*np.unique(det[att & flagged], return_counts=True)):
            named[DETECTOR_CLASSES[int(c)]] += int(n)
        rows.append({
            "capture": e.name, "repo": e.repo, "label": e.label,
            "benign": int((~att).sum()), "benign_flagged": int((~att & flagged).sum()),
            "attack": int(att.sum()), "attack_flagged": int((att & flagged).sum()),
            "attack_right": int((att & flagged & right).sum()), "named": dict(named),
        })
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-repository figures of `capture_figures` rows."""
    def agg(rs: list[dict[str, Any]]) -> dict[str, Any]:
        b = sum(r["benign"] for r in rs)
        a = sum(r["attack"] for r in rs)
        att = [r for r in rs if r["attack"]]
        return {
            "benign": b, "benign_flagged": sum(r["benign_flagged"] for r in rs) / b if b else None,
            "worst_benign": max((r["benign_flagged"] / r["benign"] for r in rs if r["benign"]), default=None),
            "attack": a, "attack_flagged": sum(r["attack_flagged"] for r in rs) / a if a else None,
            "family_right": float(np.mean([r["attack_right"] / r["attack"] for r in att])) if att else None,
        }
    by_repo: dict[str, list] = defaultdict(list)
    for r in rows:
        by_repo[r["repo"]].append(r)
    return {"overall": agg(rows), "per_source": {k: agg(v) for k, v in sorted(by_repo.items())}}


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain table: one line per capture, then the summary."""
    pct = lambda x, n: f"{100 * x / n:5.1f} %" if n else "    - "  # noqa: E731
    out = [f"{'capture':70s} {'benign':>7s} {'flag':>7s} {'attack':>7s} {'flag':>7s} {'right':>7s}  named"]
    for r in rows:
        named = ", ".join(f"{k} {v}" for k, v in sorted(r["named"].items(), key=lambda kv: -kv[1]))
        out.append(f"{r['capture'][:70]:70s} {r['benign']:7d} {pct(r['benign_flagged'], r['benign'])} "
                   f"{r['attack']:7d} {pct(r['attack_flagged'], r['attack'])} {pct(r['attack_right'], r['attack'])}"
                   f"  {named}")
    s = summary(rows)["overall"]
    f = lambda v: "-" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    out.append(f"overall: benign flagged {f(s['benign_flagged'])} of {s['benign']} (worst capture "
               f"{f(s['worst_benign'])}); attack flagged {f(s['attack_flagged'])} of {s['attack']}; family right "
               f"{f(s['family_right'])} (mean per attack capture)")
    return "\n".join(out)
