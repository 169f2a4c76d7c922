"""Compiled per-batch pass of the ARP detector: which frames are ARP claims, and per MAC that
sources IPv4 packets, what the batch shows of it (first and last time, lowest and highest
source address), in one pass over the batch instead of a sort of its IPv4 frames.

A MAC sources more than one IP in the batch exactly when its lowest and highest source
addresses differ, so the (MAC, IP) pairs never need to be formed: a per-batch
open-addressing hash table of the MACs seen (linear probing) is all the state.

`claims` then runs the detector's per-frame rules over the batch's ARP frames in order, its
state in bounded LRU tables of `_scan_kernel` and per-node lists in pools beside them (the Python
loop it replaced, with dicts in `base.LRU`s, cost ~3 µs per ARP frame); the evidence of each new
spoofer comes back as a record that arp.py words.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._keys_kernel import NO_REFCOUNT
from ._scan_kernel import C_K1, C_K2, C_NXT, C_VAL, M_EVICT, M_HEAD, M_SIZE, t_find, t_insert, t_move_end

_ETH_P_ARP = 0x0806
_STATUS_OK = 0
_GROUP_BIT = np.uint64(1 << 40)  # I/G bit of the first octet: multicast/broadcast MACs
_MIX = np.uint64(0x9E3779B97F4A7C15)
_ICMP, _REDIRECT = 1, 5


@nb.njit(cache=True, nogil=True)
def scan_batch(status, ip_version, ethertype, eth_src, src4, ts, proto, icmp_type, learn):
    """(ARP frame indices (decoded, sender IP set), the IPv4 ICMP redirects' indices, and for the
    IPv4 frames a MAC can be learnt from (unicast Ethernet source, host source address): per
    distinct MAC its address, first and last time, lowest and highest source IP, in order of
    first appearance)."""
    n = status.size
    arp = np.empty(n, np.int64)
    na = 0
    redirects = np.empty(n, np.int64)
    nr = 0
    m, bits = 16, 4
    if learn:
        while m < 2 * n:
            m <<= 1
            bits += 1
    shift = np.uint64(64 - bits)
    slot = np.full(m, -1, np.int32)
    mask = np.uint64(m - 1)
    bm = np.empty(n if learn else 0, np.uint64)
    bfirst = np.empty(n if learn else 0, np.float64)
    blast = np.empty(n if learn else 0, np.float64)
    blo = np.empty(n if learn else 0, np.uint32)
    bhi = np.empty(n if learn else 0, np.uint32)
    nu = 0
    for i in range(n):
        if status[i] != _STATUS_OK:
            continue
        if ethertype[i] == _ETH_P_ARP:
            if src4[i] != 0:
                arp[na] = i
                na += 1
            continue
        if ip_version[i] != 4:
            continue
        if proto[i] == _ICMP and icmp_type[i] == _REDIRECT:
            redirects[nr] = i
            nr += 1
        if not learn:
            continue
        mac = eth_src[i]
        if mac == 0 or (mac & _GROUP_BIT) != 0:
            continue
        ip = src4[i]
        first = ip >> np.uint32(24)
        if first == 0 or first == 127 or first >= 224:
            continue
        t = ts[i]
        h = (mac * _MIX) >> shift
        while True:
            j = slot[h]
            if j < 0:
                slot[h] = nu
                bm[nu] = mac
                bfirst[nu] = t
                blast[nu] = t
                blo[nu] = ip
                bhi[nu] = ip
                nu += 1
                break
            if bm[j] == mac:
                if t < bfirst[j]:
                    bfirst[j] = t
                if t > blast[j]:
                    blast[j] = t
                if ip < blo[j]:
                    blo[j] = ip
                if ip > bhi[j]:
                    bhi[j] = ip
                break
            h = (h + np.uint64(1)) & mask
    return arp[:na], redirects[:nr], bm[:nu], bfirst[:nu], blast[:nu], blo[:nu], bhi[:nu]


# ---- the per-frame rules (arp.py's former Python loop), state in arrays ----------------------------
# Four LRU tables of `_scan_kernel` (bounded, evictions counted as `base.LRU` counts them):
#   bindings  (ip)             -> the MACs that hold it, a list of at most 8 in insertion order
#                                 (row `node` of the held pool: mac, first, last, unsolicited claims, how)
#   requests  (requester, asked) -> time of the last request
#   claimants (mac)            -> the IPs it claimed in unsolicited replies, at most 64 (+1 before the
#                                 oldest is dropped) in insertion order (row `node` of the claim pool)
#   spoofers  (mac, ip)        -> since, last, evidence id
# A pool row belongs to the table node of the same index; the pools grow with the tables' nodes.

HELD_MAX = 8
CLAIMS_MAX = 64
R_VAL = C_VAL  # a request's time (float)
S_SINCE, S_LAST, S_WHY = C_VAL, C_VAL + 1, C_VAL + 2  # a spoofer's values (since, last: floats)
HOW_TARGET, HOW_SENDER, HOW_SOURCE = 0, 1, 2
WHY_MANY, WHY_HELD = 0, 1  # a spoof record's wording: "claims N IPs in unsolicited replies" / "claims IP held by ..."
_BCAST = np.uint64(0xFFFFFFFFFFFF)
_U0 = np.uint64(0)


@nb.njit(cache=True, nogil=True)
def _grow_rows(a, need):
    if need <= a.shape[0]:
        return a
    m = max(a.shape[0], 16)
    while m < need:
        m *= 2
    out = np.zeros((m,) + a.shape[1:], a.dtype)
    out[:a.shape[0]] = a
    return out


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _held_touch(Bm, Bi, BN, ip):
    """The bindings node of ``ip``, touched or inserted (the caller then drops its stale claims:
    `_purge`). Returns (node, whether it is new: its held list must be emptied)."""
    n = t_find(Bm, Bi, BN, np.uint64(ip), _U0, np.int64(0))
    if n >= 0:
        t_move_end(Bm, BN, n)
        return n, False
    n, _ev = t_insert(Bm, Bi, BN, np.uint64(ip), _U0, np.int64(0))
    return n, True


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _purge(hn, HM, HF, HL, HU, HH, n, now, hold_s):
    """Drop the claims of held list ``n`` older than ``hold_s`` (the others keep their order)."""
    k = 0
    for q in range(hn[n]):
        if now - HL[n, q] > hold_s:
            continue
        if k != q:
            HM[n, k] = HM[n, q]
            HF[n, k] = HF[n, q]
            HL[n, k] = HL[n, q]
            HU[n, k] = HU[n, q]
            HH[n, k] = HH[n, q]
        k += 1
    hn[n] = k


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _drop_at(hn, HM, HF, HL, HU, HH, n, q):
    for z in range(q + 1, hn[n]):
        HM[n, z - 1] = HM[n, z]
        HF[n, z - 1] = HF[n, z]
        HL[n, z - 1] = HL[n, z]
        HU[n, z - 1] = HU[n, z]
        HH[n, z - 1] = HH[n, z]
    hn[n] -= 1


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _find_mac(hn, HM, n, mac):
    for q in range(hn[n]):
        if HM[n, q] == mac:
            return q
    return -1


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _make_room(hn, HM, HF, HL, HU, HH, n):
    """A full held list loses its least recently claimed MAC (the first of the oldest)."""
    if hn[n] >= HELD_MAX:
        best = 0
        for q in range(1, hn[n]):
            if HL[n, q] < HL[n, best]:
                best = q
        _drop_at(hn, HM, HF, HL, HU, HH, n, best)


@nb.njit(cache=True, nogil=True)
def _held_claim(Bm, Bi, BN, hn, HM, HF, HL, HU, HH, ip, mac, now, hold_s, how):
    """``mac`` claims ``ip`` now: the IP's held list (rows grown when the IP is new beyond
    them; lapsed claims purged), the MAC found or added (``how`` it was learnt; a full list
    makes room), its last claim set to now. Returns the IP's row, the MAC's slot and the
    arrays (grown ones are new arrays)."""
    n, new = _held_touch(Bm, Bi, BN, ip)
    if n >= hn.size:
        need = n + 1
        hn = _grow_rows(hn, need)
        HM = _grow_rows(HM, need)
        HF = _grow_rows(HF, need)
        HL = _grow_rows(HL, need)
        HU = _grow_rows(HU, need)
        HH = _grow_rows(HH, need)
    if new:
        hn[n] = 0
    else:
        _purge(hn, HM, HF, HL, HU, HH, n, now, hold_s)
    q = _find_mac(hn, HM, n, mac)
    if q < 0:
        _make_room(hn, HM, HF, HL, HU, HH, n)
        q = hn[n]
        HM[n, q] = mac
        HF[n, q] = now
        HL[n, q] = now
        HU[n, q] = 0
        HH[n, q] = how
        hn[n] = q + 1
    HL[n, q] = now
    return n, q, hn, HM, HF, HL, HU, HH


@nb.njit(cache=True, nogil=True)
def _new_spoofer(Sm, Si, SN, SF, mac, ip, now, why_base, rec_mac, rec_ip, rec_kind, rec_arg, nrec, kind, arg):
    """``mac`` becomes a spoofer of ``ip`` now, for the reason recorded at ``nrec`` (``kind``,
    ``arg``: the Python side words the finding from it); returns the next record's index."""
    sn, _ev = t_insert(Sm, Si, SN, mac, np.uint64(ip), np.int64(0))
    SF[sn, S_SINCE] = now
    SF[sn, S_LAST] = now
    SN[sn, S_WHY] = why_base + nrec
    rec_mac[nrec] = mac
    rec_ip[nrec] = ip
    rec_kind[nrec] = kind
    rec_arg[nrec] = arg
    return nrec + 1


@nb.njit(cache=True, nogil=True)
def _holder(ips, macs, last, multi, ip, now, hold_s):
    """`_SourceTable.holder` over its columns ordered by IP (stably): the one MAC, or -1."""
    lo = np.searchsorted(ips, np.uint32(ip), "left")
    hi = np.searchsorted(ips, np.uint32(ip), "right")
    found = -1
    for c in range(lo, hi):
        if now - last[c] <= hold_s and now - multi[c] > hold_s:
            if found >= 0:
                return -1
            found = c
    return found


@nb.njit(cache=True, nogil=True)
def claims(op, spa, tpa, sha, tha, ts, relayed, B, R, C, S, hn, HM, HF, HL, HU, HH, cn, CI, CT,
           src_ip, src_mac, src_last, src_multi, hold_s, solicit_s, max_ips, why_base):
    """The ARP frames of a batch, in order, through `ArpDetector`'s rules (see arp.py). Returns (the
    pools, grown if the tables handed out new nodes; conflicts; the spoof records: per new spoofer
    (mac, ip, wording, IPs claimed or offset into the holder lists), and the holder lists (mac, how)
    of the "held by" wordings, offsets closed by a last entry)."""
    Bm, Bi, BN = B[0], B[1], B[2]
    Rm, Ri, RN, RF = R[0], R[1], R[2], R[3]
    Cm, Ci, CN = C[0], C[1], C[2]
    Sm, Si, SN, SF = S[0], S[1], S[2], S[3]
    nf = op.size
    rec_mac = np.empty(nf * 2 + 8, np.uint64)
    rec_ip = np.empty(nf * 2 + 8, np.int64)
    rec_kind = np.empty(nf * 2 + 8, np.int64)
    rec_arg = np.empty(nf * 2 + 8, np.int64)
    nrec = 0
    hl_mac = np.empty(16, np.uint64)
    hl_how = np.empty(16, np.int64)
    nhl = 0
    conflicts = 0
    hmac = np.empty(HELD_MAX + 2, np.uint64)
    hhow = np.empty(HELD_MAX + 2, np.int64)
    claimants = np.empty(HELD_MAX + 2, np.int64)  # positions in the held list
    culprits = np.empty(HELD_MAX + 2, np.uint64)
    # per claimant node, when all its claimed IPs were held spoofers after its last pass (this batch):
    # the spoofer evictions then + 1 (0: not known); as long as none has been evicted since, only the
    # IP it claims now can be new (the pass over 64 IPs is most of an unsolicited reply's work)
    cov = np.zeros(cn.size, np.int64)
    for f in range(nf):
        o = op[f]
        s = np.int64(spa[f])
        t = np.int64(tpa[f])
        m = sha[f]
        th = tha[f]
        now = ts[f]
        if o == 1:
            rn = t_find(Rm, Ri, RN, np.uint64(s), np.uint64(t), np.int64(0))
            if rn >= 0:
                t_move_end(Rm, RN, rn)
            else:
                rn, _ev = t_insert(Rm, Ri, RN, np.uint64(s), np.uint64(t), np.int64(0))
            RF[rn, R_VAL] = now
        elif o != 2:
            continue
        if nrec + 2 * CLAIMS_MAX + HELD_MAX + 4 > rec_mac.size:
            g = 2 * rec_mac.size + 2 * CLAIMS_MAX + HELD_MAX + 4
            rec_mac = _grow_rows(rec_mac, g)
            rec_ip = _grow_rows(rec_ip, g)
            rec_kind = _grow_rows(rec_kind, g)
            rec_arg = _grow_rows(rec_arg, g)
        gratuitous = s == t
        if (o == 2 and not gratuitous and t != 0 and th != 0 and th != _BCAST and th != m
                and (th >> np.uint64(40)) & np.uint64(1) == 0):
            n, q, hn, HM, HF, HL, HU, HH = _held_claim(Bm, Bi, BN, hn, HM, HF, HL, HU, HH, t, th, now, hold_s,
                                                       HOW_TARGET)
        rq = t_find(Rm, Ri, RN, np.uint64(t), np.uint64(s), np.int64(0))
        unsol = not relayed[f] and (gratuitous or (o == 2 and (rq < 0 or now - RF[rq, R_VAL] > solicit_s)))
        n, r, hn, HM, HF, HL, HU, HH = _held_claim(Bm, Bi, BN, hn, HM, HF, HL, HU, HH, s, m, now, hold_s, HOW_SENDER)
        HH[n, r] = HOW_SENDER
        if unsol:
            HU[n, r] += 1
        if unsol and o == 2 and not gratuitous:  # an answer nobody asked for, about another's address
            c = t_find(Cm, Ci, CN, m, _U0, np.int64(0))
            if c >= 0:
                t_move_end(Cm, CN, c)
            else:
                c, _ev = t_insert(Cm, Ci, CN, m, _U0, np.int64(0))
                if c >= cn.size:
                    cn = _grow_rows(cn, c + 1)
                    CI = _grow_rows(CI, c + 1)
                    CT = _grow_rows(CT, c + 1)
                cn[c] = 0
                if c >= cov.size:
                    cov = _grow_rows(cov, cn.size)
                cov[c] = 0
            k = cn[c]
            q = -1
            for z in range(k):
                if CI[c, z] == s:
                    q = z
                    break
            if q >= 0:
                CT[c, q] = now
            else:
                CI[c, k] = s
                CT[c, k] = now
                k += 1
            oldest = CT[c, 0]
            for z in range(1, k):
                if CT[c, z] < oldest:
                    oldest = CT[c, z]
            if now - oldest > hold_s:
                w = 0
                for z in range(k):
                    if now - CT[c, z] > hold_s:
                        continue
                    CI[c, w] = CI[c, z]
                    CT[c, w] = CT[c, z]
                    w += 1
                k = w
            if k > CLAIMS_MAX:
                for z in range(1, k):
                    CI[c, z - 1] = CI[c, z]
                    CT[c, z - 1] = CT[c, z]
                k -= 1
            cn[c] = k
            was_covered = cov[c] == Sm[M_EVICT] + 1
            cov[c] = 0
            if k >= max_ips:
                evictions = Sm[M_EVICT]
                for z in range(k):
                    ip = CI[c, z]
                    if was_covered and ip != s:
                        continue
                    if t_find(Sm, Si, SN, m, np.uint64(ip), np.int64(0)) < 0:
                        nrec = _new_spoofer(Sm, Si, SN, SF, m, ip, now, why_base, rec_mac, rec_ip, rec_kind,
                                            rec_arg, nrec, WHY_MANY, k)
                if Sm[M_EVICT] == evictions:
                    cov[c] = evictions + 1
        nh = 0
        ncl = 0
        if hn[n] > 1:
            for q in range(hn[n]):
                if HM[n, q] == m:
                    continue
                if HH[n, q] == HOW_SENDER:
                    claimants[ncl] = q
                    ncl += 1
                hmac[nh] = HM[n, q]
                hhow[nh] = HH[n, q]
                nh += 1
        if unsol and src_ip.size > 0:
            hs = _holder(src_ip, src_mac, src_last, src_multi, s, now, hold_s)
            if hs >= 0 and src_mac[hs] != m:
                there = False
                for q in range(nh):
                    if hmac[q] == src_mac[hs]:
                        there = True
                        break
                if not there:
                    hmac[nh] = src_mac[hs]
                    hhow[nh] = HOW_SOURCE
                    nh += 1
        if nh > 0:
            conflicts += 1
            nc = 0
            if HU[n, r] > 0 and (ncl > 0 or unsol):
                culprits[0] = m
                nc = 1
            elif ncl > 0:
                for z in range(ncl):
                    if HU[n, claimants[z]] > 0:
                        culprits[nc] = HM[n, claimants[z]]
                        nc += 1
                if nc == 0:
                    newest = True
                    for z in range(ncl):
                        if not HF[n, claimants[z]] < HF[n, r]:
                            newest = False
                            break
                    if newest:
                        culprits[0] = m
                        nc = 1
            for z in range(nc):
                cu = culprits[z]
                if t_find(Sm, Si, SN, cu, np.uint64(s), np.int64(0)) >= 0:
                    continue
                # the holder list of the wording: m first (when it is not the culprit), then the others
                if nhl + nh + 2 > hl_mac.size:
                    hl_mac = _grow_rows(hl_mac, 2 * (nhl + nh + 2))
                    hl_how = _grow_rows(hl_how, 2 * (nhl + nh + 2))
                start = nhl
                if cu != m:
                    hl_mac[nhl] = m
                    hl_how[nhl] = HOW_SENDER
                    nhl += 1
                for q in range(nh):
                    if hmac[q] != cu:
                        hl_mac[nhl] = hmac[q]
                        hl_how[nhl] = hhow[q]
                        nhl += 1
                nrec = _new_spoofer(Sm, Si, SN, SF, cu, s, now, why_base, rec_mac, rec_ip, rec_kind, rec_arg, nrec,
                                    WHY_HELD, start)
        sn = t_find(Sm, Si, SN, m, np.uint64(s), np.int64(0))
        if sn >= 0:
            SF[sn, S_LAST] = now
    return (hn, HM, HF, HL, HU, HH, cn, CI, CT, conflicts, rec_mac[:nrec], rec_ip[:nrec], rec_kind[:nrec],
            rec_arg[:nrec], hl_mac[:nhl], hl_how[:nhl])


@nb.njit(cache=True, nogil=True)
def spoofer_keys(S):
    """(mac, ip, evidence id, time of the last claim) of every spoofer, least recently inserted first."""
    Sm, SN, SF = S[0], S[2], S[3]
    k = Sm[M_SIZE]
    mac = np.empty(k, np.uint64)
    ip = np.empty(k, np.uint32)
    why = np.empty(k, np.int64)
    last = np.empty(k, np.float64)
    n = Sm[M_HEAD]
    j = 0
    while n >= 0:
        mac[j] = np.uint64(SN[n, C_K1])
        ip[j] = np.uint32(SN[n, C_K2])
        why[j] = SN[n, S_WHY]
        last[j] = SF[n, S_LAST]
        j += 1
        n = SN[n, C_NXT]
    return mac, ip, why, last
