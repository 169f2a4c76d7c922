"""Which input columns pushed p_attack for a sequence: gradient x input on the attack
logit margin, one backward pass per micro-batch (docs/evidence.md).

Only the last window's columns are attributed (the window the prediction's evidence
describes): for the package's LSTM the history runs without gradients and hands its
state to the last step, so the backward pass goes through one step, not T (another
model, or a bidirectional one, is differentiated through every step and its columns
summed over them).

The margin is m = logsumexp(attack logits) - benign logit = log(p_attack / (1 - p_attack)):
it rises exactly when p_attack does, and unlike p_attack its gradient does not vanish
where the model is sure (p_attack near 0 or 1). The inputs are the model's own encoded
features (a column's log-standardised value and its piecewise-linear bins); a column's
contribution is the sum of gradient x input over its encoded features, so the baseline
is "every encoded feature at 0" (the training mean of the log-standardised value, below
the first bin). A column's share is
its contribution over the sum of all columns' absolute contributions: the shares of all
columns sum to 1 in absolute value, positive pushes towards attack, negative towards
benign.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import repeat

from typing import Any

import numpy as np
import orjson

MODES = ("on", "flagged", "off")


def margin_attribution(model: Any, x: Any, benign: int | None, n_columns: int,
                       bins: int) -> tuple[np.ndarray, Any]:
    """(shares, logits): (n, columns) signed shares (rows sum to 1 in absolute value; 0
    where the gradient is 0) for ``x`` (n, T, encoded) on the model's device, and the
    forward pass's logits (detached), so that a caller attributing every row needs no
    second forward. ``benign``: the benign class index (None: a model without one; the
    margin is then the top class's log-probability). The torch engine's; the numpy engine
    computes the same by hand (`ids_daemon.model.numpy_lstm`)."""
    import torch

    lstm, head, drop = (getattr(model, a, None) for a in ("lstm", "classifier", "dropout"))
    split = (isinstance(lstm, torch.nn.LSTM) and head is not None and drop is not None and lstm.batch_first
             and not lstm.bidirectional and x.shape[1] > 1)
    ctx = torch.backends.cudnn.flags(enabled=False) if x.is_cuda else _null()
    if split:
        # the last window only: the history runs without gradients and hands its state to
        # the last step, the only one the backward pass goes through (the same logits as
        # model(x), at the cost of one step's backward instead of T)
        with torch.no_grad():
            _, state = lstm(x[:, :-1])
        x = x[:, -1:].detach().requires_grad_(True)
    else:
        x = x.detach().requires_grad_(True)
    with torch.enable_grad(), ctx:  # cuDNN's LSTM backward needs training mode; the native one does not
        if split:
            out, _ = lstm(x, state)
            logits = head(drop(out[:, -1, :])).float()
        else:
            logits = model(x).float()
        if benign is None:
            margin = torch.log_softmax(logits, dim=1).max(dim=1).values
        else:
            keep = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
            keep[benign] = False
            margin = torch.logsumexp(logits[:, keep], dim=1) - logits[:, benign]
        (grad,) = torch.autograd.grad(margin.sum(), x)
    gx = (grad * x).detach().float()  # (n, T, E)
    per = gx[..., :n_columns].sum(dim=1)
    if bins:
        per = per + gx[..., n_columns:].sum(dim=1).view(len(x), n_columns, bins).sum(dim=2)
    tot = per.abs().sum(dim=1, keepdim=True)
    share = torch.where(tot > 0, per / tot.clamp_min(1e-30), torch.zeros_like(per))
    # a gradient that overflowed (half precision) gives no share, never a NaN in a record
    share = torch.nan_to_num(share, nan=0.0, posinf=0.0, neginf=0.0)
    return share.cpu().numpy().astype(np.float64), logits.detach()


def top_columns(shares: np.ndarray, names: list[str], k: int = 3) -> list[list[dict]]:
    """The ``k`` columns of largest absolute share per row, largest first, as
    ``[{"column": name, "share": signed share (4 decimals)}]`` (columns with no share are left out)."""
    if not len(shares):
        return []
    k = min(k, shares.shape[1])
    idx = np.argsort(-np.abs(shares), axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(shares, idx, axis=1)
    out = []
    for ii, vv in zip(idx.tolist(), np.round(vals, 4).tolist()):
        out.append([{"column": names[j], "share": v} for j, v in zip(ii, vv) if v != 0])
    return out


def top_columns_json(shares: np.ndarray, names: list[str], k: int = 3) -> list[str]:
    """`top_columns` of each row as the JSON text ``orjson.dumps`` writes for it, byte for
    byte, without a dict per column: the entries are gathered from per-column texts and the
    shares' text comes from one ``orjson.dumps`` of the rounded shares (the prediction's
    encoder puts the text in the message as it is)."""
    n = len(shares)
    if not n:
        return []
    k = min(k, shares.shape[1])
    if k == 0:
        return ["[]"] * n
    idx = np.argsort(-np.abs(shares), axis=1, kind="stable")[:, :k]
    vals = np.round(shares[np.arange(n)[:, None], idx], 4).astype(np.float64)
    text = orjson.dumps(vals.ravel(), option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    heads = _entries(tuple(names))[idx]
    parts: list = []
    for j in range(k):
        parts += [repeat("}," if j else "["), heads[:, j].tolist(), text[j::k]]
    out = list(map("".join, zip(*parts, repeat("}]"))))
    # a share that rounds to 0 is left out (rare: a row's gradient nearly all in fewer columns)
    for i in np.flatnonzero((vals == 0).any(axis=1)).tolist():
        out[i] = orjson.dumps([{"column": names[c], "share": v} for c, v in zip(idx[i].tolist(), vals[i].tolist())
                               if v != 0]).decode()
    return out


@lru_cache(maxsize=8)
def _entries(names: tuple[str, ...]) -> np.ndarray:
    """Each column's entry opening, ``{"column":"name","share":``, as orjson writes it."""
    return np.array([f'{{"column":{orjson.dumps(c).decode()},"share":' for c in names], dtype=object)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None
