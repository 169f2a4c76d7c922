"""Slow HTTP (slowloris, slow POST / R.U.D.Y.): one client holding many connections to one server
port open with requests the server never answers.

Slowloris sends a request line and some headers, never the blank line that ends them, and
keeps each connection alive with one more header line every 10-15 s (perl slowloris: every
100 s); slow POST (R.U.D.Y., slowhttptest -B) sends complete headers announcing a large body
and trickles the body a byte at a time. Either way the server has sent nothing back on those
connections, and the client holds dozens to hundreds of them. A browser keeps at most 6
connections to one host, and its requests are answered; a long-poll client holds one or two.

A request connection is a TCP connection (5-tuple) on which a segment started an HTTP request
(`PacketBatch.http_req`: header complete or not). It is unanswered from that segment until the
server sends payload on it, and open until a FIN or RST on it; it stays alive while its client
sent on it within ``window_s``. A client with ``connections`` (20) or more open, unanswered, live
request connections to one server port, each unanswered for ``min_age_s`` (10 s) or more, is
slow HTTP: its frames to and from that server port are flagged DDoS-SlowLoris from the frame at
which the count is reached, with the earlier frames in the same batch of its request connections
open and unanswered then, until ``hold_s`` after the last flagged frame.

Per batch the work is vectorised (hash of each frame's connection both ways, `numpy.isin`
against the tracked connections, one sort to pair each request start with the next answer or
close on its connection); Python loops run over the connections that carry request starts or
are tracked (open and unanswered) and over the (client, server, port) groups that reach the
threshold. State: tracked connections and flagged groups in `LRU` tables with counted evictions.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import HTTP_REQ_PARTIAL, TH_FIN, TH_RST, PacketBatch, address_ids, address_name
from ..config import SlowHttpDetectorConfig
from .base import LRU, Finding, _ep, isin_keys, mark, rows_of_keys, tcp_pairs

CLS = "DDoS-SlowLoris"
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M3 = np.uint64(0x94D049BB133111EB)


def conn_key(pair: np.ndarray, client_port: np.ndarray) -> np.ndarray:
    """64-bit key of a connection: its (client, server, server port) key and the client's port."""
    with np.errstate(over="ignore"):
        x = pair ^ ((client_port.astype(np.uint64) + np.uint64(1)) * _M1)
        x *= _M3
        return x ^ (x >> np.uint64(31))


def chain(ts: np.ndarray, until: float, hold_s: float) -> int:
    """How many of the (ascending) times ``ts`` a hold that lasts until ``until`` and is renewed
    ``hold_s`` past each flagged frame covers: up to the first gap longer than ``hold_s`` beyond it."""
    if not ts.size:
        return 0
    prev = np.concatenate([[until - hold_s], ts[:-1]])
    broken = np.flatnonzero((ts > until) & (ts - prev > hold_s))
    return int(broken[0]) if broken.size else int(ts.size)


class SlowHttpDetector:
    name = "slowhttp"

    def __init__(self, cfg: SlowHttpDetectorConfig | None = None):
        self.cfg = cfg or SlowHttpDetectorConfig()
        self.counters: dict[str, int] = {"slow_clients": 0}
        # connection key -> [group key, request start ts, last client ts, client, server, port, partial header]
        self.conns = LRU(self.cfg.max_connections, self.counters, "connection_evictions")
        # group key -> [until, client, server, port, evidence]
        self.held = LRU(self.cfg.max_pairs, self.counters, "pair_evictions")
        self.peak = 0  # most concurrent qualifying connections of one group seen (for measuring)

    def process(self, b: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        if not self.conns and not self.held and not (b.http_req > 0).any():
            return []  # the usual batch: no HTTP request start, nothing tracked (one column compare)
        tcp, fwd, rev = tcp_pairs(b)
        ckf = conn_key(fwd, b.sport)
        ckr = conn_key(rev, b.dport)
        starts: dict[int, tuple[int, np.ndarray]] = {}  # group -> (frame that crossed, earlier rows to flag)
        self._track(b, tcp, fwd, rev, ckf, ckr, starts)
        return self._flag(b, verdict, tcp, fwd, rev, starts)

    # ---- connections -------------------------------------------------------------------------------
    def _track(self, b: PacketBatch, tcp: np.ndarray, fwd: np.ndarray, rev: np.ndarray, ckf: np.ndarray,
               ckr: np.ndarray, starts: dict) -> None:
        cfg = self.cfg
        n = len(b)
        src, dst = address_ids(b)
        req_rows = np.flatnonzero(tcp & (b.http_req > 0))
        nc = len(self.conns)
        carried_k = np.fromiter(self.conns.keys(), dtype=np.uint64, count=nc)
        carried_v = list(self.conns.values())
        known = np.unique(np.concatenate([carried_k, ckf[req_rows]]))
        if not known.size:
            return
        f_in = tcp & isin_keys(ckf, known)
        r_in = tcp & isin_keys(ckr, known)
        plen = (b.ip_len.astype(np.int64) - b.ip_hdr_len.astype(np.int64) - b.l4_hdr_len.astype(np.int64))
        closing = (b.tcp_flags & (TH_FIN | TH_RST)) != 0
        end_r = r_in & ((plen > 0) | closing)  # the server's payload (an answer) or its FIN/RST
        end_f = f_in & ~end_r & closing  # the client's FIN/RST
        e_rows = np.flatnonzero(end_r | end_f)
        e_cid = np.searchsorted(known, np.where(end_r[e_rows], ckr[e_rows], ckf[e_rows]))
        # per connection id (index in known): group, client, server, port, last client ts
        g = np.zeros(known.size, dtype=np.uint64)
        cli = np.zeros(known.size, dtype=np.uint64)
        srv = np.zeros(known.size, dtype=np.uint64)
        port = np.zeros(known.size, dtype=np.int64)
        last = np.full(known.size, -np.inf)
        c_cid = np.searchsorted(known, carried_k)
        if nc:
            cv = np.array([(v[1], v[2], v[6]) for v in carried_v], dtype=np.float64).reshape(-1, 3)
            g[c_cid] = np.fromiter((v[0] for v in carried_v), dtype=np.uint64, count=nc)
            cli[c_cid] = np.fromiter((v[3] for v in carried_v), dtype=np.uint64, count=nc)
            srv[c_cid] = np.fromiter((v[4] for v in carried_v), dtype=np.uint64, count=nc)
            port[c_cid] = np.fromiter((v[5] for v in carried_v), dtype=np.int64, count=nc)
            last[c_cid] = cv[:, 1]
        n_cid = np.searchsorted(known, ckf[req_rows])
        g[n_cid], cli[n_cid], srv[n_cid], port[n_cid] = fwd[req_rows], src[req_rows], dst[req_rows], b.dport[req_rows]
        cl_rows = np.flatnonzero(f_in)
        np.maximum.at(last, np.searchsorted(known, ckf[cl_rows]), b.ts[cl_rows])
        # intervals: a request start (carried ones at position 0) to the next answer or close on its connection
        s_cid = np.concatenate([c_cid, n_cid])
        s_pos = np.concatenate([np.zeros(nc, dtype=np.int64), req_rows + 1])
        s_ts = np.concatenate([cv[:, 0] if nc else np.zeros(0), b.ts[req_rows]])
        s_part = np.concatenate([cv[:, 2] if nc else np.zeros(0), (b.http_req[req_rows] == HTTP_REQ_PARTIAL) * 1.0])
        w = np.int64(n + 2)
        s_comb = s_cid.astype(np.int64) * w + s_pos
        order = np.argsort(s_comb, kind="stable")
        s_cid, s_pos, s_ts, s_part, s_comb = s_cid[order], s_pos[order], s_ts[order], s_part[order], s_comb[order]
        e_comb = e_cid.astype(np.int64) * w + (e_rows + 1)
        eo = np.argsort(e_comb, kind="stable")
        e_comb, e_sorted_rows, e_sorted_cid = e_comb[eo], e_rows[eo], e_cid[eo]
        p = np.searchsorted(e_comb, s_comb, side="right")
        pc = np.minimum(p, max(e_comb.size - 1, 0))
        has = (p < e_comb.size) & (e_sorted_cid[pc] == s_cid) if e_comb.size else np.zeros(s_cid.size, dtype=bool)
        # requests pipelined before an answer share it: keep the first of each
        _, first = np.unique(s_cid.astype(np.int64) * (e_comb.size + 1) + p, return_index=True)
        first.sort()
        s_cid, s_ts, s_part, has, pc = s_cid[first], s_ts[first], s_part[first], has[first], pc[first]
        end_ts = np.where(has, b.ts[e_sorted_rows[pc]] if e_comb.size else np.inf, np.inf)
        a = s_ts + cfg.min_age_s
        z = np.minimum(end_ts, np.maximum(last[s_cid], s_ts) + cfg.window_s)
        q = np.flatnonzero(a < z)
        if q.size >= cfg.connections:
            ug, cnt = np.unique(g[s_cid[q]], return_counts=True)
            for gk in ug[cnt >= cfg.connections].tolist():
                self._evaluate(b, tcp, fwd, rev, ckf, ckr, known, gk, q[g[s_cid[q]] == gk], s_cid, s_part, a, z,
                               cli, srv, port, starts)
        # carry the open, live intervals; forget answered, closed and silent connections
        t_end = float(b.ts[-1])
        keep = np.flatnonzero(~has & (np.maximum(last[s_cid], s_ts) + cfg.window_s >= t_end))
        keep_cid = set(s_cid[keep].tolist())
        for k, cid in zip(carried_k.tolist(), c_cid.tolist()):
            if cid not in keep_cid:
                del self.conns[k]
        for j in keep.tolist():
            c = int(s_cid[j])
            k = int(known[c])
            st = self.conns.get_touch(k)
            if st is not None and st[1] == float(s_ts[j]):
                st[2] = float(last[c])
            else:
                self.conns.touch(k, [int(g[c]), float(s_ts[j]), float(max(last[c], s_ts[j])), int(cli[c]),
                                     int(srv[c]), int(port[c]), float(s_part[j])])

    def _evaluate(self, b, tcp, fwd, rev, ckf, ckr, known, gk, qi, s_cid, s_part, a, z, cli, srv, port,
                  starts) -> None:
        """When the group's count of qualifying connections reaches the threshold (a sweep over their
        [request start + min_age_s, answer/close/silence) intervals), hold it from its first frame then."""
        k = self.cfg.connections
        times = np.concatenate([a[qi], z[qi]])
        delta = np.concatenate([np.ones(qi.size, dtype=np.int64), -np.ones(qi.size, dtype=np.int64)])
        o = np.lexsort((delta, times))
        level = np.cumsum(delta[o])
        self.peak = max(self.peak, int(level.max()))
        hit = np.flatnonzero(level >= k)
        if not hit.size or gk in self.held:
            return
        t_cross = max(float(times[o][hit[0]]), float(b.ts[0]))
        rows = np.flatnonzero(tcp & ((fwd == np.uint64(gk)) | (rev == np.uint64(gk))) & (b.ts >= t_cross))
        if not rows.size:
            return  # reached after the group's last frame here: the next batch's frames start the hold
        at = int(rows[0])
        t_at = float(b.ts[at])
        active = qi[(a[qi] <= t_at) & (z[qi] > t_at)]
        if active.size < k:
            active = qi[(a[qi] <= t_cross) & (z[qi] > t_cross)]
        # the frames before it of every request connection of the group open and unanswered then (aged or not)
        ck = known[s_cid[qi[(a[qi] - self.cfg.min_age_s <= t_at) & (z[qi] > t_at)]]]
        earlier = np.flatnonzero(tcp[:at] & (isin_keys(ckf[:at], ck) | isin_keys(ckr[:at], ck)))
        partial = int(np.count_nonzero(s_part[active] > 0))
        c0 = int(s_cid[active[0]])
        evidence = (f"{active.size} connections with HTTP requests unanswered for {self.cfg.min_age_s:g}+ s "
                    f"({partial} with headers never finished: slowloris; {active.size - partial} with complete "
                    f"headers: slow POST body)")
        self.counters["slow_clients"] += 1
        self.held.touch(gk, [t_at + self.cfg.hold_s, int(cli[c0]), int(srv[c0]), int(port[c0]), evidence])
        starts[gk] = (at, earlier)

    # ---- flagging ----------------------------------------------------------------------------------
    def _flag(self, b: PacketBatch, verdict: np.ndarray, tcp: np.ndarray, fwd: np.ndarray, rev: np.ndarray,
              starts: dict) -> list[Finding]:
        if not self.held:
            return []
        t0 = float(b.ts[0])
        for k in [k for k, v in self.held.items() if v[0] < t0 and k not in starts]:
            del self.held[k]
        if not self.held:
            return []
        rows, rk = rows_of_keys(tcp, fwd, rev, self.held)
        if not rows.size:
            return []
        findings = []
        for k in np.unique(rk).tolist():
            st = self.held[k]
            r = rows[rk == k]
            s = starts.get(k)
            if s is not None:
                r = np.union1d(s[1], r[r >= s[0]])
            r = r[:chain(b.ts[r], st[0], self.cfg.hold_s)]
            if not r.size:
                continue
            m = np.zeros(len(b), dtype=bool)
            m[r] = True
            mark(verdict, m, CLS)
            last = float(b.ts[r].max())
            st[0] = max(st[0], last + self.cfg.hold_s)
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(b.ts[r].min()), last_ts=last, packets=int(r.size),
                attacker=address_name(st[1]), victim=address_name(st[2]), protocol="tcp",
                evidence=f"{_ep(st[1])} -> {_ep(st[2])}:{st[3]}: {st[4]}"))
        return findings
