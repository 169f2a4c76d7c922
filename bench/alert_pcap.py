"""Replay throughput with the alert pcap off and on, in one run, alternating.

    .venv/bin/python bench/alert_pcap.py [--packets N] [--rounds R]

For the flood-heavy and benign-heavy captures of bench/gen.py, the daemon's replay into
a JSON-lines file (/dev/null) is timed with ``alert_pcap`` off and on (R rounds each,
interleaved so both see the same machine); printed: packets/s (best and median of R), the
CPU time of the process (all threads) per run (median: steadier than the wall clock on a
shared machine), and what the alert pcap wrote. The flood capture is its worst case: most
of its packets alert and are written.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gen  # noqa: E402

from ids_daemon.builder import build_pipeline, make_worker  # noqa: E402
from ids_daemon.config import load_config  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def replay(path: Path, worker, alert_dir: Path | None) -> tuple[float, float, str]:
    over = {"metrics.listen": None}
    if alert_dir is not None:
        over.update({"alert_pcap.enabled": True, "alert_pcap.dir": str(alert_dir)})
    cfg = load_config(None, over)
    pipe = build_pipeline(cfg, read=str(path), sinks=["jsonl"], output="/dev/null", worker=worker, append=False)
    c0 = cpu()
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    return st.frames / st.seconds, cpu() - c0, pipe.alert_pcap.summary() if pipe.alert_pcap else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    worker = make_worker(load_config(None))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        caps = {"flood": gen.write_flood_pcap(d / "flood.pcap", args.packets),
                "benign": gen.write_benign_pcap(d / "benign.pcap", args.packets)}
        replay(caps["benign"], worker, None)  # warm: compiled kernels, model
        for name, path in caps.items():
            rates: dict[str, list[float]] = {"off": [], "on": []}
            cpus: dict[str, list[float]] = {"off": [], "on": []}
            wrote = ""
            for r in range(args.rounds):
                rate, c, _ = replay(path, worker, None)
                rates["off"].append(rate)
                cpus["off"].append(c)
                out = d / f"pcap-{name}-{r}"
                rate, c, wrote = replay(path, worker, out)
                rates["on"].append(rate)
                cpus["on"].append(c)
                size = sum(f.stat().st_size for f in out.iterdir()) if out.exists() else 0
            line = [f"{name}: {args.packets} packets"]
            for k in ("off", "on"):
                line.append(f"{k} {max(rates[k]):,.0f} packets/s best, {statistics.median(rates[k]):,.0f} median, "
                            f"{statistics.median(cpus[k]):.2f} CPU s")
            print("; ".join(line) + f"; {wrote} ({size / 1e6:.1f} MB)", flush=True)
            time.sleep(0.1)


if __name__ == "__main__":
    main()
