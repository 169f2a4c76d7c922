"""Inference worker by batch size, each engine and path against the reference path, and
replay end to end, on each device (CUDA beside the CPU when there is a GPU), in one run.

    .venv/bin/python bench/gpu.py [--device cpu,cuda] [--threads N] [--half] [--seconds S]
                                  [--batches 1,64,...] [--repeat R] [--replay-packets N]

Worker: what it does per micro-batch (its probabilities: logits, softmax in double, back on
the host): host → device copy (from pinned memory on a GPU), the feature encoding, the LSTM
and its head. Not the JSON encoding of the predictions. The paths, on the same sequences,
alternating ``--repeat`` times for ``--seconds`` each, the best of each counts:

  - ref:   torch: `TorchEncoder` (every bin, 342 wide for the bundled model), then the model
  - fast:  torch: `ids_daemon.model.fast.FastLSTM` (the padding bins left out), what the
           worker runs on a GPU (and on the CPU with ``inference.engine: torch``)
  - numpy: `ids_daemon.model.numpy_lstm.NumpyLSTM` (the same bins, no torch), what the
           worker runs on the CPU by default (CPU only)

with sequences/s of wall time and, on the CPU, of this process's CPU time (every thread
included; on a shared machine the steadier figure), each path's ratio to ref, the last
path's p50/p99 latency, and the largest difference of each path's probabilities from ref's
on the real sequences. Sequences are real
windows: the bench's benign capture through the meter and the sequence buffer, tiled to
the batch size.

Replay: ``ids-daemon replay`` as the CLI builds it (JSON-lines sink) on the flood-heavy
and the benign-heavy capture of bench/gen.py, with the worker on each device, the paths
alternating: packets/s and predictions/s (0 packets: skipped).

Goals: >= 150 k sequences/s at batch 1,024 on the CPU (issue 18); >= 2 M sequences/s at the
best batch size on an H100. tests/test_fast_path.py runs this on the CPU with tiny settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

from ids_daemon.builder import build_pipeline, windows_of_file  # noqa: E402
from ids_daemon.config import load_config  # noqa: E402
from ids_daemon.inference.worker import InferenceWorker, set_threads  # noqa: E402
from ids_daemon.model.numpy_lstm import NumpyLSTM  # noqa: E402
from ids_daemon.sequence import SequenceBuffer  # noqa: E402
from ids_daemon.sinks.jsonl import JsonlSink  # noqa: E402


def capture(kind: str, packets: int) -> Path:
    """bench/out's capture of ``kind`` (flood or benign) with ``packets`` packets, made once."""
    writer, seed = {"flood": (gen.write_flood_pcap, 1), "benign": (gen.write_benign_pcap, 2)}[kind]
    p = HERE / "out" / f"{kind}-v1-{packets}-s{seed}.pcap"
    if not p.exists():
        p.parent.mkdir(exist_ok=True)
        writer(p, packets, seed)
    return p


def real_sequences(worker: InferenceWorker, packets: int) -> np.ndarray:
    cfg = load_config(None, {"meter.window": worker.window, "metrics.listen": None})
    return SequenceBuffer(worker.seq_len, worker.columns, 1 << 18).push(
        windows_of_file(cfg, str(capture("benign", packets)))).x


class Path_:
    """One way of running the worker's model: the worker's torch engine with or without its fast
    path, or the numpy engine; `use` switches the worker to it (the replay runs through it)."""

    def __init__(self, name: str, worker: InferenceWorker):
        self.name, self.worker = name, worker
        self.numpy = (NumpyLSTM(worker.loaded.state, worker.loaded.config, worker.loaded.encoder)
                      if name == "numpy" else None)
        self.fast = worker.fast if name == "fast" else None

    def use(self) -> None:
        self.worker.numpy, self.worker.fast = self.numpy, self.fast

    def probabilities(self, host: torch.Tensor) -> np.ndarray:
        """Raw sequences on the host → probabilities on the host."""
        self.use()
        if self.numpy is not None:
            if self.numpy.cache is not None:
                # the same batch again and again: a stream meets its windows once, not every call
                self.numpy.cache.clear()
            return self.worker._probabilities(host.numpy())  # noqa: SLF001 - what predict calls
        logits = self.worker.logits(host.to(str(self.worker.device), non_blocking=True))
        with torch.inference_mode():
            return torch.softmax(logits.double(), dim=1).cpu().numpy()  # back on the host: synchronises


def paths_of(worker: InferenceWorker) -> list[Path_]:
    names = ["ref"] + (["fast"] if worker.fast is not None else [])
    if worker.device.type == "cpu" and not worker.half:
        names.append("numpy")
    return [Path_(n, worker) for n in names]


def worker_table(paths: list[Path_], base: np.ndarray, batches: list[int], seconds: float, repeat: int) -> None:
    dev = paths[0].worker.device
    on_cpu = dev.type == "cpu"
    head = f"{'batch':>7s}" + "".join(f" {p.name + ' seq/s':>11s}" + (f" {'x':>5s}" if i else "")
                                      for i, p in enumerate(paths))
    if on_cpu:
        head += "".join(f" {p.name + ' CPU/s':>11s}" + (f" {'x':>5s}" if i else "") for i, p in enumerate(paths))
    print(head + f" {'p50 ms':>8s} {'p99 ms':>8s}")
    for bs in batches:
        x = np.ascontiguousarray(np.resize(base, (bs,) + base.shape[1:]), dtype=np.float32)
        host = torch.from_numpy(x)
        if dev.type == "cuda":
            host = host.pin_memory()
        best = {p.name: [0.0, 0.0] for p in paths}  # (wall, CPU) sequences/s
        lat: list[float] = []
        for p in paths:  # warm: first calls, lazy initialisation
            for _ in range(3):
                p.probabilities(host)
        for _ in range(repeat):  # alternating: the machine's load changes under the run
            for p in paths:
                n = 0
                c0, t0 = time.process_time(), time.perf_counter()
                t_end = t0 + seconds / repeat
                while True:
                    s = time.perf_counter()
                    p.probabilities(host)
                    e = time.perf_counter()
                    n += bs
                    if p is paths[-1]:
                        lat.append(e - s)
                    if e >= t_end:
                        break
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                best[p.name] = [max(best[p.name][0], n / wall), max(best[p.name][1], n / max(cpu, 1e-9))]
        ref = best["ref"]
        row = f"{bs:>7d}" + "".join(f" {best[p.name][0]:>11,.0f}" + (f" {best[p.name][0] / ref[0]:>5.2f}" if i else "")
                                    for i, p in enumerate(paths))
        if on_cpu:
            row += "".join(f" {best[p.name][1]:>11,.0f}" + (f" {best[p.name][1] / ref[1]:>5.2f}" if i else "")
                           for i, p in enumerate(paths))
        print(row + f" {np.percentile(lat, 50) * 1e3:>8.3f} {np.percentile(lat, 99) * 1e3:>8.3f}")


def replay_rates(paths: list[Path_], packets: int, repeat: int) -> None:
    worker = paths[0].worker
    cfg = load_config(None, {"inference.device": str(worker.device), "metrics.listen": None})
    print(f"{'capture':8s} {'path':5s} {'packets/s':>11s} {'predictions/s':>14s} {'predictions':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("flood", "benign"):
            cap = capture(kind, packets)
            best: dict[str, tuple[float, float, int]] = {}
            for _ in range(repeat):
                for p in paths:
                    p.use()
                    pipe = build_pipeline(cfg, read=str(cap), sink_objects=[JsonlSink(str(Path(tmp) / "p.jsonl"))],
                                          worker=worker)
                    try:
                        st = pipe.run()
                    finally:
                        pipe.source.close()
                    r = (st.frames / st.seconds, st.predictions / st.seconds, st.predictions)
                    if p.name not in best or r[0] > best[p.name][0]:
                        best[p.name] = r
            for p in paths:
                pps, prs, n = best[p.name]
                print(f"{kind:8s} {p.name:5s} {pps:>11,.0f} {prs:>14,.0f} {n:>12,d}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu,cuda" if torch.cuda.is_available() else "cpu",
                    help="devices, comma-separated (default: the CPU, and CUDA when present)")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--half", action="store_true", help="half precision on CUDA (the reference path only)")
    ap.add_argument("--threads", type=int, help="the model's CPU threads (default: the daemon's, inference.threads)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per batch size and path")
    ap.add_argument("--repeat", type=int, default=4, help="alternations of the two paths; the best counts")
    ap.add_argument("--batches", default="1,64,256,1024,4096,16384,65536")
    ap.add_argument("--packets", type=int, default=200_000, help="packets of the capture the sequences come from")
    ap.add_argument("--replay-packets", type=int, default=200_000, help="packets per replayed capture (0: skip)")
    ap.add_argument("--replay-repeat", type=int, default=2)
    a = ap.parse_args()
    set_threads(a.threads)
    batches = [int(x) for x in a.batches.split(",")]
    for name in a.device.split(","):
        worker = InferenceWorker(a.model, name, half=a.half, sensor="bench", engine="torch")
        dev = worker.device
        label = (torch.cuda.get_device_name(str(dev)) if dev.type == "cuda"
                 else f"cpu, {torch.get_num_threads()} torch threads")
        paths = paths_of(worker)
        base = real_sequences(worker, a.packets)
        print(f"\n== {label}: model {worker.model_info['name']} {worker.model_info['version']} (T={worker.seq_len}, "
              f"{len(worker.columns)} columns, input {worker.loaded.encoder.output_size}"
              + (f", fast path input {worker.fast.width}" if worker.fast else ", no fast path")
              + f"), half={worker.half}, {len(base):,} real sequences; paths {', '.join(p.name for p in paths)}")
        host = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))
        want = paths[0].probabilities(host)
        for p in paths[1:]:
            diff = np.abs(p.probabilities(host) - want).max()
            print(f"max |p_{p.name} - p_ref| {diff:.2e} on {len(base):,} real sequences")
        worker_table(paths, base, batches, a.seconds, a.repeat)
        if a.replay_packets:
            print(f"replay end to end, JSON lines, {a.replay_packets:,} packets per capture, best of {a.replay_repeat}")
            replay_rates(paths, a.replay_packets, a.replay_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
