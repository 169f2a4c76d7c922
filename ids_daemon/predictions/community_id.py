"""Community ID v1 of flows (https://github.com/corelight/community-id-spec): the flow hash
Zeek, Suricata and others emit, so that a prediction joins with their logs.

``1:`` + base64(SHA-1(seed(2) | src addr | dst addr | proto(1) | 0(1) [| sport(2) | dport(2)]))
with every value in network byte order, the endpoints ordered so that both directions of a
flow hash alike (the smaller (address, port) first), ICMP/ICMPv6 types and codes mapped to
port equivalents as the specification does, and ports only for TCP, UDP, SCTP, ICMP and
ICMPv6.

The ordering and the ICMP mapping are computed on whole columns; only the SHA-1 runs per
row (hashlib has no batch form), and the encoder calls this once per new flow key, not
per prediction.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from typing import Any

import numpy as np

ICMP, TCP, UDP, ICMP6, SCTP = 1, 6, 17, 58, 132
_PORT_PROTOS = np.array([ICMP, TCP, UDP, ICMP6, SCTP])

# ICMP type -> the type of its counterpart (request <-> reply): such messages are two-way
# and ordered like ports; any other type is one-way, hashed as (type, code) unordered.
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 17: 18, 18: 17}
_ICMP6_PAIRS = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                139: 140, 140: 139, 144: 145, 145: 144}


def _pair_table(pairs: dict[int, int]) -> np.ndarray:
    t = np.full(256, -1, dtype=np.int32)
    for k, v in pairs.items():
        t[k] = v
    return t


_ICMP4_TABLE = _pair_table(_ICMP4_PAIRS)
_ICMP6_TABLE = _pair_table(_ICMP6_PAIRS)


def address_bytes(addr: Any) -> np.ndarray:
    """Addresses as rows of network-order bytes, (n, 4) or (n, 16) uint8.

    Takes a 1-D uint32 column (IPv4 as integers, the meter's form), or a 2-D integer array
    whose rows hold one address (uint8 x 4 or x 16, uint32 x 4 words, uint64 x 2 halves,
    each element most significant first)."""
    a = np.asarray(addr)
    if a.ndim == 1:
        if a.dtype.kind not in "ui" or a.dtype.itemsize > 4 and len(a) and int(a.max()) > 0xFFFFFFFF:
            raise ValueError("a 1-D address column must hold IPv4 addresses as 32-bit integers")
        a = a.astype(np.uint32).reshape(-1, 1)
    if a.ndim != 2 or a.dtype.kind not in "ui":
        raise ValueError(f"addresses must be a uint32 column or rows of integers, got {a.dtype} {a.shape}")
    width = a.shape[1] * a.dtype.itemsize
    if width not in (4, 16):
        raise ValueError(f"an address is 4 or 16 bytes, got {width}")
    be = a.astype(np.dtype(f">u{a.dtype.itemsize}"), copy=False)
    return np.ascontiguousarray(be).view(np.uint8).reshape(len(a), width)


def community_ids(src: Any, dst: Any, proto: Any, sport: Any, dport: Any, seed: int = 0) -> list[str]:
    """The Community ID of each row: ``src``/``dst`` addresses (see `address_bytes`, one
    family per call), ``proto`` the IP protocol, ``sport``/``dport`` ports - or, for ICMP
    and ICMPv6, the message type and code - as seen on the packet (either direction)."""
    s, d = address_bytes(src), address_bytes(dst)
    if s.shape != d.shape:
        raise ValueError("source and destination addresses differ in family or count")
    n, alen = s.shape
    proto = np.asarray(proto, dtype=np.int64).reshape(-1)
    p1 = np.asarray(sport, dtype=np.int64).reshape(-1).copy()
    p2 = np.asarray(dport, dtype=np.int64).reshape(-1).copy()
    if not (len(proto) == len(p1) == len(p2) == n):
        raise ValueError("addresses, protocols and ports differ in length")

    one_way = np.zeros(n, dtype=bool)
    for num, table in ((ICMP, _ICMP4_TABLE), (ICMP6, _ICMP6_TABLE)):
        icmp = proto == num
        if icmp.any():
            other = table[p1[icmp] & 0xFF]
            paired = other >= 0
            p2[icmp] = np.where(paired, other, p2[icmp])
            one_way[icmp] = ~paired

    # (src, sport) < (dst, dport): compare addresses bytewise at their first difference
    differ = s != d
    first = differ.argmax(axis=1)
    rows = np.arange(n)
    addr_lt = s[rows, first] < d[rows, first]
    ordered = np.where(differ.any(axis=1), addr_lt, p1 < p2)
    swap = ~(one_way | ordered)
    lo = np.where(swap[:, None], d, s)
    hi = np.where(swap[:, None], s, d)
    lo_p = np.where(swap, p2, p1)
    hi_p = np.where(swap, p1, p2)

    buf = np.zeros((n, 2 + 2 * alen + 2 + 4), dtype=np.uint8)
    buf[:, 0:2] = np.frombuffer(int(seed).to_bytes(2, "big"), dtype=np.uint8)
    buf[:, 2:2 + alen] = lo
    buf[:, 2 + alen:2 + 2 * alen] = hi
    o = 2 + 2 * alen
    buf[:, o] = proto & 0xFF  # the byte after it is padding, 0
    ports = np.stack([lo_p, hi_p], axis=1).astype(">u2").view(np.uint8).reshape(n, 4)
    buf[:, o + 2:] = ports
    with_ports = np.isin(proto, _PORT_PROTOS).tolist()
    full, short = buf.shape[1], buf.shape[1] - 4
    out = []
    for row, wp in zip(buf, with_ports):  # SHA-1 per row: the only per-flow step
        digest = hashlib.sha1(row.tobytes()[: full if wp else short]).digest()
        out.append("1:" + base64.b64encode(digest).decode("ascii"))
    return out


def community_id(src: str | bytes, dst: str | bytes, proto: int, sport: int | None = None,
                 dport: int | None = None, seed: int = 0) -> str:
    """The Community ID of one flow; addresses as text (IPv4 or IPv6) or packed bytes."""
    def packed(a: str | bytes) -> np.ndarray:
        b = a if isinstance(a, bytes) else ipaddress.ip_address(a).packed
        return np.frombuffer(b, dtype=np.uint8).reshape(1, -1)

    return community_ids(packed(src), packed(dst), [proto], [sport or 0], [dport or 0], seed)[0]
