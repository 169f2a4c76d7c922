"""bench/gen.py's captures are what the benchmarks say they are: the benign-heavy one is benign to
the detectors, and the flood-heavy one's attack is its flood alone.

Every frame once came from one MAC, so the benign capture held one station claiming all 81 LAN
addresses in ARP and asking for all of them: the ARP detector flagged all of its ARP as spoofing
and the scan detector 11 % of the capture as an ARP sweep, and the detectors' benchmark timed their
attack paths on "benign" traffic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import Config
from ids_daemon.detectors import DetectorSet
from ids_daemon.detectors.base import DETECTOR_CLASSES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gen  # noqa: E402


def _verdicts(path: Path) -> tuple[list, np.ndarray]:
    ds = DetectorSet(Config().detectors)
    batches, verdicts = [], []
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            batches.append(b)
            verdicts.append(ds.process(b).frame_class)
    return batches, np.concatenate(verdicts)


def test_benign_capture_is_benign_to_the_detectors(tmp_path: Path) -> None:
    batches, verdict = _verdicts(gen.write_benign_pcap(tmp_path / "b.pcap", 60_000))
    flagged = {DETECTOR_CLASSES[c]: int(n) for c, n in zip(*np.unique(verdict[verdict >= 0], return_counts=True))}
    assert flagged == {}
    # one MAC per IPv4 address in ARP (a station answers for its own address only), and some ARP there
    arp_sha = np.concatenate([b.arp_sha[b.ethertype == 0x0806] for b in batches])
    arp_spa = np.concatenate([b.src4[b.ethertype == 0x0806] for b in batches])
    assert arp_sha.size > 100
    pairs = set(zip(arp_spa.tolist(), arp_sha.tolist()))
    assert len(pairs) == len({ip for ip, _ in pairs})
    assert len({mac for _, mac in pairs}) == len(pairs)


def test_flood_capture_flags_its_flood_only(tmp_path: Path) -> None:
    batches, verdict = _verdicts(gen.write_flood_pcap(tmp_path / "f.pcap", 60_000))
    to_victim = np.concatenate([b.dst4 == gen.ip("192.168.1.10") for b in batches])
    arp = np.concatenate([b.ethertype == 0x0806 for b in batches])
    # the flood is everything sent to the victim; the ~10 % benign IoT traffic beside it is left alone
    assert not (verdict[~to_victim] >= 0).any()
    assert not (verdict[arp] >= 0).any()
    assert (verdict[to_victim] >= 0).mean() > 0.9


def test_the_detectors_cost_bench_runs_at_each_batch_size() -> None:
    """bench/detectors.py (the detectors' cost against the meter, issue 17) prints, per capture and
    batch size asked for, the meter, the whole set and every detector of the set: a figure the
    issue's goal is read from cannot rot unseen."""
    import subprocess

    out = subprocess.run([sys.executable, str(ROOT / "bench/detectors.py"), "--packets", "6000", "--repeat", "1",
                          "--batch-sizes", "512,4096"], capture_output=True, text=True, timeout=600, check=True).stdout
    names = [d.name for d in DetectorSet(Config().detectors).detectors]
    for size in ("512", "4,096"):
        for cap in ("flood-heavy", "benign-heavy"):
            head = f"{cap}: 6,000 packets in"
            block = [b for b in out.split("\n\n") if head in b and f"batches of up to {size} " in b]
            assert len(block) == 1, out
            lines = block[0].splitlines()
            for what in ["meter", "all detectors", *names]:
                assert any(ln.split()[0] == what.split()[0] and ln.rstrip().endswith("x meter") for ln in lines[1:]), what
