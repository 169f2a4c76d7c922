"""The meter's compiled inner loop (numba).

The released features are defined packet by packet in capture order (cumulative flow
counters, a 20-packet buffer that resets, a Rate value carried from packet to packet),
so the per-flow update is one sequential pass over the batch's columns. It runs over
preallocated numpy state: a fixed-size entry table (one row per tracked key), an
open-addressing hash index and an LRU list, so memory is bounded by ``max_flows`` and
nothing is allocated per packet.

Layout per entry (bytes): EI 17 x int32 (68) + EK 3 x uint64 (24) + E6 4 x uint64 (32)
+ EF 9 x float64 (72) + SUMS 42 x float64 (336) = 532, plus 1.5 to 3 hash slots x int32
(6 to 12; 8 when max_flows is a power of two): at most 544.

IPv6 packets go through the same loop: a flow's key word K_1 is a 64-bit hash of its two
sorted 128-bit endpoints (collisions need two flows with the same ports, protocol and
hash: about 2^-64 per pair), K_2 carries KEY_V6 so the two families never share a key,
and the endpoints themselves (or a pool's /64 or /128 host prefix) are kept in E6 for
output (a table of their own: the IPv4 hot path touches the same bytes as before).
"""

from __future__ import annotations

import mmap

import numpy as np
from numba import njit

# ---- int32 entry fields (EI) ----
I_KIND, I_PROTO, I_APORT, I_BPORT, I_PKTS = 0, 1, 2, 3, 4
I_CFIN, I_CSYN, I_CRST, I_CPSH, I_CACK = 5, 6, 7, 8, 9
I_WIN_N, I_BUF_N, I_BUF_MIN, I_BUF_MAX, I_PREV, I_NEXT, I_FLAGS = 10, 11, 12, 13, 14, 15, 16
FLAG_OWN = 1  # the flow is its own window key (promoted)
FLAG_PROBATION = 2  # on the probation list: a flow seen once so far
FLAG_V6 = 4  # an IPv6 flow or pool (its addresses are in E6)
NI = 17
# ---- uint64 key words (EK): the two key words, then the addresses (initiator << 32 |
# responder for a flow, the host for a pool) ----
K_1, K_2, K_ADDR = 0, 1, 2
NK = 3
# ---- IPv6 addresses (E6, uint64 words), a table of their own so that IPv4 keys stay
# compact: initiator (2 words) and responder (2 words) of a flow, the host prefix of a pool ----
K_S6, K_D6 = 0, 2
KEY_V6 = 1 << 16  # in K_2: an IPv6 key
# ---- float64 entry fields (EF) ----
F_FIRST, F_LAST, F_WFIRST, F_WLAST, F_PREV_TS, F_RATE, F_BYTES, F_BSUM, F_BSQ = 0, 1, 2, 3, 4, 5, 6, 7, 8
NF = 9
# ---- global int64 state (G) ----
# Two LRU lists (a segmented LRU): flows seen once wait on the probation list and move
# to the main list on their second packet. Eviction takes the probation tail first, so a
# spoofed flood (every packet a new flow) churns only its own one-packet flows and the
# established flows keep their state.
G_HEAD, G_TAIL, G_PHEAD, G_PTAIL, G_USED, G_FREE, G_OUT = 0, 1, 2, 3, 4, 5, 6
NG = 7
# ---- global float64 state (GF) ----
GF_NOW, GF_NEXT_SCAN = 0, 1
# ---- counters (CNT) ----
C_ROWS, C_WINDOWS, C_PARTIAL, C_FLOWS, C_POOLS, C_EVICTED, C_IDLE, C_ACTIVE, C_PROMOTED, C_EVICTED_EST = range(10)
NC = 10
# ---- parameters (P, float64) ----
P_WINDOW, P_PROMOTE, P_PREFIX_MASK, P_PREFIX_LEN, P_IDLE, P_ACTIVE, P_SCAN, P_CAPTURE, P_PER_PACKET, P_PREFIX6 = range(10)
NP_ = 10

KIND_FLOW, KIND_POOL, KIND_CAPTURE = 1, 2, 3
REASON_FULL, REASON_IDLE, REASON_ACTIVE, REASON_EVICTED, REASON_END = 0, 1, 2, 3, 4
POOL_PROTO_ARP = 0x100

# The 46 columns minus four derived at emit time (Srate=Rate, Drate=0, IPv=LLC=1-ARP):
# SUM_COL[j] is the COLUMNS index held in SUMS[:, j].
_DERIVED = (5, 6, 31, 32)
SUM_COL = np.array([c for c in range(46) if c not in _DERIVED], dtype=np.int64)
NS = SUM_COL.shape[0]
COL_SUM = np.full(46, -1, dtype=np.int64)
COL_SUM[SUM_COL] = np.arange(NS)

# ICMP types sent by the host being talked to (replies and errors): pooled by source.
_ICMP_FROM_SERVED = np.zeros(256, dtype=np.bool_)
_ICMP_FROM_SERVED[[0, 3, 4, 5, 11, 12, 14, 16, 18]] = True
# ICMPv6: errors (1-4) and echo replies come from the host being talked to; neighbour and
# router discovery (133-137) are pooled by their sender, as ARP is: the address that
# solicits or announces itself
_ICMP6_FROM_SERVED = np.zeros(256, dtype=np.bool_)
_ICMP6_FROM_SERVED[[1, 2, 3, 4, 129, 133, 134, 135, 136, 137]] = True

MAX_EMIT_PER_PACKET = 4  # full window + active restart + two evictions

# Output rows: OF float64 (features, first and last packet time), OI int64 (identity).
# Two wide arrays rather than a dozen columns: every array handed to a compiled call
# costs argument passing, which showed up as ~130 ns per new flow.
OF_FIRST, OF_LAST = 46, 47
NOF = 48
OI_N, OI_KEY, OI_KIND, OI_PROTO, OI_SRC, OI_DST, OI_SPORT, OI_DPORT, OI_HOST, OI_REASON = range(10)
# IPv6 identity: a flag, then the source/initiator (2 words) and the destination/responder
# or pool host prefix (2 words), as the uint64 words of the address bytes
OI_V6, OI_S6, OI_D6 = 10, 11, 13
NOI = 15


def _zeros(shape: tuple[int, ...], dtype: type, populate: bool) -> np.ndarray:
    if not populate:
        return np.zeros(shape, dtype=dtype)
    # MAP_POPULATE has the kernel fault every page in at once: ~4x faster than touching
    # them from Python, and the memory is resident (and accounted) from the start
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0))
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def allocate(capacity: int, populate: bool = False) -> dict[str, np.ndarray]:
    """Zeroed state arrays for ``capacity`` keys (resident at once when ``populate``)."""
    # load factor at most 2/3 keeps linear probing short; at most 12 bytes per key
    slots = 1
    while slots < (3 * capacity + 1) // 2:
        slots <<= 1
    st = {
        "ei": _zeros((capacity, NI), np.int32, populate),
        "ek": _zeros((capacity, NK), np.uint64, populate),
        "e6": _zeros((capacity, 4), np.uint64, populate),
        "ef": _zeros((capacity, NF), np.float64, populate),
        "sums": _zeros((capacity, NS), np.float64, populate),
        "ht": np.full(slots, -1, dtype=np.int32),
        "g": np.zeros(NG, dtype=np.int64),
        "gf": np.zeros(2, dtype=np.float64),
        "cnt": np.zeros(NC, dtype=np.int64),
    }
    st["g"][G_HEAD] = -1
    st["g"][G_TAIL] = -1
    st["g"][G_PHEAD] = -1
    st["g"][G_PTAIL] = -1
    st["ei"][:, I_NEXT] = np.arange(1, capacity + 1)
    st["ei"][-1, I_NEXT] = -1
    st["g"][G_FREE] = 0
    return st


def allocate_out(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Output buffers (OF, OI) for ``n`` windows or per-packet rows."""
    return np.zeros((n, NOF), dtype=np.float64), np.zeros((n, NOI), dtype=np.int64)


@njit(cache=True, nogil=True, inline="always")
def _mix(k1, k2):
    # splitmix64 finaliser over both key words
    x = k1 ^ (k2 * np.uint64(0x9E3779B97F4A7C15))
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@njit(cache=True, nogil=True, inline="always")
def _find(ek, ht, k1, k2):
    mask = ht.shape[0] - 1
    i = np.int64(_mix(k1, k2) & np.uint64(mask))
    while True:
        e = ht[i]
        if e < 0:
            return -1, i
        if ek[e, 0] == k1 and ek[e, 1] == k2:
            return e, i
        i = (i + 1) & mask


@njit(cache=True, nogil=True, inline="always")
def _ht_remove(ek, ht, slot):
    # backward-shift deletion keeps linear probing free of tombstones
    mask = ht.shape[0] - 1
    i = slot
    j = slot
    while True:
        j = (j + 1) & mask
        e = ht[j]
        if e < 0:
            break
        h = np.int64(_mix(ek[e, 0], ek[e, 1]) & np.uint64(mask))
        if i <= j:
            stays = i < h <= j
        else:
            stays = h > i or h <= j
        if not stays:
            ht[i] = e
            i = j
    ht[i] = -1


@njit(cache=True, nogil=True, inline="always")
def _unlink(ei, g, e):
    hi = G_PHEAD if ei[e, I_FLAGS] & FLAG_PROBATION else G_HEAD
    p = ei[e, I_PREV]
    n = ei[e, I_NEXT]
    if p >= 0:
        ei[p, I_NEXT] = n
    else:
        g[hi] = n
    if n >= 0:
        ei[n, I_PREV] = p
    else:
        g[hi + 1] = p


@njit(cache=True, nogil=True, inline="always")
def _push_head(ei, g, e, probation):
    hi = G_PHEAD if probation else G_HEAD
    if probation:
        ei[e, I_FLAGS] |= FLAG_PROBATION
    else:
        ei[e, I_FLAGS] &= ~FLAG_PROBATION
    h = g[hi]
    ei[e, I_PREV] = -1
    ei[e, I_NEXT] = h
    if h >= 0:
        ei[h, I_PREV] = e
    g[hi] = e
    if g[hi + 1] < 0:
        g[hi + 1] = e


@njit(cache=True, nogil=True, inline="always")
def _touch(ei, ef, g, e, t):
    """Most recently used: to the head of the main list (leaving probation if there)."""
    if (ei[e, I_FLAGS] & FLAG_PROBATION) or g[G_HEAD] != e:
        _unlink(ei, g, e)
        _push_head(ei, g, e, False)
    if t > ef[e, F_LAST]:
        ef[e, F_LAST] = t


@njit(cache=True, nogil=True, inline="always")
def _oldest(ef, g):
    """The least recently used entry of both lists (-1 when empty)."""
    a = g[G_PTAIL]
    b = g[G_TAIL]
    if a < 0:
        return b
    if b < 0:
        return a
    return a if ef[a, F_LAST] <= ef[b, F_LAST] else b


@njit(cache=True, nogil=True)
def _emit(e, reason, ei, ek, e6, ef, sums, g, cnt, wf, wi):
    """Average entry e's partial window into the output and reset it."""
    o = g[G_OUT]
    n = ei[e, I_WIN_N]
    inv = 1.0 / n
    for j in range(NS):
        wf[o, SUM_COL[j]] = sums[e, j] * inv
        sums[e, j] = 0.0
    wf[o, 5] = wf[o, 4]  # Srate = Rate
    wf[o, 6] = 0.0  # Drate
    wf[o, 31] = 1.0 - wf[o, 29]  # IPv: every metered row is IPv4 or ARP
    wf[o, 32] = wf[o, 31]  # LLC == IPv in the released rows
    wf[o, OF_FIRST] = ef[e, F_WFIRST]
    wf[o, OF_LAST] = ef[e, F_WLAST]
    kind = ei[e, I_KIND]
    addr = ek[e, K_ADDR]
    wi[o, OI_N] = n
    wi[o, OI_KEY] = np.int64(_mix(ek[e, K_1], ek[e, K_2]))
    wi[o, OI_KIND] = kind
    wi[o, OI_PROTO] = ei[e, I_PROTO]
    if kind == KIND_FLOW:
        wi[o, OI_SRC] = np.int64(addr >> np.uint64(32))
        wi[o, OI_DST] = np.int64(addr & np.uint64(0xFFFFFFFF))
        wi[o, OI_SPORT] = ei[e, I_APORT]
        wi[o, OI_DPORT] = ei[e, I_BPORT]
        wi[o, OI_HOST] = 0
    else:
        wi[o, OI_SRC] = 0
        wi[o, OI_DST] = 0
        wi[o, OI_SPORT] = 0
        wi[o, OI_DPORT] = 0
        wi[o, OI_HOST] = np.int64(addr)
    wi[o, OI_REASON] = reason
    if ei[e, I_FLAGS] & FLAG_V6:
        wi[o, OI_V6] = 1
        for j in range(4):
            wi[o, OI_S6 + j] = np.int64(e6[e, K_S6 + j])
    else:
        for j in range(5):
            wi[o, OI_V6 + j] = 0
    ei[e, I_WIN_N] = 0
    g[G_OUT] = o + 1
    cnt[C_WINDOWS] += 1
    if reason != REASON_FULL:
        cnt[C_PARTIAL] += 1


@njit(cache=True, nogil=True)
def _release(e, reason, ei, ek, e6, ef, sums, ht, g, cnt, wf, wi):
    """Drop entry e: its partial window (if any) goes out first, nothing is lost."""
    if ei[e, I_WIN_N] > 0:
        _emit(e, reason, ei, ek, e6, ef, sums, g, cnt, wf, wi)
    _, slot = _find(ek, ht, ek[e, K_1], ek[e, K_2])
    _ht_remove(ek, ht, slot)
    _unlink(ei, g, e)
    ei[e, I_KIND] = 0
    ei[e, I_NEXT] = g[G_FREE]  # free entries are chained through their LRU link
    g[G_FREE] = e
    g[G_USED] -= 1


@njit(cache=True, nogil=True)
def _evict(ei, ek, e6, ef, sums, ht, g, cnt, wf, wi):
    """Make room for one key: drop the probation tail, else the main list's tail."""
    victim = g[G_PTAIL] if g[G_PTAIL] >= 0 else g[G_TAIL]
    if not ei[victim, I_FLAGS] & FLAG_PROBATION:
        cnt[C_EVICTED_EST] += 1
    _release(victim, REASON_EVICTED, ei, ek, e6, ef, sums, ht, g, cnt, wf, wi)
    cnt[C_EVICTED] += 1


@njit(cache=True, nogil=True, inline="always")
def _insert(k1, k2, slot, t, ei, ek, ef, ht, g, probation):
    """A new entry for key (k1, k2) at hash slot ``slot``; the caller made room."""
    e = g[G_FREE]
    g[G_FREE] = ei[e, I_NEXT]
    g[G_USED] += 1
    ht[slot] = e
    ek[e, K_1] = k1
    ek[e, K_2] = k2
    ek[e, K_ADDR] = 0  # the IPv6 words are written whenever FLAG_V6 is set, and read only then
    for j in range(NI):
        ei[e, j] = 0
    for j in range(NF):
        ef[e, j] = 0.0
    ef[e, F_FIRST] = t
    ef[e, F_LAST] = t
    _push_head(ei, g, e, probation)
    return e


@njit(cache=True, nogil=True, inline="always")
def _flow_endpoints(ek, e6, e, i, v6, src, dst, src6, dst6):
    """Record flow e's endpoints as packet i has them (initiator first)."""
    if v6:
        ek[e, K_ADDR] = 0
        e6[e, K_S6] = src6[i, 0]
        e6[e, K_S6 + 1] = src6[i, 1]
        e6[e, K_D6] = dst6[i, 0]
        e6[e, K_D6 + 1] = dst6[i, 1]
    else:
        ek[e, K_ADDR] = (np.uint64(src[i]) << np.uint64(32)) | np.uint64(dst[i])


@njit(cache=True, nogil=True)
def expire_idle(now, params, ei, ek, e6, ef, sums, ht, g, gf, cnt, wf, wi, out_cap):
    """Expire keys idle for longer than the idle timeout (oldest first). Returns True
    when the scan finished, False when it stopped for lack of output room."""
    idle = params[P_IDLE]
    if now > gf[GF_NOW]:
        gf[GF_NOW] = now
    if idle <= 0:
        return True
    while True:
        e = _oldest(ef, g)
        if e < 0:
            break
        if gf[GF_NOW] - ef[e, F_LAST] <= idle:
            break
        if g[G_OUT] >= out_cap:
            return False
        _release(e, REASON_IDLE, ei, ek, e6, ef, sums, ht, g, cnt, wf, wi)
        cnt[C_IDLE] += 1
    gf[GF_NEXT_SCAN] = gf[GF_NOW] + params[P_SCAN]
    return True


@njit(cache=True, nogil=True)
def flush_all(ei, ek, e6, ef, sums, g, cnt, wf, wi, start):
    """Emit every partial window (end of stream), from entry ``start``; returns the next
    entry to visit (== capacity when done)."""
    cap = ei.shape[0]
    out_cap = wf.shape[0]
    e = start
    while e < cap:
        if ei[e, I_KIND] != 0 and ei[e, I_WIN_N] > 0:
            if g[G_OUT] >= out_cap:
                return e
            _emit(e, REASON_END, ei, ek, e6, ef, sums, g, cnt, wf, wi)
        e += 1
    return e


@njit(cache=True, nogil=True)
def meter_packets(start, sel, ts, flen, is_arp, proto, l4ok, src, dst, sport, dport, flags, ttl, icmp_type,
                  is6, src6, dst6, params, ei, ek, e6, ef, sums, ht, g, gf, cnt, wf, wi, pf, pi, pp_row):
    """Meter packets ``start..`` of the batch; returns the index of the first packet not
    processed (the caller drains the output and calls again when it is short of room)."""
    n = ts.shape[0]
    window = np.int64(params[P_WINDOW])
    promote = np.int64(params[P_PROMOTE])
    pmask = np.uint32(np.int64(params[P_PREFIX_MASK]))
    host128 = params[P_PREFIX6] >= 128  # IPv6 pools: /128 (one per address) or /64
    active = params[P_ACTIVE]
    capture = params[P_CAPTURE] > 0
    per_packet = params[P_PER_PACKET] > 0
    row = np.zeros(46, dtype=np.float64)
    out_cap = wf.shape[0]
    r = pp_row
    for i in range(start, n):
        if not sel[i]:  # not an IP/ARP packet: counted by the caller, no row
            continue
        if g[G_OUT] + MAX_EMIT_PER_PACKET > out_cap:
            return i, r
        t = ts[i]
        if t > gf[GF_NOW]:
            gf[GF_NOW] = t
        if params[P_IDLE] > 0 and gf[GF_NOW] >= gf[GF_NEXT_SCAN]:
            if not expire_idle(gf[GF_NOW], params, ei, ek, e6, ef, sums, ht, g, gf, cnt, wf, wi,
                               out_cap - MAX_EMIT_PER_PACKET):
                return i, r
        size = np.int64(flen[i])
        arp = is_arp[i]
        v6 = is6[i]
        p = np.int64(proto[i])
        tcp = (not arp) and l4ok[i] and p == 6
        udp = (not arp) and l4ok[i] and p == 17
        fl = np.int64(flags[i]) if tcp else 0
        sp = np.int64(sport[i])
        dp = np.int64(dport[i])
        fd = 0.0
        hl = 0.0
        fe = -1
        if tcp or udp:
            a_pt, b_pt = sp, dp
            if v6:
                # endpoints in a fixed order, then one hash of both (see the module docstring)
                a0, a1, b0, b1 = src6[i, 0], src6[i, 1], dst6[i, 0], dst6[i, 1]
                if (a0 > b0) or (a0 == b0 and (a1 > b1 or (a1 == b1 and a_pt > b_pt))):
                    a0, a1, b0, b1, a_pt, b_pt = b0, b1, a0, a1, b_pt, a_pt
                k1 = _mix(_mix(a0, a1) ^ b0, b1)
                vbit = np.uint64(KEY_V6)
            else:
                a_ip, b_ip = src[i], dst[i]
                if (a_ip > b_ip) or (a_ip == b_ip and a_pt > b_pt):
                    a_ip, b_ip, a_pt, b_pt = b_ip, a_ip, b_pt, a_pt
                k1 = (np.uint64(a_ip) << np.uint64(32)) | np.uint64(b_ip)
                vbit = np.uint64(0)
            k2 = (np.uint64(a_pt) << np.uint64(48)) | (np.uint64(b_pt) << np.uint64(32)) | vbit | \
                (np.uint64(p) << np.uint64(8)) | np.uint64(KIND_FLOW)
            fe, slot = _find(ek, ht, k1, k2)
            if fe < 0:
                if g[G_FREE] < 0:
                    _evict(ei, ek, e6, ef, sums, ht, g, cnt, wf, wi)
                    _, slot = _find(ek, ht, k1, k2)  # the removal may have shifted slots
                fe = _insert(k1, k2, slot, t, ei, ek, ef, ht, g, True)
                ei[fe, I_KIND] = KIND_FLOW
                ei[fe, I_PROTO] = p
                if v6:
                    ei[fe, I_FLAGS] |= FLAG_V6
                _flow_endpoints(ek, e6, fe, i, v6, src, dst, src6, dst6)
                ei[fe, I_APORT] = sp
                ei[fe, I_BPORT] = dp
                cnt[C_FLOWS] += 1
            elif active > 0 and t - ef[fe, F_FIRST] > active:
                # a long flow restarts: its state (and own window) begin again
                if ei[fe, I_WIN_N] > 0:
                    _emit(fe, REASON_ACTIVE, ei, ek, e6, ef, sums, g, cnt, wf, wi)
                for j in range(I_PKTS, I_BUF_MAX + 1):
                    ei[fe, j] = 0
                ei[fe, I_FLAGS] &= ~FLAG_OWN
                for j in range(NF):
                    if j != F_LAST:
                        ef[fe, j] = 0.0
                ef[fe, F_FIRST] = t
                _flow_endpoints(ek, e6, fe, i, v6, src, dst, src6, dst6)
                ei[fe, I_APORT] = sp
                ei[fe, I_BPORT] = dp
                cnt[C_ACTIVE] += 1
            ei[fe, I_PKTS] += 1
            ef[fe, F_BYTES] += size
            fd = t - ef[fe, F_FIRST]
            hl = ef[fe, F_BYTES]
            if tcp:
                # released index mix-up: see docs/features.md
                ei[fe, I_CFIN] += fl & 1
                ei[fe, I_CSYN] += (fl >> 1) & 1
                ei[fe, I_CRST] += (fl >> 2) & 1
                ei[fe, I_CPSH] += (fl >> 3) & 1
                ei[fe, I_CACK] += (fl >> 4) & 1
            if ei[fe, I_PKTS] > 1:
                _touch(ei, ef, g, fe, t)

        # ---- which key's window this row joins ----
        h0 = np.uint64(0)  # IPv6 pool host prefix (two words)
        h1 = np.uint64(0)
        if fe >= 0 and not capture and ei[fe, I_PKTS] >= promote:
            wk = fe
            if not ei[fe, I_FLAGS] & FLAG_OWN:
                ei[fe, I_FLAGS] |= FLAG_OWN
                cnt[C_PROMOTED] += 1
        else:
            if capture:
                kind = KIND_CAPTURE
                host = np.uint32(0)
                pp_proto = 0
            else:
                kind = KIND_POOL
                host = np.uint32(0)
                pp_proto = p
                if v6:
                    if fe >= 0:
                        h0, h1 = e6[fe, K_D6], e6[fe, K_D6 + 1]
                    elif p == 58 and l4ok[i] and _ICMP6_FROM_SERVED[icmp_type[i]]:
                        h0, h1 = src6[i, 0], src6[i, 1]
                    else:
                        h0, h1 = dst6[i, 0], dst6[i, 1]
                    if not host128:
                        h1 = np.uint64(0)
                elif fe >= 0:
                    # the flow's responder: the host being served or attacked
                    host = np.uint32(ek[fe, K_ADDR] & np.uint64(0xFFFFFFFF))
                    pp_proto = p
                elif arp:
                    host = src[i]  # ARP: the address being announced or asked about by its owner
                    pp_proto = POOL_PROTO_ARP
                elif p == 1 and l4ok[i] and _ICMP_FROM_SERVED[icmp_type[i]]:
                    host = src[i]
                    pp_proto = p
                else:
                    host = dst[i]
                    pp_proto = p
                host = host & pmask
            pool6 = v6 and not capture
            if pool6:
                k1 = _mix(h0, h1)
                k2 = (np.uint64(pp_proto) << np.uint64(8)) | np.uint64(KEY_V6) | np.uint64(kind)
            else:
                k1 = np.uint64(host)
                k2 = (np.uint64(pp_proto) << np.uint64(8)) | np.uint64(kind)
            wk, slot = _find(ek, ht, k1, k2)
            if wk < 0:
                if g[G_FREE] < 0:
                    _evict(ei, ek, e6, ef, sums, ht, g, cnt, wf, wi)
                    _, slot = _find(ek, ht, k1, k2)
                wk = _insert(k1, k2, slot, t, ei, ek, ef, ht, g, False)
                ei[wk, I_KIND] = kind
                ei[wk, I_PROTO] = pp_proto
                ek[wk, K_ADDR] = np.uint64(host)
                if pool6:
                    ei[wk, I_FLAGS] |= FLAG_V6
                    e6[wk, K_S6] = h0
                    e6[wk, K_S6 + 1] = h1
                if kind == KIND_POOL:
                    cnt[C_POOLS] += 1
        _touch(ei, ef, g, wk, t)

        # ---- per-key quantities: carried Rate and the 20-packet size buffer ----
        if fd > 0:
            ef[wk, F_RATE] = ei[fe, I_PKTS] / fd
        rate = ef[wk, F_RATE]
        bn = ei[wk, I_BUF_N] + 1
        bsum = ef[wk, F_BSUM] + size
        bsq = ef[wk, F_BSQ] + size * size
        if bn == 1:
            bmin = size
            bmax = size
        else:
            bmin = min(np.int64(ei[wk, I_BUF_MIN]), size)
            bmax = max(np.int64(ei[wk, I_BUF_MAX]), size)
        mean = bsum / bn
        var = (bn * bsq - bsum * bsum) / (bn * bn)  # exact: integers below 2**53
        std = np.sqrt(var) if var > 0 else 0.0
        if bn == 20:
            # the reset packet: the two-stream lists never got this packet
            n2 = 19
            s2 = bsum - size
            q2 = bsq - size * size
            number = 0.0
            iat = t
            ei[wk, I_BUF_N] = 0
            ef[wk, F_BSUM] = 0.0
            ef[wk, F_BSQ] = 0.0
        else:
            n2 = bn
            s2 = bsum
            q2 = bsq
            number = bn
            iat = t - ef[wk, F_PREV_TS]
            ei[wk, I_BUF_N] = bn
            ei[wk, I_BUF_MIN] = bmin
            ei[wk, I_BUF_MAX] = bmax
            ef[wk, F_BSUM] = bsum
            ef[wk, F_BSQ] = bsq
        ef[wk, F_PREV_TS] = t
        m2 = s2 / n2
        v2 = (n2 * q2 - s2 * s2) / (n2 * n2)
        if v2 < 0:
            v2 = 0.0

        # ---- the row ----
        row[0] = fd
        row[1] = hl
        row[2] = 0.0 if arp else p
        row[3] = 0.0 if arp else ttl[i]
        row[4] = rate
        row[5] = rate
        row[6] = 0.0
        row[7] = fl & 1
        row[8] = (fl >> 1) & 1
        row[9] = (fl >> 2) & 1
        row[10] = (fl >> 3) & 1
        row[11] = (fl >> 4) & 1
        row[12] = (fl >> 6) & 1
        row[13] = (fl >> 7) & 1
        if tcp:
            row[14] = ei[fe, I_CFIN]
            row[15] = ei[fe, I_CSYN]
            row[16] = ei[fe, I_CRST]
            row[17] = ei[fe, I_CPSH]
            row[18] = ei[fe, I_CACK]
        else:
            row[14] = row[15] = row[16] = row[17] = row[18] = 0.0
        row[19] = 1.0 if tcp and (sp == 80 or dp == 80) else 0.0
        row[20] = 1.0 if tcp and (sp == 443 or dp == 443) else 0.0
        row[21] = 1.0 if udp and (sp == 53 or dp == 53) else 0.0
        row[22] = 1.0 if tcp and (sp == 23 or dp == 23) else 0.0
        row[23] = 1.0 if tcp and (sp == 25 or dp == 25) else 0.0
        row[24] = 1.0 if tcp and (sp == 22 or dp == 22) else 0.0
        row[25] = 1.0 if tcp and (sp == 21 or dp == 21) else 0.0
        row[26] = 1.0 if tcp else 0.0
        row[27] = 1.0 if udp else 0.0
        if v6:  # DHCPv6, the released rule's direction (server port as source or client port as destination)
            row[28] = 1.0 if udp and (sp == 547 or dp == 546) else 0.0
        else:
            row[28] = 1.0 if udp and (sp == 67 or dp == 68) else 0.0
        row[29] = 1.0 if arp else 0.0
        row[30] = 1.0 if (not arp) and (p == 1 or (v6 and p == 58)) else 0.0  # ICMP, or ICMPv6
        row[31] = 0.0 if arp else 1.0
        row[32] = row[31]
        row[33] = bsum
        row[34] = bmin
        row[35] = bmax
        row[36] = mean
        row[37] = std
        row[38] = size
        row[39] = iat
        row[40] = number
        row[41] = np.sqrt(2.0 * m2)
        row[42] = np.sqrt(2.0 * v2)
        row[43] = v2
        row[44] = 1.0 if v2 != 0 else 0.0
        row[45] = n2 * n2

        if per_packet:
            for c in range(46):
                pf[r, c] = row[c]
            pf[r, OF_FIRST] = t
            pf[r, OF_LAST] = t
            pi[r, OI_N] = 1
            pi[r, OI_KEY] = np.int64(_mix(ek[wk, K_1], ek[wk, K_2]))
            pi[r, OI_KIND] = ei[wk, I_KIND]
            pi[r, OI_PROTO] = POOL_PROTO_ARP if arp else p
            pi[r, OI_SRC] = src[i]
            pi[r, OI_DST] = dst[i]
            pi[r, OI_SPORT] = sp
            pi[r, OI_DPORT] = dp
            pi[r, OI_HOST] = np.int64(ek[wk, K_ADDR]) if ei[wk, I_KIND] == KIND_POOL else 0
            pi[r, OI_REASON] = REASON_FULL
            pi[r, OI_V6] = 1 if v6 else 0
            pi[r, OI_S6] = np.int64(src6[i, 0])
            pi[r, OI_S6 + 1] = np.int64(src6[i, 1])
            pi[r, OI_D6] = np.int64(dst6[i, 0])
            pi[r, OI_D6 + 1] = np.int64(dst6[i, 1])
            r += 1
        cnt[C_ROWS] += 1

        # ---- window accumulation ----
        wn = ei[wk, I_WIN_N] + 1
        ei[wk, I_WIN_N] = wn
        if wn == 1:
            ef[wk, F_WFIRST] = t
        ef[wk, F_WLAST] = t
        for j in range(NS):
            sums[wk, j] += row[SUM_COL[j]]
        if wn >= window:
            _emit(wk, REASON_FULL, ei, ek, e6, ef, sums, g, cnt, wf, wi)
    return n, r
