"""The model, its artifacts, and the trainer end to end (real CSV rows, real synthetic captures)."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ids_daemon.features.ciciot import COLUMNS, LEAKING
from ids_daemon.model.artifacts import ModelError, bundled_model_dir, load_model, read_metadata, save_model
from ids_daemon.model.encoding import FeatureEncoder
from ids_daemon.model.lstm import LSTMConfig, RealDataLSTMPredictor
from ids_daemon.model.sequences import last_t_index
from trainer.split import make_split

ROOT = Path(__file__).resolve().parents[1]
from .paths import DATA  # noqa: E402
from .helpers import TRAINER  # noqa: E402
METRIC_KEYS = {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "split"}


def trainer(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINER, *args], capture_output=True, text=True, timeout=timeout)


# ---- the network and its files ------------------------------------------------------------

def _tiny_model(tmp_path: Path, columns: list[str] | None = None) -> Path:
    cols = columns or ["Rate", "Tot size", "syn_flag_number"]
    x = np.random.default_rng(0).lognormal(size=(200, len(cols)))
    enc = FeatureEncoder(cols, "ple", 4).fit(x)
    model = RealDataLSTMPredictor(LSTMConfig(input_size=enc.output_size, hidden_size=8, num_layers=1, num_classes=3))
    return save_model(tmp_path / "m", model, enc, ["BenignTraffic", "DDoS-SYN_Flood", "Recon-PortScan"],
                      families={"BenignTraffic": "Benign", "DDoS-SYN_Flood": "DDoS", "Recon-PortScan": "Recon"},
                      window=10, seq_len=3, label_scheme="34")


def test_forward_shape_and_probabilities() -> None:
    cfg = LSTMConfig(input_size=5, hidden_size=16, num_layers=2, num_classes=4, bidirectional=True)
    m = RealDataLSTMPredictor(cfg)
    x = np.random.default_rng(1).normal(size=(7, 3, 5)).astype(np.float32)
    assert m(torch.from_numpy(x)).shape == (7, 4)
    p = m.predict_attack_probability(x)
    assert p.shape == (7, 4) and np.allclose(p.sum(1), 1.0, atol=1e-5) and (p >= 0).all()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    d = _tiny_model(tmp_path)
    loaded = load_model(d)
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["weights_sha256"] and meta["seq_len"] == 3 and meta["window"] == 10
    assert loaded.classes == ["BenignTraffic", "DDoS-SYN_Flood", "Recon-PortScan"]
    x = np.random.default_rng(2).lognormal(size=(4, 3, 3))
    p = loaded.model.predict_attack_probability(loaded.encoder.transform(x))
    assert p.shape == (4, 3)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    d = _tiny_model(tmp_path)
    w = d / "weights.pt"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(d)


def test_weights_that_would_run_code_are_refused(tmp_path: Path) -> None:
    d = _tiny_model(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (d / "weights.pt").write_bytes(pickle.dumps({"x": Evil()}))
    meta = json.loads((d / "metadata.json").read_text())
    from ids_daemon.model.artifacts import sha256_file

    meta["weights_sha256"] = sha256_file(d / "weights.pt")  # even with a matching checksum
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="cannot read the weights"):
        load_model(d)
    assert not marker.exists()


def test_column_mismatch_and_bad_directories_are_refused(tmp_path: Path) -> None:
    d = _tiny_model(tmp_path)
    meta = json.loads((d / "metadata.json").read_text())
    meta["features"]["columns"][0] = "Bytes_per_second"
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="columns the meter does not compute: Bytes_per_second"):
        load_model(d)
    with pytest.raises(ModelError, match="no such model directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no metadata.json"):
        load_model(tmp_path / "empty")
    e = _tiny_model(tmp_path / "second")
    meta = json.loads((e / "metadata.json").read_text())
    meta["lstm"]["hidden_size"] = 9  # metadata and weights disagree
    (e / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(e)


def test_bundled_model_loads_and_fits_the_meter() -> None:
    loaded = load_model()
    assert loaded.path == bundled_model_dir()
    assert set(loaded.columns) <= set(COLUMNS) and not set(loaded.columns) & set(LEAKING)
    # families, trained on the real corpus plus synthetic traffic, TTL left out (a shortcut)
    assert loaded.classes[0] == "Benign" and {"DDoS", "DoS", "Recon", "Web", "BruteForce"} <= set(loaded.classes)
    # nor Rate (a site's pacing: docs/detection.md, lockbox round 2), nor the service-port columns
    # (which port, not what a flow does: lockbox round 8)
    assert not {"Duration", "Rate"} & set(loaded.columns) and loaded.meta["lstm_skips_arp"] is True
    assert not {"HTTP", "HTTPS", "Telnet", "SSH", "IRC", "SMTP", "DNS", "DHCP"} & set(loaded.columns)
    # its report is the by-source evaluation on real captures, not a synthetic score
    m = json.loads((bundled_model_dir() / "metrics.json").read_text())
    overall = m["by_source"]["lstm"]
    # (the development repositories: the lockbox's are left out of it)
    assert overall["benign_packets"] > 55_000 and overall["attack_packets"] > 80_000
    assert overall["benign_flagged_share"] < 0.05 and overall["attack_flagged_share"] > 0.75


# ---- encoding, sequences, splits ----------------------------------------------------------------

def test_encoder_handles_inf_nan_and_round_trips() -> None:
    x = np.random.default_rng(3).lognormal(size=(500, 2))
    x[0, 0] = np.inf
    x[1, 1] = np.nan
    x[2, 0] = -np.inf
    enc = FeatureEncoder(["Rate", "Tot size"], "ple", 8).fit(x)
    y = enc.transform(x)
    assert y.shape == (500, 18) and np.isfinite(y).all()
    # +inf is treated as the largest training value: it lands in the top bin
    assert y[0, 2:10].sum() == pytest.approx(8.0)
    again = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert np.array_equal(again.transform(x), y)
    bad = enc.to_dict()
    bad["mu"] = bad["mu"][:1]
    with pytest.raises(ValueError):
        FeatureEncoder.from_dict(bad)


def test_sequences_are_the_last_t_windows_of_one_key() -> None:
    keys = np.array(["a", "b", "a", "a", "b", "a"])
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    idx = last_t_index(keys, t, 3)
    assert idx.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 2], [0, 2, 3], [1, 1, 4], [2, 3, 5]]


def test_splits_keep_captures_and_time_apart() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 50)
    y = np.repeat([0, 0, 0, 1, 1, 1, 2, 2], 50)
    order = np.tile(np.arange(50.0), 8)
    s = make_split(y, groups, order, "capture", 0.3, 0.15, 0)
    assert not set(groups[s.test]) & set(groups[np.r_[s.train, s.val]])
    assert set(y[s.test]) == {0, 1, 2}
    s = make_split(y, groups, order, "time", 0.3, 0.15, 0)
    for g in range(8):
        tr = order[np.r_[s.train, s.val]][groups[np.r_[s.train, s.val]] == g]
        te = order[s.test][groups[s.test] == g]
        assert tr.max() < te.min()
    s = make_split(y, groups, order, "auto", 0.3, 0.15, 0)
    assert s.method == "capture"
    one_capture = make_split(y, np.zeros_like(groups), order, "auto", 0.3, 0.15, 0)
    assert one_capture.method == "time"
    s = make_split(y, groups, order, "stratified", 0.3, 0.15, int(rng.integers(100)))
    assert abs(len(s.test) - 120) <= 3
    # a man in the middle's captures are mostly their victims' benign traffic: with the benign
    # class named, a capture is the attack it holds, so the split by capture stays possible
    mixed = y.copy()
    mixed[(groups >= 6) & (order < 40)] = 0  # captures 6 and 7: 40 benign windows, 10 of class 2
    assert make_split(mixed, groups, order, "auto", 0.3, 0.15, 0).method == "time"
    s = make_split(mixed, groups, order, "auto", 0.3, 0.15, 0, benign=0)
    assert s.method == "capture" and set(mixed[s.test]) == {0, 1, 2}


# ---- the trainer as a user runs it ------------------------------------------------------------------

@pytest.mark.slow
def test_train_on_the_39_column_sample_beats_the_trees(tmp_path: Path) -> None:
    """The must-show: family labels, leak-free columns, stratified 70/30 (seed 0), T=1:
    macro-F1 at least the random forest's 0.63 on this split (gradient-boosted trees 0.64). The
    network reaches 0.640 with two torch threads and 0.635 with one (float summation order: the
    suite's -n 2 workers get one thread each), so the bound is the forest's, not parity."""
    out = tmp_path / "m39"
    p = trainer("train", "--data", str(DATA / "ciciot2023_sample_39col.csv"), "--out", str(out),
                "--label-column", "label_multiclass", "--split", "stratified", "--seq-len", "1", "--seed", "0")
    assert p.returncode == 0, p.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(m)
    assert m["split"]["method"] == "stratified" and m["split"]["test"] == 5776
    assert sum(v["support"] for v in m["per_class"].values()) == 5776
    assert m["macro_f1"] >= 0.63, m["macro_f1"]
    meta = read_metadata(out)
    assert not set(meta["features"]["columns"]) & set(LEAKING)
    assert meta["label_scheme"] == "as-is" and meta["seq_len"] == 1
    assert (out / "confusion_matrix.png").stat().st_size > 1000 and (out / "training_curves.png").exists()
    # and evaluate prints and writes the same metrics for the trained model
    ev = trainer("evaluate", "--model", str(out), "--data", str(DATA / "ciciot2023_sample_39col.csv"),
                 "--label-column", "label_multiclass")
    assert ev.returncode == 0, ev.stderr
    e = json.loads((out / "evaluation.json").read_text())
    assert METRIC_KEYS - {"split"} <= set(e) and e["samples"] == 19252 and "macro-F1" in ev.stdout


@pytest.mark.slow
def test_train_and_evaluate_on_labelled_captures(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    p = trainer("synth", "--out", str(corpus), "--seed", "3", "--packets", "6000")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "model"
    p = trainer("train", "--data", str(corpus), "--out", str(out), "--epochs", "3", "--seq-len", "3", "--labels", "8")
    assert p.returncode == 0, p.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"]["method"] == "capture" and m["split"]["chosen_by"] == "auto"
    assert set(m["labels"]) <= {"Benign", "DDoS", "DoS", "Mirai", "Recon", "Spoofing", "BruteForce"}
    meta = read_metadata(out)
    assert meta["data"]["source"] == "captures" and meta["seq_len"] == 3
    fresh = tmp_path / "fresh"
    assert trainer("synth", "--out", str(fresh), "--seed", "4", "--packets", "3000").returncode == 0
    ev = trainer("evaluate", "--model", str(out), "--data", str(fresh), "--out", str(tmp_path / "ev.json"))
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "ev.json").read_text())["samples"] > 100


def test_trainer_errors_are_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("Rate,Tot size,label\n1,2,NOT_A_CLASS\n")
    p = trainer("train", "--data", str(csv), "--out", str(tmp_path / "o"))
    assert p.returncode == 1 and "NOT_A_CLASS" in p.stderr and "Traceback" not in p.stderr
    p = trainer("train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"))
    assert p.returncode == 1 and "no such file" in p.stderr and "Traceback" not in p.stderr
    broken = tmp_path / "broken"
    shutil.copytree(bundled_model_dir(), broken)
    (broken / "weights.pt").write_bytes(b"garbage")
    p = trainer("evaluate", "--model", str(broken), "--data", str(DATA / "ciciot2023_excerpt_46col.csv"))
    assert p.returncode == 1 and "checksum" in p.stderr and "Traceback" not in p.stderr
