"""Every one of the 46 CICIoT2023 columns, pinned on hand-built packets.

The focused tests assert hand-computed values and run against both the plain
reference extractor (tests/reference_extractor.py, the oracle) and the fast
meter in key_mode="capture", which must reproduce the released extractor
exactly. The property tests compare the meter with the reference on random
mixed captures, per packet and per window.
"""

from __future__ import annotations

import importlib.util
import math
import random
import statistics

import numpy as np
import pytest

pytest.importorskip("scapy")

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether, LLC  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

from ids_daemon.capture.pcap import PcapSource  # noqa: E402
from ids_daemon.config import MeterConfig  # noqa: E402
from ids_daemon.features.ciciot import COLUMNS, INDEX  # noqa: E402

try:  # tests/ is a rootdir-less test folder today; keep working if it becomes a package
    from reference_extractor import reference_rows, reference_windows  # noqa: E402
except ImportError:  # pragma: no cover
    from tests.reference_extractor import reference_rows, reference_windows  # noqa: E402

HAVE_METER = importlib.util.find_spec("ids_daemon.features.meter") is not None
needs_meter = pytest.mark.skipif(not HAVE_METER, reason="ids_daemon.features.meter not written yet")

BASE = 1_700_000_000.0  # an epoch second; offsets below are multiples of 1/64 s, so exact
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


# ---------------------------------------------------------------------------------------------
# building captures
# ---------------------------------------------------------------------------------------------
def eth(vlan: int | None = None):
    e = Ether(src=MAC_A, dst=MAC_B)
    return e / Dot1Q(vlan=vlan) if vlan is not None else e


def tcp(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=80, flags="", payload=b"", ttl=64,
        vlan=None):
    return eth(vlan) / IP(src=src, dst=dst, ttl=ttl) / TCP(sport=sport, dport=dport, flags=flags) / Raw(payload)


def udp(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=53, payload=b"", ttl=64, vlan=None):
    return eth(vlan) / IP(src=src, dst=dst, ttl=ttl) / UDP(sport=sport, dport=dport) / Raw(payload)


def icmp(src="10.0.0.1", dst="10.0.0.2", payload=b"", ttl=64, type_=8):
    return eth() / IP(src=src, dst=dst, ttl=ttl) / ICMP(type=type_) / Raw(payload)


def arp(psrc="10.0.0.1", pdst="10.0.0.2", op=1):
    return Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=op, hwsrc=MAC_A, psrc=psrc, pdst=pdst)


def padded(pkt, size=60):
    """The frame as a NIC delivers it: zero-padded to ``size`` bytes."""
    raw = bytes(pkt)
    return Ether(raw + b"\x00" * max(0, size - len(raw)))


def write(tmp_path, packets, times=None, name="cap.pcap"):
    """Write ``packets`` with timestamps BASE + times[i] (default: i * 0.25 s)."""
    out = []
    for i, p in enumerate(packets):
        p = p.copy()
        p.time = BASE + (times[i] if times is not None else i * 0.25)
        out.append(p)
    path = tmp_path / name
    wrpcap(str(path), out)
    return path


# ---------------------------------------------------------------------------------------------
# running the two extractors
# ---------------------------------------------------------------------------------------------
def run_meter(path, window=10, batch_size=65536, key_mode="capture", idle_timeout=0.0, active_timeout=0.0):
    """Per-packet rows, windows (flush included) and the meter itself."""
    from ids_daemon.features.meter import Meter
    from ids_daemon.features.window import WindowBatch

    m = Meter(MeterConfig(window=window, key_mode=key_mode, idle_timeout=idle_timeout,
                          active_timeout=active_timeout), per_packet=True)
    rows, wins = [], []

    def collect(out):
        if out is None:
            return
        if getattr(out, "rows", None) is not None:
            rows.append(out.rows)
        if getattr(out, "windows", None) is not None:
            wins.append(out.windows)

    with PcapSource(path, batch_size=batch_size) as src:
        while (b := src.next_batch()) is not None:
            collect(m.process(b))
    collect(m.flush())
    return WindowBatch.concat(rows), WindowBatch.concat(wins), m


def as_dicts(matrix) -> list[dict[str, float]]:
    return [dict(zip(COLUMNS, map(float, r))) for r in matrix]


@pytest.fixture(params=["reference", pytest.param("meter", marks=needs_meter)])
def extract(request):
    """path -> list of per-packet rows as {column: value}, from the reference or the meter."""
    if request.param == "reference":
        return lambda path: as_dicts(reference_rows(path))

    def meter_rows(path):
        rows, _, _ = run_meter(path)
        assert (rows.packets == 1).all()
        return as_dicts(rows.features)

    return meter_rows


def col(rows, name):
    return [r[name] for r in rows]


INDICATORS = ("HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "DHCP")
FLAG_COLS = ("fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number",
             "ack_flag_number", "ece_flag_number", "cwr_flag_number")
COUNT_COLS = ("ack_count", "syn_count", "fin_count", "urg_count", "rst_count")


# ---------------------------------------------------------------------------------------------
# focused tests, one per quirk, hand-computed values
# ---------------------------------------------------------------------------------------------
def test_columns_are_the_46_released_ones():
    assert len(COLUMNS) == 46
    assert COLUMNS[0] == "flow_duration" and COLUMNS[-1] == "Weight"
    assert "Magnitue" in COLUMNS  # the released spelling


def test_header_length_is_cumulative_flow_bytes(tmp_path, extract):
    pkts = [
        tcp(sport=40000, dport=80, flags="S"),                           # 54, flow A
        tcp(src="10.0.0.2", dst="10.0.0.1", sport=80, dport=40000, flags="SA"),  # 54, A reversed
        udp(sport=40000, dport=80, payload=b"u" * 10),                   # 52, UDP table: own flow
        tcp(sport=40000, dport=80, flags="A", payload=b"x" * 100),       # 154, A
        tcp(src="10.0.0.3", sport=40000, dport=80, flags="S"),           # 54, flow B
        icmp(payload=b"p" * 20),                                         # no flow
        tcp(sport=40000, dport=80, flags="A", payload=b"v" * 6, vlan=7),  # 18 + 46 = 64, A
        arp(),                                                           # no flow
    ]
    times = [0, 0.25, 0.5, 1.0, 1.5, 1.75, 2.0, 2.25]
    rows = extract(write(tmp_path, pkts, times))
    assert col(rows, "Tot size") == [54, 54, 52, 154, 54, 62, 64, 42]
    assert col(rows, "Header_Length") == [54, 108, 52, 262, 54, 0, 326, 0]
    assert col(rows, "flow_duration") == [0, 0.25, 0, 1.0, 0, 0, 2.0, 0]


def test_count_columns_hold_the_extractors_index_mix_up(tmp_path, extract):
    fwd = dict(src="10.0.0.1", dst="10.0.0.2", sport=1234, dport=80)
    rev = dict(src="10.0.0.2", dst="10.0.0.1", sport=80, dport=1234)
    pkts = [
        tcp(**fwd, flags="S"),
        tcp(**fwd, flags="F"),
        tcp(**fwd, flags="R"),
        tcp(**fwd, flags="P"),
        tcp(**fwd, flags="A"),
        tcp(**fwd, flags="FA"),
        tcp(**rev, flags="R"),        # same flow, other direction
        tcp(**fwd, flags="U"),        # URG is counted nowhere
        udp(**fwd),                   # UDP: counts are 0
        tcp(src="10.0.0.9", dst="10.0.0.2", sport=1234, dport=80, flags="A"),  # another flow
        icmp(),
    ]
    rows = extract(write(tmp_path, pkts))
    #          (ack_count=FIN, syn_count=SYN, fin_count=RST, urg_count=PSH, rst_count=ACK)
    expected = [
        (0, 1, 0, 0, 0),  # S
        (1, 1, 0, 0, 0),  # F moves ack_count
        (1, 1, 1, 0, 0),  # R moves fin_count
        (1, 1, 1, 1, 0),  # P moves urg_count
        (1, 1, 1, 1, 1),  # A moves rst_count
        (2, 1, 1, 1, 2),  # FA
        (2, 1, 2, 1, 2),  # R from the other side: same flow
        (2, 1, 2, 1, 2),  # U: nothing moves
        (0, 0, 0, 0, 0),  # UDP
        (0, 0, 0, 0, 1),  # new flow
        (0, 0, 0, 0, 0),  # ICMP
    ]
    got = [tuple(r[c] for c in COUNT_COLS) for r in rows]
    assert got == expected


def test_rate_is_carried_and_srate_equals_rate_and_drate_is_zero(tmp_path, extract):
    a_fwd = dict(src="10.0.0.1", dst="10.0.0.2", sport=1000, dport=2000)
    a_rev = dict(src="10.0.0.2", dst="10.0.0.1", sport=2000, dport=1000)
    pkts = [
        icmp(),                                               # 0: Rate starts at 0
        udp(**a_fwd),                                         # 1: first of UDP A: carried 0
        udp(**a_rev),                                         # 2: A, 2 pkts / 0.5 s = 4
        icmp(),                                               # 3: carried 4
        tcp(src="10.0.0.5", dst="10.0.0.6", flags="S"),       # 4: first of TCP B: carried 4
        arp(),                                                # 5: carried 4
        udp(**a_fwd),                                         # 6: A, 3 / 2.0 = 1.5
        tcp(src="10.0.0.6", dst="10.0.0.5", sport=80, dport=40000, flags="SA"),  # 7: B, 2 / 1.0 = 2
        udp(src="10.0.0.7", dst="10.0.0.8", sport=5, dport=6),  # 8: first of UDP C: carried 2
        udp(src="10.0.0.8", dst="10.0.0.7", sport=6, dport=5),  # 9: C, same timestamp: carried 2
        tcp(**a_fwd),                                         # 10: TCP with A's endpoints: a new flow
        tcp(**a_fwd),                                         # 11: that TCP flow, 2 / 0.25 = 8
    ]
    times = [0, 1.0, 1.5, 2.0, 2.25, 2.5, 3.0, 3.25, 3.5, 3.5, 4.0, 4.25]
    rows = extract(write(tmp_path, pkts, times))
    assert col(rows, "Rate") == [0, 0, 4, 4, 4, 4, 1.5, 2, 2, 2, 2, 8]
    assert col(rows, "Srate") == col(rows, "Rate")
    assert col(rows, "Drate") == [0] * len(pkts)
    assert col(rows, "flow_duration") == [0, 0, 0.5, 0, 0, 0, 2.0, 1.0, 0, 0, 0, 0.25]
    assert col(rows, "Header_Length") == [0, 42, 84, 0, 54, 0, 126, 108, 42, 84, 54, 108]


def test_rolling_size_buffer_and_iat(tmp_path, extract):
    # A mix of kinds: the buffer is one for the whole capture. Expected frame lengths by hand:
    # UDP 42 + payload, TCP 54 + payload, ICMP 42 + payload, ARP 42 (unpadded).
    pkts, sizes = [], []
    for i in range(45):
        k = i % 4
        if k == 0:
            pkts.append(udp(payload=b"u" * (3 * i)))
            sizes.append(42 + 3 * i)
        elif k == 1:
            pkts.append(tcp(flags="A", payload=b"t" * (2 * i)))
            sizes.append(54 + 2 * i)
        elif k == 2:
            pkts.append(icmp(payload=b"i" * i))
            sizes.append(42 + i)
        else:
            pkts.append(arp())
            sizes.append(42)
    times = [i * 0.25 + (0.125 if i >= 30 else 0) for i in range(45)]
    rows = extract(write(tmp_path, pkts, times))
    assert col(rows, "Tot size") == sizes

    def check_open(k, block):  # a packet that does not reset the buffer
        r = rows[k]
        assert r["Number"] == len(block)
        assert r["Tot sum"] == sum(block)
        assert r["Min"] == min(block)
        assert r["Max"] == max(block)
        assert r["AVG"] == pytest.approx(statistics.fmean(block), rel=1e-12)
        assert r["Std"] == pytest.approx(statistics.pstdev(block), rel=1e-12, abs=1e-12)
        assert r["Magnitue"] == pytest.approx(math.sqrt(2 * statistics.fmean(block)), rel=1e-12)
        assert r["Radius"] == pytest.approx(math.sqrt(2 * statistics.pvariance(block)), rel=1e-12, abs=1e-12)
        assert r["Covariance"] == pytest.approx(statistics.pvariance(block), rel=1e-12, abs=1e-12)
        assert r["Variance"] == (1 if statistics.pvariance(block) != 0 else 0)
        assert r["Weight"] == len(block) ** 2

    def check_reset(k, block20):  # the 20th packet of a cycle
        r = rows[k]
        prev19 = block20[:19]
        assert r["Number"] == 0
        assert r["Tot sum"] == sum(block20)
        assert r["Min"] == min(block20)
        assert r["Max"] == max(block20)
        assert r["AVG"] == pytest.approx(statistics.fmean(block20), rel=1e-12)
        assert r["Std"] == pytest.approx(statistics.pstdev(block20), rel=1e-12)
        assert r["Magnitue"] == pytest.approx(math.sqrt(2 * statistics.fmean(prev19)), rel=1e-12)
        assert r["Radius"] == pytest.approx(math.sqrt(2 * statistics.pvariance(prev19)), rel=1e-12)
        assert r["Covariance"] == pytest.approx(statistics.pvariance(prev19), rel=1e-12)
        assert r["Variance"] == 1
        assert r["Weight"] == 19 ** 2

    check_open(0, sizes[0:1])
    check_open(1, sizes[0:2])
    check_open(4, sizes[0:5])
    check_open(18, sizes[0:19])
    check_reset(19, sizes[0:20])
    check_open(20, sizes[20:21])  # a fresh buffer: Std 0, Variance 0, Weight 1
    assert rows[20]["Std"] == 0 and rows[20]["Variance"] == 0 and rows[20]["Covariance"] == 0
    check_open(31, sizes[20:32])
    check_reset(39, sizes[20:40])
    check_open(44, sizes[40:45])
    assert col(rows, "Number") == [(i + 1) % 20 for i in range(45)]

    # IAT: the epoch time on the first packet and on every 20th, else the gap to the previous row
    assert rows[0]["IAT"] == BASE
    assert rows[1]["IAT"] == 0.25
    assert rows[19]["IAT"] == BASE + 19 * 0.25
    assert rows[20]["IAT"] == 0.25
    assert rows[30]["IAT"] == 0.375
    assert rows[31]["IAT"] == 0.25
    assert rows[39]["IAT"] == BASE + 39 * 0.25 + 0.125
    assert rows[40]["IAT"] == 0.25


def test_frame_length_excludes_padding_and_counts_vlan_tags(tmp_path, extract):
    syn = tcp(flags="S")
    assert len(bytes(syn)) == 54
    pad_syn = padded(syn, 60)
    assert len(bytes(pad_syn)) == 60
    pad_vlan = padded(tcp(flags="S", vlan=3), 64)
    qinq = Ether(src=MAC_A, dst=MAC_B) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IP(src="10.0.0.1", dst="10.0.0.2") \
        / UDP(sport=7, dport=8)
    rows = extract(write(tmp_path, [pad_syn, pad_syn, pad_vlan, padded(qinq, 70)]))
    assert col(rows, "Tot size") == [54, 54, 58, 14 + 8 + 28]
    assert col(rows, "Header_Length") == [54, 108, 166, 50]  # a VLAN tag does not change the flow
    assert rows[1]["Tot sum"] == 108 and rows[1]["Max"] == 54


def test_arp_row(tmp_path, extract):
    rows = extract(write(tmp_path, [arp(), padded(arp(op=2), 60)]))
    assert len(rows) == 2
    # an unpadded frame counts 42, a padded one its whole 60 bytes (the extractor keeps
    # the bytes after the ARP body)
    assert [r["Tot size"] for r in rows] == [42, 60]
    for r in rows:
        assert r["Protocol Type"] == 0
        assert r["Duration"] == 0
        assert r["IPv"] == 0
        assert r["LLC"] == 0
        assert r["ARP"] == 1
        assert r["TCP"] == r["UDP"] == r["ICMP"] == 0
        assert r["flow_duration"] == r["Header_Length"] == 0
        assert all(r[c] == 0 for c in FLAG_COLS + COUNT_COLS + INDICATORS)


def test_non_ipv4_frames_produce_no_row(tmp_path, extract):
    pkts = [
        udp(payload=b"a"),                                                   # row, t=0
        eth() / IPv6(src="fe80::1", dst="fe80::2") / UDP(sport=1, dport=53),  # skipped, t=1
        Ether(src=MAC_A, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(b"\x00" * 46),  # LLDP, skipped
        Ether(src=MAC_A, dst="01:80:c2:00:00:00") / LLC() / Raw(b"\x00" * 38),       # 802.3, skipped
        udp(payload=b"b"),                                                   # row, t=3
    ]
    rows = extract(write(tmp_path, pkts, [0, 1, 2, 2.5, 3]))
    assert len(rows) == 2
    assert rows[1]["IAT"] == 3.0  # since the previous IPv4/ARP packet
    assert rows[1]["Number"] == 2
    assert rows[1]["flow_duration"] == 3.0
    assert rows[1]["Header_Length"] == 86


def test_fragments_and_undecodable_l4(tmp_path, extract):
    dns = dict(src="10.0.0.1", dst="10.0.0.2")
    pkts = [
        udp(sport=5353, dport=53),                                                # 0: a UDP flow, t=0
        eth() / IP(**dns, flags="MF", frag=0) / UDP(sport=5353, dport=53) / Raw(b"x" * 32),  # 1: first fragment
        eth() / IP(**dns, proto=17, frag=5) / Raw(b"y" * 24),                     # 2: later fragment of UDP
        eth() / IP(**dns, proto=1, frag=3) / Raw(b"z" * 16),                      # 3: later fragment of ICMP
        eth() / IP(**dns, proto=6, frag=9, ttl=17) / Raw(b"w" * 20),              # 4: later fragment of TCP
        eth() / IP(**dns, proto=6) / Raw(b"abc"),                                 # 5: TCP cut short
        eth() / IP(**dns) / TCP(sport=1, dport=80, dataofs=4, flags="S"),          # 6: TCP data offset 4
        eth() / IP(**dns, proto=17) / Raw(b"ab"),                                 # 7: UDP cut short
    ]
    rows = extract(write(tmp_path, pkts, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]))
    assert col(rows, "Tot size") == [42, 74, 58, 50, 54, 37, 54, 36]
    assert col(rows, "Protocol Type") == [17, 17, 17, 1, 6, 6, 6, 17]
    assert col(rows, "UDP") == [1, 1, 0, 0, 0, 0, 0, 0]
    assert col(rows, "TCP") == [0] * 8
    assert col(rows, "ICMP") == [0, 0, 0, 1, 0, 0, 0, 0]
    assert col(rows, "DNS") == [1, 1, 0, 0, 0, 0, 0, 0]
    assert col(rows, "flow_duration") == [0, 0.5, 0, 0, 0, 0, 0, 0]
    assert col(rows, "Header_Length") == [42, 116, 0, 0, 0, 0, 0, 0]
    assert col(rows, "Rate") == [0, 4, 4, 4, 4, 4, 4, 4]
    assert col(rows, "Duration")[4] == 17
    for r in rows[2:]:
        assert all(r[c] == 0 for c in FLAG_COLS + COUNT_COLS + INDICATORS)
        assert r["IPv"] == 1 and r["LLC"] == 1


@pytest.mark.parametrize(
    "kind, sport, dport, expected",
    [
        ("tcp", 40000, 80, {"HTTP"}),
        ("tcp", 80, 40000, {"HTTP"}),
        ("udp", 40000, 80, set()),            # HTTP needs TCP
        ("tcp", 40000, 443, {"HTTPS"}),
        ("tcp", 40000, 23, {"Telnet"}),
        ("tcp", 22, 40000, {"SSH"}),
        ("tcp", 40000, 21, {"IRC"}),          # IRC really means port 21
        ("tcp", 40000, 6667, set()),          # ... and not IRC's port
        ("tcp", 40000, 25, {"SMTP"}),
        ("udp", 40000, 25, set()),
        ("udp", 40000, 53, {"DNS"}),
        ("udp", 53, 40000, {"DNS"}),
        ("tcp", 40000, 53, set()),            # DNS needs UDP
        ("udp", 67, 68, {"DHCP"}),
        ("udp", 67, 9999, {"DHCP"}),          # source port 67 ...
        ("udp", 9999, 68, {"DHCP"}),          # ... or destination port 68
        ("udp", 68, 67, set()),               # a client's request is not "DHCP"
        ("tcp", 67, 68, set()),
        ("tcp", 80, 443, {"HTTP", "HTTPS"}),
        ("tcp", 22, 23, {"SSH", "Telnet"}),
        ("udp", 40000, 40001, set()),
    ],
)
def test_port_indicators(tmp_path, extract, kind, sport, dport, expected):
    pkt = (tcp if kind == "tcp" else udp)(sport=sport, dport=dport)
    (r,) = extract(write(tmp_path, [pkt]))
    assert {c for c in INDICATORS if r[c] == 1} == expected
    assert all(r[c] in (0, 1) for c in INDICATORS)
    assert (r["TCP"], r["UDP"], r["ICMP"], r["ARP"]) == ((1, 0, 0, 0) if kind == "tcp" else (0, 1, 0, 0))
    assert r["IPv"] == 1 and r["LLC"] == 1
    assert r["Protocol Type"] == (6 if kind == "tcp" else 17)


def test_flag_number_columns(tmp_path, extract):
    cases = [
        ("F", {"fin_flag_number"}),
        ("S", {"syn_flag_number"}),
        ("R", {"rst_flag_number"}),
        ("P", {"psh_flag_number"}),
        ("A", {"ack_flag_number"}),
        ("E", {"ece_flag_number"}),
        ("C", {"cwr_flag_number"}),
        ("U", set()),  # URG has no column
        ("", set()),
        ("SA", {"syn_flag_number", "ack_flag_number"}),
        ("FSRPAUEC", set(FLAG_COLS)),
    ]
    pkts = [tcp(sport=1000 + i, flags=f) for i, (f, _) in enumerate(cases)]
    pkts += [udp(), icmp(), arp()]
    rows = extract(write(tmp_path, pkts))
    for (f, expected), r in zip(cases, rows):
        assert {c for c in FLAG_COLS if r[c] == 1} == expected, f
        assert all(r[c] in (0, 1) for c in FLAG_COLS)
    for r in rows[len(cases):]:
        assert all(r[c] == 0 for c in FLAG_COLS)


def test_duration_is_the_ttl(tmp_path, extract):
    pkts = [tcp(ttl=1), udp(ttl=64), icmp(ttl=128), tcp(ttl=255, flags="S", sport=9), arp(),
            eth() / IP(src="1.2.3.4", dst="5.6.7.8", proto=47, ttl=33) / Raw(b"g" * 8)]
    rows = extract(write(tmp_path, pkts))
    assert col(rows, "Duration") == [1, 64, 128, 255, 0, 33]
    assert col(rows, "Protocol Type") == [6, 17, 1, 6, 0, 47]
    assert col(rows, "ICMP") == [0, 0, 1, 0, 0, 0]
    assert col(rows, "IPv") == [1, 1, 1, 1, 0, 1]
    assert col(rows, "LLC") == [1, 1, 1, 1, 0, 1]


def test_raw_ip_link_type_counts_a_14_byte_ethernet_header(tmp_path, extract):
    pkts = [IP(src="10.0.0.1", dst="10.0.0.2", ttl=9) / UDP(sport=1, dport=53) / Raw(b"q" * 10),
            IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=53, dport=1) / Raw(b"r" * 30),
            IPv6(src="fe80::1", dst="fe80::2") / UDP(sport=1, dport=53)]
    path = write(tmp_path, pkts)
    with open(path, "rb") as f:
        assert int.from_bytes(f.read(24)[20:24], "little") in (101, 228)  # written as raw IP
    rows = extract(path)
    assert col(rows, "Tot size") == [52, 72]
    assert col(rows, "Header_Length") == [52, 124]
    assert col(rows, "DNS") == [1, 1]
    assert col(rows, "Duration") == [9, 64]


def test_reference_windows_on_known_blocks():
    rows = [[float(i)] * 46 for i in range(25)]
    w = reference_windows(rows, 10)
    assert len(w) == 3
    assert w[0][0] == 4.5 and w[1][0] == 14.5 and w[2][0] == 22.0


def test_window_averaging_reference(tmp_path):
    path = write(tmp_path, _window_packets())
    w = reference_windows(reference_rows(path), 10)
    _check_windows(w)


@needs_meter
def test_window_averaging_meter(tmp_path):
    pkts = _window_packets()
    path = write(tmp_path, pkts)
    _, wins, _ = run_meter(path, window=10)
    assert len(wins) == 2
    assert list(wins.packets) == [10, 3]
    assert wins.first_ts[0] == BASE and wins.last_ts[0] == BASE + 9 * 0.25
    assert wins.first_ts[1] == BASE + 10 * 0.25 and wins.last_ts[1] == BASE + 12 * 0.25
    _check_windows(wins.features)


@pytest.mark.parametrize("source", ["reference", pytest.param("meter", marks=needs_meter)])
def test_block_means_match_real_dataset_rows(tmp_path, source):
    """Real released rows show these means of Number and Weight: 9.5 / 141.55 over a block of
    20, 5.5 / 38.5 for the first 10 rows of a buffer cycle and 13.5 / 244.6 for the next 10."""
    pkts = [udp(payload=b"d" * (i % 7)) if i % 3 else icmp() for i in range(40)]
    path = write(tmp_path, pkts)
    for n, expected in ((20, [(9.5, 141.55)] * 2), (10, [(5.5, 38.5), (13.5, 244.6)] * 2)):
        if source == "reference":
            w = as_dicts(reference_windows(reference_rows(path), n))
        else:
            w = as_dicts(run_meter(path, window=n)[1].features)
        got = [v for x in w for v in (x["Number"], x["Weight"])]
        assert got == pytest.approx([v for pair in expected for v in pair], rel=1e-12)


def _window_packets():
    flags = ["S", "A", "A", "S", "A", "PA", "A", "S", "FA", "A", "S", "A", "A"]
    return [tcp(flags=f) for f in flags]


def _check_windows(w):
    w = as_dicts(w)
    assert len(w) == 2
    first, last = w
    assert first["Number"] == 5.5  # mean of 1..10
    assert first["Weight"] == 38.5  # mean of 1²..10²
    assert first["syn_flag_number"] == pytest.approx(0.3, rel=1e-12)  # a flag becomes a fraction
    assert first["ack_flag_number"] == pytest.approx(0.7, rel=1e-12)
    assert first["Tot size"] == 54
    assert first["Header_Length"] == pytest.approx(54 * 5.5, rel=1e-12)
    assert first["syn_count"] == pytest.approx((1 + 1 + 1 + 2 + 2 + 2 + 2 + 3 + 3 + 3) / 10, rel=1e-12)
    assert first["TCP"] == 1 and first["HTTP"] == 1
    assert last["Number"] == 12.0  # (11 + 12 + 13) / 3
    assert last["Weight"] == pytest.approx((121 + 144 + 169) / 3, rel=1e-12)
    assert last["syn_flag_number"] == pytest.approx(1 / 3, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# property tests: the meter equals the reference on random mixed captures
# ---------------------------------------------------------------------------------------------
SPECIAL_PORTS = (80, 443, 23, 22, 21, 25, 53, 67, 68)


def random_capture(seed: int, n: int = 400, backwards: bool = False):
    """A seeded mix of TCP/UDP/ICMP/ARP frames over several flows, with fragments, VLAN tags,
    padding, IP options, cut-short L4 headers and frames that are not IPv4/ARP."""
    rng = random.Random(seed)
    hosts = [f"10.0.{rng.randrange(3)}.{rng.randrange(1, 8)}" for _ in range(6)]

    def endpoint():
        port = rng.choice(SPECIAL_PORTS) if rng.random() < 0.4 else rng.randrange(1024, 65536)
        return rng.choice(hosts), port

    tcp_flows = [(endpoint(), endpoint()) for _ in range(6)]
    udp_flows = [(endpoint(), endpoint()) for _ in range(5)]
    pkts, times = [], []
    t = 0.0
    for _ in range(n):
        r = rng.random()
        vlan = rng.randrange(1, 4095) if rng.random() < 0.1 else None
        ttl = rng.randrange(1, 256)
        opts = [IPOption_NOP()] * 4 if rng.random() < 0.05 else []
        if r < 0.35:
            (a, pa), (b, pb) = rng.choice(tcp_flows)
            if rng.random() < 0.5:
                (a, pa), (b, pb) = (b, pb), (a, pa)
            p = eth(vlan) / IP(src=a, dst=b, ttl=ttl, options=opts) / TCP(
                sport=pa, dport=pb, flags=rng.randrange(256)) / Raw(b"t" * rng.choice((0, 0, 1, 6, 100, 600)))
        elif r < 0.6:
            (a, pa), (b, pb) = rng.choice(udp_flows)
            if rng.random() < 0.5:
                (a, pa), (b, pb) = (b, pb), (a, pa)
            p = eth(vlan) / IP(src=a, dst=b, ttl=ttl, options=opts) / UDP(sport=pa, dport=pb) / Raw(
                b"u" * rng.randrange(0, 300))
        elif r < 0.7:
            p = eth(vlan) / IP(src=rng.choice(hosts), dst=rng.choice(hosts), ttl=ttl) / ICMP(
                type=rng.choice((0, 3, 8, 11))) / Raw(b"i" * rng.randrange(0, 64))
        elif r < 0.78:
            p = arp(psrc=rng.choice(hosts), pdst=rng.choice(hosts), op=rng.choice((1, 2)))
            if vlan is not None:
                p = Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=vlan) / p[ARP]
        elif r < 0.86:  # fragments of TCP/UDP/ICMP: first ones carry the L4 header
            proto = rng.choice((1, 6, 17))
            (a, pa), (b, pb) = rng.choice(udp_flows if proto == 17 else tcp_flows)
            if rng.random() < 0.5:
                ip = IP(src=a, dst=b, ttl=ttl, flags="MF", frag=0)
                l4 = {1: ICMP(), 6: TCP(sport=pa, dport=pb, flags="A"), 17: UDP(sport=pa, dport=pb)}[proto]
                p = eth(vlan) / ip / l4 / Raw(b"f" * 64)
            else:
                p = eth(vlan) / IP(src=a, dst=b, ttl=ttl, proto=proto, frag=rng.randrange(1, 200),
                                   flags=rng.choice(("MF", 0))) / Raw(b"g" * rng.randrange(8, 200))
        elif r < 0.9:  # L4 header cut short or invalid
            which = rng.randrange(3)
            if which == 0:
                p = eth(vlan) / IP(src=rng.choice(hosts), dst=rng.choice(hosts), proto=6) / Raw(
                    b"s" * rng.randrange(0, 20))
            elif which == 1:
                p = eth(vlan) / IP(src=rng.choice(hosts), dst=rng.choice(hosts), proto=17) / Raw(
                    b"s" * rng.randrange(0, 8))
            else:
                p = eth(vlan) / IP(src=rng.choice(hosts), dst=rng.choice(hosts)) / TCP(
                    sport=rng.randrange(65536), dport=80, dataofs=rng.randrange(0, 5))
        elif r < 0.94:  # other IP protocols
            p = eth(vlan) / IP(src=rng.choice(hosts), dst=rng.choice(hosts), proto=rng.choice((2, 47, 50, 132)),
                               ttl=ttl) / Raw(b"o" * rng.randrange(0, 80))
        else:  # not IPv4/ARP: skipped
            p = rng.choice((
                eth(vlan) / IPv6(src="fe80::1", dst="fe80::2") / UDP(sport=1, dport=53),
                Ether(src=MAC_A, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(b"\x00" * 46),
                Ether(src=MAC_A, dst="01:80:c2:00:00:00") / LLC() / Raw(b"\x00" * 38),
            ))
        if len(bytes(p)) < 60 and rng.random() < 0.7:
            p = padded(p, 60)
        step = rng.choice((0.0, 0.0, 1e-6, 0.000731, 0.01, 0.25, rng.random()))
        if backwards and rng.random() < 0.05:
            step = -rng.random() * 0.5
        t = round(t + step, 6)
        pkts.append(p)
        times.append(t)
    return pkts, times


def _assert_rows_equal(got: np.ndarray, want: list[list[float]], what: str):
    want = np.asarray(want, dtype=np.float64).reshape(-1, len(COLUMNS))
    assert got.shape == want.shape, f"{what}: {got.shape[0]} rows, the reference has {want.shape[0]}"
    bad = ~np.isclose(got, want, rtol=1e-9, atol=1e-9)
    # IAT holds epoch seconds on some rows, where a relative tolerance would allow seconds
    iat = INDEX["IAT"]
    bad[:, iat] = ~np.isclose(got[:, iat], want[:, iat], rtol=0, atol=1e-6)
    if bad.any():
        lines = []
        for i, j in zip(*np.nonzero(bad)):
            lines.append(f"{what} {i} column {COLUMNS[j]!r}: meter {got[i, j]!r}, reference {want[i, j]!r}")
            if len(lines) == 15:
                break
        pytest.fail(f"{int(bad.sum())} values differ (in {len(set(np.nonzero(bad)[1]))} columns):\n"
                    + "\n".join(lines))


@needs_meter
@pytest.mark.parametrize("seed, window, batch_size", [(1, 10, 65536), (2, 10, 37), (3, 100, 1), (4, 7, 250)])
def test_meter_matches_reference(tmp_path, seed, window, batch_size):
    pkts, times = random_capture(seed)
    path = write(tmp_path, pkts, times)
    ref = reference_rows(path)
    assert len(ref) > 300
    rows, wins, _ = run_meter(path, window=window, batch_size=batch_size)
    _assert_rows_equal(rows.features, ref, "row")
    assert (rows.packets == 1).all()
    _assert_rows_equal(wins.features, reference_windows(ref, window), "window")
    expect_sizes = [min(window, len(ref) - s) for s in range(0, len(ref), window)]
    assert list(wins.packets) == expect_sizes


@needs_meter
def test_meter_matches_reference_when_time_goes_backwards(tmp_path):
    pkts, times = random_capture(5, backwards=True)
    path = write(tmp_path, pkts, times)
    ref = reference_rows(path)
    rows, wins, _ = run_meter(path, window=10, batch_size=50)
    _assert_rows_equal(rows.features, ref, "row")
    _assert_rows_equal(wins.features, reference_windows(ref, 10), "window")


@needs_meter
def test_meter_counters(tmp_path):
    pkts, times = random_capture(6, n=200)
    path = write(tmp_path, pkts, times)
    ref = reference_rows(path)
    _, wins, m = run_meter(path, window=10)
    c = m.counters
    if hasattr(c, "frames"):
        assert c.frames == len(pkts)
    assert c.packets == len(ref)  # IPv4 and ARP packets metered
    assert c.rows == len(ref)
    assert c.skipped == len(pkts) - len(ref)
    assert len(wins) == math.ceil(len(ref) / 10)


@needs_meter
def test_flow_mode_smoke(tmp_path):
    """key_mode=flow: per-flow buffers change the buffer and Rate columns, but the purely
    per-packet and per-flow columns of each packet stay what the reference says."""
    pkts, times = random_capture(7, n=300)
    path = write(tmp_path, pkts, times)
    ref = np.asarray(reference_rows(path))
    rows, wins, m = run_meter(path, window=10, key_mode="flow")
    # the reference is the released extractor: IPv4 and ARP only; flow mode meters IPv6 too
    v4 = rows.ip_version != 6
    assert int(np.count_nonzero(v4)) == len(ref)
    assert m.counters.packets_ipv6 == len(rows) - len(ref) > 0
    assert int(wins.packets.sum()) == len(rows)
    assert np.isfinite(rows.features).all() and np.isfinite(wins.features).all()
    stable = [INDEX[c] for c in COLUMNS if c not in (
        "Rate", "Srate", "Tot sum", "Min", "Max", "AVG", "Std", "IAT", "Number",
        "Magnitue", "Radius", "Covariance", "Variance", "Weight")]

    def canon(a):  # the rows as a sorted multiset: flow mode may emit them in another order
        return sorted(map(tuple, np.round(a[:, stable], 9).tolist()))

    assert canon(rows.features[v4]) == canon(ref)
