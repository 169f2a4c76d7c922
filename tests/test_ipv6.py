"""IPv6 is metered like IPv4 (issue 9, build item 1): the same columns, flow/window/pool
rules with /64 or /128 pools, the detectors, and a dual-stack capture replayed end to end
where each IPv6 attack is flagged like its IPv4 twin."""

from __future__ import annotations

import collections
import csv
import json
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
from scapy.all import (ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrHopByHop, Raw, wrpcap)

from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import DetectorsConfig, MeterConfig
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet
from ids_daemon.features.ciciot import COLUMNS
from ids_daemon.features.meter import Meter
from ids_daemon.features.window import KIND_FLOW, KIND_POOL, WindowBatch
from ids_daemon.predictions import json_schema

from .helpers import EXE  # noqa: E402
COL = {c: i for i, c in enumerate(COLUMNS)}
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
T0 = 1_700_000_000.0


def _write(path: Path, pkts: list, step: float = 0.001) -> Path:
    for i, p in enumerate(pkts):
        p.time = T0 + i * step
    wrpcap(str(path), pkts)
    return path


def _meter(path: Path, cfg: MeterConfig | None = None, per_packet: bool = False) -> tuple[Meter, WindowBatch]:
    m = Meter(cfg or MeterConfig(window=10, idle_timeout=0), per_packet=per_packet)
    outs = []
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            o = m.process(b)
            outs.append(o.rows if per_packet else o.windows)
    if not per_packet:
        outs.append(m.flush().windows)
    return m, WindowBatch.concat(outs)


def test_ipv6_rows_have_the_ipv4_columns(tmp_path: Path) -> None:
    """Protocol Type is the upper layer after extension headers, Duration the hop limit,
    ICMPv6 counts as ICMP, IPv/LLC are 1; the twin IPv4 packet gives the same row."""
    six = [Ether(**MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=57) / IPv6ExtHdrHopByHop()
           / IPv6ExtHdrDestOpt() / TCP(sport=40000, dport=80, flags="S"),
           Ether(**MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=57) / ICMPv6EchoRequest()]
    four = [Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2", ttl=57) / TCP(sport=40000, dport=80, flags="S"),
            Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2", ttl=57) / ICMP()]
    m6, r6 = _meter(_write(tmp_path / "six.pcap", six), per_packet=True)
    _, r4 = _meter(_write(tmp_path / "four.pcap", four), per_packet=True)
    assert m6.counters.packets == 2 and m6.counters.packets_ipv6 == 2 and m6.counters.skipped == 0
    f6, f4 = r6.features, r4.features
    assert f6[0, COL["Protocol Type"]] == 6 and f6[1, COL["Protocol Type"]] == 58
    assert f6[0, COL["Duration"]] == 57
    assert f6[0, COL["TCP"]] == 1 and f6[0, COL["syn_flag_number"]] == 1
    assert f6[1, COL["ICMP"]] == 1 and f6[1, COL["IPv"]] == 1 and f6[1, COL["LLC"]] == 1
    # the IPv6 rows differ from their IPv4 twins only where the packets differ: the header
    # sizes (Tot size, Header_Length, ...) and ICMPv6's protocol number
    same = [c for c in COLUMNS if c not in ("Header_Length", "Tot sum", "Min", "Max", "AVG", "Tot size", "Magnitue",
                                            "Protocol Type")]
    for c in same:
        assert f6[0, COL[c]] == f4[0, COL[c]], c
    # 14 Ethernet + 40 IPv6 + 8 hop-by-hop + 8 destination options + 20 TCP
    assert f6[0, COL["Tot size"]] == 90
    assert r6.ip_version.tolist() == [6, 6]
    assert bytes(r6.src6[0]) == bytes.fromhex("20010db8000000000000000000000001")


def test_flows_pools_and_prefixes(tmp_path: Path) -> None:
    """Both directions of an IPv6 flow are one key; short flows pool per /64 of the served
    host by default, per address with pool_prefix6 128; IPv4 and IPv6 never share a key."""
    pkts = []
    for i in range(12):  # one long flow, both directions
        fwd = i % 2 == 0
        a, b = ("2001:db8:1::10", "2001:db8:2::20") if fwd else ("2001:db8:2::20", "2001:db8:1::10")
        pkts.append(Ether(**MAC) / IPv6(src=a, dst=b) / TCP(sport=5000 if fwd else 443, dport=443 if fwd else 5000))
    for i in range(10):  # one-packet flows to two hosts of one /64
        pkts.append(Ether(**MAC) / IPv6(src=f"2001:db8:9::{i + 1:x}", dst=f"2001:db8:2::{20 + i % 2}")
                    / TCP(sport=6000 + i, dport=22, flags="S"))
    for i in range(10):  # the IPv4 twin of those
        pkts.append(Ether(**MAC) / IP(src=f"10.9.0.{i + 1}", dst=f"10.2.0.{20 + i % 2}") / TCP(sport=6000 + i, dport=22))
    path = _write(tmp_path / "p.pcap", pkts)
    m, w = _meter(path)
    keys = collections.Counter(w.key_strings().tolist())
    # the flow's first 9 packets join its responder's pool; from the 10th it has its own key
    assert keys["tcp [2001:db8:1::10]:5000-[2001:db8:2::20]:443"] == 1
    assert keys["pool tcp 2001:db8:2::/64"] == 2  # 9 + 10 rows: both hosts of the /64
    assert keys["pool tcp 10.2.0.20/32"] == 1 and keys["pool tcp 10.2.0.21/32"] == 1
    flow = (w.kind == KIND_FLOW) & (w.ip_version == 6)
    assert set(w.endpoint_strings()[0][flow]) == {"2001:db8:1::10"}
    assert m.counters.flows_created == 1 + 10 + 10 and m.counters.packets_ipv6 == 22
    _, w128 = _meter(path, MeterConfig(window=10, idle_timeout=0, pool_prefix6=128))
    pools = [k for k in w128.key_strings().tolist() if k.startswith("pool tcp 2001")]
    assert sorted(set(pools)) == ["pool tcp 2001:db8:2::20/128", "pool tcp 2001:db8:2::21/128"]
    pool = w128.kind == KIND_POOL
    assert set(w128.prefix[pool & (w128.ip_version == 6)].tolist()) == {128}


def test_neighbour_discovery_pools_by_its_sender(tmp_path: Path) -> None:
    """Neighbour solicitations go to a solicited-node multicast address; like ARP they are
    pooled by the address that sends them, not by the multicast group."""
    pkts = [Ether(**MAC) / IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt="fe80::2")
            for _ in range(4)]
    _, w = _meter(_write(tmp_path / "nd.pcap", pkts))
    assert w.key_strings().tolist() == ["pool icmpv6 fe80::/64"]
    assert w.features[0, COL["Duration"]] == 255


def _dual_stack(path: Path) -> dict[str, int]:
    """IPv4 and IPv6 twins: a SYN flood, a UDP flood and an echo (ping) flood from spoofed
    sources, and a vertical SYN scan answered by resets; plus LLDP frames the meter skips.
    Returns frame counts."""
    pkts = []
    fam = {4: (IP, lambda i: f"10.9.0.{100 + i % 150}", "10.9.0.80", "10.9.0.5", "ttl"),
           6: (IPv6, lambda i: f"2001:db8:9::{100 + i % 150:x}", "2001:db8:9::80", "2001:db8:9::5", "hlim")}
    n = collections.Counter()
    for v, (L3, spoof, victim, scanner, hop) in fam.items():
        for i in range(300):
            pkts.append(Ether(**MAC) / L3(src=spoof(i), dst=victim, **{hop: 64}) / TCP(sport=1024 + i, dport=80, flags="S"))
        for i in range(300):
            pkts.append(Ether(**MAC) / L3(src=spoof(i), dst=victim, **{hop: 64}) / UDP(sport=2000 + i, dport=53 + i)
                        / Raw(b"x" * 64))
        for port in range(1, 201):
            pkts.append(Ether(**MAC) / L3(src=scanner, dst=victim, **{hop: 64}) / TCP(sport=55555, dport=port, flags="S"))
            pkts.append(Ether(**MAC) / L3(src=victim, dst=scanner, **{hop: 64}) / TCP(sport=port, dport=55555, flags="RA"))
        echo = (lambda: ICMP(type=8)) if v == 4 else (lambda: ICMPv6EchoRequest())
        for i in range(300):
            pkts.append(Ether(**MAC) / L3(src=spoof(i), dst=victim, **{hop: 64}) / echo())
        n[v] = 1300
    lldp = Ether(src=MAC["src"], dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(b"\x02\x07\x04" + b"\x00" * 20)
    pkts += [lldp.copy() for _ in range(3)]
    n["lldp"] = 3
    _write(path, pkts, step=0.0005)
    return n


def test_dual_stack_detectors_flag_the_ipv6_scan_like_the_ipv4_one(tmp_path: Path) -> None:
    path = tmp_path / "dual.pcap"
    _dual_stack(path)
    ds = DetectorSet(DetectorsConfig())
    findings, flagged = [], collections.Counter()
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            r = ds.process(b)
            findings += r.findings
            for v in (4, 6):
                flagged[v] += int(np.count_nonzero((r.frame_class == DETECTOR_CLASSES.index("Recon-PortScan"))
                                                   & (b.ip_version == v)))
    scans = {(f.attacker, f.victim) for f in findings if f.cls == "Recon-PortScan"}
    assert scans == {("10.9.0.5", "10.9.0.80"), ("2001:db8:9::5", "2001:db8:9::80")}
    assert flagged[6] == flagged[4] >= 300  # most of the 400 scan frames of each family


def test_dual_stack_replay_flags_ipv6_like_its_ipv4_twin(tmp_path: Path) -> None:
    """`ids-daemon replay` of a dual-stack capture: the IPv6 windows are metered and scored
    as their IPv4 twins are, the IPv6 floods and scan are found by the detectors as the IPv4
    ones, and the summary counts both."""
    path = tmp_path / "dual.pcap"
    n = _dual_stack(path)
    out = tmp_path / "p.jsonl"
    cfg = tmp_path / "c.yml"
    cfg.write_text("metrics:\n  listen: null\n")
    r = subprocess.run([EXE, "replay", "-r", str(path), "-o", str(out), "--device", "cpu", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    frames = n[4] + n[6] + n["lldp"]
    # the scans' frames the scan detector flags are left to it (the bundled model's detector_claims),
    # the same share in each family
    left = int(r.stderr.split(" left to them, not metered")[0].split("(")[-1])
    assert left > 0
    assert f"{frames} frames, {n[4] + n[6] - left} metered (" in r.stderr and "3 skipped (LLDP 3), 0 malformed" in r.stderr

    preds = [json.loads(line) for line in out.read_text().splitlines()]
    schema = json_schema()
    for p in preds:
        if ":" in (p["flow"]["dst_ip"] or ""):
            jsonschema.validate(p, schema)  # IPv6 predictions are valid v1 records
    # what the detectors leave to the model (the UDP flood, which has too few sources for the
    # flood detector) is scored alike in both families: the same windows, p_attack within a few
    # hundredths rank for rank, and the same verdicts but where a twin sits that close to the
    # operating point. (Not closer: the IPv6 windows' size columns carry the IPv6 header's 20
    # extra bytes, docs/features.md; model v6 scores the twins up to 0.013 apart, v5 0.09-0.16.)
    p_att: dict[int, dict[str, list[float]]] = {4: collections.defaultdict(list), 6: collections.defaultdict(list)}
    verdicts: dict[int, list[bool]] = {4: [], 6: []}
    for p in preds:
        if p["model"]["name"].startswith("detector:"):
            continue
        v = 6 if ":" in p["flow"]["dst_ip"] else 4
        proto = {"icmpv6": "icmp"}.get(p["flow"]["protocol"], p["flow"]["protocol"])  # the twins' protocols
        p_att[v][proto].append(p["p_attack"])
        verdicts[v].append(p["is_attack"])
    assert set(p_att[4]) == set(p_att[6]) == {"udp"}
    p4, p6 = sorted(p_att[4]["udp"]), sorted(p_att[6]["udp"])
    assert len(p4) == len(p6) > 20
    assert max(abs(a - b) for a, b in zip(p4, p6)) <= 0.05 and min(p4 + p6) >= 0.5
    assert abs(sum(verdicts[4]) - sum(verdicts[6])) <= 2
    # the SYN and echo floods (150 spoofed sources within 0.1 s) are the flood detector's in both
    # families, as the scans are the scan detector's. (The size columns of the IPv6 windows the
    # model does see carry the IPv6 header's 20 extra bytes: a known gap, see docs/features.md.)
    floods = {(p["predicted_attack"], p["flow"]["dst_ip"]) for p in preds if p["model"]["name"] == "detector:flood"}
    assert floods == {(c, v) for c in ("DDoS-SYN_Flood", "DDoS-ICMP_Flood") for v in ("10.9.0.80", "2001:db8:9::80")}
    scans = {(p["flow"]["src_ip"], p["flow"]["dst_ip"]) for p in preds if p["predicted_attack"] == "Recon-PortScan"
             and p["model"]["name"] == "detector:scan"}
    assert ("2001:db8:9::5", "2001:db8:9::80") in scans and ("10.9.0.5", "10.9.0.80") in scans


def test_features_csv_names_ipv6_endpoints_and_counts_skipped_kinds(tmp_path: Path) -> None:
    path = tmp_path / "dual.pcap"
    n = _dual_stack(path)
    out = tmp_path / "f.csv"
    r = subprocess.run([EXE, "features", "-r", str(path), "-o", str(out), "--per-packet"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"metered ({n[6]} IPv6), 3 skipped (LLDP 3), 0 malformed" in r.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == n[4] + n[6]
    six = [row for row in rows if ":" in row["src_ip"]]
    assert len(six) == n[6]
    assert {row["dst_ip"] for row in six if row["src_ip"] == "2001:db8:9::5"} == {"2001:db8:9::80"}
    assert all(row["Duration"] == "64.0" for row in six)


def test_capture_mode_skips_ipv6_as_the_dataset_did(tmp_path: Path) -> None:
    """key_mode capture reproduces the released extractor, which never saw IPv6: IPv6
    frames are counted as skipped, by kind, and the IPv4 rows are unchanged."""
    pkts = [Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2),
            Ether(**MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2),
            Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)]
    m, rows = _meter(_write(tmp_path / "c.pcap", pkts), MeterConfig(key_mode="capture", idle_timeout=0),
                     per_packet=True)
    assert len(rows) == 2 and m.counters.packets == 2 and m.counters.packets_ipv6 == 0
    assert m.counters.skipped_by_kind == {"IPv6, key_mode capture": 1}
    assert rows.features[1, COL["Number"]] == 2  # the IPv6 frame took no place in the buffer


def test_web_dns_and_bruteforce_detectors_over_ipv6(tmp_path: Path) -> None:
    """The web, DNS-spoofing and brute-force detectors see IPv6 as they see IPv4, and name
    IPv6 addresses in their findings."""
    from scapy.all import DNS, DNSQR, DNSRR

    client, server, dns = "2001:db8::7", "2001:db8::50", "2001:4860:4860::8888"
    six = lambda a, b: Ether(**MAC) / IPv6(src=a, dst=b)  # noqa: E731
    sqli = b"GET /item.php?id=1+union+all+select+user,password+from+users HTTP/1.1\r\nHost: h\r\n\r\n"
    # a real handshake (the web detector believes a request only on a connection it saw open)
    pkts = [six(client, server) / TCP(sport=40001, dport=80, flags="S", seq=1000),
            six(server, client) / TCP(sport=80, dport=40001, flags="SA", seq=5000, ack=1001),
            six(client, server) / TCP(sport=40001, dport=80, flags="A", seq=1001, ack=5001),
            six(client, server) / TCP(sport=40001, dport=80, flags="PA", seq=1001, ack=5001) / Raw(sqli),
            six(server, client) / TCP(sport=80, dport=40001, flags="PA", seq=5001, ack=1001 + len(sqli))
            / Raw(b"HTTP/1.1 200 OK\r\n\r\n")]
    q = DNSQR(qname="example.com", qtype="AAAA")
    pkts += [six(client, dns) / UDP(sport=40000, dport=53) / DNS(id=7, rd=1, qd=q),
             six(dns, client) / UDP(sport=53, dport=40000) / DNS(id=7, qr=1, qd=q, an=DNSRR(
                 rrname="example.com", type="AAAA", rdata="2606:2800:220:1::1")),
             six(dns, client) / UDP(sport=53, dport=40000) / DNS(id=7, qr=1, qd=q, an=DNSRR(
                 rrname="example.com", type="AAAA", rdata="2001:db8:666::6"))]
    pkts += [six("2001:db8::66", server) / TCP(sport=50000 + k, dport=22, flags="S") for k in range(12)]
    path = _write(tmp_path / "d6.pcap", pkts, step=0.5)
    ds = DetectorSet(DetectorsConfig())
    with PcapSource(path) as src:
        b = src.next_batch()
        r = ds.process(b)
    cls = [DETECTOR_CLASSES[c] if c >= 0 else None for c in r.frame_class.tolist()]
    assert cls[:5] == ["SqlInjection"] * 5  # the handshake too: the pair's frames up to LOOKBACK_S before
    assert cls[5:8] == [None, None, "DNS_Spoofing"]
    assert cls[-1] == "DictionaryBruteForce"
    found = {f.cls: f for f in r.findings}
    assert (found["SqlInjection"].attacker, found["SqlInjection"].victim) == (client, server)
    assert f"[{client}]:40001 -> [{server}]:80" in found["SqlInjection"].evidence  # the connection it holds
    assert found["DNS_Spoofing"].victim == client and dns in found["DNS_Spoofing"].evidence
    assert found["DictionaryBruteForce"].attacker == "2001:db8::66"


def test_the_mdns_capture_is_metered_whole() -> None:
    """The issue's example: 216 of this capture's 292 frames are IPv6 and were skipped."""
    from .paths import PCAPS

    r = subprocess.run([EXE, "features", "-r", str(PCAPS / "mdns.pcap"), "-o", "/dev/null"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "292 frames: 292 metered (216 IPv6), 0 skipped, 0 malformed" in r.stderr


def test_live_ipv6_on_loopback(tmp_path: Path) -> None:
    """Live capture meters IPv6 too (UDP to ::1 on lo)."""
    import socket
    import threading
    import time

    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except (PermissionError, AttributeError, OSError):
        import pytest

        pytest.skip("needs root (packet socket) and IPv6 on lo")
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            s6.sendto(b"x" * 40, ("::1", 39999))
            time.sleep(0.005)

    proc = subprocess.Popen([EXE, "features", "-i", "lo", "--duration", "3", "-o", str(tmp_path / "l.csv"),
                             "ip6 and udp port 39999"], stderr=subprocess.PIPE, text=True)
    t = threading.Thread(target=send, daemon=True)
    try:
        t.start()
        _, err = proc.communicate(timeout=60)
    finally:
        stop.set()
        s6.close()
    assert proc.returncode == 0, err
    head = err.split(" frames: ")
    frames = int(head[0].split()[-1])
    assert frames > 50 and f"{frames} metered ({frames} IPv6)" in err, err
