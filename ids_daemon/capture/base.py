"""The packet-source interface: every capture backend is one class with these methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .batch import PacketBatch


@dataclass
class SourceStats:
    """What a source has read so far (kernel counters for live sources)."""

    frames: int = 0
    bytes: int = 0
    kernel_packets: int = 0  # live only: frames the kernel saw for this socket
    kernel_drops: int = 0  # live only: frames the kernel dropped (ring full)
    kernel_freeze: int = 0  # live only: times the ring was frozen
    filtered: int = 0  # files: frames the capture filter did not match (the kernel drops them live)


class PacketSource(Protocol):
    """A source of `PacketBatch`es. ``next_batch`` returns None at the end of the stream;
    a live source returns an empty batch when nothing arrived within its timeout, so the
    caller can still advance timers."""

    name: str
    stats: SourceStats

    def open(self) -> None: ...

    def next_batch(self) -> PacketBatch | None: ...

    def close(self) -> None: ...
