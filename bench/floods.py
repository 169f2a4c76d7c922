"""Floods from one host at fixed rates, and benign bulk transfers, through the detectors.

    python bench/floods.py [--rates 1000,10000,50000] [--seconds 3]

For each flood kind of `trainer.synth.floods` and each rate, one capture (the attacker's
packets at that rate, the victim's answers, a little benign background) is written to a
temporary pcap and read back through `DetectorSet` as the daemon does; the table gives the
share of the flood's packets flagged, the share flagged with the right family (DDoS and DoS
as one) and the class named most. The benign bulk transfers (a 100 MB download, video over
UDP and TCP, an SMB backup, a download through a UDP tunnel whose outer datagrams fragment, NFS
reads over UDP) must flag nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ids_daemon.capture.pcap import PcapSource  # noqa: E402
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet  # noqa: E402
from trainer.bysource import family_key  # noqa: E402
from trainer.synth.floods import BENIGN, FLOOD_CLASS, benign, flood, write_pcap  # noqa: E402


def judge(frames: list, attack: list, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the detector class index (-1 none), and the attack label."""
    path = write_pcap(tmp / "x.pcap", frames)
    ds = DetectorSet()
    out = []
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            out.append(ds.process(b).frame_class)
    return np.concatenate(out), np.asarray(attack, dtype=bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,10000,50000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--kinds", default=",".join(FLOOD_CLASS))
    a = ap.parse_args()
    rates = [float(r) for r in a.rates.split(",")]
    worst = 1.0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"{'flood':12s} {'rate/s':>8s} {'packets':>8s} {'flagged':>8s} {'family':>8s}  named (most)")
        for kind in a.kinds.split(","):
            for rate in rates:
                fc, att = judge(*flood(kind, rate, a.seconds), tmp)
                want = family_key(FLOOD_CLASS[kind])
                fam = np.array([family_key(c) for c in DETECTOR_CLASSES] + [""], dtype=object)[fc]
                flagged = float((fc[att] >= 0).mean())
                right = float((fam[att] == want).mean())
                worst = min(worst, right)
                top = Counter(DETECTOR_CLASSES[c] for c in fc[att].tolist() if c >= 0).most_common(1)
                print(f"{kind:12s} {rate:8.0f} {int(att.sum()):8d} {flagged:8.1%} {right:8.1%}  "
                      f"{top[0][0] if top else '-'}; benign background flagged {int((fc[~att] >= 0).sum())}")
        print(f"{'benign':12s} {'':>8s} {'packets':>8s} {'flagged':>8s}")
        for kind in BENIGN:
            fc, _ = judge(*benign(kind, seconds=10.0), tmp)
            print(f"{kind:12s} {'':8s} {fc.size:8d} {int((fc >= 0).sum()):8d}")
    print(f"worst flood, family right: {worst:.1%}")


if __name__ == "__main__":
    main()
