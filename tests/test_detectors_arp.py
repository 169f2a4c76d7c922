"""The ARP spoofing detector's bindings: learned from ARP senders, ARP reply targets and the
(Ethernet source, IP source) pairs of IPv4 packets, and the unsolicited claims that contradict
them (crafted captures read through PcapSource and DetectorSet, like tests/test_detectors.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scapy.all import ARP, ICMP, IP, UDP, Ether

from ids_daemon.capture.batch import PacketBatch, mac_to_str
from ids_daemon.config import ArpDetectorConfig, DetectorsConfig
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet

GW, HOST_A, HOST_B, ATTACKER = "192.168.1.1", "192.168.1.20", "192.168.1.30", "192.168.1.66"
GW_MAC, A_MAC, B_MAC, ATT_MAC = "00:00:00:00:00:01", "00:00:00:00:00:20", "00:00:00:00:00:30", "00:00:00:00:00:66"
NEW_MAC = "00:00:00:00:00:99"
from .detect import run_with, write_sorted as write  # noqa: E402

ARP_CLS = DETECTOR_CLASSES.index("MITM-ArpSpoofing")
T0 = 1_700_000_000.0


def run(path: Path, cfg: DetectorsConfig | None = None, batch_size: int = 65536):
    ds = DetectorSet(cfg)
    return (*run_with(ds, path, batch_size), ds)


def at(p, t: float):
    p.time = T0 + t
    return p


def arp_req(t, mac, ip, target):
    return at(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=target), t)


def arp_rep(t, mac, ip, to_mac, to_ip):
    return at(Ether(src=mac, dst=to_mac) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=to_mac, pdst=to_ip), t)


def gratuitous(t, mac, ip):
    return at(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00",
                                                             pdst=ip), t)


def udp(t, mac, src, dst, to_mac="00:00:00:00:00:ff"):
    return at(Ether(src=mac, dst=to_mac) / IP(src=src, dst=dst) / UDP(sport=5000, dport=6000) / b"x", t)


def flagged_claims(b: PacketBatch, fc: np.ndarray) -> set[tuple[str, int]]:
    """(sender MAC, frame index) of every frame flagged as ARP spoofing."""
    return {(mac_to_str(b.arp_sha[i]), int(i)) for i in np.flatnonzero(fc == ARP_CLS)}


def test_two_hosts_poisoned_through_reply_targets(tmp_path: Path) -> None:
    """The attacker tells A that B's IP is at its MAC and B that A's is; A and B never send
    ARP of their own: their bindings are the replies' target fields."""
    pkts = []
    for k in range(6):
        pkts += [arp_rep(2 * k, ATT_MAC, HOST_B, A_MAC, HOST_A), arp_rep(2 * k + 0.001, ATT_MAC, HOST_A, B_MAC, HOST_B)]
    pkts += [udp(1 + 2 * k, A_MAC, HOST_A, HOST_B, ATT_MAC) for k in range(5)]  # poisoned traffic, to the attacker
    path = write(tmp_path, "two.pcap", pkts)
    for cfg in (None, DetectorsConfig(arp=ArpDetectorConfig(max_ips_per_mac=16))):  # by the binding alone too
        b, fc, findings, _ = run(path, cfg, batch_size=3)
        arp = np.flatnonzero(b.ethertype == 0x0806)
        flagged = np.flatnonzero(fc == ARP_CLS)
        assert set(mac_to_str(m) for m in b.arp_sha[flagged]) == {ATT_MAC}
        assert len(flagged) == len(arp) == 12  # the first claim too: the attacker is a spoofer by the second
        assert {f.attacker for f in findings} == {ATT_MAC}
        assert {f.victim for f in findings} - {None} == {HOST_A, HOST_B}
        assert not (fc[b.ethertype != 0x0806] >= 0).any()  # the owners' packets are never flagged
    held_by = next(f.evidence for f in findings if f.victim == HOST_B)
    assert B_MAC in held_by and "ARP target" in held_by


def test_binding_from_ip_packets_contradicted_by_an_unsolicited_reply(tmp_path: Path) -> None:
    pkts = [udp(0.1 * i, B_MAC, HOST_B, "192.168.1.200") for i in range(20)]  # B sources only its own IP
    pkts += [arp_rep(3 + 2 * k, ATT_MAC, HOST_B, A_MAC, HOST_A) for k in range(5)]  # one IP: not the multi-IP rule
    path = write(tmp_path, "ip.pcap", pkts)
    b, fc, findings, _ = run(path)
    flagged = np.flatnonzero(fc == ARP_CLS)
    assert len(flagged) == 5 and {mac_to_str(m) for m in b.arp_sha[flagged]} == {ATT_MAC}
    assert [(f.attacker, f.victim) for f in findings] == [(ATT_MAC, HOST_B)]
    assert B_MAC in findings[0].evidence and "IP source" in findings[0].evidence
    _, fc, findings, _ = run(path, DetectorsConfig(arp=ArpDetectorConfig(learn_from_ip=False)))
    assert not (fc >= 0).any() and not findings  # the IP packets were the only evidence


def test_router_sourcing_many_ips_holds_none_of_them(tmp_path: Path) -> None:
    """A router (or a relay) sources many IPs from one MAC, among them B's (it routes B's
    packets in from elsewhere); none is its binding: B's and the router's own gratuitous
    announcements and replies are not flagged."""
    pkts = [udp(0.5 * i, GW_MAC, f"10.9.0.{i + 1}", HOST_A, A_MAC) for i in range(40)]  # routed in
    pkts += [udp(20.25 + 0.5 * i, GW_MAC, HOST_B, HOST_A, A_MAC) for i in range(10)]
    pkts += [gratuitous(30, GW_MAC, GW), gratuitous(31, B_MAC, HOST_B)]
    pkts += [arp_rep(32, GW_MAC, GW, A_MAC, HOST_A)]  # unsolicited, for its own IP
    pkts += [arp_req(33, A_MAC, HOST_A, GW), arp_rep(33.001, GW_MAC, GW, A_MAC, HOST_A)]
    b, fc, findings, ds = run(write(tmp_path, "router.pcap", pkts))
    assert not (fc >= 0).any() and not findings
    arp = next(d for d in ds.detectors if d.name == "arp")
    assert arp.sources.holder(int.from_bytes(bytes(map(int, HOST_B.split("."))), "big"), T0 + 31) is None
    # the same announcement of B's IP is spoofing when a MAC that sources only B's IP holds it
    pkts += [udp(25 + 0.5 * i, NEW_MAC, HOST_B, HOST_A, A_MAC) for i in range(10)]
    _, fc, findings, _ = run(write(tmp_path, "router2.pcap", pkts))
    assert [(f.attacker, f.victim) for f in findings] == [(B_MAC, HOST_B)]


def test_host_changing_mac_after_hold_s_is_not_spoofing(tmp_path: Path) -> None:
    pkts = [udp(i, A_MAC, HOST_A, GW, GW_MAC) for i in range(10)]
    pkts += [arp_req(20, GW_MAC, GW, HOST_A), arp_rep(20.001, A_MAC, HOST_A, GW_MAC, GW)]
    pkts += [arp_rep(25, GW_MAC, GW, A_MAC, HOST_A)]  # A's binding in a reply's target too
    later = 25 + 301  # hold_s (300 s) after the last word of the old MAC
    pkts += [gratuitous(later, NEW_MAC, HOST_A), arp_rep(later + 1, NEW_MAC, HOST_A, GW_MAC, GW)]
    pkts += [udp(later + 2 + i, NEW_MAC, HOST_A, GW, GW_MAC) for i in range(5)]
    path = write(tmp_path, "renumber.pcap", pkts)
    b, fc, findings, _ = run(path)
    assert not (fc >= 0).any() and not findings
    # within hold_s the same move is a conflict, and the unsolicited claimant is named
    pkts = [p for p in pkts if p.time < T0 + later] + [gratuitous(100, NEW_MAC, HOST_A)]
    _, fc, findings, _ = run(write(tmp_path, "soon.pcap", pkts))
    assert {f.attacker for f in findings} == {NEW_MAC}


def test_solicited_reply_is_not_spoofing(tmp_path: Path) -> None:
    """B's IP is held by B's IP packets and a reply's target; a MAC that answers a request
    for it (proxy ARP, a second interface) is not an unsolicited claimant."""
    pkts = [udp(0.1 * i, B_MAC, HOST_B, GW, GW_MAC) for i in range(10)]
    pkts += [arp_rep(2, GW_MAC, GW, B_MAC, HOST_B)]
    pkts += [arp_req(3 + k, A_MAC, HOST_A, HOST_B) for k in range(3)]
    pkts += [arp_rep(3.001 + k, NEW_MAC, HOST_B, A_MAC, HOST_A) for k in range(3)]
    b, fc, findings, ds = run(write(tmp_path, "solicited.pcap", pkts))
    assert not (fc >= 0).any() and not findings
    assert next(d for d in ds.detectors if d.name == "arp").counters["conflicts"] >= 3  # it was seen
    # the same replies unasked are spoofing
    pkts = [p for p in pkts if not (p.haslayer(ARP) and p[ARP].op == 1)]
    _, fc, findings, _ = run(write(tmp_path, "unasked.pcap", pkts))
    assert [(f.attacker, f.victim) for f in findings] == [(NEW_MAC, HOST_B)]


def test_gratuitous_announcements_of_own_addresses(tmp_path: Path) -> None:
    """A host announcing its own (several) addresses is not spoofing, though its announcements
    are unsolicited; unsolicited replies about two hosts' addresses are."""
    pkts = [udp(0.1 * i, A_MAC, HOST_A, GW, GW_MAC) for i in range(10)]
    pkts += [gratuitous(2 + k, A_MAC, HOST_A) for k in range(3)]
    pkts += [gratuitous(6 + k, A_MAC, f"192.168.1.{21 + k}") for k in range(3)]  # aliases
    pkts += [at(Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=A_MAC, psrc=HOST_A,
                                                                  hwdst="ff:ff:ff:ff:ff:ff", pdst=HOST_A), 10)]
    b, fc, findings, _ = run(write(tmp_path, "grat.pcap", pkts))
    assert not (fc >= 0).any() and not findings
    pkts += [arp_rep(12, A_MAC, GW, B_MAC, HOST_B), arp_rep(13, A_MAC, HOST_B, GW_MAC, GW)]
    _, fc, findings, _ = run(write(tmp_path, "grat2.pcap", pkts))
    assert {(f.attacker, f.victim) for f in findings} - {(A_MAC, None)} == {(A_MAC, GW), (A_MAC, HOST_B)}
    assert "2 IPs in unsolicited replies" in " ".join(f.evidence for f in findings)


def test_ip_source_table_is_bounded_and_vectorised() -> None:
    """A flood from random MACs and IPs: the table stays at max_hosts, evictions counted."""
    rng = np.random.default_rng(1)
    ds = DetectorSet(DetectorsConfig(arp=ArpDetectorConfig(max_hosts=1000)))
    arp = next(d for d in ds.detectors if d.name == "arp")
    for k in range(3):
        n = 50_000
        b = PacketBatch.empty(n)
        b.ts[:] = T0 + k + np.arange(n) / n
        b.ethertype[:] = 0x0800
        b.ip_version[:] = 4
        b.src4[:] = rng.integers(0x0A000001, 0x0AFFFFFF, n, dtype=np.uint64).astype(np.uint32)
        b.eth_src[:] = rng.integers(1, 1 << 40, n, dtype=np.uint64)  # unicast (the group bit, 1 << 40, clear)
        ds.process(b)
    assert len(arp.sources) <= 1000 and arp.counters["source_evictions"] >= 140_000


def test_arp_state_is_bounded_and_evictions_counted() -> None:
    """Requests, bindings, claimants and spoofers stay at max_hosts under a stream of distinct
    claims; every entry pushed out is counted (one per distinct key beyond the cap)."""
    cap, n = 16, 40
    ds = DetectorSet(DetectorsConfig(arp=ArpDetectorConfig(max_hosts=cap, learn_from_ip=False)))
    arp = next(d for d in ds.detectors if d.name == "arp")

    def arp_batch(t0: float, op: int, spa: np.ndarray, tpa: np.ndarray, sha: np.ndarray, tha: np.ndarray) -> PacketBatch:
        b = PacketBatch.empty(spa.size)
        b.ts[:] = T0 + t0 + np.arange(spa.size) * 1e-3
        b.ethertype[:] = 0x0806
        b.arp_op[:] = op
        b.src4[:], b.dst4[:] = spa, tpa
        b.arp_sha[:], b.arp_tha[:], b.eth_src[:] = sha, tha, sha
        return b

    k = np.arange(n, dtype=np.uint64)
    # n requests, each from its own host for its own address: n requests and n bindings (the senders')
    ds.process(arp_batch(0, 1, (0x0A000100 + k).astype(np.uint32), (0x0A000200 + k).astype(np.uint32),
                         0x020000000100 + k, np.zeros(n, np.uint64)))
    assert arp.counters["request_evictions"] == n - cap and arp.counters["binding_evictions"] == n - cap
    # one MAC answering unasked for n addresses (to one target): a spoofer of each, n spoofer entries
    ds.process(arp_batch(10, 2, (0x0A000300 + k).astype(np.uint32), np.full(n, 0x0A000001, np.uint32),
                         np.full(n, 0x020000000066, np.uint64), np.full(n, 0x020000000001, np.uint64)))
    # bindings: the target's (once) and the n claimed addresses, all new
    assert arp.counters["binding_evictions"] == (n - cap) + (n + 1)
    # (each unsolicited reply marks all of the MAC's claimed IPs again: those pushed out come back,
    # pushing others out, so at least n - cap)
    assert len(arp.spoofers) == cap and arp.counters["spoofer_evictions"] >= n - cap
    # n MACs, each answering unasked once: n claimants
    ds.process(arp_batch(20, 2, (0x0A000400 + k).astype(np.uint32), np.full(n, 0x0A000001, np.uint32),
                         0x020000000400 + k, np.full(n, 0x020000000001, np.uint64)))
    assert arp.counters["claimant_evictions"] == 1 + n - cap  # (the spoofer's entry, then n - cap of theirs)
    assert arp.counters["binding_evictions"] == (n - cap) + (n + 1) + n
    assert max(len(arp.bindings), len(arp.requests), len(arp.unsolicited), len(arp.spoofers)) <= cap


def redirect(t, mac, src, dst, gw):
    """An ICMP host redirect from ``src`` (at ``mac``) telling ``dst`` to reach 8.8.8.8 through ``gw``."""
    quote = IP(src=dst, dst="8.8.8.8") / UDP(sport=40000, dport=53)
    return at(Ether(src=mac, dst="00:00:00:00:00:ff") / IP(src=src, dst=dst) / ICMP(type=5, code=1, gw=gw)
              / bytes(quote)[:28], t)


def test_a_spoofers_icmp_redirects_are_its_own(tmp_path: Path) -> None:
    """A man in the middle's kernel forwards what it poisoned its victims into sending it and tells
    them of a better first hop: its redirects are flagged with the spoofing while it is held a
    spoofer (in batches without ARP too), the gateway's are not, nor the spoofer's after hold_s."""
    pkts = []
    for k in range(6):
        pkts += [arp_rep(2 * k, ATT_MAC, GW, A_MAC, HOST_A), arp_rep(2 * k + 0.001, ATT_MAC, HOST_A, GW_MAC, GW)]
    mine = [redirect(13 + k, ATT_MAC, ATTACKER, HOST_A, GW) for k in range(4)]
    gws = [redirect(13.5 + k, GW_MAC, GW, HOST_B, "192.168.1.2") for k in range(3)]
    later = [redirect(400 + k, ATT_MAC, ATTACKER, HOST_A, GW) for k in range(2)]  # hold_s (300 s) after its last claim
    path = write(tmp_path, "mitm.pcap", pkts + mine + gws + later)
    for bs in (3, 65536):
        b, fc, findings, ds = run(path, batch_size=bs)
        icmp = np.flatnonzero((b.proto == 1) & (b.ip_version == 4))
        from_att = icmp[b.eth_src[icmp] == b.eth_src[np.flatnonzero(b.ethertype == 0x0806)[0]]]
        assert (fc[from_att[:4]] == ARP_CLS).all()  # the four while it is held
        assert not (fc[from_att[4:]] >= 0).any()  # not after
        assert not (fc[np.setdiff1d(icmp, from_att)] >= 0).any()  # the gateway's redirects
        red = [f for f in findings if f.protocol == "icmp"]
        assert red and {f.attacker for f in red} == {ATT_MAC} and sum(f.packets for f in red) == 4
        assert {f.victim for f in red} == {HOST_A} and "ICMP redirects" in red[0].evidence and GW in red[0].evidence
        assert ds.counters["arp"]["redirects"] == 4


@pytest.mark.shared_data("real")
def test_a_real_dns_spoofers_redirects() -> None:
    """The corpus's ARP-poisoning DNS spoofer (Linux, forwarding) sends its victim and the gateway
    34 ICMP redirects while it poisons them: all flagged with it, and no other ICMP."""
    from .paths import REAL

    path = REAL / "attack/DNS_Spoofing/shrutikulkar_ADF-Project__dns_spoofing.pcap"
    b, fc, findings, _ = run(path)
    icmp = (b.proto == 1) & (b.ip_version == 4)
    red = icmp & (b.icmp_type == 5)
    assert red.sum() == 34
    assert (fc[red] == ARP_CLS).all()
    assert not (fc[icmp & ~red] >= 0).any()
