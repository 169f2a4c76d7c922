"""Scan detector: a port scan needs distinct ports the prober has no connection with. Failed
connections to one service port (an HTTP flood, password guessing) are no scan, nor are the
bare ACKs a loaded server sends on the connections it accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scapy.all import IP, TCP, Ether, Raw

from ids_daemon.config import DetectorsConfig, ScanDetectorConfig

from .test_detectors import C, at, run, write

HULK, WEB = "10.3.0.66", "10.3.0.80"
OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


def seg(t, src, dst, sport, dport, flags, seq=0, ack=0, data=b"", opts=None):
    return at(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
                                                   options=opts or []) / (Raw(data) if data else b""), t)


def hulk(n: int = 400, seed: int = 7) -> list:
    """A HULK-like HTTP flood: one client opening ``n`` connections to port 80 of a loaded server.
    Each sends a no-cache GET with random parameters; the server ACKs it (a bare ACK: it has no
    time to answer) and the client resets the connection, or closes it with a FIN the server ACKs;
    some SYNs are retransmitted and then reset or never answered (a full backlog)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = i * 0.004
        cp = 20000 + i
        c, s = int(rng.integers(1, 1 << 31)), int(rng.integers(1, 1 << 31))
        fate = i % 10
        if fate == 9:  # backlog full: SYN retransmitted, then nothing or a reset
            out += [seg(t, HULK, WEB, cp, 80, "S", c, opts=OPTS), seg(t + 1.0, HULK, WEB, cp, 80, "S", c, opts=OPTS)]
            if i % 20 == 9:
                out.append(seg(t + 1.001, WEB, HULK, 80, cp, "RA", 0, c + 1))
            continue
        req = (f"GET /?{rng.integers(1 << 30)}={rng.integers(1 << 30)} HTTP/1.1\r\nHost: {WEB}\r\n"
               "Cache-Control: no-cache\r\nKeep-Alive: 115\r\nConnection: keep-alive\r\n\r\n").encode()
        out += [seg(t, HULK, WEB, cp, 80, "S", c, opts=OPTS),
                seg(t + 0.0005, WEB, HULK, 80, cp, "SA", s, c + 1, opts=OPTS),
                seg(t + 0.001, HULK, WEB, cp, 80, "A", c + 1, s + 1),
                seg(t + 0.0012, HULK, WEB, cp, 80, "PA", c + 1, s + 1, req),
                seg(t + 0.03, WEB, HULK, 80, cp, "A", s + 1, c + 1 + len(req))]
        if fate < 6:  # the client resets the connection
            out.append(seg(t + 0.031, HULK, WEB, cp, 80, "RA", c + 1 + len(req), s + 1))
        else:  # the client closes; the server ACKs the FIN, its own FIN comes later and is reset
            out += [seg(t + 0.031, HULK, WEB, cp, 80, "FA", c + 1 + len(req), s + 1),
                    seg(t + 0.06, WEB, HULK, 80, cp, "A", s + 1, c + 2 + len(req)),
                    seg(t + 0.5, WEB, HULK, 80, cp, "FA", s + 1, c + 2 + len(req)),
                    seg(t + 0.5005, HULK, WEB, cp, 80, "R", c + 2 + len(req))]
    out.sort(key=lambda p: p.time)
    return out


def test_an_http_flood_is_no_port_scan(tmp_path: Path) -> None:
    _, fc, findings = run(write(tmp_path, "hulk.pcap", hulk()))
    assert not (fc == C["Recon-PortScan"]).any()
    assert not [f for f in findings if f.cls == "Recon-PortScan"]


def test_a_vertical_syn_scan_is_a_port_scan(tmp_path: Path) -> None:
    pkts = []
    for i, p in enumerate(range(1, 101)):  # SYNs to 100 ports, each reset
        t = i * 0.002
        pkts += [seg(t, HULK, WEB, 55555, p, "S", 4242), seg(t + 0.0005, WEB, HULK, p, 55555, "RA", 0, 4243)]
    b, fc, findings = run(write(tmp_path, "vs.pcap", pkts))
    assert (fc == C["Recon-PortScan"]).mean() >= 0.75
    assert findings[0].attacker == HULK and findings[0].victim == WEB


def test_an_ack_scan_is_a_port_scan(tmp_path: Path) -> None:
    """nmap -sA: bare ACKs to 30 ports from one source port, each reset (unfiltered)."""
    pkts = []
    for i in range(30):
        t = i * 0.01
        pkts += [seg(t, HULK, WEB, 61000, 20 + i, "A", 0, 777), seg(t + 0.001, WEB, HULK, 20 + i, 61000, "R", 777)]
    _, fc, findings = run(write(tmp_path, "ack.pcap", pkts))
    assert (fc == C["Recon-PortScan"]).sum() >= 20
    assert {f.cls for f in findings} == {"Recon-PortScan"}


def os_stack_sweep(port: int, hosts: int = 60, tries: int = 3) -> list:
    """connect() to ``hosts`` addresses on ``port``, one every 0.5 s, each SYN with an OS stack's
    full option set and retransmitted ``tries`` times 1 s apart, never answered."""
    out = []
    for i in range(hosts):
        for r in range(tries):
            out.append(seg(i * 0.5 + r, HULK, f"100.64.{i // 200}.{i % 200 + 1}", 40000 + i, port, "S", 77 + i,
                           opts=OPTS))
    out.sort(key=lambda p: p.time)
    return out


def test_a_worm_sweeping_telnet_through_its_os_stack_is_a_scan_a_p2p_client_is_not(tmp_path: Path) -> None:
    """A Mirai-like telnet scanner connects through its OS stack (full options, retransmitted
    SYNs), like a P2P client failing to reach peers; on a login port (``sweep_ports``) its failed
    SYNs to distinct hosts count for the horizontal rule, on a P2P port they do not."""
    pkts = os_stack_sweep(23)
    _, fc, findings = run(write(tmp_path, "telnet.pcap", pkts))
    scans = [f for f in findings if f.cls == "Recon-PortScan"]
    assert scans and scans[0].attacker == HULK and scans[0].victim == "*:23"
    # flagged from the 20th failed host on (answer_s after its first SYN): 40 of 60 hosts' SYNs
    assert (fc == C["Recon-PortScan"]).sum() >= 0.6 * len(pkts)
    _, fc, findings = run(write(tmp_path, "p2p.pcap", os_stack_sweep(6346)))
    assert not (fc >= 0).any() and not findings
    # the same sweep with telnet taken off the list is a P2P client's to the detector
    cfg = DetectorsConfig(scan=ScanDetectorConfig(sweep_ports=[22]))
    _, fc, findings = run(write(tmp_path, "telnet2.pcap", pkts), cfg)
    assert not (fc >= 0).any()


def test_sweep_ports_must_be_tcp_ports() -> None:
    with pytest.raises(ValidationError, match="not TCP ports: 70000"):
        ScanDetectorConfig(sweep_ports=[23, 70000])
