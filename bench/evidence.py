"""What the evidence sentence and the attribution cost the inference worker, in one run.

    .venv/bin/python bench/evidence.py [--packets N] [--sequences N] [--repeat R] [--compare REV] [--threads N]

For the benign-heavy and flood-heavy captures of bench/gen.py, the meter's windows become
sequences once (``--sequences`` of them), then one worker (the bundled model, CPU) predicts
them in micro-batches of 1,024 (`InferenceWorker.predict`, encoding included) in each
configuration, all configurations alternating in one process, the best of ``--repeat``
runs each, with the sentence caches cleared before every run (every window new to them):

  - no evidence, attribution off (the baseline: the worker before evidence)
  - evidence, attribution off
  - evidence, attribution flagged (the default; the model's operating point)
  - evidence, attribution flagged, threshold 0 (every sequence flagged: the worst case)
  - evidence, attribution on

Each is printed in sequences/s of wall time and of the process's CPU time (torch's threads
included; on a shared machine wall time also measures the neighbours, and with two torch
threads so does CPU time: a thread spins while its peer waits for a core; ``--threads 1``
gives the steadiest CPU figures), and as a change against the baseline. ``--compare REV`` adds the sentence of an older revision of
``ids_daemon/inference/evidence.py`` (git), off and flagged, for before/after figures
from the same run. The goal (issue 20): the default configuration at most 10 % below the
baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if not os.environ.get("PYTHONPATH"):  # else PYTHONPATH's tree is timed (an older one, side by side)
    sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

import ids_daemon.inference.worker as worker_module  # noqa: E402
from ids_daemon.builder import make_worker, windows_of_file  # noqa: E402
from ids_daemon.config import load_config  # noqa: E402
from ids_daemon.inference import evidence  # noqa: E402
from ids_daemon.sequence import SequenceBuffer  # noqa: E402

BATCH = 1024


def older_evidence(rev: str) -> tuple[Callable, Callable[[], None]]:
    """(window_sentences, clear its caches) of ``evidence.py`` at git revision ``rev``."""
    rel = "ids_daemon/inference/evidence.py"
    text = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{rev}:{rel}"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "evidence.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"ids_daemon.inference._evidence_{rev}", path)
    assert spec is not None and spec.loader is not None
    mod: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if hasattr(mod, "clear_caches"):
        return mod.window_sentences, mod.clear_caches
    # before clear_caches: its two caches (protocol and flag parts, numbers)
    return mod.window_sentences, lambda: (mod._CACHE.clear(), mod._NUMS.clear())


def configurations(rev: str | None) -> list[tuple[str, Callable | None, Callable[[], None], str, bool]]:
    """(label, sentence function or None, cache clearing, attribution mode, every sequence flagged)."""
    ours = (evidence.window_sentences, evidence.clear_caches)
    out = [("no evidence, attribution off", None, lambda: None, "off", False),
           ("evidence, attribution off", *ours, "off", False),
           ("evidence, attribution flagged", *ours, "flagged", False),
           ("evidence, flagged, 100 % flagged", *ours, "flagged", True),
           ("evidence, attribution on", *ours, "on", False)]
    if rev:
        old = older_evidence(rev)
        out[2:2] = [(f"evidence ({rev}), attribution off", *old, "off", False),
                    (f"evidence ({rev}), attribution flagged", *old, "flagged", False)]
    return out


def timed_run(worker, seq, sentences: Callable | None, clear: Callable[[], None], mode: str,
              all_flagged: bool, threshold: float | None) -> tuple[float, float]:
    """(wall s, CPU s) of predicting ``seq`` in micro-batches in one configuration."""
    # no evidence: the worker's encoder gets None for the field, as before evidence existed
    worker_module.window_sentences = sentences or (lambda w: None)
    worker.attribution = mode
    worker.threshold = 0.0 if all_flagged else threshold
    clear()
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(seq), BATCH):
        worker.predict(seq.take(slice(i, min(i + BATCH, len(seq)))))
    return time.perf_counter() - t, time.process_time() - c


def measure(name: str, path: Path, worker, cfg, n: int, repeat: int, rev: str | None) -> None:
    wb = windows_of_file(cfg, str(path))
    seq = SequenceBuffer(worker.seq_len, worker.columns, 1 << 18).push(wb)
    seq = seq.take(slice(0, min(n, len(seq))))
    threshold = worker.threshold
    confs = configurations(rev)
    best: dict[str, list[float]] = {c[0]: [float("inf"), float("inf")] for c in confs}
    flagged = worker.attributed
    timed_run(worker, seq.take(slice(0, BATCH)), *confs[-1][1:], threshold)  # warm: first calls, lazy imports
    for _ in range(repeat):  # alternating, best of each: the machine's load changes under the run
        for label, *conf in confs:
            before = worker.attributed
            wall, cpu = timed_run(worker, seq, *conf, threshold)
            best[label] = [min(best[label][0], wall), min(best[label][1], cpu)]
            if label == "evidence, attribution flagged":
                flagged = worker.attributed - before
    worker.threshold = threshold
    base_w, base_c = best[confs[0][0]]
    print(f"\n{name}: {len(seq):,} sequences (T={worker.seq_len}), micro-batches of {BATCH:,}, best of {repeat}; "
          f"{flagged / len(seq):.0%} flagged at the operating point")
    print(f"  {'configuration':42s} {'wall seq/s':>11s} {'change':>7s} {'CPU seq/s':>11s} {'change':>7s}")
    for label, (wall, cpu) in best.items():
        print(f"  {label:42s} {len(seq) / wall:11,.0f} {base_w / wall - 1:+7.1%} "
              f"{len(seq) / cpu:11,.0f} {base_c / cpu - 1:+7.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--sequences", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--compare", metavar="REV", help="also time the sentence of this git revision")
    ap.add_argument("--threads", type=int, help="torch's CPU threads (default: the daemon's, inference.threads)")
    a = ap.parse_args()
    import torch

    cfg = load_config(None, {"inference.device": "cpu", "metrics.listen": None, "inference.threads": a.threads})
    worker = make_worker(cfg)
    print(f"model {worker.model_info['name']} {worker.model_info['version']}, device cpu, "
          f"torch {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as d:
        benign = gen.write_benign_pcap(Path(d) / "benign.pcap", a.packets)
        flood = gen.write_flood_pcap(Path(d) / "flood.pcap", a.packets)
        measure("benign-heavy", benign, worker, cfg, a.sequences, a.repeat, a.compare)
        measure("flood-heavy", flood, worker, cfg, a.sequences, a.repeat, a.compare)


if __name__ == "__main__":
    main()
