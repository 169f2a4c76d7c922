"""The ``ids-trainer`` command line (typer). Training itself arrives with the trainer
issue; what is here already works on real data."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import typer

from ids_daemon.features.ciciot import COLUMNS, IDENTITY_COLUMNS, LEAKING

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and evaluate the ids-daemon model (CICIoT2023 CSVs, labelled captures).")

# columns of the newer (merged, 39-column) release that the original release names differently
MERGED_RENAMES = {"Time_To_Live": "Duration"}
MERGED_ONLY = {"IGMP"}
LABEL_NAMES = ("label", "Label")


@app.callback()
def _root() -> None:
    """Train and evaluate the ids-daemon model."""


@app.command()
def inspect(
    files: list[Path] = typer.Argument(..., help="CSV files: CICIoT2023 (either release) or ids-daemon features output"),
    label_column: str = typer.Option(None, "--label-column", help="label column (default: label or Label)"),
) -> None:
    """Say which CICIoT2023 release a CSV is, which feature columns it lacks or leaks, and its classes."""
    for path in files:
        try:
            fh = open(path, newline="")
        except OSError as e:
            print(f"ids-trainer: error: {path}: cannot open: {e.strerror}", file=sys.stderr)
            raise typer.Exit(1)
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                print(f"ids-trainer: error: {path}: empty file", file=sys.stderr)
                raise typer.Exit(1)
            names = [MERGED_RENAMES.get(h, h) for h in header]
            have = set(names)
            label = label_column or next((n for n in LABEL_NAMES if n in have), None)
            if label_column and label_column not in have:
                print(f"ids-trainer: error: {path}: no column {label_column!r}", file=sys.stderr)
                raise typer.Exit(1)
            li = header.index(label) if label else None
            counts: Counter[str] = Counter()
            rows = 0
            for row in reader:
                rows += 1
                if li is not None and li < len(row):
                    counts[row[li]] += 1
        if set(IDENTITY_COLUMNS) <= have:
            kind = "ids-daemon features output"
        elif "Time_To_Live" in header or "IGMP" in have:
            kind = "CICIoT2023 merged release (39 features)"
        elif set(COLUMNS) <= have:
            kind = "CICIoT2023 original release (46 features)"
        else:
            kind = "unknown layout"
        missing = [c for c in COLUMNS if c not in have]
        extra = sorted(have - set(COLUMNS) - set(IDENTITY_COLUMNS) - MERGED_ONLY - {label} - set(LABEL_NAMES))
        print(f"{path}: {kind}, {rows} rows")
        print(f"  feature columns: {sum(c in have for c in COLUMNS)} of {len(COLUMNS)}"
              + (f"; missing: {', '.join(missing)}" if missing else ""))
        leaking = [c for c in LEAKING if c in have]
        if leaking:
            print(f"  leaking or constant (excluded from training by default): {', '.join(leaking)}")
        if extra:
            print(f"  other columns: {', '.join(extra)}")
        if label:
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(12))
            more = f" (+{len(counts) - 12} more)" if len(counts) > 12 else ""
            print(f"  label column {label!r}: {len(counts)} classes: {top}{more}")
        else:
            print("  no label column (label/Label); name one with --label-column")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
