"""Predictions from a JSON-lines file (``replay -o``, the ``jsonl`` sink), one per line, for
the commands that read such a file (``alerts --input``, ``report``)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Iterator

from ..errors import ConfigError
from .decode import MalformedPrediction, Prediction, UnknownSchema

log = logging.getLogger("ids_daemon.predictions")


@dataclass
class SkippedLines:
    """Lines that were not valid v1 predictions: how many, and the first one's problem."""

    count: int = 0
    first: str = ""  # "line N: why"

    def text(self, path: str) -> str:
        """One line for a person: '3 lines of FILE skipped (not valid v1 predictions; first: line 2: ...)'."""
        return (f"{self.count:,} line{'s' if self.count != 1 else ''} of {path} skipped "
                f"(not valid v1 predictions; first: {self.first})")


def read_predictions(path: str, skipped: SkippedLines | None = None, who: str = "alerts --input",
                     logged: int = 5) -> Iterator[Prediction]:
    """The predictions of a JSON-lines file (``-``: standard input), read one line at a
    time (a day of predictions never sits in memory). Blank lines are passed over; lines
    that are not valid v1 predictions are skipped, counted in ``skipped`` and the first
    ``logged`` of them logged; an unreadable file is a `ConfigError` (``who`` names the
    command in it)."""
    bad = skipped if skipped is not None else SkippedLines()
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as e:
        raise ConfigError(f"{who} {path}: cannot open: {e.strerror}") from None
    try:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Prediction.from_json(line)
            except (MalformedPrediction, UnknownSchema) as e:
                bad.count += 1
                if bad.count == 1:
                    bad.first = f"line {n}: {e}"
                if bad.count <= logged:
                    log.warning("%s: %s line %d skipped: %s", who.split()[0], path, n, e)
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()
