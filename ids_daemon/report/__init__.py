"""``ids-daemon report``: a predictions JSON-lines file as one self-contained HTML page
(`aggregate` counts while reading, `html` and `chart` draw the page)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..predictions.read import SkippedLines, read_predictions
from .aggregate import Aggregate
from .html import render

__all__ = ["Aggregate", "aggregate_file", "render", "write_report"]


def aggregate_file(path: str, skipped: SkippedLines, **caps: int) -> Aggregate:
    """Read ``path`` (``-``: stdin) one line at a time into an `Aggregate`; lines that are
    not valid predictions are counted in ``skipped`` (the command says so in one line, and
    the page shows it)."""
    agg = Aggregate(**caps)
    for p in read_predictions(path, skipped, who="report", logged=0):
        agg.add(p)
    return agg


def write_report(path: str, output: str, top: int = 20) -> tuple[Aggregate, SkippedLines]:
    """Aggregate ``path`` and write the page to ``output`` (``-``: stdout). The file appears
    complete or not at all (written beside it, then renamed)."""
    skipped = SkippedLines()
    agg = aggregate_file(path, skipped)
    page = render(agg, "standard input" if path == "-" else path, skipped, top=top)
    if output == "-":
        sys.stdout.write(page)
        return agg, skipped
    out = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
    except OSError as e:
        raise ConfigError(f"report -o {output}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"report -o {output}: cannot write: {e.strerror}") from None
    return agg, skipped
