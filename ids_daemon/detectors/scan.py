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
it found open (two thirds of a vulnerability scanner's packets) are the scan too.

A source's first SYN, UDP datagram or echo request to a host the crowd-flood detector holds as
flooded with that kind is no probe (a spoofed crowd's address sends one; see `_probes`).

Connection attempts of an operating system's stack (SYNs with more options than an
MSS) count for vertical scans only: a P2P client fails to reach many peers on one port
(a P2P client: 20 peers on one port in a second), and so does a browser whose network broke.
Except on the remote login and administration ports (``sweep_ports``: telnet, SSH, SMB, RDP,
ADB, TR-069...): a worm such as Mirai's telnet scanners sweeps random addresses through its
OS stack (connect() with retransmitted SYNs), and no P2P client or browser addresses those
ports on host after host that never answers.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import TH_ACK, TH_RST, TH_SYN, PacketBatch, address_ids, address_name
from ..config import ScanDetectorConfig
from . import _scan_kernel as _k
from .base import CLASS_INDEX, Finding, Table, warm_once

K_TCP, K_UDP, K_ACK, K_ICMP, K_ARP, K_PROTO = 0, 1, 2, 3, 4, 5
_KIND_NAME = {K_TCP: "tcp", K_UDP: "udp", K_ACK: "tcp", K_ICMP: "icmp", K_ARP: "arp", K_PROTO: "ip"}


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


class _PairFilter:
    """(sender, flooded host) pairs that sent a held flood's datagram, for `_scan_kernel.classify`:
    two generations of bit filters of 16 bits per slot of the pending table (512 KB each by
    default, interleaved word by word so that a lookup reads one cache line), the current one and
    the one before it, cleared and made current when the current one has an eighth of its bits
    set (half a million pairs by default: 3.5 s of a spoofed flood of 150,000 packets/s, about a
    minute of one of 10,000). A pair then reads as seen when another set its bit about one time
    in eight or less: its first datagram is then a probe, as every datagram was before the rule.
    Sized to stay in the cache: twice as large cost three times as much per datagram (~110 ns)
    with the neighbours' load high."""

    def __init__(self, cap: int):
        words = 1 << max(4, (max(cap, 1) - 1).bit_length() - 2)
        self.F = np.zeros((words, 2), np.uint64)
        self.meta = np.zeros(2, np.int64)  # bits set in the current generation, its column
        self.limit = words * 64 // 8

    def rotate(self) -> None:
        """A new current generation once the current one is full enough."""
        if self.meta[0] >= self.limit:
            g = 1 - int(self.meta[1])
            self.F[:, g] = 0
            self.meta[:] = (0, g)


_CLS = {_k.C_PORTSCAN: "Recon-PortScan", _k.C_PINGSWEEP: "Recon-PingSweep", _k.C_DISCOVERY: "Recon-HostDiscovery"}
_CLS_INDEX = np.array([CLASS_INDEX[_CLS[c]] for c in range(len(_CLS))], dtype=np.int16)  # kernel class -> verdict
_WHAT = {_k.W_PORTS: "ports", _k.W_HOSTS: "hosts", _k.W_PINGED: "hosts pinged", _k.W_ARP: "unanswered ARP requests"}
_U64 = (1 << 64) - 1
_NO_HELD = (np.zeros(0, np.uint64), np.zeros(0, np.float64), np.zeros(0, np.float64))


def _warm_up() -> None:
    """Load (or compile) every kernel once per process, on a tiny vertical scan with a banner
    grab: a detector's first batch should not pay for it."""
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
        warm_once(_warm_up)
        self.cfg = cfg or ScanDetectorConfig()
        self.counters: dict[str, int] = {"probes": 0, "failed_probes": 0, "scanners": 0}
        # unanswered probes: key -> (ts, src, host, port, kind, from an OS stack)
        self.pending = Table(self.cfg.max_pending, self.counters, "pending_evictions", _k.PENDING_VALUES)
        # (src, host, port << 8 | kind) -> (t0, answered, failed, members, first and last member block)
        self.groups = Table(self.cfg.max_groups, self.counters, "group_evictions", _k.GROUP_VALUES)
        # src -> (until, class, evidence id)
        self.active = Table(self.cfg.max_groups, self.counters, "scanner_evictions", _k.ACTIVE_VALUES)
        # (scanner, host) it probed
        self.targets = Table(self.cfg.max_groups, self.counters, "target_evictions", _k.TARGET_VALUES)
        # the groups' members, in blocks of _k.BLOCK (a free list; grown when short)
        self._blocks = np.zeros(1024 * _k.BLOCK, np.uint64)
        self._bnext = np.zeros(1024, np.int64)
        self._bmeta = np.array([-1, 0, 1024], np.int64)  # free list head, high-water mark, blocks free
        self._info: dict[int, tuple[str, str]] = {}  # evidence id -> (victim, why)
        self._next_info = 0
        # connections seen opening, keyed as (sender, sport, peer, dport) of either side's later segments
        self.conns = _Connections(self.cfg.max_pending, self.counters, "connection_evictions")
        # the crowd-flood detector of the same set (`DetectorSet`), whose held floods' datagrams are no probes
        self.floods = None
        # (sender, flooded host) pairs that sent a held flood's datagram (their first is no probe)
        self.flood_pairs = _PairFilter(self.cfg.max_pending)
        # the login ports whose OS-stack SYNs still count for the horizontal rule (see `_k.classify`)
        self._sweep = np.zeros(65536, np.bool_)
        self._sweep[np.asarray(self.cfg.sweep_ports, dtype=np.int64)] = True

    # -- probes and answers of one batch ------------------------------------------------------
    def _probes(self, b: PacketBatch):
        """Each frame's probe kind (-1: none) and port, and whether it is an OS stack's SYN, with
        the frames' answer codes (`_scan_kernel.classify`); the connections seen opening (a SYN or
        SYN-ACK) are added to ``conns`` first: a segment between the two ports of such a
        connection is that connection's, never a bare-ACK probe (a loaded server's bare ACKs to
        the ephemeral ports of a client that resets its connections, an HTTP flood, are no scan
        of the client's ports). A source's first SYN, UDP datagram or echo request to a host that
        the crowd-flood detector holds as flooded with that kind is neither a probe nor a
        connection opening: a spoofed crowd's sources each send the host one, so each would wait
        in the pending table for ``answer_s`` and then open two groups that never fill, while the
        flood detector flags every one of them as the flood. A source that sends the flooded host
        a second one is no such address, and its datagrams are probes from that second on: a
        scanner of the flooded host loses one probe (one port) to the flood."""
        src, dst = address_ids(b)
        if self.floods is not None:
            self.floods.count(b)  # (so that a flood held from this batch on is skipped too)
            held = self.floods.held_targets()
        else:
            held = _NO_HELD
        f = self.flood_pairs
        kind, port, stack, code, okeys = _k.classify(
            b.status, b.ip_version, b.l4_ok, b.proto, b.tcp_flags, b.icmp_type, b.ip_len, b.ip_hdr_len,
            b.l4_hdr_len, b.dst4, b.dst6, b.ethertype, b.arp_op, b.src4, b.sport, b.dport, src, dst,
            np.ascontiguousarray(b.ts, dtype=np.float64), *held, f.F, f.meta, self._sweep)
        f.rotate()
        if okeys.size:
            self.conns.add(okeys)
        return kind, port, stack, code

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        n = len(batch)
        if n == 0:
            return []
        cfg = self.cfg
        kind, port, stack, code = self._probes(batch)
        ts = np.ascontiguousarray(batch.ts, dtype=np.float64)
        end = float(ts[-1])
        src, dst = address_ids(batch)
        c1, c2 = self.conns.cur, self.conns.old
        # the distinct probes (answered, reset, timed out, counted at once or pending), the answers
        # and the resets, in one compiled pass (bare ACKs of a connection seen opening dropped)
        nprobes, uk, at, k_u, failed, ev, porder, answers, resets, rst_at = _k.probes_of(
            kind, port, code, stack, batch.sport, batch.dport, src, dst, ts, c1[0], c1[1], c1[2],
            c2[0], c2[1], c2[2], end, float(cfg.answer_s), self.pending.t)
        if nprobes:
            self.counters["probes"] += int(nprobes)
        # events: (at, ts, src, host, port, kind, failed, from an OS stack) of this batch's probes
        # (each once) and of the earlier ones it resolves (answered, reset or timed out), in order
        evs = _k.batch_events(self.pending.t, uk, at, k_u, failed, ev, porder, ts, src, dst, port, stack,
                              answers, resets, rst_at, end, float(cfg.answer_s))
        self.pending.sync()
        started: dict[int, int] = {}  # scanner -> index from which its frames are flagged
        if evs[0].size:
            self._count(evs, started, ts)
        return self._flag(batch, verdict, kind, started)

    def _count(self, evs: list[np.ndarray], started: dict, ts: np.ndarray) -> None:
        """The events in order through the groups: a source crossing a threshold becomes a scanner,
        flagged (``started``) from the first frame of this batch at or after the first probe of the
        group that crossed: the probes it counted are the scan's too, not only those after the
        count. A probe is known to have failed only ``answer_s`` after it was sent, so a slow scan
        crosses many probes after its first; frames of earlier batches have gone to the meter
        already, as with `HeldPairs`' look-back."""
        cfg = self.cfg
        cnt = np.array([self.counters["failed_probes"], self.counters["scanners"]], np.int64)
        R = np.empty((evs[0].size, 10), np.int64)
        RF = np.empty((evs[0].size, 2), np.float64)
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
            self._info[self._next_info + r] = (victim, f"{row[9]} {what} in {float(RF[r, 0]):.1f} s")
            started[s] = min(a, int(np.searchsorted(ts, float(RF[r, 1]))))
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
        start = np.array([started.get(s, 0) for s in scanners.tolist()], dtype=np.int64)
        src, dst = address_ids(b)
        rows_all, first = _k.scanner_rows(kind, b.status, b.ip_version, b.proto, b.tcp_flags, b.icmp_type,
                                          b.ethertype, b.arp_op, src, dst, scanners, start, self.targets.t)
        if not rows_all.size:
            return []
        findings = []
        snodes = nodes[order]
        # each scanner's rows while its hold lasts, flagged (compiled: `_scan_kernel.flag_scanners`)
        n, lo, hi = _k.flag_scanners(rows_all, first, np.ascontiguousarray(b.ts, dtype=np.float64),
                                     float(self.cfg.hold_s), AF[snodes, _k.A_UNTIL],
                                     _CLS_INDEX[AN[snodes, _k.A_CLS]], verdict)
        for j in np.flatnonzero(n).tolist():
            s, node = int(scanners[j]), int(snodes[j])
            cls = _CLS[int(AN[node, _k.A_CLS])]
            victim, why = self._info[int(AN[node, _k.A_INFO])]
            last = float(hi[j])
            AF[node, _k.A_UNTIL] = max(float(AF[node, _k.A_UNTIL]), last + self.cfg.hold_s)
            findings.append(Finding(
                detector=self.name, cls=cls, first_ts=float(lo[j]), last_ts=last,
                packets=int(n[j]), attacker=address_name(s), victim=victim,
                protocol="arp" if cls == "Recon-HostDiscovery" else ("icmp" if cls == "Recon-PingSweep" else "tcp"),
                evidence=f"{address_name(s)}: {why}"))
        return findings
