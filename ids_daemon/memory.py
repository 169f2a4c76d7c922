"""The memory a run's tables need, checked against the memory it may use, at start.

The meter's key table and the sequence buffer are sized by ``meter.max_flows`` and
allocated up front (the meter's is resident at once with ``meter.prealloc``), so the
bound is known before a packet is read. A bound beyond what the host (or the service's
cgroup: systemd's ``MemoryMax=``) allows ends in an OOM kill with no message; checking
at start turns that into one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

GiB = 1 << 30
# kept free beside the tables for what the run allocates after the check: the live ring
# (capture.ring_mb, 64 MiB) and an alert ring, the batches in the queues between stages,
# the sinks' buffers (librdkafka's queue while a broker is slow). The model (numpy or torch)
# is loaded before the check, so MemAvailable already leaves it out. Replays of 300 k bench
# packets grew 41-84 MiB past the check with the numpy engine and 72-106 MiB with torch's
# (peaks 485-523 and 696-730 MiB): the margin is for a slow broker and full queues.
HEADROOM = 768 << 20
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2^63


def meter_table_bytes(max_flows: int) -> int:
    """Bytes of the meter's key table for ``max_flows`` keys (`ids_daemon.features._kernel.allocate`)."""
    from .features import _kernel as K

    per_key = K.NI * 4 + K.NK * 8 + 4 * 8 + (K.NF + K.NS) * 8  # ei, ek, e6 (IPv6 endpoints), ef, sums
    slots = 1
    while slots < (3 * max_flows + 1) // 2:  # the hash index, at most 2/3 full
        slots <<= 1
    return max_flows * per_key + slots * 4


def sequence_buffer_bytes(max_flows: int, seq_len: int, n_columns: int) -> int:
    """Bytes of the sequence buffer (`ids_daemon.sequence`): max_flows × T × F float32, and its
    key table: a node of six int64 a key, an index of 8-byte slots (a power of two, at least
    twice the keys) and 8 int64 of bookkeeping."""
    slots = 16
    while slots < 2 * max_flows:
        slots <<= 1
    return max_flows * (seq_len * n_columns * 4 + 6 * 8) + slots * 8 + 8 * 8


@dataclass
class MemoryLimit:
    """What this process may still allocate, and what bounds it."""

    bytes: int
    source: str  # "MemAvailable" or the cgroup file that is the tighter bound


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        v = int(text)
    except ValueError:
        return None
    return None if v >= _UNLIMITED else v


def cgroup_limits(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> list[tuple[int, str]]:
    """(bytes still allowed, file) for the memory limit of this process's cgroup and each
    of its ancestors: v2 ``memory.max`` − ``memory.current``, v1 ``memory.limit_in_bytes``
    − ``memory.usage_in_bytes``. Empty when no limit is set (or cgroups are not mounted)."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[int, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1], parts[2].lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            bases, limit, usage = [cgroup_root, cgroup_root / "unified"], "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            bases, limit, usage = [cgroup_root / "memory"], "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        for base in bases:
            # inside a container the mount's root is often the process's own cgroup, so
            # the path from /proc/self/cgroup may not exist below it: try it, then its tails
            rel_parts = Path(rel).parts
            for start in range(len(rel_parts) + 1):
                d = base.joinpath(*rel_parts[start:])
                if (d / limit).is_file():
                    break
            else:
                continue
            while True:
                lim = _read_int(d / limit)
                if lim is not None:
                    used = _read_int(d / usage) or 0
                    out.append((max(lim - used, 0), str(d / limit)))
                if d == base:
                    break
                d = d.parent
            break
    return out


def available_memory(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> MemoryLimit | None:
    """The tighter of the host's MemAvailable and every cgroup limit above this process."""
    best: MemoryLimit | None = None
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = MemoryLimit(int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
                break
    except (OSError, ValueError, IndexError):
        pass
    for left, where in cgroup_limits(proc, cgroup_root):
        if best is None or left < best.bytes:
            best = MemoryLimit(left, f"cgroup limit {where} (systemd MemoryMax=)")
    return best


def check_table_memory(max_flows: int, seq_len: int, n_columns: int, limit: MemoryLimit | None = None) -> int:
    """Raise `ConfigError` (one line naming ``meter.max_flows``) when the tables for
    ``max_flows`` keys do not fit in the memory this process may use; the bytes they need."""
    meter = meter_table_bytes(max_flows)
    seqbuf = sequence_buffer_bytes(max_flows, seq_len, n_columns)
    need = meter + seqbuf
    limit = limit if limit is not None else available_memory()
    if limit is None:
        return need  # nothing to compare with (not Linux): the OS has the last word
    if need + HEADROOM > limit.bytes:
        # the largest max_flows that fits (the hash index grows in powers of two: search)
        lo, hi = 0, max_flows
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if meter_table_bytes(mid) + sequence_buffer_bytes(mid, seq_len, n_columns) + HEADROOM <= limit.bytes:
                lo = mid
            else:
                hi = mid - 1
        fits = lo
        raise ConfigError(
            f"meter.max_flows {max_flows} needs {need / GiB:.1f} GiB (meter table {meter / GiB:.1f} GiB + sequence "
            f"buffer {seqbuf / GiB:.1f} GiB = {max_flows} keys x {seq_len} windows x {n_columns} columns x 4 bytes) "
            f"plus {HEADROOM >> 20} MiB for the model, but only {limit.bytes / GiB:.1f} GiB is available "
            f"({limit.source}): lower meter.max_flows to at most {fits}")
    return need
