"""Regenerate ids_daemon/data/sample.pcap: the demo's capture, seeded and reproducible.

Four scenarios of the synthetic generator (`ids-trainer synth`), one after the other
on one timeline: benign IoT traffic, then a spoofed-source SYN flood, a SYN port scan
and an ICMP flood. Beside it, sample.yml lists the scenarios (label, family, time span,
packets, description): the demo says from it which of its findings are expected and
which are false alarms. Run: python scripts/make_sample_pcap.py [OUT]

The shipped sample.pcap (5401 packets) was made by an earlier version of the generator;
this script now writes a different capture (5790 packets), so the shipped sample.yml was
derived from the shipped capture itself (its scenarios are separated by exact GAP-second
pauses); tests/test_ux.py checks that the two agree packet for packet.
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

import yaml

from ids_daemon.model.classes import family_of
from trainer.synth import generate_file

SCENARIOS = (("BenignTraffic", 2400), ("DDoS-SYN_Flood", 1500), ("Recon-PortScan", 600), ("DDoS-ICMP_Flood", 900))
SEED = 42
GAP = 2.0  # seconds between scenarios


def read_records(path: Path) -> list[tuple[float, bytes, int]]:
    data = path.read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, pos)
        out.append((sec + usec / 1e6, data[pos + 16:pos + 16 + incl], orig))
        pos += 16 + incl
    return out


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "ids_daemon/data/sample.pcap"
    records: list[tuple[float, bytes, int]] = []
    scenarios = []
    t = 1_700_000_000.0
    with tempfile.TemporaryDirectory() as tmp:
        for k, (label, budget) in enumerate(SCENARIOS):
            p = Path(tmp) / f"{k}.pcap"
            n, desc = generate_file(p, label, 0, budget, seed=SEED)
            recs = read_records(p)
            t0 = recs[0][0]
            records += [(t + (ts - t0), frame, orig) for ts, frame, orig in recs]
            scenarios.append({"label": label, "family": family_of(label), "start": t, "end": records[-1][0],
                              "packets": n, "description": desc})
            t = records[-1][0] + GAP
    chunks = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for ts, frame, orig in records:
        sec = int(ts)
        chunks.append(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)) % 1_000_000, len(frame), orig) + frame)
    out.write_bytes(b"".join(chunks))
    # the timestamps as written (microseconds), so a packet's time lies inside its span
    for s in scenarios:
        s["start"], s["end"] = (round(s["start"], 6), round(s["end"], 6))
    out.with_suffix(".yml").write_text(
        "# The scenarios of sample.pcap, one after the other on its timeline (written by\n"
        "# scripts/make_sample_pcap.py; start/end: the first and last packet's time).\n"
        + yaml.safe_dump({"capture": out.name, "seed": SEED, "scenarios": scenarios}, sort_keys=False, width=120))
    print(f"wrote {len(records)} packets ({', '.join(s for s, _ in SCENARIOS)}) to {out}")


if __name__ == "__main__":
    main()
