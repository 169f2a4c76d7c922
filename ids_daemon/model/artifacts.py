"""Model directories: weights that cannot run code, and JSON metadata that says what they are.

    MODEL_DIR/weights.pt       state_dict only, loaded with torch.load(weights_only=True)
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
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import IdsError
from ..features.ciciot import COLUMNS
from .encoding import FeatureEncoder
from .lstm import LSTMConfig, RealDataLSTMPredictor

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
    """A model ready to run: network (eval mode, on its device), encoder and metadata."""

    model: RealDataLSTMPredictor
    encoder: FeatureEncoder
    meta: dict[str, Any]
    path: Path

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


def write_weights(directory: Path, model: torch.nn.Module) -> str:
    """Replace ``directory``'s weights.pt with the model's state_dict (atomically); its SHA-256."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / WEIGHTS)
    return sha256_file(directory / WEIGHTS)


def save_model(directory: str | os.PathLike, model: RealDataLSTMPredictor, encoder: FeatureEncoder,
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
    thr = (meta.get("operating_point") or {}).get("threshold")
    if thr is not None and (not isinstance(thr, (int, float)) or isinstance(thr, bool) or not 0 <= thr <= 1):
        raise ModelMetadataError(f"{mp}: operating_point.threshold: must be a number in [0, 1] (got {thr!r})")
    if not isinstance(meta["weights_sha256"], str):
        raise ModelMetadataError(f"{mp}: weights_sha256: must be a string")
    return meta


def _check_sha(wp: Path, meta: dict[str, Any]) -> None:
    digest = sha256_file(wp)
    if digest != meta.get("weights_sha256"):
        raise ModelError(f"{wp}: weights do not match the checksum in {METADATA} "
                         f"(file changed or damaged: sha256 {digest[:12]}…, expected {str(meta.get('weights_sha256'))[:12]}…)")


def _read_state(wp: Path) -> dict[str, Any]:
    try:
        return torch.load(wp, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{wp}: cannot read the weights ({str(e).splitlines()[0]})") from None


def load_checked_state(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The state_dict of ``directory``'s weights.pt, refused unless it hashes to
    ``meta["weights_sha256"]`` (tensors only: weights_only loading runs no code). Other
    weights-only artefacts (the response policy) load through it."""
    wp = directory / WEIGHTS
    if not wp.is_file():
        raise ModelError(f"{directory}: weights file {WEIGHTS} is missing")
    _check_sha(wp, meta)
    return _read_state(wp)


def load_model(directory: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and check a model directory (default: the bundled model) onto ``device``."""
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
    model = RealDataLSTMPredictor(config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"{wp}: weights do not fit the recorded network: {str(e).splitlines()[0]}") from None
    model.to(torch.device(device)).eval()
    loaded = LoadedModel(model=model, encoder=encoder, meta=meta, path=d)
    probe_model(loaded)
    return loaded


def probe_model(loaded: LoadedModel) -> None:
    """Run a few sequences through the model; raise `ModelError` unless every output is a
    finite probability distribution.

    Weights or encoder statistics with NaN/inf pass every structural check yet make every
    prediction NaN (null confidence, invalid under the v1 schema): refuse them at load."""
    from .encoding import TorchEncoder

    enc = loaded.encoder
    dev = next(loaded.model.parameters()).device
    # empty windows, the encoder's medians (a typical window) and its clip maxima (a huge one)
    rows = np.stack([np.zeros(len(enc.median)), np.asarray(enc.median, dtype=np.float64),
                     np.asarray(enc.clip_max, dtype=np.float64)]).astype(np.float32)
    x = torch.from_numpy(np.repeat(rows[:, None, :], loaded.seq_len, axis=1)).to(dev)
    dtype = next(loaded.model.parameters()).dtype
    with torch.inference_mode():
        p = torch.softmax(loaded.model(TorchEncoder(enc, dev)(x).to(dtype)).double(), dim=1)
    bad = ~torch.isfinite(p).all(dim=1)
    if bool(bad.any()):
        raise ModelError(f"{loaded.path}: the model's outputs are not finite (NaN/inf) on {int(bad.sum())} of "
                         f"{len(p)} probe sequences: damaged weights or encoder statistics; refusing it")
