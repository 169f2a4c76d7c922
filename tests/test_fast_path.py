"""The worker's fast forward pass (ids_daemon.model.fast) against the reference path
(TorchEncoder, then the model), on the CPU: the same probabilities on random and real
sequences, the same encoding where it keeps a feature, and exact zeros where it drops one."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ids_daemon.builder import windows_of_file
from ids_daemon.config import load_config
from ids_daemon.inference.worker import InferenceWorker
from ids_daemon.model import fast
from ids_daemon.model.encoding import FeatureEncoder, TorchEncoder
from ids_daemon.model.lstm import LSTMConfig, RealDataLSTMPredictor
from ids_daemon.sequence import SequenceBuffer

from .paths import PCAPS, ROOT

TOL = 1e-5  # max abs difference of probabilities


def _reference(model: torch.nn.Module, enc: FeatureEncoder, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(TorchEncoder(enc, "cpu")(torch.from_numpy(x))).double(), 1).numpy()


def _fast(model: torch.nn.Module, enc: FeatureEncoder, x: np.ndarray) -> np.ndarray:
    f = fast.FastLSTM(model, enc)
    with torch.inference_mode():
        return torch.softmax(f(torch.from_numpy(x)).double(), 1).numpy()


def _hard_values(enc: FeatureEncoder, n: int, t: int, seed: int) -> np.ndarray:
    """Raw sequences over every column's range and beyond: heavy tails, negatives, the bin
    edges themselves, zeros, and inf/-inf/NaN (which the encoder cleans)."""
    rng = np.random.default_rng(seed)
    f = len(enc.columns)
    x = rng.standard_normal((n, t, f)) * 10.0 ** rng.uniform(-3, 7, (n, t, f))
    edges = [e for e in enc.edges if len(e)] or [np.zeros(1)]
    for j in range(f):  # a third of the values exactly on one of the column's edges
        e = enc.edges[j] if j < len(enc.edges) and len(enc.edges[j]) else edges[0]
        on = rng.random((n, t)) < 0.33
        x[..., j][on] = rng.choice(e, on.sum())
    x[rng.random(x.shape) < 0.05] = 0.0
    for v in (np.inf, -np.inf, np.nan):
        x[rng.random(x.shape) < 0.02] = v
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def worker() -> InferenceWorker:
    return InferenceWorker(None, "cpu", sensor="test", engine="torch")


def test_bundled_model_has_padding_bins_the_fast_path_drops(worker: InferenceWorker) -> None:
    f = worker.fast
    assert f is not None, "the bundled model should take the fast path"
    enc = worker.loaded.encoder
    real = sum(int(np.isfinite(enc._lo[j, :enc.bins]).sum()) for j in range(len(enc.columns)))
    assert f.width == len(enc.columns) + real < enc.output_size


def test_fast_encoding_is_the_reference_without_its_always_zero_bins(worker: InferenceWorker) -> None:
    enc = worker.loaded.encoder
    x = _hard_values(enc, 512, worker.seq_len, 1)
    with torch.inference_mode():
        ref = TorchEncoder(enc, "cpu")(torch.from_numpy(x)).numpy()
        got = worker.fast.encode(torch.from_numpy(x)).numpy()
    f = len(enc.columns)
    real = np.concatenate([np.ones(f, bool), np.isfinite(enc._lo[:, :enc.bins]).ravel()])
    assert (ref[..., ~real] == 0.0).all()  # what is dropped never counted
    assert np.array_equal(got[..., f:], ref[..., real][..., f:])  # the bins: the same float32 arithmetic
    # the log-standardised columns: float32 log1p of two libraries, scaled by 1/sd
    assert np.allclose(got[..., :f], ref[..., :f], rtol=1e-5, atol=1e-4)


def test_reference_encoding_for_attribution_is_torch_encoders_bit_for_bit(worker: InferenceWorker) -> None:
    """The attribution differentiates the reference encoding; the fast path's kernel writes
    it (`FastLSTM.encode_reference`) exactly as `TorchEncoder` does, signs of zeros included."""
    enc = worker.loaded.encoder
    for seed in (1, 2):
        x = torch.from_numpy(_hard_values(enc, 512, worker.seq_len, seed))
        with torch.no_grad():
            ref = TorchEncoder(enc, "cpu")(x).numpy()
            got = worker.fast.encode_reference(x).numpy()
        assert got.shape == ref.shape and got.dtype == ref.dtype
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_fast_probabilities_match_the_reference_on_random_sequences(worker: InferenceWorker) -> None:
    m, enc = worker.loaded.model, worker.loaded.encoder
    x = _hard_values(enc, 4096, worker.seq_len, 2)
    ref, got = _reference(m, enc, x), _fast(m, enc, x)
    assert np.isfinite(got).all()
    assert np.abs(ref - got).max() < TOL
    assert (ref.argmax(1) == got.argmax(1)).mean() > 0.999


def _real_sequences(worker: InferenceWorker, paths: list) -> np.ndarray:
    cfg = load_config(None, {"meter.window": worker.window, "metrics.listen": None})
    parts = []
    for p in paths:
        seq = SequenceBuffer(worker.seq_len, worker.columns, 1 << 14).push(windows_of_file(cfg, str(p)))
        parts.append(seq.x)
    x = np.concatenate(parts).astype(np.float32)
    assert len(x) > 100
    return x


def test_worker_fast_and_reference_paths_agree_on_real_captures(worker: InferenceWorker) -> None:
    x = _real_sequences(worker, sorted(PCAPS.glob("*.pcap*")))
    ref = InferenceWorker(None, "cpu", sensor="test", fast_path=False)
    assert ref.fast is None
    got = worker.logits(torch.from_numpy(x))
    want = ref.logits(torch.from_numpy(x))
    p_got, p_want = (torch.softmax(t.double(), 1).numpy() for t in (got, want))
    assert np.abs(p_got - p_want).max() < TOL


@pytest.mark.shared_data("real/attack")
def test_fast_path_on_real_attack_captures(worker: InferenceWorker, shared_data) -> None:
    caps = sorted(shared_data("real", "attack").glob("*/*.pcap*"))[:6]
    assert caps
    x = _real_sequences(worker, caps)
    m, enc = worker.loaded.model, worker.loaded.encoder
    assert np.abs(_reference(m, enc, x) - _fast(m, enc, x)).max() < TOL


def small_encoder(method: str) -> FeatureEncoder:
    """An encoder of six columns over heavy tails, with a flag (few edges: padding bins) and a
    constant column, by ``method`` (``log``: no bins)."""
    rng = np.random.default_rng(3)
    cols = [f"c{i}" for i in range(6)]
    rows = rng.standard_normal((2000, 6)) * 10.0 ** rng.integers(0, 5, 6)
    rows[:, 2] = rng.integers(0, 2, 2000)  # a flag: few edges, padding bins
    rows[:, 3] = 7.0  # a constant column
    return FeatureEncoder(cols, method, bins=8).fit(rows)


@pytest.mark.parametrize("method,layers", [("log", 1), ("ple", 2)])
def test_fast_path_on_other_networks(method: str, layers: int) -> None:
    """An encoder without bins and a stacked LSTM: the fast path keeps what they have."""
    enc = small_encoder(method)
    torch.manual_seed(0)
    m = RealDataLSTMPredictor(LSTMConfig(input_size=enc.output_size, hidden_size=16, num_layers=layers,
                                         num_classes=5)).eval()
    assert fast.supports(m, enc)
    x = _hard_values(enc, 1000, 3, 4)
    assert np.abs(_reference(m, enc, x) - _fast(m, enc, x)).max() < TOL


def test_half_precision_and_foreign_networks_take_the_reference_path() -> None:
    enc = FeatureEncoder(["a", "b"], "ple", 4).fit(np.random.default_rng(0).random((100, 2)))
    m = RealDataLSTMPredictor(LSTMConfig(input_size=enc.output_size, hidden_size=8, num_layers=1, num_classes=3))
    assert fast.supports(m, enc)
    assert not fast.supports(m.half(), enc)
    assert not fast.supports(torch.nn.Linear(3, 3), enc)


def test_gpu_bench_runs_on_the_cpu() -> None:
    """bench/gpu.py, the command the GPU machine runs, on the CPU with tiny settings: it
    prints every path for each batch size and their agreement, so it cannot rot."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--seconds", "0.05",
                        "--batches", "1,256", "--packets", "3000", "--replay-packets", "3000", "--replay-repeat", "1"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    for bs in (1, 256):
        row = [ln.split() for ln in lines if ln.split()[:1] == [str(bs)]]
        assert len(row) == 1, r.stdout
        ref_rate, fast_rate = (float(v.replace(",", "")) for v in row[0][1:3])
        assert ref_rate > 0 and fast_rate > 0
    for path in ("fast", "numpy"):  # the torch engine's fast path, and the CPU's default engine
        assert f"max |p_{path} - p_ref|" in r.stdout
        diff = float(r.stdout.split(f"max |p_{path} - p_ref|")[1].split()[0])
        assert diff < TOL
    replayed = [ln.split() for ln in lines if ln.split()[:1] in (["flood"], ["benign"])]
    assert sorted((row[0], row[1]) for row in replayed) == sorted(
        (k, p) for k in ("flood", "benign") for p in ("ref", "fast", "numpy"))
    assert len({row[-1] for row in replayed}) <= 2  # each path makes a capture's predictions


def test_predict_bench_runs_against_a_baseline() -> None:
    """bench/predict.py with tiny settings, this checkout as its own baseline: every tree
    and batch size gets a row, so the script cannot rot."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "predict.py"), "--baseline", str(ROOT),
                        "--no-dedupe-row", "--packets", "3000", "--sequences", "80", "--batches", "32",
                        "--rounds", "1", "--repeat", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.strip().startswith(("benign", "flood"))]
    assert [row[:2] for row in rows] == [["benign-heavy", "32"], ["flood-heavy", "32"]]
    assert all(len(row) == 2 + 2 * 3 + 2 and row[-1].endswith("x") for row in rows)


def test_worker_threads_follow_the_configuration() -> None:
    """inference.threads fixes the model's CPU threads, numpy's BLAS (the CPU engine) and
    torch's; null leaves a core to the capture thread."""
    import os

    from threadpoolctl import threadpool_info, threadpool_limits

    from ids_daemon.builder import make_worker

    def blas() -> set[int]:  # numpy's own (another library's BLAS may be loaded beside it)
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]}

    before = torch.get_num_threads()
    try:
        with threadpool_limits(user_api="blas"):  # restored after the test
            make_worker(load_config(None, {"inference.device": "cpu", "inference.threads": 3, "metrics.listen": None}))
            assert torch.get_num_threads() == 3 and blas() == {3}
            make_worker(load_config(None, {"inference.device": "cpu", "metrics.listen": None}))
            usable = max(1, len(os.sched_getaffinity(0)) - 1)
            assert torch.get_num_threads() == usable and blas() == {usable}
    finally:
        torch.set_num_threads(before)


def test_a_fast_path_that_disagrees_at_load_is_not_used(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The worker probes the fast path against the reference when it installs a model; a
    fast path that differs is left out, with a warning, and predictions still come."""
    real_call = fast.FastLSTM.__call__
    monkeypatch.setattr(fast.FastLSTM, "__call__", lambda self, x: real_call(self, x) * 1.01)
    w = InferenceWorker(None, "cpu", sensor="test", engine="torch")
    assert w.fast is None
    assert "differs from the reference" in caplog.text
    x = np.zeros((2, w.seq_len, len(w.columns)), dtype=np.float32)
    assert np.isfinite(w.logits(torch.from_numpy(x)).numpy()).all()


def test_the_device_encoding_gpus_run_equals_the_cpu_kernel(worker: InferenceWorker) -> None:
    """On CUDA the fast path encodes with torch ops (no numba): the same features here."""
    x = torch.from_numpy(_hard_values(worker.loaded.encoder, 512, worker.seq_len, 5))
    with torch.inference_mode():
        a, b = worker.fast.encode(x), worker.fast.encode_torch(x)
    assert a.shape == b.shape and b.is_contiguous()
    f = worker.fast.columns
    assert torch.equal(a[..., f:], b[..., f:])
    assert torch.allclose(a[..., :f], b[..., :f], rtol=1e-6, atol=1e-6)
