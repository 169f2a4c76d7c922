"""Helpers every test module shares: the CLI under test, a free loopback port, the
bundled sample's predictions."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from .paths import ROOT

# the console scripts of the interpreter running the tests (the virtualenv's), so a
# test runs the code of this checkout (PYTHONPATH) and never one installed elsewhere
EXE = str(Path(sys.executable).parent / "ids-daemon")
TRAINER = str(Path(sys.executable).parent / "ids-trainer")
SAMPLE = ROOT / "ids_daemon" / "data" / "sample.pcap"  # the capture the demo replays


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing listens on right now (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replay_sample(folder: Path) -> tuple[Path, list[dict]]:
    """Replay the bundled sample with the bundled model into FOLDER/predictions.jsonl, as a
    user would; returns that file and the predictions in it."""
    out = folder / "predictions.jsonl"
    r = subprocess.run([EXE, "replay", "-r", str(SAMPLE), "-o", str(out), "--metrics-listen", "off"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out, [json.loads(x) for x in out.read_text().splitlines()]
