"""Compiled source counting of the flood detector (see flood.py).

A bucket table is a `_scan_kernel` LRU table keyed by the (destination, kind) target key, with
the target's current bucket, that bucket's first packet time and how many distinct sources it
has seen; the sources themselves are an open-addressing set per node (a row of ``members``, at
least twice ``sources`` slots, 0 meaning empty; source 0 is a flag column). A bucket stops
collecting once it reaches ``sources``: only that it crossed matters afterwards.

`count` does what the numpy version did with two `np.unique` sorts over the batch: group the
rows by (target, bucket) in one hashing pass, take as candidates the groups with two or more
distinct sources and those of targets already in the table, and visit them in the order of
their 64-bit (target, bucket) key (so that the LRU sees the same sequence of touches).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._keys_kernel import NO_REFCOUNT, _has, _set_of, table_size
from ._scan_kernel import C_VAL, t_find, t_insert, t_move_end

V_BUCKET, V_FIRST, V_COUNT, V_ZERO = C_VAL, C_VAL + 1, C_VAL + 2, C_VAL + 3
VALUES = 4
_M = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True, nogil=True, inline="always")
def _mix2(a, b):
    x = (a ^ (b * np.uint64(0xC2B2AE3D27D4EB4F))) * np.uint64(0x9E3779B97F4A7C15)
    return x ^ (x >> np.uint64(29))


@nb.njit(cache=True, nogil=True)
def count(T, members, rows, tkey, src, ts, width, sources):
    """Count the distinct sources of ``rows`` (``tkey`` per row) per (target, bucket); returns, per
    bucket that has reached ``sources`` (in visiting order): its index into ``rows`` of the group's
    first row, the bucket, its first packet time."""
    meta, idx, N, NF = T[0], T[1], T[2], T[3]  # (once: see `_scan_kernel.count_events`)
    n = rows.size
    m = table_size(n)
    mmask = np.uint64(m - 1)
    slot_g = np.full(m, -1, np.int64)
    g_key = np.empty(n, np.uint64)
    g_bk = np.empty(n, np.int64)
    g_head = np.empty(n, np.int64)
    g_src = np.empty(n, np.uint64)
    g_multi = np.zeros(n, np.bool_)
    g_cnt = np.zeros(n, np.int64)
    row_g = np.empty(n, np.int64)
    ng = 0
    for i in range(n):
        r = rows[i]
        k = tkey[i]
        bk = np.int64(np.floor(ts[r] / width))
        h = _mix2(k, np.uint64(bk)) & mmask
        while True:
            g = slot_g[h]
            if g < 0:
                g = ng
                ng += 1
                slot_g[h] = g
                g_key[g] = k
                g_bk[g] = bk
                g_head[g] = i
                g_src[g] = src[r]
                break
            if g_key[g] == k and g_bk[g] == bk:
                break
            h = (h + np.uint64(1)) & mmask
        row_g[i] = g
    # each group's rows and whether it has two sources, in a pass of their own: in the hashing loop
    # above, the per-row updates of a few busy groups cost it half its time
    for i in range(n):
        g = row_g[i]
        g_cnt[g] += 1
        g_multi[g] |= src[rows[i]] != g_src[g]
    # candidates: judged against the table as it was before this batch
    cand = np.empty(ng, np.int64)
    nc = 0
    for g in range(ng):
        if g_multi[g] or t_find(meta, idx, N, g_key[g], 0, 0) >= 0:
            cand[nc] = g
            nc += 1
    out_i = np.empty(nc, np.int64)
    out_bk = np.empty(nc, np.int64)
    out_first = np.empty(nc, np.float64)
    if nc == 0:
        return out_i, out_bk, out_first
    cand = cand[:nc]
    tb = np.empty(nc, np.uint64)
    for c in range(nc):
        g = cand[c]
        tb[c] = g_key[g] * _M + np.uint64(g_bk[g])
    cand = cand[np.argsort(tb)]
    # the rows of each candidate group, in capture order
    pos = np.full(ng, -1, np.int64)
    off = 0
    for c in range(nc):
        g = cand[c]
        pos[g] = off
        off += g_cnt[g]
    start = pos.copy()
    grows = np.empty(off, np.int64)
    for i in range(n):
        g = row_g[i]
        if pos[g] >= 0:
            grows[pos[g]] = i
            pos[g] += 1
    width_m = members.shape[1]
    smask = np.uint64(width_m - 1)
    ne = 0
    for c in range(nc):
        g = cand[c]
        k = g_key[g]
        bk = g_bk[g]
        h0 = g_head[g]
        nd = t_find(meta, idx, N, k, 0, 0)
        if nd >= 0:
            t_move_end(meta, N, nd)
        if nd < 0 or N[nd, V_BUCKET] != bk:
            if nd < 0:
                nd, _ev = t_insert(meta, idx, N, k, 0, 0)
            N[nd, V_BUCKET] = bk
            NF[nd, V_FIRST] = ts[rows[h0]]
            N[nd, V_COUNT] = 0
            N[nd, V_ZERO] = 0
            members[nd, :] = 0
        if N[nd, V_COUNT] < sources:
            for p in range(start[g], start[g] + g_cnt[g]):
                if N[nd, V_COUNT] >= sources:
                    break
                s = src[rows[grows[p]]]
                if s == 0:
                    if N[nd, V_ZERO] == 0:
                        N[nd, V_ZERO] = 1
                        N[nd, V_COUNT] += 1
                    continue
                h = _mix2(s, np.uint64(1)) & smask
                while True:
                    v = members[nd, h]
                    if v == 0:
                        members[nd, h] = s
                        N[nd, V_COUNT] += 1
                        break
                    if v == s:
                        break
                    h = (h + np.uint64(1)) & smask
        if N[nd, V_COUNT] >= sources:
            out_i[ne] = h0
            out_bk[ne] = N[nd, V_BUCKET]
            out_first[ne] = NF[nd, V_FIRST]
            ne += 1
    return out_i[:ne], out_bk[:ne], out_first[:ne]


def member_slots(sources: int) -> int:
    """Slots of a key's table of distinct sources."""
    return int(table_size(sources))


K_SYN, K_UDP, K_ICMP = 0, 1, 2  # flood.py's kinds


@nb.njit(cache=True, nogil=True)
def kinds(status, ipver, l4_ok, proto, flags, icmp_type):
    """`FloodDetector._kinds` in one pass: per frame, the flood kind it would be part of (a SYN, UDP,
    ICMP of its family) and the kind it answers (SYN-ACK or reset: SYN; port unreachable: UDP; echo
    reply: ICMP), -1 for none."""
    n = status.size
    kind = np.full(n, -1, np.int8)
    answers = np.full(n, -1, np.int8)
    for i in range(n):
        if status[i] != 0 or ipver[i] == 0 or not l4_ok[i]:
            continue
        p = proto[i]
        v6 = ipver[i] == 6
        if p == (58 if v6 else 1):
            kind[i] = K_ICMP
            t = icmp_type[i]
            if t == (1 if v6 else 3):
                answers[i] = K_UDP
            elif t == (129 if v6 else 0):
                answers[i] = K_ICMP
        elif p == 17:
            kind[i] = K_UDP
        elif p == 6:
            f = flags[i]
            if (f & 0x12) == 0x02:  # SYN without ACK
                kind[i] = K_SYN
            if (f & 0x12) == 0x12 or (f & 0x04) != 0:  # SYN-ACK, or a reset
                answers[i] = K_SYN
    return kind, answers


@nb.njit(cache=True, nogil=True, inline="always")
def _key_index(keys, rkey, cnt):
    """Per entry of ``rkey``, its index in ``keys`` (distinct) or -1, counted in ``cnt[index + 1]``.
    (The keys in a small open-addressing table, at most a quarter full: a row's key is found in one
    probe, without the branches of a binary search that a mix of flood kinds mispredicts.)"""
    m = 16
    while m < 4 * keys.size:
        m <<= 1
    mask = np.uint64(m - 1)
    tk = np.zeros(m, np.uint64)
    tj = np.full(m, -1, np.int64)
    for j in range(keys.size):
        h = _mix2(keys[j], np.uint64(2)) & mask
        while tj[h] >= 0:
            h = (h + np.uint64(1)) & mask
        tk[h] = keys[j]
        tj[h] = j
    idx = np.empty(rkey.size, np.int64)
    for i in range(rkey.size):
        x = rkey[i]
        h = _mix2(x, np.uint64(2)) & mask
        j = tj[h]
        while j >= 0 and tk[h] != x:
            h = (h + np.uint64(1)) & mask
            j = tj[h]
        idx[i] = j
        if j >= 0:
            cnt[j + 1] += 1
    return idx


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _place(rows, idx, out, pos):
    for i in range(rows.size):
        j = idx[i]
        if j >= 0:
            out[pos[j]] = rows[i]
            pos[j] += 1


@nb.njit(cache=True, nogil=True)
def rows_by_key(rows, rkey, back, bkey, keys):
    """The rows of each of ``keys`` (sorted, distinct): those of ``rows`` whose ``rkey`` is the key,
    then those of ``back`` whose ``bkey`` is, each in their order, as (rows, first row of each key
    with keys.size + 1 entries)."""
    nk = keys.size
    cnt = np.zeros(nk + 1, np.int64)
    ri = _key_index(keys, rkey, cnt)
    bi = _key_index(keys, bkey, cnt)
    for j in range(nk):
        cnt[j + 1] += cnt[j]
    out = np.empty(cnt[nk], np.int64)
    pos = cnt[:nk].copy()
    _place(rows, ri, out, pos)
    _place(back, bi, out, pos)
    return out, cnt


def warm_up() -> None:
    from ._scan_kernel import new_table

    T = new_table(16, VALUES)
    members = np.zeros((16, member_slots(16)), np.uint64)
    rows = np.arange(3, dtype=np.int64)
    count(T, members, rows, np.array([1, 1, 2], np.uint64), np.array([0, 5, 6], np.uint64), np.zeros(3), 10.0, 16)
    n_distinct(np.array([0, 5, 6], np.uint64), np.uint64(5))
    z = np.zeros(3, np.uint8)
    kinds(z, z, np.ones(3, np.bool_), z, np.zeros(3, np.uint16), z)
    k = np.array([1, 2, 3], np.uint64)
    rows_by_key(rows, k, rows, k, k)
    held_rows(rows, np.zeros(3, np.int8), k, np.zeros(3), k, np.zeros(3), np.zeros(3))
    flag_rows(rows, np.zeros(3), 0.0, 1.0, np.full(3, -1, np.int16), 10, k, np.uint64(5))
    established(np.ones(3, np.bool_), np.zeros(3, np.uint16), k, k)


@nb.njit(cache=True, nogil=True)
def n_distinct(a, exclude):
    """How many distinct values ``a`` holds other than ``exclude`` (`np.unique` without the sort)."""
    m = table_size(a.size)
    mask = np.uint64(m - 1)
    seen = np.zeros(m, np.uint64)
    zero = False
    n = 0
    for i in range(a.size):
        s = a[i]
        if s == exclude:
            continue
        if s == 0:
            if not zero:
                zero = True
                n += 1
            continue
        h = _mix2(s, np.uint64(1)) & mask
        while True:
            v = seen[h]
            if v == 0:
                seen[h] = s
                n += 1
                break
            if v == s:
                break
            h = (h + np.uint64(1)) & mask
    return n


@nb.njit(cache=True, nogil=True)
def flag_rows(rows, ts, lo, hi, verdict, cls, src, victim):
    """`FloodDetector._flag` of one held key's ``rows``: those with a time within [``lo``, ``hi``] get
    class ``cls`` where no earlier detector flagged them; returns (how many, their first and last
    time, how many distinct sources other than ``victim`` they have: `n_distinct`)."""
    keep = np.empty(rows.size, np.int64)
    m = 0
    for q in range(rows.size):
        i = rows[q]
        t = ts[i]
        if t >= lo and t <= hi:
            keep[m] = i
            m += 1
    if m == 0:
        return 0, 0.0, 0.0, 0
    t0 = np.inf
    t1 = -np.inf
    s = np.empty(m, np.uint64)
    for q in range(m):
        i = keep[q]
        if verdict[i] < 0:
            verdict[i] = cls
        t0 = min(t0, ts[i])
        t1 = max(t1, ts[i])
        s[q] = src[i]
    return m, t0, t1, n_distinct(s, victim)


@nb.njit(cache=True, nogil=True)
def established(tcp, flags, dst, victims):
    """The rows (ascending) of the ``tcp`` frames that acknowledge without SYN or RST (an
    established connection's segments) sent to one of ``victims``: `FloodDetector._clients`' mask."""
    tab, mask, zero = _set_of(victims)
    out = np.empty(tcp.size, np.int64)
    m = 0
    for i in range(tcp.size):
        f = flags[i]
        if tcp[i] and (f & 0x10) != 0 and (f & 0x06) == 0 and _has(tab, mask, zero, np.uint64(dst[i])):
            out[m] = i
            m += 1
    return out[:m]


@nb.njit(cache=True, nogil=True)
def held_rows(rows, fkind, addr, ts, keys, lo, until):
    """Per row ``rows[j]``, whether it is a datagram of a flood held at its time: its (``addr``,
    ``fkind[j]``) target key (flood.py's `_target_key`) is one of ``keys`` (sorted) and its time is
    within that target's [``lo``, ``until``]. ``fkind[j]`` < 0: no flood kind."""
    out = np.zeros(rows.size, np.bool_)
    if keys.size == 0:
        return out
    for j in range(rows.size):
        k = fkind[j]
        if k < 0:
            continue
        i = rows[j]
        key = np.uint64(addr[i]) ^ ((np.uint64(k) + np.uint64(1)) * _M)
        p = np.searchsorted(keys, key)
        if p < keys.size and keys[p] == key and lo[p] <= ts[i] <= until[p]:
            out[j] = True
    return out
