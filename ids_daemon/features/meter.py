"""The CICIoT2023 meter: `PacketBatch` → per-packet rows → windows of N rows per key.

Flow state, the per-key 20-packet buffer and partial windows live in fixed-size numpy
tables (see `_kernel`); keys expire on idle/active timeouts (packet time, or wall
clock via `advance`) and the least recently used key is evicted when the table is
full. A key that goes away always hands its partial window on first, so no packet's
row is lost. How keys are chosen is documented in docs/meter.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..capture.batch import ETH_P_ARP, MALFORMED_REASONS, STATUS_MALFORMED, STATUS_OK, STATUS_OTHER, PacketBatch
from ..config import MeterConfig
from . import _kernel as K
from .window import WindowBatch


@dataclass
class MeterCounters:
    """Everything the meter counted; exported as metrics and printed in summaries."""

    frames: int = 0  # frames handed to the meter
    packets: int = 0  # IPv4, IPv6 and ARP packets metered (one row each)
    packets_ipv6: int = 0  # of which IPv6
    rows: int = 0
    windows: int = 0
    partial_windows: int = 0  # windows closed before N rows (timeout, eviction, end)
    skipped: int = 0  # well-formed frames that are neither IP nor ARP (LLDP, STP, ...)
    skipped_by_kind: dict[str, int] = field(default_factory=dict)  # skipped frames by link-layer protocol
    malformed: int = 0
    malformed_by_reason: dict[str, int] = field(default_factory=dict)
    first_malformed: str = ""  # where the first malformed frame was, for the one-line warning
    l4_incomplete: int = 0  # TCP/UDP first fragments whose header was cut short
    flows_created: int = 0
    pools_created: int = 0
    promoted: int = 0  # flows that reached promote_after packets and got their own windows
    evicted: int = 0  # keys pushed out by the max_flows cap (their partial windows were sent)
    evicted_established: int = 0  # of which flows past their first packet (table too small?)
    expired_idle: int = 0
    expired_active: int = 0
    keys_tracked: int = 0

    def skipped_text(self) -> str:
        """``N skipped (LLDP 3, STP 2), M malformed``: what the meter did not meter, by kind
        (for the summary lines of features, replay and run)."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_by_kind.items(), key=lambda kv: -kv[1]))
        return f"{self.skipped} skipped" + (f" ({kinds})" if kinds else "") + f", {self.malformed} malformed"


# Names of the link-layer protocols a gateway sees besides IP and ARP (skipped frames).
_ETHERTYPE_NAMES = {
    0x0000: "802.3/LLC (STP, ...)", 0x8035: "RARP", 0x8809: "LACP/slow protocols", 0x888E: "EAPOL",
    0x88CC: "LLDP", 0x8863: "PPPoE discovery", 0x8864: "PPPoE session", 0x88F7: "PTP", 0x893A: "IEEE 1905",
    0x88E5: "MACsec", 0x8847: "MPLS", 0x8848: "MPLS", 0x9000: "Ethernet loopback", 0x88B5: "local experimental",
    0x88B6: "local experimental", 0x22F0: "AVTP", 0x8892: "PROFINET", 0x88A4: "EtherCAT",
}


_IPV6_CAPTURE = "IPv6, key_mode capture"  # skipped as the dataset's extractor did


def ethertype_name(et: int) -> str:
    """A short name for a skipped frame's link-layer protocol."""
    return _ETHERTYPE_NAMES.get(int(et), f"ethertype 0x{int(et):04x}")


@dataclass
class MeterOutput:
    """What one call to the meter produced."""

    windows: WindowBatch
    rows: WindowBatch | None = None  # per-packet rows, when the meter was asked for them


class Meter:
    """Turns packet batches into CICIoT2023 windows (and, optionally, per-packet rows)."""

    def __init__(self, config: MeterConfig | None = None, per_packet: bool = False):
        self.config = config or MeterConfig()
        self.per_packet = per_packet
        self._st = K.allocate(self.config.max_flows, populate=self.config.prealloc)
        c = self.config
        prefix_mask = (0xFFFFFFFF << (32 - c.pool_prefix)) & 0xFFFFFFFF if c.pool_prefix else 0
        p = np.zeros(K.NP_, dtype=np.float64)
        p[K.P_WINDOW] = c.window
        p[K.P_PROMOTE] = c.promote
        p[K.P_PREFIX_MASK] = prefix_mask
        p[K.P_PREFIX_LEN] = c.pool_prefix
        p[K.P_IDLE] = c.idle_timeout
        p[K.P_ACTIVE] = c.active_timeout
        p[K.P_SCAN] = c.scan_interval
        p[K.P_CAPTURE] = 1.0 if c.key_mode == "capture" else 0.0
        self._capture_mode = c.key_mode == "capture"
        p[K.P_PER_PACKET] = 1.0 if per_packet else 0.0
        p[K.P_PREFIX6] = c.pool_prefix6
        self._params = p
        self._counters = MeterCounters()
        self._out_cap = 0
        self._wf, self._wi = K.allocate_out(0)
        self._empty_pp = K.allocate_out(0)

    # ---- public API ------------------------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        """Bytes held by the key table (allocated up front, so this is the bound)."""
        return sum(a.nbytes for a in self._st.values())

    @property
    def counters(self) -> MeterCounters:
        """Current counters (a live object: read, don't keep)."""
        cnt = self._st["cnt"]
        c = self._counters
        c.rows = int(cnt[K.C_ROWS])
        c.windows = int(cnt[K.C_WINDOWS])
        c.partial_windows = int(cnt[K.C_PARTIAL])
        c.flows_created = int(cnt[K.C_FLOWS])
        c.pools_created = int(cnt[K.C_POOLS])
        c.promoted = int(cnt[K.C_PROMOTED])
        c.evicted = int(cnt[K.C_EVICTED])
        c.evicted_established = int(cnt[K.C_EVICTED_EST])
        c.expired_idle = int(cnt[K.C_IDLE])
        c.expired_active = int(cnt[K.C_ACTIVE])
        c.keys_tracked = int(self._st["g"][K.G_USED])
        return c

    def process(self, batch: PacketBatch) -> MeterOutput:
        """Meter one batch; returns the windows it completed (and its per-packet rows)."""
        c = self._counters
        n = len(batch)
        c.frames += n
        if n == 0:
            return MeterOutput(WindowBatch.empty(), WindowBatch.empty() if self.per_packet else None)
        self._count_skipped(batch)
        is_arp = batch.ethertype == ETH_P_ARP
        sel = self.metered_mask(batch)
        is6 = batch.ip_version == 6
        if self._capture_mode:
            skip6 = int(np.count_nonzero((batch.status == STATUS_OK) & is6))
            if skip6:
                c.skipped += skip6
                c.skipped_by_kind[_IPV6_CAPTURE] = c.skipped_by_kind.get(_IPV6_CAPTURE, 0) + skip6
        m = int(np.count_nonzero(sel))
        c.packets += m
        c.packets_ipv6 += int(np.count_nonzero(is6 & sel))
        inc = sel & ~is_arp & ((batch.proto == 6) | (batch.proto == 17)) & (batch.frag_offset == 0) & ~batch.l4_ok
        c.l4_incomplete += int(np.count_nonzero(inc))
        # whole columns go in (no per-batch copies); the kernel skips unselected frames. The
        # IPv6 addresses go in as two uint64 words each (a view of the 16 bytes, no copy).
        cols = (sel, batch.ts, batch.frame_len, is_arp, batch.proto, batch.l4_ok, batch.src4, batch.dst4,
                batch.sport, batch.dport, batch.tcp_flags, batch.ttl, batch.icmp_type,
                is6, _words(batch.src6), _words(batch.dst6))
        pf, pi = K.allocate_out(m) if self.per_packet else self._empty_pp
        self._ensure_out(m // max(self.config.window, 1) + 4096)
        parts: list[WindowBatch] = []
        start, row = 0, 0
        st = self._st
        while True:
            start, row = K.meter_packets(start, *cols, self._params, st["ei"], st["ek"], st["e6"], st["ef"], st["sums"],
                                         st["ht"], st["g"], st["gf"], st["cnt"], self._wf, self._wi, pf, pi, row)
            parts.append(self._drain())
            if start >= n:
                break
        rows = self._to_batch(pf, pi, m, rows=True) if self.per_packet else None
        return MeterOutput(WindowBatch.concat(parts), rows)

    def metered_mask(self, batch: PacketBatch) -> np.ndarray:
        """The frames of ``batch`` that get a row, in capture order: every decoded IPv4, IPv6
        and ARP frame; in key_mode capture not IPv6, which the released extractor never saw."""
        sel = batch.status == STATUS_OK
        if self._capture_mode:
            sel = sel & (batch.ip_version != 6)
        return sel

    def advance(self, now: float) -> MeterOutput:
        """Expire keys idle at wall-clock time ``now`` (live capture with no traffic)."""
        self._ensure_out(4096)
        parts = []
        st = self._st
        while True:
            done = K.expire_idle(float(now), self._params, st["ei"], st["ek"], st["e6"], st["ef"], st["sums"],
                                 st["ht"], st["g"], st["gf"], st["cnt"], self._wf, self._wi, self._out_cap)
            parts.append(self._drain())
            if done:
                break
        return MeterOutput(WindowBatch.concat(parts), WindowBatch.empty() if self.per_packet else None)

    def flush(self) -> MeterOutput:
        """End of stream: hand on every partial window (flow state is kept)."""
        self._ensure_out(4096)
        parts = []
        st = self._st
        e = 0
        cap = st["ei"].shape[0]
        while e < cap:
            e = K.flush_all(st["ei"], st["ek"], st["e6"], st["ef"], st["sums"], st["g"], st["cnt"], self._wf, self._wi, e)
            parts.append(self._drain())
        return MeterOutput(WindowBatch.concat(parts), WindowBatch.empty() if self.per_packet else None)

    # ---- internals -------------------------------------------------------------------------
    def _count_skipped(self, batch: PacketBatch) -> None:
        c = self._counters
        mal = batch.status == STATUS_MALFORMED
        n_mal = int(mal.sum())
        if n_mal:
            c.malformed += n_mal
            codes, counts = np.unique(batch.reason[mal], return_counts=True)
            for code, k in zip(codes.tolist(), counts.tolist()):
                text = MALFORMED_REASONS.get(code, f"reason {code}")
                c.malformed_by_reason[text] = c.malformed_by_reason.get(text, 0) + k
            if not c.first_malformed:
                j = int(np.flatnonzero(mal)[0])
                c.first_malformed = (f"packet #{batch.first_index + j + 1}"
                                     f"{' of ' + batch.source if batch.source else ''}: "
                                     f"{MALFORMED_REASONS.get(int(batch.reason[j]), '')}")
        other = batch.status == STATUS_OTHER
        n_other = int(np.count_nonzero(other))
        if n_other:
            c.skipped += n_other
            ets, counts = np.unique(batch.ethertype[other], return_counts=True)
            for et, k in zip(ets.tolist(), counts.tolist()):
                name = ethertype_name(et)
                c.skipped_by_kind[name] = c.skipped_by_kind.get(name, 0) + k

    def _ensure_out(self, n: int) -> None:
        if n > self._out_cap:
            self._out_cap = n
            self._wf, self._wi = K.allocate_out(n)

    def _drain(self) -> WindowBatch:
        g = self._st["g"]
        k = int(g[K.G_OUT])
        g[K.G_OUT] = 0
        if k == 0:
            return WindowBatch.empty()
        return self._to_batch(self._wf, self._wi, k)

    def _to_batch(self, wf: np.ndarray, wi: np.ndarray, k: int, rows: bool = False) -> WindowBatch:
        """Column arrays (copies) from the first k output rows (``rows``: per-packet rows, which
        name their packet's own addresses)."""
        ints = wi[:k]
        kind = ints[:, K.OI_KIND].astype(np.uint8)
        v6 = ints[:, K.OI_V6] != 0
        zero = np.zeros((k, 16), dtype=np.uint8)
        if v6.any():
            a6 = np.ascontiguousarray(ints[:, K.OI_S6:K.OI_S6 + 2]).view(np.uint8)  # back to the 16 address bytes
            b6 = np.ascontiguousarray(ints[:, K.OI_D6:K.OI_D6 + 2]).view(np.uint8)
            pool = (kind == K.KIND_POOL)[:, None]
            if rows:  # a row names its packet's own addresses
                src6, dst6, host6 = a6, b6, zero
            else:  # a pool window's IPv6 host prefix is held where a flow's initiator is
                src6, dst6, host6 = np.where(pool, zero, a6), np.where(pool, zero, b6), np.where(pool, a6, zero)
        else:  # IPv4 only (the common case): nothing to convert
            src6 = dst6 = host6 = zero
        return WindowBatch(
            features=wf[:k, :46].copy(), first_ts=wf[:k, K.OF_FIRST].copy(), last_ts=wf[:k, K.OF_LAST].copy(),
            packets=ints[:, K.OI_N].astype(np.uint32), key=ints[:, K.OI_KEY].view(np.uint64).copy(), kind=kind,
            proto=ints[:, K.OI_PROTO].astype(np.uint16), src=ints[:, K.OI_SRC].astype(np.uint32),
            dst=ints[:, K.OI_DST].astype(np.uint32), sport=ints[:, K.OI_SPORT].astype(np.uint16),
            dport=ints[:, K.OI_DPORT].astype(np.uint16), host=ints[:, K.OI_HOST].astype(np.uint32),
            prefix=np.where(kind == K.KIND_POOL, np.where(v6, self.config.pool_prefix6, self.config.pool_prefix), 0
                            ).astype(np.uint8),
            reason=ints[:, K.OI_REASON].astype(np.uint8),
            ip_version=np.where(v6, 6, 4).astype(np.uint8),
            src6=src6, dst6=dst6, host6=host6)


def _words(addr6: np.ndarray) -> np.ndarray:
    """(n, 16) address bytes as (n, 2) uint64 words (a view when the array is contiguous)."""
    return np.ascontiguousarray(addr6).view(np.uint64)
