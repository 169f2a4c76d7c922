"""Compiled state of the scan detector: bounded LRU tables over numpy arrays.

A table is a tuple ``(meta, idx, N, NF)``: an open-addressing index (linear probing,
backward-shift deletion; a slot of ``idx`` holds the key's hash's low 32 bits over node + 1,
0 when empty, so that probing and shifting rarely read a node) over at most ``cap`` nodes, the
rows of ``N`` (int64; ``NF`` is the same memory as float64): key ``(k1, k2, k3)`` in columns
0-2, the doubly linked list from the least to the most recently touched in columns 3-4
(previous, next), the caller's values from column 5 on, so that a node is one or two cache
lines. Inserting into a full table evicts the least recently touched node and counts it in
``meta[M_EVICT]``, as `base.LRU` does. Nodes are handed out from a high-water mark, so the
pages of a large, mostly empty table are never written (``np.zeros`` maps them lazily).

A group's members (distinct ports or hosts) are chained blocks of ``BLOCK`` values from a
pool with a free list, grown by the caller when `count_events` stops for want of blocks.
"""

from __future__ import annotations

import numba as nb
import numpy as np

M_HEAD, M_TAIL, M_SIZE, M_FREE, M_CAP, M_MASK, M_EVICT, M_HWM = range(8)

K_TCP, K_UDP, K_ACK, K_ICMP, K_ARP, K_PROTO = 0, 1, 2, 3, 4, 5
# classes and evidence wording of a scanner's record (decoded in scan.py)
C_PORTSCAN, C_PINGSWEEP, C_DISCOVERY = 0, 1, 2
W_PORTS, W_HOSTS, W_PINGED, W_ARP = 0, 1, 2, 3

BLOCK = 8  # members per block of a group's member list


C_K1, C_K2, C_K3, C_PRV, C_NXT, C_VAL = 0, 1, 2, 3, 4, 5


def new_table(cap: int, values: int):
    m = 16
    while m < 2 * cap:
        m <<= 1
    meta = np.array([-1, -1, 0, -1, cap, m - 1, 0, 0], dtype=np.int64)
    N = np.zeros((cap, C_VAL + values), np.int64)
    return (meta, np.zeros(m, np.uint64), N, N.view(np.float64))


@nb.njit(cache=True, nogil=True, inline="always")
def _h(a, b, c):
    x = np.uint64(a) * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    x ^= np.uint64(b)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(32)
    x ^= (np.uint64(c) + np.uint64(1)) * np.uint64(0xC2B2AE3D27D4EB4F)
    x ^= x >> np.uint64(31)
    return x


_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@nb.njit(cache=True, nogil=True, inline="always")
def t_find(T, a, b, c):
    meta, idx, N = T[0], T[1], T[2]
    mask = np.uint64(meta[M_MASK])
    x = _h(a, b, c)
    hl = x & _LO
    i = x & mask
    ia, ib, ic = np.int64(a), np.int64(b), np.int64(c)
    while True:
        v = idx[i]
        if v == 0:
            return np.int64(-1)
        if (v >> _S32) == hl:
            n = np.int64(v & _LO) - 1
            if N[n, C_K1] == ia and N[n, C_K2] == ib and N[n, C_K3] == ic:
                return n
        i = (i + np.uint64(1)) & mask


@nb.njit(cache=True, nogil=True, inline="always")
def _unlink(T, n):
    meta, N = T[0], T[2]
    p = N[n, C_PRV]
    q = N[n, C_NXT]
    if p >= 0:
        N[p, C_NXT] = q
    else:
        meta[M_HEAD] = q
    if q >= 0:
        N[q, C_PRV] = p
    else:
        meta[M_TAIL] = p


@nb.njit(cache=True, nogil=True, inline="always")
def _append(T, n):
    meta, N = T[0], T[2]
    t = meta[M_TAIL]
    N[n, C_PRV] = t
    N[n, C_NXT] = -1
    if t >= 0:
        N[t, C_NXT] = n
    else:
        meta[M_HEAD] = n
    meta[M_TAIL] = n


@nb.njit(cache=True, nogil=True, inline="always")
def t_move_end(T, n):
    if T[0][M_TAIL] != n:
        _unlink(T, n)
        _append(T, n)


@nb.njit(cache=True, nogil=True, inline="always")
def _idx_remove(T, n):
    meta, idx, N = T[0], T[1], T[2]
    mask = np.uint64(meta[M_MASK])
    i = _h(np.uint64(N[n, C_K1]), np.uint64(N[n, C_K2]), N[n, C_K3]) & mask
    me = np.uint64(n + 1)
    while (idx[i] & _LO) != me:
        i = (i + np.uint64(1)) & mask
    j = i
    while True:
        j = (j + np.uint64(1)) & mask
        v = idx[j]
        if v == 0:
            break
        home = (v >> _S32) & mask
        if ((j - home) & mask) >= ((j - i) & mask):
            idx[i] = v
            i = j
    idx[i] = 0


@nb.njit(cache=True, nogil=True, inline="always")
def t_delete(T, n):
    """Remove node ``n`` (no eviction counted)."""
    meta, N = T[0], T[2]
    _idx_remove(T, n)
    _unlink(T, n)
    N[n, C_NXT] = meta[M_FREE]
    meta[M_FREE] = n
    meta[M_SIZE] -= 1


@nb.njit(cache=True, nogil=True, inline="always")
def t_insert(T, a, b, c):
    """Insert a key known to be absent; returns (node, whether a node was evicted for it)."""
    meta, idx, N = T[0], T[1], T[2]
    evicted = False
    if meta[M_SIZE] >= meta[M_CAP]:
        n = meta[M_HEAD]
        _idx_remove(T, n)
        _unlink(T, n)
        meta[M_SIZE] -= 1
        meta[M_EVICT] += 1
        evicted = True
    elif meta[M_FREE] >= 0:
        n = meta[M_FREE]
        meta[M_FREE] = N[n, C_NXT]
    else:
        n = meta[M_HWM]
        meta[M_HWM] += 1
    N[n, C_K1] = np.int64(a)
    N[n, C_K2] = np.int64(b)
    N[n, C_K3] = np.int64(c)
    mask = np.uint64(meta[M_MASK])
    x = _h(a, b, c)
    i = x & mask
    while idx[i] != 0:
        i = (i + np.uint64(1)) & mask
    idx[i] = ((x & _LO) << _S32) | np.uint64(n + 1)
    _append(T, n)
    meta[M_SIZE] += 1
    return n, evicted


@nb.njit(cache=True, nogil=True, inline="always")
def t_touch(T, a, b, c):
    """`LRU.touch`: (node, new, evicted)."""
    n = t_find(T, a, b, c)
    if n >= 0:
        t_move_end(T, n)
        return n, False, False
    n, ev = t_insert(T, a, b, c)
    return n, True, ev


@nb.njit(cache=True, nogil=True)
def t_keys(T):
    """Nodes and first keys from the least to the most recently touched."""
    meta, N = T[0], T[2]
    nodes = np.empty(meta[M_SIZE], np.int64)
    keys = np.empty(meta[M_SIZE], np.uint64)
    n = meta[M_HEAD]
    j = 0
    while n >= 0:
        nodes[j] = n
        keys[j] = np.uint64(N[n, C_K1])
        j += 1
        n = N[n, C_NXT]
    return nodes, keys


@nb.njit(cache=True, nogil=True)
def expire_before(T, col, t0):
    """Delete the nodes whose float value in ``col`` is before ``t0``."""
    N, NF = T[2], T[3]
    n = T[0][M_HEAD]
    while n >= 0:
        q = N[n, C_NXT]
        if NF[n, col] < t0:
            t_delete(T, n)
        n = q


@nb.njit(cache=True, nogil=True)
def pairs_in(T, a, b):
    """(a[i], b[i]) or (b[i], a[i]) is a key of T (third key 0)."""
    out = np.zeros(a.size, np.bool_)
    for i in range(a.size):
        out[i] = t_find(T, a[i], b[i], 0) >= 0 or t_find(T, b[i], a[i], 0) >= 0
    return out


# ---- pending probes ----------------------------------------------------------------------------
P_TS, P_S, P_H, P_P, P_K, P_OS = 5, 6, 7, 8, 9, 10  # values of a pending probe (ts is a float)
PENDING_VALUES = 6


@nb.njit(cache=True, nogil=True)
def batch_events(T, uk, at, k_u, failed, ev, pend, ts, src, dst, port, stack, ans_u, rs_keys, rs_at, end, answer_s):
    """The events of a batch (at, ts, src, host, port, kind, failed, os) in frame order, as
    `ScanDetector` sorted them (stably: this batch's own probes, ``ev`` in key order, before the
    pending ones). The batch's unresolved probes (``pend``, in key order) are touched into the
    pending table T first; then the earlier ones are resolved: answered (at 0), reset (at the
    reset) or timed out (at the first frame past ``answer_s``)."""
    meta, N, NF = T[0], T[2], T[3]
    nev = 0
    for j in range(uk.size):
        if ev[j]:
            nev += 1
        elif pend[j]:
            a = at[j]
            n, new, evicted = t_touch(T, uk[j], np.uint64(0), np.int64(0))
            NF[n, P_TS] = ts[a]
            N[n, P_S] = np.int64(src[a])
            N[n, P_H] = np.int64(dst[a])
            N[n, P_P] = np.int64(port[a])
            N[n, P_K] = k_u[j]
            N[n, P_OS] = stack[a]
    cap = ans_u.size + rs_keys.size + meta[M_SIZE]
    pnode = np.empty(cap, np.int64)  # node of each pending event (its values stay until reused)
    pa = np.empty(cap, np.int64)
    pbad = np.empty(cap, np.bool_)
    m = 0
    # the deleted nodes are only reused by the next touch, so their values can be read after
    if meta[M_SIZE] > 0:
        for pass_ in range(2):
            keys = ans_u if pass_ == 0 else rs_keys
            for j in range(keys.size):
                n = t_find(T, keys[j], np.uint64(0), np.int64(0))
                if n < 0:
                    continue
                pnode[m] = n
                pa[m] = 0 if pass_ == 0 else rs_at[j]
                pbad[m] = pass_ == 1
                m += 1
                t_delete(T, n)
        nts = ts.size
        while meta[M_SIZE] > 0:
            n = meta[M_HEAD]
            t = NF[n, P_TS]
            if end - t < answer_s:
                break
            t_delete(T, n)
            a = 0
            if t >= ts[0]:
                a = np.searchsorted(ts, t + answer_s)
            pnode[m] = n
            pa[m] = min(a, nts - 1)
            pbad[m] = True
            m += 1
    # a stable counting sort on the frame index
    nts = ts.size
    first = np.zeros(nts + 1, np.int64)
    for j in range(uk.size):
        if ev[j]:
            first[at[j] + 1] += 1
    for q in range(m):
        first[pa[q] + 1] += 1
    for q in range(nts):
        first[q + 1] += first[q]
    tot = nev + m
    oa = np.empty(tot, np.int64)
    ot = np.empty(tot, np.float64)
    osrc = np.empty(tot, np.uint64)
    oh = np.empty(tot, np.uint64)
    op = np.empty(tot, np.int64)
    ok = np.empty(tot, np.int64)
    obad = np.empty(tot, np.bool_)
    oos = np.empty(tot, np.bool_)
    for j in range(uk.size):
        if ev[j]:
            a = at[j]
            o = first[a]
            first[a] += 1
            oa[o] = a
            ot[o] = ts[a]
            osrc[o] = src[a]
            oh[o] = dst[a]
            op[o] = np.int64(port[a])
            ok[o] = k_u[j]
            obad[o] = failed[j]
            oos[o] = stack[a]
    for q in range(m):
        a = pa[q]
        n = pnode[q]
        o = first[a]
        first[a] += 1
        oa[o] = a
        ot[o] = NF[n, P_TS]
        osrc[o] = np.uint64(N[n, P_S])
        oh[o] = np.uint64(N[n, P_H])
        op[o] = N[n, P_P]
        ok[o] = N[n, P_K]
        obad[o] = pbad[q]
        oos[o] = N[n, P_OS] != 0
    return oa, ot, osrc, oh, op, ok, obad, oos


# ---- groups, scanners, targets -----------------------------------------------------------------
G_T0, G_ANS, G_FAIL, G_LEN, G_HEAD, G_TAIL = 5, 6, 7, 8, 9, 10  # values of a group (t0 is a float)
GROUP_VALUES = 6
A_UNTIL, A_CLS, A_INFO = 5, 6, 7  # values of a scanner (until is a float)
ACTIVE_VALUES = 3
TARGET_VALUES = 3  # none used: rows of 8


@nb.njit(cache=True, nogil=True, inline="always")
def _free_members(B, BN, BM, head):
    b = head
    while b >= 0:
        q = BN[b]
        BN[b] = BM[0]
        BM[0] = b
        BM[2] += 1
        b = q


@nb.njit(cache=True, nogil=True, inline="always")
def _add_member(N, B, BN, BM, g, mem):
    """Add ``mem`` to group ``g``'s members unless there (free blocks are checked before)."""
    cnt = N[g, G_LEN]
    b = N[g, G_HEAD]
    seen = 0
    while b >= 0:
        base = b * BLOCK
        top = min(BLOCK, cnt - seen)
        for q in range(top):
            if B[base + q] == mem:
                return
        seen += top
        b = BN[b]
    if cnt % BLOCK == 0:  # a new block
        if BM[0] >= 0:
            nb_ = BM[0]
            BM[0] = BN[nb_]
        else:
            nb_ = BM[1]
            BM[1] += 1
        BM[2] -= 1
        BN[nb_] = -1
        if N[g, G_HEAD] < 0:
            N[g, G_HEAD] = nb_
        else:
            BN[N[g, G_TAIL]] = nb_
        N[g, G_TAIL] = nb_
    B[N[g, G_TAIL] * BLOCK + cnt % BLOCK] = mem
    N[g, G_LEN] = cnt + 1


@nb.njit(cache=True, nogil=True)
def count_events(start, ea, et, es, eh, ep, ek, ebad, eos, G, B, BN, BM, A, TG,
                 window_s, fail_ratio, hold_s, ports, hosts, ping_hosts, arp_hosts, cnt, info_base, R, RF):
    """`ScanDetector._count` over events ``start:``. Returns (index to resume at after the member
    blocks are grown, or -1 when done; records written). A record per new scanner: R[r] = (frame,
    src, class, victim host, victim port, wording, kind, host, port, members), RF[r] = seconds."""
    GN, GF = G[2], G[3]
    AN, AF = A[2], A[3]
    nrec = 0
    zero = np.uint64(0)
    for i in range(start, ea.size):
        if BM[2] < 2:
            return i, nrec
        t = et[i]
        s = es[i]
        h = eh[i]
        p = ep[i]
        k = ek[i]
        bad = ebad[i]
        if bad:
            cnt[0] += 1
        ng = 1
        g2h = zero
        g2c = np.int64(0)
        mem2 = zero
        lim2 = 0
        what2 = 0
        if k == K_ICMP:
            g1h, g1c, mem1, lim1, cls, what1 = zero, np.int64(K_ICMP), np.uint64(h), ping_hosts, C_PINGSWEEP, W_PINGED
            bad = True
        elif k == K_ARP:
            g1h, g1c, mem1, lim1, cls, what1 = zero, np.int64(K_ARP), np.uint64(h), arp_hosts, C_DISCOVERY, W_ARP
        elif k == K_PROTO:
            g1h, g1c, mem1, lim1, cls, what1 = np.uint64(h), np.int64(K_PROTO), np.uint64(p), ports, C_PORTSCAN, W_PORTS
            bad = True
        else:
            kk = K_TCP if k == K_ACK else k
            g1h, g1c, mem1, lim1, cls, what1 = np.uint64(h), np.int64(kk), np.uint64(p), ports, C_PORTSCAN, W_PORTS
            if k != K_ACK and not eos[i]:
                ng = 2
                g2h, g2c, mem2, lim2, what2 = zero, np.int64(p * 256 + kk), np.uint64(h), hosts, W_HOSTS
        if A[0][M_SIZE] > 0 and t_find(A, s, zero, np.int64(0)) >= 0:
            t_touch(TG, s, h, np.int64(0))
        for gi in range(ng):
            if gi == 0:
                gh, gc, mem, lim, what = g1h, g1c, mem1, lim1, what1
            else:
                gh, gc, mem, lim, what = g2h, g2c, mem2, lim2, what2
            g = t_find(G, s, gh, gc)
            if g >= 0:
                t_move_end(G, g)
            if g < 0 or t - GF[g, G_T0] > window_s:
                if g < 0:
                    g, ev = t_insert(G, s, gh, gc)
                    if ev:
                        _free_members(B, BN, BM, GN[g, G_HEAD])
                else:
                    _free_members(B, BN, BM, GN[g, G_HEAD])
                GF[g, G_T0] = t
                GN[g, G_ANS] = 0
                GN[g, G_FAIL] = 0
                GN[g, G_LEN] = 0
                GN[g, G_HEAD] = -1
                GN[g, G_TAIL] = -1
            if not bad:
                GN[g, G_ANS] += 1
                continue
            GN[g, G_FAIL] += 1
            if GN[g, G_LEN] < 4 * lim:
                _add_member(GN, B, BN, BM, g, mem)
            glen = GN[g, G_LEN]
            if glen >= lim and GN[g, G_FAIL] >= fail_ratio * (GN[g, G_FAIL] + GN[g, G_ANS]):
                if gh != zero:
                    t_touch(TG, s, gh, np.int64(0))
                elif k != K_ARP:
                    b = GN[g, G_HEAD]
                    seen = 0
                    while b >= 0:
                        top = min(BLOCK, glen - seen)
                        for q in range(top):
                            t_touch(TG, s, B[b * BLOCK + q], np.int64(0))
                        seen += top
                        b = BN[b]
                an = t_find(A, s, zero, np.int64(0))
                if an < 0:
                    cnt[1] += 1
                    an, ev = t_insert(A, s, zero, np.int64(0))
                    AF[an, A_UNTIL] = t + hold_s
                    AN[an, A_CLS] = cls
                    AN[an, A_INFO] = info_base + nrec
                    R[nrec, 0] = ea[i]
                    R[nrec, 1] = np.int64(s)
                    R[nrec, 2] = cls
                    R[nrec, 3] = np.int64(gh)
                    R[nrec, 4] = gc >> 8
                    R[nrec, 5] = what
                    R[nrec, 6] = k
                    R[nrec, 7] = np.int64(h)
                    R[nrec, 8] = p
                    R[nrec, 9] = glen
                    RF[nrec] = t - GF[g, G_T0]
                    nrec += 1
                else:
                    AF[an, A_UNTIL] = max(AF[an, A_UNTIL], t + hold_s)
    return -1, nrec


# ---- connections seen opening: a hash set of 64-bit keys -----------------------------------------
@nb.njit(cache=True, nogil=True)
def set_add(keys, used, meta, q):
    mask = np.uint64(keys.size - 1)
    for j in range(q.size):
        x = q[j]
        i = _h(x, 0, 0) & mask
        while used[i]:
            if keys[i] == x:
                break
            i = (i + np.uint64(1)) & mask
        if not used[i]:
            used[i] = True
            keys[i] = x
            meta[0] += 1


@nb.njit(cache=True, nogil=True)
def set_has(keys, used, q, out):
    mask = np.uint64(keys.size - 1)
    for j in range(q.size):
        x = q[j]
        i = _h(x, 0, 0) & mask
        while used[i]:
            if keys[i] == x:
                out[j] = True
                break
            i = (i + np.uint64(1)) & mask


@nb.njit(cache=True, nogil=True)
def first_seen(keys):
    """The distinct keys in order of first occurrence, and the index of each first occurrence."""
    n = keys.size
    m = 16
    while m < 2 * n:
        m <<= 1
    mask = np.uint64(m - 1)
    tab = np.empty(m, np.uint64)
    used = np.zeros(m, np.bool_)
    uk = np.empty(n, np.uint64)
    first = np.empty(n, np.int64)
    u = 0
    for j in range(n):
        x = keys[j]
        i = _h(x, 0, 0) & mask
        seen = False
        while used[i]:
            if tab[i] == x:
                seen = True
                break
            i = (i + np.uint64(1)) & mask
        if not seen:
            used[i] = True
            tab[i] = x
            uk[u] = x
            first[u] = j
            u += 1
    return uk[:u], first[:u]
