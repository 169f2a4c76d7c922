"""The compiled key helpers the detectors share give exactly what the numpy code they replace gave."""

from __future__ import annotations

import numpy as np

from ids_daemon.detectors import _keys_kernel as kk
from ids_daemon.detectors._scan_kernel import argsort_keys
from ids_daemon.detectors.base import pair_key


def _keys(rng: np.random.Generator, n: int, distinct: int) -> np.ndarray:
    """Keys with repeats, zeros and values above 2**63 (IPv6 address ids have the top bit set)."""
    pool = rng.integers(0, 2**64 - 1, distinct, dtype=np.uint64, endpoint=True)
    pool[0] = 0
    return pool[rng.integers(0, distinct, n)]


def test_isin_and_rows_of_keys_match_numpy() -> None:
    rng = np.random.default_rng(7)
    for n, m in ((0, 5), (5, 0), (1000, 3), (5000, 700), (20000, 20000)):
        a, keys = _keys(rng, n, 300), _keys(rng, m, 300)
        assert np.array_equal(kk.isin(a, keys), np.isin(a, keys))
        rev = _keys(rng, n, 300)
        sel = rng.random(n) < 0.7
        rows, rk = kk.rows_of_keys(sel, a, rev, keys)
        in_f = sel & np.isin(a, keys)
        in_r = sel & ~in_f & np.isin(rev, keys)
        want = np.flatnonzero(in_f | in_r)
        assert np.array_equal(rows, want)
        assert np.array_equal(rk, np.where(in_f[want], a[want], rev[want]))


def test_pair_and_connection_keys_match_pair_key() -> None:
    rng = np.random.default_rng(8)
    src, dst = _keys(rng, 4000, 50), _keys(rng, 4000, 50)
    sport = rng.integers(0, 1 << 16, 4000).astype(np.uint16)
    dport = rng.integers(0, 1 << 16, 4000).astype(np.uint16)
    fwd, rev = kk.pair_keys(src, dst, sport, dport)
    assert np.array_equal(fwd, pair_key(src, dst, dport)) and np.array_equal(rev, pair_key(dst, src, sport))
    cf, cr = kk.conn_keys(src, dst, sport, dport)
    ports = (sport.astype(np.uint64) << np.uint64(16)) | dport.astype(np.uint64)
    back = (dport.astype(np.uint64) << np.uint64(16)) | sport.astype(np.uint64)
    assert np.array_equal(cf, pair_key(src, dst, ports)) and np.array_equal(cr, pair_key(dst, src, back))


def test_distinct_pairs_keep_the_order_of_first_occurrence() -> None:
    rng = np.random.default_rng(9)
    a, b = _keys(rng, 3000, 20), _keys(rng, 3000, 20)
    first = kk.distinct_pairs(a, b)
    seen: dict[tuple[int, int], int] = {}
    for i, p in enumerate(zip(a.tolist(), b.tolist())):
        seen.setdefault(p, i)
    assert first.tolist() == list(seen.values())


def test_radix_argsort_is_numpy_stable_argsort() -> None:
    rng = np.random.default_rng(10)
    for n in (0, 1, 63, 64, 1000, 40000):
        for distinct in (5, 1 << 20):
            a = _keys(rng, n, distinct) if n else np.zeros(0, np.uint64)
            assert np.array_equal(argsort_keys(a), np.argsort(a, kind="stable"))
    a = np.full(500, 7 << 40, np.uint64)  # every digit shared: all passes skipped
    assert np.array_equal(argsort_keys(a), np.arange(500))
