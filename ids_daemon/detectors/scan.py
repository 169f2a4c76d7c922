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
from . import _scan_kernel as _k
from .base import Finding, mark, pair_key

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
    Each generation is an open-addressing hash set of 64-bit keys (compiled): a spoofed SYN
    flood puts every SYN here."""

    def __init__(self, cap: int, counters: dict[str, int], counter: str):
        self.half = max(cap // 2, 1)
        self.cur = self._empty(1 << 12)
        self.old = self._empty(1 << 12)
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    @staticmethod
    def _empty(size: int):
        return (np.zeros(size, np.uint64), np.zeros(size, np.bool_), np.zeros(1, np.int64))

    def __len__(self) -> int:
        return int(self.cur[2][0] + self.old[2][0])

    def add(self, keys: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        tab, used, meta = self.cur
        need = int(meta[0]) + keys.size
        if 2 * need > tab.size:  # grow: at most half full
            size = tab.size
            while 2 * need > size:
                size <<= 1
            grown = self._empty(size)
            _k.set_add(grown[0], grown[1], grown[2], tab[used])
            self.cur = tab, used, meta = grown
        _k.set_add(tab, used, meta, keys)
        if meta[0] >= self.half:
            self.counters[self.counter] += int(self.old[2][0])
            self.old, self.cur = self.cur, self._empty(tab.size)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        out = np.zeros(keys.size, np.bool_)
        for tab, used, meta in (self.cur, self.old):
            if meta[0]:
                _k.set_has(tab, used, keys, out)
        return out


class _Table:
    """A bounded LRU table of the compiled kernel (`_scan_kernel.new_table`) with ``values``
    columns per node; evictions are counted in ``counters[counter]``."""

    def __init__(self, cap: int, counters: dict[str, int], counter: str, values: int):
        self.t = _k.new_table(cap, values)
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    def __len__(self) -> int:
        return int(self.t[0][_k.M_SIZE])

    def sync(self) -> None:
        """Move the evictions counted by the kernel into the counters."""
        meta = self.t[0]
        if meta[_k.M_EVICT]:
            self.counters[self.counter] += int(meta[_k.M_EVICT])
            meta[_k.M_EVICT] = 0


_CLS = {_k.C_PORTSCAN: "Recon-PortScan", _k.C_PINGSWEEP: "Recon-PingSweep", _k.C_DISCOVERY: "Recon-HostDiscovery"}
_WHAT = {_k.W_PORTS: "ports", _k.W_HOSTS: "hosts", _k.W_PINGED: "hosts pinged", _k.W_ARP: "unanswered ARP requests"}
_U64 = (1 << 64) - 1


_warm = False


def _warm_up() -> None:
    """Load (or compile) every kernel once per process, on a tiny vertical scan with a banner
    grab: a detector's first batch should not pay for it."""
    global _warm
    if _warm:
        return
    _warm = True
    n = 64
    out = []
    for t0 in (1000.0, 1001.0):
        b = PacketBatch.empty(n)
        b.ts[:] = t0 + np.arange(n) * 1e-3
        b.ethertype[:] = 0x0800
        b.ip_version[:] = 4
        b.proto[:] = 6
        b.l4_ok[:] = True
        b.ip_hdr_len[:] = 20
        b.l4_hdr_len[:] = 20
        b.ip_len[:] = 40
        b.src4[:] = 0x0A000001
        b.dst4[:] = 0x0A000002
        b.sport[:] = 40000
        b.dport[:] = np.arange(n) + (1 if t0 < 1001 else 101)  # the first batch's time out in the second
        b.tcp_flags[:] = TH_SYN
        b.tcp_flags[1::4] = TH_ACK  # bare ACK probes
        b.tcp_flags[-2] = TH_ACK | 0x08  # data to the probed host
        b.ip_len[-2] = 80
        b.src4[-1], b.dst4[-1], b.sport[-1], b.dport[-1] = 0x0A000002, 0x0A000001, 5, 40000
        b.tcp_flags[-1] = TH_RST | TH_ACK
        out.append(b)
    det = ScanDetector(ScanDetectorConfig(max_pending=1024, max_groups=64))
    for b in out:
        det.process(b, np.full(len(b), -1, np.int16))


class ScanDetector:
    name = "scan"

    def __init__(self, cfg: ScanDetectorConfig | None = None):
        _warm_up()
        self.cfg = cfg or ScanDetectorConfig()
        self.counters: dict[str, int] = {"probes": 0, "failed_probes": 0, "scanners": 0}
        # unanswered probes: key -> (ts, src, host, port, kind, from an OS stack)
        self.pending = _Table(self.cfg.max_pending, self.counters, "pending_evictions", _k.PENDING_VALUES)
        # (src, host, port << 8 | kind) -> (t0, answered, failed, members, first and last member block)
        self.groups = _Table(self.cfg.max_groups, self.counters, "group_evictions", _k.GROUP_VALUES)
        # src -> (until, class, evidence id)
        self.active = _Table(self.cfg.max_groups, self.counters, "scanner_evictions", _k.ACTIVE_VALUES)
        # (scanner, host) it probed
        self.targets = _Table(self.cfg.max_groups, self.counters, "target_evictions", _k.TARGET_VALUES)
        # the groups' members, in blocks of _k.BLOCK (a free list; grown when short)
        self._blocks = np.zeros(1024 * _k.BLOCK, np.uint64)
        self._bnext = np.zeros(1024, np.int64)
        self._bmeta = np.array([-1, 0, 1024], np.int64)  # free list head, high-water mark, blocks free
        self._info: dict[int, tuple[str, str]] = {}  # evidence id -> (victim, why)
        self._next_info = 0
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
                                           pair_key(dst[o], src[o], _ports(b.dport[o], b.sport[o]))]))
        if p_ack.any():
            a = np.flatnonzero(p_ack)
            mine = pair_key(src[a], dst[a], _ports(b.sport[a], b.dport[a]))
            p_ack[a[self.conns.contains(mine)]] = False
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

        def rev(port_: np.ndarray, kind_: int, m: np.ndarray) -> np.ndarray:  # keyed on the rows of m only
            return _key(dst[m], src[m], port_[m], kind_)

        answers = np.concatenate([rev(b.sport, K_TCP, a_tcp), rev(b.sport, K_ACK, a_tcp), rev(b.sport, K_UDP, a_udp),
                                  rev(zero, K_ICMP, a_icmp), rev(zero, K_ARP, a_arp)])
        resets = np.concatenate([rev(b.sport, K_TCP, rst), rev(b.sport, K_ACK, rst)])
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
        ts = np.ascontiguousarray(batch.ts, dtype=np.float64)
        end = float(ts[-1])
        src, dst = address_ids(batch)
        ua = None
        uk = np.zeros(0, np.uint64)
        at = np.zeros(0, np.int64)
        k_u = np.zeros(0, np.int64)
        failed = ev = pend = np.zeros(0, np.bool_)
        if pi.size:
            self.counters["probes"] += int(pi.size)
            keys = _key(src[pi], dst[pi], port[pi], kind[pi].astype(np.uint64))
            # np.unique(keys, return_index=True): a hash pass, then an (unstable) sort of the distinct keys
            uk, first = _k.first_seen(keys)
            order = np.argsort(uk)
            uk, at = uk[order], pi[first[order]]
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
            k_u = kind[at].astype(np.int64)
            timed = ~answered & ~reset & (end - ts[at] >= cfg.answer_s)
            failed = reset | timed
            counted = failed | (k_u == K_ICMP) | (k_u == K_PROTO)  # echo and protocol probes count at once
            ev = counted | answered
            pend = ~counted & ~answered
        if ua is None:
            ua = np.unique(answers)
        # events: (at, ts, src, host, port, kind, failed, from an OS stack) of this batch's probes
        # (each once) and of the earlier ones it resolves (answered, reset or timed out), in order
        evs = _k.batch_events(self.pending.t, uk, at, k_u, failed, ev, pend, ts, src, dst, port, stack,
                              ua.astype(np.uint64), resets.astype(np.uint64), rst_at.astype(np.int64),
                              end, float(cfg.answer_s))
        self.pending.sync()
        started: dict[int, int] = {}  # scanner -> index from which its frames are flagged
        if evs[0].size:
            self._count(evs, started)
        return self._flag(batch, verdict, kind, started)

    def _count(self, evs: list[np.ndarray], started: dict) -> None:
        """The events in order through the groups: a source crossing a threshold becomes a scanner."""
        cfg = self.cfg
        cnt = np.array([self.counters["failed_probes"], self.counters["scanners"]], np.int64)
        R = np.empty((evs[0].size, 10), np.int64)
        RF = np.empty(evs[0].size, np.float64)
        i, nrec = 0, 0
        while True:
            i, got = _k.count_events(i, *evs, self.groups.t, self._blocks, self._bnext, self._bmeta,
                                     self.active.t, self.targets.t, float(cfg.window_s),
                                     float(cfg.fail_ratio), float(cfg.hold_s), int(cfg.ports), int(cfg.hosts),
                                     int(cfg.ping_hosts), int(cfg.arp_hosts), cnt, self._next_info + nrec,
                                     R[nrec:], RF[nrec:])
            nrec += got
            if i < 0:
                break
            # out of member blocks: double them (the free list and high-water mark carry over)
            nb_ = self._bnext.size
            self._blocks = np.concatenate([self._blocks, np.zeros(nb_ * _k.BLOCK, np.uint64)])
            self._bnext = np.concatenate([self._bnext, np.zeros(nb_, np.int64)])
            self._bmeta[2] += nb_
        self.counters["failed_probes"], self.counters["scanners"] = int(cnt[0]), int(cnt[1])
        for tab in (self.groups, self.active, self.targets):
            tab.sync()
        for r in range(nrec):
            row = R[r].tolist()
            a, s, cls, gh, gp, what_c, k, h, p_ = row[:9]
            s, gh, h = s & _U64, gh & _U64, h & _U64
            what = _WHAT[what_c]
            victim = address_name(gh) if gh else (f"*:{gp}" if gp else "*")
            if what == "ports" and k == K_PROTO:
                what = f"IP protocols of {address_name(h)} probed without an answer"
            elif what == "ports":
                what = f"failed {_KIND_NAME[k]} probes to ports of {address_name(h)}"
            elif what == "hosts":
                what = f"failed {_KIND_NAME[k]} probes to hosts on port {p_}"
            self._info[self._next_info + r] = (victim, f"{row[9]} {what} in {float(RF[r]):.1f} s")
            started[s] = a
        self._next_info += nrec
        if len(self._info) > 2 * len(self.active) + 4096:  # drop the evidence of scanners no longer held
            nodes, _ = _k.t_keys(self.active.t)
            live = set(self.active.t[2][nodes, _k.A_INFO].tolist())
            self._info = {i_: v for i_, v in self._info.items() if i_ in live}

    def _flag(self, b: PacketBatch, verdict: np.ndarray, kind: np.ndarray, started: dict) -> list[Finding]:
        if not len(self.active):
            return []
        _, _, AN, AF = self.active.t
        _k.expire_before(self.active.t, _k.A_UNTIL, float(b.ts[0]))
        if not len(self.active):
            return []
        nodes, scanners = _k.t_keys(self.active.t)
        order = np.argsort(scanners)
        scanners = scanners[order]
        node_of = dict(zip(scanners.tolist(), nodes[order].tolist()))
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
        if len(self.targets):
            rows = np.flatnonzero((from_s | to_s) & ~(from_s & probe) & ~(to_s & reply))
            if rows.size:
                conv[rows] = _k.pairs_in(self.targets.t, np.ascontiguousarray(src[rows], dtype=np.uint64),
                                         np.ascontiguousarray(dst[rows], dtype=np.uint64))
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
            node = node_of[s]
            cls = _CLS[int(AN[node, _k.A_CLS])]
            victim, why = self._info[int(AN[node, _k.A_INFO])]
            # the hold lapses inside a batch too: rows count while each comes within hold_s of
            # the one before (or of the hold the scanner had), the first longer gap ends it
            t = b.ts[rows]
            gap = np.flatnonzero(np.diff(t) > self.cfg.hold_s)
            rows = rows[: gap[0] + 1] if gap.size else rows
            if t[0] > AF[node, _k.A_UNTIL]:
                continue
            sub = np.zeros(len(b), dtype=bool)
            sub[rows] = True
            mark(verdict, sub, cls)
            last = float(b.ts[rows].max())
            AF[node, _k.A_UNTIL] = max(float(AF[node, _k.A_UNTIL]), last + self.cfg.hold_s)
            findings.append(Finding(
                detector=self.name, cls=cls, first_ts=float(b.ts[rows].min()), last_ts=last,
                packets=int(rows.size), attacker=address_name(s), victim=victim,
                protocol="arp" if cls == "Recon-HostDiscovery" else ("icmp" if cls == "Recon-PingSweep" else "tcp"),
                evidence=f"{address_name(s)}: {why}"))
        return findings
