"""Vectorised header decoding: raw frames in one buffer → `PacketBatch`.

Every step works on whole columns (numpy fancy indexing), so the cost per packet is
a few array operations, not Python code. Fields are read with bounds checks against
the captured length; a header that does not fit is marked malformed, never read
past the frame.
"""

from __future__ import annotations

import hashlib
import re
import struct
from urllib.parse import unquote_plus

import numpy as np

from .batch import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    HTTP_REQ_COMPLETE,
    HTTP_REQ_PARTIAL,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW_ALIASES,
    STATUS_MALFORMED,
    STATUS_OK,
    STATUS_OTHER,
    PacketBatch,
    v6_ids,
)

_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
_IPPROTO_FRAGMENT6 = 44
_IPPROTO_AH = 51
_MAX_FRAME = 1 << 18  # libpcap's largest snap length: no link delivers more
# IANA "ICMP Type Numbers": 0-44 (several deprecated, still legal on the wire) and
# the two experimental types 253/254.
_ICMP4_ASSIGNED = np.zeros(256, dtype=bool)
_ICMP4_ASSIGNED[:45] = True
_ICMP4_ASSIGNED[[253, 254]] = True


class _Reader:
    """Bounds-clamped big-endian reads from one flat byte buffer."""

    def __init__(self, buf: np.ndarray):
        self.buf = buf
        self.last = buf.shape[0] - 1

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.buf[np.minimum(pos, self.last)]

    def u16(self, pos: np.ndarray) -> np.ndarray:
        return (self.u8(pos).astype(np.uint16) << 8) | self.u8(pos + 1)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        return (self.u16(pos).astype(np.uint32) << 16) | self.u16(pos + 2)

    def u48(self, pos: np.ndarray) -> np.ndarray:
        return (self.u16(pos).astype(np.uint64) << np.uint64(32)) | self.u32(pos + 2).astype(np.uint64)

    def block16(self, pos: np.ndarray) -> np.ndarray:
        idx = np.minimum(pos[:, None] + np.arange(16), self.last)
        return self.buf[idx]


def decode_frames(
    buf: np.ndarray,
    offsets: np.ndarray,
    cap_len: np.ndarray,
    wire_len: np.ndarray,
    ts: np.ndarray,
    linktype: np.ndarray | int,
    first_index: int = 0,
    source: str = "",
) -> PacketBatch:
    """Decode the frames ``buf[offsets[i] : offsets[i] + cap_len[i]]`` into a batch.

    ``linktype`` is one value for all frames or one per frame (pcapng files can
    mix interfaces). Frames of an unsupported link type are marked malformed.
    """
    n = int(offsets.shape[0])
    b = PacketBatch.empty(n, source=source, first_index=first_index)
    if n == 0:
        return b
    if buf.shape[0] == 0:
        buf = np.zeros(1, dtype=np.uint8)
    rd = _Reader(buf)
    off = offsets.astype(np.int64)
    cap = cap_len.astype(np.int64)
    b.ts[:] = ts
    b.cap_len[:] = cap_len
    b.wire_len[:] = wire_len
    lt = np.broadcast_to(np.asarray(linktype, dtype=np.uint16), (n,))
    b.linktype[:] = lt

    # ---- link layer: where L3 starts and which protocol it carries ----
    l2 = np.zeros(n, dtype=np.int64)
    et = np.zeros(n, dtype=np.uint16)
    vlan = np.zeros(n, dtype=np.int64)
    reason = np.zeros(n, dtype=np.uint8)

    def mark(mask: np.ndarray, code: int) -> None:
        reason[mask & (reason == 0)] = code

    # A record claiming a frame longer than any link carries is a corrupt record.
    mark(wire_len.astype(np.int64) > _MAX_FRAME, 8)

    # Links with an ethertype field: (link type, header length, where the ethertype is).
    masks = {}
    for code, hdr, et_at in ((LINKTYPE_ETHERNET, 14, 12), (LINKTYPE_LINUX_SLL, 16, 14), (LINKTYPE_LINUX_SLL2, 20, 0)):
        masks[code] = mask = lt == code
        if mask.any():
            short = mask & (cap < hdr)
            mark(short, 1)
            ok = mask & ~short
            et[ok] = rd.u16(off[ok] + et_at)
            l2[ok] = hdr
    eth = masks[LINKTYPE_ETHERNET]
    # link-layer source MAC: Ethernet bytes 6-11; Linux cooked headers carry the sender's
    # address (6 of its 8 bytes when the address length says 6)
    for code, at, halen_at in ((LINKTYPE_ETHERNET, 6, -1), (LINKTYPE_LINUX_SLL, 6, 4), (LINKTYPE_LINUX_SLL2, 12, 11)):
        mk = masks[code] & (reason == 0)
        if mk.any():
            if halen_at >= 0:
                hl = rd.u16(off[mk] + halen_at) if code == LINKTYPE_LINUX_SLL else rd.u8(off[mk] + halen_at)
                mk[np.flatnonzero(mk)[hl != 6]] = False
            b.eth_src[mk] = rd.u48(off[mk] + at)
    if eth.any():
        ok = eth & (reason == 0)
        for _ in range(2):  # QinQ: at most two stacked tags
            tagged = ok & np.isin(et, _VLAN_TPIDS)
            if not tagged.any():
                break
            trunc = tagged & (cap < l2 + 4)
            mark(trunc, 1)
            tagged &= ~trunc
            et[tagged] = rd.u16(off[tagged] + l2[tagged] + 2)
            l2[tagged] += 4
            vlan[tagged] += 1
        # 802.3 length field (LLC/SNAP frames such as STP): not IP
        et[ok & (et <= 1500)] = 0

    # Links without an ethertype: infer it from the IP version nibble.
    raw = np.isin(lt, LINKTYPE_RAW_ALIASES)
    null = (lt == LINKTYPE_NULL) | (lt == LINKTYPE_LOOP)
    for mask, hdr in ((raw, 0), (null, 4)):
        if mask.any():
            short = mask & (cap < hdr + 1)
            mark(short, 1)
            ok = mask & ~short
            l2[ok] = hdr
            ver = rd.u8(off[ok] + hdr) >> 4
            et[ok] = np.where(ver == 4, ETH_P_IP, np.where(ver == 6, ETH_P_IPV6, 0))
            wrong = np.zeros(n, dtype=bool)
            wrong[np.flatnonzero(ok)[(ver != 4) & (ver != 6)]] = True
            mark(wrong, 3)

    mark(~(eth | masks[LINKTYPE_LINUX_SLL] | masks[LINKTYPE_LINUX_SLL2] | raw | null), 2)
    b.ethertype[:] = et
    b.vlan_count[:] = vlan
    l3 = off + l2
    avail = cap - l2  # captured bytes from the start of L3
    complete = cap >= wire_len.astype(np.int64)  # not cut by the snap length
    # The released extractor re-encoded every frame as Ethernet: 14 bytes + tags.
    eth_hdr = 14 + 4 * vlan

    wire = wire_len.astype(np.int64)

    # ---- IPv4 ----
    v4 = (reason == 0) & (et == ETH_P_IP)
    if v4.any():
        i = np.flatnonzero(v4)
        p = l3[i]
        av = avail[i]
        vh = rd.u8(p)
        ihl = (vh & 0x0F).astype(np.int64) * 4
        tot = rd.u16(p + 2).astype(np.int64)
        badver = (vh >> 4) != 4
        badhdr = (av < 20) | (ihl < 20) | (av < ihl) | ((tot != 0) & (tot < ihl))
        # A complete frame must hold the whole IP packet; a snap-length cut one must
        # at least have come from a frame that could.
        badlen = np.where(complete[i], tot > av, tot > wire[i] - l2[i])
        code = np.where(badver, 3, np.where(badhdr, 4, np.where(badlen, 5, 0))).astype(np.uint8)
        reason[i] = code
        keep = code == 0
        i, p, av, ihl, tot = i[keep], p[keep], av[keep], ihl[keep], tot[keep]
        fr = rd.u16(p + 6)
        b.ip_version[i] = 4
        b.ip_hdr_len[i] = ihl
        b.ip_len[i] = tot
        b.frag_offset[i] = fr & 0x1FFF
        b.frag_mf[i] = (fr & 0x2000) != 0
        b.frag_df[i] = (fr & 0x4000) != 0
        b.ttl[i] = rd.u8(p + 8)
        b.proto[i] = rd.u8(p + 9)
        b.src4[i] = rd.u32(p + 12)
        b.dst4[i] = rd.u32(p + 16)
        # a total length of 0 (segmentation offload): dpkt keeps what was captured
        _finish_ip(rd, b, i, p, ihl, np.where(tot > 0, tot, av), av, complete[i], eth_hdr[i], icmp_proto=1)

    # ---- IPv6 ----
    v6 = (reason == 0) & (et == ETH_P_IPV6)
    if v6.any():
        i = np.flatnonzero(v6)
        p = l3[i]
        av = avail[i]
        plen = rd.u16(p + 4).astype(np.int64)
        badlen = np.where(complete[i], 40 + plen > av, 40 + plen > wire[i] - l2[i])
        code = np.where((rd.u8(p) >> 4) != 6, 3, np.where(av < 40, 6, np.where(badlen, 5, 0))).astype(np.uint8)
        reason[i] = code
        keep = code == 0
        i, p, av, plen = i[keep], p[keep], av[keep], plen[keep]
        nh = rd.u8(p + 6)
        b.ip_version[i] = 6
        b.ttl[i] = rd.u8(p + 7)
        b.src6[i] = rd.block16(p + 8)
        b.dst6[i] = rd.block16(p + 24)
        hl = np.full(i.shape[0], 40, dtype=np.int64)
        frag_off = np.zeros(i.shape[0], dtype=np.uint16)
        frag_m = np.zeros(i.shape[0], dtype=bool)
        for _ in range(4):  # walk a bounded number of extension headers
            ext = np.isin(nh, _IPV6_EXT) | (nh == _IPPROTO_FRAGMENT6) | (nh == _IPPROTO_AH)
            ext &= av >= hl + 8
            if not ext.any():
                break
            q = p[ext] + hl[ext]
            n_e = nh[ext]
            size = np.where(
                n_e == _IPPROTO_FRAGMENT6,
                8,
                np.where(n_e == _IPPROTO_AH, (rd.u8(q + 1).astype(np.int64) + 2) * 4,
                         (rd.u8(q + 1).astype(np.int64) + 1) * 8),
            )
            isfrag = n_e == _IPPROTO_FRAGMENT6
            fw = rd.u16(q + 2)
            ef = np.flatnonzero(ext)
            frag_off[ef[isfrag]] = fw[isfrag] >> 3
            frag_m[ef[isfrag]] = (fw[isfrag] & 1) != 0
            nh[ext] = rd.u8(q)
            hl[ext] += size
        b.proto[i] = nh
        b.ip_hdr_len[i] = np.minimum(hl, 0xFFFF)
        b.ip_len[i] = 40 + plen
        b.frag_offset[i] = frag_off
        b.frag_mf[i] = frag_m
        _finish_ip(rd, b, i, p, hl, 40 + plen, av, complete[i], eth_hdr[i], icmp_proto=58)

    # ---- ARP (IPv4 over Ethernet layout: 28 bytes) ----
    arp = (reason == 0) & (et == ETH_P_ARP)
    if arp.any():
        mark(arp & (avail < 28), 7)
        arp &= reason == 0
        i = np.flatnonzero(arp)
        p = l3[i]
        b.arp_op[i] = rd.u16(p + 6)
        sha6 = rd.u8(p + 4) == 6  # hardware address length: Ethernet MACs only
        b.arp_sha[i[sha6]] = rd.u48(p[sha6] + 8)
        b.arp_tha[i[sha6]] = rd.u48(p[sha6] + 18)
        b.src4[i] = rd.u32(p + 14)
        b.dst4[i] = rd.u32(p + 24)
        # The extractor's ARP parser keeps the bytes after the 28-byte body, so an ARP
        # frame counts its whole length, padding included (60 on the wire), with the
        # Ethernet header re-encoded without tags like every other frame.
        b.frame_len[i] = 14 + np.maximum(wire[i] - l2[i], 28)

    _decode_dns(buf, b, l3, avail)
    _decode_tcp_payload(buf, rd, b, l3, avail)

    # Only ICMP types someone assigned: a fuzzed or garbage type is not a message.
    icmp4 = (b.ip_version == 4) & (b.proto == 1) & b.l4_ok
    mark(icmp4 & ~_ICMP4_ASSIGNED[b.icmp_type], 9)
    ok = (b.ip_version > 0) | arp
    b.status[:] = STATUS_OTHER
    b.status[ok] = STATUS_OK
    b.status[reason > 0] = STATUS_MALFORMED
    b.reason[:] = reason
    return b


def _finish_ip(rd: _Reader, b: PacketBatch, i: np.ndarray, p: np.ndarray, hdr_len: np.ndarray, claim: np.ndarray,
               av: np.ndarray, complete: np.ndarray, eth_hdr: np.ndarray, icmp_proto: int) -> None:
    """Frame length and transport header of IP packets ``i`` (L3 at ``p``).

    ``claim`` is the packet length its header states. dpkt trimmed a packet to it, so
    on a complete frame the extractor's length is what was there up to the claim; a
    snap-length cut is not a shorter packet, so there the claim counts.
    """
    ipbytes = np.where(complete, np.minimum(claim, av), claim)
    b.frame_len[i] = eth_hdr + ipbytes
    _decode_l4(rd, b, i, p + hdr_len, np.minimum(claim, av) - hdr_len, icmp_proto)


def _decode_l4(rd: _Reader, b: PacketBatch, i: np.ndarray, p: np.ndarray, l4av: np.ndarray,
               icmp_proto: int) -> None:
    """TCP/UDP/ICMP headers of the first fragment; a header cut short leaves l4_ok False,
    as dpkt keeps such a packet as IP with an undecoded payload."""
    proto = b.proto[i]
    first = b.frag_offset[i] == 0
    tcp = first & (proto == 6) & (l4av >= 20)
    if tcp.any():
        t, q = i[tcp], p[tcp]
        doff = (rd.u8(q + 12) >> 4).astype(np.int64) * 4
        good = doff >= 20
        t, q, doff = t[good], q[good], doff[good]
        b.sport[t] = rd.u16(q)
        b.dport[t] = rd.u16(q + 2)
        b.tcp_flags[t] = rd.u8(q + 13).astype(np.uint16) | ((rd.u8(q + 12).astype(np.uint16) & 1) << 8)
        b.tcp_seq[t] = rd.u32(q + 4)
        b.tcp_ack[t] = rd.u32(q + 8)
        b.l4_hdr_len[t] = doff
        b.l4_ok[t] = True
    udp = first & (proto == 17) & (l4av >= 8)
    if udp.any():
        u, q = i[udp], p[udp]
        b.sport[u] = rd.u16(q)
        b.dport[u] = rd.u16(q + 2)
        b.l4_hdr_len[u] = 8
        b.l4_ok[u] = True
    icmp = first & (proto == icmp_proto) & (l4av >= 4)
    if icmp.any():
        c, q = i[icmp], p[icmp]
        b.icmp_type[c] = rd.u8(q)
        b.icmp_code[c] = rd.u8(q + 1)
        b.l4_hdr_len[c] = 8
        b.l4_ok[c] = True
        _decode_icmp_quote(rd, b, c, q, l4av[icmp], icmp_proto)


# ICMP errors, which quote the IP header of the datagram they answer (RFC 792, RFC 4443): destination
# unreachable, time exceeded, parameter problem (IPv4: 3, 11, 12; ICMPv6: 1, 3, 4 and 2, packet too big)
_ICMP4_ERRORS = np.zeros(256, dtype=bool)
_ICMP4_ERRORS[[3, 11, 12]] = True
_ICMP6_ERRORS = np.zeros(256, dtype=bool)
_ICMP6_ERRORS[[1, 2, 3, 4]] = True


def _decode_icmp_quote(rd: _Reader, b: PacketBatch, c: np.ndarray, q: np.ndarray, l4av: np.ndarray,
                       icmp_proto: int) -> None:
    """Source, destination (as `address_ids`, no IPv6 name kept), protocol and ports of the IP header an
    ICMP error quotes after its 8-byte header, when the whole quoted header is there and of the error's
    family (ports: TCP or UDP, a first fragment, their 4 bytes there; IPv6 extension headers not walked)."""
    if icmp_proto == 1:
        e = _ICMP4_ERRORS[b.icmp_type[c]] & (l4av >= 28)
        if not e.any():
            return
        c, r, av = c[e], q[e] + 8, l4av[e] - 8
        vh = rd.u8(r)
        ihl = (vh & 0x0F).astype(np.int64) * 4
        ok = ((vh >> 4) == 4) & (ihl >= 20) & (av >= ihl)
        c, r, av, ihl = c[ok], r[ok], av[ok], ihl[ok]
        proto = rd.u8(r + 9)
        b.icmp_in_proto[c] = proto
        b.icmp_in_src[c] = rd.u32(r + 12)
        b.icmp_in_dst[c] = rd.u32(r + 16)
        ports = ((proto == 6) | (proto == 17)) & ((rd.u16(r + 6) & 0x1FFF) == 0) & (av >= ihl + 4)
    else:
        e = _ICMP6_ERRORS[b.icmp_type[c]] & (l4av >= 48)
        if not e.any():
            return
        c, r, av = c[e], q[e] + 8, l4av[e] - 8
        ok = (rd.u8(r) >> 4) == 6
        c, r, av = c[ok], r[ok], av[ok]
        proto = rd.u8(r + 6)
        b.icmp_in_proto[c] = proto
        b.icmp_in_src[c] = v6_ids(rd.block16(r + 8))
        b.icmp_in_dst[c] = v6_ids(rd.block16(r + 24))
        ihl = np.full(c.shape[0], 40, np.int64)
        ports = ((proto == 6) | (proto == 17)) & (av >= 44)
    b.icmp_in_sport[c[ports]] = rd.u16(r[ports] + ihl[ports])
    b.icmp_in_dport[c[ports]] = rd.u16(r[ports] + ihl[ports] + 2)


# ---- DNS (UDP port 53): the few fields the DNS-spoofing detector compares ----
_H_MASK = (1 << 64) - 1


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _skip_name(m: bytes, pos: int) -> int:
    """Position after a (possibly compressed) domain name; -1 when malformed."""
    for _ in range(128):
        if pos >= len(m):
            return -1
        ln = m[pos]
        if ln == 0:
            return pos + 1
        if ln & 0xC0 == 0xC0:
            return pos + 2 if pos + 2 <= len(m) else -1
        if ln & 0xC0:
            return -1
        pos += 1 + ln
    return -1


def _dns_fields(m: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(txid, flags, ancount, qhash, ahash, ok) of one DNS message, or None."""
    if len(m) < 12:
        return None
    txid, flags, qd, an = struct.unpack_from("!HHHH", m, 0)
    if qd == 0:
        return None
    end = _skip_name(m, 12)
    if end < 0 or end + 4 > len(m):
        return None
    qhash = _h64(m[12:end].lower() + m[end:end + 4])
    pos = end + 4
    for _ in range(qd - 1):  # other questions (rare): skipped
        pos = _skip_name(m, pos)
        if pos < 0 or pos + 4 > len(m):
            return txid, flags, an, qhash, 0, 0
        pos += 4
    ahash = _h64(bytes((flags & 0x0F,)))
    for _ in range(min(an, 64)):
        pos = _skip_name(m, pos)
        if pos < 0 or pos + 10 > len(m):
            break  # cut by the snap length: the answers seen so far
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", m, pos)
        pos += 10
        if pos + rdlen > len(m):
            break
        if rtype in (1, 28):  # A/AAAA: the addresses a spoofer changes
            ahash = (ahash + _h64(m[pos - 10:pos - 8] + m[pos:pos + rdlen])) & _H_MASK
        pos += rdlen
    return txid, flags, an, qhash, ahash, 1


def _decode_dns(buf: np.ndarray, b: PacketBatch, l3: np.ndarray, avail: np.ndarray) -> None:
    """DNS header, question hash and answer hash of the UDP port-53 frames (a short Python
    loop over those frames only: names are variable length)."""
    dns = (b.l4_ok & (b.proto == 17) & ((b.sport == 53) | (b.dport == 53)) & (b.frag_offset == 0)
           & ~b.frag_mf)
    if not dns.any():
        return
    idx = np.flatnonzero(dns)
    start = l3[idx] + b.ip_hdr_len[idx].astype(np.int64) + 8
    stop = l3[idx] + np.minimum(b.ip_len[idx].astype(np.int64), avail[idx])
    for i, s0, s1 in zip(idx.tolist(), start.tolist(), stop.tolist()):
        if s1 - s0 < 12:
            continue
        r = _dns_fields(buf[s0:s1].tobytes())
        if r is None:
            continue
        txid, flags, an, qhash, ahash, ok = r
        b.dns_ok[i] = True
        b.dns_txid[i] = txid
        b.dns_qr[i] = bool(flags & 0x8000)
        b.dns_rcode[i] = flags & 0x0F
        b.dns_ancount[i] = an
        b.dns_qhash[i] = qhash
        b.dns_ahash[i] = ahash


# ---- TCP payload: HTTP request signatures and cleartext authentication replies ----------
# The first 4 payload bytes of every TCP segment are compared at once (one u32 per frame);
# only HTTP requests and the replies of cleartext login services reach the short Python
# loops below, which look at no more than HTTP_INSPECT bytes of each.
HTTP_INSPECT = 2048
_HTTP_METHODS = np.array([int.from_bytes(m, "big") for m in (
    b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"TRAC", b"CONN", b"PROP", b"MKCO",
    b"COPY", b"MOVE", b"LOCK", b"UNLO", b"SEAR")], dtype=np.uint32)
_LT = ord("<")  # a request line whose method is markup (reflected by the server's error page)

# (code, CICIoT2023 class, what, pattern): matched against the request head and the first body
# segment, lower-cased, as sent and URL-decoded once and twice ('+' as space). The first
# match in this order wins; a scanner's User-Agent outranks what its probes carry.
_SIGS: list[tuple[str, str, str]] = [
    ("VulnerabilityScan", "scanner user-agent",
     r"\nuser-agent:[^\n]*(nikto|sqlmap|nmap scripting engine|nmap nse|acunetix|w3af|dirbuster|wpscan|masscan"
     r"|zgrab|nessus|openvas|gobuster|wfuzz|nuclei|havij|netsparker|jaeles|arachni|skipfish|zmeu)"),
    ("VulnerabilityScan", "scanner header", r"\n(acunetix-product|x-scanner):"),
    # a command after a shell separator: alone (";id") or with a shell-like argument (";cat /etc/passwd")
    ("CommandInjection", "shell command",
     r"(;|\||&&|`)\s*(id|whoami|uname(\s+-a)?|ifconfig|ipconfig|netstat(\s+-\w+)?|pwd|dir|ls|set)\s*($|&|;|\||`|'|\"|\)|\s+http/)"),
    ("CommandInjection", "shell command with arguments",
     r"(;|\||&&|`)\s*(cat|ls|wget|curl|nc|ncat|bash|sh|echo|sleep|ping|dir|type|powershell|chmod|rm|more|head)"
     r"\s+(-\w|/|\.\.?/|\\\\|[a-z]:\\\\|https?://|\d+\s*($|&|;|\||`))"),
    ("CommandInjection", "shell path", r"(/bin/(ba)?sh\b|cmd(\.exe)?\s*/c\b|\bcmd\.exe\b|\bpowershell(\.exe)?\s+-)"),
    ("CommandInjection", "download and run", r"\b(wget|curl|tftp|fetch)\s+(-\S+\s+)*(https?|ftp)://"),
    ("CommandInjection", "shell substitution", r"(\$\(|`)\s*(cat|id|uname|whoami|ls|wget|curl|echo|sleep|nc|bash|sh)\b"),
    ("SqlInjection", "tautology", r"['\"]\s*\)?\s*(or|and|\|\||&&)\s+\(?\s*['\"]?\w+['\"]?\s*(=|<|>|like\b)"),
    ("SqlInjection", "union select", r"\bunion\b[\s/*()+]+(all[\s/*()]+|distinct[\s/*()]+)?select\b"),
    ("SqlInjection", "select from",
     r"\bselect\s+(\*|null\b|concat|count\s*\(|@@|[\w.()]+\s*,)[\s\S]{0,160}?\bfrom\b"),
    ("SqlInjection", "time/blind function", r"\b(sleep|benchmark|pg_sleep|extractvalue|updatexml)\s*\(|\bwaitfor\s+delay\b"),
    ("SqlInjection", "quote and comment", r"['\"]\s*\)?\s*(--|#|/\*)"),
    ("SqlInjection", "string concatenation", r"'\s*(\+|\|\|)\s*'"),
    ("SqlInjection", "schema probe", r"\binformation_schema\b|@@version\b|\bxp_cmdshell\b|\bsysobjects\b"),
    ("SqlInjection", "order by probe", r"\border\s+by\s+\d+\s*(--|#|/\*)"),
    ("XSS", "script tag", r"<\s*/?\s*script\b"),
    ("XSS", "javascript: URL", r"(=|['\"(])\s*javascript\s*:"),
    ("XSS", "event handler", r"<[^>]*\bon(error|load|mouseover|focus|click|mouseenter|toggle|animationstart)\s*="),
    ("XSS", "script call", r"\b(alert|prompt|confirm)\s*\(|document\.cookie|document\.domain|string\.fromcharcode"),
    ("XSS", "frame or svg", r"<\s*(iframe|svg|object|embed)\b"),
    ("XSS", "markup method", r"^<[^\s]*>\s+\S+\s+http/1\.[01]"),
    # CICIoT2023 has no path-traversal or file-inclusion class; these probes are what
    # vulnerability scanners send (nikto, X-Scan), so they count as a VulnerabilityScan
    ("VulnerabilityScan", "path traversal", r"(\.\.[/\\]){2,}|(/|\\)\.\.[/\\][^\n]*\b(etc|windows|boot\.ini|win\.ini)\b"),
    ("VulnerabilityScan", "system file", r"/etc/(passwd|shadow|hosts|issue)\b|\b(boot|win)\.ini\b|/proc/self/"),
    ("VulnerabilityScan", "php wrapper", r"\b(php|data|expect|zip|phar)://(input|filter|stdin|text|[a-z0-9+/=]{16})"),
    ("VulnerabilityScan", "remote include", r"=\s*(https?|ftp)://[^\s&]+(\.txt|\.php|\.inc)?\?+(&|\s|$)"),
    ("VulnerabilityScan", "null byte in URL", r"^[a-z]+ [^\s]*%00[^\n]* http/1\.[01]"),
]
HTTP_SIGNATURES: tuple[tuple[int, str, str], ...] = tuple((k + 1, c, w) for k, (c, w, _) in enumerate(_SIGS))
_SIG_RES = [(k + 1, re.compile(rx.encode(), re.MULTILINE)) for k, (_, _, rx) in enumerate(_SIGS)]

# auth_sig codes (cleartext login services, matched on the server's reply)
AUTH_FAILURE, AUTH_SSH_BANNER = 1, 2
_SSH = int.from_bytes(b"SSH-", "big")
_FAIL_PREFIX = {21: (b"530 ",), 110: (b"-ERR",), 25: (b"535 ",), 587: (b"535 ",)}
_IMAP_NO = re.compile(rb"^[\w.*]+ no ", re.IGNORECASE)
_TELNET_FAIL = re.compile(rb"login incorrect|login failed|authentication fail|incorrect password|access denied",
                          re.IGNORECASE)


# shell_sig column: a TCP segment that shows a remote command shell at work, whatever the port
# (the backdoor detector, ids_daemon/detectors/shell.py; Suricata's ATTACK_RESPONSE rules say the same)
SHELL_BANNER, SHELL_ID, SHELL_DROPPER = 1, 2, 3
SHELL_INSPECT = 1024
# a shell's own banner and `id` output are what a telnet or rlogin server sends its users
_SHELL_SERVICE_PORTS = frozenset((23, 513, 514, 2323))
_SHELL_SIGS: tuple[tuple[int, str, re.Pattern], ...] = tuple((c, w, re.compile(rx, re.IGNORECASE if i else 0)) for c, w, rx, i in (
    (SHELL_BANNER, "a Windows command shell's banner", rb"\AMicrosoft Windows( XP)? \[Version \d+\.\d+[\d.]*\]", 0),
    (SHELL_ID, "the output of id", rb"\Auid=\d+\([\w.$-]*\) gid=\d+\(", 0),
    (SHELL_DROPPER, "an FTP script that fetches a program", rb"\bftp(\.exe)?\s+(-\w+\s+)*-s:\S", 1),
    (SHELL_DROPPER, "tftp fetching a program", rb"\btftp(\.exe)?\s+(-i\s+\S+\s+get\s|(-\w+\s+)*-g\s)", 1),
    (SHELL_DROPPER, "a download made executable or piped to a shell",
     rb"\b(wget|curl)\s[^\n]*?(https?|ftp)://[^\n]*?(chmod\s+[+0-7]*[x0-7]|\|\s*(ba)?sh\b)", 0),
    (SHELL_DROPPER, "busybox asked for an applet that does not exist (a botnet's loader)", rb"/bin/busybox\s+[A-Z]{4,}\b", 0),
    (SHELL_DROPPER, "a program written byte by byte with echo", rb"echo\s+-\w*e\w*\s+['\"]?(\\x[0-9a-f]{2}){8}", 1),
    (SHELL_DROPPER, "certutil or PowerShell fetching a program",
     rb"certutil(\.exe)?\s[^\n]*-urlcache[^\n]*https?://|(DownloadFile|DownloadString|Invoke-WebRequest)[^\n]*https?://", 1),
))
SHELL_SIGNATURES: tuple[tuple[int, str], ...] = ((SHELL_BANNER, "a Windows command shell's banner"),
                                                 (SHELL_ID, "the output of id"),
                                                 (SHELL_DROPPER, "a command line that fetches and runs a program"))
# the first four bytes a segment must start with to be looked at: a shell's banner or `id` output,
# or a command that such a line starts with
_SHELL_HEADS = np.array(sorted({int.from_bytes(h, "big") for h in (
    b"Micr", b"uid=", b"echo", b"ECHO", b"Echo", b"/bin", b"busy", b"wget", b"curl", b"tftp", b"TFTP", b"cd /", b"cd %",
    b"cmd ", b"cmd.", b"CMD ", b"cmd/", b"powe", b"Powe", b"POWE", b"cert", b"IEX ", b"iex ", b"ftp ", b"sh -", b"bash",
    b"rm -", b"nohu")}), dtype=np.uint32)


def shell_signature(data: bytes, sport: int) -> tuple[int, str]:
    """(code, what) of the first remote-shell signature a TCP segment's payload (sent from
    ``sport``) matches, or (0, ""). A command line counts only in a segment of a few short lines
    (a loader's or an operator's command, not a page or a script downloaded in full), and a
    banner or `id` output not from a telnet or rlogin server (whose users get a shell by design)."""
    for code, what, rx in _SHELL_SIGS:
        if code == SHELL_DROPPER:
            if len(data) >= SHELL_INSPECT or data.count(b"\n") > 4:
                return 0, ""
        elif sport in _SHELL_SERVICE_PORTS:
            continue
        if rx.search(data):
            return code, what
    return 0, ""


def http_signature(data: bytes) -> int:
    """Code (index + 1 in HTTP_SIGNATURES) of the first signature an HTTP request matches, or 0."""
    raw = data[:HTTP_INSPECT].lower()
    texts = [raw]
    if b"%" in raw or b"+" in raw:
        once = unquote_plus(raw.decode("latin-1"), encoding="latin-1").encode("latin-1")
        texts.append(once)
        if b"%" in once:
            texts.append(unquote_plus(once.decode("latin-1"), encoding="latin-1").encode("latin-1"))
    # headers only for the scanner fingerprints; the request line, headers and body for the rest
    text = b"\n".join(texts)
    for code, rx in _SIG_RES:
        if rx.search(text):
            return code
    return 0


def _decode_tcp_payload(buf: np.ndarray, rd: _Reader, b: PacketBatch, l3: np.ndarray, avail: np.ndarray) -> None:
    tcp = b.l4_ok & (b.proto == 6)
    if not tcp.any():
        return
    idx = np.flatnonzero(tcp)
    start = l3[idx] + b.ip_hdr_len[idx].astype(np.int64) + b.l4_hdr_len[idx].astype(np.int64)
    stop = l3[idx] + np.minimum(b.ip_len[idx].astype(np.int64), avail[idx])
    plen = stop - start
    has = plen >= 4
    idx, start, stop = idx[has], start[has], stop[has]
    if not idx.size:
        return
    head = rd.u32(start)
    first = (head >> 24).astype(np.uint8)
    http = np.isin(head, _HTTP_METHODS) | ((first == _LT) & (stop - start >= 16))
    for i, s0, s1 in zip(idx[http].tolist(), start[http].tolist(), stop[http].tolist()):
        data = buf[s0:min(s1, s0 + HTTP_INSPECT)].tobytes()
        if data[0] == _LT and b" HTTP/1." not in data.split(b"\n", 1)[0].upper():
            continue
        b.http_sig[i] = http_signature(data)
        # a header that ends in this segment; slow HTTP (slowloris) never sends the blank line
        b.http_req[i] = HTTP_REQ_COMPLETE if buf[s0:s1].tobytes().find(b"\r\n\r\n") >= 0 else HTTP_REQ_PARTIAL
    sport = b.sport[idx]
    shell = ~http & np.isin(head, _SHELL_HEADS)
    for i, s0, s1, sp in zip(idx[shell].tolist(), start[shell].tolist(), stop[shell].tolist(), sport[shell].tolist()):
        b.shell_sig[i] = shell_signature(buf[s0:min(s1, s0 + SHELL_INSPECT)].tobytes(), sp)[0]
    b.auth_sig[idx[head == _SSH]] = AUTH_SSH_BANNER
    for port, prefixes in _FAIL_PREFIX.items():
        for pre in prefixes:
            b.auth_sig[idx[(sport == port) & (head == int.from_bytes(pre, "big"))]] = AUTH_FAILURE
    loop = (sport == 143) | (sport == 23)
    for i, s0, s1, sp in zip(idx[loop].tolist(), start[loop].tolist(), stop[loop].tolist(), sport[loop].tolist()):
        data = buf[s0:min(s1, s0 + 512)].tobytes()
        if (_IMAP_NO if sp == 143 else _TELNET_FAIL).search(data):
            b.auth_sig[i] = AUTH_FAILURE
