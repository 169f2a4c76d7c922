"""The sink interface and the one batch type sinks receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class EncodedBatch:
    """Predictions encoded once (orjson), shared by every sink.

    ``values[i]`` is one prediction as JSON bytes; ``keys[i]`` its flow key (the Kafka
    record key, so one flow's predictions stay ordered in one partition).
    """

    keys: list[bytes]
    values: list[bytes]
    schema: str = "ids.prediction.v1"

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class SinkStats:
    """What a sink did with the predictions it was given."""

    received: int = 0  # predictions handed to the sink
    delivered: int = 0  # confirmed written (file) or acknowledged (broker)
    failed: int = 0  # sends that failed (they were spooled, not lost, unless counted in dropped)
    spooled: int = 0  # written to the on-disk spool while the destination was away
    respooled_delivered: int = 0  # of the spooled ones, delivered later
    dropped: int = 0  # lost for good (spool full): always logged
    spool_bytes: int = 0
    extra: dict = field(default_factory=dict)


class Sink(Protocol):
    """Where predictions go."""

    name: str
    stats: SinkStats

    def open(self) -> None: ...

    def write_batch(self, batch: EncodedBatch) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...
