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

from ._keys_kernel import NO_REFCOUNT, prefetch, table_size

M_HEAD, M_TAIL, M_SIZE, M_FREE, M_CAP, M_MASK, M_EVICT, M_HWM = range(8)

K_TCP, K_UDP, K_ACK, K_ICMP, K_ARP, K_PROTO = 0, 1, 2, 3, 4, 5
# classes and evidence wording of a scanner's record (decoded in scan.py)
C_PORTSCAN, C_PINGSWEEP, C_DISCOVERY = 0, 1, 2
W_PORTS, W_HOSTS, W_PINGED, W_ARP = 0, 1, 2, 3

BLOCK = 8  # members per block of a group's member list


C_K1, C_K2, C_K3, C_PRV, C_NXT, C_VAL = 0, 1, 2, 3, 4, 5


@nb.njit(cache=True, nogil=True)
def argsort_keys(a):
    """``np.argsort`` of 64-bit keys by an LSD radix sort (11-bit digits; a digit all keys share is
    skipped): several times faster than the compiled quicksort on the tens of thousands of keys of
    a flood's batch. Equal keys keep their order (the callers' keys are distinct, or equal keys
    are interchangeable)."""
    n = a.size
    idx = np.arange(n)
    if n < 64:
        return idx[np.argsort(a, kind="mergesort")]
    keys = a.copy()
    tk = np.empty(n, np.uint64)
    ti = np.empty(n, np.int64)
    for shift in range(0, 64, 11):
        sh = np.uint64(shift)
        cnt = np.zeros(2049, np.int64)
        for i in range(n):
            cnt[np.int64((keys[i] >> sh) & np.uint64(2047)) + 1] += 1
        if cnt.max() == n:
            continue
        for d in range(2048):
            cnt[d + 1] += cnt[d]
        for i in range(n):
            d = np.int64((keys[i] >> sh) & np.uint64(2047))
            tk[cnt[d]] = keys[i]
            ti[cnt[d]] = idx[i]
            cnt[d] += 1
        keys, tk = tk, keys
        idx, ti = ti, idx
    return idx


def new_table(cap: int, values: int):
    m = table_size(cap)
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


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def t_find(meta, idx, N, a, b, c):
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


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _unlink(meta, N, n):
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


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _append(meta, N, n):
    t = meta[M_TAIL]
    N[n, C_PRV] = t
    N[n, C_NXT] = -1
    if t >= 0:
        N[t, C_NXT] = n
    else:
        meta[M_HEAD] = n
    meta[M_TAIL] = n


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def t_move_end(meta, N, n):
    if meta[M_TAIL] != n:
        _unlink(meta, N, n)
        _append(meta, N, n)


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _idx_remove(meta, idx, N, n):
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


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def t_delete(meta, idx, N, n):
    """Remove node ``n`` (no eviction counted)."""
    _idx_remove(meta, idx, N, n)
    _unlink(meta, N, n)
    N[n, C_NXT] = meta[M_FREE]
    meta[M_FREE] = n
    meta[M_SIZE] -= 1


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def t_insert(meta, idx, N, a, b, c):
    """Insert a key known to be absent; returns (node, whether a node was evicted for it)."""
    evicted = False
    if meta[M_SIZE] >= meta[M_CAP]:
        n = meta[M_HEAD]
        _idx_remove(meta, idx, N, n)
        _unlink(meta, N, n)
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
    _append(meta, N, n)
    meta[M_SIZE] += 1
    return n, evicted


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def t_touch(meta, idx, N, a, b, c):
    """`LRU.touch`: (node, new, evicted)."""
    n = t_find(meta, idx, N, a, b, c)
    if n >= 0:
        t_move_end(meta, N, n)
        return n, False, False
    n, ev = t_insert(meta, idx, N, a, b, c)
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
    meta, idx, N, NF = T[0], T[1], T[2], T[3]
    n = meta[M_HEAD]
    while n >= 0:
        q = N[n, C_NXT]
        if NF[n, col] < t0:
            t_delete(meta, idx, N, n)
        n = q


# ---- pending probes ----------------------------------------------------------------------------
P_TS, P_S, P_H, P_P, P_K, P_OS = 5, 6, 7, 8, 9, 10  # values of a pending probe (ts is a float)
PENDING_VALUES = 6


# ---- groups, scanners, targets -----------------------------------------------------------------
G_T0, G_ANS, G_FAIL, G_LEN, G_HEAD, G_TAIL = 5, 6, 7, 8, 9, 10  # values of a group (t0 is a float)
GROUP_VALUES = 6
A_UNTIL, A_CLS, A_INFO = 5, 6, 7  # values of a scanner (until is a float)
ACTIVE_VALUES = 3
TARGET_VALUES = 3  # none used: rows of 8


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _free_members(B, BN, BM, head):
    b = head
    while b >= 0:
        q = BN[b]
        BN[b] = BM[0]
        BM[0] = b
        BM[2] += 1
        b = q


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
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
    src, class, victim host, victim port, wording, kind, host, port, members), RF[r] = (seconds, packet time
    of the crossing group's first probe)."""
    # (each table's arrays taken out of its tuple once: a helper that did it per call paid a reference
    # count increment and decrement per array, most of an insert's time)
    Gm, Gi, GN, GF = G[0], G[1], G[2], G[3]
    Am, Ai, AN, AF = A[0], A[1], A[2], A[3]
    Tm, Ti, TN = TG[0], TG[1], TG[2]
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
        if Am[M_SIZE] > 0 and t_find(Am, Ai, AN, s, zero, np.int64(0)) >= 0:
            t_touch(Tm, Ti, TN, s, h, np.int64(0))
        for gi in range(ng):
            if gi == 0:
                gh, gc, mem, lim, what = g1h, g1c, mem1, lim1, what1
            else:
                gh, gc, mem, lim, what = g2h, g2c, mem2, lim2, what2
            g = t_find(Gm, Gi, GN, s, gh, gc)
            if g >= 0:
                t_move_end(Gm, GN, g)
            if g < 0 or t - GF[g, G_T0] > window_s:
                if g < 0:
                    g, ev = t_insert(Gm, Gi, GN, s, gh, gc)
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
                    t_touch(Tm, Ti, TN, s, gh, np.int64(0))
                elif k != K_ARP:
                    b = GN[g, G_HEAD]
                    seen = 0
                    while b >= 0:
                        top = min(BLOCK, glen - seen)
                        for q in range(top):
                            t_touch(Tm, Ti, TN, s, B[b * BLOCK + q], np.int64(0))
                        seen += top
                        b = BN[b]
                an = t_find(Am, Ai, AN, s, zero, np.int64(0))
                if an < 0:
                    cnt[1] += 1
                    an, ev = t_insert(Am, Ai, AN, s, zero, np.int64(0))
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
                    RF[nrec, 0] = t - GF[g, G_T0]
                    RF[nrec, 1] = GF[g, G_T0]
                    nrec += 1
                else:
                    AF[an, A_UNTIL] = max(AF[an, A_UNTIL], t + hold_s)
    return -1, nrec


# ---- connections seen opening: a hash set of 64-bit keys -----------------------------------------
@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _set_slot(keys, used, x):
    """Where ``x`` is in the set, or the free slot where it would go (linear probing)."""
    mask = np.uint64(keys.size - 1)
    i = _h(x, 0, 0) & mask
    while used[i] and keys[i] != x:
        i = (i + np.uint64(1)) & mask
    return i


@nb.njit(cache=True, nogil=True)
def set_add(keys, used, meta, q):
    for j in range(q.size):
        i = _set_slot(keys, used, q[j])
        if not used[i]:
            used[i] = True
            keys[i] = q[j]
            meta[0] += 1


@nb.njit(cache=True, nogil=True)
def set_has(keys, used, q, out):
    for j in range(q.size):
        if used[_set_slot(keys, used, q[j])]:
            out[j] = True


# ---- one batch's probes and answers, in two compiled passes (scan.py's former numpy masks) -------
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x94D049BB133111EB)
_S29 = np.uint64(29)
_S8 = np.uint64(8)
_S16 = np.uint64(16)
_ONE = np.uint64(1)
TH_FIN, TH_SYN, TH_RST, TH_ACK = 1, 2, 4, 16
# bits of a frame's answer code: an answer of these kinds, or a reset
AN_TCP, AN_UDP, AN_ICMP, AN_ARP, AN_RST = 1, 2, 4, 8, 16


@nb.njit(cache=True, nogil=True, inline="always")
def pair_key1(a, b, c):
    """`base.pair_key` of one (client, server, port)."""
    x = np.uint64(a) * _M1
    x ^= x >> _S29
    x ^= np.uint64(b)
    x *= _M3
    x ^= x >> _S32
    return x ^ ((np.uint64(c) + _ONE) * _M2)


@nb.njit(cache=True, nogil=True, inline="always")
def probe_key(s, h, port, kind):
    """`scan._key` of one (source, host, port, kind)."""
    return pair_key1(s, h, (np.uint64(port) << _S8) | np.uint64(kind))


@nb.njit(cache=True, nogil=True, inline="always")
def _ports_key(sp, dp):
    return (np.uint64(sp) << _S16) | np.uint64(dp)


_FLOOD_M = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True, nogil=True)
def _held_table(hkeys, hlo, huntil):
    """The held floods' target keys (flood.py's `_target_key`) with the [from, until] of each, as a
    small open-addressing table (key, from, until, used), at most a quarter full: a datagram's key
    is found in one probe, without the branches of a search that a mix of flood kinds mispredicts."""
    m = 16
    while m < 4 * hkeys.size:
        m <<= 1
    tk = np.zeros(m, np.uint64)
    tlo = np.zeros(m, np.float64)
    thi = np.zeros(m, np.float64)
    used = np.zeros(m, np.bool_)
    mask = np.uint64(m - 1)
    for q in range(hkeys.size):
        x = hkeys[q]
        h = (x * _FLOOD_M) >> np.uint64(40) & mask
        while used[h]:
            h = (h + _ONE) & mask
        tk[h] = x
        tlo[h] = hlo[q]
        thi[h] = huntil[q]
        used[h] = True
    return tk, tlo, thi, used, mask


@nb.njit(cache=True, nogil=True, inline="always")
def _flood_held(fk, d, t, tk, tlo, thi, used, mask):
    """Whether a datagram of flood kind ``fk`` to ``d`` at ``t`` belongs to a flood held on ``d``: its
    target key one of the held ones (`_held_table`), ``t`` within its [from, until]."""
    key = np.uint64(d) ^ ((np.uint64(fk) + _ONE) * _FLOOD_M)
    h = (key * _FLOOD_M) >> np.uint64(40) & mask
    while used[h]:
        if tk[h] == key:
            return tlo[h] <= t <= thi[h]
        h = (h + _ONE) & mask
    return False


@nb.njit(cache=True, nogil=True, inline="always")
def _pair_filter_bit(s, d, F):
    """The bit of the (sender, receiver) pair in the bit filter ``F`` (see `_flood_firsts`)."""
    x = pair_key1(s, d, 0)
    return (x ^ (x >> np.uint64(32))) & np.uint64(F.shape[0] * 64 - 1)


@nb.njit(cache=True, nogil=True)
def _flood_firsts(cbit, nc, F, fmeta):
    """For the held floods' datagrams of a batch, in frame order (``cbit[:nc]``: their pairs' bits,
    `_pair_filter_bit`), whether each is its (sender, receiver) pair's first: the pair's bit set in
    neither generation of the bit filter ``F`` (uint64 words, a power of two of rows; column
    ``fmeta[1]`` the current generation, the other the older one, side by side so that one cache
    line holds both; ``fmeta[0]``: bits set in the current one), which it then sets. A pair whose
    bit another pair set reads as not new. (A tight loop of its own, the words prefetched a few
    datagrams ahead: inside `classify`'s loop each cost a cache miss of its own.)"""
    first = np.zeros(nc, np.bool_)
    g = fmeta[1]
    for j in range(nc):
        if j + 16 < nc:
            prefetch(F, 2 * np.int64(cbit[j + 16] >> np.uint64(6)))
        b = cbit[j]
        w = np.int64(b >> np.uint64(6))
        m = _ONE << (b & np.uint64(63))
        if (F[w, 0] | F[w, 1]) & m:
            continue
        F[w, g] |= m
        fmeta[0] += 1
        first[j] = True
    return first


@nb.njit(cache=True, nogil=True)
def classify(status, ipver, l4ok, proto, flags, icmp_type, ip_len, ip_hdr_len, l4_hdr_len, dst4, dst6,
             ethertype, arp_op, src4, sport, dport, src, dst, ts, hkeys, hlo, huntil, F, fmeta, sweep):
    """Every frame's probe kind (-1: none; K_ACK before the connection check), probed port, whether
    it is a SYN of an OS stack to a port outside ``sweep`` (a bool per port: the login services a
    worm sweeps through its OS stack, whose SYNs count for the horizontal rule like raw ones),
    and its answer code (AN_*); and the keys of the connections seen
    opening (forward keys of the opening frames, then their reverse keys), as `ScanDetector` had
    them from numpy masks. A SYN, UDP datagram or echo request that is its (sender, receiver)
    pair's first of a flood held on the receiver (``hkeys``, ``hlo``, ``huntil``, ``F``, ``fmeta``: see
    `_flood_held`, `_flood_firsts`; no keys: none) is no probe and opens no connection: the second on
    is. (Such datagrams are taken as probes in the pass over the frames, then the filter decides
    for all of them in order, and those that are their pair's first are taken back.)"""
    held = hkeys.size > 0
    n = status.size
    kind = np.full(n, -1, np.int8)
    port = np.zeros(n, np.uint16)
    stack = np.zeros(n, np.bool_)
    code = np.zeros(n, np.uint8)
    opening = np.empty(n, np.int64)
    no = 0
    tk, tlo, thi, used, hmask = _held_table(hkeys, hlo, huntil)
    crow = np.empty(n if held else 0, np.int64)  # the held floods' datagrams, their pairs' bits
    cbit = np.empty(n if held else 0, np.uint64)
    nc = 0
    for i in range(n):
        st_ok = status[i] == 0
        v = ipver[i]
        p = proto[i]
        if v == 0:
            if st_ok and ethertype[i] == 0x0806:
                op = arp_op[i]
                if op == 1 and src4[i] != 0 and src4[i] != dst4[i]:
                    kind[i] = K_ARP
                elif op == 2:
                    code[i] = AN_ARP
            continue
        if not st_ok:
            continue
        # destinations a probe can go to: not multicast, broadcast or unspecified
        if v == 6:
            dok = dst6[i, 0] != 0xFF
            if dok:
                anyb = False
                for q in range(16):
                    if dst6[i, q] != 0:
                        anyb = True
                        break
                dok = anyb
        else:
            ip = dst4[i]
            dok = (ip >> 28) != 0xE and ip != 0xFFFFFFFF and (ip & 0xFF) != 0xFF and ip != 0
        if ethertype[i] == 0x0806:  # (an ARP frame with an IP version: as the masks had it)
            op = arp_op[i]
            if op == 1 and src4[i] != 0 and src4[i] != dst4[i]:
                kind[i] = K_ARP
            elif op == 2:
                code[i] = AN_ARP
        if p != 1 and p != 6 and p != 17 and p != 58:
            if dok:
                kind[i] = K_PROTO
                port[i] = p
            continue
        if not l4ok[i]:
            continue
        if p == 6:
            f = flags[i]
            crafted = ((f & (TH_SYN | TH_FIN)) == (TH_SYN | TH_FIN) or (f & (TH_SYN | TH_RST)) == (TH_SYN | TH_RST)
                       or (f & (TH_FIN | TH_RST)) == (TH_FIN | TH_RST))
            if dok and ((f & (TH_ACK | TH_RST)) == 0 or crafted):
                kind[i] = K_TCP
                port[i] = dport[i]
                if (f & TH_SYN) != 0 and l4_hdr_len[i] > 24 and not sweep[dport[i]]:
                    stack[i] = True
            elif dok and (f & 0x3F) == TH_ACK and np.int64(ip_len[i]) - np.int64(ip_hdr_len[i]) - np.int64(l4_hdr_len[i]) <= 0:
                kind[i] = K_ACK
                port[i] = dport[i]
            if (held and kind[i] == K_TCP and (f & (TH_SYN | TH_ACK)) == TH_SYN
                    and _flood_held(0, dst[i], ts[i], tk, tlo, thi, used, hmask)):
                crow[nc] = i
                cbit[nc] = _pair_filter_bit(src[i], dst[i], F)
                nc += 1
            if (f & (TH_SYN | TH_RST)) == TH_SYN and not crafted:
                opening[no] = i
                no += 1
            if (f & TH_RST) != 0:
                code[i] |= AN_RST
            elif (f & TH_ACK) != 0:
                code[i] |= AN_TCP
        elif p == 17:
            code[i] |= AN_UDP
            if dok and dport[i] <= sport[i]:
                kind[i] = K_UDP
                port[i] = dport[i]
                if held and _flood_held(1, dst[i], ts[i], tk, tlo, thi, used, hmask):
                    crow[nc] = i
                    cbit[nc] = _pair_filter_bit(src[i], dst[i], F)
                    nc += 1
        elif (p == 58) == (v == 6):  # ICMP of the frame's family
            t = icmp_type[i]
            if t == (128 if v == 6 else 8):
                if dok:
                    kind[i] = K_ICMP
                    if held and _flood_held(2, dst[i], ts[i], tk, tlo, thi, used, hmask):
                        crow[nc] = i
                        cbit[nc] = _pair_filter_bit(src[i], dst[i], F)
                        nc += 1
            elif t == (129 if v == 6 else 0):
                code[i] |= AN_ICMP
    if nc:
        first = _flood_firsts(cbit, nc, F, fmeta)
        back = np.zeros(n, np.bool_)
        for j in range(nc):
            if first[j]:
                i = crow[j]
                kind[i] = -1
                port[i] = 0
                stack[i] = False
                back[i] = True
        q = 0
        for j in range(no):  # a flood's first SYN of its pair opens no connection either
            if not back[opening[j]]:
                opening[q] = opening[j]
                q += 1
        no = q
    okeys = np.empty(2 * no, np.uint64)
    for j in range(no):
        i = opening[j]
        okeys[j] = pair_key1(src[i], dst[i], _ports_key(sport[i], dport[i]))
        okeys[no + j] = pair_key1(dst[i], src[i], _ports_key(dport[i], sport[i]))
    return kind, port, stack, code, okeys


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _set_has1(keys, used, x):
    return used[_set_slot(keys, used, x)]


PAIR_BITS = 16  # bits of the (prober, host) filter of `probes_of`


@nb.njit(cache=True, nogil=True, inline="always")
def _pair_bit(s, h):
    return ((np.uint64(s) * _M1) ^ (np.uint64(h) * _M3)) >> np.uint64(64 - PAIR_BITS)


@nb.njit(cache=True, nogil=True)
def probes_of(kind, port, code, stack, sport, dport, src, dst, ts, ck1, cu1, cm1, ck2, cu2, cm2, end, answer_s, T):
    """The batch's distinct probes, answers and resets, as `ScanDetector.process` fed
    `batch_events`: bare ACKs of a connection seen opening (sets 1 and 2) stop being probes
    (``kind`` is updated). Returns (probes, distinct probe keys in order of first occurrence, their
    first frame, kind, failed, event, the pending ones' indices in key order, the answers' keys
    (in frame order, duplicates kept), the resets' keys (the TCP-keyed ones, then the ACK-keyed
    ones, each in frame order), the frame of each reset). A probe is answered by an answer with
    its key at or after it, reset by a reset with its key anywhere in the batch. An answer or a
    reset can only concern a probe of this batch or one pending in T (pending table), whose keys
    hold the prober and the host: when answering frames far outnumber those probes, a bit filter
    of their (prober, host) pairs leaves out the frames between other hosts first (their keys would
    match nothing)."""
    n = kind.size
    na = 0
    nr = 0
    has1 = cm1[0] > 0
    has2 = cm2[0] > 0
    np_ = 0
    # (branches on a frame's kind mispredict where data and bare ACKs alternate at random: the bare
    # ACKs are listed without one, then looked up, and the counts summed without one)
    if has1 or has2:
        acks = np.empty(n, np.int64)
        nack = 0
        for i in range(n):
            acks[nack] = i
            nack += kind[i] == K_ACK
        for q in range(nack):
            i = acks[q]
            x = pair_key1(src[i], dst[i], _ports_key(sport[i], dport[i]))
            if (has1 and _set_has1(ck1, cu1, x)) or (has2 and _set_has1(ck2, cu2, x)):
                kind[i] = -1
    for i in range(n):
        np_ += kind[i] >= 0
        c = code[i]
        nr += (c & AN_RST) != 0
        na += 2 * ((c & AN_TCP) != 0) + ((c & AN_UDP) != 0) + ((c & AN_ICMP) != 0) + ((c & AN_ARP) != 0)
    meta, N = T[0], T[2]
    use_pairs = 4 * (np_ + meta[M_SIZE]) < na + nr
    pairs = np.zeros((1 << PAIR_BITS) if use_pairs else 1, np.bool_)
    if use_pairs:
        nd = meta[M_HEAD]
        while nd >= 0:
            pairs[_pair_bit(N[nd, P_S], N[nd, P_H])] = True
            nd = N[nd, C_NXT]
    # distinct probes in order of first occurrence; a slot holds probe index + 1
    m = table_size(np_)
    pmask = np.uint64(m - 1)
    ptab = np.empty(m, np.uint64)
    pslot = np.zeros(m, np.int64)
    uk = np.empty(np_, np.uint64)
    at = np.empty(np_, np.int64)
    u = 0
    prow = np.empty(np_ + 1, np.int64)  # the probes' frames (listed without a branch on the kind)
    q = 0
    for i in range(n):
        prow[q] = i
        q += kind[i] >= 0
    for q in range(np_):
        i = prow[q]
        k = kind[i]
        if use_pairs:
            pairs[_pair_bit(src[i], dst[i])] = True
        x = probe_key(src[i], dst[i], port[i], k)
        j = _h(x, 0, 0) & pmask
        while pslot[j] != 0:
            if ptab[j] == x:
                break
            j = (j + _ONE) & pmask
        if pslot[j] != 0:
            continue
        u += 1
        pslot[j] = u
        ptab[j] = x
        uk[u - 1] = x
        at[u - 1] = i
    uk = uk[:u]
    at = at[:u]
    plast = np.full(u, -1, np.int64)
    preset = np.zeros(u, np.bool_)
    ans = np.empty(na, np.uint64)
    rs_keys = np.empty(2 * nr, np.uint64)
    rs_at = np.empty(2 * nr, np.int64)
    q = 0
    r = 0
    for i in range(n):
        c = code[i]
        if c == 0:
            continue
        if use_pairs and not pairs[_pair_bit(dst[i], src[i])]:
            continue
        if c & AN_RST:
            rs_keys[r] = probe_key(dst[i], src[i], sport[i], K_TCP)
            rs_keys[nr + r] = probe_key(dst[i], src[i], sport[i], K_ACK)
            rs_at[r] = i
            rs_at[nr + r] = i
            if u > 0:
                for z in (rs_keys[r], rs_keys[nr + r]):
                    p = _probe_of(ptab, pslot, pmask, z)
                    if p >= 0:
                        preset[p] = True
            r += 1
        q0 = q
        if c & AN_TCP:
            ans[q] = probe_key(dst[i], src[i], sport[i], K_TCP)
            ans[q + 1] = probe_key(dst[i], src[i], sport[i], K_ACK)
            q += 2
        if c & AN_UDP:
            ans[q] = probe_key(dst[i], src[i], sport[i], K_UDP)
            q += 1
        if c & AN_ICMP:
            ans[q] = probe_key(dst[i], src[i], 0, K_ICMP)
            q += 1
        if c & AN_ARP:
            ans[q] = probe_key(dst[i], src[i], 0, K_ARP)
            q += 1
        if u > 0:
            for qq in range(q0, q):
                p = _probe_of(ptab, pslot, pmask, ans[qq])
                if p >= 0:
                    plast[p] = i  # frames in order: the last one stays
    if r < nr:  # (frames left out by the pair filter) the TCP-keyed resets, then the ACK-keyed ones
        rs_keys = np.concatenate((rs_keys[:r], rs_keys[nr:nr + r]))
        rs_at = np.concatenate((rs_at[:r], rs_at[nr:nr + r]))
    ans = ans[:q]
    k_u = np.empty(u, np.int64)
    failed = np.zeros(u, np.bool_)
    ev = np.zeros(u, np.bool_)
    pend = np.zeros(u, np.bool_)
    npend = 0
    for j in range(u):
        a = at[j]
        k = np.int64(kind[a])
        k_u[j] = k
        answered = plast[j] >= a
        reset = preset[j]
        timed = not answered and not reset and end - ts[a] >= answer_s
        fl = reset or timed
        counted = fl or k == K_ICMP or k == K_PROTO
        failed[j] = fl
        ev[j] = counted or answered
        if not counted and not answered:
            pend[j] = True
            npend += 1
    pj = np.empty(npend, np.int64)
    pk = np.empty(npend, np.uint64)
    q = 0
    for j in range(u):
        if pend[j]:
            pj[q] = j
            pk[q] = uk[j]
            q += 1
    porder = pj[argsort_keys(pk)]
    return np_, uk, at, k_u, failed, ev, porder, ans, rs_keys, rs_at


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _probe_of(ptab, pslot, pmask, x):
    j = _h(x, 0, 0) & pmask
    while pslot[j] != 0:
        if ptab[j] == x:
            return pslot[j] - 1
        j = (j + _ONE) & pmask
    return -1


@nb.njit(cache=True, nogil=True)
def batch_events(T, uk, at, k_u, failed, ev, porder, ts, src, dst, port, stack, ans, rs_keys, rs_at, end, answer_s):
    """The events of a batch (at, ts, src, host, port, kind, failed, os) in frame order: this
    batch's own probes (``ev``) before the pending ones at the same frame. The batch's unresolved
    probes (``porder``: their indices, in key order) are touched into the pending table T first;
    then the earlier ones are resolved: answered (at 0; taken in key order, whatever the order and
    repeats of the answers' keys ``ans``), reset (at the reset) or timed out (at the first frame
    past ``answer_s``)."""
    meta, idx, N, NF = T[0], T[1], T[2], T[3]
    nev = 0
    for j in range(uk.size):
        if ev[j]:
            nev += 1
    for q in range(porder.size):
        j = porder[q]
        a = at[j]
        n, new, evicted = t_touch(meta, idx, N, uk[j], np.uint64(0), np.int64(0))
        NF[n, P_TS] = ts[a]
        N[n, P_S] = np.int64(src[a])
        N[n, P_H] = np.int64(dst[a])
        N[n, P_P] = np.int64(port[a])
        N[n, P_K] = k_u[j]
        N[n, P_OS] = stack[a]
    cap = ans.size + rs_keys.size + meta[M_SIZE]
    pnode = np.empty(cap, np.int64)  # node of each pending event (its values stay until reused)
    pa = np.empty(cap, np.int64)
    pbad = np.empty(cap, np.bool_)
    m = 0
    if meta[M_SIZE] > 0 and ans.size > 0:
        hk = np.empty(ans.size, np.uint64)
        hn = np.empty(ans.size, np.int64)
        nh = 0
        size = meta[M_SIZE]
        if 4 * size < ans.size:  # few pending: their keys in a small local set, the answers looked up there
            ms = 16
            while ms < 2 * size:
                ms <<= 1
            smask = np.uint64(ms - 1)
            stab = np.empty(ms, np.uint64)
            sslot = np.zeros(ms, np.int64)
            n = meta[M_HEAD]
            while n >= 0:
                x = np.uint64(N[n, C_K1])
                j = _h(x, 0, 0) & smask
                while sslot[j] != 0:
                    j = (j + _ONE) & smask
                sslot[j] = n + 1
                stab[j] = x
                n = N[n, C_NXT]
            for q in range(ans.size):
                p = _probe_of(stab, sslot, smask, ans[q])
                if p >= 0:
                    hk[nh] = ans[q]
                    hn[nh] = p
                    nh += 1
        else:
            for q in range(ans.size):
                n = t_find(meta, idx, N, ans[q], np.uint64(0), np.int64(0))
                if n >= 0:
                    hk[nh] = ans[q]
                    hn[nh] = n
                    nh += 1
        o = argsort_keys(hk[:nh])
        prev = np.uint64(0)
        for q in range(nh):
            x = hk[o[q]]
            if q > 0 and x == prev:
                continue
            prev = x
            n = hn[o[q]]
            pnode[m] = n
            pa[m] = 0
            pbad[m] = False
            m += 1
            t_delete(meta, idx, N, n)
    if meta[M_SIZE] > 0:
        for j in range(rs_keys.size):
            if meta[M_SIZE] == 0:
                break
            n = t_find(meta, idx, N, rs_keys[j], np.uint64(0), np.int64(0))
            if n < 0:
                continue
            pnode[m] = n
            pa[m] = rs_at[j]
            pbad[m] = True
            m += 1
            t_delete(meta, idx, N, n)
        nts = ts.size
        while meta[M_SIZE] > 0:
            n = meta[M_HEAD]
            t = NF[n, P_TS]
            if end - t < answer_s:
                break
            t_delete(meta, idx, N, n)
            a = 0
            if t >= ts[0]:
                a = np.searchsorted(ts, t + answer_s)
            pnode[m] = n
            pa[m] = min(a, nts - 1)
            pbad[m] = True
            m += 1
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


@nb.njit(cache=True, nogil=True)
def flag_scanners(rows_all, first, ts, hold_s, until, cls_idx, verdict):
    """`ScanDetector._flag` over the rows of each scanner (`scanner_rows`): the hold lapses inside
    a batch too, so a scanner's rows count while each comes within ``hold_s`` of the one before,
    the first longer gap ends them; none count when the first comes after the scanner's ``until``.
    The rows that count and no earlier detector flagged get the scanner's class (``cls_idx``).
    Returns per scanner the rows that count (0: none), their first and last time."""
    ns = first.size - 1
    n = np.zeros(ns, np.int64)
    lo = np.zeros(ns, np.float64)
    hi = np.zeros(ns, np.float64)
    for j in range(ns):
        a, z = first[j], first[j + 1]
        if z == a or ts[rows_all[a]] > until[j]:
            continue
        e = z
        for q in range(a + 1, z):
            if ts[rows_all[q]] - ts[rows_all[q - 1]] > hold_s:
                e = q
                break
        t0 = ts[rows_all[a]]
        t1 = t0
        for q in range(a, e):
            r = rows_all[q]
            if verdict[r] < 0:
                verdict[r] = cls_idx[j]
            t0 = min(t0, ts[r])
            t1 = max(t1, ts[r])
        n[j] = e - a
        lo[j] = t0
        hi[j] = t1
    return n, lo, hi


@nb.njit(cache=True, nogil=True)
def scanner_rows(kind, status, ipver, proto, flags, icmp_type, ethertype, arp_op, src, dst, scanners, start, TG):
    """The frames `ScanDetector._flag` flags, grouped by scanner: a scanner's probes (and the ACK/RST
    that close a connect scan), the replies to it, and whatever else it exchanges with a host it
    probed (a pair in TG), each from the scanner's ``start`` frame on. Returns (rows, grouped by
    scanner in the order of ``scanners`` (sorted), frame order within; the first row of each
    scanner's run, scanners.size + 1 entries)."""
    n = kind.size
    ns = scanners.size
    owner = np.empty(n, np.int64)
    rows = np.empty(n, np.int64)
    cnt = np.zeros(ns + 1, np.int64)
    Tm, Ti, TN = TG[0], TG[1], TG[2]
    has_tg = Tm[M_SIZE] > 0
    # scanner -> its index, in a small open-addressing set (one probe per address, not a binary search)
    ms = 16
    while ms < 4 * ns:
        ms <<= 1
    smask = np.uint64(ms - 1)
    stab = np.empty(ms, np.uint64)
    sslot = np.zeros(ms, np.int64)
    sbit = np.zeros(4096, np.bool_)  # and a 4096-bit filter before it (one multiply per address)
    for j in range(ns):
        x = scanners[j]
        sbit[(x * _M1) >> np.uint64(52)] = True
        h = _h(x, 0, 0) & smask
        while sslot[h] != 0 and stab[h] != x:
            h = (h + _ONE) & smask
        sslot[h] = j + 1
        stab[h] = x
    m = 0
    for i in range(n):
        if status[i] != 0:
            continue
        js = _probe_of(stab, sslot, smask, src[i]) if sbit[(src[i] * _M1) >> np.uint64(52)] else -1
        jd = _probe_of(stab, sslot, smask, dst[i]) if sbit[(dst[i] * _M1) >> np.uint64(52)] else -1
        if js < 0 and jd < 0:
            continue
        f = flags[i]
        v = ipver[i]
        p = proto[i]
        tcp = v > 0 and p == 6
        probe = kind[i] >= 0 or (tcp and ((f & TH_RST) != 0 or (f & 0x3F) == TH_ACK))
        t = icmp_type[i]
        # (a UDP datagram to the scanner is a reply only from a host it probed, `conv` below: from
        # another it answers the scanner's own lookups, its DNS and NTP servers')
        reply = ((tcp and ((f & TH_RST) != 0 or (f & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK)))
                 or (p == 1 and v == 4 and (t == 0 or t == 3 or t == 11))
                 or (p == 58 and v == 6 and (t == 129 or t == 1 or t == 3))
                 or (ethertype[i] == 0x0806 and arp_op[i] == 2))
        fs = js >= 0
        td = jd >= 0
        conv = False
        if has_tg and not (fs and probe) and not (td and reply):
            conv = t_find(Tm, Ti, TN, src[i], dst[i], 0) >= 0 or t_find(Tm, Ti, TN, dst[i], src[i], 0) >= 0
        sel = (fs and (probe or conv) and i >= start[js]) or (td and (reply or conv) and i >= start[jd])
        if not sel:
            continue
        o = js if fs else jd  # the frame's scanner: its source when that is one
        rows[m] = i
        owner[m] = o
        cnt[o + 1] += 1
        m += 1
    for q in range(ns):
        cnt[q + 1] += cnt[q]
    out = np.empty(m, np.int64)
    pos = cnt[:ns].copy()
    for q in range(m):
        o = owner[q]
        out[pos[o]] = rows[q]
        pos[o] += 1
    return out, cnt
