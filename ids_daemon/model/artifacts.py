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


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a model directory, checked for format (weights not read)."""
    d = Path(directory)
    mp = d / METADATA
    if not d.is_dir():
        raise ModelError(f"{d}: no such model directory")
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise ModelError(f"{d}: not a model directory (no {METADATA})") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{mp}: unreadable metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{mp}: not ids-daemon model metadata")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{mp}: model format {meta.get('format_version')} is newer than this daemon reads "
                         f"({FORMAT_VERSION}); upgrade ids-daemon")
    for key in ("lstm", "features", "classes", "window", "seq_len", "weights_sha256"):
        if key not in meta:
            raise ModelError(f"{mp}: metadata lacks {key!r}")
    return meta


def load_model(directory: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and check a model directory (default: the bundled model) onto ``device``."""
    d = Path(directory) if directory is not None else bundled_model_dir()
    meta = read_metadata(d)
    wp = d / WEIGHTS
    if not wp.is_file():
        raise ModelError(f"{d}: weights file {WEIGHTS} is missing")
    digest = sha256_file(wp)
    if digest != meta["weights_sha256"]:
        raise ModelError(f"{wp}: weights do not match the checksum in {METADATA} "
                         f"(file changed or damaged: sha256 {digest[:12]}…, expected {meta['weights_sha256'][:12]}…)")
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
    try:
        state = torch.load(wp, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{wp}: cannot read the weights ({str(e).splitlines()[0]})") from None
    model = RealDataLSTMPredictor(config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"{wp}: weights do not fit the recorded network: {str(e).splitlines()[0]}") from None
    model.to(torch.device(device)).eval()
    return LoadedModel(model=model, encoder=encoder, meta=meta, path=d)
