"""The network's shape as configuration (no torch import: config loading stays light)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LSTMConfig(BaseModel):
    """Shape of the network (the ``lstm.model`` section of config.yml).

    ``input_size`` and ``num_classes`` are set from the data when training."""

    model_config = ConfigDict(extra="forbid")

    input_size: int = Field(46, ge=1, description="features per time step (set from the data)")
    hidden_size: int = Field(128, ge=2, le=4096, description="LSTM hidden units")
    num_layers: int = Field(2, ge=1, le=8, description="stacked LSTM layers")
    num_classes: int = Field(34, ge=2, description="output classes (set from the data)")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="between LSTM layers and in the head")
    bidirectional: bool = Field(False, description="read each sequence both ways")


def state_shapes(config: LSTMConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes of `RealDataLSTMPredictor` for ``config`` (a weights
    file is checked against them without building the torch module)."""
    h, d = config.hidden_size, 2 if config.bidirectional else 1
    out: dict[str, tuple[int, ...]] = {}
    for k in range(config.num_layers):
        inp = config.input_size if k == 0 else h * d
        for sfx in ("", "_reverse")[:d]:
            out[f"lstm.weight_ih_l{k}{sfx}"] = (4 * h, inp)
            out[f"lstm.weight_hh_l{k}{sfx}"] = (4 * h, h)
            out[f"lstm.bias_ih_l{k}{sfx}"] = (4 * h,)
            out[f"lstm.bias_hh_l{k}{sfx}"] = (4 * h,)
    width = h * d
    out["classifier.0.weight"] = (width // 2, width)
    out["classifier.0.bias"] = (width // 2,)
    out["classifier.3.weight"] = (config.num_classes, width // 2)
    out["classifier.3.bias"] = (config.num_classes,)
    return out
