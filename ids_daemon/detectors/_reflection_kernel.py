"""Compiled per-batch query bookkeeping of the reflection detector (see reflection.py).

`solicit` decides, in one pass over a batch's answers and queries in capture order, which
answers are solicited: by a query remembered in the direct-mapped table from earlier batches
(the table as it was before the batch), or by an earlier query of the batch with the same key
within ``query_s`` (a per-batch open-addressing map from key to its latest query). It then
stores the batch's queries (per slot the latest wins) and returns how many live queries were
overwritten, as the numpy version (`np.unique` over the whole batch, several times) did.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _mix(k):
    x = k * np.uint64(0x9E3779B97F4A7C15)
    return x ^ (x >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def solicit(a_rows, ak, ak0, q_rows, qk, ts, qkeys, qts, query_s, stamp, win, batch_no):
    """(solicited per answer, live queries lost or overwritten); updates ``qkeys``/``qts``."""
    na, nq = a_rows.size, q_rows.size
    tmask = np.uint64(qkeys.size - 1)
    sol = np.zeros(na, np.bool_)
    # the batch's distinct query keys -> their latest query row (index into q_rows)
    m = 16
    while m < 2 * nq:
        m <<= 1
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
            ok = False
            for kk in (ak[i], ak0[i]):
                s = kk & tmask
                if qkeys[s] == kk and t - qts[s] <= query_s:
                    ok = True
                    break
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
        if stamp[s] != batch_no:
            stamp[s] = batch_no
            win[s] = hv[h]
            nslots += 1
        elif hv[h] > win[s]:
            win[s] = hv[h]
    lost = nkeys - nslots
    for e in range(nkeys):
        h = order[e]
        s = np.int64(hk[h] & tmask)
        if stamp[s] != batch_no:
            continue  # done already
        stamp[s] = batch_no - 1 if batch_no > 0 else -2  # mark done
        jj = win[s]
        k = qk[jj]
        t = ts[q_rows[jj]]
        ok_, ot = qkeys[s], qts[s]
        if ok_ != k and ok_ != 0 and t - ot <= query_s:
            lost += 1
        qkeys[s] = k
        qts[s] = t
    return sol, lost


def warm_up() -> None:
    z = np.zeros(2, np.int64)
    k = np.array([5, 7], np.uint64)
    qkeys = np.zeros(16, np.uint64)
    solicit(z, k, k, np.array([0, 1], np.int64), k, np.zeros(2), qkeys, np.full(16, -np.inf), 60.0,
            np.full(16, -1, np.int64), np.zeros(16, np.int64), 1)
