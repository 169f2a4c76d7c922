"""The worker's whole `InferenceWorker.predict` (model, decision, evidence sentence,
attribution of the flagged sequences, prediction JSON) by batch size, this tree against
another (the tree before a change), alternating in one run.

    .venv/bin/python bench/predict.py [--baseline DIR] [--batches 256,1024,4096]
                                      [--packets N] [--sequences N] [--rounds R] [--repeat R]

The benign-heavy and flood-heavy captures of bench/gen.py go through the meter and the
sequence buffer once (``--sequences`` of each, pickled to a temporary file); then each
tree (this one, and ``--baseline``'s, a checkout of another revision: e.g. ``git worktree
add --detach /tmp/base HEAD~1``) times `predict` in its own process with one torch thread
on the CPU, the default configuration (evidence, attribution flagged at the model's
operating point), each batch size the best of ``--repeat`` passes over the sequences. The
trees alternate ``--rounds`` times (the machine's load changes under the run) and the best
of each counts: sequences/s of the process's CPU time (the steadier figure on a shared
machine) and of wall time, and each tree's ratio to the baseline (CPU time).
``--no-dedupe-row`` adds this tree with the model on every row of a batch, repeated
sequences too (`InferenceWorker(dedupe=False)`: byte for byte the messages of the tree
before the grouping of distinct sequences). Goal (issue 18): >= 150 k
sequences/s at 1,024.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(data: str, batches: list[int], repeat: int, dedupe: bool) -> None:
    """One tree's pass (run with PYTHONPATH at that tree): JSON of {capture: {batch: [cpu s, wall s, n]}}."""
    from ids_daemon.builder import make_worker
    from ids_daemon.config import load_config

    cfg = load_config(None, {"inference.device": "cpu", "metrics.listen": None, "inference.threads": 1})
    worker = make_worker(cfg)
    if hasattr(worker, "dedupe"):
        worker.dedupe = dedupe
    with open(data, "rb") as fh:
        seqs = pickle.load(fh)
    out: dict[str, dict[int, list[float]]] = {}
    for name, seq in seqs.items():
        out[name] = {}
        for b in batches:
            parts = [seq.take(slice(i, min(i + b, len(seq)))) for i in range(0, len(seq), b)]
            worker.predict(parts[0])  # warm: first calls, lazy imports
            best = [float("inf"), float("inf")]
            for _ in range(repeat):
                # a stream meets each window new once: the numpy engine's window cache starts
                # empty every pass (else a second pass over the same sequences would be all hits)
                cache = getattr(getattr(worker, "numpy", None), "cache", None)
                if cache is not None:
                    cache.clear()
                t, c = time.perf_counter(), time.process_time()
                for p in parts:
                    worker.predict(p)
                best = [min(best[0], time.process_time() - c), min(best[1], time.perf_counter() - t)]
            out[name][b] = [*best, len(seq)]
    print(json.dumps(out))


def sequences(packets: int, n: int, path: Path) -> None:
    """The two captures' first ``n`` sequences, pickled to ``path``."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    import gen
    from ids_daemon.builder import make_worker, windows_of_file
    from ids_daemon.config import load_config
    from ids_daemon.sequence import SequenceBuffer

    cfg = load_config(None, {"inference.device": "cpu", "metrics.listen": None, "inference.threads": 1})
    worker = make_worker(cfg)
    seqs = {}
    with tempfile.TemporaryDirectory() as d:
        for name, write in (("benign-heavy", gen.write_benign_pcap), ("flood-heavy", gen.write_flood_pcap)):
            s = SequenceBuffer(worker.seq_len, worker.columns, 1 << 18).push(
                windows_of_file(cfg, str(write(Path(d) / f"{name}.pcap", packets))))
            seqs[name] = s.take(slice(0, min(n, len(s))))
    with open(path, "wb") as fh:
        pickle.dump(seqs, fh)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="DIR", help="another checkout of the project, timed alternately")
    ap.add_argument("--batches", default="256,1024,4096")
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--sequences", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the trees; the best counts")
    ap.add_argument("--repeat", type=int, default=3, help="passes per batch size in each round")
    ap.add_argument("--no-dedupe-row", action="store_true",
                    help="also time this tree with the model on every row (InferenceWorker(dedupe=False))")
    ap.add_argument("--child", metavar="DATA", help=argparse.SUPPRESS)
    ap.add_argument("--dedupe", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    if a.child:
        child(a.child, batches, a.repeat, bool(a.dedupe))
        return
    # label: (checkout, the worker's dedupe)
    trees = {"this tree": (HERE.parent, True)}
    if a.no_dedupe_row:
        trees = {"no dedupe": (HERE.parent, False), **trees}
    if a.baseline:
        trees = {"baseline": (Path(a.baseline).resolve(), True), **trees}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    best: dict[str, dict] = {t: {} for t in trees}
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "sequences.pickle"
        sequences(a.packets, a.sequences, data)
        for _ in range(a.rounds):
            for label, (root, dedupe) in trees.items():
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(data), "--batches", a.batches,
                       "--repeat", str(a.repeat), "--dedupe", str(int(dedupe))]
                res = json.loads(subprocess.run(cmd, env=dict(env, PYTHONPATH=str(root)), check=True,
                                                capture_output=True, text=True, cwd=root).stdout)
                for name, by in res.items():
                    for b, (cpu, wall, n) in by.items():
                        old = best[label].get((name, int(b)), [float("inf"), float("inf"), n])
                        best[label][(name, int(b))] = [min(old[0], cpu), min(old[1], wall), n]
    print(f"InferenceWorker.predict, CPU, one torch thread, evidence + attribution flagged; best of "
          f"{a.rounds} rounds x {a.repeat} passes")
    print(f"  {'capture':13s} {'batch':>6s} " + " ".join(f"{t + ' CPU/s':>17s} {'wall/s':>9s}" for t in trees)
          + ("".join(f"  {t + ' ×':>12s}" for t in list(trees)[1:]) if a.baseline else ""))
    for key in best["this tree"]:
        row = [best[t][key] for t in trees]
        cells = " ".join(f"{n / cpu:17,.0f} {n / wall:9,.0f}" for cpu, wall, n in row)
        ratio = "".join(f"  {row[0][0] / r[0]:11.2f}x" for r in row[1:]) if a.baseline else ""
        print(f"  {key[0]:13s} {key[1]:6d} {cells}{ratio}")


if __name__ == "__main__":
    main()
