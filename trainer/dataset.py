"""Training data: CICIoT2023 CSVs or labelled captures → sequences of T windows.

- CSVs (either release, or the meter's own CSV with a label column) stream through
  `trainer.data.ciciot`. Rows of a file that carries no window keys form sequences only
  from consecutive rows of one capture (its ``source`` column) and one label; rows with
  no capture order are sequences of one row (see `_load_csvs`). The meter's CSV has
  keys, so there a sequence is the last T windows of one key.
- Labelled captures (a ``manifest.json``, as ``ids-trainer synth`` writes) go through
  the daemon's own meter, so training and serving compute features the same way; a
  sequence is the last T windows of one key.

Every window ends one sequence (`ids_daemon.model.sequences.last_t_index`, the same
rule the daemon uses), so no row is dropped. Memory is bounded by a per-class cap:
beyond ``max_per_class`` sequences a class keeps a uniform sample (reservoir), and the
summary says how many it saw and kept.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ids_daemon.capture.batch import PacketBatch
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import MeterConfig
from ids_daemon.errors import IdsError
from ids_daemon.features.ciciot import COLUMNS, INDEX, LEAKING
from ids_daemon.features.meter import Meter
from ids_daemon.features.window import POOL_PROTO_ARP, WindowBatch
from ids_daemon.model.classes import label_in_scheme
from ids_daemon.model.sequences import last_t_index, window_sequences

from .data.ciciot import (
    MERGED_AGREES,
    RELEASE_MERGED,
    SOURCE_COLUMN,
    FileInfo,
    inspect_file,
    iter_chunks,
    list_csv_files,
    meter_compatible_columns,
    source_labels,
)


class DataError(IdsError):
    """Training data that cannot be used (one line, naming the file)."""


@dataclass
class Dataset:
    """Sequences of raw feature values, labels, and what they came from."""

    x: np.ndarray  # (n, T, F) float32, raw values of `columns`
    y: np.ndarray  # (n,) int64 index into `classes`
    classes: list[str]
    columns: list[str]
    groups: np.ndarray  # (n,) int64: the capture/file each sequence came from
    order: np.ndarray  # (n,) float64: position in time within its group
    source: str  # "csv" or "captures"
    summary: dict[str, Any] = field(default_factory=dict)
    weights: np.ndarray | None = None  # (n,) packets in each sequence's last window (None: 1 each)
    pools: np.ndarray | None = None  # (n,) bool: the last window is a pool of short flows (None: not known)

    def weights_of(self, idx: np.ndarray) -> np.ndarray:
        """Packet weights of rows ``idx`` (ones when the data has no packet counts)."""
        if self.weights is None:
            return np.ones(len(idx), dtype=np.float64)
        return self.weights[idx].astype(np.float64)


class _Reservoir:
    """At most ``cap`` items per class, a uniform sample of all seen (algorithm R)."""

    def __init__(self, cap: int, seed: int):
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        self.seen: dict[str, int] = {}

    def add(self, label: str, x: np.ndarray, group: np.ndarray, order: np.ndarray) -> None:
        seen = self.seen.get(label, 0)
        self.seen[label] = seen + len(x)
        if seen + len(x) <= self.cap:  # below the cap: keep everything
            self.parts.setdefault(label, []).append((x, group, order))
            return
        cur = self._collapse(label)
        xs, gs, os_ = cur if cur is not None else (x[:0], group[:0], order[:0])
        take = max(0, self.cap - len(xs))
        if take:
            xs, gs, os_ = (np.concatenate([xs, x[:take]]), np.concatenate([gs, group[:take]]),
                           np.concatenate([os_, order[:take]]))
        # the rest: item number i (0-based over all seen) replaces a random slot with
        # probability cap / (i + 1)
        base = seen + take
        for j in range(take, len(x)):
            r = int(self.rng.integers(0, base + (j - take) + 1))
            if r < self.cap:
                xs[r], gs[r], os_[r] = x[j], group[j], order[j]
        self.kept[label] = (xs, gs, os_)
        self.parts[label] = []

    def _collapse(self, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        parts = self.parts.get(label, [])
        cur = self.kept.get(label)
        if cur is not None:
            parts = [cur] + parts
        if not parts:
            return None
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = {}
        for label in self.seen:
            c = self._collapse(label)
            if c is not None:
                out[label] = c
        return out


def model_columns(available: list[str], include_leaking: bool) -> list[str]:
    """The feature columns a model trains on: what every input has, minus leaking ones."""
    cols = [c for c in COLUMNS if c in available]
    if not include_leaking:
        cols = [c for c in cols if c not in LEAKING]
    if not cols:
        raise DataError("no feature columns left to train on")
    return cols


def _is_capture_input(p: Path) -> Path | None:
    if p.is_file() and p.name.endswith(".json"):
        return p
    if p.is_dir() and (p / "manifest.json").is_file():
        return p / "manifest.json"
    return None


def load_dataset(paths: list[str | os.PathLike], seq_len: int, scheme: str = "34", label_column: str | None = None,
                 include_leaking: bool = False, max_per_class: int = 50000, seed: int = 0,
                 meter: MeterConfig | None = None, columns: list[str] | None = None,
                 progress: bool = False) -> Dataset:
    """Build sequences from CSV files/directories or capture manifests (not both at once).

    ``columns`` fixes the feature columns (evaluation of a trained model); otherwise the
    columns every input file has, minus leaking ones unless ``include_leaking``.
    """
    ps = [Path(p) for p in paths]
    for p in ps:
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
    manifests = [m for m in (_is_capture_input(p) for p in ps) if m is not None]
    if manifests and len(manifests) != len(ps):
        raise DataError("give either capture manifests or CSV files, not both in one run")
    if manifests:
        ds = _load_captures(manifests, seq_len, scheme, label_column is not None, include_leaking, max_per_class,
                              seed, meter or MeterConfig(), columns, progress)
    else:
        ds = _load_csvs(ps, seq_len, scheme, label_column, include_leaking, max_per_class, seed, columns, progress)
    ds.summary["label_column"] = label_column
    return ds


def _ordered_sources(f: Path, info: FileInfo, seq_len: int) -> tuple[dict[str, bool], list[dict[str, Any]]]:
    """Which sources of a file are in capture order, and the summary of each.

    A source is taken to be one capture in capture order when all its rows carry one
    label (each per-capture CSV of CICIoT2023 is one class); a source with several
    labels is a sample or a merge (``CICIoT2023_sample.csv``: class blocks of random
    rows), so its rows are not sequences. An empty source names no capture.
    """
    labels = source_labels(f, info)
    ordered = {s: bool(s) and len(labs) == 1 for s, labs in labels.items()}
    summary = [{"source": s, "labels": len(labels[s]), "capture_order": ordered[s]} for s in labels]
    for s, ok in ordered.items():
        if not ok and seq_len > 1:
            why = "no source named" if not s else f"{len(labels[s])} labels: a sample, not one capture"
            print(f"{f}: source {s!r}: rows are not in capture order ({why}); sequences of 1 row (T=1)",
                  file=sys.stderr, flush=True)
    return ordered, summary


def _load_csvs(paths: list[Path], seq_len: int, scheme: str, label_column: str | None, include_leaking: bool,
               max_per_class: int, seed: int, columns: list[str] | None, progress: bool) -> Dataset:
    """Sequences from CSV rows, built only from rows that are consecutive in one capture.

    A row's sequence is the last ``seq_len`` rows of its run: consecutive rows of one
    ``source`` (the capture a row came from) and one label, in file order. Nothing else
    says that two rows of a CSV are neighbours in time: the released CSVs and their
    samples are shuffled or sorted by class, and ten unrelated rows of one class make a
    "sequence" the daemon never sees (it flattered the 39-column sample from macro-F1
    0.64 at T=1 to 0.92 at T=10). So rows of a file without a ``source`` column, and of
    a source that holds several labels (a sample), are sequences of one row: T=1 for
    them whatever ``seq_len`` asks, a warning on stderr, and ``summary["sequences"]``.

    A one-row sequence is that row repeated ``seq_len`` times, so ``Dataset.x`` keeps
    the shape (n, T, F) of the model the run builds: it is what the daemon's sequence
    buffer feeds the model for a key seen once (it repeats the first window), so the
    model learns an input it will meet, and nothing pretends to have seen a history.
    (The alternative, building the model with T=1, would change the network the run
    was asked for behind its back.) ``groups`` are captures: one per source, one per
    file without sources, so a capture split holds out whole captures.
    """
    files = list_csv_files(paths)
    infos: list[FileInfo] = [inspect_file(f, label_column) for f in files]
    common = [c for c in COLUMNS if all(c in i.present for i in infos)]
    if columns is None:
        cols = model_columns(common, include_leaking)
    else:
        lacking = [c for c in columns if c not in common]
        if lacking:
            raise DataError(f"the data lacks columns the model uses: {', '.join(lacking)}")
        cols = list(columns)
    ci = np.array([INDEX[c] for c in cols])
    res = _Reservoir(max_per_class, seed)
    group_of: dict[tuple[int, str], int] = {}  # (file, source) -> group id
    rows_ordered = rows_single = 0
    seq_files: list[dict[str, Any]] = []
    for k, (f, info) in enumerate(zip(files, infos)):
        if progress:
            print(f"reading {f}", flush=True)
        if info.release == "meter":
            g = group_of.setdefault((k, ""), len(group_of))
            _meter_csv_sequences(f, info, scheme, label_column, ci, seq_len, g, res)
            seq_files.append({"path": str(f), "rule": "window keys"})
            continue
        if info.source_column:
            ordered, sources_summary = _ordered_sources(f, info, seq_len)
            seq_files.append({"path": str(f), "rule": "source", "sources": sources_summary})
        else:
            ordered = {}
            seq_files.append({"path": str(f), "rule": "none: rows are not in capture order"})
            if seq_len > 1:
                print(f"{f}: rows are not in capture order (no {SOURCE_COLUMN!r} column); sequences of 1 row (T=1)",
                      file=sys.stderr, flush=True)
        # runs of consecutive rows of one source and one label; the last T-1 rows carry
        # over to the next chunk so that a run crossing a chunk boundary keeps its context
        tail_x = np.zeros((0, len(cols)), np.float32)
        tail_lab = np.zeros(0, dtype=object)
        tail_src = np.zeros(0, dtype=object)
        tail_run = np.zeros(0, np.int64)
        next_run = 0
        for chunk in iter_chunks(f, scheme, label_column, info=info):
            n = len(chunk)
            src = chunk.sources if chunk.sources is not None else np.full(n, "", dtype=object)
            names, inv = np.unique(src.astype(str), return_inverse=True)
            in_order = np.array([ordered.get(s, False) for s in names], dtype=bool)[inv]
            rows_ordered += int(in_order.sum())
            rows_single += int(n - in_order.sum())
            lab_all = np.concatenate([tail_lab, chunk.labels])
            src_all = np.concatenate([tail_src, src])
            # a new run where the source or label changes, and at every row not in order
            brk = np.ones(n, dtype=bool)
            if len(tail_lab):
                brk = ((lab_all[len(tail_lab):] != lab_all[len(tail_lab) - 1:-1])
                       | (src != src_all[len(tail_src) - 1:-1]))
            else:
                brk[1:] = (chunk.labels[1:] != chunk.labels[:-1]) | (src[1:] != src[:-1])
            brk |= ~in_order
            # run ids continue the tail's: rows before the chunk's first break (if any) are
            # in the tail's last run, which is the latest one numbered
            run_new = next_run - 1 + np.cumsum(brk)
            next_run += int(brk.sum())
            x = np.concatenate([tail_x, chunk.features[:, ci]])
            run = np.concatenate([tail_run, run_new])
            rows = np.arange(chunk.first_row - len(tail_x), chunk.first_row + n)
            idx = last_t_index(run, rows.astype(np.float64), seq_len)
            new = slice(len(tail_x), len(x))  # the tail's sequences were emitted with its chunk
            seqs = x[idx[new]]
            grp = np.array([group_of.setdefault((k, s), len(group_of)) for s in names], dtype=np.int64)[inv]
            for label in np.unique(chunk.labels):
                m = chunk.labels == label
                res.add(str(label), seqs[m], grp[m], rows[new][m].astype(np.float64))
            keep = max(seq_len - 1, 0)
            tail_x, tail_lab = x[len(x) - keep:], lab_all[len(lab_all) - keep:]
            tail_src, tail_run = src_all[len(src_all) - keep:], run[len(run) - keep:]
    used = seq_len if rows_ordered else 1
    sequences: dict[str, Any] = {"seq_len_requested": seq_len, "seq_len_used": used,
                                 "rows_in_capture_order": rows_ordered, "rows_as_one_row_sequences": rows_single,
                                 "files": seq_files}
    if rows_single and seq_len > 1:
        sequences["why"] = (f"{rows_single} rows are not in capture order (no {SOURCE_COLUMN!r} column, or a source "
                            f"with several labels, i.e. a sample): each is a sequence of 1 row, repeated T={seq_len} "
                            "times as the daemon does for a key seen once")
    summary: dict[str, Any] = {
        "files": [{"path": str(i.path), "release": i.release, "rows": i.rows, "labels": i.labels,
                   "missing": i.missing, "nonfinite": i.nonfinite} for i in infos],
        "columns_common": common,
        "sequences": sequences,
    }
    if any(i.release == RELEASE_MERGED for i in infos):
        # the merged release measures some columns differently from the meter (docs/trainer.md)
        summary["meter_agreement"] = {
            "columns_that_differ": [c for c in cols if c not in MERGED_AGREES],
            "meter_compatible": meter_compatible_columns(cols, [RELEASE_MERGED]),
        }
    return _finish(res, cols, "csv", summary, seq_len, label_column is not None, scheme)


def _meter_csv_sequences(f: Path, info: FileInfo, scheme: str, label_column: str | None, ci: np.ndarray,
                         seq_len: int, g: int, res: _Reservoir) -> None:
    xs, labs, keys, times = [], [], [], []
    for chunk in iter_chunks(f, scheme, label_column, info=info):
        xs.append(chunk.features[:, ci])
        labs.append(chunk.labels)
        keys.append(chunk.keys)
        times.append(chunk.times)
    x = np.concatenate(xs)
    lab = np.concatenate(labs)
    key = np.concatenate(keys).astype(str)
    t = np.concatenate(times)
    idx = last_t_index(key, t, seq_len)
    seqs = x[idx]
    for label in np.unique(lab):
        m = lab == label
        res.add(str(label), seqs[m], np.full(int(m.sum()), g, np.int64), t[m])


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """Files of a capture manifest, with paths resolved; raises DataError when malformed."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not files:
        raise DataError(f"{path}: a manifest needs a non-empty \"files\" list")
    out = []
    for k, f in enumerate(files):
        if not isinstance(f, dict) or "path" not in f or "label" not in f:
            raise DataError(f"{path}: files[{k}] needs \"path\" and \"label\"")
        p = (path.parent / f["path"]).resolve()
        if not p.is_file():
            raise DataError(f"{path}: files[{k}]: {f['path']} does not exist")
        out.append({**f, "path": p})
    return out


def meter_capture(path: Path, meter_cfg: MeterConfig,
                  claim: Callable[[PacketBatch], np.ndarray] | None = None) -> WindowBatch:
    """All windows of one capture, through the daemon's meter (flushed at the end);
    frames ``claim`` flags (a detector hook: class index or -1 per frame) stay out."""
    m = Meter(meter_cfg.model_copy(update={"prealloc": False}))
    parts = []
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            if claim is not None and len(b):
                b = b.take(np.asarray(claim(b)) < 0)
            parts.append(m.process(b).windows)
    parts.append(m.flush().windows)
    return WindowBatch.concat(parts)


def _rule_labels(wb: WindowBatch, default: str, rules: list[dict[str, Any]]) -> np.ndarray:
    """Per-window labels: the file's label, overridden by host/time/ARP rules in order."""
    import ipaddress

    lab = np.full(len(wb), default, dtype=object)
    for r in rules:
        hosts = np.array([int(ipaddress.IPv4Address(h)) for h in r.get("hosts", [])], dtype=np.uint32)
        m = np.ones(len(wb), dtype=bool)
        if hosts.size:
            m &= np.isin(wb.src, hosts) | np.isin(wb.dst, hosts) | np.isin(wb.host, hosts)
        if r.get("arp"):
            m &= wb.proto == POOL_PROTO_ARP
        if "start" in r:
            m &= wb.last_ts >= float(r["start"])
        if "end" in r:
            m &= wb.first_ts <= float(r["end"])
        lab[m] = r["label"]
    return lab


def _load_captures(manifests: list[Path], seq_len: int, scheme: str, as_is: bool, include_leaking: bool,
                   max_per_class: int, seed: int, meter_cfg: MeterConfig, columns: list[str] | None,
                   progress: bool) -> Dataset:
    cols = list(columns) if columns is not None else model_columns(list(COLUMNS), include_leaking)
    ci = np.array([INDEX[c] for c in cols])
    res = _Reservoir(max_per_class, seed)
    files_summary = []
    g = 0
    for man in manifests:
        for f in read_manifest(man):
            if progress:
                print(f"metering {f['path'].name} ({f['label']})", flush=True)
            wb = meter_capture(f["path"], meter_cfg)
            raw = _rule_labels(wb, str(f["label"]), list(f.get("rules", [])))
            lab = raw if as_is else np.array([label_in_scheme(v, scheme) for v in raw], dtype=object)
            bad = [str(v) for v, m in zip(raw, lab) if m is None]
            if bad:
                raise DataError(f"{man}: {f['path'].name}: label {bad[0]!r} is not a CICIoT2023 class "
                                "(use --label-column to take labels as they are)")
            seqs = window_sequences(wb, ci, seq_len)
            for label in np.unique(lab):
                m = lab == label
                res.add(str(label), seqs[m], np.full(int(m.sum()), g, np.int64), wb.first_ts[m])
            files_summary.append({"path": str(f["path"]), "label": str(f["label"]), "windows": len(wb),
                                  "packets": int(wb.packets.sum())})
            g += 1
    return _finish(res, cols, "captures", {"files": files_summary, "meter": meter_cfg.model_dump()},
                   seq_len, as_is, scheme)


def _finish(res: _Reservoir, cols: list[str], source: str, summary: dict[str, Any], seq_len: int, as_is: bool,
            scheme: str) -> Dataset:
    kept = res.result()
    if not kept:
        raise DataError("no training data: the inputs hold no rows")
    classes = sorted(kept)
    xs, ys, gs, os_ = [], [], [], []
    for k, c in enumerate(classes):
        x, g, o = kept[c]
        xs.append(x)
        ys.append(np.full(len(x), k, np.int64))
        gs.append(g)
        os_.append(o)
    summary.update({
        "source": source, "seq_len": seq_len, "label_scheme": "as-is" if as_is else scheme,
        "sequences_seen": dict(res.seen), "sequences_kept": {c: int(len(kept[c][0])) for c in classes},
        "max_per_class": res.cap,
    })
    return Dataset(x=np.concatenate(xs), y=np.concatenate(ys), classes=classes, columns=cols,
                   groups=np.concatenate(gs), order=np.concatenate(os_).astype(np.float64), source=source,
                   summary=summary)


def iter_batches(n: int, batch: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index batches over ``n`` items, shuffled when ``rng`` is given."""
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, batch):
        yield idx[i:i + batch]
