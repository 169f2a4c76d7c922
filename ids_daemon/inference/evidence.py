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

from typing import Any, Callable, Iterator

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
# the service columns by name, largest first: argmax's first of equal shares is then the
# one max() over (share, name) pairs picks
_SVC_BY_NAME = np.array(sorted(range(len(_SVC_NAMES)), key=lambda j: _SVC_NAMES[j], reverse=True))
# every share the sentence shows, one gather: kinds, services (by name), flags
_SHARE_IDX = np.concatenate([_KIND_IDX, _SVC_IDX[_SVC_BY_NAME], _FLAG_IDX])
_NK, _NS = len(_KIND_IDX), len(_SVC_IDX)
_CACHE_MAX = 1 << 16  # texts a part keeps beyond its table


def _num(v: float) -> str:
    """4,210 / 12.5 / 0.25: thousands separated, a decimal only for small values."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}".removesuffix(".0")
    return f"{v:.2g}"


def _three_digit(mags: range) -> list[float]:
    """Every three-digit number of the decades 10^mag (``mags``), each as the very double
    `_round3` makes of it (m x 10^(mag - 2), the same numpy operations; were one to
    differ in its last bit, its windows would only miss the table and be formatted)."""
    q = 10.0 ** (np.array(mags, dtype=np.float64) - 2)
    return (np.arange(100.0, 1001.0)[:, None] * q[None, :]).ravel().tolist()


def _pct(p: int) -> str:
    """A share in whole percent."""
    return f"{p} %" if p >= 1 else "<1 %"


def _protocol(kinds: list[int], service: int, proto: int, pool: bool) -> str:
    """The protocol part from the kinds' shares (in %), the service named (an index of
    _SVC_NAMES, or none), the key's IP protocol and whether it is a pool."""
    named = [(s, n) for s, n in zip(kinds, _KIND_NAMES) if s > 0]
    if not named:
        text = proto_name(proto).upper() if proto else "IP"
    elif len(named) == 1 or max(named)[0] >= 99.5:
        text = max(named)[1]
    else:
        named.sort(reverse=True)
        text = " + ".join(f"{n} {_pct(s)}" for s, n in named[:3])
    if service < len(_SVC_NAMES):
        text += f" ({_SVC_NAMES[service]})"
    if pool:
        text += " towards one host (short flows pooled)"
    return text


def _flag_text(flags: list[int]) -> str:
    """The flag part from the five flags' shares (in %)."""
    on = sorted(((s, f) for s, f in zip(flags, _FLAG_NAMES) if s > 0), reverse=True)[:3]
    if not on:
        return ", no SYN, ACK, RST, FIN or PSH"
    text = f", {on[0][1]} in {_pct(on[0][0])} of them" + "".join(f", {f} in {_pct(s)}" for s, f in on[1:])
    return text + ", no ACK" if flags[1] == 0 else text


class _Texts(dict):
    """The texts of one part of the sentence by the value(s) they show, each made once
    (``make``). Numbers are shown to three digits: a part made of one number has its
    texts for the usual decades made up front (``table``), not as windows bring them."""

    def __init__(self, make: Callable[[Any], str], table: list | tuple = ()):
        super().__init__()
        self.make = make
        self.table = {k: make(k) for k in table}
        self.update(self.table)

    def __missing__(self, key: Any) -> str:
        text = self[key] = self.make(key)
        return text

    def reset(self) -> None:
        """Back to the table alone."""
        self.clear()
        self.update(self.table)

    def of(self, keys: list) -> Iterator[str]:
        """The text of each key: one look-up per key in C (``map``; a Python frame only
        for a key not seen yet)."""
        if len(self) > len(self.table) + _CACHE_MAX:
            self.reset()  # bounded: start over rather than grow
        return map(self.__getitem__, keys)


def _pack(cols: np.ndarray, bits: int) -> np.ndarray:
    """Rows of small non-negative integers as one int64 code each, ``bits`` a column."""
    return (cols << np.arange(0, bits * cols.shape[1], bits, dtype=np.int64)).sum(axis=1)


def _unpack(code: int, bits: int, n: int) -> list[int]:
    return [(code >> (bits * j)) & ((1 << bits) - 1) for j in range(n)]


def _protocol_of(code: int) -> str:
    """The protocol part of a code: the kinds' shares (7 bits each), the service named (4
    bits, _NS for none), pool (1 bit), the IP protocol."""
    return _protocol(_unpack(code, 7, _NK), (code >> 7 * _NK) & 15, code >> (7 * _NK + 5),
                     bool((code >> (7 * _NK + 4)) & 1))


def _packets_of(p: int) -> str:
    return f", {p:,} packet" + ("s" if p != 1 else "")


def _rate_of(r: float) -> str:
    return f" at {_num(r)}/s" if r > 0 else ""


def _size_of(sz: float) -> str:
    return f", {_num(sz)} bytes on average (" if sz > 0 else ""


def _total_of(t: float) -> str:
    """What the size part's parenthesis says (-1: no size, no parenthesis)."""
    return f"{_num(t)} in all)" if t >= 0 else ""


def _flags_of(code: int) -> str:
    """The flag part of a code (7 bits a flag; -1: not TCP, no flag part)."""
    return _flag_text(_unpack(code, 7, len(_FLAG_NAMES))) if code >= 0 else ""


# in the sentence's order: protocol, packets, rate, size, total, flags
_PARTS = (_Texts(_protocol_of), _Texts(_packets_of), _Texts(_rate_of, _three_digit(range(-3, 9)) + [0.0]),
          _Texts(_size_of, _three_digit(range(1, 5)) + [0.0]), _Texts(_total_of, _three_digit(range(1, 8)) + [-1.0]),
          _Texts(_flags_of, [-1]))


def clear_caches() -> None:
    """Forget every part made for a window (a benchmark's cold start); the tables stay."""
    for part in _PARTS:
        part.reset()


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
    rate, size = _round3(np.stack([np.where((rate > 0) & np.isfinite(rate), rate, own), f[:, _SIZE]]))
    # shares in whole percent (a share is a mean of 0/1 columns: the clip only keeps a
    # code's fields apart, and NaN is 0)
    pct = np.rint(np.minimum(np.fmax(f[:, _SHARE_IDX] * 100, 0.0), 100.0)).astype(np.int64)
    kinds, svc = pct[:, :_NK], pct[:, _NK:_NK + _NS]
    # the service named: the largest share when at least half the packets have it
    named = np.where(svc.max(axis=1) >= 50, _SVC_BY_NAME[svc.argmax(axis=1)], _NS)
    proto = (_pack(kinds, 7) | (named << 7 * _NK) | ((w.kind == KIND_POOL).astype(np.int64) << (7 * _NK + 4))
             | (w.proto.astype(np.int64) << (7 * _NK + 5)))
    flags = np.where(kinds[:, 0] > 0, _pack(pct[:, _NK + _NS:], 7), -1)
    # one key per part and window, its text looked up, the parts joined: C loops, not a
    # Python one
    keys = (proto.tolist(), w.packets.tolist(), rate.tolist(), size.tolist(),
            np.where(size > 0, size * pk, -1.0).tolist(), flags.tolist())
    return list(map("".join, zip(*(part.of(k) for part, k in zip(_PARTS, keys)))))


def _round3(v: np.ndarray) -> np.ndarray:
    """Three significant digits (what the sentence shows)."""
    v = np.asarray(v, dtype=np.float64)
    v = np.where(np.isfinite(v), v, 0.0)
    mag = np.floor(np.log10(np.maximum(np.abs(v), 1e-12)))
    q = 10.0 ** (mag - 2)
    return np.where(v != 0, np.round(v / q) * q, 0.0)
