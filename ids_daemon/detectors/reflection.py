"""Reflection: a host receiving answers to queries it never sent.

An attacker sends queries with the victim's address as their source to DNS resolvers, NTP
servers (monlist), SNMP agents, SSDP devices, CLDAP servers, memcached or chargen services,
or SYNs to any TCP server; the answers (often many times larger, and then IPv4-fragmented)
and the SYN-ACKs (retransmitted 3-5 times) all go to the victim. What sets them apart is a
protocol fact: the victim never sent anything to that server:port.

An answer is a UDP datagram from one of ``ports`` (a DNS message only if it is a response,
or undecodable: the first fragment of a large one) to a unicast address, or a TCP SYN-ACK.
A query is a UDP datagram to one of ``ports`` or a TCP SYN without ACK; one sent to a
multicast or broadcast address (SSDP M-SEARCH, SNMP discovery) solicits answers from any
server on that port. An answer is unsolicited when its receiver sent no query to its
sender's address and port within ``query_s`` (60 s: a SYN-ACK is retransmitted for up to
~63 s). ``answers`` (100) or more unsolicited answers to one host within one ``window_s``
(10 s) bucket is a reflection: from that bucket's first unsolicited answer (when in the
same batch) every unsolicited answer to the victim, and every IPv4 fragment (offset > 0:
no UDP header) to it from a host that sent it one, is flagged until ``hold_s`` after the
last. Classes: DDoS-UDP_Flood for whole UDP answers, DDoS-UDP_Fragmentation for fragments,
DDoS-SYN_Flood for SYN-ACKs (the attacker's traffic is a SYN flood aimed at the reflectors
with the victim's address as source; the flood detector names the backscatter of a SYN flood
the same way). Solicited answers (the victim's own lookups during the attack) are not flagged.

ICMP errors (backscatter). An ICMP or ICMPv6 error (destination unreachable, time exceeded,
parameter problem, packet too big) answers the datagram whose IP header it quotes
(`PacketBatch.icmp_in_src`/``icmp_in_dst``): one its receiver sent (quoted source = the error's
destination). It is unsolicited when the capture saw the receiver send no datagram with the quoted
protocol and ports (TCP, UDP; the protocol alone for others and for non-first fragments) within
``query_s``: a flood spoofing the victim's address towards random hosts has their routers and hosts
send the victim errors about datagrams it never sent. The quoted destination is not compared: a
capture whose addresses were rewritten (anonymised) rewrites the outer header, not the quote, and
random ports already tell a spoofed datagram from the receiver's own (a traceroute's errors, from
routers, quote its probes' ports). ``icmp_sources``
(20) or more distinct hosts sending one host unsolicited errors within one ``window_s`` bucket is
backscatter: its unsolicited errors are flagged from the bucket's first (same batch) until ``hold_s``
after the last, named by the flood whose datagrams they quote (UDP and any other protocol:
DDoS-UDP_Flood, TCP: DDoS-TCP_Flood, ICMP: DDoS-ICMP_Flood), as the SYN-ACK backscatter of a SYN flood
is DDoS-SYN_Flood: they are the attack's own packets coming back, which is how an analyst reading a
Suricata or Zeek log of the flood would file them, not a separate ICMP flood (no one floods with
errors: their rate is the flood's, spread over its targets). The record of what each host sent is
a direct-mapped table of ``max_sent`` slots (numpy, one compiled pass per batch,
`_reflection_kernel.icmp_unsolicited`; a live key overwritten counts in ``sent_evictions``).

A SYN or UDP datagram to a host the crowd-flood detector holds as flooded with that kind is no
query, and the host's SYN-ACKs and UDP replies no answers (`_drop_flood`).

State: the queries of the last ``query_s`` in a direct-mapped table of ``max_queries`` slots
(numpy arrays; a live query overwritten by another is counted in ``query_evictions``), and
per-host answer counts and held victims in `LRU` tables. Per batch the work is vectorised
(which answers are solicited, and storing the queries: one compiled pass,
`_reflection_kernel.solicit`); Python loops run over the distinct (host, bucket) pairs that receive unsolicited answers and
over the held victims.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import STATUS_OK, PacketBatch, address_ids, address_name
from ..config import ReflectionDetectorConfig
from . import _keys_kernel as _kk
from .base import LRU, Finding, held_keys, isin_keys, mark, warm_once
from .slowhttp import chain
from . import _reflection_kernel as _k

SERVICE = {19: "chargen", 53: "DNS", 123: "NTP", 161: "SNMP", 389: "CLDAP", 1900: "SSDP", 11211: "memcached"}
C_UDP, C_FRAG, C_SYN = "DDoS-UDP_Flood", "DDoS-UDP_Fragmentation", "DDoS-SYN_Flood"
# the flood an ICMP error's quoted protocol names (other protocols: C_UDP)
ICMP_CLASS = {6: "DDoS-TCP_Flood", 1: "DDoS-ICMP_Flood", 58: "DDoS-ICMP_Flood"}
QUOTED = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}
MAX_REFLECTORS = 4096  # distinct reflectors remembered per victim
_M = np.uint64(0x9E3779B97F4A7C15)


class ReflectionDetector:
    name = "reflection"

    def __init__(self, cfg: ReflectionDetectorConfig | None = None):
        self.cfg = cfg or ReflectionDetectorConfig()
        self.counters: dict[str, int] = {"reflections": 0, "query_evictions": 0}
        size = 1 << max(4, (self.cfg.max_queries - 1).bit_length())
        self._queries = _k.new_queries(size)  # direct-mapped: per slot the latest query's key and ts
        self.qkeys = self._queries[:, _k.Q_KEY].view(np.uint64)  # (a view: the slots' keys)
        self._batch_no = 0
        warm_once(_k.warm_up)
        warm_once(_kk.warm_up)
        self.ports = np.array(sorted(set(self.cfg.ports)), dtype=np.uint16)
        self._is_port = np.zeros(1 << 16, dtype=bool)  # port -> one of `ports` (a gather, not np.isin's compares)
        self._is_port[self.ports] = True
        # victim -> [bucket, unsolicited answers in it, its first ts]
        self.counts = LRU(self.cfg.max_victims, self.counters, "victim_evictions")
        # victim -> [from ts, until ts, reflectors (set), answers flagged, services (set)]
        self.held = LRU(self.cfg.max_victims, self.counters, "held_evictions")
        self.peak = (0, 0)  # most unsolicited answers to one host in one bucket, and their sources (measuring)
        self.counters.update({"backscatter": 0, "sent_evictions": 0})
        self._sent = _k.new_sent(1 << max(4, (self.cfg.max_sent - 1).bit_length()))
        warm_once(_k.warm_up_icmp)
        # victim -> [bucket, unsolicited errors in it, its first ts, their sources (set)]
        self.icmp_counts = LRU(self.cfg.max_victims, self.counters, "icmp_victim_evictions")
        # victim -> [from ts, until ts, error sources (set), errors flagged, quoted protocols (set)]
        self.icmp_held = LRU(self.cfg.max_victims, self.counters, "icmp_held_evictions")
        self.icmp_peak = (0, 0)  # most distinct sources of unsolicited errors to one host in a bucket, their errors
        # the crowd-flood detector of the same set (`DetectorSet`), whose held floods' datagrams are no queries
        self.floods = None

    # ---- per batch ---------------------------------------------------------------------------------
    def process(self, b: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        cfg = self.cfg
        src, dst = address_ids(b)
        findings = self._icmp(b, verdict, src, dst)
        # answers (SYN-ACKs, UDP from a reflected port) and queries (SYNs, UDP to one) with their keys,
        # in one compiled pass
        a_rows, q_rows, synack, qk, ak, ak0 = _k.answers_and_queries(
            b.status, b.ip_version, b.l4_ok, b.proto, b.tcp_flags, b.sport, b.dport, b.dns_ok, b.dns_qr, b.dst4,
            b.dst6, self._is_port, src, dst)
        if self.floods is not None and self.floods.held:
            a_rows, q_rows, qk, ak, ak0 = self._drop_flood(b, a_rows, q_rows, synack, qk, ak, ak0, src, dst)
        if not a_rows.size and not q_rows.size and not self.held:
            return findings  # the usual batch
        ts = b.ts
        self._batch_no += 1
        sol, lost = _k.solicit(a_rows, ak, ak0, q_rows, qk, ts, self._queries, float(cfg.query_s), self._batch_no)
        self.counters["query_evictions"] += int(lost)
        unsolicited = a_rows[~sol]
        if unsolicited.size:
            self._count(b, unsolicited, src, dst)
        return findings + self._flag(b, verdict, unsolicited, src, dst, synack)

    def _drop_flood(self, b: PacketBatch, a_rows: np.ndarray, q_rows: np.ndarray, synack: np.ndarray,
                    qk: np.ndarray, ak: np.ndarray, ak0: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple:
        """No query is a datagram of a flood the crowd-flood detector holds on its destination (a SYN
        or UDP datagram to a host flooded with that kind by hundreds of sources), and no answer is
        the flooded host's answer to it (its SYN-ACKs, its UDP replies): the spoofed crowd queries
        nothing, and remembering each of its SYNs only to find the host's SYN-ACK solicited costs
        the table a slot per packet. The host's answers to sources that did not send it the flood
        are answers as before once the hold ends."""
        if q_rows.size:
            keep = ~self.floods.held_frames(q_rows, np.where(b.proto[q_rows] == 6, 0, 1).astype(np.int8), dst, b.ts)
            q_rows, qk = q_rows[keep], qk[keep]
        if a_rows.size:
            keep = ~self.floods.held_frames(a_rows, np.where(synack[a_rows], 0, 1).astype(np.int8), src, b.ts)
            a_rows, ak, ak0 = a_rows[keep], ak[keep], ak0[keep]
        return a_rows, q_rows, qk, ak, ak0

    # ---- ICMP errors ------------------------------------------------------------------------------
    def _icmp(self, b: PacketBatch, verdict: np.ndarray, src: np.ndarray, dst: np.ndarray) -> list[Finding]:
        cfg = self.cfg
        rows, lost = _k.icmp_unsolicited(b.status, b.ip_version, b.l4_ok, b.proto, b.sport, b.dport, src,
                                         b.icmp_in_src, b.icmp_in_dst, b.icmp_in_proto, b.icmp_in_sport,
                                         b.icmp_in_dport, dst, b.ts, self._sent, float(cfg.query_s))
        self.counters["sent_evictions"] += int(lost)
        if rows.size:
            self._icmp_count(b, rows, src, dst)
        if not self.icmp_held:
            return []
        t0 = float(b.ts[0])
        for k in [k for k, v in self.icmp_held.items() if v[1] < t0 and v[0] < t0]:
            del self.icmp_held[k]
        if not rows.size or not self.icmp_held:
            return []
        rows = rows[isin_keys(dst[rows], held_keys(self.icmp_held))]
        findings = []
        for v in np.unique(dst[rows]).tolist():
            h = self.icmp_held[v]
            r = rows[dst[rows] == v]
            r = r[b.ts[r] >= h[0]]
            r = r[:chain(b.ts[r], h[1], cfg.hold_s)]
            if not r.size:
                continue
            h[1] = max(h[1], float(b.ts[r].max()) + cfg.hold_s)
            if len(h[2]) < MAX_REFLECTORS:
                h[2].update(np.unique(src[r]).tolist())
            h[3] += int(r.size)
            qp = b.icmp_in_proto[r]
            h[4].update(QUOTED.get(p, f"IP proto {p}") for p in np.unique(qp).tolist())
            cls_of = np.array([ICMP_CLASS.get(int(p), C_UDP) for p in qp.tolist()])
            victim = address_name(v)
            n_src = len(h[2])
            for cls in sorted(set(cls_of.tolist())):
                rr = r[cls_of == cls]
                m = np.zeros(len(b), dtype=bool)
                m[rr] = True
                mark(verdict, m, cls)
                findings.append(Finding(
                    detector=self.name, cls=cls, first_ts=float(b.ts[rr].min()), last_ts=float(b.ts[rr].max()),
                    packets=int(rr.size), attacker="", victim=victim, protocol="icmp",
                    evidence=(f"{victim} receives ICMP errors about {', '.join(sorted(h[4]))} datagrams it never sent "
                              f"(backscatter of a flood spoofing its address: {cfg.icmp_sources}+ sources within "
                              f"{cfg.window_s:g} s; {h[3]} so far from {n_src}{'+' if n_src >= MAX_REFLECTORS else ''}"
                              f" sources; {rr.size} packets here)")))
        return findings

    def _icmp_count(self, b: PacketBatch, rows: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
        cfg = self.cfg
        bucket = np.floor(b.ts[rows] / cfg.window_s).astype(np.int64)
        with np.errstate(over="ignore"):
            vb = dst[rows] * _M + bucket.astype(np.uint64)
        _, first, inv = np.unique(vb, return_index=True, return_inverse=True)
        for j in np.argsort(first).tolist():  # (victim, bucket) groups in capture order
            r = rows[inv == j]
            v, bk = int(dst[r[0]]), int(bucket[first[j]])
            st = self.icmp_counts.get_touch(v)
            if st is None or st[0] != bk:
                st = [bk, 0, float(b.ts[r[0]]), set()]
                self.icmp_counts.touch(v, st)
            st[1] += int(r.size)
            before = len(st[3])
            if before >= MAX_REFLECTORS:
                continue
            # the row at which the bucket's distinct sources reach the threshold
            s_r = src[r]
            _, fi = np.unique(s_r, return_index=True)
            fresh = np.sort(fi[~isin_keys(s_r[fi], np.fromiter(st[3], np.uint64, len(st[3])))])
            st[3].update(s_r[fresh].tolist())
            if len(st[3]) > self.icmp_peak[0]:
                self.icmp_peak = (len(st[3]), st[1])
            if len(st[3]) < cfg.icmp_sources:
                continue
            need = cfg.icmp_sources - before
            t_cross = float(b.ts[r[fresh[max(need - 1, 0)]]]) if need > 0 else float(b.ts[r[0]])
            self._hold(self.icmp_held, "backscatter", v, st, t_cross)

    def _hold(self, held: LRU, counter: str, v: int, st: list, t_cross: float) -> list | None:
        """Hold victim ``v`` from its bucket's start (``st``) until ``t_cross`` + hold_s: a new
        hold (counted under ``counter``; None returned), or the running one extended (returned)."""
        h = held.get_touch(v)
        if h is None or h[1] < st[2]:
            self.counters[counter] += 1
            held.touch(v, [st[2], t_cross + self.cfg.hold_s, set(st[3]), 0, set()])
            return None
        h[1] = max(h[1], t_cross + self.cfg.hold_s)
        return h

    def _count(self, b: PacketBatch, rows: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
        cfg = self.cfg
        bucket = np.floor(b.ts[rows] / cfg.window_s).astype(np.int64)
        with np.errstate(over="ignore"):
            vb = dst[rows] * _M + bucket.astype(np.uint64)
        _, first, inv, cnt = np.unique(vb, return_index=True, return_inverse=True, return_counts=True)
        order = np.argsort(inv, kind="stable")
        offs = np.concatenate([[0], np.cumsum(cnt)])
        for j in np.argsort(first).tolist():  # (victim, bucket) groups in capture order
            r = rows[order[offs[j]:offs[j + 1]]]
            v, bk = int(dst[r[0]]), int(bucket[first[j]])
            st = self.counts.get_touch(v)
            if st is None or st[0] != bk:
                st = [bk, 0, float(b.ts[r[0]]), set()]
                self.counts.touch(v, st)
            before = st[1]
            st[1] += int(r.size)
            if len(st[3]) < MAX_REFLECTORS:
                st[3].update(np.unique(src[r]).tolist())
            if st[1] > self.peak[0]:
                self.peak = (st[1], len(st[3]))
            if st[1] < cfg.answers:
                continue
            t_cross = float(b.ts[r[max(cfg.answers - before - 1, 0)]])
            h = self._hold(self.held, "reflections", v, st, t_cross)
            if h is not None and len(h[2]) < MAX_REFLECTORS:
                h[2].update(st[3])

    def _flag(self, b: PacketBatch, verdict: np.ndarray, unsolicited: np.ndarray,
              src: np.ndarray, dst: np.ndarray, synack: np.ndarray) -> list[Finding]:
        if not self.held:
            return []
        cfg = self.cfg
        t0 = float(b.ts[0])
        for k in [k for k, v in self.held.items() if v[1] < t0 and v[0] < t0]:
            del self.held[k]
        if not self.held:
            return []
        victims = held_keys(self.held)
        u = unsolicited[isin_keys(dst[unsolicited], victims)]
        ok = (b.status == STATUS_OK) & (b.ip_version > 0)
        frag = np.flatnonzero(ok & (b.ip_version == 4) & (b.frag_offset > 0) & isin_keys(dst, victims))
        if not u.size and not frag.size:
            return []
        findings = []
        for v in np.unique(np.concatenate([dst[u], dst[frag]])).tolist():
            h = self.held[v]
            r = u[dst[u] == v]
            r = r[b.ts[r] >= h[0]]
            r = r[:chain(b.ts[r], h[1], cfg.hold_s)]
            if r.size:
                h[1] = max(h[1], float(b.ts[r].max()) + cfg.hold_s)
                if len(h[2]) < MAX_REFLECTORS:
                    h[2].update(np.unique(src[r]).tolist())
            fr = frag[dst[frag] == v]
            fr = fr[(b.ts[fr] >= h[0]) & (b.ts[fr] <= h[1])]
            if fr.size:
                fr = fr[isin_keys(src[fr], np.fromiter(h[2], dtype=np.uint64, count=len(h[2])))]
            if not r.size and not fr.size:
                continue
            h[3] += int(r.size)
            sa = synack[r]
            is_frag = b.frag_mf[r]
            h[4].update(SERVICE.get(p, f"UDP/{p}") for p in np.unique(b.sport[r[~sa]]).tolist())
            if sa.any():
                h[4].add("TCP SYN-ACK")
            victim = address_name(v)
            n_refl = len(h[2])
            what = ", ".join(sorted(h[4])) or "answers"
            for cls, rows, proto in ((C_SYN, r[sa], "tcp"), (C_UDP, r[~sa & ~is_frag], "udp"),
                                     (C_FRAG, np.union1d(r[~sa & is_frag], fr), "udp")):
                if not rows.size:
                    continue
                m = np.zeros(len(b), dtype=bool)
                m[rows] = True
                mark(verdict, m, cls)
                findings.append(Finding(
                    detector=self.name, cls=cls, first_ts=float(b.ts[rows].min()), last_ts=float(b.ts[rows].max()),
                    packets=int(rows.size), attacker="", victim=victim, protocol=proto,
                    evidence=(f"{victim} receives {what} it never queried ({cfg.answers}+ unsolicited answers within "
                              f"{cfg.window_s:g} s; {h[3]} so far from {n_refl}{'+' if n_refl >= MAX_REFLECTORS else ''}"
                              f" reflectors; {rows.size} {'fragments' if cls == C_FRAG else 'packets'} here)")))
        return findings
