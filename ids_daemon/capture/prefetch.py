"""Read and decode the next batches in a background thread while the caller meters this one.

Reading, record walking (numba, nogil) and decoding (numpy) release the GIL, and so does
the meter kernel, so on two cores parsing and metering overlap instead of adding up.
The queue is bounded: a slow consumer stops the reader instead of growing memory.
"""

from __future__ import annotations

import queue
import threading

from .base import PacketSource, SourceStats
from .batch import PacketBatch

_END = object()


class PrefetchSource:
    """Wraps an opened `PacketSource`; ``next_batch`` returns what the thread read ahead.

    Errors raised by the wrapped source (a truncated file, say) are re-raised by
    ``next_batch`` in order, after every batch read before them.
    """

    def __init__(self, source: PacketSource, depth: int = 2):
        self.source = source
        self.name = source.name
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"read:{source.name}", daemon=True)
        self._done = False

    @property
    def stats(self) -> SourceStats:
        """The wrapped source's counters."""
        return self.source.stats

    def __getattr__(self, item: str):
        # total_bytes, bytes_read, format, ... of the wrapped source
        return getattr(self.source, item)

    def open(self) -> None:
        """Start reading ahead (the wrapped source must already be open)."""
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.source.next_batch()
                if batch is None:
                    break
                if not self._put(batch):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)
            return
        self._put(_END)

    def next_batch(self) -> PacketBatch | None:
        """The next batch read ahead, None at the end."""
        if self._done:
            return None
        item = self._q.get()
        if item is _END:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        """Stop the reader thread and close the wrapped source."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.source.close()
