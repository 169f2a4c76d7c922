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
