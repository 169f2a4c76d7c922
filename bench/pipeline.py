"""The daemon end to end, against the meter alone, in one run.

    .venv/bin/python bench/pipeline.py [--packets N] [--no-kafka]

For the flood-heavy and benign-heavy captures of bench/gen.py it prints packets/s of
  (a) the meter alone: read + decode + meter, one thread, no pipeline (the baseline),
  (b) replay end to end with the JSON-lines sink (a file),
  (c) replay end to end with the Kafka sink into a local Tansu broker,
and the inference worker's sequences/s with micro-batches against batch size 1, on
the same sequences. (b) and (c) are built exactly as the CLI builds them
(`ids_daemon.builder`). Goals on the project's 2-core machine: (b) >= 300 k packets/s,
micro-batched worker >= 30x its batch-1 rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

from ids_daemon.builder import build_pipeline, make_worker, windows_of_file  # noqa: E402
from ids_daemon.capture.pcap import PcapSource  # noqa: E402
from ids_daemon.config import Config, MeterConfig, load_config  # noqa: E402
from ids_daemon.features.meter import Meter  # noqa: E402
from ids_daemon.inference.worker import InferenceWorker  # noqa: E402
from ids_daemon.sequence import SequenceBuffer  # noqa: E402


def meter_alone(path: Path, window: int) -> float:
    m = Meter(MeterConfig(window=window))
    t = time.perf_counter()
    n = 0
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            m.process(b)
            n += len(b)
    m.flush()
    return n / (time.perf_counter() - t)


def replay(path: Path, worker: InferenceWorker, cfg: Config, sinks: list[str], output: str | None = None
           ) -> tuple[float, int]:
    """The daemon's replay, built as the CLI builds it (`ids_daemon.builder`)."""
    pipe = build_pipeline(cfg, read=str(path), sinks=sinks, output=output, worker=worker)
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    return st.frames / st.seconds, st.predictions


def worker_rates(path: Path, worker: InferenceWorker, cfg: Config) -> dict[int, float]:
    wb = windows_of_file(cfg, str(path))
    seq = SequenceBuffer(worker.seq_len, worker.columns, 1 << 18).push(wb)
    rates = {}
    for bs in (1, 16, 64, 256, 1024, 4096):
        n = min(len(seq), 2000 if bs == 1 else 16384)
        worker.predict(seq.take(slice(0, min(bs, n))))  # warm
        t = time.perf_counter()
        for i in range(0, n, bs):
            worker.predict(seq.take(slice(i, min(i + bs, n))))
        rates[bs] = n / (time.perf_counter() - t)
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--no-kafka", action="store_true", help="skip the Kafka sink measurement")
    a = ap.parse_args()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    files = []
    for label, writer, seed in (("flood", gen.write_flood_pcap, 1), ("benign", gen.write_benign_pcap, 2)):
        p = out / f"{label}-v1-{a.packets}-s{seed}.pcap"
        if not p.exists():
            writer(p, a.packets, seed)
        files.append((label, p))
    cfg = load_config(None, {"inference.device": "cpu", "metrics.listen": None})
    worker = make_worker(cfg)
    print(f"model {worker.model_info['name']} {worker.model_info['version']} (T={worker.seq_len}, "
          f"N={worker.window}, {len(worker.columns)} columns), device cpu, max_batch {Config().inference.max_batch}")
    broker = None
    if not a.no_kafka:
        sys.path.insert(0, str(HERE.parent / "tests"))
        try:
            from kafka_broker import TansuBroker  # type: ignore[import-not-found]

            broker = TansuBroker()
            broker.start()
            broker.wait_ready(30)
        except Exception as e:  # noqa: BLE001 - the bench still reports the rest
            print(f"kafka: no local broker ({e}); skipping (c)")
            broker = None
    replay(files[0][1], worker, cfg, ["jsonl"], str(Path(tempfile.gettempdir()) / "warm.jsonl"))  # warm-up
    print(f"{'file':8s} {'(a) meter':>11s} {'(b) jsonl':>11s} {'b/a':>5s} {'(c) kafka':>11s} {'c/a':>5s} {'predictions':>12s}")
    ok_b = True
    for label, p in files:
        base = max(meter_alone(p, worker.window) for _ in range(2))
        with tempfile.TemporaryDirectory() as tmp:
            rb, preds = max(replay(p, worker, cfg, ["jsonl"], str(Path(tmp) / "p.jsonl")) for _ in range(2))
            rc = None
            if broker is not None:
                kcfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={
                    "bootstrap": broker.bootstrap, "topic": f"bench-{label}-{int(time.time())}",
                    "spool_dir": str(Path(tmp) / "spool")})})
                rc, _ = replay(p, worker, kcfg, ["kafka"])
        ok_b &= rb >= 300_000
        kc = f"{rc / 1e3:>10,.0f}k {rc / base:5.2f}" if rc else f"{'-':>11s} {'-':>5s}"
        print(f"{label:8s} {base / 1e3:>10,.0f}k {rb / 1e3:>10,.0f}k {rb / base:5.2f} {kc} {preds:>12,d}")
    if broker is not None:
        broker.stop()
    rates = worker_rates(files[1][1], worker, cfg)
    print("worker sequences/s by batch size (cpu): " + ", ".join(f"{bs}: {r:,.0f}" for bs, r in rates.items()))
    best = max(rates.values())
    ratio = best / rates[1]
    print(f"goals: replay with JSON lines >= 300k packets/s: {'PASS' if ok_b else 'FAIL'}; "
          f"micro-batched worker >= 30x batch-1: {ratio:.0f}x {'PASS' if ratio >= 30 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
