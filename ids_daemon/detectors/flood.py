"""Floods from a crowd: one host receiving SYNs, UDP datagrams or ICMP from hundreds of
distinct source addresses within seconds.

That many sources is what makes a flood distributed (or source-spoofed: each packet
from a random address, so no per-flow window ever holds more than one or two of them,
and a pool window's averages depend on whatever else the victim carries). No client
population of a gateway's site reaches one host from ``sources`` (default 256) distinct
addresses within ``window_s`` (10 s; the benign corpus's busiest host: 32); a public
server that does should raise ``sources`` or switch the detector off.

Per (destination, kind) with kind SYN (a TCP SYN without ACK), UDP or ICMP/ICMPv6, the
distinct sources of each ``window_s`` bucket are counted. Once a bucket reaches
``sources``, the destination is flooded by that kind until ``hold_s`` after that
bucket: every packet of that kind to it is flagged (DDoS-SYN_Flood, DDoS-UDP_Flood,
DDoS-ICMP_Flood), from the bucket's first packet when it lies in the same batch, and so
are the host's answers of the matching kind (SYN-ACKs and resets, ICMP errors, echo
replies): backscatter to the spoofed sources exists only because of the flood. So are
the resets a SYN-flooded host receives (the owners of the spoofed addresses refusing its
SYN-ACKs), which never count as sources. A source that acknowledges data to a SYN-flooded
host (an established connection, which no spoofed address has) is a client, not the
crowd: its SYNs and the answers to them are not flagged.

A short flood reaches fewer sources but in a burst: ``burst_sources`` (32) distinct sources
within ``burst_s`` (0.1 s) is a flood too, for SYNs and ICMP. In the benign corpus no
host receives SYNs or ICMP from two distinct sources within 0.1 s; the real SYN floods
reach 14 to 68. UDP is left out of the burst rule: one benign capture shows 23 sources in
0.1 s (replies to a multicast query).

Only destinations that received from two or more sources within one batch start being
counted, so ordinary traffic costs one hashing pass per batch (`_flood_kernel.count`, compiled;
the per-target buckets and their sources are a compiled LRU table); a flood of ``sources`` per
``window_s`` gives two in any batch longer than 2 x window_s / sources.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import TH_RST, TH_SYN, PacketBatch, address_ids, address_name
from ..config import FloodDetectorConfig
from . import _flood_kernel as _fk
from . import _scan_kernel as _sk
from . import _keys_kernel as _kk
from .base import CLASS_INDEX, LRU, Finding, held_keys, isin_keys, tcp_mask, warm_once

K_SYN, K_UDP, K_ICMP = 0, 1, 2
CLASS_OF = {K_SYN: "DDoS-SYN_Flood", K_UDP: "DDoS-UDP_Flood", K_ICMP: "DDoS-ICMP_Flood"}
_PROTO_NAME = {K_SYN: "tcp", K_UDP: "udp", K_ICMP: "icmp"}
_M = np.uint64(0x9E3779B97F4A7C15)
_BURST_KINDS = (K_SYN, K_ICMP)


class _Table:
    """Per target key, its current bucket's first packet time and distinct sources: a compiled LRU
    table (`_flood_kernel`) of ``cap`` targets whose evictions are counted in ``counters[counter]``."""

    def __init__(self, cap: int, sources: int, counters: dict[str, int], counter: str):
        self.cap = cap
        self.T = _sk.new_table(cap, _fk.VALUES)
        self.slots = _fk.member_slots(sources)
        self.members = np.zeros((0, self.slots), dtype=np.uint64)
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    def __len__(self) -> int:
        return int(self.T[0][_sk.M_SIZE])

    def count(self, rows, tkey, src, ts, width, sources):
        need = min(self.cap, int(self.T[0][_sk.M_HWM]) + rows.size)
        if self.members.shape[0] < need:
            grown = np.zeros((min(self.cap, max(need, 2 * self.members.shape[0])), self.slots), dtype=np.uint64)
            grown[:self.members.shape[0]] = self.members
            self.members = grown
        out = _fk.count(self.T, self.members, rows, tkey, src, ts, float(width), int(sources))
        self.counters[self.counter] = int(self.T[0][_sk.M_EVICT])
        return out


def _target_key(dst: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """64-bit key of (destination, kind) (a multiplicative mix: collisions are negligible)."""
    with np.errstate(over="ignore"):
        return dst.astype(np.uint64) ^ ((kind.astype(np.uint64) + np.uint64(1)) * _M)


class FloodDetector:
    name = "flood"

    def __init__(self, cfg: FloodDetectorConfig | None = None):
        self.cfg = cfg or FloodDetectorConfig()
        self.counters: dict[str, int] = {"floods": 0}
        warm_once(_fk.warm_up)
        warm_once(_kk.warm_up)
        self.buckets = _Table(self.cfg.max_targets, self.cfg.sources, self.counters, "target_evictions")
        self.bursts = _Table(self.cfg.max_targets, max(self.cfg.burst_sources, 1), self.counters, "burst_evictions")
        self.clients = LRU(self.cfg.max_targets, self.counters, "client_evictions")  # (SYN-flooded victim, client)
        # target key -> [flag from, flag until, victim id, kind, the crowd that crossed]
        self.held = LRU(self.cfg.max_targets, self.counters, "flood_evictions")
        self._counted = None  # the batch `count` counted, until `process` flags it
        self._pre = None  # what `count` leaves `process`: (answers, rows, their target keys, src, dst)

    def held_frames(self, rows: np.ndarray, fkind: np.ndarray, addr: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Per row of ``rows``, whether it is a datagram of a flood this detector holds: its
        (``addr``, flood kind ``fkind``, -1 for none) is a held target and its time within the
        hold. The reflection detector leaves such frames out of its queries and answers, as the
        scan detector leaves them out of its probes (from `held_targets`): a spoofed flood's
        datagrams are neither (docs/detectors.md, Scans: "Datagrams of a held flood")."""
        if not self.held or not rows.size:
            return np.zeros(rows.size, np.bool_)
        keys, lo, until = self.held_targets()
        return _fk.held_rows(rows, np.ascontiguousarray(fkind, dtype=np.int8), addr,
                             np.ascontiguousarray(ts, dtype=np.float64), keys, lo, until)

    def held_targets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The held targets' keys (`_target_key`, ascending) and, per key, the time its hold starts
        (its flood's first bucket's first packet) and ends: what `_flag` flags."""
        keys = held_keys(self.held)
        order = np.argsort(keys)
        n = len(self.held)
        lo = np.fromiter((v[0] for v in self.held.values()), dtype=np.float64, count=n)
        until = np.fromiter((v[1] for v in self.held.values()), dtype=np.float64, count=n)
        return keys[order], lo[order], until[order]

    @staticmethod
    def _kinds(b: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """Per frame, the flood kind it would be part of, and the kind of flood it answers
        (-1 none): SYN-ACKs and resets answer SYNs, ICMP errors UDP, echo replies pings (compiled:
        `_flood_kernel.kinds`)."""
        return _fk.kinds(b.status, b.ip_version, b.l4_ok, b.proto, b.tcp_flags, b.icmp_type)

    def count(self, b: PacketBatch) -> None:
        """Count the batch's sources per target (once per batch: the scan detector, which runs
        before this one, has the batch counted first, so that the floods it skips include those
        held from this batch on)."""
        if self._counted is b:
            return
        self._counted = b
        self._pre = None
        kind, answers = self._kinds(b)
        rows = np.flatnonzero(kind >= 0)
        if not rows.size:
            return
        src, dst = address_ids(b)
        tkey = _target_key(dst[rows], kind[rows])
        self._count(b, rows, tkey, src, dst, kind, self.buckets, self.cfg.window_s, self.cfg.sources)
        if self.cfg.burst_sources:
            kr = kind[rows]
            burst = (kr == K_SYN) | (kr == K_ICMP)  # (_BURST_KINDS)
            if burst.any() and self.held:  # a target already held needs no burst to be a flood
                burst &= ~isin_keys(tkey, held_keys(self.held))
            if burst.any():
                self._count(b, rows[burst], tkey[burst], src, dst, kind, self.bursts, self.cfg.burst_s,
                            self.cfg.burst_sources)
        self._pre = (answers, rows, tkey, src, dst)

    def process(self, b: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        self.count(b)
        pre, self._pre, self._counted = self._pre, None, None
        if pre is None:
            return []
        answers, rows, tkey, src, dst = pre
        if self.held:
            # resets from the crowd to a SYN-flooded host: the owners of the spoofed addresses refusing
            # the SYN-ACKs they never asked for (up to a third of a SYN flood's capture); never counted as
            # sources. `_kinds` has resets as answers to SYNs; here they are keyed by where they go
            rst = np.flatnonzero((answers == K_SYN) & (b.tcp_flags & (TH_RST | TH_SYN) == TH_RST))
            if rst.size:
                rows = np.concatenate([rows, rst])
                tkey = np.concatenate([tkey, _target_key(dst[rst], np.full(rst.size, K_SYN, dtype=np.int8))])
        return self._flag(b, verdict, rows, tkey, src, dst, answers)

    def _count(self, b: PacketBatch, rows: np.ndarray, tkey: np.ndarray, src: np.ndarray, dst: np.ndarray,
               kind: np.ndarray, buckets: "_Table", window_s: float, sources: int) -> None:
        """Count the distinct sources of ``rows`` per (target, ``window_s`` bucket) and hold the
        targets whose bucket reaches ``sources`` (compiled: `_flood_kernel.count`)."""
        heads, bks, firsts = buckets.count(rows, tkey, src, b.ts, window_s, sources)
        for h, bk, first in zip(heads.tolist(), bks.tolist(), firsts.tolist()):
            r = int(rows[h])
            self._hold(int(tkey[h]), bk, first, float(b.ts[r]), int(dst[r]), int(kind[r]), window_s, sources)

    def _hold(self, key: int, bucket: int, first_ts: float, ts: float, victim: int, kind: int, window_s: float,
              sources: int) -> None:
        until = (bucket + 1) * window_s + self.cfg.hold_s
        h = self.held.get_touch(key)
        if h is None or h[1] < ts:
            self.counters["floods"] += 1
            self.held.touch(key, [first_ts, until, victim, kind, f"{sources}+ distinct sources within {window_s:g} s"])
        else:
            h[1] = max(h[1], until)

    def _clients(self, b: PacketBatch, src: np.ndarray, dst: np.ndarray, victims: set[int]) -> set[tuple[int, int]]:
        """(victim, client) pairs with an established connection: the client acknowledges
        data without SYN or RST, which no spoofed address does (this batch's and remembered)."""
        victim_ids = np.fromiter(victims, dtype=np.uint64, count=len(victims))
        est = _fk.established(tcp_mask(b), b.tcp_flags, dst, victim_ids)  # (one compiled pass, not seven)
        est = est[_kk.distinct_pairs(dst[est], src[est])]  # (the set below as from every row: same order)
        for pair in set(zip(dst[est].tolist(), src[est].tolist())):
            self.clients.touch(pair, None)
        return self.clients

    def _flag(self, b: PacketBatch, verdict: np.ndarray, rows: np.ndarray, tkey: np.ndarray,
              src: np.ndarray, dst: np.ndarray, answers: np.ndarray) -> list[Finding]:
        if not self.held:
            return []
        t0 = float(b.ts[0])
        for k in [k for k, v in self.held.items() if v[1] < t0]:
            del self.held[k]
        if not self.held:
            return []
        keys = np.sort(held_keys(self.held))
        # the flooded host's answers to the flood (SYN-ACKs and resets to the spoofed sources):
        # backscatter exists only because of the flood
        back = np.flatnonzero(answers >= 0)
        bkey = _target_key(src[back], answers[back])
        # per held key (ascending), its flood frames then its answers, in capture order
        by_key, first = _fk.rows_by_key(rows, tkey, back, bkey, keys)
        if not by_key.size:
            return []
        findings = []
        syn_victims = {v[2] for v in self.held.values() if v[3] == K_SYN}
        clients = self._clients(b, src, dst, syn_victims) if syn_victims else {}
        peers = None  # victim -> its clients (built on first need)
        ts = np.ascontiguousarray(b.ts, dtype=np.float64)
        for j in np.flatnonzero(first[1:] > first[:-1]).tolist():  # the held keys this batch carries
            lo, hi, victim_id, kd, crowd = self.held[int(keys[j])]
            r = by_key[first[j]:first[j + 1]]
            if kd == K_SYN and clients:
                # a client that completes its handshakes is not the crowd: its SYNs, the SYN-ACKs
                # to it and its resets stay in the windows (the flooded router's web users)
                if peers is None:
                    peers = {}
                    for v, p in clients:
                        peers.setdefault(v, []).append(p)
                known = peers.get(victim_id)
                if known:
                    peer = np.where(src[r] == victim_id, dst[r], src[r])
                    r = r[~isin_keys(peer, np.array(known, dtype=np.uint64))]
            cls = CLASS_OF[kd]
            # the rows within the hold flagged (`mark`), with their count, first and last time and distinct
            # sources, in one compiled pass (`_flood_kernel.flag_rows`)
            n, t_lo, t_hi, n_src = _fk.flag_rows(r, ts, float(lo), float(hi), verdict, CLASS_INDEX[cls], src,
                                                 np.uint64(victim_id))
            if not n:
                continue
            victim = address_name(victim_id)
            what = "TCP SYN" if kd == K_SYN else _PROTO_NAME[kd].upper()
            findings.append(Finding(
                detector=self.name, cls=cls, first_ts=float(t_lo), last_ts=float(t_hi),
                packets=int(n), attacker="", victim=victim, protocol=_PROTO_NAME[kd],
                evidence=f"{victim} flooded with {what} from {crowd} ({n} packets from {n_src} sources here)"))
        return findings
