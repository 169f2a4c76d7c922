"""Everything the detectors decide on a set of captures, dumped so two trees can be compared.

    .venv/bin/python bench/detector_diff.py write DIR [--packets N] [--rates 1000,20000] [--seconds 2]
    PYTHONPATH=TREE .venv/bin/python bench/detector_diff.py dump OUT.jsonl [--real DIR] [--pcaps DIR]
        [--batch-sizes 64,4096]
    .venv/bin/python bench/detector_diff.py diff OLD.jsonl NEW.jsonl

A change that only makes the detectors cheaper must leave their verdicts alone. ``write`` puts the
generated captures in DIR once (bench/gen.py's flood-heavy and benign-heavy captures, every flood
kind of `trainer.synth.floods` at each rate and its benign bulk transfers), so both trees read the
same bytes. ``dump`` runs the `DetectorSet` of the tree on ``PYTHONPATH`` (this checkout without
it) over every pcap of ``--pcaps`` and every capture of the real corpus's MANIFEST.tsv, at each
batch size, and writes one JSON line per (capture, batch size): every finding with all its
fields, the class of every frame (as a digest and per-class counts) and every detector's
counters. ``diff`` names each (capture, batch size) whose line differs and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if not os.environ.get("PYTHONPATH"):  # else PYTHONPATH's tree is dumped (an older one, side by side)
    sys.path.insert(0, str(HERE.parent))

REAL = Path("/work/shared/data/real") if Path("/work/shared/data/real").is_dir() else HERE.parent.parent / "shared/data/real"


def write(out: Path, packets: int, rates: list[float], seconds: float) -> None:
    """The generated captures, once, into ``out``."""
    import gen

    from trainer.synth.floods import BENIGN, FLOOD_CLASS, benign, flood, write_pcap

    out.mkdir(parents=True, exist_ok=True)
    gen.write_flood_pcap(out / "bench_flood.pcap", packets)
    gen.write_benign_pcap(out / "bench_benign.pcap", packets)
    for kind in FLOOD_CLASS:
        for rate in rates:
            write_pcap(out / f"synth_{kind}_{int(rate)}.pcap", flood(kind, rate, seconds)[0])
    for kind in BENIGN:
        write_pcap(out / f"synth_benign_{kind}.pcap", benign(kind, seconds)[0])


def _jsonable(v: object) -> object:
    # floats as repr: a last-bit change in a timestamp is a change
    if isinstance(v, float):
        return repr(v)
    return v


def verdicts(path: Path, batch_size: int) -> dict:
    """What a fresh `DetectorSet` decides on the capture, batch by batch."""
    from ids_daemon.capture.pcap import PcapSource
    from ids_daemon.detectors import DetectorSet

    ds = DetectorSet()
    classes, findings = [], []
    with PcapSource(path, batch_size=batch_size) as src:
        while (b := src.next_batch()) is not None:
            r = ds.process(b)
            classes.append(r.frame_class)
            findings += [{k: _jsonable(v) for k, v in asdict(f).items()} for f in r.findings]
    fc = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int16)
    return {
        "frames": int(fc.size),
        "frame_class_sha256": hashlib.sha256(fc.astype("<i2").tobytes()).hexdigest(),
        "frame_class_counts": {str(k): v for k, v in sorted(Counter(fc.tolist()).items())},
        "findings": findings,
        "counters": ds.counters,
    }


def captures(real: Path | None, pcaps: Path | None) -> list[tuple[str, Path]]:
    out = []
    if pcaps is not None:
        out += [(p.name, p) for p in sorted(pcaps.glob("*.pcap"))]
    if real is not None:
        with open(real / "MANIFEST.tsv", newline="") as f:
            out += [(r["file"], real / r["file"]) for r in csv.DictReader(f, delimiter="\t")]
    return out


def dump(out: Path, real: Path | None, pcaps: Path | None, batch_sizes: list[int]) -> None:
    with open(out, "w") as f:
        for name, path in captures(real, pcaps):
            for bs in batch_sizes:
                f.write(json.dumps({"capture": name, "batch_size": bs, **verdicts(path, bs)}, sort_keys=True) + "\n")
                f.flush()


def diff(old: Path, new: Path) -> int:
    def load(p: Path) -> dict:
        return {(d["capture"], d["batch_size"]): d for d in map(json.loads, open(p))}

    a, b = load(old), load(new)
    bad = 0
    for k in sorted(a.keys() | b.keys()):
        if k not in a or k not in b:
            print(f"{k[0]} @{k[1]}: only in {'new' if k not in a else 'old'}")
            bad += 1
            continue
        parts = [p for p in ("frames", "frame_class_sha256", "findings", "counters") if a[k][p] != b[k][p]]
        if parts:
            bad += 1
            print(f"{k[0]} @{k[1]}: differs in {', '.join(parts)}")
            if "counters" in parts:
                for det in sorted(a[k]["counters"].keys() | b[k]["counters"].keys()):
                    ca, cb = a[k]["counters"].get(det), b[k]["counters"].get(det)
                    if ca != cb:
                        print(f"    {det}: {ca} -> {cb}")
            if "findings" in parts:
                print(f"    findings: {len(a[k]['findings'])} -> {len(b[k]['findings'])}")
    n = len(a.keys() & b.keys())
    print(f"{n} (capture, batch size) pairs compared, {bad} differ")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir", type=Path)
    w.add_argument("--packets", type=int, default=300_000)
    w.add_argument("--rates", default="1000,20000")
    w.add_argument("--seconds", type=float, default=2.0)
    d = sub.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("--pcaps", type=Path, default=None, help="a directory of pcaps (`write`'s)")
    d.add_argument("--real", type=Path, default=REAL, help="the real corpus (MANIFEST.tsv); 'none' to skip")
    d.add_argument("--batch-sizes", default="64,4096")
    c = sub.add_parser("diff")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    a = ap.parse_args()
    if a.cmd == "write":
        write(a.dir, a.packets, [float(r) for r in a.rates.split(",")], a.seconds)
    elif a.cmd == "dump":
        real = None if str(a.real) == "none" else a.real
        dump(a.out, real, a.pcaps, [int(s) for s in a.batch_sizes.split(",")])
    else:
        sys.exit(diff(a.old, a.new))


if __name__ == "__main__":
    main()
