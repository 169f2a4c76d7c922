"""Write capture files byte by byte for tests, independently of the reader under test."""

from __future__ import annotations

import struct
from pathlib import Path

ETH_HDR = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00"


def ipv4_udp(src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 1234, dport: int = 53,
             payload: bytes = b"hello", ttl: int = 64) -> bytes:
    """An IPv4/UDP packet (checksums left zero: the reader does not verify them)."""
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 1, 0, ttl, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return ip + udp


def ethernet(l3: bytes, ethertype: int = 0x0800, vlans: tuple[int, ...] = (), pad_to: int = 0) -> bytes:
    """Ethernet frame around ``l3`` with optional 802.1Q tags and padding."""
    hdr = bytes.fromhex("020000000002" "020000000001")
    for vid in vlans:
        hdr += struct.pack(">HH", 0x8100, vid)
    frame = hdr + struct.pack(">H", ethertype) + l3
    if len(frame) < pad_to:
        frame += bytes(pad_to - len(frame))
    return frame


def write_pcap(path: Path, frames: list[tuple[float, bytes]], linktype: int = 1, big_endian: bool = False,
               nanos: bool = False, orig_len: list[int] | None = None) -> Path:
    """Classic pcap in either byte order, µs or ns timestamps."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for k, (ts, data) in enumerate(frames):
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nanos else 1e6))
        orig = orig_len[k] if orig_len else len(data)
        out.append(struct.pack(e + "IIII", sec, frac, len(data), orig) + data)
    path.write_bytes(b"".join(out))
    return path


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += bytes((-len(body)) % 4)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def write_pcapng(path: Path, frames: list[tuple[float, bytes]], linktypes: tuple[int, ...] = (1,),
                 big_endian: bool = False, tsresol: int = 6, iface_of: list[int] | None = None,
                 extra_blocks: bool = True) -> Path:
    """pcapng with one section, one IDB per link type, EPBs (and a few blocks to skip)."""
    e = ">" if big_endian else "<"
    out = [_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for lt in linktypes:
        opts = struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + bytes(3) + struct.pack(e + "HH", 0, 0)
        out.append(_block(e, 1, struct.pack(e + "HHI", lt, 0, 262144) + opts))
    if extra_blocks:  # a name resolution block and a custom block the reader must skip
        out.append(_block(e, 4, struct.pack(e + "HH", 0, 0)))
        out.append(_block(e, 0x00000BAD, struct.pack(e + "I", 32473) + b"skip"))
    units = 10**tsresol
    for k, (ts, data) in enumerate(frames):
        ticks = round(ts * units)
        ifc = iface_of[k] if iface_of else 0
        body = struct.pack(e + "IIIII", ifc, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data
        out.append(_block(e, 6, body))
    out.append(_block(e, 5, struct.pack(e + "IIIHH", 0, 0, 0, 0, 0)))  # interface statistics
    path.write_bytes(b"".join(out))
    return path
