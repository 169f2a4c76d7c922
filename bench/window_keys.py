"""How should short flows be grouped into windows? Measures the choices on a spoofed flood.

A spoofed-source SYN flood (every packet a new source, so a new 5-tuple flow) runs
over steady benign traffic (long MQTT-like TCP flows and DNS-like UDP pairs). For each
window-key policy it prints what reaches the model: windows, how many are full (N
rows) or one-packet fragments, the share of flood packets that land in full windows,
how long after the flood starts the first full flood window closes, keys tracked at
the peak and the table memory. Run: python bench/window_keys.py [--packets N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ids_daemon.capture.batch import ETH_P_ARP, ETH_P_IP, PacketBatch
from ids_daemon.config import MeterConfig
from ids_daemon.features.ciciot import INDEX
from ids_daemon.features.meter import Meter
from ids_daemon.features.window import WindowBatch

VICTIM = 0xC0A83203  # 192.168.50.3


def make_stream(n_flood: int, seed: int = 3) -> tuple[PacketBatch, np.ndarray]:
    """Benign background for 10 s with a flood of ``n_flood`` packets from t=4 s; returns
    the batch (time ordered) and a mask of flood packets."""
    rng = np.random.default_rng(seed)
    # benign: 40 long TCP flows (1 packet / 50 ms each) and DNS pairs
    nb_tcp = 40 * 200
    b_t = np.repeat(np.arange(200) * 0.05, 40) + np.tile(rng.uniform(0, 0.05, 40), 200)
    b_src = np.tile(0xC0A8320A + np.arange(40, dtype=np.uint32), 200)
    b_sport = np.tile(30000 + np.arange(40, dtype=np.uint16), 200)
    nb_dns = 2000
    d_t = np.sort(rng.uniform(0, 10, nb_dns // 2))
    d_t = np.concatenate([d_t, d_t + 0.002])
    d_src = np.concatenate([rng.integers(0xC0A8320A, 0xC0A83232, nb_dns // 2, dtype=np.uint32),
                            np.full(nb_dns // 2, 0xC0A83201, np.uint32)])
    # flood: new random source and port every packet, 100k packets/s
    f_t = 4.0 + np.arange(n_flood) / 100_000.0
    f_src = rng.integers(0x0B000000, 0xDF000000, n_flood, dtype=np.uint32)
    n = nb_tcp + nb_dns + n_flood
    b = PacketBatch.empty(n)
    t = np.concatenate([b_t, d_t, f_t])
    order = np.argsort(t, kind="stable")
    flood = np.zeros(n, dtype=bool)
    flood[nb_tcp + nb_dns:] = True
    b.ts[:] = t
    b.ethertype[:] = ETH_P_IP
    b.ip_version[:] = 4
    b.l4_ok[:] = True
    b.ttl[:] = 64
    # benign TCP
    s = slice(0, nb_tcp)
    b.src4[s], b.dst4[s], b.sport[s], b.dport[s] = b_src, 0xC0A83202, b_sport, 1883
    b.proto[s], b.tcp_flags[s], b.frame_len[s] = 6, 0x18, 120
    # DNS
    s = slice(nb_tcp, nb_tcp + nb_dns)
    half = nb_dns // 2
    q_sport = rng.integers(20000, 60000, half).astype(np.uint16)
    b.src4[s] = d_src
    b.dst4[s] = np.concatenate([np.full(half, 0xC0A83201, np.uint32), d_src[:half]])
    b.sport[s] = np.concatenate([q_sport, np.full(half, 53, np.uint16)])
    b.dport[s] = np.concatenate([np.full(half, 53, np.uint16), q_sport])
    b.proto[s], b.frame_len[s] = 17, 90
    # flood
    s = slice(nb_tcp + nb_dns, n)
    b.src4[s], b.dst4[s] = f_src, VICTIM
    b.sport[s] = rng.integers(1024, 65535, n_flood).astype(np.uint16)
    b.dport[s], b.proto[s], b.tcp_flags[s], b.frame_len[s] = 80, 6, 0x02, 54
    b.ttl[s] = rng.choice([64, 128, 255], n_flood)
    b = b.take(order)
    return b, flood[order]


def run_policy(batch: PacketBatch, flood: np.ndarray, cfg: MeterConfig, step: int = 8192) -> dict:
    m = Meter(cfg)
    parts: list[WindowBatch] = []
    peak = 0
    t0 = time.perf_counter()
    for i in range(0, len(batch), step):
        parts.append(m.process(batch.take(slice(i, i + step))).windows)
        peak = max(peak, m.counters.keys_tracked)
    parts.append(m.flush().windows)
    secs = time.perf_counter() - t0
    w = WindowBatch.concat(parts)
    full = w.packets == cfg.window
    syn = w.features[:, INDEX["syn_flag_number"]]
    # only the flood sends bare SYNs in this stream
    flood_win = syn > 0.99
    flood_in_full = int(w.packets[full & flood_win].sum())
    first_full = w.last_ts[full & flood_win].min() - 4.0 if (full & flood_win).any() else float("nan")
    return {
        "windows": len(w), "full": int(full.sum()), "1-packet": int((w.packets == 1).sum()),
        "flood in full": f"{flood_in_full / flood.sum():.1%}",
        "1st flood window": f"{first_full * 1000:.2f} ms",
        "peak keys": peak, "evicted": m.counters.evicted, "est. evicted": m.counters.evicted_established,
        "table MiB": f"{m.memory_bytes / 2**20:.0f}", "seconds": f"{secs:.2f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000, help="flood packets")
    ap.add_argument("--max-flows", type=int, default=65536)
    a = ap.parse_args()
    batch, flood = make_stream(a.packets)
    print(f"{len(batch)} packets, {int(flood.sum())} of them a spoofed SYN flood (every packet a new flow); "
          f"max_flows={a.max_flows}, window N=10, idle timeout 120 s")
    base = dict(window=10, max_flows=a.max_flows)
    policies = {
        "5-tuple only (promote_after=1)": MeterConfig(**base, promote_after=1),
        "pooled per host (default)": MeterConfig(**base),
        "pooled per /24": MeterConfig(**base, pool_prefix=24),
        "capture (dataset)": MeterConfig(**base, key_mode="capture"),
    }
    rows = {name: run_policy(batch, flood, cfg) for name, cfg in policies.items()}
    cols = list(next(iter(rows.values())))
    print(f"{'policy':<32}" + "".join(f"{c:>17}" for c in cols))
    for name, r in rows.items():
        print(f"{name:<32}" + "".join(f"{str(r[c]):>17}" for c in cols))


if __name__ == "__main__":
    main()
