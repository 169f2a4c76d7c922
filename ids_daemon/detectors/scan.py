"""Scans: one source failing to reach many ports of a host or many hosts on a port.

A probe is a TCP segment that opens or pokes a connection without acknowledging
anything (SYN, FIN, NULL, XMAS), a UDP datagram to a port not above its source port
(a client's request; a server's reply goes to a higher, ephemeral port), an ICMP or
ICMPv6 echo request, an ARP request, or an IP datagram of any other protocol (nmap -sO
tries each protocol number in turn; its "port" is the protocol, and it counts whether
answered or not: the answer is an ICMP error). IPv4 and IPv6 are handled alike (addresses as
`capture.batch.address_ids`); ARP is IPv4's alone. The probed (source, host, port) is answered when the host
sends anything back from that port (SYN-ACK, data, a UDP reply, an echo or ARP
reply) and failed when the host resets it or stays silent for ``answer_s``. Segments
with flags no stack sends together (SYN+FIN, SYN+RST, FIN+RST) are probes too. Bare
ACKs (nmap -sA, hping3 -A) count for vertical scans only, failed when reset or never
answered: a connection's last ACK is never answered, so one client closing connections
to many hosts on 443 must not look like a sweep, while twenty unanswered ACKs to twenty
ports of one host are no connection's.

* vertical: failed probes to ``ports`` distinct ports (or IP protocols) of one host within
  ``window_s``;
* horizontal: failed probes to ``hosts`` distinct hosts on one port;
* ping sweep: echo requests to ``ping_hosts`` distinct hosts (answered or not);
* host discovery: unanswered ARP requests for ``arp_hosts`` distinct addresses.

A group also needs ``fail_ratio`` of its probes to have failed, so a busy client whose
connections mostly succeed is never a scanner. Once a source crosses a threshold it
is a scanner for ``hold_s`` after its last probe: its probes and the replies to it
(RST, SYN-ACK, ICMP errors and echo replies, UDP and ARP replies) are flagged, from
the probe that crossed the threshold on, and so is everything it exchanges with the
hosts it probed: a vulnerability scanner's banner grabs and exploit checks on the ports
it found open (X-Scan: two thirds of its packets) are the scan too.

Connection attempts of an operating system's stack (SYNs with more options than an
MSS) count for vertical scans only: a P2P client fails to reach many peers on one port
(Gnutella: 20 hosts on 6346 in a second), and so does a browser whose network broke.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import ETH_P_ARP, STATUS_OK, TH_ACK, TH_FIN, TH_RST, TH_SYN, PacketBatch, address_ids, address_name
from ..config import ScanDetectorConfig
from .base import LRU, Finding, mark, pair_key

K_TCP, K_UDP, K_ACK, K_ICMP, K_ARP, K_PROTO = 0, 1, 2, 3, 4, 5
_KIND_NAME = {K_TCP: "tcp", K_UDP: "udp", K_ACK: "tcp", K_ICMP: "icmp", K_ARP: "arp", K_PROTO: "ip"}
_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)


def _key(src: np.ndarray, host: np.ndarray, port: np.ndarray, kind: np.ndarray | int) -> np.ndarray:
    """64-bit key of (source, host, port, kind) (a multiplicative mix: collisions are negligible)."""
    b = (port.astype(np.uint64) << np.uint64(8)) | np.asarray(kind, dtype=np.uint64)
    return pair_key(src, host, b)


def _ports(sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    return (sport.astype(np.uint64) << np.uint64(16)) | dport.astype(np.uint64)


def _public_unicast(b: PacketBatch) -> np.ndarray:
    """Destinations a probe can go to: not multicast, broadcast or unspecified."""
    ip = b.dst4
    v4 = (ip >> 28 != 0xE) & (ip != 0xFFFFFFFF) & (ip & 0xFF != 0xFF) & (ip != 0)
    v6 = (b.dst6[:, 0] != 0xFF) & b.dst6.any(axis=1)
    return np.where(b.ip_version == 6, v6, v4)


class _Connections:
    """(sender, sender port, peer, peer port) of the TCP connections seen opening (a SYN or
    SYN-ACK), as a set in two generations: the current one, and the one before it, dropped
    (its entries counted in ``counters[counter]``) when the current one reaches half of ``cap``.
    Bulk inserts and lookups at set speed: a spoofed SYN flood puts every SYN here."""

    def __init__(self, cap: int, counters: dict[str, int], counter: str):
        self.half = max(cap // 2, 1)
        self.cur: set[int] = set()
        self.old: set[int] = set()
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    def add(self, keys: list[int]) -> None:
        self.cur.update(keys)
        if len(self.cur) >= self.half:
            self.counters[self.counter] += len(self.old)
            self.old, self.cur = self.cur, set()

    def __contains__(self, key: int) -> bool:
        return key in self.cur or key in self.old


class _Group:
    __slots__ = ("t0", "members", "answered", "failed")

    def __init__(self, t0: float):
        self.t0 = t0
        self.members: set[int] = set()
        self.answered = 0
        self.failed = 0


class ScanDetector:
    name = "scan"

    def __init__(self, cfg: ScanDetectorConfig | None = None):
        self.cfg = cfg or ScanDetectorConfig()
        self.counters: dict[str, int] = {"probes": 0, "failed_probes": 0, "scanners": 0}
        self.pending = LRU(self.cfg.max_pending, self.counters, "pending_evictions")  # key -> (ts, src, host, port, kind)
        self.groups = LRU(self.cfg.max_groups, self.counters, "group_evictions")  # gkey -> _Group
        self.active = LRU(self.cfg.max_groups, self.counters, "scanner_evictions")  # src -> [until, cls, victim, why]
        self.targets = LRU(self.cfg.max_groups, self.counters, "target_evictions")  # (scanner, host) it probed -> None
        # connections seen opening, keyed as (sender, sport, peer, dport) of either side's later segments
        self.conns = _Connections(self.cfg.max_pending, self.counters, "connection_evictions")

    # -- probes and answers of one batch, as arrays ------------------------------------------
    def _probes(self, b: PacketBatch):
        ok = (b.status == STATUS_OK) & (b.ip_version > 0) & b.l4_ok
        f = b.tcp_flags
        tcp = ok & (b.proto == 6)
        udp = ok & (b.proto == 17)
        v6 = b.ip_version == 6
        icmp = ok & np.where(v6, b.proto == 58, b.proto == 1)
        echo_req = np.where(v6, b.icmp_type == 128, b.icmp_type == 8)
        echo_rep = np.where(v6, b.icmp_type == 129, b.icmp_type == 0)
        pay = b.ip_len.astype(np.int64) - b.ip_hdr_len - b.l4_hdr_len
        dst_ok = _public_unicast(b)
        # flag sets no stack sends (SYN with FIN or RST, FIN with RST: unicornscan's all-six) are
        # crafted probes whatever else they carry
        crafted = tcp & ((f & (TH_SYN | TH_FIN) == TH_SYN | TH_FIN) | (f & (TH_SYN | TH_RST) == TH_SYN | TH_RST)
                         | (f & (TH_FIN | TH_RST) == TH_FIN | TH_RST))
        p_tcp = tcp & ((f & (TH_ACK | TH_RST) == 0) | crafted) & dst_ok
        p_ack = tcp & (f & 0x3F == TH_ACK) & (pay <= 0) & dst_ok
        # a segment between the two ports of a connection seen opening (the SYN or the SYN-ACK) is
        # that connection's, never a probe: a loaded server's bare ACKs to the ephemeral ports of a
        # client that resets its connections (an HTTP flood) are no scan of the client's ports
        src, dst = address_ids(b)
        opening = tcp & (f & (TH_SYN | TH_RST) == TH_SYN) & ~crafted
        if opening.any():
            o = np.flatnonzero(opening)
            # either side's later segments: (sender, sport, peer, dport) both ways
            self.conns.add(np.concatenate([pair_key(src[o], dst[o], _ports(b.sport[o], b.dport[o])),
                                           pair_key(dst[o], src[o], _ports(b.dport[o], b.sport[o]))]).tolist())
        if p_ack.any():
            a = np.flatnonzero(p_ack)
            mine = pair_key(src[a], dst[a], _ports(b.sport[a], b.dport[a])).tolist()
            p_ack[a[[k in self.conns for k in mine]]] = False
        p_udp = udp & (b.dport <= b.sport) & dst_ok
        p_icmp = icmp & echo_req & dst_ok
        # other IP protocols (a benign capture carries at most one besides TCP, UDP and ICMP: GRE, IGMP, ESP...)
        p_proto = ((b.status == STATUS_OK) & (b.ip_version > 0) & ~np.isin(b.proto, (1, 6, 17, 58)) & dst_ok)
        arp = (b.ethertype == ETH_P_ARP) & (b.status == STATUS_OK)
        p_arp = arp & (b.arp_op == 1) & (b.src4 != 0) & (b.src4 != b.dst4)
        kind = np.full(len(b), -1, dtype=np.int8)
        kind[p_arp], kind[p_icmp], kind[p_udp], kind[p_ack], kind[p_tcp] = K_ARP, K_ICMP, K_UDP, K_ACK, K_TCP
        kind[p_proto] = K_PROTO
        port = np.where((kind == K_ICMP) | (kind == K_ARP), 0, np.where(kind == K_PROTO, b.proto, b.dport))
        port = port.astype(np.uint16)
        # answers: what the host sends back, keyed as the probe it answers
        a_tcp = tcp & (f & TH_RST == 0) & (f & TH_ACK != 0)
        rst = tcp & (f & TH_RST != 0)
        a_udp = udp
        a_icmp = icmp & echo_rep
        a_arp = arp & (b.arp_op == 2)
        zero = np.zeros(len(b), dtype=np.uint16)
        rev = lambda port_, kind_: _key(dst, src, port_, kind_)  # noqa: E731
        answers = np.concatenate([rev(b.sport, K_TCP)[a_tcp], rev(b.sport, K_ACK)[a_tcp], rev(b.sport, K_UDP)[a_udp],
                                  rev(zero, K_ICMP)[a_icmp], rev(zero, K_ARP)[a_arp]])
        resets = np.concatenate([rev(b.sport, K_TCP)[rst], rev(b.sport, K_ACK)[rst]])
        ans_at = np.concatenate([np.flatnonzero(a_tcp), np.flatnonzero(a_tcp), np.flatnonzero(a_udp),
                                 np.flatnonzero(a_icmp), np.flatnonzero(a_arp)])
        rst_at = np.concatenate([np.flatnonzero(rst), np.flatnonzero(rst)])
        # a SYN carrying more TCP options than an MSS came from an operating system's stack
        # (browsers, P2P clients, nmap -sT); address-sweeping scanners craft their probes
        stack = p_tcp & (f & TH_SYN != 0) & (b.l4_hdr_len > 24)
        return kind, port, answers, ans_at, resets, rst_at, stack

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        n = len(batch)
        if n == 0:
            return []
        cfg = self.cfg
        kind, port, answers, ans_at, resets, rst_at, stack = self._probes(batch)
        pi = np.flatnonzero(kind >= 0)
        ts = batch.ts
        end = float(ts[-1])
        events: list[tuple] = []  # (at, ts, src, host, port, kind, failed, from an OS stack)
        if pi.size:
            self.counters["probes"] += int(pi.size)
            src, dst = address_ids(batch)
            keys = _key(src[pi], dst[pi], port[pi], kind[pi].astype(np.uint64))
            uk, first = np.unique(keys, return_index=True)
            at = pi[first]
            # answered within the batch: by a reply at or after the probe
            a_last = np.full(uk.size, -1, dtype=np.int64)
            if answers.size:
                ua, inv = np.unique(answers, return_inverse=True)
                la = np.full(ua.size, -1, dtype=np.int64)
                np.maximum.at(la, inv, ans_at)
                pos = np.minimum(np.searchsorted(ua, uk), ua.size - 1)
                valid = ua[pos] == uk
                a_last[valid] = la[pos[valid]]
            answered = a_last >= at
            reset = np.isin(uk, resets)
            k_u = kind[at]
            timed = ~answered & ~reset & (end - ts[at] >= cfg.answer_s)
            failed = reset | timed
            pend = ~answered & ~failed
            cols = (at.tolist(), ts[at].tolist(), src[at].tolist(), dst[at].tolist(),
                    port[at].tolist(), k_u.tolist(), stack[at].tolist())
            for j, (a, t, s, h, p_, k, os_) in enumerate(zip(*cols)):
                if failed[j] or k == K_ICMP or k == K_PROTO:
                    events.append((a, t, s, h, p_, k, bool(failed[j]), os_))
                elif answered[j]:
                    events.append((a, t, s, h, p_, k, False, os_))
                elif pend[j]:
                    self.pending.touch(int(uk[j]), (t, s, h, p_, k, os_))
        # probes of earlier batches: answered, reset or timed out now
        if self.pending:
            for key in np.unique(answers).tolist():
                p = self.pending.pop(key, None)
                if p is not None:
                    events.append((0, *p[:5], False, p[5]))
            for key, a in zip(resets.tolist(), rst_at.tolist()):
                p = self.pending.pop(key, None)
                if p is not None:
                    events.append((a, *p[:5], True, p[5]))
            while self.pending:
                key, p = next(iter(self.pending.items()))
                if end - p[0] < cfg.answer_s:
                    break
                del self.pending[key]
                a = int(np.searchsorted(ts, p[0] + cfg.answer_s)) if p[0] >= ts[0] else 0
                events.append((min(a, n - 1), *p[:5], True, p[5]))
        started: dict[int, int] = {}  # scanner -> index from which its frames are flagged
        events.sort(key=lambda e: e[0])
        for a, t, s, h, p_, k, bad, os_ in events:
            if bad:
                self.counters["failed_probes"] += 1
            self._count(a, t, s, h, p_, k, bad, os_, started)
        return self._flag(batch, verdict, kind, started)

    def _count(self, a: int, t: float, s: int, h: int, p_: int, k: int, bad: bool, os_: bool, started: dict) -> None:
        cfg = self.cfg
        if k == K_ICMP:
            groups = [((s, 0, 0, K_ICMP), h, cfg.ping_hosts, "Recon-PingSweep", "hosts pinged")]
            bad = True  # every echo request counts: answered or not
        elif k == K_ARP:
            groups = [((s, 0, 0, K_ARP), h, cfg.arp_hosts, "Recon-HostDiscovery", "unanswered ARP requests")]
        elif k == K_PROTO:
            # the answer to a protocol probe is an ICMP error whose quoted header is not decoded, so every
            # protocol tried counts; no benign source uses more than one besides TCP, UDP and ICMP
            groups = [((s, h, 0, K_PROTO), p_, cfg.ports, "Recon-PortScan", "ports")]
            bad = True
        else:
            kk = K_TCP if k == K_ACK else k
            # the evidence text is written only when a group crosses its threshold: under a
            # spoofed flood every packet is a probe, and formatting it each time cost a fifth
            groups = [((s, h, 0, kk), p_, cfg.ports, "Recon-PortScan", "ports")]
            if k != K_ACK and not os_:  # connection attempts of an OS stack: vertical only
                groups.append(((s, 0, p_, kk), h, cfg.hosts, "Recon-PortScan", "hosts"))
        if s in self.active:
            self.targets.touch((s, h), None)
        for gkey, member, limit, cls, what in groups:
            g = self.groups.get_touch(gkey)
            if g is None or t - g.t0 > cfg.window_s:
                g = _Group(t)
                self.groups.touch(gkey, g)
            if not bad:
                g.answered += 1
                continue
            g.failed += 1
            if len(g.members) < 4 * limit:
                g.members.add(member)
            if len(g.members) >= limit and g.failed >= cfg.fail_ratio * (g.failed + g.answered):
                victim = address_name(gkey[1]) if gkey[1] else (f"*:{gkey[2]}" if gkey[2] else "*")
                for host in ((gkey[1],) if gkey[1] else g.members if k != K_ARP else ()):
                    self.targets.touch((s, host), None)
                st = self.active.get(s)
                if st is None:
                    self.counters["scanners"] += 1
                    if what == "ports" and k == K_PROTO:
                        what = f"IP protocols of {address_name(h)} probed without an answer"
                    elif what == "ports":
                        what = f"failed {_KIND_NAME[k]} probes to ports of {address_name(h)}"
                    elif what == "hosts":
                        what = f"failed {_KIND_NAME[k]} probes to hosts on port {p_}"
                    self.active.touch(s, [t + cfg.hold_s, cls, victim, f"{len(g.members)} {what} in "
                                          f"{t - g.t0:.1f} s"])
                    started[s] = a
                else:
                    st[0] = max(st[0], t + cfg.hold_s)

    def _flag(self, b: PacketBatch, verdict: np.ndarray, kind: np.ndarray, started: dict) -> list[Finding]:
        if not self.active:
            return []
        for s in [s for s, v in self.active.items() if v[0] < float(b.ts[0])]:
            del self.active[s]
        if not self.active:
            return []
        scanners = np.fromiter(self.active.keys(), dtype=np.uint64, count=len(self.active))
        order = np.argsort(scanners)
        scanners = scanners[order]
        start = np.array([started.get(int(s), 0) for s in scanners], dtype=np.int64)
        ok = (b.status == STATUS_OK)
        f = b.tcp_flags
        v6 = b.ip_version == 6
        tcp = ok & (b.ip_version > 0) & (b.proto == 6)
        src, dst = address_ids(b)
        from_s = np.isin(src, scanners) & ok
        to_s = np.isin(dst, scanners) & ok
        idx = np.arange(len(b))
        # the scanner's probes (and the ACK/RST that close a connect scan)
        probe = (kind >= 0) | (tcp & ((f & TH_RST != 0) | ((f & 0x3F) == TH_ACK)))
        # the replies to it
        reply = ((tcp & ((f & TH_RST != 0) | ((f & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK))))
                 | ((b.proto == 1) & (b.ip_version == 4) & np.isin(b.icmp_type, (0, 3, 11)))
                 | ((b.proto == 58) & v6 & np.isin(b.icmp_type, (129, 1, 3)))
                 | ((b.proto == 17) & (b.ip_version > 0))
                 | ((b.ethertype == ETH_P_ARP) & (b.arp_op == 2)))
        findings = []
        mask = np.zeros(len(b), dtype=bool)
        # everything else exchanged with a host the scanner probed (a handful of rows: its traffic only)
        conv = np.zeros(len(b), dtype=bool)
        if self.targets:
            for i in np.flatnonzero((from_s | to_s) & ~(from_s & probe) & ~(to_s & reply)).tolist():
                conv[i] = (int(src[i]), int(dst[i])) in self.targets or (int(dst[i]), int(src[i])) in self.targets
        for who, col, sel in ((0, src, from_s & (probe | conv)), (1, dst, to_s & (reply | conv))):
            if not sel.any():
                continue
            j = np.searchsorted(scanners, col[sel])
            rows = idx[sel][idx[sel] >= start[j]]
            mask[rows] = True
        if not mask.any():
            return []
        cls_rows: dict[int, np.ndarray] = {}
        src_of = np.where(np.isin(src[mask], scanners), src[mask], dst[mask])
        rows_all = np.flatnonzero(mask)
        for s in np.unique(src_of).tolist():
            cls_rows[s] = rows_all[src_of == s]
        for s, rows in cls_rows.items():
            st = self.active[s]
            # the hold lapses inside a batch too: rows count while each comes within hold_s of
            # the one before (or of the hold the scanner had), the first longer gap ends it
            t = b.ts[rows]
            gap = np.flatnonzero(np.diff(t) > self.cfg.hold_s)
            rows = rows[: gap[0] + 1] if gap.size else rows
            if t[0] > st[0]:
                continue
            sub = np.zeros(len(b), dtype=bool)
            sub[rows] = True
            mark(verdict, sub, st[1])
            last = float(b.ts[rows].max())
            st[0] = max(st[0], last + self.cfg.hold_s)
            findings.append(Finding(
                detector=self.name, cls=st[1], first_ts=float(b.ts[rows].min()), last_ts=last,
                packets=int(rows.size), attacker=address_name(s), victim=st[2],
                protocol="arp" if st[1] == "Recon-HostDiscovery" else ("icmp" if st[1] == "Recon-PingSweep" else "tcp"),
                evidence=f"{address_name(s)}: {st[3]}"))
        return findings
