"""Compiled per-batch query bookkeeping of the reflection detector (see reflection.py).

`solicit` decides, in one pass over a batch's answers and queries in capture order, which
answers are solicited: by a query remembered in the direct-mapped table (`new_queries`) from earlier batches
(the table as it was before the batch), or by an earlier query of the batch with the same key
within ``query_s`` (a per-batch open-addressing map from key to its latest query). It then
stores the batch's queries (per slot the latest wins) and returns how many live queries were
overwritten, as the numpy version (`np.unique` over the whole batch, several times) did.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._keys_kernel import CHUNK, NO_REFCOUNT, _pair_key1, prefetch, table_size


@nb.njit(cache=True, nogil=True, inline="always")
def _mix(k):
    x = k * np.uint64(0x9E3779B97F4A7C15)
    return x ^ (x >> np.uint64(31))


Q_KEY, Q_TS, Q_STAMP, Q_WIN = 0, 1, 2, 3  # columns of a query slot (ts is a float)


def new_queries(size: int) -> np.ndarray:
    """The direct-mapped query table: one row of four per slot (key, ts, and the store's scratch:
    batch stamp, winning query), so that a slot is one cache line, not four."""
    Q = np.zeros((size, 4), np.int64)
    Q.view(np.float64)[:, Q_TS] = -np.inf
    Q[:, Q_STAMP] = -1
    return Q


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _live(Q, QF, kk, t, tmask, query_s):
    s = kk & tmask
    return np.uint64(Q[s, Q_KEY]) == kk and t - QF[s, Q_TS] <= query_s


@nb.njit(cache=True, nogil=True)
def solicit(a_rows, ak, ak0, q_rows, qk, ts, Q, query_s, batch_no):
    """(solicited per answer, live queries lost or overwritten); updates the table ``Q``
    (`new_queries`)."""
    QF = Q.view(np.float64)
    na, nq = a_rows.size, q_rows.size
    tmask = np.uint64(Q.shape[0] - 1)
    sol = np.zeros(na, np.bool_)
    # the batch's distinct query keys -> their latest query row (index into q_rows)
    m = table_size(nq)
    mmask = np.uint64(m - 1)
    hk = np.empty(m, np.uint64)
    hv = np.full(m, -1, np.int64)
    order = np.empty(nq, np.int64)  # slots of the distinct keys, in first-seen order
    nkeys = 0
    i = 0
    j = 0
    while i < na or j < nq:
        # an answer goes before a query of the same row: its own query does not solicit it
        if i < na and (j >= nq or a_rows[i] <= q_rows[j]):
            r = a_rows[i]
            t = ts[r]
            ok = _live(Q, QF, ak[i], t, tmask, query_s) or _live(Q, QF, ak0[i], t, tmask, query_s)
            if not ok and nq > 0:
                for kk in (ak[i], ak0[i]):
                    h = _mix(kk) & mmask
                    while hv[h] >= 0:
                        if hk[h] == kk:
                            if t - ts[q_rows[hv[h]]] <= query_s:
                                ok = True
                            break
                        h = (h + np.uint64(1)) & mmask
                    if ok:
                        break
            sol[i] = ok
            i += 1
        else:
            kk = qk[j]
            h = _mix(kk) & mmask
            while hv[h] >= 0 and hk[h] != kk:
                h = (h + np.uint64(1)) & mmask
            if hv[h] < 0:
                hk[h] = kk
                order[nkeys] = np.int64(h)
                nkeys += 1
            hv[h] = j
            j += 1
    # store: per table slot the latest query of the batch wins
    nslots = 0
    for e in range(nkeys):
        h = order[e]
        s = np.int64(hk[h] & tmask)
        if Q[s, Q_STAMP] != batch_no:
            Q[s, Q_STAMP] = batch_no
            Q[s, Q_WIN] = hv[h]
            nslots += 1
        elif hv[h] > Q[s, Q_WIN]:
            Q[s, Q_WIN] = hv[h]
    lost = nkeys - nslots
    for e in range(nkeys):
        h = order[e]
        s = np.int64(hk[h] & tmask)
        if Q[s, Q_STAMP] != batch_no:
            continue  # done already
        Q[s, Q_STAMP] = batch_no - 1 if batch_no > 0 else -2  # mark done
        jj = Q[s, Q_WIN]
        k = qk[jj]
        t = ts[q_rows[jj]]
        ok_, ot = np.uint64(Q[s, Q_KEY]), QF[s, Q_TS]
        if ok_ != k and ok_ != 0 and t - ot <= query_s:
            lost += 1
        Q[s, Q_KEY] = np.int64(k)
        QF[s, Q_TS] = t
    return sol, lost


@nb.njit(cache=True, nogil=True)
def answers_and_queries(status, ipver, l4_ok, proto, flags, sport, dport, dns_ok, dns_qr, dst4, dst6, is_port, src,
                        dst):
    """One pass of `ReflectionDetector.process`'s masks and keys: (answer rows: SYN-ACKs and UDP from
    a reflected port (not DNS queries), to a unicast address; query rows: SYNs and UDP to such a
    port; per frame whether it is such a SYN-ACK; the queries' keys (client, server or 0 for a
    group address, port); the answers' keys as the query they answer and as one to a group)."""
    n = status.size
    synack = np.zeros(n, np.bool_)
    a_rows = np.empty(n, np.int64)
    q_rows = np.empty(n, np.int64)
    na = 0
    nq = 0
    for i in range(n):
        v = ipver[i]
        if status[i] != 0 or v == 0 or not l4_ok[i]:
            continue
        p = proto[i]
        if p != 6 and p != 17:
            continue
        if v == 6:
            mc = dst6[i, 0] == 0xFF
        else:
            mc = (dst4[i] >> 28) == 0xE or dst4[i] == 0xFFFFFFFF
        f = flags[i]
        if p == 6:
            if (f & 0x16) == 0x12 and not mc:  # SYN-ACK (no RST)
                synack[i] = True
                a_rows[na] = i
                na += 1
            if (f & 0x12) == 0x02:  # SYN
                q_rows[nq] = i
                nq += 1
        else:
            if is_port[sport[i]] and not mc and not (sport[i] == 53 and dns_ok[i] and not dns_qr[i]):
                a_rows[na] = i
                na += 1
            if is_port[dport[i]]:
                q_rows[nq] = i
                nq += 1
    a_rows = a_rows[:na]
    q_rows = q_rows[:nq]
    qk = np.empty(nq, np.uint64)
    for j in range(nq):
        i = q_rows[j]
        # a query to a group (multicast, broadcast, IPv4 x.x.x.255) is a query to every server on that port
        if ipver[i] == 6:
            group = dst6[i, 0] == 0xFF
        else:
            group = (dst4[i] >> 28) == 0xE or dst4[i] == 0xFFFFFFFF or (dst4[i] & 0xFF) == 0xFF
        qk[j] = _pair_key1(src[i], np.uint64(0) if group else dst[i], dport[i])
    ak = np.empty(na, np.uint64)
    ak0 = np.empty(na, np.uint64)
    for j in range(na):
        i = a_rows[j]
        ak[j] = _pair_key1(dst[i], src[i], sport[i])
        ak0[j] = _pair_key1(dst[i], 0, sport[i])
    return a_rows, q_rows, synack, qk, ak, ak0


def warm_up() -> None:
    z = np.zeros(2, np.int64)
    k = np.array([5, 7], np.uint64)
    solicit(z, k, k, np.array([0, 1], np.int64), k, np.zeros(2), new_queries(16), 60.0, 1)
    u8 = np.zeros(2, np.uint8)
    p16 = np.zeros(2, np.uint16)
    answers_and_queries(u8, u8, np.ones(2, np.bool_), u8, p16, p16, p16, np.zeros(2, np.bool_),
                        np.zeros(2, np.bool_), np.zeros(2, np.uint32), np.zeros((2, 16), np.uint8),
                        np.zeros(1 << 16, np.bool_), k, k)


# ---- ICMP errors: the record of what each host sent (see reflection.py, "ICMP errors") ----------------
S_KEY, S_TS = 0, 1  # columns of a sent slot (ts is a float)


def new_sent(size: int) -> np.ndarray:
    """The direct-mapped record of what hosts sent, (sender, protocol, ports): per slot the latest key and ts."""
    S = np.zeros((size, 2), np.int64)
    S.view(np.float64)[:, S_TS] = -np.inf
    return S


_PORTS = np.uint64(1 << 62)  # marks a (protocol, ports) key's second part: no address id has bit 62 alone
# (the table is the record's alone today; the mark keeps its keys apart from `_pair_key1`'s address pairs)


@nb.njit(cache=True, nogil=True, inline="always")
def _ports_key(host, proto, sport, dport):
    return _pair_key1(host, _PORTS | (np.uint64(proto) << np.uint64(32)) | (np.uint64(sport) << np.uint64(16))
                      | np.uint64(dport), 1)


@nb.njit(cache=True, nogil=True, inline="always")
def _sent_live(S, SF, kk, t, mask, sent_s):
    s = _mix(kk) & mask
    return np.uint64(S[s, S_KEY]) == kk and t - SF[s, S_TS] <= sent_s


@nb.njit(cache=True, nogil=True)
def icmp_unsolicited(status, ipver, l4_ok, proto, sport, dport, src, in_src, in_dst, in_proto, in_sport, in_dport,
                     dst, ts, S, sent_s):
    """One pass in capture order over a batch: every IP datagram stores the key (sender, protocol,
    ports; 0 for others than TCP/UDP and for non-first fragments) in ``S`` (`new_sent`: direct-mapped,
    the latest wins); every ICMP error (a quote decoded) looks up the key of the datagram it quotes with
    its receiver (the error's destination) as sender, as it was before it. Returns (the rows of the errors
    whose key was not stored within ``sent_s``, live keys overwritten by another). (In chunks of
    `CHUNK` frames, their slots prefetched first: the table is megabytes, a slot per frame.)"""
    SF = S.view(np.float64)
    mask = np.uint64(S.shape[0] - 1)
    n = status.size
    out = np.empty(n, np.int64)
    ck = np.empty(CHUNK, np.uint64)  # a chunk's keys, slots, and rows (~row for an error's lookup)
    cs = np.empty(CHUNK, np.int64)
    cr = np.empty(CHUNK, np.int64)
    k = 0
    lost = 0
    for c0 in range(0, n, CHUNK):
        m = 0
        for i in range(c0, min(n, c0 + CHUNK)):
            if status[i] != 0 or ipver[i] == 0:
                continue
            if in_src[i] != 0 or in_dst[i] != 0:
                kk = _ports_key(dst[i], in_proto[i], in_sport[i], in_dport[i])
                cr[m] = ~i
            else:
                p = proto[i]
                tu = (p == 6 or p == 17) and l4_ok[i]
                kk = _ports_key(src[i], p, sport[i] if tu else 0, dport[i] if tu else 0)
                cr[m] = i
            s = np.int64(_mix(kk) & mask)
            prefetch(S, 2 * s)
            ck[m] = kk
            cs[m] = s
            m += 1
        for j in range(m):
            i = cr[j]
            kk = ck[j]
            s = cs[j]
            if i < 0:  # an error: looked up, solicits nothing
                i = ~i
                if not (np.uint64(S[s, S_KEY]) == kk and ts[i] - SF[s, S_TS] <= sent_s):
                    out[k] = i
                    k += 1
                continue
            t = ts[i]
            old = np.uint64(S[s, S_KEY])
            if old != kk and old != 0 and t - SF[s, S_TS] <= sent_s:
                lost += 1
            S[s, S_KEY] = np.int64(kk)
            SF[s, S_TS] = t
    return out[:k], lost


def warm_up_icmp() -> None:
    k = np.array([5, 7], np.uint64)
    u8 = np.zeros(2, np.uint8)
    p16 = np.zeros(2, np.uint16)
    icmp_unsolicited(u8, u8 + 4, np.ones(2, np.bool_), u8 + 17, p16, p16, k, k, k, u8, p16, p16, k, np.zeros(2),
                     new_sent(16), 60.0)
