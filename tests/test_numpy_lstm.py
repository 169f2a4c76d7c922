"""The CPU's default engine (ids_daemon.model.numpy_lstm) against torch, and the weights read
without torch (ids_daemon.model.state): the same probabilities and attributions as the torch
reference, the same tensors as torch.load, refusals for what is not a state_dict, and a CPU
replay that never imports torch."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from ids_daemon.builder import windows_of_file
from ids_daemon.config import load_config
from ids_daemon.inference import worker as worker_module
from ids_daemon.inference.attribution import margin_attribution
from ids_daemon.inference.worker import InferenceWorker
from ids_daemon.model.artifacts import ModelError, bundled_model_dir, load_model
from ids_daemon.model.encoding import FeatureEncoder, TorchEncoder
from ids_daemon.model.lstm import LSTMConfig, RealDataLSTMPredictor
from ids_daemon.model.numpy_lstm import NumpyLSTM
from ids_daemon.model.state import StateError, read_state
from ids_daemon.sequence import SequenceBuffer

from .paths import PCAPS, ROOT
from .test_fast_path import _hard_values, small_encoder

TOL = 1e-5  # max abs difference of probabilities
# of attribution shares: predictions carry them to 4 decimals; float32 rounding of gradients
# that nearly cancel moves a share of the hard values by up to 2e-5
SHARE_TOL = 1e-4


def _torch_probs(model: torch.nn.Module, enc: FeatureEncoder, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(TorchEncoder(enc, "cpu")(torch.from_numpy(x))).double(), 1).numpy()


def _numpy_probs(net: NumpyLSTM, x: np.ndarray) -> np.ndarray:
    z = net.logits(x).astype(np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _torch_shares(model: torch.nn.Module, enc: FeatureEncoder, x: np.ndarray, benign: int | None) -> np.ndarray:
    e = TorchEncoder(enc, "cpu")(torch.from_numpy(x))
    return margin_attribution(model, e, benign, len(enc.columns), enc.bins)[0]


@pytest.fixture(scope="module")
def bundled():
    loaded = load_model(None, "cpu")
    return loaded, NumpyLSTM(loaded.state, loaded.config, loaded.encoder)


def test_weights_read_without_torch_are_torch_loads(tmp_path: Path) -> None:
    """The bundled weights, and tensors that are views (offsets, strides, a transpose), of other
    dtypes, empty or scalar: read_state gives what torch.load gives, contiguous."""
    want = torch.load(bundled_model_dir() / "weights.pt", weights_only=True)
    got = read_state(bundled_model_dir() / "weights.pt")
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[k], want[k].numpy()) and got[k].dtype == np.float32 for k in want)
    x = torch.arange(60, dtype=torch.float64).reshape(6, 10)
    odd = {"view": x[:, 2:7], "t": x.t(), "flags": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
           "tail": torch.arange(5)[2:], "scalar": torch.tensor(3.5), "half": torch.ones(3, dtype=torch.float16)}
    torch.save(odd, tmp_path / "odd.pt")
    back = read_state(tmp_path / "odd.pt")
    for k, v in odd.items():
        assert back[k].shape == tuple(v.shape) and back[k].dtype == v.numpy().dtype, k
        assert np.array_equal(back[k], v.numpy()) and back[k].flags.c_contiguous, k


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_weights_file_that_names_anything_else_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    """A torch archive whose pickle calls something (here open()) is refused in one line
    naming it, and the call never happens; a plain pickle or a damaged archive likewise."""
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(StateError, match=r"names io\.open, which a state_dict does not hold"):
        read_state(tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(StateError, match="not a torch zip archive"):
        read_state(tmp_path / "plain.pt")
    torch.save({"w": torch.zeros(4)}, tmp_path / "ok.pt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as z, zipfile.ZipFile(tmp_path / "short.pt", "w") as out:
        for item in z.infolist():  # a storage cut short: its tensor reaches past it
            data = z.read(item)
            out.writestr(item, data[:4] if item.filename.endswith("/data/0") else data)
    with pytest.raises(StateError, match="storage 0 holds 1 elements, not 4"):
        read_state(tmp_path / "short.pt")


def test_numpy_engine_gives_torchs_probabilities_on_hard_values(bundled) -> None:
    loaded, net = bundled
    x = _hard_values(loaded.encoder, 4096, loaded.seq_len, 2)
    want, got = _torch_probs(loaded.model, loaded.encoder, x), _numpy_probs(net, x)
    assert np.isfinite(got).all()
    assert np.abs(want - got).max() < TOL
    assert net.width < loaded.encoder.output_size  # the padding bins are left out


@pytest.mark.parametrize("method,layers,steps", [("log", 1, 3), ("ple", 2, 3), ("ple", 3, 1)])
def test_numpy_engine_on_other_networks(method: str, layers: int, steps: int) -> None:
    """An encoder without bins, stacked layers, one-window sequences: probabilities and
    attributions (with a benign class and without one) as torch's."""
    enc = small_encoder(method)
    torch.manual_seed(layers)
    cfg = LSTMConfig(input_size=enc.output_size, hidden_size=16, num_layers=layers, num_classes=5)
    m = RealDataLSTMPredictor(cfg).eval()
    net = NumpyLSTM(_state(m), cfg, enc)
    x = _hard_values(enc, 500, steps, 4)
    assert np.abs(_torch_probs(m, enc, x) - _numpy_probs(net, x)).max() < TOL
    for benign in (0, None):
        want = _torch_shares(m, enc, x, benign)
        got, _ = net.attribution(x, benign)
        assert np.abs(want - got).max() < SHARE_TOL, benign
        assert np.allclose(np.abs(got).sum(1)[np.abs(got).sum(1) > 0], 1.0)


def test_numpy_attribution_is_torchs_on_real_sequences(bundled) -> None:
    """Gradient × input by hand (the head, one step of the LSTM) against torch's autograd, on
    the real sequences of the test captures: the same signed shares and the same top columns."""
    loaded, net = bundled
    w = InferenceWorker(None, "cpu", sensor="test")
    cfg = load_config(None, {"meter.window": loaded.window, "metrics.listen": None})
    x = np.concatenate([SequenceBuffer(loaded.seq_len, w.columns, 1 << 14).push(windows_of_file(cfg, str(p))).x
                        for p in sorted(PCAPS.glob("*.pcap*"))]).astype(np.float32)
    assert len(x) > 100
    want = _torch_shares(loaded.model, loaded.encoder, x, w.benign_index)
    got, logits = net.attribution(x, w.benign_index)
    assert np.abs(want - got).max() < SHARE_TOL
    big = np.abs(want).max(1) > 0.05  # rows whose top column is clear of float noise
    assert (np.argmax(np.abs(want[big]), 1) == np.argmax(np.abs(got[big]), 1)).mean() > 0.99
    assert np.allclose(logits, net.logits(x), atol=1e-5)


def test_cpu_workers_use_numpy_and_publish_torchs_predictions() -> None:
    """auto on the CPU picks the numpy engine; its predictions (classes, decisions, attribution
    columns) are the torch engine's, with probabilities within float32 rounding."""
    from ids_daemon.config import load_config as lc

    np_w = InferenceWorker(None, "cpu", sensor="test", attribution="on")
    torch_w = InferenceWorker(None, "cpu", sensor="test", attribution="on", engine="torch")
    assert np_w.engine == "numpy" and np_w.numpy is not None and np_w.fast is None
    assert torch_w.numpy is None and torch_w.fast is not None
    cfg = lc(None, {"meter.window": np_w.window, "metrics.listen": None})
    seq = SequenceBuffer(np_w.seq_len, np_w.columns, 1 << 14).push(
        windows_of_file(cfg, str(sorted(PCAPS.glob("*.pcap*"))[0])))
    assert len(seq) > 50
    a, b = ([orjson.loads(v) for v in w.predict(seq).values] for w in (np_w, torch_w))
    assert len(a) == len(b) == len(seq)
    for x, y in zip(a, b):
        assert (x["predicted_attack"], x["is_attack"], x["severity"]) == (y["predicted_attack"], y["is_attack"],
                                                                          y["severity"])
        assert abs(x["confidence"] - y["confidence"]) < TOL
        cols = ([c["column"] for c in x["attribution"]], [c["column"] for c in y["attribution"]])
        shares = [(c["share"], d["share"]) for c, d in zip(x["attribution"], y["attribution"])]
        # the same top columns, unless two shares tie within rounding (then either order)
        assert cols[0] == cols[1] or max(abs(u - v) for u, v in shares) < 1e-3
    with pytest.raises(ModelError, match="engine 'onnx'"):
        InferenceWorker(None, "cpu", engine="onnx")


def test_a_numpy_engine_that_disagrees_at_load_gives_way_to_torch(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The worker checks the numpy engine against the whole encoding (padding bins kept) when it
    installs a model; one that differs is left out, with a warning, and torch serves."""

    class Skewed(NumpyLSTM):
        def logits(self, x: np.ndarray) -> np.ndarray:
            z = super().logits(x)
            return z if self.width == self.columns * (1 + self.bins) else z * 1.01

    monkeypatch.setattr(worker_module, "NumpyLSTM", Skewed)
    w = InferenceWorker(None, "cpu", sensor="test")
    assert w.numpy is None and w.fast is not None
    assert "numpy engine differs" in caplog.text
    x = np.zeros((2, w.seq_len, len(w.columns)), dtype=np.float32)
    assert np.isfinite(w._probabilities(x)).all()  # noqa: SLF001


def test_a_cpu_replay_never_imports_torch(tmp_path: Path) -> None:
    """`ids-daemon replay` on the CPU, the bundled capture, attribution on: Python's own import
    log names no torch module, and the predictions are written."""
    out = tmp_path / "p.jsonl"
    sample = ROOT / "ids_daemon" / "data" / "sample.pcap"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "ids_daemon.cli", "replay", "-r", str(sample),
                        "--device", "cpu", "--metrics-listen", "off", "-o", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert "numpy" in imported and "ids_daemon.model.numpy_lstm" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}
    assert sum(1 for _ in out.open()) > 10


def test_the_window_cache_gives_what_computing_every_window_gives(bundled) -> None:
    """Windows repeated within a batch and across batches (a key's window is in its next T - 1
    sequences) are looked up by their bits; a full cache starts again; a batch larger than the
    cache bypasses it. Every way, the logits and attributions of the uncached engine."""
    loaded, _ = bundled
    rng = np.random.default_rng(7)
    windows = _hard_values(loaded.encoder, 300, 1, 9)[:, 0]  # 300 distinct raw windows
    windows[1] = windows[0]  # two equal ones
    windows[2] = windows[0].copy()
    windows[2, 5] = np.nan  # a NaN: compared by its bits, cleaned by the encoder
    windows[3] = windows[2]
    net = NumpyLSTM(loaded.state, loaded.config, loaded.encoder, cache_windows=64)
    plain = NumpyLSTM(loaded.state, loaded.config, loaded.encoder, cache_windows=0)
    assert plain.cache is None
    for size in (5, 12, 16, 40):  # 40 sequences x 4 windows > 64: past the cache
        x = windows[rng.integers(0, 40, (size, loaded.seq_len))]
        assert np.abs(net.logits(x) - plain.logits(x)).max() < 1e-5
        got, want = net.attribution(x, 0)[0], plain.attribution(x, 0)[0]
        assert np.abs(got - want).max() < 1e-5
    cache = net.cache
    assert cache.hits > 0 and cache.misses > 0 and cache.resets >= 1
    # within one batch a window met again is a hit: 8 rows, 2 distinct
    fresh = NumpyLSTM(loaded.state, loaded.config, loaded.encoder, cache_windows=64)
    fresh.logits(np.stack([windows[[0, 1, 2, 3]], windows[[3, 2, 1, 0]]]))
    assert (fresh.cache.misses, fresh.cache.hits) == (2, 6)


def test_compiled_gates_tanh_is_within_float32_rounding_of_the_true_one():
    """The forward pass's gates (`_cell`) use a rational tanh, not numpy's: a wrong
    coefficient or clamp would move every probability. Within 3e-7 of tanh everywhere, odd,
    and saturated (±1 to float32) far out; the gates then match numpy's exp formulation, and
    a NaN stays NaN."""
    from ids_daemon.model import numpy_lstm as nl

    x = np.concatenate([np.linspace(-30, 30, 600_001), [-1e30, -1e-30, 0.0, 1e-30, 1e30]]).astype(np.float32)
    got = np.array([nl._tanh(v) for v in x[::50]] + [nl._tanh(v) for v in x[-5:]], dtype=np.float64)
    want = np.tanh(np.concatenate([x[::50], x[-5:]]).astype(np.float64))
    assert np.abs(got - want).max() < 3e-7
    assert np.array_equal(np.sign(got), np.sign(want))
    # one step of _cell against the numpy passes (_step), random pre-activations
    rng = np.random.default_rng(3)
    n, hh = 64, 16
    proj = rng.normal(0, 3, (n, 4 * hh)).astype(np.float32)
    w_hh = rng.normal(0, 0.5, (hh, 4 * hh)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (n, hh)).astype(np.float32)
    c0 = rng.normal(0, 2, (n, hh)).astype(np.float32)
    net = object.__new__(nl.NumpyLSTM)
    net.hidden = hh
    want_h, want_c, _, _ = net._step(proj, h0, c0, w_hh)
    h, c = h0.copy(), c0.copy()
    nl._cell(h0 @ w_hh, proj, np.arange(n, dtype=np.int64)[:, None], 0, c, h)
    assert np.abs(c - want_c).max() < 1e-5 and np.abs(h - want_h).max() < 1e-6
    # NaN goes through (no fast-math 'no NaN' assumption): the worker's schema check sees it
    # and refuses the prediction rather than publishing a clamped, finite number
    assert np.isnan(nl._tanh(np.float32(np.nan)))
    proj[5, 3] = np.nan
    h, c = h0.copy(), c0.copy()
    nl._cell(h0 @ w_hh, proj, np.arange(n, dtype=np.int64)[:, None], 0, c, h)
    assert np.isnan(h[5, 3]) and np.isfinite(np.delete(h, 5, axis=0)).all()
