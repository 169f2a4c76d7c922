"""Meter behaviour beyond column values: window keys, pooling, timeouts, the memory cap,
and that no packet's row is ever lost."""

from __future__ import annotations

import numpy as np
import pytest

from ids_daemon.capture.batch import ETH_P_ARP, ETH_P_IP, STATUS_MALFORMED, PacketBatch
from ids_daemon.config import MeterConfig
from ids_daemon.features.ciciot import INDEX
from ids_daemon.features.meter import Meter
from ids_daemon.features.window import (KIND_FLOW, KIND_POOL, POOL_PROTO_ARP, REASON_ACTIVE, REASON_END,
                                        REASON_EVICTED, REASON_FULL, REASON_IDLE, WindowBatch)

A, B, V = 0x0A000001, 0x0A000002, 0xC0A83203  # 10.0.0.1, 10.0.0.2, 192.168.50.3


def pkts(ts, src, dst, sport=1000, dport=80, proto=6, flags=0x10, size=60, arp=False, icmp_type=0) -> PacketBatch:
    """A batch of IPv4 (or ARP) packets; scalars broadcast."""
    ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
    n = ts.shape[0]
    b = PacketBatch.empty(n)
    b.ts[:] = ts
    b.ethertype[:] = ETH_P_ARP if arp else ETH_P_IP
    b.ip_version[:] = 0 if arp else 4
    b.src4[:] = src
    b.dst4[:] = dst
    b.sport[:] = sport
    b.dport[:] = dport
    b.proto[:] = 0 if arp else proto
    b.tcp_flags[:] = flags if proto == 6 else 0
    b.l4_ok[:] = not arp
    b.icmp_type[:] = icmp_type
    b.ttl[:] = 64
    b.frame_len[:] = size
    return b


def run(meter: Meter, *batches: PacketBatch, flush: bool = True) -> WindowBatch:
    parts = [meter.process(b).windows for b in batches]
    if flush:
        parts.append(meter.flush().windows)
    return WindowBatch.concat(parts)


def test_a_long_flow_gets_its_own_windows_after_promotion() -> None:
    m = Meter(MeterConfig(window=10))
    w = run(m, pkts(np.arange(35) * 0.01, A, B, 40000, 1883))
    flows = w.take(w.kind == KIND_FLOW)
    pools = w.take(w.kind == KIND_POOL)
    # packets 1..9 wait in the responder's pool; from the 10th on the flow is its own key
    assert pools.packets.tolist() == [9]
    assert pools.host.tolist() == [B]
    assert flows.packets.tolist() == [10, 10, 6]
    assert flows.reason.tolist() == [REASON_FULL, REASON_FULL, REASON_END]
    assert (flows.src == A).all() and (flows.sport == 40000).all() and (flows.dport == 1883).all()
    assert m.counters.promoted == 1


def test_spoofed_flood_pools_by_victim_and_replies_join_the_same_pool() -> None:
    n = 1000
    rng = np.random.default_rng(1)
    src = rng.integers(0x0B000000, 0xDF000000, n).astype(np.uint32)
    sport = rng.integers(1024, 65535, n).astype(np.uint16)
    syn = pkts(np.arange(n) * 1e-4, src, V, sport, 80, flags=0x02, size=54)
    synack = pkts(np.arange(n) * 1e-4 + 5e-5, V, src, 80, sport, flags=0x12, size=58)
    both = PacketBatch.concat([syn, synack]).take(np.argsort(np.concatenate([syn.ts, synack.ts]), kind="stable"))
    m = Meter(MeterConfig(window=10))
    w = run(m, both)
    assert set(w.kind.tolist()) == {KIND_POOL}
    assert set(w.host.tolist()) == {V}  # SYN-ACKs go to their flow's responder, the victim
    assert (w.packets == 10).all() and len(w) == 2 * n // 10
    assert m.counters.flows_created == n and m.counters.pools_created == 1


def test_pure_five_tuple_keys_would_never_fill_a_window() -> None:
    n = 500
    src = np.arange(n, dtype=np.uint32) + 0x0B000000
    m = Meter(MeterConfig(window=10, promote_after=1))
    w = run(m, pkts(np.arange(n) * 1e-4, src, V, 1234, 80, flags=0x02))
    assert (w.packets == 1).all() and len(w) == n  # what pooling exists to avoid


@pytest.mark.parametrize("icmp_type,expect_host", [(8, V), (0, A), (3, A), (11, A)])
def test_icmp_requests_pool_by_destination_and_replies_by_source(icmp_type: int, expect_host: int) -> None:
    m = Meter(MeterConfig(window=2))
    w = run(m, pkts([1.0, 1.1], A, V, 0, 0, proto=1, icmp_type=icmp_type))
    assert w.host.tolist() == [expect_host]
    assert w.features[0, INDEX["ICMP"]] == 1.0


def test_arp_pools_by_sender_and_prefix_option() -> None:
    m = Meter(MeterConfig(window=3))
    w = run(m, pkts([1, 2, 3], A, B, arp=True, size=42))
    assert w.host.tolist() == [A] and w.proto.tolist() == [POOL_PROTO_ARP]
    m24 = Meter(MeterConfig(window=2, pool_prefix=24, promote_after=10))
    w = run(m24, pkts([1, 2], 0x0B000001, V, flags=2), pkts([3, 4], 0x0B000002, V + 7, flags=2))
    assert w.host.tolist() == [V & 0xFFFFFF00] * 2 and w.packets.tolist() == [2, 2]
    assert w.prefix.tolist() == [24, 24]


def test_idle_timeout_on_packet_time_sends_the_partial_window() -> None:
    m = Meter(MeterConfig(window=10, promote_after=1, idle_timeout=30, scan_interval=1))
    first = m.process(pkts([0.0, 0.5, 1.0], A, B, 5000, 443)).windows
    assert len(first) == 0
    later = m.process(pkts([100.0], 0x0A000009, B, 6000, 443)).windows
    assert later.packets.tolist() == [3] and later.reason.tolist() == [REASON_IDLE]
    assert later.sport.tolist() == [5000]
    assert m.counters.expired_idle == 1 and m.counters.keys_tracked == 1


def test_advance_expires_on_the_wall_clock_without_packets() -> None:
    m = Meter(MeterConfig(window=10, promote_after=1, idle_timeout=5))
    m.process(pkts([1000.0, 1001.0], A, B))
    assert len(m.advance(1003.0).windows) == 0
    out = m.advance(1010.0).windows
    assert out.packets.tolist() == [2] and out.reason.tolist() == [REASON_IDLE]
    assert m.counters.keys_tracked == 0


def test_active_timeout_restarts_a_long_flow() -> None:
    m = Meter(MeterConfig(window=100, promote_after=1, active_timeout=10, idle_timeout=0))
    t = np.arange(0, 25, 1.0)
    rows = m.process(pkts(t, A, B)).windows
    assert rows.reason.tolist() == [REASON_ACTIVE, REASON_ACTIVE]
    assert rows.packets.tolist() == [11, 11]
    tail = m.flush().windows
    assert tail.packets.tolist() == [3]
    # flow_duration starts over: the last window's rows are at 0, 1, 2 s into the new flow
    assert tail.features[0, INDEX["flow_duration"]] == pytest.approx(1.0)
    assert m.counters.expired_active == 2


def test_the_cap_bounds_memory_and_evictions_lose_no_row() -> None:
    m = Meter(MeterConfig(window=4, promote_after=1, max_flows=16, idle_timeout=0))
    before = m.memory_bytes
    n = 400
    src = (np.arange(n) % 100).astype(np.uint32) + 0x0B000000  # 100 flows, 4 packets each, interleaved
    w = run(m, pkts(np.arange(n) * 0.01, src, V, 1000, 80))
    assert m.memory_bytes == before  # preallocated: nothing grows
    assert m.counters.keys_tracked <= 16
    assert m.counters.evicted > 0
    assert (w.reason == REASON_EVICTED).any()
    assert int(w.packets.sum()) == n == m.counters.rows


def test_established_flows_survive_a_flood_that_fills_the_table() -> None:
    m = Meter(MeterConfig(window=10, max_flows=64, idle_timeout=0))
    # 5 established flows with a packet every 10 ms, and a 3000-packet spoofed flood
    t_est = np.repeat(np.arange(300) * 0.01, 5)
    est = pkts(t_est, np.tile(A + np.arange(5, dtype=np.uint32), 300), B, 40000, 1883)
    fl = pkts(np.arange(3000) * 0.001, 0x0B000000 + np.arange(3000, dtype=np.uint32), V, 1024, 80, flags=2)
    both = PacketBatch.concat([est, fl])
    both = both.take(np.argsort(both.ts, kind="stable"))
    w = run(m, both, flush=False)
    assert m.counters.evicted > 2000
    assert m.counters.evicted_established == 0
    own = w.take(w.kind == KIND_FLOW)
    assert len(own) == 5 * (300 - 9) // 10  # every established flow kept filling its own windows


def test_no_row_is_ever_lost_whatever_the_settings() -> None:
    rng = np.random.default_rng(7)
    for _ in range(12):
        n = 3000
        cfg = MeterConfig(window=int(rng.integers(1, 30)), max_flows=int(rng.integers(16, 200)),
                          idle_timeout=float(rng.choice([0, 0.05, 1.0])), active_timeout=float(rng.choice([0, 0.3])),
                          promote_after=int(rng.integers(1, 12)), scan_interval=0.01,
                          key_mode=str(rng.choice(["flow", "flow", "capture"])))
        ts = np.sort(rng.uniform(0, 3, n))
        b = pkts(ts, rng.integers(A, A + 40, n).astype(np.uint32), rng.integers(B, B + 5, n).astype(np.uint32),
                 rng.integers(1000, 1010, n).astype(np.uint16), 80,
                 proto=6, flags=rng.integers(0, 256, n).astype(np.uint16))
        b.proto[::7] = 17
        b.proto[::11] = 1
        b.ethertype[::13] = ETH_P_ARP
        b.ip_version[::13] = 0
        b.status[::17] = STATUS_MALFORMED
        m = Meter(cfg)
        step = int(rng.integers(1, 700))
        w = run(m, *[b.take(slice(i, i + step)) for i in range(0, n, step)])
        c = m.counters
        assert c.rows == c.packets == int((b.status != STATUS_MALFORMED).sum())
        assert c.malformed == len(range(0, n, 17))
        assert int(w.packets.sum()) == c.rows, cfg
        assert (w.packets >= 1).all() and (w.packets <= cfg.window).all()
        assert np.isfinite(w.features).all()
        assert (w.first_ts <= w.last_ts).all()
