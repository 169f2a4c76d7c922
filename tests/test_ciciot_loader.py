"""The CICIoT2023 CSV loader (trainer.data): both releases, the meter's own CSV, bad input.

Real data: the 39-column sample and the 46-column excerpt in tests/data. Small CSVs
written to tmp_path cover what the real files do not (upper-case labels, inf, bad cells).
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ids_daemon.features.ciciot import COLUMNS, IDENTITY_COLUMNS, INDEX
from trainer.data import (
    RELEASE_MERGED,
    RELEASE_METER,
    RELEASE_ORIGINAL,
    RELEASE_PARTIAL,
    LoaderError,
    inspect_file,
    iter_chunks,
    list_csv_files,
)

ROOT = Path(__file__).resolve().parents[1]
from .paths import DATA, SHARED_DATA  # noqa: E402
SAMPLE_39 = DATA / "ciciot2023_sample_39col.csv"
EXCERPT_46 = DATA / "ciciot2023_excerpt_46col.csv"
from .helpers import EXE  # noqa: E402
PCAP = ROOT / "ids_daemon" / "data" / "sample.pcap"

MERGED_MISSING = ["flow_duration", "Srate", "Drate", "urg_count", "Magnitue", "Radius", "Covariance", "Weight"]
FAMILY_COUNTS = {"Benign": 2000, "BruteForce": 2000, "DDoS": 2000, "DoS": 2000, "Malware": 2000, "Mirai": 2000,
                 "Recon": 2000, "Spoofing": 2000, "WebAttack": 2000, "Uploading": 1252}


def raw_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        r = csv.reader(fh)
        header = next(r)
        return header, list(r)


def merged_header() -> list[str]:
    """The 39 feature columns of the merged release, in its order (from the real sample)."""
    with open(SAMPLE_39, newline="") as fh:
        header = next(csv.reader(fh))
    return [h for h in header if not h.startswith("label_")]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def merged_row(**values: object) -> list[object]:
    """One merged-release row: every feature 0.0 unless given (names as in the header)."""
    return [values.get(h, 0.0) for h in merged_header()]


def load_all(path: Path, **kw) -> tuple[np.ndarray, np.ndarray, list]:
    chunks = list(iter_chunks(path, **kw))
    feats = np.concatenate([c.features for c in chunks])
    labels = np.concatenate([c.labels for c in chunks])
    return feats, labels, chunks


# ----------------------------------------------------------------------------- 39-column sample


def test_merged_sample_layout() -> None:
    info = inspect_file(SAMPLE_39, label_column="label_multiclass")
    assert info.release == RELEASE_MERGED
    assert info.missing == MERGED_MISSING
    assert info.present == [c for c in COLUMNS if c not in MERGED_MISSING]
    assert len(info.present) == 38  # 39 minus IGMP, with Time_To_Live as Duration
    assert "Duration" in info.present and info.renamed == {"Time_To_Live": "Duration"}
    assert info.ignored == ["IGMP", "label_binary"]
    assert info.label_column == "label_multiclass" and info.labels_as_is
    assert info.rows == 0 and info.labels == {}  # header only so far


def test_merged_sample_has_no_label_column_of_its_own() -> None:
    with pytest.raises(LoaderError) as e:
        inspect_file(SAMPLE_39)
    msg = str(e.value)
    assert str(SAMPLE_39) in msg and "--label-column" in msg and "label_multiclass" in msg
    assert "\n" not in msg


def test_merged_sample_streams_every_row_with_labels_as_they_are() -> None:
    info = inspect_file(SAMPLE_39, label_column="label_multiclass")
    chunks = list(iter_chunks(SAMPLE_39, label_column="label_multiclass", chunk_rows=5000, info=info))
    assert [c.first_row for c in chunks] == [0, 5000, 10000, 15000]
    assert [len(c) for c in chunks] == [5000, 5000, 5000, 4252]
    assert sum(len(c) for c in chunks) == 19252 == info.rows
    for c in chunks:
        assert c.features.shape == (len(c), 46) and c.features.dtype == np.float32
        assert c.labels.dtype == object and c.keys is None and c.times is None
        assert c.path == str(SAMPLE_39)
    labels = np.concatenate([c.labels for c in chunks])
    values, counts = np.unique(labels, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == FAMILY_COUNTS
    assert info.labels == FAMILY_COUNTS
    # the sample holds no inf or NaN; missing columns are not "seen", so not counted
    assert info.nonfinite == {} and info.infinite == {}


def test_merged_sample_values_equal_the_csv_text() -> None:
    header, rows = raw_rows(SAMPLE_39)
    feats, labels, _ = load_all(SAMPLE_39, label_column="label_multiclass", chunk_rows=5000)
    for r in (0, 1, 4999, 5000, 9999, 12345, 17000, 19251):  # chunk edges included
        for name, text in zip(header, rows[r]):
            if name in ("IGMP", "label_binary"):
                continue
            if name == "label_multiclass":
                assert labels[r] == text
                continue
            col = "Duration" if name == "Time_To_Live" else name
            assert feats[r, INDEX[col]] == np.float32(float(text)), (r, name, text)
        for col in MERGED_MISSING:
            assert np.isnan(feats[r, INDEX[col]])
    # Duration (the TTL) really comes from Time_To_Live: row 0 is "82.2" there
    assert header[2] == "Time_To_Live" and rows[0][2] == "82.2"
    assert feats[0, INDEX["Duration"]] == np.float32(82.2)


def test_scheme_none_takes_the_label_column_as_it_is(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "m.csv", merged_header() + ["label"],
                  [merged_row() + ["whatever"], merged_row() + [" DDoS "]])
    _, labels, _ = load_all(p, scheme=None)
    assert labels.tolist() == ["whatever", "DDoS"]


# ----------------------------------------------------------------------------- 46-column excerpt


def test_original_excerpt_labels_in_each_scheme() -> None:
    header, rows = raw_rows(EXCERPT_46)
    raw = [r[header.index("label")] for r in rows]
    info = inspect_file(EXCERPT_46)
    assert info.release == RELEASE_ORIGINAL
    assert info.present == list(COLUMNS) and info.missing == [] and info.renamed == {}
    assert info.label_column == "label" and not info.labels_as_is
    assert info.ignored == ["final_label"]

    _, l34, _ = load_all(EXCERPT_46, scheme="34")
    _, l8, _ = load_all(EXCERPT_46, scheme="8")
    _, l2, _ = load_all(EXCERPT_46, scheme="2")
    assert l34.tolist() == raw  # already the canonical spelling
    i = raw.index("DDoS-SYN_Flood")
    assert (l8[i], l2[i]) == ("DDoS", "Attack")
    i = raw.index("BenignTraffic")
    assert (l8[i], l2[i]) == ("Benign", "Benign")
    i = raw.index("Mirai-greeth_flood")
    assert (l8[i], l2[i]) == ("Mirai", "Attack")
    i = raw.index("Recon-HostDiscovery")
    assert (l8[i], l2[i]) == ("Recon", "Attack")
    assert l2.tolist().count("Benign") == raw.count("BenignTraffic") == 3


def test_original_excerpt_values_and_row_count_for_any_chunk_size() -> None:
    header, rows = raw_rows(EXCERPT_46)
    for chunk_rows in (1, 4, 13, 1000):
        feats, labels, chunks = load_all(EXCERPT_46, chunk_rows=chunk_rows)
        assert len(feats) == len(labels) == 13
        assert [c.first_row for c in chunks] == list(range(0, 13, chunk_rows))
    for r, row in enumerate(rows):
        for name, text in zip(header[:46], row[:46]):
            assert feats[r, INDEX[name]] == np.float32(float(text)), (r, name)


def test_capitalised_Label_column_is_found(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "c.csv", list(COLUMNS) + ["Label"], [[0.0] * 46 + ["XSS"]])
    info = inspect_file(p)
    assert info.label_column == "Label"
    _, labels, _ = load_all(p, scheme="8")
    assert labels.tolist() == ["Web"]


# ----------------------------------------------------------------------------- merged spellings, inf, NaN


def test_merged_upper_case_labels_map_to_canonical_names(tmp_path: Path) -> None:
    spelled = ["DDOS-RSTFINFLOOD", "BENIGN", "MIRAI-GREETH_FLOOD", "DICTIONARYBRUTEFORCE", "MITM-ARPSPOOFING",
               "DDOS-SYNONYMOUSIP_FLOOD", "UPLOADING_ATTACK"]
    p = write_csv(tmp_path / "merged.csv", merged_header() + ["label"], [merged_row() + [s] for s in spelled])
    assert inspect_file(p).release == RELEASE_MERGED
    _, l34, _ = load_all(p)
    assert l34.tolist() == ["DDoS-RSTFINFlood", "BenignTraffic", "Mirai-greeth_flood", "DictionaryBruteForce",
                            "MITM-ArpSpoofing", "DDoS-SynonymousIP_Flood", "Uploading_Attack"]
    info = inspect_file(p)
    _, l8, _ = load_all(p, scheme="8", info=info)
    assert l8.tolist() == ["DDoS", "Benign", "Mirai", "BruteForce", "Spoofing", "DDoS", "Web"]
    assert info.labels == {"DDoS": 2, "Benign": 1, "Mirai": 1, "BruteForce": 1, "Spoofing": 1, "Web": 1}
    _, l2, _ = load_all(p, scheme="2")
    assert l2.tolist() == ["Attack", "Benign"] + ["Attack"] * 5


def test_inf_and_nan_are_kept_and_counted(tmp_path: Path) -> None:
    rows = [
        merged_row(Rate="inf", IAT="0.5") + ["BENIGN"],
        merged_row(Rate="-inf", IAT="") + ["BENIGN"],
        merged_row(Rate="12.5", IAT="NaN") + ["BENIGN"],
        merged_row(Rate="inf", IAT="nan", Std="Infinity") + ["BENIGN"],
    ]
    p = write_csv(tmp_path / "inf.csv", merged_header() + ["label"], rows)
    info = inspect_file(p)
    feats, _, _ = load_all(p, info=info, chunk_rows=3)  # counts add up over chunks
    rate, iat = feats[:, INDEX["Rate"]], feats[:, INDEX["IAT"]]
    assert rate[0] == np.inf and rate[1] == -np.inf and rate[2] == np.float32(12.5) and rate[3] == np.inf
    assert iat[0] == np.float32(0.5) and np.isnan(iat[1:]).all()
    assert feats[3, INDEX["Std"]] == np.inf
    assert info.nonfinite == {"Rate": 3, "IAT": 3, "Std": 1}
    assert info.infinite == {"Rate": 3, "Std": 1}
    assert info.rows == 4

    # a second pass starts the counts again instead of doubling them
    list(iter_chunks(p, info=info))
    assert info.nonfinite == {"Rate": 3, "IAT": 3, "Std": 1} and info.rows == 4


def test_a_missing_column_is_reported_and_comes_out_nan(tmp_path: Path) -> None:
    header = [c for c in COLUMNS if c != "Srate"] + ["label"]
    p = write_csv(tmp_path / "partial.csv", header, [[1.0] * 45 + ["XSS"], [2.0] * 45 + ["SqlInjection"]])
    info = inspect_file(p)
    assert info.release == RELEASE_PARTIAL
    assert info.missing == ["Srate"] and len(info.present) == 45
    feats, labels, _ = load_all(p, info=info)
    assert np.isnan(feats[:, INDEX["Srate"]]).all()
    assert (feats[:, INDEX["Rate"]] == [1.0, 2.0]).all()
    assert info.nonfinite == {}  # absent is not "non-finite values seen"
    assert labels.tolist() == ["XSS", "SqlInjection"]


def test_header_whitespace_and_bom_are_stripped(tmp_path: Path) -> None:
    header = [f" {c} " for c in COLUMNS] + [" label"]
    p = tmp_path / "ws.csv"
    with open(p, "w", newline="", encoding="utf-8-sig") as fh:  # with a BOM
        csv.writer(fh).writerows([header, [3.0] * 46 + [" BenignTraffic "]])
    info = inspect_file(p)
    assert info.release == RELEASE_ORIGINAL and info.missing == [] and info.label_column == "label"
    feats, labels, _ = load_all(p)
    assert (feats == 3.0).all() and labels.tolist() == ["BenignTraffic"]


# ----------------------------------------------------------------------------- errors


def test_unknown_label_names_file_row_and_value(tmp_path: Path) -> None:
    rows = [merged_row() + ["BENIGN"]] * 4 + [merged_row() + ["Exfiltration"]]
    p = write_csv(tmp_path / "unk.csv", merged_header() + ["label"], rows)
    with pytest.raises(LoaderError) as e:
        list(iter_chunks(p, chunk_rows=2))  # the bad row is in the third chunk
    msg = str(e.value)
    assert str(p) in msg and "row 5" in msg and "'Exfiltration'" in msg and "--label-column" in msg
    # taken as they are, the same file loads
    _, labels, _ = load_all(p, label_column="label")
    assert labels.tolist()[-1] == "Exfiltration"


def test_empty_label_names_the_row(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "el.csv", list(COLUMNS) + ["label"],
                  [[0.0] * 46 + ["XSS"], [0.0] * 46 + ["  "], [0.0] * 46 + ["XSS"]])
    with pytest.raises(LoaderError, match=r"row 2: empty label"):
        list(iter_chunks(p))


def test_no_label_column_at_all(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "nl.csv", list(COLUMNS), [[0.0] * 46])
    with pytest.raises(LoaderError, match="no label column"):
        inspect_file(p)
    with pytest.raises(LoaderError, match="no label column"):
        list(iter_chunks(p))
    info = inspect_file(p, require_label=False)
    assert info.label_column == "" and info.release == RELEASE_ORIGINAL
    with pytest.raises(LoaderError, match="no column 'klass'"):
        inspect_file(p, label_column="klass")


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(LoaderError, match="empty file"):
        inspect_file(empty)
    with pytest.raises(LoaderError, match="empty file"):
        list(iter_chunks(empty))
    header_only = write_csv(tmp_path / "h.csv", list(COLUMNS) + ["label"], [])
    assert inspect_file(header_only).release == RELEASE_ORIGINAL  # the header itself is fine
    with pytest.raises(LoaderError, match="has a header but no rows") as e:
        list(iter_chunks(header_only))
    assert str(header_only) in str(e.value)


def test_no_feature_columns(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "other.csv", ["a", "b", "label"], [[1, 2, "BENIGN"]])
    with pytest.raises(LoaderError, match="no CICIoT2023 feature columns"):
        inspect_file(p)


@pytest.mark.parametrize("bad", ["abc", "True", "1.2.3", "0x10"])
def test_non_numeric_value_names_column_and_row(tmp_path: Path, bad: str) -> None:
    rows = [merged_row() + ["BENIGN"] for _ in range(6)]
    rows[4] = merged_row(**{"Tot sum": bad}) + ["BENIGN"]
    p = write_csv(tmp_path / "nn.csv", merged_header() + ["label"], rows)
    with pytest.raises(LoaderError) as e:
        list(iter_chunks(p, chunk_rows=2))  # row 5 is in the third chunk
    msg = str(e.value)
    assert str(p) in msg and "row 5" in msg and "'Tot sum'" in msg and repr(bad) in msg and "\n" not in msg


def test_a_row_with_too_many_fields_is_an_error(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "wide.csv", list(COLUMNS) + ["label"],
                  [[0.0] * 46 + ["XSS"], [0.0] * 47 + ["XSS"]])
    with pytest.raises(LoaderError, match="malformed CSV"):
        list(iter_chunks(p))


def test_duration_and_time_to_live_together_are_ambiguous(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "both.csv", list(COLUMNS) + ["Time_To_Live", "label"], [[0.0] * 47 + ["XSS"]])
    with pytest.raises(LoaderError, match="both 'Time_To_Live' and 'Duration'"):
        inspect_file(p)


def test_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="unknown label scheme"):
        list(iter_chunks(EXCERPT_46, scheme="7"))


# ----------------------------------------------------------------------------- the meter's own CSV


@pytest.fixture(scope="module")
def meter_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ids-daemon features` output for the bundled sample capture, with a label column added."""
    out = tmp_path_factory.mktemp("meter") / "windows.csv"
    p = subprocess.run([EXE, "features", "-r", str(PCAP), "-o", str(out)], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    df = pd.read_csv(out, keep_default_na=False)
    df["label"] = np.where(np.arange(len(df)) % 3 == 0, "BenignTraffic", "DDoS-SYN_Flood")
    df.to_csv(out, index=False)
    return out


def test_meter_csv_is_detected_with_keys_and_times(meter_csv: Path) -> None:
    header, rows = raw_rows(meter_csv)
    assert header == list(COLUMNS) + list(IDENTITY_COLUMNS) + ["label"]
    info = inspect_file(meter_csv)
    assert info.release == RELEASE_METER and info.missing == [] and info.ignored == []
    chunks = list(iter_chunks(meter_csv, scheme="2", chunk_rows=100, info=info))
    assert sum(len(c) for c in chunks) == len(rows) == info.rows > 100
    keys = np.concatenate([c.keys for c in chunks])
    times = np.concatenate([c.times for c in chunks])
    feats = np.concatenate([c.features for c in chunks])
    labels = np.concatenate([c.labels for c in chunks])
    assert keys.dtype == object and times.dtype == np.float64
    ki, ti = header.index("window_key"), header.index("first_ts")
    assert keys.tolist() == [r[ki] for r in rows]
    assert times.tolist() == [float(r[ti]) for r in rows]  # full float64 precision
    assert times[0] > 1e9  # epoch seconds
    for r in (0, 57, len(rows) - 1):
        for i, name in enumerate(COLUMNS):
            assert feats[r, i] == np.float32(float(rows[r][i])), (r, name)
    assert set(labels.tolist()) == {"Benign", "Attack"}
    assert info.labels == {"Benign": (len(rows) + 2) // 3, "Attack": len(rows) - (len(rows) + 2) // 3}


# ----------------------------------------------------------------------------- list_csv_files


def test_list_csv_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.csv", "d/a.csv", "d/sub/c.CSV", "d/notes.txt"):
        (tmp_path / name).write_text("x\n")
    single = tmp_path / "single.data"
    single.write_text("x\n")
    found = list_csv_files([tmp_path / "d", str(single), tmp_path / "d" / "a.csv"])
    assert found == [tmp_path / "d" / "a.csv", tmp_path / "d" / "b.csv", tmp_path / "d" / "sub" / "c.CSV", single]
    with pytest.raises(LoaderError, match="no such file"):
        list_csv_files([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoaderError, match="no CSV files"):
        list_csv_files([tmp_path / "empty"])


# ----------------------------------------------------------------------------- sequences from CSV rows


def _seq_csv(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    """Merged-release rows whose ``Tot sum`` is the row number; (label, source or None)."""
    with_source = any(s is not None for _, s in rows)
    header = merged_header() + ["label"] + (["source"] if with_source else [])
    out = []
    for k, (label, source) in enumerate(rows):
        out.append(merged_row(**{"Tot sum": float(k)}) + [label] + ([source] if with_source else []))
    return write_csv(path, header, out)


def _row_ids(ds) -> np.ndarray:
    return ds.x[:, :, ds.columns.index("Tot sum")].astype(int)


def test_rows_without_capture_order_are_one_row_sequences(tmp_path: Path, capsys) -> None:
    """A CSV sorted by label (like the 39-column sample) says nothing about time: T=1,
    the one row repeated T times, a warning, and the summary says so."""
    from trainer.dataset import load_dataset

    p = _seq_csv(tmp_path / "sorted.csv", [("BenignTraffic", None)] * 5 + [("DDoS-SYN_Flood", None)] * 5)
    ds = load_dataset([p], seq_len=4)
    assert ds.x.shape == (10, 4, len(ds.columns))
    ids = _row_ids(ds)
    assert (ids == ids[:, :1]).all() and sorted(ids[:, 0].tolist()) == list(range(10))
    err = capsys.readouterr().err
    assert f"{p}: rows are not in capture order" in err and "sequences of 1 row (T=1)" in err
    seq = ds.summary["sequences"]
    assert seq["seq_len_requested"] == 4 and seq["seq_len_used"] == 1 and "not in capture order" in seq["why"]
    assert seq["rows_as_one_row_sequences"] == 10 and seq["rows_in_capture_order"] == 0
    # T=1 asked: nothing to warn about
    ds = load_dataset([p], seq_len=1)
    assert ds.x.shape[1] == 1 and ds.summary["sequences"]["seq_len_used"] == 1
    assert "capture order" not in capsys.readouterr().err


@pytest.mark.parametrize("chunk_rows", [200_000, 2, 3])
def test_sequences_never_cross_a_source_or_a_label(tmp_path: Path, capsys, monkeypatch, chunk_rows: int) -> None:
    import trainer.dataset as dataset
    from trainer.dataset import load_dataset

    real_iter = dataset.iter_chunks
    monkeypatch.setattr(dataset, "iter_chunks", lambda *a, **kw: real_iter(*a, chunk_rows=chunk_rows, **kw))
    B, S = "BenignTraffic", "DDoS-SYN_Flood"
    rows = [(B, "capA")] * 4 + [(S, "capB")] * 3 + [(B, "capA")] * 2 + [(S, "capC")] * 2 + [(B, "capC")] \
        + [(B, "sample")] * 2 + [(S, "sample")] * 2 + [(S, "capB")] * 2
    p = _seq_csv(tmp_path / "cap.csv", rows)
    ds = load_dataset([p], seq_len=3)
    ids = _row_ids(ds)
    assert sorted(ids[:, -1].tolist()) == list(range(len(rows)))  # every row ends one sequence
    by_end = {int(r[-1]): r.tolist() for r in ids}
    # a sequence is consecutive rows of one source and one label (its run), the run's
    # first row repeated in front of a short one
    assert by_end[2] == [0, 1, 2] and by_end[3] == [1, 2, 3] and by_end[0] == [0, 0, 0]
    assert by_end[4] == [4, 4, 4] and by_end[6] == [4, 5, 6]
    assert by_end[7] == [7, 7, 7] and by_end[8] == [7, 7, 8]  # capA again after capB: a new run
    # a source with two labels is a sample or a merge, not one capture of CICIoT2023
    assert all(by_end[k] == [k, k, k] for k in (9, 10, 11, 12, 13, 14, 15))
    assert by_end[16] == [16, 16, 16] and by_end[17] == [16, 16, 17]
    for r in ids:
        assert len({rows[i] for i in r}) == 1 and list(r) == sorted(r)
    err = capsys.readouterr().err
    assert "source 'sample': rows are not in capture order" in err and "source 'capC'" in err and "capA" not in err
    seq = ds.summary["sequences"]
    assert seq["seq_len_used"] == 3 and seq["rows_as_one_row_sequences"] == 7
    assert seq["rows_in_capture_order"] == len(rows) - 7
    # groups are captures (sources), not files
    src_of = {k: s for k, (_, s) in enumerate(rows)}
    groups: dict[str, set[int]] = {}
    for g, r in zip(ds.groups, ids):
        groups.setdefault(src_of[int(r[-1])], set()).add(int(g))
    assert all(len(v) == 1 for v in groups.values()) and len(set().union(*groups.values())) == 4


def test_gzip_csv_reads_like_the_plain_file(tmp_path: Path) -> None:
    import gzip
    import shutil

    plain = _seq_csv(tmp_path / "p.csv", [("BenignTraffic", "a")] * 3 + [("DDoS-SYN_Flood", "b")] * 2)
    gz = tmp_path / "d" / "p.csv.gz"
    gz.parent.mkdir()
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    disguised = tmp_path / "gz_named.csv"  # recognised by its bytes, not its name
    shutil.copy(gz, disguised)
    assert list_csv_files([tmp_path / "d"]) == [gz]
    want, want_lab, _ = load_all(plain)
    for f in (gz, disguised):
        info = inspect_file(f)
        assert info.compressed and info.release == RELEASE_MERGED and info.source_column == "source"
        feats, labels, chunks = load_all(f, chunk_rows=2)
        np.testing.assert_array_equal(feats, want)
        assert labels.tolist() == want_lab.tolist()
        assert np.concatenate([c.sources for c in chunks]).tolist() == ["a"] * 3 + ["b"] * 2
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(LoaderError, match="broken.csv.gz"):
        list(iter_chunks(broken))


@pytest.mark.shared_data("ciciot2023_real_39col.csv.gz")
def test_real_rows_in_capture_order_make_sequences_only_within_a_capture(capsys) -> None:
    from trainer.dataset import load_dataset

    ds = load_dataset([SHARED_DATA / "ciciot2023_real_39col.csv.gz"], seq_len=4, label_column="family")
    seq = ds.summary["sequences"]
    assert seq["seq_len_used"] == 4 and seq["rows_in_capture_order"] == 92029
    assert seq["rows_as_one_row_sequences"] == 105680 - 92029  # the two samples among the sources
    assert len(np.unique(ds.groups)) == 14
    assert capsys.readouterr().err.count("rows are not in capture order") == 2


def test_merged_release_columns_that_agree_with_the_meter(tmp_path: Path) -> None:
    from trainer.data.ciciot import MERGED_ABSENT, MERGED_AGREES, MERGED_DIFFERS, meter_compatible_columns
    from trainer.dataset import load_dataset

    # every one of the 46 columns is judged exactly once
    judged = list(MERGED_AGREES) + list(MERGED_DIFFERS) + list(MERGED_ABSENT)
    assert sorted(judged) == sorted(COLUMNS)
    assert sorted(MERGED_ABSENT) == sorted(MERGED_MISSING)
    cols = ["Header_Length", "Rate", "Tot size", "syn_flag_number", "Variance"]
    assert meter_compatible_columns(cols, [RELEASE_MERGED]) == ["Tot size", "syn_flag_number"]
    assert meter_compatible_columns(cols, [RELEASE_ORIGINAL, RELEASE_METER]) == cols
    # the real rows back the judgement: Variance is Std², Tot size is AVG, Tot sum is Number x AVG
    feats, _, _ = load_all(SAMPLE_39, label_column="label_multiclass")
    c = {n: feats[:, INDEX[n]].astype(np.float64) for n in ("Variance", "Std", "Tot size", "AVG", "Tot sum", "Number")}
    assert np.allclose(c["Variance"], c["Std"] ** 2, rtol=1e-3, atol=1e-2)
    assert np.allclose(c["Tot size"], c["AVG"], rtol=1e-5)
    assert np.allclose(c["Tot sum"], c["Number"] * c["AVG"], rtol=1e-3)
    # and the summary of a run on that release says which of its columns differ
    ds = load_dataset([SAMPLE_39], seq_len=1, label_column="label_multiclass")
    agree = ds.summary["meter_agreement"]
    assert "Header_Length" in agree["columns_that_differ"] and "Tot size" in agree["meter_compatible"]
    assert set(agree["meter_compatible"]) <= set(MERGED_AGREES)
