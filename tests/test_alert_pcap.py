"""The alert pcap (`ids_daemon.sinks.alertpcap`): the packets of what alerted, written to
rotated pcap files, opened here by a second reader (dpkt), named in the prediction.

Captures are crafted (`trainer.synth.floods`, `tests.pcapgen`) and replayed through the
pipeline as the CLI builds it; the bundled model classifies.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import Counter
from pathlib import Path

import dpkt
import jsonschema
import numpy as np
import pytest

from ids_daemon.builder import build_pipeline, make_worker
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import AlertPcapConfig, load_config
from ids_daemon.detectors.base import Finding
from ids_daemon.errors import ConfigError
from ids_daemon.predictions import json_schema
from ids_daemon.predictions.community_id import community_id
from ids_daemon.sinks.alertpcap import AlertPcap
from trainer.synth.floods import ACK, ATTACKER, CLIENT, PSH, SERVER, SYN, VICTIM, _sorted, _Writer, flood

from . import pcapgen


@pytest.fixture(scope="module")
def worker():
    return make_worker(load_config(None))


def syn_flood_with_bystanders(path: Path) -> tuple[int, int]:
    """A 3 s SYN flood ATTACKER -> VICTIM:80 at 2,000/s (with the victim's SYN-ACKs and the
    attacker's RSTs), and benign TCP meanwhile: CLIENT <-> SERVER, and CLIENT <-> VICTIM (the
    victim's own connection must stay out of the flood's file). Returns (frames, flood frames)."""
    frames, attack = flood("syn", 2000, 3.0, seed=7)
    w = _Writer()
    t0 = frames[0][0]
    for i in range(60):
        t = t0 + 0.05 * i
        w.tcp(t, CLIENT, SERVER, 41000, 443, PSH | ACK, 1000 + i, payload=b"x" * 100)
        w.tcp(t + 0.001, SERVER, CLIENT, 443, 41000, ACK, 5000, 1000 + i)
        w.tcp(t + 0.002, CLIENT, VICTIM, 42000, 22, PSH | ACK, 7000 + i, payload=b"y" * 60)
    more, _ = _sorted(w)
    merged = sorted(frames + more, key=lambda f: f[0])
    pcapgen.write_pcap(path, merged)
    return len(merged), sum(attack)


def replay(cfg, path: Path, out: Path, worker):
    pipe = build_pipeline(cfg, read=str(path), sinks=["jsonl"], output=str(out), worker=worker, append=False)
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    return pipe, st, preds


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as f:
        r = dpkt.pcap.Reader(f)
        assert r.datalink() == dpkt.pcap.DLT_EN10MB
        return list(r)


def tcp_tuple(buf: bytes) -> tuple[str, str, int, int, int]:
    ip = dpkt.ethernet.Ethernet(buf).data
    return socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst), ip.data.sport, ip.data.dport, ip.data.flags


def test_alerted_syn_flood_pcap_holds_the_flood_and_nothing_else(tmp_path: Path, worker) -> None:
    cap = tmp_path / "flood.pcap"
    n, n_flood = syn_flood_with_bystanders(cap)
    d = tmp_path / "pcaps"
    # small batches, as live capture gives them: the finding comes a second into the flood, so its
    # file holds packets from before it (the ring) and after it (follow_s)
    cfg = load_config(None, {"alert_pcap.enabled": True, "alert_pcap.dir": str(d), "capture.batch_size": 512})
    pipe, st, preds = replay(cfg, cap, tmp_path / "p.jsonl", worker)
    assert not st.error and st.frames == n
    found = [p for p in preds if p["model"]["name"] == "detector:volume" and p["predicted_attack"] == "DoS-SYN_Flood"]
    assert found, [p["predicted_attack"] for p in preds]
    schema = json_schema()
    for p in preds:
        jsonschema.validate(p, schema)
    name = Path(found[0]["pcap_file"])
    assert name.parent == d and name.is_file()
    pkts = read_pcap(name)
    tuples = [tcp_tuple(b) for _, b in pkts]
    assert {(s, d_) for s, d_, *_ in tuples} <= {(ATTACKER, VICTIM), (VICTIM, ATTACKER)}  # no bystander
    syns = sum(1 for s, d_, sp, dp, fl in tuples if s == ATTACKER and dp == 80 and fl == SYN)
    assert syns >= 0.95 * 6000  # the flood's SYNs: every one was in the ring or after the alert
    assert len(pkts) == n_flood  # SYNs, SYN-ACKs and RSTs, each once
    assert pkts[0][0] == pytest.approx(1_700_000_000.0, abs=1e-6)  # the flood's very first SYN, microseconds kept
    ap = pipe.alert_pcap
    assert ap.stats.packets == n_flood and ap.stats.packets_dropped == 0 and ap.stats.lagged_batches == 0


def test_a_flagged_flow_names_its_file_and_its_community_id_selects_it(tmp_path: Path) -> None:
    w = _Writer()
    t0 = 1_700_000_000.0
    for i in range(30):  # two TCP flows of 30 segments each: windows of their own
        w.tcp(t0 + 0.01 * i, CLIENT, SERVER, 40000, 80, PSH | ACK, i, payload=b"a" * 50)
        w.tcp(t0 + 0.01 * i + 0.002, SERVER, CLIENT, 80, 40000, ACK, 9, i)
        w.tcp(t0 + 0.01 * i + 0.004, CLIENT, VICTIM, 40001, 443, PSH | ACK, i, payload=b"b" * 70)
    frames, _ = _sorted(w)
    cap = pcapgen.write_pcap(tmp_path / "flows.pcap", frames)
    d = tmp_path / "pcaps"
    # threshold 0: every prediction is flagged; detectors off: the model's flows alone
    cfg = load_config(None, {"alert_pcap.enabled": True, "alert_pcap.dir": str(d), "inference.threshold": 0.0,
                             "detectors.enabled": False})
    _, st, preds = replay(cfg, cap, tmp_path / "p.jsonl", make_worker(cfg))
    flows = [p for p in preds if p["flow"]["kind"] == "flow"]
    assert {p["flow"]["dst_port"] for p in flows} == {80, 443}
    for p in flows:
        assert p["is_attack"] and p["pcap_file"] and p["flow"]["community_id"]
        pkts = read_pcap(Path(p["pcap_file"]))
        ids = Counter(community_id(s, d_, 6, sp, dp) for s, d_, sp, dp, _ in (tcp_tuple(b) for _, b in pkts))
        want = 60 if p["flow"]["dst_port"] == 80 else 30  # both directions of the first flow
        assert ids[p["flow"]["community_id"]] == want
    assert len(read_pcap(Path(flows[0]["pcap_file"]))) == 90  # each packet once, however many predictions


def test_files_rotate_at_the_size_cap_and_the_oldest_go(tmp_path: Path, worker) -> None:
    cap = tmp_path / "flood.pcap"
    syn_flood_with_bystanders(cap)
    d = tmp_path / "pcaps"
    d.mkdir()
    (d / "alerts-000007.pcap").write_bytes(b"")  # an earlier run's file: numbering goes on after it
    cfg = load_config(None, {"alert_pcap.enabled": True, "alert_pcap.dir": str(d), "alert_pcap.file_mb": 0.05,
                             "alert_pcap.max_files": 3, "capture.batch_size": 256})
    pipe, st, preds = replay(cfg, cap, tmp_path / "p.jsonl", worker)
    ap = pipe.alert_pcap
    names = sorted(p.name for p in d.iterdir())
    assert len(names) == 3 and ap.stats.files > 3 and ap.stats.files_deleted == ap.stats.files + 1 - 3
    assert names[0] > "alerts-000008.pcap" and names[-1] == f"alerts-{7 + ap.stats.files:06d}.pcap"
    cap_bytes = 0.05 * (1 << 20)
    for name in names:
        size = (d / name).stat().st_size
        pkts = read_pcap(d / name)  # whole records only
        assert pkts and size == 24 + sum(16 + len(b) for _, b in pkts)
        assert size < 2 * cap_bytes + 256 * 80  # past the cap by at most one batch's packets (or twice it)
    assert sum(size < cap_bytes for size in ((d / n).stat().st_size for n in names[:-1])) == 0  # closed past the cap


def test_an_unusable_directory_is_counted_and_logged_and_the_replay_goes_on(tmp_path: Path, worker, caplog) -> None:
    cap = tmp_path / "flood.pcap"
    syn_flood_with_bystanders(cap)
    where = tmp_path / "not-a-dir"
    where.write_text("a file where the directory should be")
    cfg = load_config(None, {"alert_pcap.enabled": True, "alert_pcap.dir": str(where)})
    with caplog.at_level(logging.WARNING, logger="ids_daemon.alertpcap"):
        pipe, st, preds = replay(cfg, cap, tmp_path / "p.jsonl", worker)
    assert not st.error and any(p["predicted_attack"] == "DoS-SYN_Flood" for p in preds)
    a = pipe.alert_pcap.stats
    assert a.write_errors >= 1 and a.packets_dropped >= 6000 and a.packets == 0
    assert any("alert pcap:" in r.getMessage() and str(where) in r.getMessage() for r in caplog.records)
    assert "dropped" in pipe.alert_pcap.summary()


def _batch_with_bytes(tmp_path: Path):
    frames = [(1_700_000_000.0 + i * 0.01, pcapgen.ethernet(pcapgen.ipv4_udp("10.1.0.1", "10.1.0.2", 5000, 53,
                                                                               payload=bytes([i]) * 40)))
              for i in range(20)]
    with PcapSource(pcapgen.write_pcap(tmp_path / "u.pcap", frames), keep_raw=True) as src:
        return src.next_batch(), frames


def test_a_full_disk_deletes_the_oldest_file_then_counts_what_is_lost(tmp_path: Path, caplog) -> None:
    batch, _ = _batch_with_bytes(tmp_path)
    finding = Finding("volume", "DoS-UDP_Flood", float(batch.ts[0]), float(batch.ts[-1]), 20, "10.1.0.1",
                      "10.1.0.2", "udp", "test")
    d = tmp_path / "pcaps"
    d.mkdir()
    old = d / "alerts-000000.pcap"
    old.write_bytes(b"x" * 100)
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(d)))
    ap.open()
    os.symlink("/dev/full", ap.current_file())  # every write to it fails with ENOSPC
    ap.add(batch)
    assert ap.flag_findings([finding]) == [ap.current_file()]
    ap.close()
    # the oldest file made room; the next try wrote a whole file
    assert ap.stats.disk_full and ap.stats.files_deleted == 1 and not old.exists()
    assert ap.stats.packets == 20 and len(read_pcap(Path(ap.current_file()))) == 20
    # nothing left to delete: the packets are dropped, counted and logged
    d2 = tmp_path / "pcaps2"
    d2.mkdir()
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(d2)))
    ap.open()
    os.symlink("/dev/full", ap.current_file())
    ap.add(batch)
    with caplog.at_level(logging.ERROR, logger="ids_daemon.alertpcap"):
        ap.flag_findings([finding])
        ap.close()
    assert ap.stats.disk_full and ap.stats.packets_dropped == 20 and ap.stats.packets == 0
    assert any("No space left" in r.getMessage() for r in caplog.records)


def test_the_ring_is_bounded_and_a_finding_gets_only_what_it_still_holds(tmp_path: Path) -> None:
    batch, frames = _batch_with_bytes(tmp_path)
    d = tmp_path / "pcaps"
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(d), ring_mb=2e-3, follow_s=0))  # ~2 KiB: one batch
    ap.open()
    for k in range(3):
        ap.add(batch.take(slice(5 * k, 5 * k + 5)))
    assert ap._ring_size <= ap.ring_bytes or len(ap._ring) == 1
    ap.flag_findings([Finding("volume", "DoS-UDP_Flood", 0.0, 0.0, 1, "10.1.0.2", "10.1.0.1", "udp", "t")])
    ap.close()
    pkts = read_pcap(Path(ap.current_file()))
    held = sum(len(r.ts) for r in ap._ring)
    assert 0 < len(pkts) == held < 15
    assert [b for _, b in pkts] == [f for _, f in frames[15 - held:15]]  # the newest, byte for byte


def test_frame_bytes_are_kept_only_when_asked(tmp_path: Path) -> None:
    frames = [(1.0 + i, pcapgen.ethernet(pcapgen.ipv4_udp(dport=53 + i % 2, payload=bytes([i]) * (i + 1))))
              for i in range(9)]
    path = pcapgen.write_pcap(tmp_path / "a.pcap", frames)
    with PcapSource(path) as src:
        assert src.next_batch().raw is None  # off: no copy
    with PcapSource(path, keep_raw=True, bpf_filter="udp port 54") as src:
        b = src.next_batch()
    kept = [f for i, (_, f) in enumerate(frames) if i % 2]
    assert [b.raw[b.raw_off[i]:b.raw_off[i + 1]].tobytes() for i in range(len(b))] == kept
    part = b.take(slice(1, 3))
    assert part.raw.tobytes() == b"".join(kept[1:3])
    assert list(part.raw_off) == [0, len(kept[1]), len(kept[1]) + len(kept[2])]
    assert b.take(np.array([0])).raw is None


def test_off_by_default_and_validated() -> None:
    cfg = load_config(None)
    assert cfg.alert_pcap.enabled is False
    with pytest.raises(ConfigError, match="alert_pcap.ring_mb"):
        load_config(None, {"alert_pcap.ring_mb": 0})
    with pytest.raises(ConfigError, match="alert_pcap.max_files"):
        load_config(None, {"alert_pcap.max_files": 0})


def test_ipv6_flows_and_pairs_and_too_many_alerts_at_once(tmp_path: Path) -> None:
    from scapy.all import UDP, Ether, IPv6, Raw

    from ids_daemon.features.window import KIND_FLOW, WindowBatch

    a, b, c = "2001:db8::a", "2001:db8::b", "2001:db8::c"
    frames = []
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # given: scapy would look the MAC up
    for i in range(12):
        for src, dst, sp, dp in ((a, b, 5000, 53), (b, a, 53, 5000), (a, b, 5001, 53), (a, c, 5000, 53)):
            pkt = eth / IPv6(src=src, dst=dst) / UDP(sport=sp, dport=dp) / Raw(b"q" * (10 + i))
            frames.append((1_700_000_000.0 + i * 0.01, bytes(pkt)))
    with PcapSource(pcapgen.write_pcap(tmp_path / "v6.pcap", frames), keep_raw=True) as src:
        batch = src.next_batch()
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(tmp_path / "pcaps"), max_triggers=16))
    ap.open()
    ap.add(batch)
    w = WindowBatch.empty(1)
    w.kind[0], w.ip_version[0], w.proto[0], w.sport[0], w.dport[0] = KIND_FLOW, 6, 17, 5000, 53
    w.src6[0] = np.frombuffer(socket.inet_pton(socket.AF_INET6, a), np.uint8)
    w.dst6[0] = np.frombuffer(socket.inet_pton(socket.AF_INET6, b), np.uint8)
    w.last_ts[0] = float(batch.ts[-1])
    assert ap.flag_windows(w, np.array([False])) is None
    assert ap.flag_windows(w, np.array([True])) == [ap.current_file()]
    ap.close()
    six = {six_b(x): x for x in (a, b, c)}
    got = Counter((six[p.src], six[p.dst], p.data.sport, p.data.dport)
                  for p in (dpkt.ethernet.Ethernet(buf).data for _, buf in read_pcap(Path(ap.current_file()))))
    assert got == Counter({(a, b, 5000, 53): 12, (b, a, 53, 5000): 12})  # the flow, both ways; not 5001, not c
    # a host pair, IPv6: both of a's flows with b, not a's with c; more alerts at once than max_triggers
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(tmp_path / "pcaps2"), max_triggers=16))
    ap.open()
    ap.add(batch)
    pair = Finding("volume", "DoS-UDP_Flood", float(batch.ts[0]), float(batch.ts[-1]), 1, a, b, "udp", "t")
    names = ap.flag_findings([pair] + [Finding("volume", "DoS-UDP_Flood", 0.0, 0.0, 1, f"10.9.0.{i}", "10.9.1.1",
                                               "udp", "t") for i in range(19)])
    assert names[:16] == [ap.current_file()] * 16 and names[16:] == [None] * 4
    ap.close()
    assert ap.stats.triggers == 16 and ap.stats.triggers_dropped == 4
    pkts = [dpkt.ethernet.Ethernet(buf).data for _, buf in read_pcap(Path(ap.current_file()))]
    assert len(pkts) == 36 and all({p.src, p.dst} == {six_b(a), six_b(b)} for p in pkts)


def six_b(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def test_replay_with_the_flag_says_what_it_wrote(tmp_path: Path) -> None:
    import subprocess

    from .helpers import EXE

    cap = tmp_path / "flood.pcap"
    _, n_flood = syn_flood_with_bystanders(cap)
    out, d = tmp_path / "p.jsonl", tmp_path / "pcaps"
    p = subprocess.run([EXE, "replay", "-r", str(cap), "-o", str(out), "--metrics-listen", "off",
                        "--alert-pcap", str(d)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"ids-daemon: alert pcap: {n_flood} packets of " in p.stderr and f"under {d}" in p.stderr
    files = {json.loads(line).get("pcap_file") for line in out.read_text().splitlines()} - {None}
    assert files == {str(d / "alerts-000000.pcap")} and len(read_pcap(d / "alerts-000000.pcap")) == n_flood


def test_an_alert_keeps_its_packets_for_follow_s_of_packet_time_after_it(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    frames = [(t0 + 0.1 * i, pcapgen.ethernet(pcapgen.ipv4_udp("10.3.0.1", "10.3.0.2", 7000, 9, payload=b"f" * 20)))
              for i in range(100)]  # 10 s, one every 100 ms
    with PcapSource(pcapgen.write_pcap(tmp_path / "f.pcap", frames), keep_raw=True, batch_size=10) as src:
        batches = list(iter(src.next_batch, None))
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(tmp_path / "pcaps"), follow_s=3.0))
    ap.open()
    for b in batches[:3]:  # up to t0 + 2.9 s
        ap.add(b)
    ap.flag_findings([Finding("volume", "DoS-UDP_Flood", t0, t0 + 1.0, 10, "10.3.0.1", "10.3.0.2", "udp", "t")])
    for b in batches[3:]:
        ap.add(b)
    ap.close()
    ts = [t for t, _ in read_pcap(Path(ap.current_file()))]
    # the alert came with the newest packet at 2.9 s: everything before, and up to 5.9 s after
    assert len(ts) == 60 and ts[0] == pytest.approx(t0) and ts[-1] == pytest.approx(t0 + 5.9)


def test_live_capture_on_loopback_writes_the_flood_it_alerted_on(tmp_path: Path) -> None:
    import random
    import subprocess

    from .helpers import EXE
    from .test_pipeline import syns_then_sigterm

    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        pytest.skip("live capture needs root or CAP_NET_RAW")
    port = random.randint(30000, 60000)
    out, d = tmp_path / "live.jsonl", tmp_path / "pcaps"
    proc = subprocess.Popen([EXE, "run", "-i", "lo", "--filter", f"tcp and dst port {port}", "-o", str(out),
                             "--metrics-listen", "off", "--alert-pcap", str(d)], stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on lo" in proc.stderr.readline()
        assert "classifying" in proc.stderr.readline()
        err = syns_then_sigterm(proc, port, 300, "10.98")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    found = [json.loads(line) for line in out.read_text().splitlines()]
    found = [p for p in found if p["model"]["name"] == "detector:flood"]
    assert found and all(p["pcap_file"] == str(d / "alerts-000000.pcap") for p in found)
    got = [tcp_tuple(b) for _, b in read_pcap(d / "alerts-000000.pcap")]
    # the 300 SYNs from 300 sources, each once, whole (lo frames are 54 bytes: under the snap length)
    assert len(got) == 300 and {s for s, *_ in got} == {f"10.98.{i // 250}.{i % 250 + 1}" for i in range(300)}
    assert all(dst == "127.0.0.1" and dp == port and fl == SYN for _, dst, _, dp, fl in got)


def test_more_alerts_live_than_max_triggers_keep_their_earlier_packets_only(tmp_path: Path) -> None:
    import time

    batch, _ = _batch_with_bytes(tmp_path)  # 10.1.0.1 -> 10.1.0.2, UDP
    ap = AlertPcap(AlertPcapConfig(enabled=True, dir=str(tmp_path / "pcaps"), max_triggers=16))
    ap.open()
    ap.add(batch)
    end = float(batch.ts[-1])
    others = [Finding("volume", "DoS-UDP_Flood", end, end, 1, f"10.9.0.{i}", "10.9.1.1", "udp", "t") for i in range(16)]
    assert None not in ap.flag_findings(others)
    deadline = time.monotonic() + 5
    while ap._pending and time.monotonic() < deadline:  # the writer took them: 16 keys live
        time.sleep(0.01)
    ours = Finding("volume", "DoS-UDP_Flood", end, end, 20, "10.1.0.1", "10.1.0.2", "udp", "t")
    assert ap.flag_findings([ours]) == [ap.current_file()]
    ap.close()
    assert ap.stats.follow_dropped == 1 and ap.stats.packets == 20  # its packets in the ring were still written
    assert "1 alerts recorded without their later packets" in ap.summary()
