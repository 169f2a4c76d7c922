"""Keep the bytes of a batch's frames (for the alert pcap, `ids_daemon.sinks.alertpcap`).

The sources read frames out of a buffer they reuse (the file's chunk, the kernel's ring,
which goes back to the kernel once decoded): the frames a batch holds are copied into
one contiguous uint8 buffer with an offset column, by one compiled loop, no per-frame
object. A source does this only when asked (``keep_raw``): off, it costs nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .batch import PacketBatch


@njit(cache=True, nogil=True)
def _gather(buf, off, cap, out, out_off):  # pragma: no cover - compiled
    pos = 0
    for i in range(off.shape[0]):
        out_off[i] = pos
        o = off[i]
        c = cap[i]
        out[pos:pos + c] = buf[o:o + c]
        pos += c
    out_off[off.shape[0]] = pos


def keep_raw(batch: PacketBatch, buf: np.ndarray, off: np.ndarray, cap: np.ndarray) -> None:
    """Copy the frames at ``off`` (``cap`` bytes each) of ``buf`` into ``batch.raw`` and
    ``batch.raw_off`` (the offsets, one more than frames)."""
    n = off.shape[0]
    out_off = np.empty(n + 1, dtype=np.int64)
    out = np.empty(int(cap.sum(dtype=np.int64)), dtype=np.uint8)
    _gather(buf, off, cap, out, out_off)
    batch.raw, batch.raw_off = out, out_off


def warm_up() -> None:
    """Compile the copy for both kinds of source buffer now (a file's chunk is read-only
    bytes, the live ring writable memory): before a privilege drop, as the sources' own
    kernels are (numba caches beside the code, which the dropped user may not write)."""
    off, cap = np.zeros(1, np.int64), np.ones(1, np.uint32)
    for buf in (np.frombuffer(bytes(1), dtype=np.uint8), np.zeros(1, dtype=np.uint8)):
        keep_raw(PacketBatch.empty(1), buf, off, cap)
