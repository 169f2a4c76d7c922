"""Model directories: weights that cannot run code, and JSON metadata that says what they are.

    MODEL_DIR/weights.pt       state_dict only (torch.save), read as arrays by
                               `ids_daemon.model.state` (nothing in it runs; no torch)
    MODEL_DIR/metadata.json    LSTMConfig, feature columns and their encoding, classes and
                               families, window N and sequence length T, data summary,
                               metrics, version, SHA-256 of weights.pt
    MODEL_DIR/metrics.json     the evaluation report (written by the trainer)

Loading refuses a directory whose weights do not hash to the recorded checksum, whose
columns the meter does not compute, or whose weights do not fit the recorded network.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IdsError
from ..features.ciciot import COLUMNS
from .config import LSTMConfig, state_shapes
from .encoding import FeatureEncoder
from .state import StateError, read_state

FORMAT = "ids-daemon-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
METADATA = "metadata.json"


class ModelError(IdsError):
    """A model directory is missing, damaged or does not fit this daemon."""


class ModelMetadataError(ModelError):
    """A key of a model's metadata.json has a value this daemon cannot use."""

    exit_code = 2  # a configuration error: the run is refused before it starts


# metadata keys whose values the daemon uses directly: (type, low, high) for the integers
_INT_KEYS = {"format_version": (1, 1 << 30), "window": (1, 10000), "seq_len": (1, 1000)}


@dataclass
class LoadedModel:
    """A checked model: its weights as arrays, network shape, encoder and metadata. The torch
    module (`model`) is built on first use, on ``device``: the daemon's CPU path runs the
    arrays in numpy (`ids_daemon.model.numpy_lstm`) and never imports torch."""

    state: dict[str, np.ndarray]
    config: LSTMConfig
    encoder: FeatureEncoder
    meta: dict[str, Any]
    path: Path
    device: str = "cpu"
    _model: Any = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        """The `RealDataLSTMPredictor` (eval mode, on ``device``) of these weights."""
        if self._model is None:
            import torch

            from .lstm import RealDataLSTMPredictor

            model = RealDataLSTMPredictor(self.config)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()}, strict=True)
            self._model = model.to(torch.device(self.device)).eval()
        return self._model

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def families(self) -> dict[str, str]:
        return dict(self.meta.get("families", {}))

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    @property
    def columns(self) -> list[str]:
        return list(self.encoder.columns)


def bundled_model_dir() -> Path:
    """The model shipped inside the package (the daemon's default)."""
    return Path(str(resources.files("ids_daemon") / "data" / "model"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_weights(directory: Path, model: Any) -> str:
    """Replace ``directory``'s weights.pt with the (torch) model's state_dict (atomically); its SHA-256."""
    import torch

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / WEIGHTS)
    return sha256_file(directory / WEIGHTS)


def save_model(directory: str | os.PathLike, model: Any, encoder: FeatureEncoder,
               classes: list[str], *, families: dict[str, str], window: int, seq_len: int, label_scheme: str,
               name: str = "ids-lstm", version: str = "1", data: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, training: dict[str, Any] | None = None,
               operating_point: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write weights and metadata into ``directory`` (created if needed)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sha = write_weights(d, model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lstm": model.config.model_dump(),
        "features": encoder.to_dict(),
        "classes": list(classes),
        "families": families,
        "label_scheme": label_scheme,
        "window": int(window),
        "seq_len": int(seq_len),
        "data": data or {},
        "training": training or {},
        "metrics": metrics or {},
        # is_attack = p_attack >= threshold (p_attack = 1 - P(benign)); absent: argmax
        "operating_point": operating_point or {},
        **(extra or {}),
        "weights_sha256": sha,
    }
    (d / METADATA).write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")
    return d


def read_artefact_metadata(d: Path, fmt: str, what: str) -> dict[str, Any]:
    """``d``'s metadata.json as a dict whose ``format`` is ``fmt``, or a one-line `ModelError`
    naming ``what`` the directory should have been (a model, a policy)."""
    mp = d / METADATA
    if not d.is_dir():
        raise ModelError(f"{d}: no such {what} directory")
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise ModelError(f"{d}: not a {what} directory (no {METADATA})") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{mp}: unreadable metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ModelError(f"{mp}: not ids-daemon {what} metadata")
    return meta


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a model directory, checked for format (weights not read)."""
    d = Path(directory)
    mp = d / METADATA
    meta = read_artefact_metadata(d, FORMAT, "model")
    for key in ("lstm", "features", "classes", "window", "seq_len", "weights_sha256"):
        if key not in meta:
            raise ModelMetadataError(f"{mp}: metadata lacks {key!r}")
    # every value the daemon relies on is checked here, so that a bad one is a line
    # naming its key at start, not a traceback (or a failure at the end of the run)
    for key, (lo, hi) in _INT_KEYS.items():
        if key not in meta:
            continue  # format_version: absent in the first models (format 1)
        v = meta[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ModelMetadataError(f"{mp}: {key}: must be an integer from {lo} to {hi} (got {v!r})")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ModelMetadataError(f"{mp}: format_version: model format {meta['format_version']} is newer than "
                                 f"this daemon reads ({FORMAT_VERSION}); upgrade ids-daemon")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise ModelMetadataError(f"{mp}: classes: must be a list of two or more class names (got {classes!r:.80})")
    if len(set(classes)) != len(classes):
        raise ModelMetadataError(f"{mp}: classes: names repeat")
    for key in ("lstm", "features"):
        if not isinstance(meta[key], dict):
            raise ModelMetadataError(f"{mp}: {key}: must be a mapping (got {meta[key]!r:.80})")
    for key in ("families", "operating_point"):
        if not isinstance(meta.get(key, {}), dict):
            raise ModelMetadataError(f"{mp}: {key}: must be a mapping (got {meta[key]!r:.80})")
    def check_threshold(t: Any, key: str) -> None:
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1:
            raise ModelMetadataError(f"{mp}: operating_point.{key}: must be a number in [0, 1] (got {t!r})")

    op = meta.get("operating_point") or {}
    if op.get("threshold") is not None:
        check_threshold(op["threshold"], "threshold")
    kinds = op.get("by_window_kind")
    if kinds is not None:
        for k in ("flow", "pool"):
            kind = kinds.get(k) if isinstance(kinds, dict) else None
            check_threshold(kind.get("threshold") if isinstance(kind, dict) else None, f"by_window_kind.{k}.threshold")
    if not isinstance(meta["weights_sha256"], str):
        raise ModelMetadataError(f"{mp}: weights_sha256: must be a string")
    return meta


def _check_sha(wp: Path, meta: dict[str, Any]) -> None:
    digest = sha256_file(wp)
    if digest != meta.get("weights_sha256"):
        raise ModelError(f"{wp}: weights do not match the checksum in {METADATA} "
                         f"(file changed or damaged: sha256 {digest[:12]}…, expected {str(meta.get('weights_sha256'))[:12]}…)")


def _read_state(wp: Path) -> dict[str, np.ndarray]:
    try:
        return read_state(wp)
    except (StateError, OSError) as e:
        raise ModelError(f"{wp}: cannot read the weights ({str(e).splitlines()[0]})") from None


def load_checked_state(directory: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The state_dict of ``directory``'s weights.pt as arrays, refused unless it hashes to
    ``meta["weights_sha256"]`` (tensors only: reading it runs no code). Other weights-only
    artefacts (the response policy) load through it."""
    wp = directory / WEIGHTS
    if not wp.is_file():
        raise ModelError(f"{directory}: weights file {WEIGHTS} is missing")
    _check_sha(wp, meta)
    return _read_state(wp)


def load_model(directory: str | os.PathLike | None = None, device: Any = "cpu") -> LoadedModel:
    """Load and check a model directory (default: the bundled model) for ``device`` (a name or
    a torch device: where `LoadedModel.model` goes when something asks for it)."""
    d = Path(directory) if directory is not None else bundled_model_dir()
    meta = read_metadata(d)
    wp = d / WEIGHTS
    if not wp.is_file():
        raise ModelError(f"{d}: weights file {WEIGHTS} is missing")
    _check_sha(wp, meta)
    cols = list(meta["features"].get("columns", []))
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise ModelError(f"{d}: the model uses columns the meter does not compute: {', '.join(unknown)}")
    try:
        encoder = FeatureEncoder.from_dict(meta["features"])
        config = LSTMConfig.model_validate(meta["lstm"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{d}: inconsistent metadata: {str(e).splitlines()[0]}") from None
    if encoder.output_size != config.input_size:
        raise ModelError(f"{d}: the feature encoding gives {encoder.output_size} inputs but the network "
                         f"takes {config.input_size}")
    if len(meta["classes"]) != config.num_classes:
        raise ModelError(f"{d}: {len(meta['classes'])} class names for a network with {config.num_classes} outputs")
    state = _read_state(wp)
    misfit = _misfit(state, config)
    if misfit:
        raise ModelError(f"{wp}: weights do not fit the recorded network: {misfit}")
    if any(v.dtype != np.float32 for v in state.values()):
        state = {k: v.astype(np.float32) for k, v in state.items()}
    loaded = LoadedModel(state=state, config=config, encoder=encoder, meta=meta, path=d, device=str(device))
    probe_model(loaded)
    return loaded


def _misfit(state: dict[str, np.ndarray], config: LSTMConfig) -> str:
    """What keeps ``state`` from loading into the network ``config`` describes ("" when it fits),
    in the words of torch's strict ``load_state_dict``."""
    want = state_shapes(config)
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing:
        return f"Missing key(s) in state_dict: {', '.join(missing)}"
    if extra:
        return f"Unexpected key(s) in state_dict: {', '.join(extra)}"
    for k, shape in want.items():
        if tuple(state[k].shape) != shape:
            return (f"size mismatch for {k}: the weights hold shape {tuple(state[k].shape)}, the network "
                    f"takes {shape}")
        if not np.issubdtype(state[k].dtype, np.floating):
            return f"{k} holds {state[k].dtype}, not floating-point weights"
    return ""


def probe_model(loaded: LoadedModel) -> None:
    """Run a few sequences through the model; raise `ModelError` unless every output is a
    finite probability distribution.

    Weights or encoder statistics with NaN/inf pass every structural check yet make every
    prediction NaN (null confidence, invalid under the v1 schema): refuse them at load."""
    from .numpy_lstm import NumpyLSTM, softmax

    enc = loaded.encoder
    # empty windows, the encoder's medians (a typical window) and its clip maxima (a huge one)
    rows = np.stack([np.zeros(len(enc.median)), np.asarray(enc.median, dtype=np.float64),
                     np.asarray(enc.clip_max, dtype=np.float64)]).astype(np.float32)
    x = np.repeat(rows[:, None, :], loaded.seq_len, axis=1)
    if loaded.config.bidirectional:  # torch's alone
        import torch

        from .encoding import TorchEncoder

        dev = next(loaded.model.parameters()).device
        with torch.inference_mode():
            logits = loaded.model(TorchEncoder(enc, dev)(torch.from_numpy(x).to(dev))).double().cpu().numpy()
    else:
        with np.errstate(all="ignore"):
            logits = NumpyLSTM(loaded.state, loaded.config, enc, cache_windows=0).logits(x).astype(np.float64)
    p = softmax(logits)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ModelError(f"{loaded.path}: the model's outputs are not finite (NaN/inf) on {int(bad.sum())} of "
                         f"{len(p)} probe sequences: damaged weights or encoder statistics; refusing it")
