"""`PacketBatch`: the one type that flows from a packet source to the meter.

Every field is a numpy column of the same length; nothing is created per packet.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass, field, fields

import numpy as np

# Link types (LINKTYPE_* values as written in pcap/pcapng headers).
LINKTYPE_NULL = 0  # BSD loopback, family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6
LINKTYPE_LOOP = 108  # OpenBSD loopback, family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
# DLT_RAW is 12 on most BSDs and 14 on OpenBSD; files in the wild carry both.
LINKTYPE_RAW_ALIASES = (12, 14, LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6)
SUPPORTED_LINKTYPES = frozenset(
    (LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)
    + LINKTYPE_RAW_ALIASES
)

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

# status column
STATUS_OK = 0  # decoded IPv4, IPv6 or ARP
STATUS_OTHER = 1  # well-formed frame that is not IP/ARP (e.g. LLDP): skipped by the meter
STATUS_MALFORMED = 2  # header that cannot be decoded: counted and skipped

# why a frame is malformed (the `reason` column); the text is what the user reads
MALFORMED_REASONS = {
    0: "",
    1: "link-layer header cut short",
    2: "unsupported link type",
    3: "IP version nibble does not match the link's protocol",
    4: "IPv4 header length invalid or header cut short",
    5: "IP total length larger than the frame",
    6: "IPv6 header cut short",
    7: "ARP packet cut short",
    8: "record length larger than any frame (corrupt record)",
    9: "ICMP type outside the assigned range",
}

# http_req column: a TCP segment that starts an HTTP request, with its header's blank line
# in the segment (COMPLETE) or not (PARTIAL: the rest follows, or never does)
HTTP_REQ_COMPLETE, HTTP_REQ_PARTIAL = 1, 2

# TCP flag bits as on the wire
TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK, TH_URG, TH_ECE, TH_CWR = 1, 2, 4, 8, 16, 32, 64, 128


@dataclass
class PacketBatch:
    """Decoded headers of a batch of frames, one numpy column per field.

    IPv4 and ARP addresses are in ``src4``/``dst4`` (for ARP: sender and target
    protocol address), IPv6 ones in ``src6``/``dst6`` (16 bytes each).
    ``frame_len`` is the frame length as the CICIoT2023 extractor measured it:
    the Ethernet header (plus VLAN tags) plus the IP total length, padding
    excluded; for ARP the whole frame, padding included (60 on the wire).
    """

    ts: np.ndarray  # float64 epoch seconds
    cap_len: np.ndarray  # uint32
    wire_len: np.ndarray  # uint32
    linktype: np.ndarray  # uint16
    ethertype: np.ndarray  # uint16, after VLAN tags; inferred for raw IP/null links
    vlan_count: np.ndarray  # uint8
    ip_version: np.ndarray  # uint8: 4, 6 or 0
    src4: np.ndarray  # uint32
    dst4: np.ndarray  # uint32
    src6: np.ndarray  # (n, 16) uint8
    dst6: np.ndarray  # (n, 16) uint8
    proto: np.ndarray  # uint8, IPv4 protocol / IPv6 upper-layer header
    ttl: np.ndarray  # uint8, IPv4 TTL / IPv6 hop limit
    ip_hdr_len: np.ndarray  # uint16
    ip_len: np.ndarray  # uint32, IPv4 total length / 40 + IPv6 payload length
    frag_offset: np.ndarray  # uint16, in 8-byte units
    frag_mf: np.ndarray  # bool
    frag_df: np.ndarray  # bool
    l4_ok: np.ndarray  # bool: TCP/UDP/ICMP header present and decoded
    sport: np.ndarray  # uint16
    dport: np.ndarray  # uint16
    tcp_flags: np.ndarray  # uint16 (NS bit in 0x100)
    l4_hdr_len: np.ndarray  # uint16
    icmp_type: np.ndarray  # uint8
    icmp_code: np.ndarray  # uint8
    arp_op: np.ndarray  # uint16
    frame_len: np.ndarray  # uint32
    status: np.ndarray  # uint8: STATUS_*
    reason: np.ndarray  # uint8: key of MALFORMED_REASONS, 0 unless malformed
    # link-layer source and ARP sender hardware address, MACs as integers (0 when absent);
    # the ARP and DNS columns feed the protocol-fact detectors (ids_daemon/detectors)
    eth_src: np.ndarray  # uint64
    arp_sha: np.ndarray  # uint64
    dns_ok: np.ndarray  # bool: UDP port 53 message whose header (and question) decoded
    dns_txid: np.ndarray  # uint16
    dns_qr: np.ndarray  # bool: a response
    dns_rcode: np.ndarray  # uint8
    dns_ancount: np.ndarray  # uint16
    dns_qhash: np.ndarray  # uint64: hash of the first question (name lower-cased, type, class)
    dns_ahash: np.ndarray  # uint64: order-independent hash of the A/AAAA answers and the rcode
    # TCP payload facts for the web and brute-force detectors (decode.HTTP_SIGNATURES, AUTH_*)
    http_sig: np.ndarray  # uint8: 0, or the code of the first attack signature an HTTP request matched
    auth_sig: np.ndarray  # uint8: 0, AUTH_FAILURE (a cleartext login refused), AUTH_SSH_BANNER (an SSH server)
    # TCP sequence and acknowledgement numbers (whether a segment belongs to a connection whose
    # handshake was seen), the ARP target hardware address (a host's binding as the sender
    # states it), and whether a TCP segment opens an HTTP request (HTTP_REQ_*: its header
    # complete or not: slow HTTP sends headers that never end)
    tcp_seq: np.ndarray  # uint32
    tcp_ack: np.ndarray  # uint32
    arp_tha: np.ndarray  # uint64
    http_req: np.ndarray  # uint8: 0, HTTP_REQ_COMPLETE, HTTP_REQ_PARTIAL
    # a TCP segment that shows a remote command shell at work (decode.SHELL_*: its banner, `id`
    # output, a command line that fetches and runs a program): the backdoor detector's
    shell_sig: np.ndarray  # uint8
    # the IP header an ICMP/ICMPv6 error quotes (destination unreachable, time exceeded, parameter
    # problem, packet too big): its source and destination as `address_ids`, its protocol and (TCP,
    # UDP, first fragment) ports; 0 when the frame is no such error or the quote is cut short (the
    # reflection detector's backscatter)
    icmp_in_src: np.ndarray  # uint64
    icmp_in_dst: np.ndarray  # uint64
    icmp_in_proto: np.ndarray  # uint8
    icmp_in_sport: np.ndarray  # uint16
    icmp_in_dport: np.ndarray  # uint16
    first_index: int = 0  # number of the batch's first frame in its source (0-based)
    source: str = field(default="", compare=False)
    # The frames' bytes as captured, back to back in one uint8 buffer, frame i at
    # raw[raw_off[i]:raw_off[i + 1]] (without a VLAN tag the NIC stripped): kept only when the
    # source is asked to (alert_pcap, `ids_daemon.sinks.alertpcap`); None otherwise. take()
    # and concat() leave them out: the alert pcap takes them from the batch as read.
    raw: np.ndarray | None = field(default=None, compare=False, repr=False)
    raw_off: np.ndarray | None = field(default=None, compare=False, repr=False)

    _DTYPES = {
        "ts": np.float64, "cap_len": np.uint32, "wire_len": np.uint32, "linktype": np.uint16,
        "ethertype": np.uint16, "vlan_count": np.uint8, "ip_version": np.uint8,
        "src4": np.uint32, "dst4": np.uint32, "proto": np.uint8, "ttl": np.uint8,
        "ip_hdr_len": np.uint16, "ip_len": np.uint32, "frag_offset": np.uint16,
        "frag_mf": np.bool_, "frag_df": np.bool_, "l4_ok": np.bool_, "sport": np.uint16,
        "dport": np.uint16, "tcp_flags": np.uint16, "l4_hdr_len": np.uint16,
        "icmp_type": np.uint8, "icmp_code": np.uint8, "arp_op": np.uint16,
        "frame_len": np.uint32, "status": np.uint8, "reason": np.uint8,
        "eth_src": np.uint64, "arp_sha": np.uint64, "dns_ok": np.bool_, "dns_txid": np.uint16,
        "dns_qr": np.bool_, "dns_rcode": np.uint8, "dns_ancount": np.uint16, "dns_qhash": np.uint64,
        "dns_ahash": np.uint64, "http_sig": np.uint8, "auth_sig": np.uint8,
        "tcp_seq": np.uint32, "tcp_ack": np.uint32, "arp_tha": np.uint64, "http_req": np.uint8, "shell_sig": np.uint8,
        "icmp_in_src": np.uint64, "icmp_in_dst": np.uint64, "icmp_in_proto": np.uint8,
        "icmp_in_sport": np.uint16, "icmp_in_dport": np.uint16,
    }

    @classmethod
    def column_names(cls) -> list[str]:
        """Names of the numpy columns, in declaration order."""
        return [f.name for f in fields(cls) if f.name not in ("first_index", "source", "raw", "raw_off")]

    @classmethod
    def empty(cls, n: int = 0, source: str = "", first_index: int = 0) -> "PacketBatch":
        """A batch of ``n`` zeroed rows (the decoder fills them in place)."""
        cols = {name: np.zeros(n, dtype=dt) for name, dt in cls._DTYPES.items()}
        cols["src6"] = np.zeros((n, 16), dtype=np.uint8)
        cols["dst6"] = np.zeros((n, 16), dtype=np.uint8)
        return cls(**cols, first_index=first_index, source=source)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: np.ndarray | slice) -> "PacketBatch":
        """Rows selected by a boolean mask, an index array or a slice (the frame bytes
        are kept for a slice of consecutive rows, dropped otherwise)."""
        if isinstance(index, np.ndarray) and index.dtype == np.bool_:
            # a mask turned into row numbers once: masking each of the ~60 columns counts the
            # mask again every time (8 ms for a 32k-frame batch against 0.7 ms for this)
            index = np.flatnonzero(index)
        if isinstance(index, np.ndarray):
            cols = {name: getattr(self, name).take(index, axis=0) for name in self.column_names()}
        else:
            cols = {name: getattr(self, name)[index] for name in self.column_names()}
        out = PacketBatch(**cols, first_index=self.first_index, source=self.source)
        if self.raw_off is not None and isinstance(index, slice) and index.step in (None, 1):
            a, b, _ = index.indices(len(self))
            off = self.raw_off[a:max(a, b) + 1]
            out.raw, out.raw_off = self.raw[off[0]:off[-1]], off - off[0]
        return out

    @classmethod
    def concat(cls, batches: list["PacketBatch"]) -> "PacketBatch":
        """One batch holding the rows of several, in order."""
        if not batches:
            return cls.empty()
        cols = {name: np.concatenate([getattr(b, name) for b in batches]) for name in cls.column_names()}
        return cls(**cols, first_index=batches[0].first_index, source=batches[0].source)


def mac_to_str(mac: int) -> str:
    """aa:bb:cc:dd:ee:ff for a MAC held as an integer (output only)."""
    m = int(mac)
    return ":".join(f"{(m >> s) & 0xFF:02x}" for s in (40, 32, 24, 16, 8, 0))


def ipv4_str(addr: int) -> str:
    """Dotted quad of one uint32 address (output only)."""
    a = int(addr)
    return f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"


def ipv4_to_str(addr: np.ndarray) -> np.ndarray:
    """Dotted-quad strings for a uint32 column (one vectorised pass, used for output only)."""
    a = np.asarray(addr, dtype=np.uint32)
    parts = [((a >> s) & 0xFF).astype(str) for s in (24, 16, 8, 0)]
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "."), p)
    return out


def ipv6_str(addr: bytes | np.ndarray) -> str:
    """One IPv6 address (16 bytes) as RFC 5952 writes it (output only)."""
    return socket.inet_ntop(socket.AF_INET6, bytes(addr))


def ip_strings(v4: np.ndarray, v6: np.ndarray, is6: np.ndarray) -> np.ndarray:
    """Address strings of a column pair: dotted quads where ``is6`` is False, IPv6 text
    from the (n, 16) ``v6`` bytes where it is True (output only)."""
    out = ipv4_to_str(v4).astype(object)
    for i in np.flatnonzero(is6).tolist():
        out[i] = ipv6_str(v6[i])
    return out


# ---- one integer per address, for the detectors' tables ------------------------------------
# An IPv4 address is its own id (below 2^32); an IPv6 address is a 63-bit hash of its 16
# bytes with the top bit set, so the families never share an id. The hash is one-way: the
# text of the IPv6 addresses seen recently is kept in a bounded table for the findings.
ID_V6 = np.uint64(1 << 63)
_H1, _H2, _H3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x94D049BB133111EB)
_V6_NAMES: OrderedDict[int, bytes] = OrderedDict()
_V6_NAMES_MAX = 1 << 16


def v6_ids(v6: np.ndarray) -> np.ndarray:
    """The id of each IPv6 address of an (n, 16) uint8 array (no name is remembered)."""
    w = np.ascontiguousarray(v6).view(np.uint64).reshape(-1, 2)
    with np.errstate(over="ignore"):
        h = (w[:, 0] * _H1) ^ ((w[:, 1] + np.uint64(1)) * _H2)
        h ^= h >> np.uint64(31)
        h *= _H3
        h ^= h >> np.uint64(29)
    return h | ID_V6


def plain_ids(v4: np.ndarray, v6: np.ndarray, is6: np.ndarray) -> np.ndarray:
    """`address_ids` of one column pair without remembering IPv6 names: safe off the
    capture thread (the names table is the capture thread's)."""
    out = v4.astype(np.uint64)
    if is6.any():
        rows = np.flatnonzero(is6)
        out[rows] = v6_ids(v6[rows])
    return out


def _ids(v4: np.ndarray, v6: np.ndarray, is6: np.ndarray) -> np.ndarray:
    out = v4.astype(np.uint64)
    if is6.any():
        rows = np.flatnonzero(is6)
        h = v6_ids(v6[rows])
        out[rows] = h
        uniq, first = np.unique(h, return_index=True)
        for aid, j in zip(uniq.tolist(), first.tolist()):
            if aid in _V6_NAMES:
                _V6_NAMES.move_to_end(aid)
            else:
                _V6_NAMES[aid] = v6[rows[j]].tobytes()
        while len(_V6_NAMES) > _V6_NAMES_MAX:
            _V6_NAMES.popitem(last=False)
    return out


def address_ids(b: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
    """(source, destination) of each frame as one uint64 id (IPv4: the address; IPv6: a
    hash with the top bit set; ARP: the protocol addresses). Computed once per batch."""
    got = b.__dict__.get("_address_ids")
    if got is None:
        is6 = b.ip_version == 6
        got = (_ids(b.src4, b.src6, is6), _ids(b.dst4, b.dst6, is6))
        b.__dict__["_address_ids"] = got
    return got


def address_name(aid: int) -> str:
    """The text of an address id (`address_ids`): dotted quad or IPv6 (output only)."""
    aid = int(aid)
    if aid < (1 << 32):
        return ipv4_str(aid)
    raw = _V6_NAMES.get(aid)
    return ipv6_str(raw) if raw is not None else f"ipv6#{aid & ((1 << 63) - 1):016x}"


def multicast_dst(b: PacketBatch) -> np.ndarray:
    """True where the destination is a multicast or broadcast address (either family)."""
    v4 = (b.dst4 >> 28 == 0xE) | (b.dst4 == 0xFFFFFFFF)
    return np.where(b.ip_version == 6, b.dst6[:, 0] == 0xFF, v4)
