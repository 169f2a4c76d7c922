"""Slow HTTP detector (`detector:slowhttp`, DDoS-SlowLoris): crafted slowloris and slow POST captures
are flagged, browsers, long-poll clients and many answered requests are not, and the state is bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scapy.all import IP, TCP, Ether, Raw

from ids_daemon.capture.batch import HTTP_REQ_COMPLETE, HTTP_REQ_PARTIAL, PacketBatch
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import DetectorsConfig, SlowHttpDetectorConfig
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet
from ids_daemon.detectors.slowhttp import SlowHttpDetector

C = {c: i for i, c in enumerate(DETECTOR_CLASSES)}
T0 = 1_700_000_000.0
CLIENT, SERVER, OTHER = "10.1.0.7", "10.1.0.80", "10.1.0.9"


from .detect import run, write_sorted as write  # noqa: E402


class Conn:
    """One TCP connection between a client port and the server's port 80, frames at given times."""

    def __init__(self, client: str, cport: int, server: str = SERVER, sport: int = 80):
        self.client, self.cport, self.server, self.sport = client, cport, server, sport
        self.pkts: list = []

    def c2s(self, t: float, flags: str, data: bytes = b"") -> "Conn":
        p = Ether() / IP(src=self.client, dst=self.server) / TCP(sport=self.cport, dport=self.sport, flags=flags)
        self._add(p / Raw(data) if data else p, t)
        return self

    def s2c(self, t: float, flags: str, data: bytes = b"") -> "Conn":
        p = Ether() / IP(src=self.server, dst=self.client) / TCP(sport=self.sport, dport=self.cport, flags=flags)
        self._add(p / Raw(data) if data else p, t)
        return self

    def _add(self, p, t: float) -> None:
        p.time = T0 + t
        self.pkts.append(p)

    def handshake(self, t: float) -> "Conn":
        return self.c2s(t, "S").s2c(t + 0.001, "SA").c2s(t + 0.002, "A")

    def close(self, t: float) -> "Conn":
        return self.c2s(t, "FA").s2c(t + 0.001, "FA").c2s(t + 0.002, "A")


PARTIAL = (b"GET /?%d HTTP/1.1\r\nHost: 10.1.0.80\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\n"
           b"Accept-language: en-US,en,q=0.5\r\n")
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=60\r\n\r\nok"


def get(k: int) -> bytes:
    return b"GET /page/%d HTTP/1.1\r\nHost: 10.1.0.80\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n" % k


def slowloris(n: int = 60, duration: float = 60.0, every: float = 12.0, t0: float = 0.0) -> list:
    """slowloris.py: n sockets, each a request line and two headers without the blank line, then one
    `X-a: <n>` header line every `every` seconds; the server only ACKs."""
    pkts = []
    for i in range(n):
        c = Conn(CLIENT, 40000 + i)
        t = t0 + i * 0.03
        c.handshake(t).c2s(t + 0.003, "PA", PARTIAL % i).s2c(t + 0.004, "A")
        k = 1
        while t + k * every < t0 + duration:
            c.c2s(t + k * every, "PA", b"X-a: %d\r\n" % (1000 + k)).s2c(t + k * every + 0.001, "A")
            k += 1
        pkts += c.pkts
    return pkts


def test_decode_marks_partial_and_complete_request_starts(tmp_path: Path) -> None:
    c = Conn(CLIENT, 40000).handshake(0).c2s(0.01, "PA", PARTIAL % 1).c2s(0.02, "PA", b"X-a: 1\r\n")
    c.c2s(0.03, "PA", get(1))
    b, _, _ = run(write(tmp_path, "d.pcap", c.pkts))
    assert b.http_req.tolist() == [0, 0, 0, HTTP_REQ_PARTIAL, 0, HTTP_REQ_COMPLETE]


def test_slowloris_is_flagged(tmp_path: Path) -> None:
    pkts = slowloris()
    # the same client's other traffic, and another client of the same server, are not the attack
    pkts += Conn(CLIENT, 50000, server=OTHER).handshake(5).c2s(5.01, "PA", get(1)).s2c(5.02, "PA", OK).close(5.03).pkts
    pkts += Conn(OTHER, 51000).handshake(30).c2s(30.01, "PA", get(2)).s2c(30.02, "PA", OK).close(30.03).pkts
    b, fc, findings = run(write(tmp_path, "slowloris.pcap", pkts))
    attack = ((b.sport >= 40000) & (b.sport < 40060)) | ((b.dport >= 40000) & (b.dport < 40060))
    share = float((fc[attack] == C["DDoS-SlowLoris"]).mean())
    assert attack.sum() >= 50 * 10 and share >= 0.95, share
    assert (fc[~attack] == -1).all()
    f = [f for f in findings if f.detector == "slowhttp"]
    assert len(f) == 1 and f[0].attacker == CLIENT and f[0].victim == SERVER and f[0].cls == "DDoS-SlowLoris"
    assert "headers never finished" in f[0].evidence and f"{SERVER}:80" in f[0].evidence
    # 60 connections are below a threshold of 80; the detector can be switched off
    _, fc2, _ = run(tmp_path / "slowloris.pcap", DetectorsConfig(slowhttp=SlowHttpDetectorConfig(connections=80)))
    assert (fc2 != C["DDoS-SlowLoris"]).all()
    ds = DetectorSet(DetectorsConfig(slowhttp=SlowHttpDetectorConfig(enabled=False)))
    assert "slowhttp" not in [d.name for d in ds.detectors]


def test_slowloris_across_small_live_batches(tmp_path: Path) -> None:
    """Live batches (about 0.1 s each): flagged from the batch in which 20 connections have waited
    10 s; the earlier batches have gone to the meter."""
    with PcapSource(write(tmp_path, "s.pcap", slowloris(n=40, duration=40.0, every=5.0))) as src:
        b = src.next_batch()
    d = SlowHttpDetector()
    flagged, rows, first = 0, 0, None
    for lo in np.arange(T0, T0 + 41, 0.1):
        part = b.take(np.flatnonzero((b.ts >= lo) & (b.ts < lo + 0.1)))
        if not len(part):
            continue
        v = np.full(len(part), -1, np.int16)
        d.process(part, v)
        k = int((v >= 0).sum())
        if k and first is None:
            first = float(part.ts[np.argmax(v >= 0)]) - T0
        flagged += k
        rows += len(part)
    assert first is not None and 10.0 <= first <= 16.0
    assert flagged >= 0.5 * rows and d.counters["slow_clients"] == 1  # keep-alive lines from 15 s on


def test_slow_post_is_flagged(tmp_path: Path) -> None:
    """R.U.D.Y. / slowhttptest -B: complete headers announcing a large body, one body byte every 10 s."""
    pkts = []
    for i in range(50):
        c = Conn(CLIENT, 42000 + i)
        t = i * 0.05
        head = (b"POST /login HTTP/1.1\r\nHost: 10.1.0.80\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100000\r\n\r\n")
        c.handshake(t).c2s(t + 0.003, "PA", head).s2c(t + 0.004, "A")
        for k in range(1, 7):
            c.c2s(t + 10 * k, "PA", b"a").s2c(t + 10 * k + 0.001, "A")
        pkts += c.pkts
    b, fc, findings = run(write(tmp_path, "slowpost.pcap", pkts))
    assert float((fc == C["DDoS-SlowLoris"]).mean()) >= 0.95
    f = next(f for f in findings if f.detector == "slowhttp")
    assert f.packets == len(b) and "0 with headers never finished" in f.evidence and "20 with complete headers" in f.evidence


def test_benign_http_is_not_slow(tmp_path: Path) -> None:
    pkts = []
    # a browser: 6 keep-alive connections, a request and its answer every 20-40 s, idle in between
    for i in range(6):
        c = Conn(CLIENT, 43000 + i).handshake(i * 0.01)
        for k in range(5):
            t = 0.1 + k * (20 + 4 * i)
            c.c2s(t, "PA", get(k)).s2c(t + 0.2, "PA", OK).c2s(t + 0.21, "A")
        pkts += c.pkts
    # a long-poll client: two requests, each held 30 s by the server before it answers
    for i in range(2):
        c = Conn(OTHER, 44000 + i).handshake(i * 0.5)
        for k in range(4):
            t = 0.1 + i * 0.5 + k * 30.5
            c.c2s(t, "PA", get(k)).s2c(t + 30.0, "PA", OK)
        pkts += c.pkts
    # many quick requests: 300 connections, each answered within 50 ms (a crawler, a script)
    for i in range(300):
        t = i * 0.2
        pkts += Conn("10.1.0.11", 45000 + i).handshake(t).c2s(t + 0.01, "PA", get(i)).s2c(
            t + 0.05, "PA", OK).close(t + 0.06).pkts
    # 30 parallel requests a slow server answers after 5 s (below min_age_s)
    for i in range(30):
        pkts += Conn("10.1.0.12", 46000 + i).handshake(70).c2s(70.01, "PA", get(i)).s2c(75, "PA", OK).close(
            75.1).pkts
    # 30 connections whose partial request is finished and answered a second later (a header split in two)
    for i in range(30):
        pkts += Conn("10.1.0.13", 47000 + i).handshake(80).c2s(80.01, "PA", PARTIAL % i).c2s(
            81, "PA", b"\r\n").s2c(81.01, "PA", OK).pkts
    b, fc, findings = run(write(tmp_path, "benign.pcap", pkts))
    assert (fc == -1).all() and not [f for f in findings if f.detector == "slowhttp"]


def test_slowhttp_state_is_bounded() -> None:
    """Request starts from 50,000 spoofed clients (no handshake, never answered): the tracked
    connections stay at the cap and the evictions are counted."""
    n = 50_000
    rng = np.random.default_rng(1)
    b = PacketBatch.empty(n)
    b.ts[:] = T0 + np.arange(n) * 1e-4
    b.ip_version[:] = 4
    b.proto[:] = 6
    b.l4_ok[:] = True
    b.src4[:] = rng.integers(1, 2**32 - 1, n, dtype=np.uint64).astype(np.uint32)
    b.dst4[:] = 0x0A010050
    b.sport[:] = rng.integers(1024, 65535, n).astype(np.uint16)
    b.dport[:] = 80
    b.tcp_flags[:] = 0x18
    b.ip_hdr_len[:] = 20
    b.l4_hdr_len[:] = 20
    b.ip_len[:] = 140
    b.http_req[:] = HTTP_REQ_PARTIAL
    d = SlowHttpDetector(SlowHttpDetectorConfig(max_connections=1000))
    for k in range(0, n, 5000):
        v = np.full(5000, -1, np.int16)
        d.process(b.take(np.arange(k, k + 5000)), v)
        assert (v == -1).all()
    assert len(d.conns) <= 1000 and d.counters["connection_evictions"] >= n - 1000
