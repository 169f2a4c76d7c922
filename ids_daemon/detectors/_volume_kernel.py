"""Compiled counting pass of the volume detector: one batch's frames per (key, bucket), and
for the (key, bucket)s that can matter (candidates) what the batch shows about them, with
open-addressing hash tables instead of sorts.

Every tally is keyed exactly as `volume.py` keys it (``pair_key`` of the addresses and the
kind, times a constant, plus the bucket; all 64-bit wrapping), and looked up by that value,
as the dictionaries of the numpy version were: the results are the same.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._keys_kernel import CHUNK, NO_REFCOUNT, prefetch
from ._keys_kernel import _pair_key1 as _pair_key  # `base.pair_key` of one frame
from ._scan_kernel import C_K1, C_NXT, M_HEAD, M_SIZE, t_find, t_touch

K_SYN, K_ACK, K_PSHACK, K_RSTFIN, K_UDP, K_ICMP, K_FRAG, K_HTTP = range(8)
_M = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x94D049BB133111EB)
_TH_RST = 0x04
_U0 = np.uint64(0)


@nb.njit(cache=True, nogil=True, inline="always")
def _pair_base(client, server):
    """`_pair_key` before its port term."""
    a = np.uint64(client) * _M
    a ^= a >> np.uint64(29)
    a ^= np.uint64(server)
    a *= _M3
    return a ^ (a >> np.uint64(32))


@nb.njit(cache=True, nogil=True, inline="always")
def _pair_bit(a, c):
    return ((np.uint64(a) * _M) ^ (np.uint64(c) * _M3)) >> np.uint64(52)


@nb.njit(cache=True, nogil=True, inline="always")
def _with_kind(base, kind):
    """`_pair_key(client, server, kind)` from `_pair_base(client, server)` (port 0 * 16 + kind)."""
    return base ^ ((np.uint64(kind) + np.uint64(1)) * _M2)


@nb.njit(cache=True, nogil=True, inline="always")
def _kb(a, c, kind, t, window_s):
    """(`volume._keys(a, c, kind, 0)`) * _M + bucket, as `_count` and `_tally` key a frame."""
    k = _pair_key(a, c, np.uint64(kind))  # port 0 * 16 + kind
    return k * _M + np.uint64(np.int64(np.floor(t / window_s)))


@nb.njit(cache=True, nogil=True, inline="always")
def _slot(x, shift):
    return (x * _M) >> shift


@nb.njit(cache=True, nogil=True)
def _bits(n):
    m, bits = 16, 4
    while m < 2 * n:
        m <<= 1
        bits += 1
    return m, bits


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _find(tab, keys, x, shift, mask):
    """Index stored for ``x`` in ``tab`` (open addressing over ``keys``), or -1."""
    h = _slot(x, shift)
    while True:
        j = tab[h]
        if j < 0 or keys[j] == x:
            return j
        h = (h + np.uint64(1)) & mask



@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _set_insert(tab, keys, n, x, shift, mask):
    """Add ``x`` to the set (``tab``: open-addressing slots -> index into ``keys``, which holds
    ``n`` keys); True when it was not there (the caller counts it in ``n``)."""
    h = _slot(x, shift)
    while True:
        j = tab[h]
        if j < 0:
            tab[h] = np.int32(n)
            keys[n] = x
            return True
        if keys[j] == x:
            return False
        h = (h + np.uint64(1)) & mask


@nb.njit(cache=True, nogil=True)
def count_batch(rows, rkey, kind, src, dst, answers, closed, est, ts, dport, sport, proto, l4_ok, flags, status,
                ipv, ip_len, ip_hdr_len, l4_hdr_len, window_s, rates, span, T, is_http):
    """The candidate (key, bucket)s of ``rows`` (their frames' keys ``rkey``), in no order: kb,
    key, frames, first frame (index into ``rows``), bucket, kind, answered, completed, closed,
    distinct ports, distinct (source port, port) and payload bytes (UDP: IP length less both
    headers, at least 0) in this batch.
    A (key, bucket) is a candidate with max(2, rate of its kind * span / 4) frames or more, or
    when its key is in the counting table ``T`` (being counted already: `update`).

    A batch has a few hundred candidates among hundreds of thousands of frames (a flood's spoofed
    sources send a frame or a few per key), and grouping every frame by (key, bucket) was this
    detector's largest cost. So the frames are first counted per key in a direct-mapped sketch
    (one increment each, no key compared): a slot's count is at least its keys' frames in the
    batch, so a frame whose slot counts fewer than its kind needs, and holds no known key,
    belongs to no candidate. Only the rest are grouped (`_candidates`): the same candidates,
    from a fraction of the frames."""
    n = rows.size
    needs = np.empty(rates.size, np.float64)
    for k in range(rates.size):
        needs[k] = max(rates[k] * span / 4, 2.0)
    m, bits = _bits(n)
    shift = np.uint64(64 - bits)
    sketch = np.zeros(m, np.int64)
    for r in range(n):
        sketch[_slot(rkey[r], shift)] += 1
    # the keys being counted: their slots marked when there are fewer of them than frames, else each
    # frame that fails the count looked up (a batch's cost stays in proportion to the batch: live
    # batches are short, and the table holds up to max_keys keys)
    meta, idx, N = T[0], T[1], T[2]
    nknown = meta[M_SIZE]
    walk = nknown <= n
    if nknown > 0 and walk:
        nd = meta[M_HEAD]
        while nd >= 0:
            sketch[_slot(np.uint64(N[nd, C_K1]), shift)] = n + 1
            nd = N[nd, C_NXT]
    keep = np.empty(n + 1, np.int64)
    nk = 0
    if nknown > 0 and not walk:
        for r in range(n):
            keep[nk] = r
            nk += (sketch[_slot(rkey[r], shift)] >= needs[kind[rows[r]]]
                   or t_find(meta, idx, N, rkey[r], _U0, _U0) >= 0)
    else:
        for r in range(n):
            keep[nk] = r
            nk += sketch[_slot(rkey[r], shift)] >= needs[kind[rows[r]]]
    keep = keep[:nk]
    out = _candidates(rows[keep], rkey[keep], kind, src, dst, answers, closed, est, ts, dport, sport, proto, l4_ok,
                      flags, status, ipv, ip_len, ip_hdr_len, l4_hdr_len, window_s, needs, T, is_http)
    c_head = out[3]
    for c in range(c_head.size):
        c_head[c] = keep[c_head[c]]
    return out


@nb.njit(cache=True, nogil=True)
def _candidates(rows, rkey, kind, src, dst, answers, closed, est, ts, dport, sport, proto, l4_ok, flags, status,
                ipv, ip_len, ip_hdr_len, l4_hdr_len, window_s, needs, T, is_http):
    """`count_batch` over the frames its sketch kept (``needs``: the frames a (key, bucket) of
    each kind needs); first frames index ``rows``."""
    n = rows.size
    m, bits = _bits(n)
    shift, mask = np.uint64(64 - bits), np.uint64(m - 1)
    tab = np.full(m, -1, np.int32)
    gkb = np.empty(n, np.uint64)
    gcnt = np.zeros(n, np.int64)
    ghead = np.empty(n, np.int64)
    gbucket = np.empty(n, np.int64)
    rgroup = np.empty(n, np.int64)
    ckb = np.empty(CHUNK, np.uint64)  # a chunk's (key, bucket)s and buckets, their slots prefetched
    cbk = np.empty(CHUNK, np.int64)
    ng = 0
    for c0 in range(0, n, CHUNK):
        c1 = min(n, c0 + CHUNK)
        for r in range(c0, c1):
            bk = np.int64(np.floor(ts[rows[r]] / window_s))
            kb = rkey[r] * _M + np.uint64(bk)
            ckb[r - c0] = kb
            cbk[r - c0] = bk
            prefetch(tab, _slot(kb, shift))
        for r in range(c0, c1):
            kb = ckb[r - c0]
            h = _slot(kb, shift)
            while True:
                j = tab[h]
                if j < 0:
                    j = ng
                    tab[h] = np.int32(j)
                    gkb[j] = kb
                    ghead[j] = r
                    gbucket[j] = cbk[r - c0]
                    ng += 1
                    break
                if gkb[j] == kb:
                    break
                h = (h + np.uint64(1)) & mask
            rgroup[r] = j
    for r in range(n):  # (in a pass of its own: in the hashing loop a busy group's count costs it dearly)
        gcnt[rgroup[r]] += 1
    # which (key, bucket)s are candidates
    meta, idx, N = T[0], T[1], T[2]
    known = meta[M_SIZE] > 0
    gslot = np.full(ng, -1, np.int64)
    nc = 0
    for j in range(ng):
        r = ghead[j]
        if gcnt[j] >= needs[kind[rows[r]]] or (known and t_find(meta, idx, N, rkey[r], _U0, _U0) >= 0):
            gslot[j] = nc
            nc += 1
    c_kb = np.empty(nc, np.uint64)
    c_key = np.empty(nc, np.uint64)
    c_n = np.empty(nc, np.int64)
    c_head = np.empty(nc, np.int64)
    c_bucket = np.empty(nc, np.int64)
    c_kind = np.empty(nc, np.int64)
    c_ans = np.zeros(nc, np.int64)
    c_tcp = np.zeros(nc, np.int64)
    c_est = np.zeros(nc, np.int64)
    c_closed = np.zeros(nc, np.int64)
    c_ports = np.zeros(nc, np.int64)
    c_conns = np.zeros(nc, np.int64)
    c_pay = np.zeros(nc, np.int64)
    c_alt = np.full(nc, -1, np.int64)
    for j in range(ng):
        c = gslot[j]
        if c < 0:
            continue
        r = ghead[j]
        c_kb[c] = gkb[j]
        c_key[c] = rkey[r]
        c_n[c] = gcnt[j]
        c_head[c] = r
        c_bucket[c] = gbucket[j]
        c_kind[c] = kind[rows[r]]
    if nc == 0 or is_http:
        return c_kb, c_key, c_n, c_head, c_bucket, c_kind, c_ans, c_tcp, c_est, c_closed, c_ports, c_conns, c_pay
    # distinct ports and (source port, port) of each candidate, and the UDP payload
    nf = 0
    for c in range(nc):
        nf += c_n[c]
    pm, pbits = _bits(nf)
    pshift, pmask = np.uint64(64 - pbits), np.uint64(pm - 1)
    ptab = np.full(pm, -1, np.int32)
    pkeys = np.empty(nf, np.uint64)
    ctab = np.full(pm, -1, np.int32)
    ckeys = np.empty(nf, np.uint64)
    npk = 0
    nck = 0
    # (the candidates' rows listed without a branch, and the payload summed in a pass of its own:
    # candidates' rows interleave at random, and a busy candidate's sum costs the hashing loop dearly)
    crow = np.empty(n + 1, np.int64)
    ncr = 0
    for r in range(n):
        crow[ncr] = r
        ncr += gslot[rgroup[r]] >= 0
    for q in range(ncr):
        r = crow[q]
        c = gslot[rgroup[r]]
        i = rows[r]
        kp = c_kb[c] ^ ((np.uint64(dport[i]) + np.uint64(1)) * _M2)
        if _set_insert(ptab, pkeys, npk, kp, pshift, pmask):
            npk += 1
            c_ports[c] += 1
        kc = kp ^ ((np.uint64(sport[i]) + np.uint64(1)) * _M)
        if _set_insert(ctab, ckeys, nck, kc, pshift, pmask):
            nck += 1
            c_conns[c] += 1
    for q in range(ncr):
        r = crow[q]
        c = gslot[rgroup[r]]
        k = c_kind[c]
        if k == K_UDP:
            i = rows[r]
            c_pay[c] += max(np.int64(ip_len[i]) - np.int64(ip_hdr_len[i]) - np.int64(l4_hdr_len[i]), 0)
        elif k == K_FRAG:
            c_pay[c] += answers[rows[r]] >= 0  # (fragments: their datagrams, the first fragments that answer)
    # one TCP tally serves the three TCP kinds, under K_ACK's key of the candidate's pair
    am, abits = _bits(nc)
    ashift, amask = np.uint64(64 - abits), np.uint64(am - 1)
    atab = np.full(am, -1, np.int64)
    akeys = np.empty(nc, np.uint64)
    acnt = np.zeros(nc, np.int64)
    na = 0
    for c in range(nc):
        k = c_kind[c]
        if k != K_ACK and k != K_PSHACK and k != K_RSTFIN:
            continue
        i = rows[c_head[c]]
        alt = _pair_key(src[i], dst[i], np.uint64(K_ACK)) * _M + np.uint64(c_bucket[c])
        h = _slot(alt, ashift)
        while True:
            j = atab[h]
            if j < 0:
                atab[h] = na
                akeys[na] = alt
                na += 1
                j = na - 1
                break
            if akeys[j] == alt:
                break
            h = (h + np.uint64(1)) & amask
        c_alt[c] = j
    # the answers of this batch, per (key, bucket) of the flood they would answer: looked up
    # among the candidates only (a small table)
    qm, qbits = _bits(nc)
    qshift, qmask = np.uint64(64 - qbits), np.uint64(qm - 1)
    qtab = np.full(qm, -1, np.int64)
    for c in range(nc):
        h = _slot(c_kb[c], qshift)
        while qtab[h] >= 0:
            h = (h + np.uint64(1)) & qmask
        qtab[h] = c
    # a frame can answer a candidate only when it goes from the candidate's host to its source
    # (and can complete one's connection only when it goes the other way): a 4096-bit filter of
    # the candidates' (source, host) skips most frames before any key is formed (a false
    # positive is looked up, and misses)
    pairs = np.zeros(4096, np.bool_)
    for c in range(nc):
        i = rows[c_head[c]]
        pairs[_pair_bit(src[i], dst[i])] = True
    # (the frames that pass the filter listed first, without branches: on a flood most fail it, on
    # a busy link they interleave with the others at random, and the branches on what a frame is
    # mispredict on a mix of kinds)
    pas = np.empty(ts.size + 1, np.int64)
    npas = 0
    for i in range(ts.size):
        pas[npas] = i
        npas += pairs[_pair_bit(dst[i], src[i])] | (est[i] & pairs[_pair_bit(src[i], dst[i])])
    for q in range(npas):
        i = pas[q]
        back = pairs[_pair_bit(dst[i], src[i])]
        a = answers[i]
        e = est[i]
        cl = closed[i]
        if a >= 0 or cl or (na > 0 and proto[i] == 6):
            if not back:
                a, cl = -1, False
                tc = False
            else:
                tc = (na > 0 and proto[i] == 6 and l4_ok[i] and (flags[i] & _TH_RST) == 0 and status[i] == 0
                      and ipv[i] > 0)
        else:
            tc = False
        if e and not pairs[_pair_bit(src[i], dst[i])]:
            e = False
        if a < 0 and not e and not cl and not tc:
            continue
        bk = np.uint64(np.int64(np.floor(ts[i] / window_s)))
        if a >= 0 or cl or tc:
            rev = _pair_base(dst[i], src[i])  # keyed as the flood it answers: source and host swapped
            if a >= 0 and not cl:
                c = _find(qtab, c_kb, _with_kind(rev, a) * _M + bk, qshift, qmask)
                if c >= 0:
                    c_ans[c] += 1
                if a == K_UDP:  # a UDP datagram back answers the other way's fragments too
                    c = _find(qtab, c_kb, _with_kind(rev, K_FRAG) * _M + bk, qshift, qmask)
                    if c >= 0:
                        c_ans[c] += 1
            if cl:
                c = _find(qtab, c_kb, _with_kind(rev, K_UDP) * _M + bk, qshift, qmask)
                if c >= 0:
                    c_closed[c] += 1
            # a TCP flood's answer is any segment back that is not a reset
            if tc:
                j = _find(atab, akeys, _with_kind(rev, K_ACK) * _M + bk, ashift, amask)
                if j >= 0:
                    acnt[j] += 1
        if e:
            c = _find(qtab, c_kb, _with_kind(_pair_base(src[i], dst[i]), K_SYN) * _M + bk, qshift, qmask)
            if c >= 0:
                c_est[c] += 1
    for c in range(nc):
        if c_alt[c] >= 0:
            c_tcp[c] = acnt[c_alt[c]]
    return c_kb, c_key, c_n, c_head, c_bucket, c_kind, c_ans, c_tcp, c_est, c_closed, c_ports, c_conns, c_pay


# the counting table's values per (source, host, kind) key: the bucket being counted, its first
# frame's time (a float), and what `count_batch` tallies for it, summed over the bucket's batches
V_BUCKET, V_FIRST, V_N, V_ANS, V_DONE, V_CLOSED, V_PORTS, V_CONNS, V_PAY, V_DGRAMS = range(5, 15)
COUNT_VALUES = 10
# why a bucket is a flood (`update`; worded in volume.py)
(R_NONE, R_SYN, R_TCP, R_UDP_ANY, R_UDP_CLOSED, R_UDP_PORTS, R_UDP_SMALL, R_ICMP, R_FRAG, R_FRAG_DGRAM,
 R_HTTP) = range(11)
# `update`'s thresholds, in this order
P_SYN, P_TCP, P_UDP, P_UDP_ANY, P_ICMP, P_FRAG, P_HTTP, P_UNANSWERED, P_UDP_PAYLOAD, P_PORTS = range(10)


@nb.njit(cache=True, nogil=True, inline="always")
def _reason(kd, n, ans, done, closed, ports, conns, pay, dgrams, proto, window_s, prm):
    """Why a bucket with these counts is a flood of kind ``kd`` (R_NONE: it is not), as the
    table in volume.py states the rules."""
    # a TCP flood hammers a service (a port or a few); probes spread over more ports are a scan's,
    # retransmissions included (nmap retries unanswered ports)
    scan_like = ports > prm[P_PORTS]
    if kd == K_SYN:
        if n >= prm[P_SYN] * window_s and done * 2 < n and not scan_like:
            return R_SYN
    elif kd == K_ACK or kd == K_PSHACK or kd == K_RSTFIN:
        # segments of no connection: a new (source port, destination port) for most of them (a
        # transfer, however thinly acknowledged, keeps to its few connections)
        if n >= prm[P_TCP] * window_s and ans * prm[P_UNANSWERED] < n and not scan_like and conns * 4 >= n:
            return R_TCP
    elif kd == K_UDP:
        if n >= prm[P_UDP] * window_s and ans * prm[P_UNANSWERED] < n:
            if n >= prm[P_UDP_ANY] * window_s:
                return R_UDP_ANY
            if closed:
                return R_UDP_CLOSED
            if ports >= prm[P_PORTS]:
                return R_UDP_PORTS
            if pay < prm[P_UDP_PAYLOAD] * n:
                return R_UDP_SMALL
    elif kd == K_ICMP:
        if n >= prm[P_ICMP] * window_s:
            return R_ICMP
    elif kd == K_FRAG:
        # fragmented UDP or tunnel datagrams that the host answers (NFS reads over UDP, a VPN whose
        # outer packets exceed the path's MTU) are an exchange, not a flood; fragmented pings and TCP
        # segments (which a benign sender avoids) and fragments whose first fragment never comes are
        # counted by rate alone
        if n >= prm[P_FRAG] * window_s:
            if proto == 1 or proto == 6 or proto == 58:
                return R_FRAG
            if dgrams and ans * prm[P_UNANSWERED] >= dgrams:
                return R_NONE
            return R_FRAG_DGRAM
    elif kd == K_HTTP:
        if n >= prm[P_HTTP]:
            return R_HTTP
    return R_NONE


@nb.njit(cache=True, nogil=True)
def update(T, c_kb, c_key, c_n, c_bucket, c_kind, c_ans, c_tcp, c_est, c_closed, c_ports, c_conns, c_pay,
           head_ts, head_proto, window_s, prm):
    """`count_batch`'s candidates, in (key, bucket) order, added to their keys' counts in ``T`` (a
    key whose bucket changed starts over, from the candidate's first frame, ``head_ts``), each
    tested against the rules (`_reason`). Returns the candidates that are a flood, in that order,
    their reasons, and their counts as they stood then (rows of: bucket, n, answered, completed,
    closed, ports, payload, datagrams; and the bucket's first time): a later candidate of the
    same key in a new bucket starts it over."""
    meta, idx, N, NF = T[0], T[1], T[2], T[3]
    nc = c_kb.size
    order = np.argsort(c_kb)
    hit = np.empty(nc, np.int64)
    why = np.empty(nc, np.int64)
    snap = np.empty((nc, 8), np.int64)
    first = np.empty(nc, np.float64)
    nh = 0
    for q in range(nc):
        c = order[q]
        kd = c_kind[c]
        bk = c_bucket[c]
        nd, new, _ev = t_touch(meta, idx, N, c_key[c], _U0, _U0)
        if new or N[nd, V_BUCKET] != bk:
            N[nd, V_BUCKET] = bk
            NF[nd, V_FIRST] = head_ts[c]
            for v in range(V_N, V_DGRAMS + 1):
                N[nd, v] = 0
        tcp = kd == K_ACK or kd == K_PSHACK or kd == K_RSTFIN
        N[nd, V_N] += c_n[c]
        N[nd, V_ANS] += c_tcp[c] if tcp else c_ans[c]
        N[nd, V_DONE] += c_est[c]
        N[nd, V_CLOSED] += c_closed[c]
        N[nd, V_PORTS] += c_ports[c]
        N[nd, V_CONNS] += c_conns[c]
        if kd == K_UDP:
            N[nd, V_PAY] += c_pay[c]
        elif kd == K_FRAG:
            N[nd, V_DGRAMS] += c_pay[c]  # (`count_batch` gives fragments' datagrams in that column)
        r = _reason(kd, N[nd, V_N], N[nd, V_ANS], N[nd, V_DONE], N[nd, V_CLOSED], N[nd, V_PORTS],
                    N[nd, V_CONNS], N[nd, V_PAY], N[nd, V_DGRAMS], head_proto[c], window_s, prm)
        if r != R_NONE:
            hit[nh] = c
            why[nh] = r
            snap[nh, 0] = bk
            snap[nh, 1] = N[nd, V_N]
            snap[nh, 2] = N[nd, V_ANS]
            snap[nh, 3] = N[nd, V_DONE]
            snap[nh, 4] = N[nd, V_CLOSED]
            snap[nh, 5] = N[nd, V_PORTS]
            snap[nh, 6] = N[nd, V_PAY]
            snap[nh, 7] = N[nd, V_DGRAMS]
            first[nh] = NF[nd, V_FIRST]
            nh += 1
    return hit[:nh], why[:nh], snap[:nh], first[:nh]


_TH_FIN, _TH_SYN, _TH_PSH, _TH_ACK = 0x01, 0x02, 0x08, 0x10


@nb.njit(cache=True, nogil=True)
def classify(status, ipv, proto, l4_ok, frag_offset, frag_mf, flags, icmp_type, src, dst):
    """Per frame (`VolumeDetector._classify`): the kind it counts as (-1 none), the kind it
    answers (keyed reversed), whether it says "port closed", whether it completes a connection,
    and its counting key (`_keys(src, dst, max(kind, 0), 0)`)."""
    n = status.size
    kind = np.full(n, -1, np.int8)
    answers = np.full(n, -1, np.int8)
    closed = np.zeros(n, np.bool_)
    est = np.zeros(n, np.bool_)
    key = np.empty(n, np.uint64)
    aerr = np.empty(n, np.int64)  # ICMP errors and echo replies: answers to the receiver's own traffic?
    unr = np.zeros(n, np.bool_)
    ne = 0
    for i in range(n):
        if status[i] != 0 or ipv[i] == 0:
            continue
        v6 = ipv[i] == 6
        p = proto[i]
        f = flags[i]
        if frag_offset[i] > 0 or frag_mf[i]:
            kind[i] = K_FRAG
            if frag_offset[i] == 0 and p != 6 and p != 1 and p != 58:
                # a first fragment is a datagram: back to a host, it answers what that host sent
                # (a UDP one also its UDP: an NFS read's reply, a tunnel's fragmented packets)
                answers[i] = K_UDP if p == 17 else K_FRAG
            continue
        if p != 6 and p != 17 and p != 1 and p != 58:
            answers[i] = K_FRAG  # a tunnel's datagram (ESP, GRE, ...) answers the other way's fragments
            continue
        if not l4_ok[i]:
            continue
        if p == 6:
            if (f & _TH_SYN) == 0 and (f & (_TH_RST | _TH_FIN)) != 0:
                kind[i] = K_RSTFIN
            elif (f & (_TH_SYN | _TH_RST | _TH_FIN | _TH_PSH | _TH_ACK)) == _TH_PSH | _TH_ACK:
                kind[i] = K_PSHACK
            elif (f & (_TH_SYN | _TH_RST | _TH_FIN | _TH_PSH)) == 0:
                kind[i] = K_ACK
            elif (f & (_TH_SYN | _TH_ACK)) == _TH_SYN:
                kind[i] = K_SYN
            if (f & (_TH_SYN | _TH_ACK)) == _TH_SYN | _TH_ACK:
                answers[i] = K_SYN
            est[i] = (f & _TH_ACK) != 0 and (f & (_TH_SYN | _TH_RST)) == 0
        elif p == 17:
            kind[i] = K_UDP
            answers[i] = K_UDP
        if (p == 58) if v6 else (p == 1):
            t = icmp_type[i]
            if v6:
                echo_rep, err, unreach = t == 129, t < 5, t == 1
            else:
                echo_rep, err, unreach = t == 0, t == 3 or t == 4 or t == 5 or t == 11 or t == 12, t == 3
            if echo_rep:
                answers[i] = K_ICMP
            if err or echo_rep:
                aerr[ne] = i
                ne += 1
                unr[i] = unreach
            else:
                kind[i] = K_ICMP
    if ne:
        # an ICMP error or echo reply answers the receiver's own traffic when the receiver sent
        # the sender something in this batch; sent unprompted it is the flood itself
        m, bits = _bits(n)
        shift, mask = np.uint64(64 - bits), np.uint64(m - 1)
        tab = np.full(m, -1, np.int64)
        keys = np.empty(n, np.uint64)
        nk = 0
        e = 0
        for i in range(n):
            if e < ne and aerr[e] == i:
                e += 1
                continue
            if status[i] != 0 or ipv[i] == 0:
                continue
            if _set_insert(tab, keys, nk, _pair_key(src[i], dst[i], 0), shift, mask):
                nk += 1
        for e in range(ne):
            i = aerr[e]
            if nk > 0 and _find(tab, keys, _pair_key(dst[i], src[i], 0), shift, mask) >= 0:
                if unr[i]:
                    closed[i] = True
                    answers[i] = K_UDP
            else:
                kind[i] = K_ICMP
    for i in range(n):
        k = kind[i]
        key[i] = _pair_key(src[i], dst[i], np.uint64(k if k > 0 else 0))
    return kind, answers, closed, est, key
