"""Streaming reader for CICIoT2023 CSVs and for ``ids-daemon features`` output.

Three layouts are read onto one feature space, the 46 columns of the original release
in `ids_daemon.features.ciciot.COLUMNS` order:

- ``original-46``: the original release, 46 feature columns and a ``label`` column
  (34-class names such as ``DDoS-RSTFINFlood``).
- ``merged-39``: the newer merged release, 39 feature columns. ``Time_To_Live`` is the
  old ``Duration`` and fills it; ``IGMP`` has no place in the 46-column space and is
  ignored; the 8 columns it dropped come out as NaN. Labels are upper case there
  (``DDOS-RSTFINFLOOD``) and ``Rate`` can be ``inf``.
- ``meter``: what ``ids-daemon features`` writes (the 46 columns, then the identity
  columns), with a label column a user added. Its ``window_key`` and ``first_ts`` come
  with every chunk, so the trainer can keep windows of one key together and in order.

A file that has only some of the 46 columns is read as ``partial``: what it lacks is
reported and comes out as NaN.

A ``source`` column (the capture a row came from, as in ``ciciot2023_real_39col.csv.gz``)
comes with every chunk: it is the only sign that a CSV's rows are in capture order, so the
trainer builds multi-row sequences only from consecutive rows of one source. Files may
be gzip-compressed (recognised by their first bytes, whatever their name); a directory
contributes its ``*.csv`` and ``*.csv.gz`` files.

Memory stays bounded by ``chunk_rows``: pandas' C parser reads one chunk at a time and
nothing keeps a reference to earlier chunks. Rows are never dropped or reordered; a
value that is not a number is an error, not a silent NaN, because a mis-shifted row or a
stray text column would otherwise train the model on garbage without anyone noticing.
``inf`` and NaN are kept as they are (the trainer's preprocessing decides what to do with
them) and counted per column in `FileInfo`; a finite value beyond float32's range
(3.4e38) becomes ``inf`` and is counted the same way. Empty cells and the usual NaN
spellings (``nan``, ``NaN``, ``NA``, ``null``, ...) read as NaN.

Row numbers in error messages count data rows from 1 (the header is not a row), so
"row 5" is line 6 of a file without blank lines. `CsvChunk.first_row` is 0-based.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ids_daemon.errors import IdsError
from ids_daemon.features.ciciot import COLUMNS, IDENTITY_COLUMNS, INDEX
from ids_daemon.model.classes import label_in_scheme

RELEASE_ORIGINAL = "original-46"
RELEASE_MERGED = "merged-39"
RELEASE_METER = "meter"
RELEASE_PARTIAL = "partial"

# merged-release names of original columns (the same per-packet quantity, renamed)
RENAMES: dict[str, str] = {"Time_To_Live": "Duration"}
# merged-release columns with no place in the 46-column space
MERGED_ONLY: tuple[str, ...] = ("IGMP",)
# label columns found without being named
LABEL_NAMES: tuple[str, ...] = ("label", "Label")
SCHEMES: tuple[str, ...] = ("34", "8", "2")
# identity columns of the meter's CSV that the loader reads
KEY_COLUMN = "window_key"
TIME_COLUMN = "first_ts"
# the capture a row came from (repository/path of a per-capture CSV); read as text
SOURCE_COLUMN = "source"

# Cells read as NaN in numeric columns. Explicit (keep_default_na=False) so that the
# label column is never touched by pandas' NA guessing: a label such as "NA" or "None"
# stays a string and is then judged like any other label.
_NA_STRINGS: list[str] = ["", "nan", "NaN", "NAN", "-nan", "-NaN", "NA", "N/A", "n/a", "null", "NULL", "None"]


class LoaderError(IdsError):
    """A training CSV cannot be used; the message is one line naming the file (and row)."""


@dataclass
class CsvChunk:
    """Consecutive rows of one file, mapped onto the 46-column feature space."""

    path: str
    first_row: int  # 0-based data row number of the chunk's first row in its file
    features: np.ndarray  # (n, 46) float32 in COLUMNS order; columns the file lacks are NaN
    labels: np.ndarray  # (n,) object: labels as mapped by the scheme (or as they are)
    keys: np.ndarray | None = None  # (n,) object window_key (meter CSV only)
    times: np.ndarray | None = None  # (n,) float64 first_ts (meter CSV only)
    sources: np.ndarray | None = None  # (n,) object: the ``source`` column (files that have one)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FileInfo:
    """What a CSV holds: its layout (from the header) and, once streamed, its contents.

    ``rows``, ``nonfinite``, ``infinite`` and ``labels`` are filled by `iter_chunks`
    while it streams the file (reset when a new pass starts); `inspect_file` leaves them
    empty.
    """

    path: str
    release: str  # "original-46" | "merged-39" | "meter" | "partial"
    present: list[str]  # which of COLUMNS the file has, in COLUMNS order (Time_To_Live counts as Duration)
    missing: list[str]  # which of COLUMNS it lacks (they come out NaN)
    label_column: str  # "" only when inspected with require_label=False and none was found
    rows: int = 0
    nonfinite: dict[str, int] = field(default_factory=dict)  # column -> inf/-inf/NaN cells seen
    labels: dict[str, int] = field(default_factory=dict)  # mapped label -> rows
    ignored: list[str] = field(default_factory=list)  # header columns not read (IGMP, label_binary, ...)
    renamed: dict[str, str] = field(default_factory=dict)  # file column -> feature it fills
    infinite: dict[str, int] = field(default_factory=dict)  # column -> inf/-inf cells (part of nonfinite)
    labels_as_is: bool = False  # label column named explicitly: values are not mapped to a scheme
    header: list[str] = field(default_factory=list, repr=False)  # stripped column names, file order
    source_column: str = ""  # "source" when the file says which capture each row came from
    compressed: bool = False  # gzip


# ----------------------------------------------------------------------------- files


def list_csv_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The CSV files named by ``paths``: files as given, directories searched recursively.

    A directory contributes its ``*.csv`` and ``*.csv.gz`` files (any case), sorted, so the
    order of training data does not depend on the file system. A file named explicitly is
    taken whatever its suffix. Duplicates are kept once, in first-seen order.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    given = list(paths)
    for p in map(Path, given):
        if p.is_dir():
            batch = sorted(q for q in p.rglob("*") if q.name.lower().endswith((".csv", ".csv.gz")) and q.is_file())
        elif p.is_file():
            batch = [p]
        elif p.exists():
            raise LoaderError(f"{p}: not a regular file or directory")
        else:
            raise LoaderError(f"{p}: no such file or directory")
        for q in batch:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                found.append(q)
    if not found:
        where = ", ".join(str(p) for p in given) or "(no paths given)"
        raise LoaderError(f"no CSV files in {where}")
    return found


# ----------------------------------------------------------------------------- header


def is_gzip(path: str) -> bool:
    """Whether ``path`` starts with gzip's magic bytes (False when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _read_header(path: str) -> list[str]:
    """The first CSV record of ``path`` (gzip or plain), names stripped of stray whitespace."""
    try:
        # utf-8-sig: a BOM written by spreadsheet tools must not end up in the first name
        if is_gzip(path):
            fh = io.TextIOWrapper(gzip.open(path, "rb"), newline="", encoding="utf-8-sig")
        else:
            fh = open(path, newline="", encoding="utf-8-sig")
        with fh:
            header = next(csv.reader(fh), None)
    except IsADirectoryError:
        raise LoaderError(f"{path}: is a directory, not a CSV file") from None
    except OSError as e:
        raise LoaderError(f"{path}: cannot open: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LoaderError(f"{path}: not UTF-8 text (compressed? decompress it first)") from None
    except (csv.Error, gzip.BadGzipFile, EOFError) as e:
        raise LoaderError(f"{path}: unreadable CSV header: {e}") from None
    if header is None:
        raise LoaderError(f"{path}: empty file (no header, no rows)")
    names = [h.strip() for h in header]
    if not any(names):
        raise LoaderError(f"{path}: the first line is empty; expected a CSV header")
    return names


def _label_candidates(names: list[str]) -> list[str]:
    return [n for n in names if "label" in n.lower() or "class" in n.lower()]


def inspect_file(path: str | os.PathLike[str], label_column: str | None = None, *,
                 require_label: bool = True) -> FileInfo:
    """Read only the header of ``path``: its release, feature columns and label column.

    ``label_column`` names the label column explicitly; its values are then used as they
    are. Without it, ``label`` or ``Label`` is taken. ``require_label=False`` lets a file
    without a label column through (``label_column`` is then ""), for reporting on
    unlabelled meter output; `iter_chunks` always needs one.
    """
    spath = os.fspath(path)
    names = _read_header(spath)

    # duplicates only matter among the columns we read; pandas would rename them silently
    relevant = (set(COLUMNS) | set(RENAMES) | set(LABEL_NAMES) | set(IDENTITY_COLUMNS) | {SOURCE_COLUMN}
                | {label_column or ""})
    seen: set[str] = set()
    for n in names:
        if n in relevant and n in seen:
            raise LoaderError(f"{spath}: column {n!r} appears twice in the header")
        seen.add(n)
    have = set(names)

    renamed = {src: dst for src, dst in RENAMES.items() if src in have}
    for src, dst in renamed.items():
        if dst in have:
            raise LoaderError(f"{spath}: has both {src!r} and {dst!r} (the merged release's name for it); "
                              f"keep one of them")
    features = have | set(renamed.values())
    present = [c for c in COLUMNS if c in features]
    missing = [c for c in COLUMNS if c not in features]

    if "Time_To_Live" in have or "IGMP" in have:
        release = RELEASE_MERGED
    elif set(IDENTITY_COLUMNS) <= have:
        release = RELEASE_METER
    elif not missing:
        release = RELEASE_ORIGINAL
    elif present:
        release = RELEASE_PARTIAL
    else:
        raise LoaderError(f"{spath}: no CICIoT2023 feature columns in the header "
                          f"(first columns: {', '.join(names[:5])})")

    if label_column is not None:
        label_column = label_column.strip()
        if label_column not in have:
            cands = _label_candidates(names)
            hint = f"; label-like columns: {', '.join(cands)}" if cands else ""
            raise LoaderError(f"{spath}: no column {label_column!r}{hint}")
        if label_column in COLUMNS or label_column in RENAMES or label_column == TIME_COLUMN:
            # read as a number there, so it cannot also be read as the label text
            raise LoaderError(f"{spath}: {label_column!r} is a numeric column, not a label column")
        label = label_column
    else:
        label = next((n for n in LABEL_NAMES if n in have), "")
        if not label and require_label:
            cands = _label_candidates(names)
            hint = (f"; name one of {', '.join(cands)} with --label-column" if cands
                    else "; name one with --label-column")
            raise LoaderError(f"{spath}: no label column (label or Label){hint}")

    source = SOURCE_COLUMN if SOURCE_COLUMN in have and label != SOURCE_COLUMN else ""
    used = set(COLUMNS) | set(renamed) | {label, source}
    if release == RELEASE_METER:
        # the meter's identity columns are expected there, so not worth reporting
        used |= set(IDENTITY_COLUMNS)
    ignored = [n for n in names if n and n not in used]

    return FileInfo(path=spath, release=release, present=present, missing=missing, label_column=label,
                    ignored=ignored, renamed=renamed, labels_as_is=label_column is not None, header=names,
                    source_column=source, compressed=is_gzip(spath))


# ----------------------------------------------------------------------------- rows


def _pandas_message(e: Exception) -> str:
    """pandas' parser message on one line, without its C-level prefix."""
    msg = " ".join(str(e).split())
    for prefix in ("Error tokenizing data. C error: ",):
        msg = msg.replace(prefix, "")
    return msg


def _reader(path: str, ncols: int, dtype: dict[int, object], na_values: dict[int, list[str]],
            chunk_rows: int) -> Iterator[pd.DataFrame]:
    # Columns are addressed by position (names= 0..n-1, header line skipped) because the
    # header's names were stripped of whitespace by us, not by pandas. Reading every
    # column (no usecols) keeps pandas' field-count check: a row with more fields than the
    # header (an unquoted comma) is an error instead of a silently shifted row.
    return pd.read_csv(
        path, header=None, skiprows=1, names=list(range(ncols)), index_col=False,
        dtype=dtype, keep_default_na=False, na_values=na_values, chunksize=chunk_rows,
        engine="c", encoding="utf-8", compression="gzip" if is_gzip(path) else None,
    )


def _first_true(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _locate_bad_number(info: FileInfo, numeric: dict[int, str], na_values: dict[int, list[str]],
                       chunk_index: int, chunk_rows: int, first_row: int, err: Exception) -> LoaderError:
    """The error for a chunk pandas could not convert: re-read it as text to find the cell.

    Only runs on the error path, so re-reading the file up to the bad chunk is cheap
    compared to what a user would spend finding the cell by hand.
    """
    ncols = len(info.header)
    try:
        reader = _reader(info.path, ncols, {i: str for i in range(ncols)}, na_values, chunk_rows)
        with reader:
            for k, df in enumerate(reader):
                if k < chunk_index:
                    continue
                best: tuple[int, str, str] | None = None
                for idx, name in numeric.items():
                    s = df[idx]
                    text = s.to_numpy(dtype=object)
                    given = s.notna().to_numpy()
                    bad = given & pd.to_numeric(s, errors="coerce").isna().to_numpy()
                    if bad.any():
                        pos = _first_true(bad)
                        if best is None or pos < best[0]:
                            best = (pos, name, str(text[pos]))
                if best is not None:
                    pos, name, value = best
                    return LoaderError(f"{info.path}: row {first_row + pos + 1}: column {name!r}: "
                                       f"{value!r} is not a number")
                break
    except Exception:  # the report below is still right, only less precise
        pass
    return LoaderError(f"{info.path}: rows {first_row + 1}-{first_row + chunk_rows}: "
                       f"a numeric column holds text: {_pandas_message(err)}")


def iter_chunks(path: str | os.PathLike[str], scheme: str | None = "34", label_column: str | None = None,
                chunk_rows: int = 200_000, info: FileInfo | None = None) -> Iterator[CsvChunk]:
    """Stream ``path`` as `CsvChunk`s of at most ``chunk_rows`` rows, in file order.

    Labels: with ``label_column`` given (or ``info.labels_as_is``), or ``scheme=None``,
    they are taken as they are (stripped). Otherwise each is mapped with
    ``label_in_scheme(label, scheme)`` (scheme "34", "8" or "2"); a label that is not a
    CICIoT2023 class in any spelling raises `LoaderError` naming the row.

    ``info`` (from `inspect_file` on the same path) saves re-reading the header and
    receives the counts: ``rows``, ``nonfinite``, ``infinite`` and ``labels`` are reset
    when iteration starts and complete when it ends. Raises `LoaderError` for a file with
    a header but no rows, once the (empty) stream is exhausted.
    """
    spath = os.fspath(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    if info is None:
        info = inspect_file(spath, label_column)
    else:
        if info.path != spath:
            raise ValueError(f"info describes {info.path}, not {spath}")
        if label_column is not None and label_column.strip() != info.label_column:
            raise ValueError(f"info has label column {info.label_column!r}, not {label_column!r}")
    if not info.label_column:
        raise LoaderError(f"{spath}: no label column (label or Label); name one with --label-column")
    as_is = info.labels_as_is or scheme is None
    if not as_is and scheme not in SCHEMES:
        raise LoaderError(f"unknown label scheme {scheme!r} (34, 8 or 2)")

    pos_of = {name: i for i, name in enumerate(info.header)}
    file_name_of = {dst: src for src, dst in info.renamed.items()}  # Duration -> Time_To_Live
    # (position in COLUMNS, position in the file) for every feature the file has
    feat_pairs = [(INDEX[c], pos_of[file_name_of.get(c, c)]) for c in info.present]
    feat_dst = np.array([d for d, _ in feat_pairs], dtype=np.intp)
    feat_src = [s for _, s in feat_pairs]
    present_names = [COLUMNS[d] for d, _ in feat_pairs]
    label_pos = pos_of[info.label_column]
    meter = info.release == RELEASE_METER
    key_pos = pos_of[KEY_COLUMN] if meter else None
    time_pos = pos_of[TIME_COLUMN] if meter else None
    source_pos = pos_of[info.source_column] if info.source_column else None

    ncols = len(info.header)
    # Everything that is not numeric is read as text so that pandas never guesses types
    # per chunk (which would warn, and could turn "True" into a number).
    dtype: dict[int, object] = {i: str for i in range(ncols)}
    na_values: dict[int, list[str]] = {}
    numeric: dict[int, str] = {}  # file position -> header name, for error messages
    for s in feat_src:
        dtype[s] = np.float32  # the model's precision; parsing to float32 halves chunk memory
        na_values[s] = _NA_STRINGS
        numeric[s] = info.header[s]
    if time_pos is not None:
        dtype[time_pos] = np.float64  # epoch seconds need float64 to keep sub-ms precision
        na_values[time_pos] = _NA_STRINGS
        numeric[time_pos] = info.header[time_pos]

    info.rows = 0
    info.nonfinite = {}
    info.infinite = {}
    info.labels = {}
    nonfinite = np.zeros(len(feat_src), dtype=np.int64)
    infinite = np.zeros(len(feat_src), dtype=np.int64)
    label_counts: dict[str, int] = {}
    mapped_of: dict[str, str] = {}  # raw label -> mapped, across chunks (few distinct labels)

    try:
        reader = _reader(spath, ncols, dtype, na_values, chunk_rows)
    except OSError as e:
        raise LoaderError(f"{spath}: cannot open: {e.strerror or e}") from None
    except pd.errors.EmptyDataError:
        raise LoaderError(f"{spath}: has a header but no rows") from None

    first_row = 0
    with reader:
        chunk_index = 0
        while True:
            try:
                with warnings.catch_warnings():
                    # a finite value beyond float32's range (3.4e38) becomes +-inf in the
                    # cast; it is counted in info.infinite, so numpy's warning adds nothing
                    warnings.simplefilter("ignore", RuntimeWarning)
                    df = next(reader)
            except StopIteration:
                break
            except pd.errors.EmptyDataError:
                break
            except pd.errors.ParserError as e:
                raise LoaderError(f"{spath}: malformed CSV: {_pandas_message(e)}") from None
            except UnicodeDecodeError:
                raise LoaderError(f"{spath}: not UTF-8 text after row {first_row}") from None
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise LoaderError(f"{spath}: broken gzip stream after row {first_row}: {e}") from None
            except (ValueError, OverflowError) as e:
                # a feature cell pandas could not convert; find and name it
                raise _locate_bad_number(info, numeric, na_values, chunk_index, chunk_rows, first_row, e) from None
            n = len(df)
            if n == 0:
                break

            features = np.full((n, len(COLUMNS)), np.nan, dtype=np.float32)
            if feat_src:
                block = df[feat_src].to_numpy(dtype=np.float32)
                features[:, feat_dst] = block
                fin = np.isfinite(block)
                nonfinite += n - fin.sum(axis=0)
                infinite += np.isinf(block).sum(axis=0)

            raw = df[label_pos].fillna("").str.strip()  # NaN only for rows too short to reach it
            empty = (raw == "").to_numpy()
            if empty.any():
                row = first_row + _first_true(empty) + 1
                raise LoaderError(f"{spath}: row {row}: empty label in column {info.label_column!r} "
                                  f"(or the row has too few fields)")
            if as_is:
                labels = raw.to_numpy(dtype=object)
            else:
                for value in raw.unique():
                    value = str(value)
                    if value in mapped_of:
                        continue
                    mapped = label_in_scheme(value, scheme)  # type: ignore[arg-type]
                    if mapped is None:
                        row = first_row + _first_true((raw == value).to_numpy()) + 1
                        raise LoaderError(
                            f"{spath}: row {row}: unknown label {value!r} in column {info.label_column!r} "
                            f"(not a CICIoT2023 class in any spelling); use --label-column "
                            f"{info.label_column} to take labels as they are")
                    mapped_of[value] = mapped
                labels = raw.map(mapped_of).to_numpy(dtype=object)
            for value, count in pd.Series(labels).value_counts(sort=False).items():
                label_counts[str(value)] = label_counts.get(str(value), 0) + int(count)

            sources = None
            if source_pos is not None:
                sources = df[source_pos].fillna("").str.strip().to_numpy(dtype=object)
            keys = times = None
            if meter:
                keys = df[key_pos].fillna("").to_numpy(dtype=object)
                times = df[time_pos].to_numpy(dtype=np.float64)

            info.rows += n
            info.nonfinite = {c: int(k) for c, k in zip(present_names, nonfinite) if k}
            info.infinite = {c: int(k) for c, k in zip(present_names, infinite) if k}
            info.labels = dict(label_counts)
            chunk = CsvChunk(path=spath, first_row=first_row, features=features, labels=labels,
                             keys=keys, times=times, sources=sources)
            first_row += n
            chunk_index += 1
            del df  # keep only the chunk the caller holds
            yield chunk

    if first_row == 0:
        raise LoaderError(f"{spath}: has a header but no rows")


def source_labels(path: str | os.PathLike[str], info: FileInfo, chunk_rows: int = 500_000) -> dict[str, set[str]]:
    """For a file with a ``source`` column: each source's distinct labels (raw, stripped).

    Reads only the two text columns, so it costs a fraction of a full pass. A per-capture
    CSV of CICIoT2023 holds one class; a source with several labels is a sample or a
    merge, whose rows are not in capture order.
    """
    spath = os.fspath(path)
    if not info.source_column or not info.label_column:
        return {}
    pos_of = {name: i for i, name in enumerate(info.header)}
    sp, lp = pos_of[info.source_column], pos_of[info.label_column]
    out: dict[str, set[str]] = {}
    try:
        reader = pd.read_csv(spath, header=None, skiprows=1, usecols=[sp, lp], dtype=str, keep_default_na=False,
                             chunksize=chunk_rows, engine="c", encoding="utf-8",
                             compression="gzip" if is_gzip(spath) else None)
        with reader:
            for df in reader:
                pairs = df[[sp, lp]].apply(lambda c: c.str.strip()).drop_duplicates()
                for s, lab in pairs.itertuples(index=False):
                    out.setdefault(str(s), set()).add(str(lab))
    except (OSError, ValueError, EOFError, zlib.error, pd.errors.ParserError) as e:
        raise LoaderError(f"{spath}: cannot read its source column: {_pandas_message(e)}") from None
    return out


# ----------------------------------------------------------------------------- the merged release vs the meter

# Which columns of the merged (39-column) release mean what the daemon's meter computes,
# by the 46-column names the loader maps them to (Time_To_Live is Duration). Worked out
# from the release's own rows (ciciot2023_real_39col.csv.gz, 105,680 rows) against the
# meter's windows (N=10) on the real captures in shared/data/real; the table with the
# numbers is in docs/trainer.md. Every release row averages a block of 10 (or 100, for
# the floods) consecutive packets of a capture, across flows, where the meter averages
# 10 packets of one key; the columns below are per-packet values averaged, so they mean
# the same thing either way (the mixture of flows in a block is a distribution shift,
# not a change of meaning; ``--key-mode capture`` reproduces it).
MERGED_AGREES: tuple[str, ...] = (
    "Protocol Type", "Duration",
    "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number", "ack_flag_number",
    "ece_flag_number", "cwr_flag_number",
    "HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP", "ICMP",
    "IPv", "LLC",
    "AVG", "Tot size",
)

# Columns the merged release has but measures differently from the meter (and from the
# original release): a model trained on them would see other numbers on the meter's output.
MERGED_DIFFERS: dict[str, str] = {
    "Header_Length": "the mean transport-header length (TCP 32 with options, UDP 8, else 0), not cumulative "
                     "flow bytes: benign median 28.8 against the meter's 109,315",
    "Rate": "1 / IAT, packets per second over the block (Rate x IAT = 1.006 median), not flow packets / "
            "flow duration: benign median 152 against 37.6 (x4.0)",
    "ack_count": "packets of the block with ACK set (= Number x ack_flag_number in every row), not a per-flow "
                 "running count of FIN (the original's mix-up): benign median 9 against 0",
    "syn_count": "packets of the block with SYN set (= Number x syn_flag_number), not a per-flow running count",
    "fin_count": "packets of the block with FIN set (= Number x fin_flag_number), not a per-flow running count "
                 "of RST",
    "rst_count": "packets of the block with RST set (= Number x rst_flag_number), not a per-flow running count "
                 "of ACK: benign median 0 against 774",
    "Tot sum": "the block's sum of frame lengths (= Number x AVG in every row: 10x or 100x, so it carries the "
               "block size, a label leak), not a 20-packet rolling-buffer sum: benign median 2,497 against 1,181",
    "Min": "the block's smallest frame, not the rolling buffer's averaged over the window: 54 in 0.8 % of rows "
           "against 37 % of the meter's windows (median 66 against 62)",
    "Max": "the block's largest frame (10 or 100 packets of all flows): benign median 1,474 against 150 (x9.8)",
    "Std": "the block's population std of frame lengths (all flows): benign median 409 against 24 (x17)",
    "IAT": "the block's mean inter-arrival time in seconds (benign median 0.0062), not time since the key's "
           "previous row with the epoch on every 20th (meter median 1.3e8); a leak in the meter's meaning",
    "Number": "the block size, 10 or 100 by class (a label leak), not the rolling buffer's length (1..19)",
    "Variance": "Std squared (in every row), not the 0/1 'variance is non-zero' flag: benign median 167,685 "
                "against 0.9",
}

# Columns of the 46 the merged release does not have (they load as NaN).
MERGED_ABSENT: tuple[str, ...] = ("flow_duration", "Srate", "Drate", "urg_count", "Magnitue", "Radius",
                                  "Covariance", "Weight")


def meter_compatible_columns(columns: Iterable[str], releases: Iterable[str]) -> list[str]:
    """``columns`` restricted to those that mean the same on the meter's output.

    When any of ``releases`` (`FileInfo.release` of the training files) is the merged
    39-column release, only `MERGED_AGREES` columns are kept, in the order given; for
    the original release and the meter's own CSV every column is kept. Use it when a
    model trained on the merged release is meant to run on the daemon.
    """
    cols = list(columns)
    if RELEASE_MERGED in set(releases):
        return [c for c in cols if c in MERGED_AGREES]
    return cols
