"""The Prometheus endpoint, scraped during a replay."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

from ids_daemon.model.artifacts import load_model
from trainer.synth import generate_file

from .helpers import EXE, free_port  # noqa: E402


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) ([0-9.eE+-]+|NaN)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_metrics_move_during_a_replay_and_agree_with_the_output(tmp_path: Path) -> None:
    pcap = tmp_path / "b.pcap"
    generate_file(pcap, "BenignTraffic", 0, 3000, seed=4)
    port = free_port()
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"metrics:\n  listen: 127.0.0.1:{port}\n")
    out = tmp_path / "p.jsonl"
    proc = subprocess.Popen([EXE, "replay", "-r", str(pcap), "--speed", "6", "-o", str(out), "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "classifying" in proc.stderr.readline()
        assert f"127.0.0.1:{port}/metrics" in proc.stderr.readline()
        time.sleep(1.5)
        first = scrape(port)
        time.sleep(2.5)
        second = scrape(port)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    for m in (first, second):
        # packets in = packets counted: every frame read is metered, skipped, malformed or left to a detector
        assert m["ids_packets_total"] == m["ids_meter_packets_total"] + m["ids_meter_skipped_total"] + \
            m["ids_meter_malformed_total"] + m["ids_detector_claimed_total"]
        preds = sum(v for k, v in m.items() if k.startswith("ids_predictions_total{"))
        assert preds <= m["ids_sequences_total"] <= m["ids_windows_total"] + 0
        assert sum(v for k, v in m.items() if k.startswith("ids_predictions_by_severity_total{")) == preds
    assert second["ids_packets_total"] > first["ids_packets_total"] > 0  # moving
    assert second["ids_windows_total"] >= first["ids_windows_total"]
    assert second["ids_inference_batch_size_count"] >= 1
    meta = load_model().meta
    assert f'ids_model_info{{device="cpu",name="{meta["name"]}",version="{meta["version"]}"}}' in second
    total = int(err.split(" frames,")[0].split()[-1])
    assert second["ids_packets_total"] <= total
    assert len(out.read_text().splitlines()) >= preds
