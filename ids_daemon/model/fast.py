"""The served model's forward pass for inference in torch (no autograd): raw columns →
logits, with the piecewise-linear encoding's padding bins left out of the LSTM's input. The
worker runs it on a GPU, and on the CPU with ``inference.engine: torch``; the CPU's default is
the same arithmetic in numpy (`ids_daemon.model.numpy_lstm`), which needs no torch.

The reference path (`TorchEncoder`, then `RealDataLSTMPredictor`) builds each time step's
``columns × (1 + bins)`` encoded vector (38 × 9 = 342 for the bundled model) and
multiplies it by the LSTM's input weights: that projection is most of the model's
arithmetic. But a column with fewer distinct quantile edges than bins has padding bins
whose lower edge is +inf: they encode as exactly 0 for every value, and their weights
never count (the bundled model: 171 of its 304 bins). `FastLSTM` keeps only the real bins
— an LSTM of the same weights on a 171-wide input, half the projection — so the result is
the reference's up to float32 summation order (tests/test_fast_path.py: probabilities
within 1e-5 on random and real sequences).

On the CPU the encoding is one numba pass (cleaning, and the bins written straight into
the LSTM's contiguous input, no intermediate tensors) plus torch's vectorised log1p for
the log-standardised part (numba's scalar log1p costs ten times as much); on a GPU it is
torch ops on the device. The LSTM and the head are torch modules on the model's device
for both (oneDNN on the CPU, cuDNN on a GPU).

Measured (bench/gpu.py, this project's 2-core machine): see docs/daemon.md, "Figures".
"""

from __future__ import annotations

import numpy as np
import torch

from .encoding import FeatureEncoder, TorchEncoder
from .lstm import RealDataLSTMPredictor
from .numpy_lstm import clean_and_bins


def supports(model: torch.nn.Module, encoder: FeatureEncoder) -> bool:
    """Whether `FastLSTM` can serve this model: the seed's one-direction LSTM on the
    encoder's full output, in float32 (half precision takes the reference path)."""
    lstm = getattr(model, "lstm", None)
    return (isinstance(model, RealDataLSTMPredictor) and isinstance(lstm, torch.nn.LSTM)
            and not lstm.bidirectional and lstm.batch_first and getattr(lstm, "proj_size", 0) == 0
            and lstm.weight_ih_l0.dtype == torch.float32 and lstm.input_size == encoder.output_size)


class FastLSTM:
    """Logits of ``model`` (eval mode, on its device) for raw sequences (module docstring)."""

    def __init__(self, model: RealDataLSTMPredictor, encoder: FeatureEncoder):
        src = model.lstm
        self.device = src.weight_ih_l0.device
        self.classifier = model.classifier
        f, bins = len(encoder.columns), encoder.bins
        self.columns = f
        real = np.isfinite(encoder._lo[:, :bins]) if bins else np.zeros((f, 0), dtype=bool)
        # the kept encoded features: every log-standardised column, then each real bin
        keep = np.concatenate([np.arange(f), f + np.flatnonzero(real.ravel())])
        self.width = len(keep)
        self._col = np.ascontiguousarray(np.repeat(np.arange(f), bins).reshape(f, bins)[real], dtype=np.int64)
        # where each real bin goes: in the LSTM's input (after the columns, one after the
        # other), and in the reference encoding (column × bins, padding bins included)
        self._pos = np.arange(f, f + int(real.sum()), dtype=np.int64)
        self._ref_pos = (f + np.flatnonzero(real.ravel())).astype(np.int64)
        self.reference_width = encoder.output_size
        self.reference = TorchEncoder(encoder, self.device)
        self._lo = np.ascontiguousarray(encoder._lo32[:, :bins][real], dtype=np.float32)
        self._inv_width = np.ascontiguousarray(encoder._inv_width32[:, :bins][real], dtype=np.float32)
        self._clip_max = np.asarray(encoder.clip_max, dtype=np.float32)
        self._median = np.asarray(encoder.median, dtype=np.float32)
        dev = self.device
        as_t = lambda a: torch.as_tensor(np.asarray(a), device=dev)  # noqa: E731
        self.clip_max, self.median = as_t(self._clip_max), as_t(self._median)
        self.mu, self.inv_sd = as_t(encoder._mu32), as_t(encoder._inv_sd32)
        self.col, self.lo, self.inv_width = as_t(self._col), as_t(self._lo), as_t(self._inv_width)
        lstm = torch.nn.LSTM(self.width, src.hidden_size, num_layers=src.num_layers, bias=src.bias,
                             batch_first=True, dropout=0.0)
        state = {k: (v[:, torch.as_tensor(keep, device=v.device)] if k == "weight_ih_l0" else v)
                 for k, v in src.state_dict().items()}
        lstm.load_state_dict(state)
        self.lstm = lstm.to(dev).eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, T, width) LSTM input of raw sequences ``x`` (n, T, columns) float32 on the device:
        the reference encoding without its padding bins."""
        if self.device.type == "cpu":
            c, enc = self._cleaned_and_binned(x, self.width, self._pos, zeroed=False)
            enc[..., :self.columns] = c.abs().log1p_().copysign_(c).sub_(self.mu).mul_(self.inv_sd)
            return enc
        return self.encode_torch(x)

    def _cleaned_and_binned(self, x: torch.Tensor, width: int, pos: np.ndarray,
                            zeroed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(the cleaned values, an encoding ``width`` wide whose real bins sit at ``pos``) of
        raw sequences ``x`` on the CPU, by the numba pass; ``zeroed``: every other entry 0."""
        xs = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        out = (np.zeros if zeroed else np.empty)(xs.shape[:2] + (width,), dtype=np.float32)
        clean = np.empty_like(xs)
        clean_and_bins(xs, self._clip_max, self._median, self._col, self._lo, self._inv_width, pos, clean, out)
        return torch.from_numpy(clean), torch.from_numpy(out)

    def encode_reference(self, x: torch.Tensor) -> torch.Tensor:
        """`TorchEncoder`'s encoding (n, T, every bin), bit for bit, of raw sequences ``x``
        (n, T, columns) float32 on the device: what the attribution differentiates (its
        shares are per column of the reference encoding). On the CPU the cleaning and the
        real bins are the numba pass, written at their places in a zeroed tensor (a padding
        bin is exactly 0 there too), and the log-standardised part is `TorchEncoder`'s own
        torch expression on the cleaned values: a third of `TorchEncoder`'s time, which
        makes every one of the 38 × 8 bins through six whole-tensor passes. Elsewhere (a
        GPU) `TorchEncoder` itself."""
        if self.device.type != "cpu":
            return self.reference(x)
        c, enc = self._cleaned_and_binned(x, self.reference_width, self._ref_pos, zeroed=True)
        enc[..., :self.columns] = (torch.log1p(c.abs()).copysign(c) - self.mu) * self.inv_sd
        return enc

    def encode_torch(self, x: torch.Tensor) -> torch.Tensor:
        """`encode` as torch ops on any device (what a GPU runs; tested on the CPU)."""
        x = torch.where(torch.isposinf(x), self.clip_max, x)
        x = torch.where(torch.isfinite(x), x, self.median)
        lg = (torch.log1p(x.abs()).copysign(x) - self.mu) * self.inv_sd
        ple = ((x[..., self.col] - self.lo) * self.inv_width).clamp_(0.0, 1.0)
        return torch.cat([lg, ple], dim=-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (n, classes) of raw sequences ``x`` (n, T, columns) float32 on the
        model's device; call it under `torch.inference_mode`."""
        out, _ = self.lstm(self.encode(x))
        return self.classifier(out[:, -1, :])
