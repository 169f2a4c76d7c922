"""Compiled key helpers the detectors share.

`isin` is `np.isin` for 64-bit keys without its sort of both arrays (a batch's keys against a
detector's held keys: an open-addressing set of the held keys, one probe per batch key);
`pair_keys` builds `base.pair_key` both ways (client→server and server→client) in one pass, and
`conn_keys` the key of a frame's TCP connection both ways: `pair_key(client, server, client port
<< 16 | server port)`.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.cpu import CPUTargetOptions
from numba.extending import intrinsic

# Helpers that take arrays and return scalars need no reference counting; numba's private
# `_nrt` option turns it off (~25 ns saved per call, half an LRU unlink's time). Where a numba
# release no longer has the option, the helpers compile as ordinary kernels: slower, same results.
NO_REFCOUNT: dict[str, bool] = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x94D049BB133111EB)

# A state table far larger than the cache (a direct-mapped record of 4 MB, a bit filter of 1 MB)
# touched at one random slot per frame costs a cache miss per frame; inside a loop that does much
# else per frame the core keeps only one or two of those misses in flight (~30 ns a frame). The
# kernels that touch such tables work in chunks of `CHUNK` frames: a first pass over the chunk
# computes each frame's slot and prefetches it, a second does the table work in frame order (so
# every result is as before), by which time the lines have arrived.
CHUNK = 64


@intrinsic
def prefetch(typingctx, arr, i):
    """Ask the cache for element ``i`` of the C-contiguous array ``arr`` (flat index; for writing,
    kept in all levels): a hint, no effect on any value."""
    if not isinstance(arr, types.Array) or arr.layout != "C" or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [idx]), i8p)
        i32 = ir.IntType(32)
        # (named by llvmlite from the pointer type, as numba names its own intrinsics)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [ptr, i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@nb.njit(cache=True, nogil=True)
def table_size(n):
    """Slots of an open-addressing table for ``n`` keys: a power of two, at least 16 and 2n
    (at most half full, so a probe ends soon)."""
    m = 16
    while m < 2 * n:
        m <<= 1
    return m


@nb.njit(cache=True, nogil=True, inline="always")
def _slot(x, mask):
    y = x * _M1
    return (y ^ (y >> np.uint64(29))) & mask


@nb.njit(cache=True, nogil=True)
def _set_of(keys):
    """An open-addressing set of ``keys`` (linear probing; 0 is kept apart as a flag)."""
    m = table_size(keys.size)
    mask = np.uint64(m - 1)
    tab = np.zeros(m, np.uint64)
    zero = False
    for j in range(keys.size):
        x = keys[j]
        if x == 0:
            zero = True
            continue
        i = _slot(x, mask)
        while tab[i] != 0 and tab[i] != x:
            i = (i + np.uint64(1)) & mask
        tab[i] = x
    return tab, mask, zero


@nb.njit(cache=True, nogil=True, **NO_REFCOUNT)
def _has(tab, mask, zero, x):
    if x == 0:
        return zero
    i = _slot(x, mask)
    while True:
        v = tab[i]
        if v == x:
            return True
        if v == 0:
            return False
        i = (i + np.uint64(1)) & mask


@nb.njit(cache=True, nogil=True)
def isin(a, keys):
    """``np.isin(a, keys)`` for uint64 arrays."""
    out = np.zeros(a.size, np.bool_)
    if keys.size == 0:
        return out
    tab, mask, zero = _set_of(keys)
    for i in range(a.size):
        out[i] = _has(tab, mask, zero, a[i])
    return out


@nb.njit(cache=True, nogil=True)
def rows_of_keys(sel, fwd, rev, keys):
    """`base.rows_of_keys`: the rows of ``sel`` whose ``fwd`` key, else whose ``rev`` key, is in
    ``keys``, and that key per row."""
    n = sel.size
    rows = np.empty(n, np.int64)
    rk = np.empty(n, np.uint64)
    m = 0
    if keys.size == 0:
        return rows[:0], rk[:0]
    tab, mask, zero = _set_of(keys)
    for i in range(n):
        if not sel[i]:
            continue
        if _has(tab, mask, zero, fwd[i]):
            rows[m] = i
            rk[m] = fwd[i]
            m += 1
        elif _has(tab, mask, zero, rev[i]):
            rows[m] = i
            rk[m] = rev[i]
            m += 1
    return rows[:m], rk[:m]


@nb.njit(cache=True, nogil=True, inline="always")
def _pair_key1(a, b, c):
    x = np.uint64(a) * _M1
    x ^= x >> np.uint64(29)
    x ^= np.uint64(b)
    x *= _M3
    x ^= x >> np.uint64(32)
    return x ^ ((np.uint64(c) + np.uint64(1)) * _M2)


@nb.njit(cache=True, nogil=True)
def pair_keys(src, dst, sport, dport):
    """(`pair_key(src, dst, dport)`, `pair_key(dst, src, sport)`) of every frame."""
    n = src.size
    fwd = np.empty(n, np.uint64)
    rev = np.empty(n, np.uint64)
    for i in range(n):
        fwd[i] = _pair_key1(src[i], dst[i], dport[i])
        rev[i] = _pair_key1(dst[i], src[i], sport[i])
    return fwd, rev


@nb.njit(cache=True, nogil=True)
def conn_keys(src, dst, sport, dport):
    """The key of every frame's TCP connection with its sender as the client, and with its receiver
    as the client."""
    n = src.size
    fwd = np.empty(n, np.uint64)
    rev = np.empty(n, np.uint64)
    for i in range(n):
        sp = np.uint64(sport[i])
        dp = np.uint64(dport[i])
        fwd[i] = _pair_key1(src[i], dst[i], (sp << np.uint64(16)) | dp)
        rev[i] = _pair_key1(dst[i], src[i], (dp << np.uint64(16)) | sp)
    return fwd, rev


@nb.njit(cache=True, nogil=True)
def distinct_pairs(a, b):
    """The distinct (a[i], b[i]) in the order of their first occurrence (the rows of their first
    occurrence): a set built from them iterates as one built from every pair."""
    n = a.size
    m = table_size(n)
    mask = np.uint64(m - 1)
    slot = np.full(m, -1, np.int64)
    first = np.empty(n, np.int64)
    u = 0
    for i in range(n):
        x = np.uint64(a[i])
        y = np.uint64(b[i])
        h = _slot(x ^ (y * _M2), mask)
        while True:
            j = slot[h]
            if j < 0:
                slot[h] = i
                first[u] = i
                u += 1
                break
            if np.uint64(a[j]) == x and np.uint64(b[j]) == y:
                break
            h = (h + np.uint64(1)) & mask
    return first[:u]


def warm_up() -> None:
    k = np.array([0, 3, 5], np.uint64)
    isin(k, k[1:])
    rows_of_keys(np.ones(3, np.bool_), k, k, k[1:])
    p = np.array([1, 2, 3], np.uint16)
    pair_keys(k, k, p, p)
    conn_keys(k, k, p, p)
    distinct_pairs(k, k)
