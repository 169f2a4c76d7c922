"""`WindowBatch`: what the meter hands on — averaged CICIoT2023 rows and who they belong to.

The same type carries per-packet rows (``packets == 1``) when those are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..capture.batch import ip_strings
from .ciciot import COLUMNS

# key kinds
KIND_FLOW = 1  # a TCP/UDP flow (sorted endpoint pair)
KIND_POOL = 2  # short flows and flowless packets towards one served host prefix
KIND_CAPTURE = 3  # key_mode=capture: one key for everything

# why a window was closed
REASON_FULL = 0
REASON_IDLE = 1
REASON_ACTIVE = 2
REASON_EVICTED = 3
REASON_END = 4
REASON_NAMES = ("full", "idle", "active", "evicted", "end")

POOL_PROTO_ARP = 0x100  # pool "protocol" for ARP (no IP protocol number)

_PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 58: "icmpv6", 132: "sctp",
                POOL_PROTO_ARP: "arp"}


def proto_name(p: int) -> str:
    """Short protocol name for output (the number when unnamed)."""
    return _PROTO_NAMES.get(int(p), str(int(p)))


@dataclass
class WindowBatch:
    """Windows (or per-packet rows): the 46 feature columns plus identity columns."""

    features: np.ndarray  # (k, 46) float64, COLUMNS order
    first_ts: np.ndarray  # float64
    last_ts: np.ndarray  # float64
    packets: np.ndarray  # uint32, rows averaged into this window
    key: np.ndarray  # uint64, stable hash of the window key
    kind: np.ndarray  # uint8, KIND_*
    proto: np.ndarray  # uint16, IP protocol (POOL_PROTO_ARP for ARP)
    src: np.ndarray  # uint32 IPv4: flow initiator (0 for pools)
    dst: np.ndarray  # uint32 IPv4: flow responder (0 for pools)
    sport: np.ndarray  # uint16
    dport: np.ndarray  # uint16
    host: np.ndarray  # uint32 IPv4 pool host prefix (0 for flows)
    prefix: np.ndarray  # uint8, pool prefix length
    reason: np.ndarray  # uint8, REASON_*
    ip_version: np.ndarray  # uint8: 6 for IPv6 keys, 4 for the rest (IPv4, ARP, capture)
    src6: np.ndarray  # (k, 16) uint8 IPv6 flow initiator (zeros unless ip_version is 6)
    dst6: np.ndarray  # (k, 16) uint8 IPv6 flow responder
    host6: np.ndarray  # (k, 16) uint8 IPv6 pool host prefix

    _DTYPES = {"first_ts": np.float64, "last_ts": np.float64, "packets": np.uint32, "key": np.uint64,
               "kind": np.uint8, "proto": np.uint16, "src": np.uint32, "dst": np.uint32,
               "sport": np.uint16, "dport": np.uint16, "host": np.uint32, "prefix": np.uint8, "reason": np.uint8,
               "ip_version": np.uint8}

    @classmethod
    def empty(cls, n: int = 0) -> "WindowBatch":
        """A zeroed batch of ``n`` rows."""
        cols = {k: np.zeros(n, dtype=v) for k, v in cls._DTYPES.items()}
        six = {k: np.zeros((n, 16), dtype=np.uint8) for k in ("src6", "dst6", "host6")}
        return cls(features=np.zeros((n, len(COLUMNS)), dtype=np.float64), **cols, **six)

    def __len__(self) -> int:
        return int(self.first_ts.shape[0])

    def take(self, index: np.ndarray | slice) -> "WindowBatch":
        """Rows selected by a mask, an index array or a slice (copies)."""
        return WindowBatch(**{f.name: np.array(getattr(self, f.name)[index]) for f in fields(self)})

    @classmethod
    def concat(cls, batches: list["WindowBatch"]) -> "WindowBatch":
        """One batch with the rows of several, in order."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(cls)})

    def model_features(self) -> np.ndarray:
        """The 46 columns as the model reads them: for IPv6 windows, Protocol Type counts
        ICMPv6 (58) as ICMP (1). The column keeps the upper-layer protocol (58) in CSV rows,
        but the model was trained on IPv4, where an ICMP echo flood averages 1: without this
        an ICMPv6 flood looks like no protocol it knows and is called benign. Protocol Type
        is a window average and ``ICMP`` the window's share of ICMP packets, so subtracting
        57 per ICMPv6 packet is exact for mixed windows too. IPv4 windows are returned as
        they are (no copy)."""
        v6 = self.ip_version == 6
        if not v6.any():
            return self.features
        from .ciciot import INDEX

        f = self.features.copy()
        f[v6, INDEX["Protocol Type"]] -= 57.0 * f[v6, INDEX["ICMP"]]
        return f

    def endpoint_strings(self) -> tuple[np.ndarray, np.ndarray]:
        """(initiator, responder) address strings (IPv4 dotted, IPv6 as RFC 5952 writes it);
        for a pool the initiator is '' and the responder is its host prefix."""
        v6 = self.ip_version == 6
        flow = self.kind == KIND_FLOW
        src = ip_strings(self.src, self.src6, v6)
        dst = ip_strings(np.where(flow, self.dst, self.host), np.where(flow[:, None], self.dst6, self.host6), v6)
        return np.where(flow, src, ""), dst

    def key_strings(self) -> np.ndarray:
        """Readable window keys, e.g. ``tcp 10.0.0.1:5000-10.0.0.2:80`` or
        ``tcp [2001:db8::1]:5000-[2001:db8::2]:80`` (flow endpoints sorted, so both directions
        name the same key), ``pool udp 10.0.0.0/24``, ``pool tcp 2001:db8::/64`` or ``capture``."""
        out = np.empty(len(self), dtype=object)
        v6 = self.ip_version == 6
        a_first = (self.src < self.dst) | ((self.src == self.dst) & (self.sport <= self.dport))
        for i in np.flatnonzero(v6).tolist():  # IPv6 endpoints in byte order
            a_first[i] = (self.src6[i].tobytes(), self.sport[i]) <= (self.dst6[i].tobytes(), self.dport[i])
        src, dst = self.endpoint_strings()
        lo_s, hi_s = np.where(a_first, src, dst), np.where(a_first, dst, src)
        lo_pt = np.where(a_first, self.sport, self.dport)
        hi_pt = np.where(a_first, self.dport, self.sport)
        for i in range(len(self)):  # output formatting only, never on the metering path
            k = self.kind[i]
            p = proto_name(self.proto[i])
            if k == KIND_FLOW:
                if v6[i]:
                    out[i] = f"{p} [{lo_s[i]}]:{lo_pt[i]}-[{hi_s[i]}]:{hi_pt[i]}"
                else:
                    out[i] = f"{p} {lo_s[i]}:{lo_pt[i]}-{hi_s[i]}:{hi_pt[i]}"
            elif k == KIND_POOL:
                out[i] = f"pool {p} {dst[i]}/{self.prefix[i]}"
            else:
                out[i] = "capture"
        return out
