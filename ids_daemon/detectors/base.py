"""The skeleton every detector copies: `Detector.process(batch, verdict) -> list[Finding]`.

A detector looks at one `PacketBatch` (numpy columns, in capture order), writes the
index of its class into ``verdict`` for the frames it flags (``verdict`` is shared by
all detectors; -1 means nobody flagged the frame) and returns the findings that are
new in this batch. Its per-host state lives in bounded `LRU` tables whose evictions
are counted, so a flood of spoofed sources cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ..capture.batch import PacketBatch
from ..model.classes import FAMILY_OF
from . import _keys_kernel as _kk
from . import _scan_kernel as _sk

# Classes the detectors can report (index = value in DetectorResult.frame_class).
DETECTOR_CLASSES: tuple[str, ...] = (
    "MITM-ArpSpoofing", "DNS_Spoofing", "Recon-PortScan", "Recon-PingSweep", "Recon-HostDiscovery",
    # appended (earlier indices stay): the web and brute-force detectors
    "SqlInjection", "XSS", "CommandInjection", "VulnerabilityScan", "DictionaryBruteForce",
    # the flood detector
    "DDoS-SYN_Flood", "DDoS-UDP_Flood", "DDoS-ICMP_Flood",
    # the OS-fingerprinting detector
    "Recon-OSScan",
    # floods from one or few hosts (volume), TCP flag and fragment floods, HTTP request floods,
    # slow HTTP and reflection
    "DoS-SYN_Flood", "DoS-UDP_Flood", "DoS-TCP_Flood", "DoS-HTTP_Flood",
    "DDoS-TCP_Flood", "DDoS-PSHACK_Flood", "DDoS-RSTFINFlood", "DDoS-ACK_Fragmentation",
    "DDoS-UDP_Fragmentation", "DDoS-ICMP_Fragmentation", "DDoS-HTTP_Flood", "DDoS-SlowLoris",
    # remote shells (the backdoor detector)
    "Backdoor_Malware",
)
CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(DETECTOR_CLASSES)}


@dataclass
class Finding:
    """One protocol fact a detector established (one prediction once published)."""

    detector: str  # "arp", "dns", "scan", "web", "bruteforce", "shell", "flood", ... (`DetectorSet`)
    cls: str  # a CICIoT2023 class name (one of DETECTOR_CLASSES)
    first_ts: float
    last_ts: float
    packets: int  # frames of this finding flagged in the batch that reported it
    attacker: str  # IP or MAC of the party the evidence points at ("" for a crowd: a flood's sources)
    victim: str | None
    protocol: str  # "arp", "udp", "tcp", "icmp"
    evidence: str
    suppressed: int = 0  # repeats folded into this one by the publisher's rate limit

    @property
    def family(self) -> str:
        return FAMILY_OF.get(self.cls, self.cls)


class Detector(Protocol):
    """What `DetectorSet` runs on each batch."""

    name: str
    counters: dict[str, int]

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]: ...


class LRU(OrderedDict):
    """A dict with a hard cap: inserting beyond it evicts the least recently touched
    entry and counts it in ``counters[counter]``."""

    def __init__(self, cap: int, counters: dict[str, int], counter: str):
        super().__init__()
        self.cap = cap
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    def touch(self, key: Any, value: Any) -> None:
        if key in self:
            self.move_to_end(key)
        self[key] = value
        while len(self) > self.cap:
            self.popitem(last=False)
            self.counters[self.counter] += 1

    def get_touch(self, key: Any, default: Any = None) -> Any:
        v = self.get(key, default)
        if key in self:
            self.move_to_end(key)
        return v

    def touch_new(self, key: Any, factory: Callable[[], Any]) -> Any:
        """The entry for ``key`` (touched), inserting ``factory()`` when there is none."""
        v = self.get_touch(key)
        if v is None:
            v = factory()
            self.touch(key, v)
        return v


class Table:
    """A bounded LRU table of compiled state (`_scan_kernel.new_table`: ``values`` int64/float64
    columns per node, keys and LRU order in arrays) for a detector's kernels to read and update in
    place; evictions are counted in ``counters[counter]``, as `LRU` counts them, once `sync` has
    moved the kernel's count there."""

    def __init__(self, cap: int, counters: dict[str, int], counter: str, values: int):
        self.t = _sk.new_table(cap, values)
        self.counters = counters
        self.counter = counter
        counters.setdefault(counter, 0)

    def __len__(self) -> int:
        return int(self.t[0][_sk.M_SIZE])

    def sync(self) -> None:
        """Move the evictions counted by the kernel into the counters."""
        meta = self.t[0]
        if meta[_sk.M_EVICT]:
            self.counters[self.counter] += int(meta[_sk.M_EVICT])
            meta[_sk.M_EVICT] = 0


_WARMED: set[Callable[[], None]] = set()


def warm_once(warm: Callable[[], None]) -> None:
    """Run ``warm`` (a module's numba kernels loaded or compiled on a tiny input) once per
    process, so a detector's first batch does not pay for it (marked before it runs: a warm-up
    may build the detector that calls this)."""
    if warm not in _WARMED:
        _WARMED.add(warm)
        warm()


def mark(verdict: np.ndarray, mask: np.ndarray, cls: str) -> int:
    """Flag the frames of ``mask`` not yet flagged by an earlier detector; returns how
    many frames ``mask`` holds."""
    verdict[mask & (verdict < 0)] = CLASS_INDEX[cls]
    return int(np.count_nonzero(mask))


def first_ts(batch: PacketBatch, mask: np.ndarray) -> tuple[float, float]:
    ts = batch.ts[mask]
    return (float(ts.min()), float(ts.max())) if ts.size else (0.0, 0.0)



# ---- (client, server, server port) holds shared by the web and brute-force detectors ----------
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)


_M3 = np.uint64(0x94D049BB133111EB)


def pair_key(client: np.ndarray, server: np.ndarray, port: np.ndarray) -> np.ndarray:
    """64-bit key of (client, server, server port), addresses as `address_ids` (a multiplicative
    mix: collisions are negligible)."""
    with np.errstate(over="ignore"):
        a = client.astype(np.uint64) * _M1
        a ^= a >> np.uint64(29)
        a ^= server.astype(np.uint64)
        a *= _M3
        a ^= a >> np.uint64(32)
        return a ^ ((port.astype(np.uint64) + np.uint64(1)) * _M2)


def tcp_pairs(b: PacketBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TCP mask, IPv4 or IPv6, key if the frame goes client→server, key if it goes server→client),
    built once per batch (cached on it, as `address_ids`: the web, brute-force and slow-HTTP
    detectors all ask)."""
    from ..capture.batch import address_ids

    got = b.__dict__.get("_tcp_pairs")
    if got is None:
        src, dst = address_ids(b)
        got = b.__dict__["_tcp_pairs"] = (tcp_mask(b), *_kk.pair_keys(src, dst, b.sport, b.dport))
    return got


def tcp_mask(b: PacketBatch) -> np.ndarray:
    """The TCP frames (IPv4 or IPv6) of the batch, computed once per batch (cached on it)."""
    from ..capture.batch import STATUS_OK

    got = b.__dict__.get("_tcp_mask")
    if got is None:
        got = b.__dict__["_tcp_mask"] = (b.status == STATUS_OK) & (b.ip_version > 0) & b.l4_ok & (b.proto == 6)
    return got


def conn_pairs(b: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
    """(key of each frame's TCP connection with its sender as the client, with its receiver as the
    client: `_keys_kernel.conn_keys`), built once per batch (cached on it)."""
    from ..capture.batch import address_ids

    got = b.__dict__.get("_conn_pairs")
    if got is None:
        src, dst = address_ids(b)
        got = b.__dict__["_conn_pairs"] = _kk.conn_keys(src, dst, b.sport, b.dport)
    return got


def isin_keys(a: np.ndarray, keys: Any) -> np.ndarray:
    """``np.isin(a, keys)`` for 64-bit keys or address ids (a compiled hash set, no sort)."""
    return _kk.isin(np.ascontiguousarray(a, dtype=np.uint64), np.ascontiguousarray(keys, dtype=np.uint64))


def held_keys(held: Any) -> np.ndarray:
    """The keys of a dict of 64-bit keys as an array."""
    return np.fromiter(held.keys(), dtype=np.uint64, count=len(held))


def rows_of_keys(mask: np.ndarray, fwd: np.ndarray, rev: np.ndarray, held: Any) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``mask`` whose key in either direction (``fwd``, else ``rev``) is one of
    ``held``'s keys, and that key per row: the frames of held pairs or connections, both ways."""
    return _kk.rows_of_keys(mask, fwd, rev, held_keys(held))


# A receiver's ACK of a segment lands at the segment's end, or a few segments later when the sender
# sent more; a blind spoofer's segment is answered by a duplicate ACK at an arbitrary distance:
# 64 KiB leaves it 1 chance in 65,536.
ACK_WINDOW = 1 << 16
_M32 = 0xFFFFFFFF


def acknowledged(b: PacketBatch, pending: "LRU", ack_rows: np.ndarray, ack_keys: np.ndarray, batch_no: int,
                 confirm_s: float) -> list[tuple[int, tuple, float]]:
    """The pending segments whose receiver acknowledged them in this batch, removed from
    ``pending`` and returned as (key, entry, time of the ACK); then the entries that waited more
    than ``confirm_s`` dropped. ``pending`` maps a connection key, as the receiver sends on it,
    to (batch number, row, ts, sequence number after the segment, ...); ``ack_rows`` are the
    batch's ACK segments (no reset) and ``ack_keys`` their connection keys as their sender's. An
    ACK counts after the segment (a later row, or a later batch), within ``confirm_s``, when it
    covers the segment's end by less than `ACK_WINDOW` (the web and backdoor detectors: only a
    sender that holds the connection gets its bytes acknowledged)."""
    out = []
    for j, key, ack, t in zip(ack_rows.tolist(), ack_keys.tolist(), b.tcp_ack[ack_rows].tolist(),
                              b.ts[ack_rows].tolist()):
        p = pending.get(key)
        if p is None or (p[0] == batch_no and j <= p[1]) or t > p[2] + confirm_s:
            continue
        if (ack - p[3]) & _M32 < ACK_WINDOW:
            del pending[key]
            out.append((key, p, t))
    end = float(b.ts[-1])
    while pending:
        key, p = next(iter(pending.items()))
        if end - p[2] <= confirm_s:
            break
        del pending[key]
    return out


# A pair's frames this long before the one that started its hold are flagged with it when they
# are in the same batch: the handshake of the connection that carried the attack request (a
# third of a short web attack's packets), a fingerprinting run's first pings. Frames of earlier
# batches have gone to the meter already (live batches span up to capture.block_timeout_ms),
# as the flood detector's bucket start does.
LOOKBACK_S = 5.0


class HeldPairs:
    """(client, server, port) pairs flagged until ``hold_s`` after their last flagged frame.

    ``hold(key, ...)`` starts or renews a pair; ``flag(batch, ...)`` marks every frame of
    the caller's mask (TCP for the web and brute-force detectors) between a held client
    and its server port (both directions) from ``LOOKBACK_S`` before the frame that started
    the hold on, and returns one `Finding` per pair seen in the batch. Clients and servers are address ids
    (`capture.batch.address_ids`); a port of -1 means the pair is two hosts, whatever the
    ports (the keys are then built with port 0)."""

    def __init__(self, detector: str, hold_s: float, cap: int, counters: dict[str, int], protocol: str = "tcp"):
        self.detector = detector
        self.hold_s = hold_s
        self.protocol = protocol
        # key -> [until, cls, client, server, port, evidence]
        self.active = LRU(cap, counters, "pair_evictions")
        self.starts: dict[int, int] = {}  # pairs started in the current batch -> first frame
        warm_once(_kk.warm_up)

    def hold(self, key: int, at: int, ts: float, cls: str, client: int, server: int, port: int,
             evidence: str) -> list:
        st = self.active.get_touch(key)
        if st is None or st[0] < ts:
            st = [ts + self.hold_s, cls, client, server, port, evidence]
            self.active.touch(key, st)
            self.starts[key] = at
        else:
            st[0] = max(st[0], ts + self.hold_s)
        return st

    def flag(self, b: PacketBatch, verdict: np.ndarray, tcp: np.ndarray, fwd: np.ndarray,
             rev: np.ndarray) -> list[Finding]:
        from ..capture.batch import address_name

        starts, self.starts = self.starts, {}
        if not self.active:
            return []
        t0 = float(b.ts[0])
        for k in [k for k, v in self.active.items() if v[0] < t0 and k not in starts]:
            del self.active[k]
        if not self.active:
            return []
        rows, rk = rows_of_keys(tcp, fwd, rev, self.active)
        if not rows.size:
            return []
        findings = []
        for k in np.unique(rk).tolist():
            st = self.active[k]
            r = rows[rk == k]
            s0 = starts.get(k)
            lo = 0 if s0 is None else int(np.searchsorted(b.ts, b.ts[s0] - LOOKBACK_S))
            r = r[(r >= lo) & (b.ts[r] <= st[0])]
            if not r.size:
                continue
            m = np.zeros(len(b), dtype=bool)
            m[r] = True
            mark(verdict, m, st[1])
            last = float(b.ts[r].max())
            st[0] = max(st[0], last + self.hold_s)
            findings.append(Finding(
                detector=self.detector, cls=st[1], first_ts=float(b.ts[r].min()), last_ts=last, packets=int(r.size),
                attacker=address_name(st[2]), victim=address_name(st[3]), protocol=self.protocol,
                evidence=(f"{_ep(st[2])} -> {_ep(st[3])}:{st[4]}: {st[5]}" if st[4] >= 0
                          else f"{address_name(st[2])} -> {address_name(st[3])}: {st[5]}")))
        return findings


def _ep(aid: int) -> str:
    """An address as it comes before ``:port``: IPv6 in brackets."""
    from ..capture.batch import address_name

    name = address_name(aid)
    return f"[{name}]" if ":" in name else name
