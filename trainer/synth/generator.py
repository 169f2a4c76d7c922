"""`generate_corpus`: the labelled synthetic capture corpus and its manifest."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

from ids_daemon.model.classes import BENIGN, CLASSES_34, canonical_class

from .attacks import ATTACKS
from .benign import benign
from .net import Net
from .wire import write_pcap

# payload-only classes: what tells them apart is inside HTTP bodies, not in any header feature
SKIPPED_CLASSES: tuple[str, ...] = ("VulnerabilityScan", "BrowserHijacking", "CommandInjection", "SqlInjection", "XSS",
                                    "Backdoor_Malware", "Uploading_Attack")
SYNTH_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES_34 if c not in SKIPPED_CLASSES)
assert set(SYNTH_CLASSES) - {BENIGN} == set(ATTACKS)

BENIGN_SHARE = 0.3  # of the packet budget, when attack classes are generated too
MIN_CLASS_PACKETS = 300
MIN_FILE_PACKETS = 120
MANIFEST = "manifest.json"


def _resolve(classes: list[str] | None) -> list[str]:
    if classes is None:
        return list(SYNTH_CLASSES)
    out = []
    for name in classes:
        c = canonical_class(name)
        if c is None or c not in SYNTH_CLASSES:
            why = ("header features cannot express it, so it is not synthesized" if c in SKIPPED_CLASSES
                   else "unknown class")
            raise ValueError(f"{name!r}: {why}; known classes: {', '.join(SYNTH_CLASSES)}")
        if c not in out:
            out.append(c)
    return [c for c in SYNTH_CLASSES if c in out]  # canonical order


def plan(packets: int, classes: list[str] | None = None) -> list[tuple[str, int, int]]:
    """(label, file number, packet budget) of every file, for a total budget of ``packets``.

    Benign traffic gets ``BENIGN_SHARE`` of the budget (all of it when it is the only
    class), each attack class an even share of the rest, at least ``MIN_CLASS_PACKETS``.
    Benign is spread over 3-10 files, each attack class over 2-4.
    """
    labels = _resolve(classes)
    attacks = [c for c in labels if c != BENIGN]
    has_benign = BENIGN in labels
    b_budget = 0
    if has_benign:
        b_budget = max(MIN_CLASS_PACKETS, round(packets * BENIGN_SHARE) if attacks else packets)
    a_budget = max(MIN_CLASS_PACKETS, (packets - b_budget) // len(attacks)) if attacks else 0
    out = []
    for label in labels:
        budget = b_budget if label == BENIGN else a_budget
        lo, hi, per = (3, 10, 2000) if label == BENIGN else (2, 4, 500)
        n = max(lo, min(hi, budget // per))
        each = max(MIN_FILE_PACKETS, budget // n)
        out += [(label, k, each) for k in range(n)]
    return out


def _hash(*parts: object) -> int:
    text = "/".join(map(str, ("ids-trainer synth",) + parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def generate_file(path: Path, label: str, k: int, budget: int, seed: int = 0,
                  rules: list[dict] | None = None) -> tuple[int, str]:
    """Write one scenario's pcap; returns (packets, description). The same arguments give the same bytes.
    The scenario's per-window label rules, if any, are appended to ``rules``."""
    net = Net(random.Random(_hash(seed, label, k)))
    variant = k + _hash(seed, label) % 12  # successive files take successive variants, from a seeded start
    desc = benign(net, budget, variant) if label == BENIGN else ATTACKS[label](net, budget, variant)
    if rules is not None:
        rules.extend(net.rules)
    return write_pcap(path, net.pkts), desc


def generate_corpus(out_dir: Path, seed: int = 0, packets: int = 60_000, classes: list[str] | None = None,
                    progress: bool = False) -> Path:
    """Write a labelled synthetic corpus (one scenario per pcap) and its manifest; returns the manifest's path.

    ``packets`` is the approximate total; ``classes`` restricts it to some labels (any
    spelling of a CICIoT2023 class name; ValueError for unknown or payload-only ones).
    Every file is reproducible on its own: it depends only on (seed, label, file number,
    budget), so the same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    jobs = plan(int(packets), classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for label, k, budget in jobs:
        name = f"{label}-{k:03d}.pcap"
        rules: list[dict] = []
        n, desc = generate_file(out_dir / name, label, k, budget, seed, rules)
        files.append({"path": name, "label": label, "packets": n, "description": desc, **({"rules": rules} if rules else {})})
        if progress:
            print(f"ids-trainer synth: {name}: {n} packets: {desc}", file=sys.stderr, flush=True)
    manifest = {"version": 1, "generator": "ids-trainer synth", "seed": seed, "files": files}
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path
