"""JSON lines to stdout or a file: the default sink, so the daemon runs with no broker."""

from __future__ import annotations

import sys
from typing import BinaryIO

from .base import EncodedBatch, SinkStats


class JsonlSink:
    """One prediction per line, exactly as encoded."""

    def __init__(self, path: str | None = None, append: bool = True):
        self.path = path
        self.append = append
        self.name = f"jsonl:{path or 'stdout'}"
        self.stats = SinkStats()
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        """Open the file (``None`` or ``-``: stdout): appending to what it holds, or replacing it
        (``append=False``: a replay's output, as ``tcpdump -w`` replaces its file); a second
        call does nothing."""
        if self._fh is not None:
            return
        if self.path in (None, "-"):
            self._fh = sys.stdout.buffer
        else:
            self._fh = open(self.path, "ab" if self.append else "wb")

    def write_batch(self, batch: EncodedBatch) -> None:
        """Append the batch's predictions."""
        if not len(batch):
            return
        assert self._fh is not None, "open() first"
        self.stats.received += len(batch)
        self._fh.write(b"\n".join(batch.values) + b"\n")
        self.stats.delivered += len(batch)

    def flush(self, timeout: float | None = None) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        """Flush and close (stdout stays open)."""
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout.buffer:
                self._fh.close()
        self._fh = None
