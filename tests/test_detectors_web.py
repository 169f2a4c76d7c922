"""Web detector: a matching request counts only on a connection its sender holds (handshake seen
and the request in both sequence windows, or acknowledged by the server), and the hold is that
connection, not the (client, server, port) pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scapy.all import IP, TCP, Ether, Raw

from ids_daemon.capture.pcap import PcapSource
from ids_daemon.detectors import DetectorSet

from .paths import REAL
from .test_detectors import CLIENT, SERVER, C, at, get, run, tcp_conn, write

ATTACK = get("/x?id=1%27+union+select+user,password+from+users--")
CLIENT_MAC, SPOOF_MAC, SERVER_MAC = "00:00:00:00:01:07", "00:00:00:00:06:66", "00:00:00:00:01:80"


def seg(t, src, dst, sport, dport, flags, seq, ack=0, data=b"", mac=None):
    eth = Ether(src=mac) if mac else Ether()
    return at(eth / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
              / (Raw(data) if data else b""), t)


def test_spoofed_segments_are_not_flagged_and_name_nobody(tmp_path: Path) -> None:
    """The issue: one segment 'from' a benign host (another MAC, no handshake) carrying UNION
    SELECT made the detector flag that host's next packets and name it. Neither a segment on a
    fresh 5-tuple (the server resets it) nor one injected into the host's live connection with a
    guessed sequence number (the server answers a duplicate ACK at its own rcv_nxt) counts."""
    pkts = tcp_conn(0, CLIENT, SERVER, 41000, 80, [get("/index.html")])
    # a fresh 5-tuple: the server has no such connection and resets it (seq = the segment's ack)
    pkts += [seg(1.0, CLIENT, SERVER, 41999, 80, "PA", 123456, 777777, ATTACK, SPOOF_MAC),
             seg(1.01, SERVER, CLIENT, 80, 41999, "R", 777777)]
    # inside a live connection of the host, a guessed seq: a duplicate ACK at the server's rcv_nxt
    live = tcp_conn(2.0, CLIENT, SERVER, 41001, 80, [get("/a.css"), get("/b.js")])
    srv_nxt, cli_nxt = int(live[4][TCP].seq), int(live[4][TCP].ack)  # the reply to the first request
    pkts += live[:5] + [seg(2.055, CLIENT, SERVER, 41001, 80, "PA", 3_000_000_000, srv_nxt, ATTACK, SPOOF_MAC),
                        seg(2.056, SERVER, CLIENT, 80, 41001, "A", srv_nxt, cli_nxt)] + live[5:]
    for k in range(15):  # the host's next 120 benign packets
        pkts += tcp_conn(3 + k, CLIENT, SERVER, 42000 + k, 80, [get(f"/page{k}.html")])
    pkts.sort(key=lambda p: p.time)
    b, fc, findings = run(write(tmp_path, "spoof.pcap", pkts))
    assert (b.http_sig > 0).sum() == 2
    assert (fc == -1).all() and not findings


def test_spoofed_syn_then_request_is_not_flagged(tmp_path: Path) -> None:
    """A blind spoofer sending a SYN and then its request back to back: the SYN-ACK went to the
    real host, so the request's ack cannot acknowledge the server's ISN."""
    pkts = [seg(0, CLIENT, SERVER, 43000, 80, "S", 1000, mac=SPOOF_MAC),
            seg(0.001, SERVER, CLIENT, 80, 43000, "SA", 900_000, 1001),
            seg(0.002, CLIENT, SERVER, 43000, 80, "A", 1001, 12345, mac=SPOOF_MAC),
            seg(0.003, CLIENT, SERVER, 43000, 80, "PA", 1001, 12345, ATTACK, SPOOF_MAC),
            seg(0.004, SERVER, CLIENT, 80, 43000, "R", 12345)]  # the server refuses the unacceptable ack
    pkts += tcp_conn(1, CLIENT, SERVER, 43001, 80, [get("/index.html")])
    _, fc, findings = run(write(tmp_path, "spoofsyn.pcap", pkts))
    assert (fc == -1).all() and not findings


def test_attack_connection_with_handshake_is_flagged_whole(tmp_path: Path) -> None:
    pkts = tcp_conn(0, CLIENT, SERVER, 40001, 80, [get("/index.html"), ATTACK, get("/logo.png")])
    b, fc, findings = run(write(tmp_path, "attack.pcap", pkts))
    assert (fc == C["SqlInjection"]).all()  # handshake, requests and replies, FINs and the last ACK
    assert {(f.attacker, f.victim, f.cls) for f in findings} == {(CLIENT, SERVER, "SqlInjection")}
    assert "40001" in findings[0].evidence


def test_next_benign_connection_after_the_attack_closed_is_not_flagged(tmp_path: Path) -> None:
    attack = tcp_conn(0, CLIENT, SERVER, 40001, 80, [ATTACK])
    after = tcp_conn(0.5, CLIENT, SERVER, 40002, 80, [get("/index.html")])  # same client, server and port
    parallel = tcp_conn(0.02, CLIENT, SERVER, 40003, 80, [get("/style.css")])  # open while the attack ran
    pkts = sorted(attack + after + parallel, key=lambda p: p.time)
    b, fc, findings = run(write(tmp_path, "after.pcap", pkts))
    port = np.maximum(b.sport, b.dport)
    assert (fc[port == 40001] == C["SqlInjection"]).all()
    assert (fc[port != 40001] == -1).all()
    assert len({f.evidence for f in findings}) == 1


def test_port_reuse_ends_the_hold(tmp_path: Path) -> None:
    """A new connection on the same ports (a SYN with another ISN) is not the attack's, even
    within hold_s of it and with the attack connection never closed."""
    attack = tcp_conn(0, CLIENT, SERVER, 40001, 80, [ATTACK])[:-3]  # no FINs
    again = tcp_conn(10, CLIENT, SERVER, 40001, 80, [get("/index.html")])
    for p in again:  # shift the client's numbers: another ISN
        p[TCP].seq = (p[TCP].seq + 99_999) % (1 << 32) if p[IP].src == CLIENT else p[TCP].seq
        if p[IP].src == SERVER and "A" in p[TCP].flags:
            p[TCP].ack = (p[TCP].ack + 99_999) % (1 << 32)
    _, fc, _ = run(write(tmp_path, "reuse.pcap", attack + again))
    assert (fc[:len(attack)] == C["SqlInjection"]).all() and (fc[len(attack):] == -1).all()


def midstream(t0: float, acked: bool) -> list:
    """A connection that started before the capture: data both ways, then an attack request the
    server acknowledges (or answers with an ACK that does not cover it)."""
    c, s = 2_000_000_000, 3_000_000_000
    out = [seg(t0, SERVER, CLIENT, 80, 44000, "PA", s, c, b"x" * 200),
           seg(t0 + 0.01, CLIENT, SERVER, 44000, 80, "A", c, s + 200)]
    s += 200
    out.append(seg(t0 + 0.02, CLIENT, SERVER, 44000, 80, "PA", c, s, ATTACK))
    end = c + len(ATTACK)
    out.append(seg(t0 + 0.05, SERVER, CLIENT, 80, 44000, "A", s, end if acked else c))
    out.append(seg(t0 + 0.06, SERVER, CLIENT, 80, 44000, "PA", s, end if acked else c,
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    return out


def test_midstream_connection_acknowledged_by_the_server_is_flagged(tmp_path: Path) -> None:
    pkts = midstream(0, acked=True)
    b, fc, findings = run(write(tmp_path, "mid.pcap", pkts))
    assert (fc == C["SqlInjection"]).all()  # the request and the frames LOOKBACK_S before it
    assert findings and findings[0].attacker == CLIENT
    _, fc, findings = run(write(tmp_path, "mid_nack.pcap", midstream(0, acked=False)))
    assert (fc == -1).all() and not findings
    # the server's ACK in the batch after the request: flagged from there on
    ds = DetectorSet()
    got = []
    with PcapSource(tmp_path / "mid.pcap", batch_size=3) as src:
        while (b := src.next_batch()) is not None:
            got.append(ds.process(b).frame_class)
    fc = np.concatenate(got)
    assert (fc[:3] == -1).all() and (fc[3:] == C["SqlInjection"]).all()


def test_a_scanner_connection_stays_a_vulnerability_scan(tmp_path: Path) -> None:
    nikto = "Mozilla/5.00 (Nikto/2.1.6)"
    pkts = tcp_conn(0, CLIENT, SERVER, 40001, 80, [get("/", ua=nikto), ATTACK])
    _, fc, findings = run(write(tmp_path, "nikto.pcap", pkts))
    assert (fc == C["VulnerabilityScan"]).all() and {f.cls for f in findings} == {"VulnerabilityScan"}


@pytest.mark.shared_data("real")
def test_real_request_only_capture_is_not_flagged_by_web() -> None:
    """nDPI's WebattackRCE holds only nikto's request segments: no handshake, no server packet,
    so nothing shows that the source address sent them (797 flagged before, none now)."""
    path = REAL / "attack/Recon-VulnerabilityScan/ntop_nDPI__WebattackRCE.pcap"
    b, fc, findings = run(path)
    assert (b.http_sig > 0).sum() > 700
    assert not [f for f in findings if f.detector == "web"]
