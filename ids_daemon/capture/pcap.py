"""pcap and pcapng files (or stdin) → `PacketBatch`es.

Files compressed with gzip (``.pcap.gz``, ``.pcapng.gz``) or zstd (``.zst``) are read as
they are, recognised by their magic bytes whatever their name. A capture filter
(tcpdump syntax) keeps only the frames it matches, as it would on a live interface:
libpcap's own interpreter runs it on each frame before decoding.

The file is read in large chunks; a small compiled loop walks the record headers of a
chunk (the only part that is inherently sequential: each record's length gives the
next record's offset) and the headers of the whole batch are then decoded with numpy.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
from numba import njit

from ..errors import CaptureError
from .base import SourceStats
from .batch import SUPPORTED_LINKTYPES, PacketBatch
from .bpf import BpfProgram, compile_filter, match_frames
from .decode import decode_frames
from .rawframes import keep_raw

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
_MAX_RECORD = 1 << 24  # no real frame is 16 MiB: a larger length means a corrupt file
_MAX_BLOCK = 1 << 26
_MAX_TS_UNITS = 10**18  # if_tsresol: finer than an attosecond does not fit 64-bit tick arithmetic
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# walker exit codes
_W_MORE = 0  # batch full or the chunk needs more bytes
_W_BLOCK = 1  # a pcapng block that Python handles (SHB, IDB, others)
_W_CORRUPT = 2
_W_BAD_IFACE = 3


@njit(cache=True, nogil=True, inline="always")
def _u32(buf, pos, big):
    if big:
        return (np.uint32(buf[pos]) << 24) | (np.uint32(buf[pos + 1]) << 16) | (np.uint32(buf[pos + 2]) << 8) | np.uint32(buf[pos + 3])
    return (np.uint32(buf[pos + 3]) << 24) | (np.uint32(buf[pos + 2]) << 16) | (np.uint32(buf[pos + 1]) << 8) | np.uint32(buf[pos])


@njit(cache=True, nogil=True, inline="always")
def _u16(buf, pos, big):
    if big:
        return (np.uint32(buf[pos]) << 8) | np.uint32(buf[pos + 1])
    return (np.uint32(buf[pos + 1]) << 8) | np.uint32(buf[pos])


@njit(cache=True, nogil=True)
def _walk_pcap(buf, pos, end, big, frac_div, max_n, off, cap, wire, ts):  # pragma: no cover - compiled
    n = 0
    status = _W_MORE
    while n < max_n and pos + 16 <= end:
        sec = _u32(buf, pos, big)
        frac = _u32(buf, pos + 4, big)
        incl = _u32(buf, pos + 8, big)
        orig = _u32(buf, pos + 12, big)
        if incl > _MAX_RECORD:
            status = _W_CORRUPT
            break
        if pos + 16 + incl > end:
            break
        off[n] = pos + 16
        cap[n] = incl
        wire[n] = max(orig, incl)
        ts[n] = np.float64(sec) + np.float64(frac) / frac_div
        n += 1
        pos += 16 + incl
    return n, pos, status


@njit(cache=True, nogil=True)
def _walk_pcapng(buf, pos, end, big, max_n, if_units, if_tsoff, if_snap,
                 off, cap, wire, ts, iface, last_ts):  # pragma: no cover - compiled
    n = 0
    status = _W_MORE
    n_if = if_units.shape[0]
    while n < max_n and pos + 12 <= end:
        btype = _u32(buf, pos, big)
        if btype == PCAPNG_SHB:
            status = _W_BLOCK
            break
        blen = _u32(buf, pos + 4, big)
        if blen < 12 or (blen & 3) != 0 or blen > _MAX_BLOCK:
            status = _W_CORRUPT
            break
        if pos + blen > end:
            break
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                status = _W_CORRUPT
                break
            if btype == 6:
                ifc = _u32(buf, pos + 8, big)
            else:
                ifc = _u16(buf, pos + 8, big)
            if ifc >= n_if:
                status = _W_BAD_IFACE
                break
            ticks = (np.uint64(_u32(buf, pos + 12, big)) << np.uint64(32)) | np.uint64(_u32(buf, pos + 16, big))
            capl = _u32(buf, pos + 20, big)
            orig = _u32(buf, pos + 24, big)
            if 28 + capl > blen - 4:
                status = _W_CORRUPT
                break
            u = np.uint64(if_units[ifc])
            sec = ticks // u
            t = np.float64(sec) + np.float64(ticks - sec * u) / np.float64(u) + if_tsoff[ifc]
            off[n] = pos + 28
            cap[n] = capl
            wire[n] = max(orig, capl)
            ts[n] = t
            iface[n] = ifc
            last_ts = t
            n += 1
        elif btype == 3:  # simple packet block: no timestamp, interface 0
            if blen < 16:  # no room for its original-length field
                status = _W_CORRUPT
                break
            if n_if == 0:
                status = _W_BAD_IFACE
                break
            orig = _u32(buf, pos + 8, big)
            capl = min(orig, blen - 16)
            if if_snap[0] > 0:
                capl = min(capl, if_snap[0])
            off[n] = pos + 12
            cap[n] = capl
            wire[n] = orig
            ts[n] = last_ts
            iface[n] = 0
            n += 1
        else:
            status = _W_BLOCK
            break
        pos += blen
    return n, pos, status, last_ts


class PcapSource:
    """Reads a classic pcap (either byte order, µs or ns) or a pcapng file.

    ``path`` may be ``-`` for stdin; gzip and zstd compression are undone on the fly.
    Frames come out in batches of at most ``batch_size``; with ``bpf_filter`` only the
    frames it matches (``stats.filtered`` counts the others). A problem with the file
    raises `CaptureError` with a one-line message naming it, after every complete packet
    before it has been returned.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 65536, chunk_bytes: int = 8 << 20,
                 bpf_filter: str | None = None, keep_raw: bool = False):
        self.path = str(path)
        self.keep_raw = keep_raw  # copy each batch's frame bytes into it (the alert pcap's ring)
        self.bpf_filter = bpf_filter or None
        self._programs: dict[int, BpfProgram] = {}  # compiled filter per link type
        self.compression = ""  # "", "gzip" or "zstd"
        self._stream_error = ""  # a damaged compressed stream, reported once the packets before it are out
        self._stream_errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, ValueError)
        self.name = "stdin" if self.path == "-" else self.path
        self.batch_size = int(batch_size)
        self.chunk_bytes = max(int(chunk_bytes), 1 << 16)
        self.stats = SourceStats()
        self.total_bytes: int | None = None
        self.bytes_read = 0
        self.format = ""
        self._fh: BinaryIO | None = None
        self._raw: BinaryIO | None = None  # the file under a decompressor
        self._buf = np.zeros(0, dtype=np.uint8)
        self._pos = 0
        self._eof = False
        self._frames = 0
        self._pending_error: str | None = None
        # classic pcap
        self._big = False
        self._frac_div = 1e6
        self._linktype = 0
        # pcapng
        self._ng_units: list[int] = []
        self._ng_tsoff: list[float] = []
        self._ng_snap: list[int] = []
        self._ng_link: list[int] = []
        self._ng_last_ts = 0.0
        self._ng_arrays: tuple[np.ndarray, ...] = ()
        # Called with (buffer, offsets, captured lengths, wire lengths, link type) before a
        # batch is decoded: offline tools that need the raw bytes (the trainer's labelling
        # by capture filter) read them here instead of parsing the file a second time.
        self.frame_hook: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any], None] | None = None

    # ---- interface -------------------------------------------------------------------------
    def open(self) -> None:
        """Open the file and read its header; raises `CaptureError` when it is not a capture."""
        if self.path == "-":
            self._fh = sys.stdin.buffer
            head = self._fh.peek(4)[:4] if hasattr(self._fh, "peek") else b""
        else:
            try:
                self._fh = open(self.path, "rb")
                self.total_bytes = os.fstat(self._fh.fileno()).st_size
                head = self._fh.read(4)
                self._fh.seek(0)
            except OSError as e:
                raise CaptureError(f"{self.path}: cannot open: {e.strerror}") from None
        self._decompress(head)
        if self.bpf_filter:  # a bad expression is reported before anything is read
            compile_filter(self.bpf_filter)
        self._fill(24)
        avail = self._buf.shape[0]
        if avail < 24 and self._stream_error:
            raise CaptureError(self._stream_error + ", before the capture header")
        if avail == 0:
            raise CaptureError(f"{self.name}: empty file, not a pcap or pcapng capture")
        if avail < 4:
            raise CaptureError(f"{self.name}: truncated: {avail} bytes, too short for a capture header")
        head = self._buf[:4].tobytes()
        if struct.unpack("<I", head)[0] == PCAPNG_SHB:
            self.format = "pcapng"
            self._fill(12)
            self._read_shb()
            return
        le = struct.unpack("<I", head)[0]
        be = struct.unpack(">I", head)[0]
        if le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self._big, magic = False, le
        elif be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self._big, magic = True, be
        else:
            raise CaptureError(f"{self.name}: not a pcap or pcapng file (starts with 0x{head.hex()})")
        if avail < 24:
            raise CaptureError(f"{self.name}: truncated: the file ends inside the 24-byte pcap header")
        self.format = "pcap-ns" if magic == PCAP_MAGIC_NS else "pcap"
        self._frac_div = 1e9 if magic == PCAP_MAGIC_NS else 1e6
        fmt = ">" if self._big else "<"
        _, _, _, _, _snap, link = struct.unpack(fmt + "HHiIII", self._buf[4:24].tobytes())
        self._linktype = link & 0xFFFF
        if self._linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(
                f"{self.name}: unsupported link type {self._linktype} "
                f"(supported: {', '.join(map(str, sorted(SUPPORTED_LINKTYPES)))})"
            )
        self._pos = 24

    def _decompress(self, head: bytes) -> None:
        """Read through gzip or zstd when the stream starts with their magic bytes."""
        assert self._fh is not None
        self._raw = self._fh  # closed as well: a GzipFile leaves its file open
        if head[:2] == _GZIP_MAGIC:
            self.compression = "gzip"
            self._fh = gzip.GzipFile(fileobj=self._fh, mode="rb")
        elif head[:4] == _ZSTD_MAGIC:
            self.compression = "zstd"
            import zstandard

            self._fh = zstandard.ZstdDecompressor().stream_reader(self._fh, read_across_frames=True)
            self._stream_errors += (zstandard.ZstdError,)  # not an OSError
        else:
            return
        self.total_bytes = None  # the file's size is not the capture's: no progress bar

    def warm_up(self) -> None:
        """Compile this file's walker (pcap or pcapng) now, walking nothing: before a
        privilege drop, as numba compiles on first call and loads its cache from beside the
        code, which the dropped user may not read."""
        off, cap, wire, ts = self._alloc()
        empty = np.frombuffer(b"", dtype=np.uint8)  # the type `_fill` gives the buffer
        if self.format == "pcapng":
            _walk_pcapng(empty, 0, 0, self._big, 0, *self._ng_arrays, off, cap, wire, ts,
                         np.empty(0, np.int64), 0.0)
        else:
            _walk_pcap(empty, 0, 0, self._big, self._frac_div, 0, off, cap, wire, ts)

    def next_batch(self) -> PacketBatch | None:
        """The next batch of frames, or None at the end of the file."""
        if self._fh is None:
            raise CaptureError(f"{self.name}: source not opened")
        while True:
            if self._pending_error:
                msg, self._pending_error = self._pending_error, None
                raise CaptureError(msg)
            batch = self._next_pcapng() if self.format == "pcapng" else self._next_pcap()
            if batch is not None and len(batch):
                return batch
            if batch is None:
                if self._stream_error:
                    msg, self._stream_error = self._stream_error, ""
                    raise CaptureError(msg)
                return None

    def close(self) -> None:
        """Close the file (stdin is left open)."""
        if self._fh is not None and self.path != "-":
            self._fh.close()
            if self._raw is not None and self._raw is not self._fh:
                self._raw.close()
        self._fh = None
        self._raw = None

    def __enter__(self) -> "PcapSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ---------------------------------------------------------------------------
    def _fill(self, need: int) -> None:
        """Make at least ``need`` unread bytes available (fewer only at end of file)."""
        have = self._buf.shape[0] - self._pos
        if have >= need or self._eof:
            return
        parts = [self._buf[self._pos:].tobytes()]
        want = max(need - have, self.chunk_bytes)
        got = 0
        assert self._fh is not None
        while got < want:
            data = self._read(want - got)
            if not data:
                self._eof = True
                break
            parts.append(data)
            got += len(data)
        self.bytes_read += got
        self._buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
        self._pos = 0

    def _read(self, n: int) -> bytes:
        assert self._fh is not None
        if not self.compression:
            return self._fh.read(n)
        if self._stream_error:
            return b""
        try:
            # read1: what one step of decompression gives, so a damaged stream loses nothing before the damage
            return self._fh.read1(n)
        except self._stream_errors as e:
            # the packets decompressed so far are still read; the error comes after them (as end of file)
            what = str(e) or type(e).__name__
            self._stream_error = f"{self.name}: corrupt {self.compression} stream ({what})"
            return b""

    def _alloc(self) -> tuple[np.ndarray, ...]:
        n = self.batch_size
        return (np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.uint32), np.empty(n, np.float64))

    def _emit(self, off, cap, wire, ts, n, linktype) -> PacketBatch:
        first = self._frames
        if self.bpf_filter:
            off, cap, wire, ts, linktype, n = self._apply_filter(off[:n], cap[:n], wire[:n], ts[:n], linktype)
        if self.frame_hook is not None:
            self.frame_hook(self._buf, off[:n], cap[:n], wire[:n], linktype)
        batch = decode_frames(self._buf, off[:n], cap[:n], wire[:n], ts[:n], linktype,
                              first_index=first, source=self.name)
        if self.keep_raw:
            keep_raw(batch, self._buf, off[:n], cap[:n])
        self._frames += n
        self.stats.frames += n
        self.stats.bytes += int(cap[:n].sum())
        return batch

    def _apply_filter(self, off, cap, wire, ts, linktype):
        """Keep the frames the capture filter matches (per link type: pcapng files can mix them)."""
        lt = np.broadcast_to(np.asarray(linktype, dtype=np.uint16), off.shape)
        keep = np.zeros(off.shape[0], dtype=bool)
        for code in np.unique(lt).tolist():
            prog = self._programs.get(code)
            if prog is None:
                prog = self._programs[code] = compile_filter(self.bpf_filter, linktype=code)
            sel = lt == code
            keep[sel] = match_frames(prog, self._buf, off[sel], cap[sel], wire[sel])
        k = int(np.count_nonzero(keep))
        self.stats.filtered += keep.shape[0] - k
        self._frames += keep.shape[0] - k  # frame numbers stay those of the file
        lt_k = lt[keep]
        linktype = lt_k if (k and not (lt_k == lt_k[0]).all()) else (lt_k[0] if k else linktype)
        return off[keep], cap[keep], wire[keep], ts[keep], linktype, k

    def _truncated(self, what: str) -> str:
        if self._stream_error:  # the stream broke: that is the cause, not the cut record
            msg, self._stream_error = self._stream_error, ""
            return f"{msg} after {self._frames} complete packets"
        return (f"{self.name}: truncated: the file ends inside {what} "
                f"(after {self._frames} complete packets, byte {self.bytes_read - (self._buf.shape[0] - self._pos)})")

    def _next_pcap(self) -> PacketBatch | None:
        self._fill(self.chunk_bytes)
        off, cap, wire, ts = self._alloc()
        n, pos, status = _walk_pcap(self._buf, self._pos, self._buf.shape[0], self._big,
                                    self._frac_div, self.batch_size, off, cap, wire, ts)
        if status == _W_CORRUPT:
            self._pending_error = (f"{self.name}: corrupt record header after {self._frames + n} packets "
                                   f"(captured length over {_MAX_RECORD} bytes)")
        self._pos = pos
        if n == 0 and status == _W_MORE:
            if self._eof:
                left = self._buf.shape[0] - self._pos
                if left:
                    self._pending_error = self._truncated(f"packet record #{self._frames + 1}")
                    return PacketBatch.empty()
                return None
            if self._buf.shape[0] - self._pos >= 16:  # a record longer than one chunk
                self._fill(16 + int(_u32_py(self._buf, self._pos + 8, self._big)))
            else:
                self._fill(self.chunk_bytes)
            return PacketBatch.empty()
        return self._emit(off, cap, wire, ts, n, self._linktype)

    # ---- pcapng ----------------------------------------------------------------------------
    def _read_shb(self) -> None:
        buf = self._buf
        p = self._pos
        if buf.shape[0] - p < 12:
            raise CaptureError(self._truncated("a pcapng section header"))
        bom = buf[p + 8:p + 12].tobytes()
        if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
            self._big = False
        elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
            self._big = True
        else:
            raise CaptureError(f"{self.name}: corrupt pcapng section header (byte-order magic 0x{bom.hex()})")
        blen = self._block_len(p)
        self._fill(blen)
        if self._buf.shape[0] - self._pos < blen:
            raise CaptureError(self._truncated("a pcapng section header"))
        self._pos += blen
        self._ng_units, self._ng_tsoff, self._ng_snap, self._ng_link = [], [], [], []
        self._sync_ng()

    def _block_len(self, p: int) -> int:
        blen = _u32_py(self._buf, p + 4, self._big)
        if blen < 12 or blen & 3 or blen > _MAX_BLOCK:
            raise CaptureError(f"{self.name}: corrupt pcapng block length {blen} after {self._frames} packets")
        return blen

    def _read_idb(self, p: int, blen: int) -> None:
        fmt = ">" if self._big else "<"
        if blen < 20:  # type, length, link type, reserved, snap length, trailing length
            raise CaptureError(f"{self.name}: corrupt pcapng interface block ({blen} bytes, at least 20 needed) "
                               f"after {self._frames} packets")
        link, _, snap = struct.unpack(fmt + "HHI", self._buf[p + 8:p + 16].tobytes())
        if link not in SUPPORTED_LINKTYPES:
            raise CaptureError(
                f"{self.name}: unsupported link type {link} on interface {len(self._ng_link)} "
                f"(supported: {', '.join(map(str, sorted(SUPPORTED_LINKTYPES)))})"
            )
        units, tsoff = 10**6, 0.0
        q, end = p + 16, p + blen - 4
        while q + 4 <= end:
            code, olen = struct.unpack(fmt + "HH", self._buf[q:q + 4].tobytes())
            if code == 0:
                break
            if q + 4 + olen > end:
                raise CaptureError(f"{self.name}: corrupt pcapng interface block: option {code} runs past the "
                                   f"block's end (after {self._frames} packets)")
            val = self._buf[q + 4:q + 4 + olen].tobytes()
            if code == 9 and olen >= 1:  # if_tsresol
                r = val[0]
                units = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
                # the walker divides 64-bit tick counts: a unit beyond that cannot be meant
                if units > _MAX_TS_UNITS:
                    raise CaptureError(f"{self.name}: pcapng interface {len(self._ng_link)} has an invalid "
                                       f"timestamp resolution (if_tsresol 0x{r:02x}: more than 10^18 units "
                                       f"per second)")
            elif code == 14 and olen >= 8:  # if_tsoffset, seconds
                tsoff = float(struct.unpack(fmt + "q", val[:8])[0])
            q += 4 + ((olen + 3) & ~3)
        self._ng_link.append(link)
        self._ng_units.append(max(int(units), 1))
        self._ng_tsoff.append(tsoff)
        self._ng_snap.append(snap)
        self._sync_ng()

    def _sync_ng(self) -> None:
        self._ng_arrays = (np.array(self._ng_units, dtype=np.int64), np.array(self._ng_tsoff, dtype=np.float64),
                           np.array(self._ng_snap, dtype=np.int64))

    def _next_pcapng(self) -> PacketBatch | None:
        off, cap, wire, ts = self._alloc()
        iface = np.empty(self.batch_size, np.int64)
        n = 0
        while n == 0:
            self._fill(self.chunk_bytes)
            units, tsoff, snap = self._ng_arrays
            n, pos, status, self._ng_last_ts = _walk_pcapng(
                self._buf, self._pos, self._buf.shape[0], self._big, self.batch_size, units, tsoff, snap,
                off, cap, wire, ts, iface, self._ng_last_ts)
            self._pos = pos
            if n:
                break  # emit what we have; the block that stopped us is handled next call
            if status == _W_CORRUPT:
                raise CaptureError(f"{self.name}: corrupt pcapng block after {self._frames} packets")
            if status == _W_BAD_IFACE:
                raise CaptureError(f"{self.name}: packet block names an interface that was never described "
                                   f"(after {self._frames} packets)")
            if status == _W_BLOCK:
                self._handle_block()
                continue
            left = self._buf.shape[0] - self._pos
            if self._eof:
                if left:
                    self._pending_error = self._truncated("a pcapng block")
                    return PacketBatch.empty()
                return None
            if left >= 8:  # a block longer than one chunk
                self._fill(self._block_len(self._pos))
        if status == _W_CORRUPT and n:
            self._pending_error = f"{self.name}: corrupt pcapng block after {self._frames + n} packets"
        links = np.array(self._ng_link, dtype=np.uint16)[iface[:n]]
        linktype = links[0] if (links == links[0]).all() else links
        return self._emit(off, cap, wire, ts, n, linktype)

    def _handle_block(self) -> None:
        p = self._pos
        btype = _u32_py(self._buf, p, self._big)
        if btype == PCAPNG_SHB:
            self._read_shb()
            return
        blen = self._block_len(p)
        self._fill(blen)
        if self._buf.shape[0] - self._pos < blen:
            self._pending_error = self._truncated("a pcapng block")
            self._pos = self._buf.shape[0]
            return
        if btype == 1:
            self._read_idb(self._pos, blen)
        self._pos += blen  # name resolution, statistics, custom blocks: nothing to meter


def _u32_py(buf: np.ndarray, pos: int, big: bool) -> int:
    return struct.unpack(">I" if big else "<I", buf[pos:pos + 4].tobytes())[0]


def open_capture_file(path: str | Path, batch_size: int = 65536) -> PcapSource:
    """Open a capture file (``-`` for stdin) and read its header."""
    src = PcapSource(path, batch_size=batch_size)
    src.open()
    return src
