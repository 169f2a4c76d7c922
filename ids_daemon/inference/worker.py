"""The inference worker: a model on its device for the daemon's lifetime, sequences in
micro-batches, predictions out."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..features.ciciot import INDEX
from ..features.window import KIND_POOL
from ..model.artifacts import LoadedModel, ModelError, load_model
from ..model.classes import family_of
from ..model.numpy_lstm import NumpyLSTM, softmax
from ..sequence import SequenceBatch
from ..sinks.base import EncodedBatch
from .attribution import MODES as ATTRIBUTION_MODES
from .attribution import top_columns_json
from .evidence import window_sentences
from .risk import by_kind, decide, family_weights, kind_thresholds, severity_index

log = logging.getLogger("ids_daemon.inference")

ENGINES = ("auto", "numpy", "torch")


@dataclass(frozen=True)
class Device:
    """Where the model runs, named as torch names it (``cpu``, ``cuda``, ``cuda:1``), without
    importing torch."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def _gpu_driver_present() -> bool:
    """Whether this machine has an NVIDIA (or ROCm) kernel driver: without one torch cannot
    find a GPU, and ``auto`` need not import torch to ask."""
    return (Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists()
            or any(Path("/dev").glob("nvidia[0-9]*")))


def resolve_device(name: str) -> Device:
    """``auto``: CUDA when present, else the CPU; a CUDA device that is not there is an error.
    torch is imported only to look for a GPU where a GPU driver is installed, or for ``cuda``."""
    if name == "cpu" or (name == "auto" and not _gpu_driver_present()):
        return Device("cpu")
    import torch

    if name == "auto":
        return Device("cuda") if torch.cuda.is_available() else Device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {name!r}: no CUDA device is available")
    return Device(dev.type, dev.index)


_THREADS: int | None = None  # set_threads' choice, applied to torch when it is imported later


def set_threads(threads: int | None) -> int:
    """Fix the model's CPU threads for the process (``None``: the cores it may use, less one
    for the capture thread, at least 1) and return the number: numpy's BLAS (the CPU engine)
    and torch's (when torch is or gets imported).

    Both default to one thread per core. The daemon's capture thread keeps a core busy, and
    the model's threads then wait for each other on the rest: on the 2-core machine the
    worker at batch 1,024 ran at 43 k sequences/s of CPU time with two torch threads against
    133 k with one (bench/gpu.py, same run); numpy's OpenBLAS, left at two, at a third of its
    one-thread rate."""
    global _THREADS
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        threads = max(1, cores - 1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")
    _THREADS = threads
    if "torch" in sys.modules:
        _torch_threads()
    return threads


def _torch_threads() -> None:
    import torch

    if _THREADS is not None and torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)


def schema_valid(probs: np.ndarray, decision: tuple[np.ndarray, ...]) -> np.ndarray:
    """Rows whose numbers the v1 schema accepts: probabilities, confidence, risk and
    p_attack finite and in [0, 1] (NaN is encoded as null, which the schema rejects)."""
    _, conf, risk, p_attack, _ = decision
    ok = ((probs >= 0) & (probs <= 1)).all(axis=1)  # False for NaN
    for v in (conf, risk, p_attack):
        ok &= (v >= 0) & (v <= 1)
    return ok


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, inverse) of the distinct sequences of ``x`` (n, T, columns), bit for bit:
    ``x[first]`` are distinct and ``x[first][inverse]`` is ``x``; None when every sequence
    differs, or nearly every one (nothing worth sharing).

    Rows are hashed (their bits times fixed odd multipliers, summed modulo 2^64: a few
    multiplications per row) and grouped by hash; a group whose rows are not all equal (a
    hash collision) means None, never a wrong grouping. A batch at least 95 % distinct by
    its last words is left as it is (None)."""
    n = len(x)
    if n < 2:
        return None
    flat = np.ascontiguousarray(x).reshape(n, -1)
    bits = flat.view(np.uint64) if flat.nbytes % (8 * n) == 0 else flat.view(np.uint32).astype(np.uint64)
    w = bits.shape[1]
    if _MIX.shape[0] < w:
        _grow_mix(w)
    # the last 8 words first (the last window's last 16 columns): equal sequences have them
    # equal, so when those are nearly all distinct so are the sequences and hashing whole
    # rows would not pay (the benign-heavy bench capture: 96-100 % of a batch distinct)
    tail = bits[:, -1] * _MIX[0]
    for j in range(1, min(w, 8)):  # column by column: a row-wise sum of 8 words costs more
        tail += bits[:, -1 - j] * _MIX[j]
    tail.sort()
    if 1 + np.count_nonzero(tail[1:] != tail[:-1]) > _WORTH * n:
        return None
    h = (bits * _MIX[:w]).sum(axis=1)
    first, inverse = np.unique(h, return_index=True, return_inverse=True)[1:]
    if len(first) == n:
        return None
    if not np.array_equal(bits, bits[first[inverse]]):
        return None  # two different sequences with one hash: run every row
    return first, inverse


_MIX = np.zeros(0, dtype=np.uint64)
_WORTH = 0.95  # share of distinct last windows above which a batch is not worth grouping


def _grow_mix(width: int) -> None:
    """Odd 64-bit multipliers for rows of ``width`` words (fixed seed: the same every run)."""
    global _MIX
    rng = np.random.default_rng(0x5EED)
    _MIX = rng.integers(0, 2**63, size=width, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class InferenceWorker:
    """Runs a model directory (default: the bundled model) on sequences."""

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "auto", half: bool = False,
                 top_k: int = 3, sensor: str | None = None, threshold: float | None = None,
                 interface: str | None = None, attribution: str = "flagged",
                 attribution_min_p: float | None = None, attribution_top: int = 3, fast_path: bool = True,
                 dedupe: bool = True, engine: str = "auto"):
        if attribution not in ATTRIBUTION_MODES:
            raise ModelError(f"attribution {attribution!r}: must be one of {', '.join(ATTRIBUTION_MODES)}")
        # gradient x input per column (docs/evidence.md): on every prediction, on the flagged
        # ones (is_attack, or p_attack >= attribution_min_p), or never
        self.attribution = attribution
        self.attribution_min_p = attribution_min_p
        self.attribution_top = int(attribution_top)
        self.attributed = 0  # sequences that went through the backward pass
        self.model_dir = Path(model_dir) if model_dir else None
        if engine not in ENGINES:
            raise ModelError(f"engine {engine!r}: must be one of {', '.join(ENGINES)}")
        self.device = resolve_device(device)
        # auto: numpy on the CPU (no torch in the process), torch on a GPU
        self.engine = ("numpy" if self.device.type == "cpu" else "torch") if engine == "auto" else engine
        if self.engine == "numpy" and self.device.type != "cpu":
            raise ModelError(f"engine numpy runs on the CPU, not on {self.device}")
        # False: the reference path (TorchEncoder, then the torch model), for comparison (bench/gpu.py)
        self.fast_path = bool(fast_path)
        if not self.fast_path:
            self.engine = "torch"
        # False: the model on every row of a batch, repeated sequences too (bench/predict.py)
        self.dedupe = bool(dedupe)
        self.half = bool(half) and self.device.type == "cuda"
        self.top_k = int(top_k)
        self.threshold_override = threshold  # inference.threshold: replaces the model's operating point
        self.sensor = sensor or socket.gethostname()
        self.interface = interface  # the live capture interface, in every prediction (None: a file)
        self.id_prefix = f"{self.sensor}-{int(time.time() * 1000):x}"
        self.next_id = 0
        self.batches = 0
        self.sequences = 0
        self.reloads = 0
        self.refused = 0  # predictions not published: they would fail the v1 schema (non-finite numbers)
        self.alert_pcap = None  # an AlertPcap (set by the pipeline): the flagged ones' packets go to pcap files
        self.loaded: LoadedModel = self._load(self.model_dir)
        self.install(self.loaded)

    def _load(self, path: Path | None) -> LoadedModel:
        loaded = load_model(path, str(self.device))
        if self.half:
            loaded.model.half()
        return loaded

    def install(self, loaded: LoadedModel) -> None:
        """Switch to an already loaded model."""
        self.loaded = loaded
        self.classes = loaded.classes
        fams = loaded.families
        self.families = [fams.get(c) or family_of(c) or c for c in self.classes]
        self.weights = family_weights(self.families)
        self.columns = np.array([INDEX[c] for c in loaded.columns], dtype=np.int64)
        # the CPU engine: the network in numpy, padding bins left out (ids_daemon.model.numpy_lstm)
        self.numpy: NumpyLSTM | None = None
        # the torch engine: the forward pass without padding bins (ids_daemon.model.fast); half
        # precision and other networks take the reference path
        self.fast: Any = None
        self.encode: Any = None
        if self.engine == "numpy" and not loaded.config.bidirectional:
            self.numpy = self._checked_numpy(loaded)
        if self.numpy is None:
            self._install_torch(loaded)
        self.column_names = list(loaded.columns)
        self.bins = int(loaded.encoder.bins or 0)
        benign = np.flatnonzero(self.weights == 0.0)
        self.benign_index: int | None = int(benign[0]) if len(benign) else None
        self.model_info = {"name": str(loaded.meta.get("name", "")), "version": str(loaded.meta.get("version", ""))}
        op = loaded.meta.get("operating_point") or {}
        self.threshold: float | None = (self.threshold_override if self.threshold_override is not None
                                        else op.get("threshold"))
        # (flow, pool) thresholds when the model chose one per window kind; inference.threshold,
        # the operator's one number, replaces both
        self.kind_thresholds = kind_thresholds(op) if self.threshold_override is None else None
        # a model trained without ARP windows leaves them to the ARP detector
        self.skip_arp = bool(loaded.meta.get("lstm_skips_arp", False))
        # a model trained without the frames the protocol-fact detectors flag is never shown
        # them: the detector's prediction covers them (a spoofed flood, a held scanner)
        self.detector_claims = bool(loaded.meta.get("detector_claims", False))
        # predictions per class and severity (exported as metrics); reset with the class list
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)
        self.severity_counts = np.zeros(4, dtype=np.int64)

    def _install_torch(self, loaded: LoadedModel) -> None:
        from ..model import fast
        from ..model.encoding import TorchEncoder

        _torch_threads()
        # served, never trained: the attribution's backward pass then computes the input's
        # gradient only, not the weights' (a fifth of its cost on CPU)
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        self.encode = TorchEncoder(loaded.encoder, str(self.device))
        if self.fast_path and not self.half and fast.supports(loaded.model, loaded.encoder):
            self.fast = self._checked_fast(loaded)

    def _probes(self, loaded: LoadedModel) -> np.ndarray:
        """Probe sequences (k, T, columns) float32: empty windows, the encoder's medians and clip
        maxima, values on every bin edge."""
        enc = loaded.encoder
        f = len(enc.columns)
        rows = [np.zeros(f), np.asarray(enc.median), np.asarray(enc.clip_max)]
        for k in range(enc.bins + 1):  # every column on its k-th edge (its last where it has fewer)
            rows.append(np.array([e[min(k, len(e) - 1)] if len(e) else 0.0 for e in enc.edges] if enc.edges
                                 else np.zeros(f)))
        return np.repeat(np.stack(rows).astype(np.float32)[:, None, :], loaded.seq_len, axis=1)

    def _checked_numpy(self, loaded: LoadedModel) -> NumpyLSTM | None:
        """The numpy engine, if its probabilities on probe sequences are those of the same
        arithmetic over the whole encoding (padding bins kept) within 1e-5: a check that leaving
        the padding bins out changed nothing. Run at load, so that its kernel is
        compiled before the first batch; on a mismatch the torch engine serves, with a warning."""
        x = self._probes(loaded)
        candidate = NumpyLSTM(loaded.state, loaded.config, loaded.encoder)
        whole = NumpyLSTM(loaded.state, loaded.config, loaded.encoder, padding=True, cache_windows=0)
        with np.errstate(all="ignore"):
            diff = float(np.abs(softmax(candidate.logits(x)) - softmax(whole.logits(x))).max())
        if not diff < 1e-5:  # NaN too
            log.warning("the numpy engine differs from the whole encoding by %.2g on probe sequences; "
                        "using torch", diff)
            return None
        return candidate

    def _checked_fast(self, loaded: LoadedModel) -> Any:
        """The fast path, if it gives the reference's probabilities (within 1e-5 on the CPU) on probe
        sequences: empty windows, the encoder's medians and clip maxima, values on every bin
        edge. Run at load, so that its kernel is compiled before the first batch."""
        import torch

        from ..model import fast

        t = torch.from_numpy(self._probes(loaded)).to(str(self.device))
        candidate = fast.FastLSTM(loaded.model, loaded.encoder)
        with torch.inference_mode():
            want = torch.softmax(loaded.model(self.encode(t)).double(), dim=1)
            got = torch.softmax(candidate(t).double(), dim=1)
        diff = float((want - got).abs().max())
        # a GPU's libraries may take reduced-precision paths (TF32) in both, each its own way
        tol = 1e-5 if self.device.type == "cpu" else 1e-3
        if not diff < tol:  # NaN too
            log.warning("the fast forward pass differs from the reference by %.2g on probe sequences; "
                        "using the reference path", diff)
            return None
        return candidate

    @property
    def seq_len(self) -> int:
        return self.loaded.seq_len

    @property
    def window(self) -> int:
        return self.loaded.window

    def _input(self, x: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.device.type == "cuda":
            t = t.pin_memory().to(str(self.device), non_blocking=True)
        return t

    def probabilities(self, seq: SequenceBatch) -> np.ndarray:
        """Class probabilities for a batch of sequences (raw feature values)."""
        self.batches += 1
        self.sequences += len(seq)
        return self._probabilities(seq.x)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        # in double precision: p_attack = 1 - P(benign) is compared with a threshold
        # near 1, where float32 has no resolution left (1 - 6e-8 rounds to 1)
        if self.numpy is not None:
            return softmax(self.numpy.logits(x))
        import torch

        p = self.logits(self._input(x))
        with torch.inference_mode():
            p = torch.softmax(p.double(), dim=1)
        return p.cpu().numpy()

    def logits(self, t: Any) -> Any:
        """Class logits of raw sequences ``t`` (n, T, columns) float32: a tensor on the device for
        the torch engine (the fast path when the model has one, else the encoder then the model),
        an array for the numpy engine."""
        if self.numpy is not None:
            return self.numpy.logits(np.asarray(t))
        import torch

        with torch.inference_mode():
            if self.fast is not None:
                return self.fast(t)
            x = self.encode(t)
            if self.half:
                x = x.half()
            return self.loaded.model(x)

    def attributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shares, probabilities) for raw sequences ``x`` (n, T, columns): the signed
        share of each model column in the attack logit margin (gradient x input, one
        backward pass; `ids_daemon.inference.attribution`), and the class probabilities of
        the same forward pass."""
        if self.numpy is not None:
            with np.errstate(all="ignore"):
                shares, logits = self.numpy.attribution(x, self.benign_index)
            self.attributed += len(x)
            return shares, softmax(logits)
        import torch

        from .attribution import margin_attribution

        with torch.no_grad():
            t = self._input(x)
            # the reference encoding (every bin: the shares are per column of it), bit for bit
            # what TorchEncoder writes; the fast path's kernel makes it at a third of the cost
            e = self.fast.encode_reference(t) if self.fast is not None else self.encode(t)
            if self.half:
                e = e.half()
        shares, logits = margin_attribution(self.loaded.model, e, self.benign_index, len(self.column_names),
                                            self.bins)
        self.attributed += len(x)
        return shares, torch.softmax(logits.double(), dim=1).cpu().numpy()

    def operating_point_text(self) -> str:
        """What decides ``is_attack``, for the start-up line: the thresholds in use and whose."""
        if self.kind_thresholds is not None:
            flow, pool = self.kind_thresholds
            return f"is_attack at p_attack >= {flow:.4g} for flows, {pool:.4g} for pools"
        if self.threshold is None:
            return "is_attack by the likeliest class (the model has no operating point)"
        whose = "inference.threshold" if self.threshold_override is not None else "the model's"
        return f"is_attack at p_attack >= {self.threshold:.4g} ({whose})"

    def row_thresholds(self, seq: SequenceBatch) -> float | np.ndarray | None:
        """The threshold of each sequence: its window kind's where the model has one per kind,
        else the one (the model's, or inference.threshold)."""
        if self.kind_thresholds is None:
            return self.threshold
        return by_kind(self.kind_thresholds, seq.windows.kind == KIND_POOL)

    def predict(self, seq: SequenceBatch) -> EncodedBatch:
        """Predictions (schema v1, encoded) for a batch of sequences."""
        from ..predictions.encode import encode_predictions

        shares = None
        # the model runs once per distinct sequence (a flood's windows repeat from key to
        # key); every row then takes its sequence's numbers
        distinct = distinct_rows(seq.x) if self.dedupe else None
        x = seq.x if distinct is None else seq.x[distinct[0]]
        if self.attribution == "on" and len(seq):
            # every row: one forward with gradients serves both the probabilities and the attribution
            shares, probs = self.attributions(x)
            self.attributed += len(seq) - len(x)
        else:
            probs = self._probabilities(x)
        if distinct is not None:
            probs = probs[distinct[1]]
            shares = shares[distinct[1]] if shares is not None else None
        self.batches += 1
        self.sequences += len(seq)
        decision = decide(probs, self.weights, self.row_thresholds(seq))
        ok = schema_valid(probs, decision)
        if not ok.all():
            # a model that passed its load probe can still overflow on some input (half
            # precision): what would fail the schema is counted and logged, never published
            n_bad = int((~ok).sum())
            if not self.refused:
                log.error("refusing predictions the v1 schema rejects (non-finite probabilities) from %s %s: "
                          "%d of %d in this batch; later ones are only counted", self.model_info["name"],
                          self.model_info["version"], n_bad, len(seq))
            self.refused += n_bad
            seq, probs = seq.take(ok), probs[ok]
            if distinct is not None:
                distinct = (distinct[0], distinct[1][ok])
            decision = tuple(d[ok] for d in decision)
            if shares is not None:
                shares = shares[ok]
        # each row's attribution as JSON text (None: not computed for it)
        attribution: list[str | None] | None = None
        if self.attribution == "on" and shares is not None:
            attribution = top_columns_json(shares, self.column_names, self.attribution_top)
        elif self.attribution == "flagged":
            flagged = decision[4].astype(bool)
            if self.attribution_min_p is not None:
                flagged = flagged | (decision[3] >= self.attribution_min_p)
            rows = np.flatnonzero(flagged)
            if len(rows):
                texts = np.full(len(seq), None, dtype=object)
                if distinct is None:
                    sub, _ = self.attributions(seq.x[rows])
                    texts[rows] = top_columns_json(sub, self.column_names, self.attribution_top)
                else:  # each flagged distinct sequence once
                    which, at = np.unique(distinct[1][rows], return_inverse=True)
                    sub, _ = self.attributions(x[which])
                    self.attributed += len(rows) - len(which)
                    texts[rows] = np.array(top_columns_json(sub, self.column_names, self.attribution_top),
                                           dtype=object)[at]
                attribution = texts.tolist()
        pred, risk = decision[0], decision[2]
        sev = severity_index(risk)
        self.class_counts += np.bincount(pred, minlength=len(self.classes))
        self.severity_counts += np.bincount(sev, minlength=4)
        files = None
        if self.alert_pcap is not None:
            files = self.alert_pcap.flag_windows(seq.windows, decision[4].astype(bool))
        out = encode_predictions(seq, probs, decision, sev, classes=self.classes, families=self.families,
                                 model=self.model_info, sensor=self.sensor, id_prefix=self.id_prefix,
                                 first_id=self.next_id, top_k=self.top_k, now=time.time(),
                                 interface=self.interface, evidence=window_sentences(seq.windows),
                                 attribution=attribution, pcap_files=files)
        self.next_id += len(seq)
        return out
