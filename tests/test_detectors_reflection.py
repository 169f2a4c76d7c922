"""Reflection detector (`detector:reflection`): DNS (fragmented ANY answers), NTP monlist and TCP SYN-ACK
reflections are flagged; a resolver's client, a DNS server, an NTP client, SSDP discovery and a SYN flood's
backscatter are not; the state is bounded. ICMP errors about datagrams the receiver never sent (a spoofed
flood's backscatter) are flagged; errors to UDP it sent to closed ports, a traceroute's and a firewall's are
not."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
from scapy.all import (DNS, DNSQR, DNSRR, ICMP, IP, TCP, UDP, Ether, ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6,
                       Raw, fragment)

from ids_daemon.capture.batch import PacketBatch, v6_ids
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import DetectorsConfig, ReflectionDetectorConfig
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet
from ids_daemon.detectors.reflection import ReflectionDetector

C = {c: i for i, c in enumerate(DETECTOR_CLASSES)}
T0 = 1_700_000_000.0
VICTIM, CLIENT, RESOLVER = "192.168.1.20", "192.168.1.30", "8.8.8.8"
REFLECTION_CLASSES = [C["DDoS-UDP_Flood"], C["DDoS-UDP_Fragmentation"], C["DDoS-SYN_Flood"]]


def at(p, t: float):
    p.time = T0 + t
    return p


def run(path: Path, cfg: DetectorsConfig | None = None, only: ReflectionDetectorConfig | None = None
        ) -> tuple[PacketBatch, np.ndarray, list]:
    """The whole detector set, or (``only``) the reflection detector alone."""
    ds = DetectorSet(cfg) if only is None else None
    det = ReflectionDetector(only) if only is not None else None
    batches, classes, findings = [], [], []
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            if ds is not None:
                r = ds.process(b)
                fc, fs = r.frame_class, r.findings
            else:
                fc = np.full(len(b), -1, np.int16)
                fs = det.process(b, fc)
            batches.append(b)
            classes.append(fc)
            findings += fs
    return PacketBatch.concat(batches), np.concatenate(classes), findings


from .detect import write_sorted as write  # noqa: E402


def lookup(t: float, k: int, client: str = VICTIM, server: str = RESOLVER) -> list:
    q = Ether() / IP(src=client, dst=server) / UDP(sport=33000 + k, dport=53) / DNS(id=k, rd=1, qd=DNSQR(
        qname=f"host{k}.example.com"))
    r = Ether() / IP(src=server, dst=client) / UDP(sport=53, dport=33000 + k) / DNS(
        id=k, qr=1, rd=1, ra=1, qd=DNSQR(qname=f"host{k}.example.com"),
        an=DNSRR(rrname=f"host{k}.example.com", rdata="93.184.216.34"))
    return [at(q, t), at(r, t + 0.02)]


def test_dns_reflection_with_fragments_is_flagged(tmp_path: Path) -> None:
    """ANY answers from 20 open resolvers, 2000 in 2 s, every other one 3,000 bytes (3 IPv4 fragments);
    the victim's own lookups during the attack are answers it asked for."""
    resolvers = [f"203.0.113.{i + 1}" for i in range(20)]
    pkts = []
    for i in range(2000):
        big = i % 2 == 0
        ans = IP(src=resolvers[i % 20], dst=VICTIM, id=i) / UDP(sport=53, dport=80) / DNS(
            id=i & 0xFFFF, qr=1, qd=DNSQR(qname="isc.org", qtype=255),
            an=DNSRR(rrname="isc.org", rdata="149.20.1.66"))
        if big:  # the rest of a 3,000-byte ANY answer
            ans = ans / Raw(b"\x00" * 3000)
        for p in (fragment(ans, fragsize=1400) if big else [ans]):
            pkts.append(at(Ether() / p, 1 + i * 0.001))
    for k in range(20):
        pkts += lookup(0.5 + k * 0.1, k)
    b, fc, findings = run(write(tmp_path, "dns_refl.pcap", pkts))
    attack = np.isin(b.src4, [int.from_bytes(bytes(map(int, r.split("."))), "big") for r in resolvers])
    frags = attack & (b.frag_offset > 0)
    assert frags.sum() == 2000 and attack.sum() == 4000
    share = float(np.isin(fc[attack], REFLECTION_CLASSES).mean())
    assert share >= 0.95, share
    assert (fc[frags] == C["DDoS-UDP_Fragmentation"]).mean() >= 0.95
    assert (fc[attack & (b.frag_offset == 0) & ~b.frag_mf] == C["DDoS-UDP_Flood"]).mean() >= 0.95
    assert (fc[~attack] == -1).all()  # the victim's lookups and their answers
    refl = [f for f in findings if f.detector == "reflection"]
    assert {f.victim for f in refl} == {VICTIM} and all(f.attacker == "" for f in refl)
    assert {f.cls for f in refl} == {"DDoS-UDP_Flood", "DDoS-UDP_Fragmentation"}
    assert all("20 reflectors" in f.evidence and "DNS" in f.evidence for f in refl)


def test_ntp_monlist_reflection(tmp_path: Path) -> None:
    """monlist (mode 7) answers: 100 datagrams of 468 bytes per spoofed request, from 5 NTP servers."""
    pkts = []
    for s in range(5):
        for k in range(100):
            pkts.append(at(Ether() / IP(src=f"198.51.100.{s + 1}", dst=VICTIM) / UDP(sport=123, dport=57123)
                           / Raw(b"\xd7\x00\x03\x2a" + b"\x00" * 464), 2 + s * 0.01 + k * 0.02))
    b, fc, findings = run(write(tmp_path, "ntp.pcap", pkts))
    assert (fc == C["DDoS-UDP_Flood"]).mean() >= 0.95
    f = next(f for f in findings if f.detector == "reflection")
    assert "NTP" in f.evidence and "5 reflectors" in f.evidence and f.victim == VICTIM


def test_syn_ack_reflection(tmp_path: Path) -> None:
    """SYNs spoofed with the victim's address to 50 web servers: each answers with a SYN-ACK and
    retransmits it 3 times (1, 3, 7 s); the victim sent no SYN and resets them."""
    pkts = []
    for s in range(50):
        srv = f"198.18.{s // 200}.{s % 200 + 1}"
        for k, d in enumerate((0, 1, 3, 7)):
            t = 1 + s * 0.02 + d
            pkts.append(at(Ether() / IP(src=srv, dst=VICTIM) / TCP(sport=443, dport=20000 + s, flags="SA"), t))
            if k == 0:
                pkts.append(at(Ether() / IP(src=VICTIM, dst=srv) / TCP(sport=20000 + s, dport=443, flags="R"),
                               t + 0.001))
    # the victim's own connection during the attack: its SYN-ACK is solicited
    pkts.append(at(Ether() / IP(src=VICTIM, dst="198.18.9.9") / TCP(sport=30000, dport=443, flags="S"), 2))
    pkts.append(at(Ether() / IP(src="198.18.9.9", dst=VICTIM) / TCP(sport=443, dport=30000, flags="SA"), 2.05))
    b, fc, findings = run(write(tmp_path, "synack.pcap", pkts))
    sa = (b.tcp_flags == 0x12) & (b.dst4 == 0xC0A80114) & (b.src4 != 0xC6120909)
    assert sa.sum() == 200 and (fc[sa] == C["DDoS-SYN_Flood"]).mean() >= 0.95
    assert (fc[~sa] == -1).all()
    f = next(f for f in findings if f.detector == "reflection")
    assert "TCP SYN-ACK" in f.evidence and "50 reflectors" in f.evidence


def test_benign_answers_are_solicited(tmp_path: Path) -> None:
    """With a threshold of 5 unsolicited answers: none of these exchanges reaches it."""
    pkts = []
    for k in range(300):  # a resolver's client: 300 lookups in 10 s
        pkts += lookup(k / 30, k, client=CLIENT)
    for c in range(50):  # a DNS server answering 50 clients
        pkts += lookup(11 + c * 0.01, 1000 + c, client=f"10.0.{c // 200}.{c % 200 + 1}", server="192.168.1.53")
    for s in range(4):  # an NTP client (port 123 both ways) polling 4 servers
        for k in range(10):
            t = 12 + s * 0.1 + k * 2
            pkts.append(at(Ether() / IP(src=CLIENT, dst=f"162.159.200.{s + 1}") / UDP(sport=123, dport=123)
                           / Raw(b"\x23" + b"\x00" * 47), t))
            pkts.append(at(Ether() / IP(src=f"162.159.200.{s + 1}", dst=CLIENT) / UDP(sport=123, dport=123)
                           / Raw(b"\x24" + b"\x00" * 47), t + 0.03))
    # SSDP discovery: one M-SEARCH to the multicast group, 30 devices answer by unicast, and NOTIFYs
    pkts.append(at(Ether() / IP(src=CLIENT, dst="239.255.255.250") / UDP(sport=50000, dport=1900)
                   / Raw(b"M-SEARCH * HTTP/1.1\r\n\r\n"), 40))
    for d in range(30):
        pkts.append(at(Ether() / IP(src=f"192.168.1.{100 + d}", dst=CLIENT) / UDP(sport=1900, dport=50000)
                       / Raw(b"HTTP/1.1 200 OK\r\n\r\n"), 40.1 + d * 0.01))
        pkts.append(at(Ether() / IP(src=f"192.168.1.{100 + d}", dst="239.255.255.250") / UDP(sport=1900, dport=1900)
                       / Raw(b"NOTIFY * HTTP/1.1\r\n\r\n"), 41 + d * 0.01))
    # a browser: 100 connections, each SYN answered by a SYN-ACK
    for k in range(100):
        pkts.append(at(Ether() / IP(src=CLIENT, dst=f"93.184.{k // 200}.{k % 200 + 1}")
                       / TCP(sport=40000 + k, dport=443, flags="S"), 50 + k * 0.05))
        pkts.append(at(Ether() / IP(src=f"93.184.{k // 200}.{k % 200 + 1}", dst=CLIENT)
                       / TCP(sport=443, dport=40000 + k, flags="SA"), 50.03 + k * 0.05))
    b, fc, findings = run(write(tmp_path, "benign.pcap", pkts), only=ReflectionDetectorConfig(answers=5))
    assert (fc == -1).all() and not findings
    b, fc, findings = run(tmp_path / "benign.pcap")
    assert (fc == -1).all() and not findings


def test_syn_flood_backscatter_is_not_reflection(tmp_path: Path) -> None:
    """A SYN flood from 400 spoofed addresses: the flooded host's 1-3 SYN-ACKs to each (seen with the SYNs,
    or alone, as a network owning the spoofed addresses sees them) are no reflection on any of them."""
    rng = np.random.default_rng(7)
    spoofed = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(1, 224, (400, 4)).tolist()]
    with_syns, alone = [], []
    for i, s in enumerate(spoofed):
        t = 1 + i * 0.005
        with_syns.append(at(Ether() / IP(src=s, dst=VICTIM) / TCP(sport=1024 + i, dport=80, flags="S"), t))
        for k in range(1 + i % 3):
            sa = at(Ether() / IP(src=VICTIM, dst=s) / TCP(sport=80, dport=1024 + i, flags="SA"), t + 0.001 + k)
            with_syns.append(sa)
            alone.append(sa.copy())
    for name, pkts in (("with_syns.pcap", with_syns), ("alone.pcap", alone)):
        _, fc, findings = run(write(tmp_path, name, pkts), only=ReflectionDetectorConfig())
        assert (fc == -1).all() and not findings, name


def test_reflection_counted_across_small_batches_and_bounded(tmp_path: Path) -> None:
    """Live batches of 50 ms: flagged from the batch of the 100th unsolicited answer on; queries from 100,000
    spoofed sources keep the query table at its size, the overwrites counted."""
    pkts = [at(Ether() / IP(src=f"203.0.113.{i % 20 + 1}", dst=VICTIM) / UDP(sport=53, dport=80)
               / DNS(id=i, qr=1, qd=DNSQR(qname="isc.org", qtype=255)), i * 0.01) for i in range(500)]
    with PcapSource(write(tmp_path, "slow.pcap", pkts)) as src:
        b = src.next_batch()
    d = ReflectionDetector(ReflectionDetectorConfig(max_queries=1024, max_victims=64))
    flagged = 0
    for lo in range(0, 500, 5):
        part = b.take(np.arange(lo, lo + 5))
        v = np.full(5, -1, np.int16)
        d.process(part, v)
        flagged += int((v >= 0).sum())
    assert flagged == 405 and d.counters["reflections"] == 1  # the batch of the 100th answer and all after
    n = 100_000
    q = dns_queries_from_everywhere(n)
    v = np.full(n, -1, np.int16)
    d.process(q, v)
    assert d.qkeys.size == 1024 and d.counters["query_evictions"] >= n - 1024 and len(d.held) <= 64


def rng_addrs(n: int) -> np.ndarray:
    return np.random.default_rng(9).integers(1, 2**32 - 1, n, dtype=np.uint64).astype(np.uint32)


def dns_queries_from_everywhere(n: int, reverse_dst: bool = False) -> PacketBatch:
    """``n`` DNS queries 10 µs apart, each between random addresses (a spoofed flood's state load)."""
    q = PacketBatch.empty(n)
    q.ts[:] = T0 + 10 + np.arange(n) * 1e-5
    q.ip_version[:] = 4
    q.proto[:] = 17
    q.l4_ok[:] = True
    q.src4[:] = rng_addrs(n)
    q.dst4[:] = rng_addrs(n)[::-1] if reverse_dst else rng_addrs(n)
    q.sport[:] = 40000
    q.dport[:] = 53
    return q


# ---- ICMP errors: backscatter -------------------------------------------------------------------------
def unreachable(src: str, victim: str, dst: str, sport: int, dport: int, t: float, code: int = 3):
    """A destination unreachable from ``src`` to ``victim`` quoting a UDP datagram victim -> dst."""
    return at(Ether() / IP(src=src, dst=victim) / ICMP(type=3, code=code)
              / IP(src=victim, dst=dst, ttl=50) / UDP(sport=sport, dport=dport) / Raw(b"\x00" * 12), t)


def test_icmp_quote_is_decoded(tmp_path: Path) -> None:
    """The quoted header's addresses, protocol and ports (IPv4 and IPv6); a quote cut short and an echo
    reply leave them 0."""
    pkts = [unreachable("198.51.100.1", VICTIM, "203.0.113.9", 4000, 53, 1),
            at(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::20") / ICMPv6PacketTooBig(mtu=1280)
               / IPv6(src="2001:db8::20", dst="2001:db8::99") / TCP(sport=443, dport=50000), 2),
            at(Ether() / IP(src="198.51.100.1", dst=VICTIM) / ICMP(type=11) / Raw(bytes(IP(src=VICTIM))[:12]), 3),
            at(Ether() / IP(src="198.51.100.1", dst=VICTIM) / ICMP(type=0), 4)]
    with PcapSource(write(tmp_path, "quote.pcap", pkts)) as src:
        b = src.next_batch()
    assert b.icmp_in_src[0] == 0xC0A80114 and b.icmp_in_dst[0] == 0xCB007109
    assert (b.icmp_in_proto[0], b.icmp_in_sport[0], b.icmp_in_dport[0]) == (17, 4000, 53)
    assert b.icmp_in_src[1] == v6_ids(np.frombuffer(socket.inet_pton(socket.AF_INET6, "2001:db8::20"), np.uint8)[None])[0]
    assert (b.icmp_in_proto[1], b.icmp_in_sport[1], b.icmp_in_dport[1]) == (6, 443, 50000)
    assert (b.icmp_in_src[2:] == 0).all() and (b.icmp_in_dst[2:] == 0).all() and (b.icmp_in_proto[2:] == 0).all()


def test_backscatter_is_flagged(tmp_path: Path) -> None:
    """A flood spoofing the victim's address towards random hosts: 300 unreachables (port, host, admin
    prohibited) and time-exceeded from 150 of them within 1.5 s come back to it, and 40 ICMPv6 errors to an
    IPv6 victim, and 30 about TCP to a victim whose address an anonymiser rewrote outside the quotes (DDoS-TCP_Flood);
    the victim's own lookups meanwhile are answered, not flagged."""
    rng = np.random.default_rng(3)
    targets = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(1, 224, (150, 4)).tolist()]
    pkts = []
    for i in range(300):
        t = targets[i % 150]
        if i % 7 == 0:
            pkts.append(at(Ether() / IP(src=t, dst=VICTIM) / ICMP(type=11) / IP(src=VICTIM, dst=t, ttl=1)
                           / UDP(sport=1024 + i, dport=80), 1 + i * 0.005))
        else:
            pkts.append(unreachable(t, VICTIM, t, 1024 + i, 80, 1 + i * 0.005, code=(3, 1, 13)[i % 3]))
    v6 = "2001:db8::20"
    for i in range(40):
        r = f"2001:db8:{i + 1:x}::1"
        pkts.append(at(Ether() / IPv6(src=r, dst=v6) / ICMPv6DestUnreach(code=4)
                       / IPv6(src=v6, dst=r) / UDP(sport=2000 + i, dport=123), 1 + i * 0.01))
    anon = "192.168.1.77"  # an anonymised capture: the outer addresses rewritten, the quotes (of TCP) not
    for i in range(30):
        pkts.append(at(Ether() / IP(src=f"100.64.{i}.1", dst=anon) / ICMP(type=3, code=1)
                       / IP(src="10.0.0.5", dst=f"100.65.{i}.9") / TCP(sport=3000 + i, dport=443), 2 + i * 0.01))
    for k in range(10):
        pkts += lookup(0.5 + k * 0.1, k)
    b, fc, findings = run(write(tmp_path, "backscatter.pcap", pkts))
    err = (b.proto == 1) & (b.dst4 == 0xC0A80114)
    err6 = (b.ip_version == 6) & (b.proto == 58)
    tcp_err = (b.proto == 1) & (b.dst4 == 0xC0A8014D)
    assert err.sum() == 300 and err6.sum() == 40 and tcp_err.sum() == 30
    assert (fc[tcp_err] == C["DDoS-TCP_Flood"]).all()
    # flagged from the bucket's first error (the same batch)
    assert (fc[err] == C["DDoS-UDP_Flood"]).all() and (fc[err6] == C["DDoS-UDP_Flood"]).all()
    assert (fc[~err & ~err6 & ~tcp_err] == -1).all()
    bs = [f for f in findings if f.detector == "reflection" and f.protocol == "icmp"]
    assert {f.victim for f in bs} == {VICTIM, v6, anon} and all(f.attacker == "" for f in bs)
    assert any("from 150 sources" in f.evidence and "UDP datagrams it never sent" in f.evidence for f in bs)
    assert sum(f.packets for f in bs) == 370


def test_errors_to_datagrams_sent_are_not_backscatter(tmp_path: Path) -> None:
    """With a threshold of 2 sources: a host that sent UDP to closed ports on 60 hosts and gets their port
    unreachables; a UDP traceroute (30 hops x 3 probes, time exceeded from 29 routers, port unreachable from
    the target), an ICMP-echo one, and one whose quotes kept the addresses an anonymiser rewrote outside; TCP
    connections refused by a firewall's admin-prohibited."""
    pkts = []
    for h in range(60):  # UDP to closed ports (a game client, a failed DNS server list): answered by errors
        dst = f"10.1.{h // 200}.{h % 200 + 1}"
        t = 1 + h * 0.02
        pkts.append(at(Ether() / IP(src=CLIENT, dst=dst) / UDP(sport=5000 + h, dport=9999) / Raw(b"x" * 20), t))
        pkts.append(unreachable(dst, CLIENT, dst, 5000 + h, 9999, t + 0.001))
    target = "93.184.216.34"
    for hop in range(1, 31):  # traceroute -U: probes to 33434+ with rising TTL
        for k in range(3):
            t = 5 + hop * 0.1 + k * 0.02
            dport = 33434 + (hop - 1) * 3 + k
            probe = IP(src=CLIENT, dst=target, ttl=hop) / UDP(sport=44444, dport=dport)
            pkts.append(at(Ether() / probe, t))
            router = target if hop == 30 else f"172.16.{hop}.1"
            err = ICMP(type=3, code=3) if hop == 30 else ICMP(type=11, code=0)
            pkts.append(at(Ether() / IP(src=router, dst=CLIENT) / err / IP(bytes(probe))[IP], t + 0.01))
    for hop in range(1, 21):  # traceroute -I: echo requests
        t = 10 + hop * 0.1
        probe = IP(src=VICTIM, dst=target, ttl=hop) / ICMP(type=8, id=7, seq=hop)
        pkts.append(at(Ether() / probe, t))
        pkts.append(at(Ether() / IP(src=f"172.17.{hop}.1", dst=VICTIM) / ICMP(type=11) / IP(bytes(probe))[IP],
                       t + 0.01))
    for hop in range(1, 21):  # a traceroute in an anonymised capture: outer addresses rewritten, the quotes not
        t = 15 + hop * 0.1
        probe = IP(src="10.99.0.1", dst="8.8.4.4", ttl=hop) / UDP(sport=45000, dport=33434 + hop)
        pkts.append(at(Ether() / IP(src="192.168.1.40", dst=target, ttl=hop) / probe[UDP], t))
        pkts.append(at(Ether() / IP(src=f"172.18.{hop}.1", dst="192.168.1.40") / ICMP(type=11) / IP(bytes(probe))[IP],
                       t + 0.01))
    for k in range(5):  # SYNs refused by a firewall
        syn = IP(src=CLIENT, dst="198.51.100.77") / TCP(sport=41000 + k, dport=8443, flags="S")
        pkts.append(at(Ether() / syn, 20 + k))
        pkts.append(at(Ether() / IP(src="198.51.100.1", dst=CLIENT) / ICMP(type=3, code=13) / IP(bytes(syn))[IP],
                       20.01 + k))
    path = write(tmp_path, "solicited.pcap", pkts)
    b, fc, findings = run(path, only=ReflectionDetectorConfig(icmp_sources=2))
    assert ((b.icmp_in_src != 0).sum()) == 60 + 90 + 20 + 20 + 5  # the quotes decoded: the test tests something
    assert (fc == -1).all() and not findings
    b, fc, findings = run(path)  # (the scan detector may name the refused SYNs: not the reflection detector's)
    assert not [f for f in findings if f.detector == "reflection"]
    assert not np.isin(fc, REFLECTION_CLASSES + [C["DDoS-TCP_Flood"], C["DDoS-ICMP_Flood"]]).any()


def test_backscatter_state_is_bounded(tmp_path: Path) -> None:
    """100,000 datagrams from spoofed sources keep the sent record at its size (overwrites counted); errors
    to 5,000 distinct victims keep the per-host tables at max_victims (evictions counted)."""
    d = ReflectionDetector(ReflectionDetectorConfig(max_sent=1024, max_victims=64, icmp_sources=2))
    n = 100_000
    q = dns_queries_from_everywhere(n, reverse_dst=True)
    d.process(q, np.full(n, -1, np.int16))
    assert d._sent.shape[0] == 1024 and d.counters["sent_evictions"] >= n - 1024
    m = 10_000
    e = PacketBatch.empty(m)
    e.ts[:] = T0 + 12 + np.arange(m) * 1e-4
    e.ip_version[:] = 4
    e.proto[:] = 1
    e.l4_ok[:] = True
    e.icmp_type[:] = 3
    victims = rng_addrs(5000)
    e.dst4[:] = np.repeat(victims, 2)
    e.src4[:] = np.arange(m, dtype=np.uint32) + 1  # two sources per victim: each crosses icmp_sources=2
    e.icmp_in_src[:] = e.dst4
    e.icmp_in_dst[:] = e.src4
    e.icmp_in_proto[:] = 17
    v = np.full(m, -1, np.int16)
    d.process(e, v)
    assert len(d.icmp_counts) <= 64 and len(d.icmp_held) <= 64
    assert d.counters["icmp_victim_evictions"] >= 5000 - 64 and d.counters["backscatter"] == 5000
    assert (v == C["DDoS-UDP_Flood"]).sum() >= 64
