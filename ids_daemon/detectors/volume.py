"""Floods from one or a few hosts: a source sending one host packets of one kind at a rate,
and with an answer ratio, that no benign exchange has.

The crowd rule (`flood.py`) needs hundreds of sources; a flood from one machine (hping3,
a Mirai bot, a stress tool) has one, so it never fills a crowd, and its windows look like
any other busy flow. What gives it away is the protocol: a client does not send a host
hundreds of SYNs a second without completing the handshakes, a bulk transfer is
acknowledged, a media stream does not go to a closed port, and nothing benign sends a
host a hundred ICMP messages or IP fragments a second.

Per (source, destination, kind), packets are counted per ``window_s`` (1 s) bucket of
packet time, together with what the exchange shows about answers in that bucket:

| kind | counted | a flood when, within one bucket |
|---|---|---|
| SYN | TCP SYN without ACK | >= ``syn_rate``, to at most ``ports`` ports, and fewer than half as many segments of completed connections (ACK without SYN/RST) from the source |
| ACK, PSH-ACK, RST/FIN | TCP segments without SYN | >= ``tcp_rate``, to at most ``ports`` ports, most on a new (source port, destination port), and the host answers fewer than 1 in ``unanswered`` with a segment that is not a reset |
| UDP | UDP datagrams (first fragments included) | >= ``udp_rate``, fewer than 1 in ``unanswered`` answered by a datagram back, and sent to a closed port (ICMP port unreachable back), to ``ports`` or more ports, or shorter than ``udp_payload`` bytes on average; or >= ``udp_rate_any`` unanswered, whatever they carry |
| ICMP | any ICMP/ICMPv6 message but the errors and echo replies that answer the receiver's own traffic | >= ``icmp_rate`` |
| fragments | IP fragments (offset > 0 or more-fragments set), any protocol | >= ``frag_rate`` |
| HTTP requests | TCP segments that open an HTTP request, per server port, per ``http_window_s`` | >= ``http_requests`` |

A connection keeps its ports and is acknowledged (a bulk transfer's receiver acknowledges
every second segment, and however thinly it does, the transfer keeps to its few
connections), a scan spreads over many ports, a media stream goes to one open port with
full-size payloads. Hundreds of UDP datagrams a second to one host are a flood whatever
ports they pick: this detector then names frames the scan detector called a port scan (a UDP
scan waits on the host's ICMP rate limit, about one port a second).

The benign corpus's busiest exchanges (its maxima per source and host, 1 s buckets): 18
SYNs, 21 RST/FIN segments, 2,575 segments without SYN (a VNC session, answered 52 %), 561
UDP datagrams (an SNMP walk, every one answered), 2 ICMP messages, no fragments, and 40 HTTP
requests in 5 s. The defaults sit five to fifty times above those.

Once a key crosses, its packets of that kind to the host are flagged from the first packet
of the bucket (when it is in the same batch) until ``hold_s`` after the last bucket over
the threshold, and so are the host's answers to them (SYN-ACKs and resets, ICMP errors,
echo replies, resets to the TCP flood) and, for a SYN flood, the source's resets of the
host's SYN-ACKs. An HTTP flood flags everything between the client and the server port.
Classes: DoS-SYN_Flood, DoS-UDP_Flood, DoS-TCP_Flood (bare ACKs and other segments),
DoS-HTTP_Flood, DDoS-PSHACK_Flood, DDoS-RSTFINFlood, DDoS-ICMP_Flood and the
DDoS-*_Fragmentation classes by the fragments' protocol; when two or more sources flood
one host with one kind at once, the DDoS class of that kind. An HTTP request flood whose
requests in a batch mostly carry a scanner's fingerprint or an attack signature
(`decode.HTTP_SIGNATURES`) is a VulnerabilityScan: a scanner tries a different attack in
every request, at a flood's rate.

Only keys with two or more packets in a batch (or already being counted) are looked at,
so ordinary traffic costs one compiled pass per batch (`_volume_kernel`); state is capped at
``max_keys``.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import (STATUS_OK, TH_ACK, TH_RST, TH_SYN, PacketBatch, address_ids,
                             address_name)
from ..config import VolumeDetectorConfig
from . import _volume_kernel as _vk
from . import _keys_kernel as _kk
from .base import CLASS_INDEX, LRU, Finding, Table, held_keys, isin_keys, mark, pair_key, warm_once

K_SYN, K_ACK, K_PSHACK, K_RSTFIN, K_UDP, K_ICMP, K_FRAG, K_HTTP = range(8)
_KIND_NAME = {K_SYN: "TCP SYN", K_ACK: "TCP ACK", K_PSHACK: "TCP PSH-ACK", K_RSTFIN: "TCP RST/FIN",
              K_UDP: "UDP", K_ICMP: "ICMP", K_FRAG: "IP fragments", K_HTTP: "HTTP requests"}
_PROTO = {K_SYN: "tcp", K_ACK: "tcp", K_PSHACK: "tcp", K_RSTFIN: "tcp", K_UDP: "udp", K_ICMP: "icmp",
          K_FRAG: "ip", K_HTTP: "tcp"}
# (one source, several sources)
_CLASS = {K_SYN: ("DoS-SYN_Flood", "DDoS-SYN_Flood"), K_ACK: ("DoS-TCP_Flood", "DDoS-TCP_Flood"),
          K_PSHACK: ("DDoS-PSHACK_Flood", "DDoS-PSHACK_Flood"), K_RSTFIN: ("DDoS-RSTFINFlood", "DDoS-RSTFINFlood"),
          K_UDP: ("DoS-UDP_Flood", "DDoS-UDP_Flood"), K_ICMP: ("DDoS-ICMP_Flood", "DDoS-ICMP_Flood"),
          K_HTTP: ("DoS-HTTP_Flood", "DDoS-HTTP_Flood")}
_FRAG_CLASS = {6: "DDoS-ACK_Fragmentation", 17: "DDoS-UDP_Fragmentation", 1: "DDoS-ICMP_Fragmentation",
               58: "DDoS-ICMP_Fragmentation"}
_TCP_KINDS = (K_ACK, K_PSHACK, K_RSTFIN)
_PORTSCAN = CLASS_INDEX["Recon-PortScan"]


def _keys(src: np.ndarray, dst: np.ndarray, kind: np.ndarray, port: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return pair_key(src, dst, port.astype(np.uint64) * np.uint64(16) + kind.astype(np.uint64))


# a flood's evidence per `_volume_kernel.update` reason, worded from its bucket's counts
_WHY = {
    _vk.R_SYN: "{n} SYNs in {w} to {ports} ports, {completed} segments of completed connections",
    _vk.R_TCP: "{n} segments in {w}, {answered} acknowledged",
    _vk.R_UDP_ANY: "{n} datagrams in {w}, {answered} answered",
    _vk.R_UDP_CLOSED: "{n} datagrams in {w} to a closed port ({closed} port unreachable)",
    _vk.R_UDP_PORTS: "{n} datagrams in {w} to {ports} ports, {answered} answered",
    _vk.R_UDP_SMALL: "{n} datagrams in {w} of {mean:.0f} bytes on average, {answered} answered",
    _vk.R_ICMP: "{n} ICMP messages in {w}",
    _vk.R_FRAG: "{n} IP fragments in {w}",
    _vk.R_FRAG_DGRAM: "{n} IP fragments in {w}, {answered} of {datagrams} datagrams answered",
    _vk.R_HTTP: "{n} HTTP requests in {w}",
}


def _why(reason: int, window_s: float, n: int, answered: int, completed: int, closed: int, ports: int,
         payload: int, datagrams: int) -> str:
    """A flood's evidence, in words, from `_volume_kernel.update`'s reason and counts."""
    return _WHY[reason].format(n=n, w=f"{window_s:g} s", answered=answered, completed=completed, closed=closed,
                               ports=ports, mean=payload / n, datagrams=datagrams)


def _warm_up() -> None:
    """Load (or compile) the kernels once per process, on a tiny SYN flood with its answers and
    an unprompted ICMP error: a detector's first batch should not pay for it."""
    n = 64
    b = PacketBatch.empty(n)
    b.ts[:] = 1000.0 + np.arange(n) * 1e-3
    b.ethertype[:] = 0x0800
    b.ip_version[:] = 4
    b.proto[:] = 6
    b.l4_ok[:] = True
    b.src4[:] = 0x0A000001
    b.dst4[:] = 0x0A000002
    b.sport[:] = 40000 + np.arange(n)
    b.dport[:] = 80
    b.tcp_flags[:] = TH_SYN
    b.src4[1::2], b.dst4[1::2] = 0x0A000002, 0x0A000001
    b.tcp_flags[1::2] = TH_SYN | TH_ACK
    b.tcp_flags[-4] = TH_ACK
    b.proto[-2:] = (17, 1)
    b.icmp_type[-1] = 3
    b.http_req[-4] = 1
    VolumeDetector(VolumeDetectorConfig(syn_rate=1.0, max_keys=16)).process(b, np.full(n, -1, np.int16))


class VolumeDetector:
    name = "volume"

    def __init__(self, cfg: VolumeDetectorConfig | None = None):
        warm_once(_warm_up)
        warm_once(_kk.warm_up)
        self.cfg = cfg or VolumeDetectorConfig()
        self.counters: dict[str, int] = {"floods": 0}
        # key -> the bucket being counted and its tallies (`_volume_kernel.update`)
        self.counts = Table(self.cfg.max_keys, self.counters, "count_evictions", _vk.COUNT_VALUES)
        # key -> [flag from, flag until, source id, host id, kind, port, fragment protocol, evidence]
        self.held = LRU(self.cfg.max_keys, self.counters, "flood_evictions")
        c = self.cfg
        # packets per second that start to matter, per kind (HTTP: requests per http_window_s)
        self._rates = np.array([c.syn_rate, c.tcp_rate, c.tcp_rate, c.tcp_rate, c.udp_rate, c.icmp_rate, c.frag_rate,
                                c.http_requests / c.http_window_s], dtype=np.float64)
        prm = np.zeros(10, np.float64)  # the rules' thresholds, as `_volume_kernel.update` reads them
        prm[[_vk.P_SYN, _vk.P_TCP, _vk.P_UDP, _vk.P_UDP_ANY, _vk.P_ICMP, _vk.P_FRAG, _vk.P_HTTP, _vk.P_UNANSWERED,
             _vk.P_UDP_PAYLOAD, _vk.P_PORTS]] = (c.syn_rate, c.tcp_rate, c.udp_rate, c.udp_rate_any, c.icmp_rate,
                                                  c.frag_rate, c.http_requests, c.unanswered, c.udp_payload, c.ports)
        self._prm = prm

    def process(self, b: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        src, dst = address_ids(b)
        # one compiled pass: `_classify`'s columns and each frame's counting key (meaningful where
        # kind >= 0)
        kind, answers, closed, est, key = _vk.classify(b.status, b.ip_version, b.proto, b.l4_ok, b.frag_offset,
                                                       b.frag_mf, b.tcp_flags, b.icmp_type, src, dst)
        rows = np.flatnonzero(kind >= 0)
        if not rows.size and not self.held:
            return []
        hrows = np.flatnonzero((b.http_req > 0) & (kind >= 0))
        hkey = None
        if rows.size:
            self._count(b, rows, key[rows], kind, src, dst, answers, closed, est, self.cfg.window_s)
        if hrows.size:
            hkey = _keys(src, dst, np.full(len(b), K_HTTP, dtype=np.int8), b.dport)
            self._count(b, hrows, hkey[hrows], np.full(len(b), K_HTTP, dtype=np.int8), src, dst, answers, closed,
                        est, self.cfg.http_window_s)
        if not self.held:
            return []
        return self._flag(b, verdict, src, dst, kind, answers, key, hkey)

    # -- counting ------------------------------------------------------------------------------
    def _count(self, b: PacketBatch, rows: np.ndarray, rkey: np.ndarray, kind: np.ndarray, src: np.ndarray,
               dst: np.ndarray, answers: np.ndarray, closed: np.ndarray, est: np.ndarray, window_s: float) -> None:
        # a key can reach its rate in a bucket only with a share of it in this batch (a quarter:
        # a bucket split over batches is counted from the batch that holds most of it); live
        # batches are short, so there every key with two packets is looked at. One compiled pass
        # (`_volume_kernel.count_batch`) counts the frames per (key, bucket) and, for those that
        # can matter, the batch's answers, ports, connections and payload; a second
        # (`_volume_kernel.update`) adds them to the keys' counts and tests the rules, so that
        # Python sees only the buckets that are floods.
        span = min(max(float(b.ts[-1] - b.ts[0]), 0.0), window_s)
        is_http = int(kind[rows[0]]) == K_HTTP
        (c_kb, c_key, c_n, c_head, c_bucket, c_kind, c_ans, c_tcp, c_est, c_closed, c_ports, c_conns,
         c_pay) = _vk.count_batch(rows, rkey, kind, src, dst, answers, closed, est, b.ts, b.dport, b.sport, b.proto,
                                  b.l4_ok, b.tcp_flags, b.status, b.ip_version, b.ip_len, b.ip_hdr_len, b.l4_hdr_len,
                                  float(window_s), self._rates, span, self.counts.t, is_http)
        if not c_kb.size:
            return
        head_rows = rows[c_head]
        hit, why, snap, first = _vk.update(self.counts.t, c_kb, c_key, c_n, c_bucket, c_kind, c_ans, c_tcp, c_est,
                                           c_closed, c_ports, c_conns, c_pay,
                                           np.ascontiguousarray(b.ts[head_rows], dtype=np.float64),
                                           b.proto[head_rows], float(window_s), self._prm)
        self.counts.sync()
        for j, c in enumerate(hit.tolist()):
            i = int(head_rows[c])
            kd = int(c_kind[c])
            bucket, n, ans, done, shut, ports, payload, dgrams = snap[j].tolist()
            text = _why(int(why[j]), window_s, n, ans, done, shut, ports, payload, dgrams)
            self._hold(int(c_key[c]), bucket, float(first[j]), float(b.ts[i]), int(src[i]), int(dst[i]), kd,
                       int(b.dport[i]) if kd == K_HTTP else -1, int(b.proto[i]), text, window_s)

    def _hold(self, key: int, bucket: int, first_ts: float, ts: float, source: int, host: int, kd: int, port: int,
              proto: int, why: str, window_s: float) -> None:
        until = (bucket + 1) * window_s + self.cfg.hold_s
        h = self.held.get_touch(key)
        if h is None or h[1] < ts:
            self.counters["floods"] += 1
            self.held.touch(key, [first_ts, until, source, host, kd, port, proto, why])
        else:
            h[1] = max(h[1], until)
            h[7] = why

    # -- flagging ------------------------------------------------------------------------------
    def _flag(self, b: PacketBatch, verdict: np.ndarray, src: np.ndarray, dst: np.ndarray, kind: np.ndarray,
              answers: np.ndarray, key: np.ndarray, hkey: np.ndarray | None) -> list[Finding]:
        t0 = float(b.ts[0])
        for k in [k for k, v in self.held.items() if v[1] < t0]:
            del self.held[k]
        if not self.held:
            return []
        keys = held_keys(self.held)
        n = len(b)
        ok = (b.status == STATUS_OK) & (b.ip_version > 0)
        tcp = ok & b.l4_ok & (b.proto == 6)
        fwd_hit = (kind >= 0) & isin_keys(key, keys)
        # answers from the host, keyed as the flood they answer
        akey = np.where(answers >= 0, _keys(dst, src, answers.clip(0), np.zeros(n, np.uint16)), np.uint64(0))
        ans_hit = (answers >= 0) & isin_keys(akey, keys)
        # resets: the host refusing a TCP flood, the source refusing the host's SYN-ACKs
        rst = tcp & (b.tcp_flags & TH_RST != 0)
        # keys only for the kinds held now (a flood is usually one kind)
        held_kinds = {v[4] for v in self.held.values()}
        zero = np.zeros(n, np.uint16)
        syn_of_src = _keys(src, dst, np.full(n, K_SYN, np.int8), zero) if K_SYN in held_kinds else None
        rkeys = {k: _keys(dst, src, np.full(n, k, np.int8), zero) for k in (K_SYN, *_TCP_KINDS) if k in held_kinds}
        # HTTP floods: every TCP frame between the client and the server port, both ways
        if K_HTTP in held_kinds:
            if hkey is None:
                hkey = _keys(src, dst, np.full(n, K_HTTP, np.int8), b.dport)
            hrev = _keys(dst, src, np.full(n, K_HTTP, np.int8), b.sport)
            http_hit = tcp & (isin_keys(hkey, keys) | isin_keys(hrev, keys))
        # how many sources flood each (host, kind): two or more make it distributed
        crowd: dict[tuple[int, int], int] = {}
        for v in self.held.values():
            crowd[(v[3], v[4])] = crowd.get((v[3], v[4]), 0) + 1
        findings = []
        for k, (lo, hi, source, host, kd, port, proto, why) in list(self.held.items()):
            if kd == K_HTTP:
                m = http_hit & ((hkey == k) | (hrev == k))
            else:
                m = fwd_hit & (key == k)
                m |= ans_hit & (akey == k)
                if kd == K_SYN:
                    m |= rst & (syn_of_src == k)  # the source's resets of the host's SYN-ACKs
                if kd in (K_SYN, *_TCP_KINDS):
                    m |= rst & (rkeys[kd] == k)  # the host refusing the flood
            if not m.any():
                continue
            m &= (b.ts >= lo) & (b.ts <= hi)
            if not m.any():
                continue
            many = crowd.get((host, kd), 1) >= 2
            scanner = ""
            if kd == K_FRAG:
                cls = _FRAG_CLASS.get(proto, "DDoS-UDP_Fragmentation")
            else:
                cls = _CLASS[kd][1 if many else 0]
            if kd == K_HTTP:
                # requests that carry a scanner's fingerprint or an attack signature (decode's
                # http_sig), most of them: a vulnerability scanner at its rate, not a flood (a
                # flood repeats a page; a scanner tries a different attack in every request)
                req = m & (b.http_req > 0)
                n_req = int(np.count_nonzero(req))
                signed = int(np.count_nonzero(req & (b.http_sig > 0)))
                if signed * 2 > n_req:
                    cls = "VulnerabilityScan"
                    scanner = f"; {signed} of its {n_req} requests here carry attack signatures"
            if kd in (K_UDP, K_FRAG):
                # a UDP scan probes each port once, slowly (nmap -sU waits on the host's ICMP rate limit);
                # hundreds of datagrams a second to one host are a flood, whatever ports they pick
                verdict[m & (verdict == _PORTSCAN)] = -1
            mark(verdict, m, cls)
            ts = b.ts[m]
            what = _KIND_NAME[kd] + (f" to port {port}" if kd == K_HTTP else "")
            findings.append(Finding(
                detector=self.name, cls=cls, first_ts=float(ts.min()), last_ts=float(ts.max()),
                packets=int(np.count_nonzero(m)), attacker=address_name(source), victim=address_name(host),
                protocol=_PROTO[kd],
                evidence=f"{address_name(source)} floods {address_name(host)} with {what}: {why}{scanner}"))
        return findings
