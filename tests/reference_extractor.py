"""A slow, plain-Python reference of the CICIoT2023 per-packet extractor (capture mode).

This is the test oracle for the fast meter: one packet at a time, one Python
variable per piece of extractor state, no numpy, no cleverness. It follows the
released extractor's behaviour (quirks included) as documented in
docs/ciciot2023-features.md and refined by checks against real dataset rows:

* only IPv4 (ethertype 0x0800) and ARP frames become rows;
* frame length L = 14 (+4 per VLAN tag) + IPv4 total length; for ARP the whole frame,
  padding included, with its tags removed (60 on the wire, 42 where captured unpadded)
  (14 + total length as well for the non-Ethernet link types);
* one rolling size buffer of up to 20 values for the whole capture;
* one "Rate" variable for the whole capture, updated only by TCP/UDP packets
  whose flow is older than 0 s, carried by every other packet;
* per-flow state for TCP/UDP packets whose L4 header was decoded (first
  fragment, TCP >= 20 bytes with data offset >= 5, UDP >= 8 bytes), keyed by
  the sorted pair of (ip, port) endpoints, TCP and UDP kept apart, no timeout;
* the ack/syn/fin/urg/rst count columns hold FIN/SYN/RST/PSH/ACK counts.

``reference_rows(path)`` gives one list of 46 floats per IPv4/ARP packet, in
``COLUMNS`` order; ``reference_windows(rows, n)`` averages them in consecutive
blocks of ``n`` (the last, partial block included).
"""

from __future__ import annotations

import math
import struct

import dpkt

from ids_daemon.features.ciciot import COLUMNS

ETH_IP = 0x0800
ETH_ARP = 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)

# link types whose frames start with the IP header (raw IP)
RAW_LINKTYPES = (12, 14, 101, 228)

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

BUFFER_SIZE = 20  # the extractor's rolling size buffer resets every 20 packets


class Packet:
    """What the extractor looks at in one IPv4 or ARP frame."""

    def __init__(self) -> None:
        self.ts = 0.0
        self.is_arp = False
        self.length = 0  # L: 14 (+4 per VLAN tag) + IP total length; ARP: the whole frame
        self.proto = 0  # IP protocol number (0 for ARP)
        self.ttl = 0
        self.l4 = None  # "tcp", "udp" or None when no TCP/UDP header was decoded
        self.src = b""
        self.dst = b""
        self.sport = 0
        self.dport = 0
        self.flags = 0  # TCP flag byte


def _parse_ip(ts: float, link_header: int, ip_bytes: bytes) -> Packet | None:
    """An IPv4 packet (``ip_bytes`` starts at its header) → Packet, or None if it is not IPv4."""
    if len(ip_bytes) < 20 or (ip_bytes[0] >> 4) != 4:
        return None
    ip = dpkt.ip.IP(ip_bytes)
    p = Packet()
    p.ts = ts
    # dpkt trims the packet to its total length; a total length of 0 (segmentation
    # offload) keeps everything that was captured
    ip_total = ip.len if ip.len else len(ip_bytes)
    p.length = link_header + ip_total
    p.proto = ip.p
    p.ttl = ip.ttl
    p.src = ip.src
    p.dst = ip.dst
    header_len = (ip_bytes[0] & 0x0F) * 4
    payload = ip_bytes[header_len:ip_total]
    fragment_offset = struct.unpack("!H", ip_bytes[6:8])[0] & 0x1FFF
    if fragment_offset == 0:  # only the first fragment carries the L4 header
        if ip.p == 6 and len(payload) >= 20:
            data_offset = payload[12] >> 4
            if data_offset >= 5:
                p.l4 = "tcp"
                p.sport, p.dport = struct.unpack("!HH", payload[:4])
                p.flags = payload[13]
        elif ip.p == 17 and len(payload) >= 8:
            p.l4 = "udp"
            p.sport, p.dport = struct.unpack("!HH", payload[:4])
    # cross-check the plain parse above against dpkt's own decision
    assert (p.l4 == "tcp") == isinstance(ip.data, dpkt.tcp.TCP), "TCP decode disagrees with dpkt"
    assert (p.l4 == "udp") == isinstance(ip.data, dpkt.udp.UDP), "UDP decode disagrees with dpkt"
    return p


def read_packets(path) -> list[Packet]:
    """The IPv4 and ARP packets of a pcap file, in capture order; everything else is dropped."""
    out = []
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for ts, frame in reader:
            ts = float(ts)
            if linktype == 1:  # Ethernet
                if len(frame) < 14:
                    continue
                offset = 12
                ethertype = struct.unpack("!H", frame[offset:offset + 2])[0]
                tags = 0
                while ethertype in VLAN_TPIDS and tags < 2:
                    offset += 4
                    tags += 1
                    ethertype = struct.unpack("!H", frame[offset:offset + 2])[0]
                l3 = frame[offset + 2:]
                link_header = 14 + 4 * tags
                if ethertype == ETH_IP:
                    p = _parse_ip(ts, link_header, l3)
                    if p is not None:
                        out.append(p)
                elif ethertype == ETH_ARP and len(l3) >= 28:
                    p = Packet()
                    p.ts = ts
                    p.is_arp = True
                    p.length = 14 + len(l3)  # the bytes after the ARP body count too
                    out.append(p)
            elif linktype in RAW_LINKTYPES:
                p = _parse_ip(ts, 14, frame)
                if p is not None:
                    out.append(p)
            else:
                raise ValueError(f"reference extractor: link type {linktype} not handled")
    return out


class Flow:
    def __init__(self, first_ts: float) -> None:
        self.first_ts = first_ts
        self.packets = 0
        self.bytes = 0
        self.fin = 0
        self.syn = 0
        self.rst = 0
        self.psh = 0
        self.ack = 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _pvariance(values: list[float]) -> float:
    m = _mean(values)
    return sum((x - m) ** 2 for x in values) / len(values)


def rows_from_packets(packets: list[Packet]) -> list[list[float]]:
    """The 46 columns for each packet, with one global state (capture mode)."""
    rows = []
    flows: dict[tuple, Flow] = {}
    buffer: list[int] = []  # rolling frame-length buffer
    rate = 0.0  # carried across packets
    previous_ts = 0.0
    for p in packets:
        r = dict.fromkeys(COLUMNS, 0.0)
        tcp = p.l4 == "tcp"
        udp = p.l4 == "udp"

        # ---- flow columns ----
        if tcp or udp:
            a = (p.src, p.sport)
            b = (p.dst, p.dport)
            key = (p.l4, min(a, b), max(a, b))
            if key not in flows:
                flows[key] = Flow(p.ts)
            flow = flows[key]
            flow.packets += 1
            flow.bytes += p.length
            duration = p.ts - flow.first_ts
            r["flow_duration"] = duration
            r["Header_Length"] = flow.bytes
            if duration > 0:
                rate = flow.packets / duration
            if tcp:
                flow.fin += bool(p.flags & FIN)
                flow.syn += bool(p.flags & SYN)
                flow.rst += bool(p.flags & RST)
                flow.psh += bool(p.flags & PSH)
                flow.ack += bool(p.flags & ACK)
                # the extractor's index mix-up
                r["ack_count"] = flow.fin
                r["syn_count"] = flow.syn
                r["fin_count"] = flow.rst
                r["urg_count"] = flow.psh
                r["rst_count"] = flow.ack
        r["Rate"] = rate
        r["Srate"] = rate
        r["Drate"] = 0.0

        # ---- header columns ----
        r["Protocol Type"] = 0 if p.is_arp else p.proto
        r["Duration"] = 0 if p.is_arp else p.ttl
        if tcp:
            r["fin_flag_number"] = 1 if p.flags & FIN else 0
            r["syn_flag_number"] = 1 if p.flags & SYN else 0
            r["rst_flag_number"] = 1 if p.flags & RST else 0
            r["psh_flag_number"] = 1 if p.flags & PSH else 0
            r["ack_flag_number"] = 1 if p.flags & ACK else 0
            r["ece_flag_number"] = 1 if p.flags & ECE else 0
            r["cwr_flag_number"] = 1 if p.flags & CWR else 0
            ports = (p.sport, p.dport)
            r["HTTP"] = 1 if 80 in ports else 0
            r["HTTPS"] = 1 if 443 in ports else 0
            r["Telnet"] = 1 if 23 in ports else 0
            r["SSH"] = 1 if 22 in ports else 0
            r["IRC"] = 1 if 21 in ports else 0
            r["SMTP"] = 1 if 25 in ports else 0
        if udp:
            r["DNS"] = 1 if 53 in (p.sport, p.dport) else 0
            r["DHCP"] = 1 if (p.sport == 67 or p.dport == 68) else 0
        r["TCP"] = 1 if tcp else 0
        r["UDP"] = 1 if udp else 0
        r["ICMP"] = 1 if (not p.is_arp and p.proto == 1) else 0
        r["ARP"] = 1 if p.is_arp else 0
        r["IPv"] = 0 if p.is_arp else 1
        r["LLC"] = 0 if p.is_arp else 1
        r["Tot size"] = p.length

        # ---- rolling size buffer ----
        buffer.append(p.length)
        if len(buffer) == BUFFER_SIZE:
            sizes = list(buffer)  # the five size statistics see all 20 values
            two_stream = buffer[:-1]  # the "two-stream" statistics see the previous 19
            buffer = []
            iat = p.ts
        else:
            sizes = list(buffer)
            two_stream = list(buffer)
            iat = p.ts - previous_ts  # previous_ts is 0 before the first packet
        previous_ts = p.ts
        r["Tot sum"] = sum(sizes)
        r["Min"] = min(sizes)
        r["Max"] = max(sizes)
        r["AVG"] = _mean(sizes)
        r["Std"] = math.sqrt(_pvariance(sizes))
        r["IAT"] = iat
        r["Number"] = len(buffer)
        m = _mean(two_stream)
        v = _pvariance(two_stream)
        r["Magnitue"] = math.sqrt(2 * m)
        r["Radius"] = math.sqrt(2 * v)
        r["Covariance"] = v
        r["Variance"] = 1 if v != 0 else 0
        r["Weight"] = len(two_stream) ** 2

        rows.append([float(r[c]) for c in COLUMNS])
    return rows


def reference_rows(pcap_path) -> list[list[float]]:
    """46 floats per IPv4/ARP packet of the capture, in ``COLUMNS`` order (capture mode)."""
    return rows_from_packets(read_packets(pcap_path))


def reference_windows(rows: list[list[float]], n: int) -> list[list[float]]:
    """Column means of consecutive blocks of ``n`` rows; the last, partial block is its own mean."""
    out = []
    for start in range(0, len(rows), n):
        block = rows[start:start + n]
        out.append([sum(row[j] for row in block) / len(block) for j in range(len(COLUMNS))])
    return out
