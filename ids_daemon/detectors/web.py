"""Web attacks: HTTP requests that carry attack signatures (SQL injection, XSS, command
injection, path traversal / file inclusion, scanner fingerprints).

Decode marks each HTTP request (a TCP segment starting with a method, to any port) with
the code of the first signature its request line, headers and first body segment match
(``PacketBatch.http_sig``, `decode.HTTP_SIGNATURES`). A matching request counts only when
it belongs to a connection its sender really holds, since a source address alone proves
nothing (one spoofed segment would otherwise name any host the attacker):

* the connection's handshake was seen (the server's SYN-ACK: its ack is the client's ISN + 1,
  its seq the server's ISN) and the request lies in both windows: its seq within
  ``SEQ_WINDOW`` after the client's ISN + 1 and its ack within ``SEQ_WINDOW`` after the
  server's ISN + 1. Only the host that received the SYN-ACK knows the server's ISN; a
  connection reset before the request is no handshake;
* or, for a connection whose handshake was not seen (it started before the daemon, or
  its SYN-ACK was evicted), the server acknowledges the request's bytes: a segment of
  the server on that connection, not a reset, with ack ≥ seq + payload length (by less
  than `base.ACK_WINDOW`) within ``confirm_s``. A TCP accepts a segment only with an
  acceptable ack, i.e. from a sender that sees its sequence numbers.

Then *that connection* (both directions) is flagged, from ``LOOKBACK_S`` before the
request when that is in the same batch, until it closes (both FINs or a RST) plus
``linger_s``, a new connection reuses its ports (a SYN with another ISN), or it has been
idle ``hold_s``. The client's other connections are not: each is flagged by its own
requests. A connection whose requests carried a scanner's fingerprint stays a
VulnerabilityScan (a scanner's probes carry every other signature too); otherwise it
takes the class of its latest matching request.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import TH_ACK, TH_FIN, TH_RST, TH_SYN, PacketBatch, address_ids, address_name
from ..capture.decode import HTTP_SIGNATURES
from ..config import WebDetectorConfig
from . import _keys_kernel as _kk
from .base import (_M32, LOOKBACK_S, LRU, Finding, _ep, acknowledged, conn_pairs, isin_keys, mark, rows_of_keys,
                   tcp_mask, warm_once)

_SCANNER = {code for code, _cls, what in HTTP_SIGNATURES if what.startswith("scanner")}
# How far into a connection a request may lie, from either side's ISN + 1: the bytes the client
# sent before it (requests are small: a keep-alive connection's earlier requests, a POST body)
# and the bytes the server sent before it (earlier responses). 1 MiB each keeps a blind guess
# of the server's ISN at 1 in 4,096; a connection past it is still verified by the server's ACK.
SEQ_WINDOW = 1 << 20


class _Conn:
    """A flagged connection."""

    __slots__ = ("last", "cls", "client", "cport", "server", "port", "what", "fins", "closed", "c_base", "scanner")

    def __init__(self, ts: float, client: int, cport: int, server: int, port: int, c_base: int | None):
        self.last = ts
        self.cls = ""
        self.what = ""
        self.client, self.cport, self.server, self.port = client, cport, server, port
        self.fins = 0  # 1: the client's FIN seen, 2: the server's
        self.closed: float | None = None  # when both FINs or a RST were seen
        self.c_base = c_base  # the client's ISN + 1 when the handshake was seen
        self.scanner = False


class WebDetector:
    name = "web"

    def __init__(self, cfg: WebDetectorConfig | None = None):
        self.cfg = cfg or WebDetectorConfig()
        self.counters: dict[str, int] = {"requests_matched": 0, "requests_unverified": 0, "connections": 0}
        # client-oriented connection key -> (client ISN + 1, server ISN + 1), from the SYN-ACK
        self.handshakes = LRU(self.cfg.max_connections, self.counters, "handshake_evictions")
        # requests on connections whose handshake was not seen, waiting for the server's ACK:
        # key -> (batch number, row, ts, seq + payload length, code, client, cport, server, port)
        self.pending = LRU(4096, self.counters, "pending_evictions")
        self.held = LRU(self.cfg.max_pairs, self.counters, "connection_evictions")  # key -> _Conn
        self.batches = 0
        warm_once(_kk.warm_up)

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        b = batch
        self.batches += 1
        if len(b) == 0:
            return []
        src, dst = address_ids(b)
        tcp = tcp_mask(b)
        f = b.tcp_flags
        synack = tcp & (f & (TH_SYN | TH_ACK | TH_RST) == (TH_SYN | TH_ACK))
        rst = tcp & (f & TH_RST != 0)
        starts: dict[int, int] = {}  # connections whose hold started in this batch -> the request's row
        hits = np.flatnonzero(tcp & (b.http_sig > 0))
        if not hits.size and not self.pending and not self.held:
            # the usual batch: only its handshakes and resets are remembered, keyed on their rows alone
            sa_rows, rst_rows = np.flatnonzero(synack), np.flatnonzero(rst)
            rows = np.concatenate([sa_rows, rst_rows])
            kf, kr = _kk.conn_keys(src[rows], dst[rows], b.sport[rows], b.dport[rows])
            self._handshakes(b, sa_rows, rst_rows, kr[:sa_rows.size], kf[sa_rows.size:], kr[sa_rows.size:])
            return []
        # the connection with the frame's sender as its client (fwd), with its receiver as the client (rev)
        fwd, rev = conn_pairs(b)
        if hits.size:
            self.counters["requests_matched"] += int(hits.size)
            self._requests(b, hits, fwd, rev, synack, rst, src, dst, starts)
        if self.pending:
            self._confirm(b, fwd, rev, tcp, rst, starts)
        sa_rows, rst_rows = np.flatnonzero(synack), np.flatnonzero(rst)
        self._handshakes(b, sa_rows, rst_rows, rev[sa_rows], fwd[rst_rows], rev[rst_rows])
        return self._flag(b, verdict, tcp, fwd, rev, starts)

    def _handshakes(self, b: PacketBatch, sa_rows: np.ndarray, rst_rows: np.ndarray, sa_rev: np.ndarray,
                    rst_fwd: np.ndarray, rst_rev: np.ndarray) -> None:
        """Remember this batch's handshakes (SYN-ACK rows, with their connection keys as the receiver's)
        and forget those reset (rows, keys both ways): the last SYN-ACK or reset of each connection
        decides."""
        if sa_rows.size or rst_rows.size:
            # a reset ends the connection whichever side sent it
            rows = np.concatenate([sa_rows, rst_rows, rst_rows])
            k = np.concatenate([sa_rev, rst_fwd, rst_rev])
            order = np.argsort(rows, kind="stable")[::-1]
            uk, last = np.unique(k[order], return_index=True)
            last = order[last]
            sa = last < sa_rows.size
            if self.handshakes:
                for key in uk[~sa].tolist():
                    self.handshakes.pop(key, None)
            if sa.any():
                r = rows[last[sa]]
                vals = zip(b.tcp_ack[r].tolist(), ((b.tcp_seq[r].astype(np.int64) + 1) & _M32).tolist())
                self.handshakes.update(zip(uk[sa].tolist(), vals))
                excess = len(self.handshakes) - self.handshakes.cap
                for _ in range(max(excess, 0)):
                    self.handshakes.popitem(last=False)
                if excess > 0:
                    self.counters["handshake_evictions"] += excess

    # -- verification ---------------------------------------------------------------------
    def _requests(self, b, hits, fwd, rev, synack, rst, src, dst, starts) -> None:
        req_keys = fwd[hits]
        # this batch's SYN-ACKs and resets of those connections (in capture order)
        sa_rows = np.flatnonzero(synack & isin_keys(rev, req_keys))
        rst_rows = np.flatnonzero(rst & (isin_keys(fwd, req_keys) | isin_keys(rev, req_keys)))
        pay = (b.ip_len[hits].astype(np.int64) - b.ip_hdr_len[hits] - b.l4_hdr_len[hits]).tolist()
        cols = (hits.tolist(), req_keys.tolist(), b.http_sig[hits].tolist(), b.ts[hits].tolist(),
                b.tcp_seq[hits].tolist(), b.tcp_ack[hits].tolist(), src[hits].tolist(), dst[hits].tolist(),
                b.sport[hits].tolist(), b.dport[hits].tolist(), pay)
        for i, key, code, t, seq, ack, client, server, cport, port, n in zip(*cols):
            hs = self.handshakes.get(key)
            mine = sa_rows[(rev[sa_rows] == key) & (sa_rows < i)]
            since = int(mine[-1]) if mine.size else -1
            if mine.size:
                j = int(mine[-1])
                hs = (int(b.tcp_ack[j]), (int(b.tcp_seq[j]) + 1) & _M32)
            k_rst = rst_rows[((fwd[rst_rows] == key) | (rev[rst_rows] == key)) & (rst_rows < i) & (rst_rows > since)]
            if k_rst.size:
                hs = None
            if hs is not None and (seq - hs[0]) & _M32 < SEQ_WINDOW and (ack - hs[1]) & _M32 < SEQ_WINDOW:
                self._hold(key, i, t, code, client, cport, server, port, hs[0], starts)
            else:
                self.counters["requests_unverified"] += 1
                self.pending.touch(key, (self.batches, i, t, (seq + max(n, 0)) & _M32, code, client, cport, server,
                                         port))

    def _confirm(self, b, fwd, rev, tcp, rst, starts) -> None:
        """Pending requests the server acknowledged (held), and those that waited too long (dropped)."""
        keys = np.fromiter(self.pending.keys(), dtype=np.uint64, count=len(self.pending))
        acks = np.flatnonzero(tcp & ~rst & (b.tcp_flags & TH_ACK != 0) & isin_keys(rev, keys))
        for key, p, t in acknowledged(b, self.pending, acks, rev[acks], self.batches, self.cfg.confirm_s):
            at = p[1] if p[0] == self.batches else 0
            self._hold(key, at, t, p[4], p[5], p[6], p[7], p[8], None, starts)

    def _hold(self, key, at, t, code, client, cport, server, port, c_base, starts) -> None:
        _, cls, what = HTTP_SIGNATURES[code - 1]
        st = self.held.get_touch(key)
        if st is None or st.closed is not None and t > st.closed + self.cfg.linger_s:
            st = _Conn(t, client, cport, server, port, c_base)
            self.held.touch(key, st)
            self.counters["connections"] += 1
            starts[key] = at
        elif key not in starts and st.last < t - self.cfg.hold_s:
            starts[key] = at
        st.last = max(st.last, t)
        if code in _SCANNER:
            st.scanner = True
        st.cls, st.what = ("VulnerabilityScan", "scanner fingerprint in the User-Agent") if st.scanner else (cls, what)

    # -- flagging -------------------------------------------------------------------------
    def _flag(self, b, verdict, tcp, fwd, rev, starts) -> list[Finding]:
        if not self.held:
            return []
        cfg = self.cfg
        t0 = float(b.ts[0])
        for k in [k for k, v in self.held.items() if k not in starts and (
                v.last < t0 - cfg.hold_s or v.closed is not None and v.closed + cfg.linger_s < t0)]:
            del self.held[k]
        if not self.held:
            return []
        sel, rk = rows_of_keys(tcp, fwd, rev, self.held)
        if not sel.size:
            return []
        f = b.tcp_flags
        ts = b.ts
        findings = []
        for k in np.unique(rk).tolist():
            st = self.held[k]
            r = sel[rk == k]
            s0 = starts.get(k)
            if s0 is not None:
                r = r[r >= int(np.searchsorted(ts, ts[s0] - LOOKBACK_S))]
            if not r.size:
                continue
            t = ts[r]
            fl = f[r]
            client_side = fwd[r] == np.uint64(k)
            n = r.size
            end = n  # rows [0, end) belong to the held connection
            # idle for hold_s: the hold lapsed
            prev = np.concatenate([[t[0] if s0 is not None else st.last], t[:-1]])
            idle = np.flatnonzero(t - prev > cfg.hold_s)
            if idle.size:
                end = min(end, int(idle[0]))
            # a SYN with another ISN after the request: a new connection on the same ports
            after = r > (s0 if s0 is not None else -1)
            syn = (fl & (TH_SYN | TH_ACK) == TH_SYN) & client_side & after
            if st.c_base is not None:
                syn &= ((b.tcp_seq[r].astype(np.int64) + 1) & _M32) != st.c_base
            new = np.flatnonzero(syn)
            if new.size:
                end = min(end, int(new[0]))
            # closed: a RST, or both FINs; then linger_s more
            closed = st.closed
            if closed is None:
                fin = fl & TH_FIN != 0
                c_fin = np.cumsum(fin & client_side) + (st.fins & 1)
                s_fin = np.cumsum(fin & ~client_side) + (st.fins >> 1 & 1)
                shut = np.flatnonzero(((fl & TH_RST != 0) | ((c_fin > 0) & (s_fin > 0)))[:end])
                if shut.size:
                    closed = float(t[shut[0]])
                else:
                    st.fins |= (1 if c_fin[end - 1] > 0 else 0) | (2 if s_fin[end - 1] > 0 else 0) if end else 0
            if closed is not None:
                end = min(end, int(np.searchsorted(t, closed + cfg.linger_s, side="right")))
            done = end < n or closed is not None
            st.closed = closed
            r = r[:end]
            if r.size:
                m = np.zeros(len(b), dtype=bool)
                m[r] = True
                mark(verdict, m, st.cls)
                last = float(ts[r].max())
                st.last = max(st.last, last)
                findings.append(Finding(
                    detector=self.name, cls=st.cls, first_ts=float(ts[r].min()), last_ts=last, packets=int(r.size),
                    attacker=address_name(st.client), victim=address_name(st.server), protocol="tcp",
                    evidence=f"{_ep(st.client)}:{st.cport} -> {_ep(st.server)}:{st.port}: {st.what}"))
            if done and end < n:
                del self.held[k]
        return findings
