"""Frame builders and a classic pcap writer for the synthetic corpus.

scapy builds a TCP frame in about 350 µs; these builders take a few µs, which is
what makes a 60 k-packet corpus a matter of seconds. Every frame is well formed:
IPv4 total length, header length and data offset are exact, IP, TCP, UDP, ICMP
checksums are computed, and frames shorter than 60 bytes are padded as a switch's
mirror port would deliver them. The tests cross-check a sample with scapy.

Addresses are ints (IPv4) and 6-byte strings (MAC) throughout.
"""

from __future__ import annotations

import struct
from pathlib import Path

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
PA, SA, FA, RA = PSH | ACK, SYN | ACK, FIN | ACK, RST | ACK

ETH_P_IP, ETH_P_ARP, ETH_P_TEB = 0x0800, 0x0806, 0x6558
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_GRE = 1, 6, 17, 47
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
MTU = 1500
FRAG_CHUNK = (MTU - 20) // 8 * 8  # IP payload bytes per fragment: 1480

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_ICMP = struct.Struct("!BBH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_REC = struct.Struct("<IIII")
_U16 = struct.Struct("!H")


def ip4(text: str) -> int:
    """'192.168.1.2' → int."""
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def ipstr(ip: int) -> str:
    """int → dotted quad."""
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"


def _b4(ip: int) -> bytes:
    return ip.to_bytes(4, "big")


def checksum(data: bytes) -> bytes:
    """The Internet checksum of ``data``, as the two bytes that go on the wire.

    The one's-complement sum of 16-bit words is the number the bytes spell modulo
    0xFFFF (2^16 = 1 mod 0xFFFF), which Python's big integers compute in C: a few
    times faster than summing the words, and it is most of the cost of large frames.
    A sum of 0 means 0xFFFF in one's complement unless every byte is zero.
    """
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and data.strip(b"\0"):
        s = 0xFFFF
    return (~s & 0xFFFF).to_bytes(2, "big")


def ipv4(src: int, dst: int, proto: int, payload: bytes, ttl: int = 64, ident: int = 0, df: bool = False,
         mf: bool = False, frag_units: int = 0, tos: int = 0) -> bytes:
    """An IPv4 packet (20-byte header, exact total length, header checksum)."""
    ff = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_units & 0x1FFF)
    hdr = _IP.pack(0x45, tos, 20 + len(payload), ident & 0xFFFF, ff, ttl & 255, proto, 0, _b4(src), _b4(dst))
    return hdr[:10] + checksum(hdr) + hdr[12:] + payload


def tcp(src: int, dst: int, sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0, win: int = 64240,
        payload: bytes = b"", options: bytes = b"", urg: int = 0) -> bytes:
    """A TCP segment with its checksum (src/dst are needed for the pseudo-header)."""
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    seg = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (5 + len(options) // 4) << 4, flags & 0xFF,
                    win & 0xFFFF, 0, urg) + options + payload
    c = checksum(_PSEUDO.pack(_b4(src), _b4(dst), 0, PROTO_TCP, len(seg)) + seg)
    return seg[:16] + c + seg[18:]


def udp(src: int, dst: int, sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A UDP datagram with its checksum."""
    n = 8 + len(payload)
    d = _UDP.pack(sport, dport, n, 0) + payload
    c = checksum(_PSEUDO.pack(_b4(src), _b4(dst), 0, PROTO_UDP, n) + d)
    if c == b"\0\0":
        c = b"\xff\xff"
    return d[:6] + c + d[8:]


def icmp(type_: int, code: int = 0, rest: bytes = b"\0\0\0\0", payload: bytes = b"") -> bytes:
    """An ICMP message: type, code, the 4 header bytes after the checksum, data."""
    m = _ICMP.pack(type_, code, 0) + rest + payload
    return m[:2] + checksum(m) + m[4:]


def echo(type_: int, ident: int, seq: int, payload: bytes) -> bytes:
    """ICMP echo request (8) or reply (0)."""
    return icmp(type_, 0, _U16.pack(ident & 0xFFFF) + _U16.pack(seq & 0xFFFF), payload)


def gre(proto: int, payload: bytes) -> bytes:
    """A plain 4-byte GRE header (no checksum, key or sequence) and its payload."""
    return b"\0\0" + _U16.pack(proto) + payload


def arp(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    """An Ethernet/IPv4 ARP packet (28 bytes)."""
    return _ARP.pack(1, ETH_P_IP, 6, 4, op, sha, _b4(spa), tha, _b4(tpa))


def ether(dst: bytes, src: bytes, ethertype: int, payload: bytes, pad: bool = True) -> bytes:
    """An Ethernet II frame, zero-padded to the 60-byte minimum when ``pad``."""
    f = dst + src + _U16.pack(ethertype) + payload
    if pad and len(f) < 60:
        f += bytes(60 - len(f))
    return f


def fragments(payload: bytes, chunk: int = FRAG_CHUNK) -> list[tuple[int, bool, bytes]]:
    """Split an IP payload into (offset in 8-byte units, more-fragments, data) pieces."""
    out = []
    for off in range(0, len(payload), chunk):
        out.append((off // 8, off + chunk < len(payload), payload[off:off + chunk]))
    return out


def write_pcap(path: Path, frames: list[tuple[float, bytes]], snaplen: int = 65535) -> int:
    """Write (time, frame) pairs, sorted by time (stable), as one classic µs pcap; returns the count."""
    frames = sorted(frames, key=lambda f: f[0])
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)]
    rec = _REC.pack
    for t, data in frames:
        sec, usec = divmod(round(t * 1e6), 1_000_000)
        n = len(data)
        parts.append(rec(sec, usec, n, n))
        parts.append(data)
    path.write_bytes(b"".join(parts))
    return len(frames)
