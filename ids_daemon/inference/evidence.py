"""Evidence for a model prediction: one sentence of the last window's salient facts, in
protocol terms, built from the window's CICIoT2023 columns with their released meaning
(docs/features.md, docs/evidence.md).

A window is the mean of N per-packet rows of one key, so:

- a flag column (``syn_flag_number`` ...) is the share of the window's packets with that
  TCP flag, and TCP/UDP/ICMP/ARP the share of packets of that kind;
- ``Tot size`` is the mean frame length (Ethernet header + IP total length), so the
  window's bytes are ``Tot size`` x packets;
- ``Rate`` is the mean of the flow's packets-so-far / flow duration (TCP/UDP only, 0 at
  a flow's start and carried otherwise); where it is 0 the sentence uses the window's own
  span (packets over last_ts - first_ts) instead.

The ``*_count`` columns are not used: they are running per-flow counters averaged over
the window, and their names are swapped in the released extractor (``ack_count`` counts
FIN...), which would mislead an analyst more than help.

Windows carry no distinct-peer or distinct-port count (a pool's window is the mean of its
packets' rows), so the sentence never claims one.
"""

from __future__ import annotations

import numpy as np

from ..features.ciciot import INDEX
from ..features.window import KIND_POOL, proto_name

# (name in the sentence, column): the five flags an analyst reads
_FLAGS = (("SYN", "syn_flag_number"), ("ACK", "ack_flag_number"), ("RST", "rst_flag_number"),
          ("FIN", "fin_flag_number"), ("PSH", "psh_flag_number"))
_KINDS = (("TCP", "TCP"), ("UDP", "UDP"), ("ICMP", "ICMP"), ("ARP", "ARP"))
# service columns (port conventions of the released extractor: IRC is port 21)
_SERVICES = (("HTTP", "HTTP"), ("HTTPS", "HTTPS"), ("DNS", "DNS"), ("SSH", "SSH"), ("Telnet", "Telnet"),
             ("SMTP", "SMTP"), ("port 21", "IRC"), ("DHCP", "DHCP"))

_FLAG_IDX = np.array([INDEX[c] for _, c in _FLAGS])
_KIND_IDX = np.array([INDEX[c] for _, c in _KINDS])
_SVC_IDX = np.array([INDEX[c] for _, c in _SERVICES])
_FLAG_NAMES = [n for n, _ in _FLAGS]
_KIND_NAMES = [n for n, _ in _KINDS]
_SVC_NAMES = [n for n, _ in _SERVICES]
_RATE, _SIZE = INDEX["Rate"], INDEX["Tot size"]

_CACHE: dict[bytes, str] = {}  # protocol and flag parts
_NUMS: dict[object, str] = {}  # packet count, rate and (size, packets) parts
_CACHE_MAX = 1 << 16


def _num(v: float) -> str:
    """4,210 / 12.5 / 0.25: thousands separated, a decimal only for small values."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}".removesuffix(".0")
    return f"{v:.2g}"


def _pct(share: float) -> str:
    p = share * 100
    return f"{p:.0f} %" if p >= 1 else "<1 %"


def _protocol(kinds: tuple, svc: tuple, proto: int, kind: int) -> str:
    named = [(s, n) for s, n in zip(kinds, _KIND_NAMES) if s > 0]
    if not named:
        text = proto_name(proto).upper() if proto else "IP"
    elif len(named) == 1 or max(named)[0] >= 0.995:
        text = max(named)[1]
    else:
        named.sort(reverse=True)
        text = " + ".join(f"{n} {_pct(s)}" for s, n in named[:3])
    best = max(zip(svc, _SVC_NAMES))
    if best[0] >= 0.5:
        text += f" ({best[1]})"
    if kind == KIND_POOL:
        text += " towards one host (short flows pooled)"
    return text


def _flag_text(flags: tuple) -> str:
    on = sorted(((s, f) for s, f in zip(flags, _FLAG_NAMES) if s > 0), reverse=True)[:3]
    parts = [f"{f} in {_pct(s)}" + (" of them" if j == 0 else "") for j, (s, f) in enumerate(on)]
    if not on:
        parts.append("no SYN, ACK, RST, FIN or PSH")
    elif flags[1] == 0:
        parts.append("no ACK")
    return ", " + ", ".join(parts)


def _row_keys(a: np.ndarray) -> list[bytes]:
    """One bytes key per row of a small integer matrix (dictionary lookups, no tuples)."""
    a = np.ascontiguousarray(a, dtype=np.int32)
    return a.view(np.dtype((np.void, 4 * a.shape[1]))).ravel().tolist()


def window_sentences(w) -> list[str]:
    """One sentence per window of ``w`` (a WindowBatch): e.g. "TCP, 10 packets at
    4,210/s, 54 bytes on average (540 in all), SYN in 100 % of them, no ACK"."""
    n = len(w)
    if not n:
        return []
    f = w.features
    span = w.last_ts - w.first_ts
    pk = w.packets.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(span > 0, (pk - 1) / span, 0.0)
    rate = f[:, _RATE]
    rate = _round3(np.where((rate > 0) & np.isfinite(rate), rate, own))
    size = _round3(f[:, _SIZE])
    # shares to 1 %: the protocol part and the flag part take few distinct values, each
    # made once (cached) whatever the rates and sizes around them
    kinds = np.round(np.nan_to_num(f[:, _KIND_IDX]) * 100).astype(np.int32)
    svc = np.round(np.nan_to_num(f[:, _SVC_IDX]) * 100).astype(np.int32)
    flags = np.round(np.nan_to_num(f[:, _FLAG_IDX]) * 100).astype(np.int32)
    pool = (w.kind == KIND_POOL).astype(np.int32)
    pkeys = _row_keys(np.column_stack([kinds, svc, w.proto.astype(np.int32), pool]))
    tcp = kinds[:, 0] > 0
    fkeys = _row_keys(flags)
    cache, nums = _CACHE, _NUMS
    if len(cache) > _CACHE_MAX:
        cache.clear()
    if len(nums) > _CACHE_MAX:
        nums.clear()
    out = []
    rate_l, size_l, packets, tcp_l = rate.tolist(), size.tolist(), w.packets.tolist(), tcp.tolist()
    for i in range(n):
        pt = cache.get(pkeys[i])
        if pt is None:
            k = np.frombuffer(pkeys[i], dtype=np.int32)
            pt = cache[pkeys[i]] = _protocol(tuple(k[:4] / 100), tuple(k[4:4 + len(_SVC_NAMES)] / 100),
                                             int(k[-2]), KIND_POOL if k[-1] else 0)
        p, r, sz = packets[i], rate_l[i], size_l[i]
        # rates and sizes repeat (3 digits) even where the windows do not: cached apart
        rt = nums.get(-r - 1.0)  # rates apart from packet counts (both numbers)
        if rt is None:
            rt = nums[-r - 1.0] = f" at {_num(r)}/s" if r > 0 else ""
        pre = nums.get(p)
        if pre is None:
            pre = nums[p] = f", {p:,} packet" + ("s" if p != 1 else "")
        post = nums.get((sz, p))
        if post is None:
            post = nums[(sz, p)] = f", {_num(sz)} bytes on average ({_num(sz * p)} in all)" if sz > 0 else ""
        text = pt + pre + rt + post
        if tcp_l[i]:
            ft = cache.get(b"f" + fkeys[i])
            if ft is None:
                ft = cache[b"f" + fkeys[i]] = _flag_text(tuple(np.frombuffer(fkeys[i], dtype=np.int32) / 100))
            text += ft
        out.append(text)
    return out


def _round3(v: np.ndarray) -> np.ndarray:
    """Three significant digits (what the sentence shows)."""
    v = np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mag = np.floor(np.log10(np.maximum(np.abs(v), 1e-12)))
    q = 10.0 ** (mag - 2)
    return np.where(v != 0, np.round(v / q) * q, 0.0)
