"""What a user sees first: the demo's account of its findings, summaries that count in
good English, and the trainer's command line (defaults shown, flags that would be
ignored refused, tiny training sets warned about, versions that change)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ids_daemon.demo import attribute, report, sample_scenarios
from ids_daemon.text import agree, plural

from .pcapgen import ethernet, ipv4_udp, write_pcap

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "ids-daemon")
TRAINER = str(Path(sys.executable).parent / "ids-trainer")
SAMPLE = ROOT / "ids_daemon" / "data" / "sample.pcap"


def _pcap_times(path: Path) -> list[float]:
    data = path.read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, incl = (int.from_bytes(data[pos + i:pos + i + 4], "little") for i in (0, 4, 8))
        out.append(sec + usec / 1e6)
        pos += 16 + incl
    return out


# ---- the demo ------------------------------------------------------------------------------

def test_sample_scenarios_partition_the_bundled_capture() -> None:
    """sample.json describes sample.pcap: every packet lies in exactly one scenario's span,
    and each scenario holds the packets it says."""
    sc = sample_scenarios()
    assert [s["label"] for s in sc] == ["BenignTraffic", "DDoS-SYN_Flood", "Recon-PortScan", "DDoS-ICMP_Flood"]
    times = _pcap_times(SAMPLE)
    for s in sc:
        assert s["start"] <= s["end"]
        assert sum(s["start"] - 1e-6 <= t <= s["end"] + 1e-6 for t in times) == s["packets"], s["label"]
    assert sum(s["packets"] for s in sc) == len(times)
    for a, b in zip(sc, sc[1:]):
        assert a["end"] < b["start"]


def _pred(t: float, attack: bool, family: str, detector: bool = False) -> dict:
    return {"window": {"last_ts": t}, "is_attack": attack, "family": family,
            "model": {"name": "detector:scan" if detector else "ids-lstm"}}


def test_findings_are_expected_or_false_alarms() -> None:
    sc = [{"label": "BenignTraffic", "family": "Benign", "start": 0.0, "end": 9.0, "packets": 50,
           "description": "benign"},
          {"label": "DDoS-SYN_Flood", "family": "DDoS", "start": 10.0, "end": 19.0, "packets": 40,
           "description": "a flood"},
          {"label": "Recon-PortScan", "family": "Recon", "start": 20.0, "end": 29.0, "packets": 1,
           "description": "a scan"}]
    preds = [_pred(1, False, "Benign"), _pred(2, True, "Recon"), _pred(9.5, True, "Recon"),  # 2 false alarms
             _pred(11, True, "DDoS"), _pred(12, True, "BruteForce"), _pred(13, False, "Benign"),
             _pred(21, False, "Benign"), _pred(22, False, "Benign", detector=True)]
    parts = attribute(preds, sc)
    assert [f.windows for f in parts] == [3, 3, 1] and parts[2].findings == 1
    lines = report(preds, sc)
    assert lines[0] == "benign (BenignTraffic, 50 packets): 3 windows; 2 flagged: false alarms (Recon 2)"
    assert lines[1] == ("a flood (DDoS-SYN_Flood, 40 packets): 3 windows; 2 flagged: expected, 1 as DDoS "
                        "(DDoS 1, BruteForce 1)")
    assert lines[2] == ("a scan (Recon-PortScan, 1 packet): 1 window and 1 detector finding; nothing flagged: "
                        "the attack was MISSED")
    assert lines[3] == ("flagged: 2 expected (in the attack scenarios; 1 in the scenario's family), "
                        "2 false alarms (in benign traffic); missed: Recon-PortScan")


def test_demo_says_what_its_findings_are(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    p = subprocess.run([EXE, "demo", "--no-kafka", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    sc = sample_scenarios()
    # counted here from the predictions file, independently of the demo's code
    benign_end = sc[1]["start"]
    false_alarms = sum(m["is_attack"] for m in preds if m["window"]["last_ts"] < benign_end)
    expected = sum(m["is_attack"] for m in preds if m["window"]["last_ts"] >= benign_end)
    block = text.split("what was flagged in each part")[1].split("the riskiest prediction")[0]
    lines = [ln.strip() for ln in block.splitlines()[1:] if ln.strip()]
    assert len(lines) == len(sc) + 1, block
    for line, s in zip(lines, sc):
        assert line.startswith(f"{s['description']} ({s['label']}, {s['packets']} packets): "), line
    assert lines[0].endswith("nothing flagged (no false alarm)") if not false_alarms else \
        f"{false_alarms} flagged: false alarm" in lines[0]
    m = re.match(r"flagged: (\d+) expected \(in the attack scenarios; (\d+) in the scenario's family\), "
                 r"(\d+) false alarms? \(in benign traffic\)", lines[-1])
    assert m, lines[-1]
    assert (int(m.group(1)), int(m.group(3))) == (expected, false_alarms)
    assert expected > 0
    # the riskiest prediction in full, not cut short
    shown = text.split("the riskiest prediction, as published:")[1].splitlines()[1].strip()
    riskiest = json.loads(shown)
    assert riskiest == max(preds, key=lambda m: m["risk_score"])
    assert len(shown) > 600


# ---- counting in summaries -----------------------------------------------------------------

def test_plural_and_agree() -> None:
    assert plural(1, "frame") == "1 frame" and plural(0, "frame") == "0 frames"
    assert plural(1, "batch", "batches") == "1 batch" and plural(3, "batch", "batches") == "3 batches"
    assert agree("1 frames, 21 frames, 2.1 windows, 1 batches, 11 flows, 1 classes") == \
        "1 frame, 21 frames, 2.1 windows, 1 batch, 11 flows, 1 class"


def test_one_frame_summaries_are_singular(tmp_path: Path) -> None:
    pcap = tmp_path / "one.pcap"
    write_pcap(pcap, [(1.0, ethernet(ipv4_udp()))])
    p = subprocess.run([EXE, "features", "-r", str(pcap), "-o", str(tmp_path / "f.csv")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("1 frame: 1 metered") and "1 window written (1 window, 1 partial)" in p.stderr
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(tmp_path / "p.jsonl"), "--metrics-listen", "off"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "1 frame, 1 metered, 1 window, 1 prediction in 1 batch " in p.stderr, p.stderr
    assert "model: 1 window classified" in p.stderr
    for word in ("frames", "windows", "predictions", "batches"):
        assert not re.search(rf"(?<![\d.]){1} {word}\b", p.stderr), (word, p.stderr)
