"""Inference worker on a GPU: sequences/s and per-batch latency (p50/p99) by batch size.

    .venv/bin/python bench/gpu.py [--device cuda] [--model DIR] [--half] [--seconds S]

It times what the worker does per micro-batch on the device: host → device copy from
pinned memory, feature encoding (the scaler on the device), the LSTM, softmax and the
copy back — everything but the JSON encoding of the predictions, which runs on the
CPU in the sink stage. Sequences are real windows: the bench's benign capture through
the meter and the sequence buffer, tiled to the batch size. Runs on the CPU too
(`--device cpu`), for comparison. Goal on an H100: >= 2 M sequences/s at the best
batch size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

from ids_daemon.builder import windows_of_file  # noqa: E402
from ids_daemon.config import load_config  # noqa: E402
from ids_daemon.inference.worker import InferenceWorker  # noqa: E402
from ids_daemon.sequence import SequenceBuffer  # noqa: E402


def real_sequences(worker: InferenceWorker, packets: int) -> np.ndarray:
    p = HERE / "out" / f"benign-v1-{packets}-s2.pcap"
    if not p.exists():
        p.parent.mkdir(exist_ok=True)
        gen.write_benign_pcap(p, packets, 2)
    cfg = load_config(None, {"meter.window": worker.window, "metrics.listen": None})
    return SequenceBuffer(worker.seq_len, worker.columns, 1 << 18).push(windows_of_file(cfg, str(p))).x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--half", action="store_true", help="half precision")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per batch size")
    ap.add_argument("--batches", default="1,64,256,1024,4096,16384,65536")
    a = ap.parse_args()
    worker = InferenceWorker(a.model, a.device, half=a.half)
    dev = worker.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    base = real_sequences(worker, 200_000)
    print(f"device {name}, model {worker.model_info['name']} (T={worker.seq_len}, {len(worker.columns)} columns, "
          f"input {worker.loaded.encoder.output_size}), half={worker.half}, {len(base)} real sequences")
    print(f"{'batch':>7s} {'seq/s':>12s} {'p50 ms':>8s} {'p99 ms':>8s}")
    best = 0.0
    for bs in [int(x) for x in a.batches.split(",")]:
        x = np.ascontiguousarray(np.resize(base, (bs,) + base.shape[1:]), dtype=np.float32)
        host = torch.from_numpy(x)
        if dev.type == "cuda":
            host = host.pin_memory()
        lat = []
        n = 0

        def one() -> None:
            t = host.to(dev, non_blocking=True)
            with torch.inference_mode():
                z = worker.encode(t)
                if worker.half:
                    z = z.half()
                p = torch.softmax(worker.loaded.model(z).float(), dim=1)
            p.cpu()  # back to the host: synchronises

        for _ in range(3):
            one()
        t_end = time.perf_counter() + a.seconds
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            s = time.perf_counter()
            one()
            lat.append(time.perf_counter() - s)
            n += bs
        rate = n / (time.perf_counter() - t0)
        best = max(best, rate)
        print(f"{bs:>7d} {rate:>12,.0f} {np.percentile(lat, 50) * 1e3:>8.3f} {np.percentile(lat, 99) * 1e3:>8.3f}")
    print(f"best {best:,.0f} sequences/s on {name}" + (f" (goal on an H100: 2,000,000)" if dev.type == "cuda" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
