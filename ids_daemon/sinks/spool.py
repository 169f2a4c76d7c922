"""A bounded on-disk FIFO of (key, value, meta) records: where predictions wait while
the broker is away. ``meta`` is opaque to the spool; the Kafka sink keeps each
record's topic and headers in it, so a record goes where it was meant to go whichever
run replays it.

Layout of the spool directory::

    00000000000000000000.seg   segment files, named by the sequence number of their
    00000000000000004096.seg   first record; records are numbered 0, 1, 2, ... for life
    cursor                     sequence number of the first record not yet consumed
    lock                       flock()ed while open: one spool, one process

A segment starts with the 8-byte magic ``IDSSPL02``; then records, each a 16-byte
header (little-endian u32 key length, u32 value length, u32 meta length, u32 CRC-32
of key+value+meta) followed by the key, the value and the meta. Segments of the
previous format (``IDSSPL01``: 12-byte header, no meta) are still read; their records
have an empty meta. Appends are written and flushed to the OS (no
fsync): a killed process loses nothing that was appended, a power cut may lose the
tail. A record cut short or failing its CRC is detected when the directory is opened;
it and whatever follows it in that segment are cut off (``discarded`` counts such
damaged tails: the records in them cannot be framed, so cannot be counted).

The bound (``max_bytes``) applies to the records not yet consumed (headers included).
When an append would exceed it, the OLDEST records go first (the newest predictions
matter most to a defender); every record dropped is counted (``dropped``). The disk
may hold up to one segment more than the bound: the consumed head of the oldest
segment stays on disk until the whole segment is consumed or dropped.

A full disk (``ENOSPC``, a quota) is handled like the bound: the write is cut back to
the last whole record, the oldest segments are dropped (counted) until it fits, the
bound shrinks to what the disk holds and segments get smaller so later drops free
space a little at a time (``disk_full`` says it happened). If nothing spooled is
left to drop, the new records are dropped (counted). ``append`` never raises for it.

Readers consume with :meth:`peek` (returns the sequence number of the first record)
and :meth:`commit` (everything before a sequence number is consumed), so a record
dropped for space while a reader had it in hand is never committed twice and a newer
record is never skipped. :meth:`pop` does both. When everything is consumed the
segment files and the cursor are removed.

Thread safety: every public method takes one lock.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import IdsError

MAGIC = b"IDSSPL02"
MAGIC_V1 = b"IDSSPL01"
_HDR = struct.Struct("<IIII")
_HDR_V1 = struct.Struct("<III")
HEADER_BYTES = _HDR.size  # per-record overhead
Record = tuple  # (key: bytes, value: bytes, meta: bytes)
_SEG_SUFFIX = ".seg"
_CURSOR = "cursor"
_LOCK = "lock"


class SpoolError(IdsError):
    """The spool directory cannot be used (not writable, not a directory)."""


def record_size(key: bytes, value: bytes, meta: bytes = b"") -> int:
    """Bytes one record takes in the spool, header included."""
    return HEADER_BYTES + len(key) + len(value) + len(meta)


@dataclass
class _Segment:
    first_seq: int
    path: Path
    count: int  # records in the file
    size: int  # file size in bytes (magic included)
    v1: bool = False  # the previous format: no meta


def _read_record(f, v1: bool) -> tuple[int, tuple[bytes, bytes, bytes]]:
    """(bytes taken, record) at the file position."""
    if v1:
        klen, vlen, _ = _HDR_V1.unpack(f.read(_HDR_V1.size))
        body = f.read(klen + vlen)
        return _HDR_V1.size + klen + vlen, (body[:klen], body[klen:], b"")
    klen, vlen, mlen, _ = _HDR.unpack(f.read(HEADER_BYTES))
    body = f.read(klen + vlen + mlen)
    return HEADER_BYTES + klen + vlen + mlen, (body[:klen], body[klen : klen + vlen], body[klen + vlen :])


def _skip_record(f, v1: bool) -> int:
    """Skip the record at the file position; its size."""
    if v1:
        klen, vlen, _ = _HDR_V1.unpack(f.read(_HDR_V1.size))
        f.seek(klen + vlen, os.SEEK_CUR)
        return _HDR_V1.size + klen + vlen
    klen, vlen, mlen, _ = _HDR.unpack(f.read(HEADER_BYTES))
    f.seek(klen + vlen + mlen, os.SEEK_CUR)
    return HEADER_BYTES + klen + vlen + mlen


class DiskSpool:
    """A bounded, restart-surviving FIFO of ``(key, value, meta)`` byte records."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, segment_bytes: int | None = None):
        if max_bytes <= 0:
            raise SpoolError(f"spool max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        if segment_bytes is None:
            segment_bytes = min(max(self.max_bytes // 8, 4096), 16 << 20)
        self.segment_bytes = int(segment_bytes)
        self.dropped = 0  # records dropped for space, for life of this object
        self.discarded = 0  # damaged records found (and removed) when opening
        self.disk_full = False  # a write failed for space: the bound was shrunk to what the disk holds
        self.write_errors = 0  # writes that failed (each one dropped records, counted in dropped)
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._head_seq = 0  # first record not consumed
        self._head_off = len(MAGIC)  # its byte offset in self._segments[0]
        self._tail_seq = 0  # sequence number the next appended record gets
        self._live_bytes = 0
        self._wfile = None  # append handle of the last segment
        self._rfile = None  # read handle of the head segment
        self._rfile_seq = -1
        self._pending_written = 0
        self._lockf = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpoolError(f"cannot create the spool directory {self.directory}: {e.strerror or e}") from None
        if not self.directory.is_dir():
            raise SpoolError(f"spool path {self.directory} is not a directory")
        if not os.access(self.directory, os.W_OK):
            raise SpoolError(f"spool directory {self.directory} is not writable")
        self._lockf = open(self.directory / _LOCK, "a+b")
        try:
            fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockf.close()
            self._lockf = None
            raise SpoolError(f"spool directory {self.directory} is in use by another sink or process") from None
        try:
            self._load()
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    def _load(self) -> None:
        segs: list[_Segment] = []
        for p in sorted(self.directory.glob("*" + _SEG_SUFFIX)):
            try:
                first = int(p.name[: -len(_SEG_SUFFIX)])
            except ValueError:
                continue
            seg = self._scan_segment(first, p)
            if seg is None:
                continue
            if seg.count == 0:
                p.unlink(missing_ok=True)
                continue
            segs.append(seg)
        # Sequence numbers must be contiguous; a gap means a file vanished: renumber
        # what follows so the FIFO stays consistent (order is kept).
        fixed: list[_Segment] = []
        for seg in segs:
            if fixed and seg.first_seq != fixed[-1].first_seq + fixed[-1].count:
                new_first = fixed[-1].first_seq + fixed[-1].count
                new_path = self.directory / f"{new_first:020d}{_SEG_SUFFIX}"
                os.replace(seg.path, new_path)
                seg = _Segment(new_first, new_path, seg.count, seg.size)
            fixed.append(seg)
        self._segments = fixed
        head = self._read_cursor()
        if not fixed:
            self._head_seq = self._tail_seq = max(head, 0) if head is not None else 0
            self._remove_cursor()
            self._live_bytes = 0
            return
        first = fixed[0].first_seq
        self._tail_seq = fixed[-1].first_seq + fixed[-1].count
        if head is None or head < first or head > self._tail_seq:
            head = first
        # drop segments consumed entirely
        while self._segments and self._segments[0].first_seq + self._segments[0].count <= head:
            self._segments.pop(0).path.unlink(missing_ok=True)
        if not self._segments:
            self._head_seq = self._tail_seq
            self._remove_cursor()
            self._live_bytes = 0
            return
        seg0 = self._segments[0]
        self._head_seq = seg0.first_seq
        self._head_off = len(MAGIC)
        self._live_bytes = sum(s.size - len(MAGIC) for s in self._segments)
        if head > seg0.first_seq:
            with open(seg0.path, "rb") as f:
                f.seek(self._head_off)
                while self._head_seq < head:
                    sz = _skip_record(f, seg0.v1)
                    self._head_off += sz
                    self._live_bytes -= sz
                    self._head_seq += 1

    def _scan_segment(self, first: int, path: Path) -> _Segment | None:
        """Count a segment's records; cut off a damaged tail (counted in discarded)."""
        try:
            f = open(path, "r+b")
        except OSError:
            return None
        with f:
            data = f.read()
            v1 = data[: len(MAGIC_V1)] == MAGIC_V1
            if data[: len(MAGIC)] != MAGIC and not v1:
                # not one of ours, or its first bytes never reached the disk
                if len(data) > 0 and not data.startswith(MAGIC[: len(data)]):
                    self.discarded += 1
                f.close()
                path.unlink(missing_ok=True)
                return None
            hdr = _HDR_V1 if v1 else _HDR
            off = len(MAGIC)
            count = 0
            n = len(data)
            while off < n:
                if off + hdr.size > n:
                    break
                fields = hdr.unpack_from(data, off)
                crc = fields[-1]
                end = off + hdr.size + sum(fields[:-1])
                if end > n:
                    break
                body = memoryview(data)[off + hdr.size : end]
                if zlib.crc32(body) != crc:
                    break
                off = end
                count += 1
            if off < n:
                self.discarded += 1  # the damaged record; what follows it cannot be framed
                f.truncate(off)
        return _Segment(first, path, count, off, v1)

    def _read_cursor(self) -> int | None:
        try:
            text = (self.directory / _CURSOR).read_text().strip()
            return int(text)
        except (OSError, ValueError):
            return None

    def _write_cursor(self) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        try:
            tmp.write_text(f"{self._head_seq}\n")
            os.replace(tmp, self.directory / _CURSOR)
        except OSError as e:
            # a full disk: the old cursor stays, so a restart may send consumed records
            # again (at-least-once), never skip one
            self.last_error = f"cannot write the spool cursor: {e.strerror or e}"
            tmp.unlink(missing_ok=True)

    def _remove_cursor(self) -> None:
        (self.directory / _CURSOR).unlink(missing_ok=True)
        (self.directory / (_CURSOR + ".tmp")).unlink(missing_ok=True)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        with self._lock:
            return self._tail_seq - self._head_seq

    @property
    def bytes(self) -> int:
        """Bytes of the records not yet consumed (record headers included)."""
        with self._lock:
            return self._live_bytes

    @property
    def head_seq(self) -> int:
        with self._lock:
            return self._head_seq

    @property
    def tail_seq(self) -> int:
        with self._lock:
            return self._tail_seq

    # ------------------------------------------------------------------ writing
    def append(self, records: list[Record]) -> int:
        """Append ``(key, value, meta)`` records at the tail; return how many records
        were dropped for space (oldest first: spooled ones before the oldest of
        ``records``), by the bound or by a full disk. Never raises for a full disk."""
        if not records:
            return 0
        with self._lock:
            sizes = [HEADER_BYTES + len(k) + len(v) + len(m) for k, v, m in records]
            total = sum(sizes)
            dropped = 0
            start = 0
            if total > self.max_bytes:
                # the batch alone is over the bound: everything spooled goes, then the
                # batch's oldest records until the rest fits
                dropped += self._drop_head_bytes(self._live_bytes)
                while start < len(records) and total > self.max_bytes:
                    total -= sizes[start]
                    start += 1
                dropped += start
            else:
                excess = self._live_bytes + total - self.max_bytes
                if excess > 0:
                    dropped += self._drop_head_bytes(excess)
            while start < len(records):
                try:
                    self._write(records[start:], sizes[start:])
                    break
                except OSError as e:
                    written = self._recover_write(e)
                    start += written
                    if start >= len(records):
                        break
                    # make room: the oldest whole segment goes; nothing left to drop:
                    # the oldest of the new records go
                    if self._segments and self._tail_seq > self._head_seq:
                        dropped += self._drop_head_segment()
                    else:
                        dropped += len(records) - start
                        break
            self.dropped += dropped
            return dropped

    def _recover_write(self, e: OSError) -> int:
        """A write failed (full disk, quota, I/O error): cut the tail segment back to its
        last whole record, shrink the bound to what is on disk, make segments small. Returns
        how many of the records being written are in the spool."""
        self.write_errors += 1
        self.last_error = f"{e.strerror or e}"
        self.disk_full = True
        written = self._pending_written
        if self._wfile is not None:
            try:
                self._wfile.close()
            except OSError:
                pass  # its buffer could not be written either: cut below
            self._wfile = None
        if self._segments:
            seg = self._segments[-1]
            try:
                os.truncate(seg.path, seg.size)
            except OSError:
                pass
            if seg.count == 0 and (len(self._segments) > 1 or self._head_seq >= self._tail_seq):
                self._segments.pop()
                seg.path.unlink(missing_ok=True)
        self.max_bytes = max(4096, min(self.max_bytes, self._live_bytes))
        self.segment_bytes = max(4096, min(self.segment_bytes, self.max_bytes // 8))
        return written

    def _drop_head_segment(self) -> int:
        """Drop what is left of the oldest segment; how many records that was."""
        seg = self._segments[0]
        remaining = seg.first_seq + seg.count - self._head_seq
        self._live_bytes -= seg.size - self._head_off
        self._head_seq += remaining
        self._discard_head_segment()
        self._after_consume()
        return remaining

    def _write(self, records, sizes) -> None:
        """Append records; on an OSError ``_pending_written`` says how many made it
        (whole segments' worth written and flushed before the failing one)."""
        i = 0
        self._pending_written = 0
        while i < len(records):
            if self._wfile is None or self._segments[-1].size >= self.segment_bytes:
                self._roll()
            seg = self._segments[-1]
            room = self.segment_bytes - seg.size
            parts = []
            n = 0
            used = 0
            while i + n < len(records) and (n == 0 or used + sizes[i + n] <= room):
                k, v, m = records[i + n]
                parts.append(_HDR.pack(len(k), len(v), len(m), zlib.crc32(m, zlib.crc32(v, zlib.crc32(k)))))
                parts.append(k)
                parts.append(v)
                parts.append(m)
                used += sizes[i + n]
                n += 1
            self._wfile.write(b"".join(parts))
            self._wfile.flush()  # a full disk shows here, before the records are counted
            seg.size += used
            seg.count += n
            self._tail_seq += n
            self._live_bytes += used
            i += n
            self._pending_written = i

    def _roll(self) -> None:
        if self._wfile is not None:
            self._wfile.close()
            self._wfile = None
        elif self._segments and self._segments[-1].size < self.segment_bytes and not self._segments[-1].v1:
            # first append after opening a directory (or after a failed write): continue its last segment
            self._wfile = open(self._segments[-1].path, "ab")
            return
        path = self.directory / f"{self._tail_seq:020d}{_SEG_SUFFIX}"
        f = open(path, "wb")
        self._segments.append(_Segment(self._tail_seq, path, 0, 0))
        self._wfile = f
        f.write(MAGIC)
        f.flush()
        self._segments[-1].size = len(MAGIC)

    def _drop_head_bytes(self, need: int) -> int:
        """Drop records from the head until at least ``need`` bytes are freed."""
        dropped = 0
        while need > 0 and self._segments:
            seg = self._segments[0]
            seg_live = seg.size - self._head_off
            remaining = seg.first_seq + seg.count - self._head_seq
            if seg_live <= need:
                # the whole rest of the head segment goes
                dropped += remaining
                need -= seg_live
                self._live_bytes -= seg_live
                self._head_seq += remaining
                self._discard_head_segment()
                continue
            # part of it: walk record headers
            with open(seg.path, "rb") as f:
                f.seek(self._head_off)
                while need > 0:
                    sz = _skip_record(f, seg.v1)
                    self._head_off += sz
                    self._head_seq += 1
                    self._live_bytes -= sz
                    need -= sz
                    dropped += 1
        self._after_consume()
        return dropped

    def _discard_head_segment(self) -> None:
        seg = self._segments.pop(0)
        if self._rfile is not None and self._rfile_seq == seg.first_seq:
            self._rfile.close()
            self._rfile = None
            self._rfile_seq = -1
        if not self._segments and self._wfile is not None:
            self._wfile.close()
            self._wfile = None
        seg.path.unlink(missing_ok=True)
        self._head_off = len(MAGIC)

    def _after_consume(self) -> None:
        if not self._segments or self._head_seq >= self._tail_seq:
            # everything consumed: remove the files
            while self._segments:
                self._discard_head_segment()
            self._head_seq = self._tail_seq
            self._live_bytes = 0
            self._remove_cursor()
        else:
            self._write_cursor()

    # ------------------------------------------------------------------ reading
    def peek_seq(self, n: int) -> tuple[int, list[Record]]:
        """Up to ``n`` records from the head, without consuming them, and the sequence
        number of the first one (for :meth:`commit`)."""
        with self._lock:
            out: list[Record] = []
            start = self._head_seq
            seq = self._head_seq
            off = self._head_off
            for idx, seg in enumerate(self._segments):
                if len(out) >= n:
                    break
                if idx > 0:
                    off = len(MAGIC)
                end_seq = seg.first_seq + seg.count
                if idx == 0:
                    seq = self._read_into(self._head_reader(), off, seq, end_seq, n, out, seg.v1)
                else:
                    with open(seg.path, "rb") as f:
                        seq = self._read_into(f, off, seq, end_seq, n, out, seg.v1)
            return start, out

    @staticmethod
    def _read_into(f, off: int, seq: int, end_seq: int, n: int, out: list, v1: bool) -> int:
        f.seek(off)
        while seq < end_seq and len(out) < n:
            out.append(_read_record(f, v1)[1])
            seq += 1
        return seq

    def peek(self, n: int) -> list[Record]:
        return self.peek_seq(n)[1]

    def _head_reader(self):
        seg = self._segments[0]
        if self._rfile is None or self._rfile_seq != seg.first_seq:
            if self._rfile is not None:
                self._rfile.close()
            self._rfile = open(seg.path, "rb")
            self._rfile_seq = seg.first_seq
        return self._rfile

    def commit(self, upto_seq: int) -> int:
        """Consume every record with a sequence number below ``upto_seq``; returns how
        many were consumed now (records already dropped for space are not counted)."""
        with self._lock:
            upto = min(upto_seq, self._tail_seq)
            consumed = 0
            while self._head_seq < upto and self._segments:
                seg = self._segments[0]
                end_seq = seg.first_seq + seg.count
                if upto >= end_seq:
                    n = end_seq - self._head_seq
                    self._live_bytes -= seg.size - self._head_off
                    self._head_seq = end_seq
                    consumed += n
                    self._discard_head_segment()
                    continue
                f = self._head_reader()
                f.seek(self._head_off)
                while self._head_seq < upto:
                    sz = _skip_record(f, seg.v1)
                    self._head_off += sz
                    self._live_bytes -= sz
                    self._head_seq += 1
                    consumed += 1
            if consumed:
                self._after_consume()
            return consumed

    def pop(self, n: int) -> list[Record]:
        """Take up to ``n`` records from the head."""
        with self._lock:
            start, recs = self.peek_seq(n)
            self.commit(start + len(recs))
            return recs

    # ------------------------------------------------------------------ closing
    def flush(self) -> None:
        with self._lock:
            if self._wfile is not None:
                try:
                    self._wfile.flush()
                except OSError as e:
                    self._recover_write(e)

    def close(self) -> None:
        with self._lock:
            if self._wfile is not None:
                try:
                    self._wfile.close()
                except OSError:
                    pass  # everything counted was flushed by _write
                self._wfile = None
            if self._rfile is not None:
                self._rfile.close()
                self._rfile = None
                self._rfile_seq = -1
            if self._lockf is not None:
                self._lockf.close()  # releases the flock
                self._lockf = None

    def __enter__(self) -> "DiskSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
