"""The seed's LSTM classifier: sequences of feature windows → class logits."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import LSTMConfig

__all__ = ["LSTMConfig", "RealDataLSTMPredictor"]


class RealDataLSTMPredictor(nn.Module):
    """LSTM layers, dropout, then Linear → ReLU → Dropout → Linear on the last time
    step's output; returns logits."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(
            input_size=config.input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=config.bidirectional,
        )
        out = config.hidden_size * (2 if config.bidirectional else 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Sequential(
            nn.Linear(out, out // 2),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(out // 2, config.num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for name, param in self.lstm.named_parameters():
            if "weight_ih" in name:
                nn.init.xavier_uniform_(param.data)
            elif "weight_hh" in name:
                nn.init.orthogonal_(param.data)
            elif "bias" in name:
                param.data.fill_(0.0)
        for layer in self.classifier:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                layer.bias.data.fill_(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, time, features) → logits (batch, classes)."""
        out, _ = self.lstm(x)
        return self.classifier(self.dropout(out[:, -1, :]))

    @torch.inference_mode()
    def predict_attack_probability(self, sequences: np.ndarray | torch.Tensor) -> np.ndarray:
        """Softmax class probabilities for (n, time, features) encoded sequences."""
        self.eval()
        dev = next(self.parameters()).device
        x = torch.as_tensor(sequences, dtype=torch.float32, device=dev)
        return torch.softmax(self.forward(x), dim=1).cpu().numpy()
