"""The served LSTM on the CPU in numpy: the forward pass and the attribution's one-step
backward pass, from the weights' arrays, without torch.

Why: torch's import is about half of the daemon's start-up on a CPU (2 of ~3.6 s on the
project's 2-core machine, `ids-daemon replay` of one packet) and a third of its memory,
for a network of a few matrix products. numpy's GEMMs (OpenBLAS, one thread) run this
LSTM as fast as torch's oneDNN kernel does (bench/gpu.py); the GPU, half precision and
networks this class does not serve keep the torch path (`ids_daemon.model.fast`).

The network is `RealDataLSTMPredictor` in eval mode: stacked one-direction LSTM layers, then
Linear → ReLU → Linear on the last step's output (dropout is the identity). Like
`FastLSTM`, the input leaves out the piecewise-linear encoding's padding bins (always 0,
their weights never count). Gates are torch's order (input, forget, cell, output), the cell
gate's rows of the weights doubled once at load (tanh(z) = 2σ(2z) − 1). The forward pass's
steps run compiled (`_cell`); the attribution's last step, on flagged rows only, is numpy:
every sigmoid and tanh one ``exp`` over the whole gate matrix (numpy's ``exp`` is vectorised
where its ``tanh`` is not: 0.49 ms against 0.79 for 1,024 × 256 values here).

A window is in T sequences of its key (the last T windows each), and a flood's windows repeat
from key to key, so the first layer's input projection (the encoding and the widest product,
most of the arithmetic) is kept for the windows seen last (`WindowCache`, by their raw bits)
and computed once per window. What is left per step is the recurrent product (BLAS) and the
gates, one compiled pass (`_cell`: tanh as a rational function, so that the loop vectorises).
`bench/predict.py`, one core, batch 1,024, the cache emptied before each pass over the
sequences, against the torch engine of the tree before in the same run: the whole `predict`
at 143.5 k sequences/s on the benign bench capture (torch 89.1 k) and 235.6 k on the
flood-heavy one (torch 127.8 k); docs/daemon.md has the steps and the other batch sizes.

The attribution is `ids_daemon.inference.attribution`'s, computed by hand: gradient × input
of the attack logit margin (logsumexp of the attack logits − the benign logit) on the last
window's encoded features, the history's state held fixed; the gradient goes back through
the head and one step of each layer. The same numbers as torch's autograd up to float32
rounding (tests/test_numpy_lstm.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .config import LSTMConfig
from .encoding import FeatureEncoder


class NumpyLSTM:
    """Logits and attributions of a one-direction `RealDataLSTMPredictor` (weights ``state``,
    a state_dict as numpy arrays) for raw sequences (n, T, columns) float32. ``padding``: keep
    the padding bins too (the whole encoding: what the worker checks the engine against)."""

    def __init__(self, state: dict[str, np.ndarray], config: LSTMConfig, encoder: FeatureEncoder,
                 padding: bool = False, cache_windows: int = 1 << 15):
        if config.bidirectional:
            raise ValueError("a bidirectional LSTM is served by torch")
        f, bins = len(encoder.columns), encoder.bins
        self.columns, self.bins = f, bins
        real = np.isfinite(encoder._lo[:, :bins]) if bins else np.zeros((f, 0), dtype=bool)
        if padding:
            real = np.ones_like(real)
        keep = np.concatenate([np.arange(f), f + np.flatnonzero(real.ravel())])
        self.width = len(keep)
        # the column each kept feature belongs to (its attribution is summed per column)
        self.owner = np.concatenate([np.arange(f), np.repeat(np.arange(f), bins).reshape(f, max(bins, 0))[real]]
                                    ).astype(np.int64)
        self._col = np.ascontiguousarray(self.owner[f:], dtype=np.int64)
        self._pos = np.arange(f, self.width, dtype=np.int64)
        self._lo = np.ascontiguousarray(encoder._lo32[:, :bins][real], dtype=np.float32)
        self._inv_width = np.ascontiguousarray(encoder._inv_width32[:, :bins][real], dtype=np.float32)
        self._clip_max = np.asarray(encoder.clip_max, dtype=np.float32)
        self._median = np.asarray(encoder.median, dtype=np.float32)
        self._mu = encoder._mu32
        self._inv_sd = encoder._inv_sd32
        h = config.hidden_size
        self.hidden = h
        # the cell gate's rows doubled: its tanh is then 2σ(·) − 1 of the same exp as the others
        scale = np.ones((4 * h, 1), dtype=np.float32)
        scale[2 * h:3 * h] = 2.0
        self.layers = []
        for k in range(config.num_layers):
            w_ih = np.asarray(state[f"lstm.weight_ih_l{k}"], dtype=np.float32)
            if k == 0:
                w_ih = w_ih[:, keep]
            w_hh = np.asarray(state[f"lstm.weight_hh_l{k}"], dtype=np.float32)
            b = (np.asarray(state[f"lstm.bias_ih_l{k}"], dtype=np.float32)
                 + np.asarray(state[f"lstm.bias_hh_l{k}"], dtype=np.float32))
            # (inputs, 4H) and (H, 4H): the products are x @ w, row-major on both sides
            self.layers.append((np.ascontiguousarray((w_ih * scale).T), np.ascontiguousarray((w_hh * scale).T),
                                (b * scale[:, 0]).astype(np.float32)))
        self.w1 = np.ascontiguousarray(np.asarray(state["classifier.0.weight"], dtype=np.float32).T)
        self.b1 = np.asarray(state["classifier.0.bias"], dtype=np.float32)
        self.w2 = np.ascontiguousarray(np.asarray(state["classifier.3.weight"], dtype=np.float32).T)
        self.b2 = np.asarray(state["classifier.3.bias"], dtype=np.float32)
        # the first layer's input projection of the windows seen last, by content (0: none)
        self.cache = WindowCache(f, 4 * h, cache_windows) if cache_windows else None

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, T, width) LSTM input of raw sequences ``x`` (n, T, columns): the reference
        encoding (`TorchEncoder`'s float32 arithmetic) without its padding bins."""
        xs = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(xs.shape[:2] + (self.width,), dtype=np.float32)
        clean = np.empty_like(xs)
        clean_and_bins(xs, self._clip_max, self._median, self._col, self._lo, self._inv_width, self._pos, clean, out)
        lg = out[..., :self.columns]
        np.abs(clean, out=lg)
        np.log1p(lg, out=lg)
        np.copysign(lg, clean, out=lg)
        lg -= self._mu
        lg *= self._inv_sd
        return out

    def _step(self, gx: np.ndarray, h: np.ndarray | None, c: np.ndarray | None, w_hh: np.ndarray):
        """One LSTM step from the input's projection ``gx`` (n, 4H, bias included): (h, c, the
        gates' sigmoids (n, 4H), tanh(c))."""
        n = self.hidden
        z = gx if h is None else gx + h @ w_hh
        s = _sigmoid(z)
        i, f, g, o = s[:, :n], s[:, n:2 * n], s[:, 2 * n:3 * n], s[:, 3 * n:]
        g = 2.0 * g - 1.0
        c_new = i * g if c is None else f * c + i * g
        tc = 2.0 * _sigmoid(2.0 * c_new) - 1.0
        return o * tc, c_new, s, tc

    def project(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first layer's input projection of raw sequences ``x`` (n, T, columns), bias
        included, as (rows (m, 4H), slot (n, T)): step t of sequence i is ``rows[slot[i, t]]``.

        A window is in T sequences of its key (the last T of each), and in a flood in many
        keys' sequences: its encoding and projection, most of the arithmetic, are looked up by
        the window's raw values (`WindowCache`) and computed only for windows not seen lately.
        A window's projection is then the one computed when it was first seen, in another
        batch: equal up to float32 summation order to computing it again. The rows are read
        where they lie (the cache's array), not gathered: a batch's gather was 9 MB of copying."""
        n, steps, f = x.shape
        w_ih, _, b = self.layers[0]
        rows = np.ascontiguousarray(x, dtype=np.float32).reshape(n * steps, f)
        if self.cache is None or len(rows) > self.cache.capacity:
            out = self.encode(rows[:, None, :])[:, 0] @ w_ih
            out += b
            return out, np.arange(n * steps, dtype=np.int64).reshape(n, steps)
        slot, miss_rows, first = self.cache.lookup(rows)
        if len(miss_rows):  # the new windows' slots follow one another: the product lands in place
            new = self.cache.proj[first:first + len(miss_rows)]
            np.matmul(self.encode(rows[miss_rows][:, None, :])[:, 0], w_ih, out=new)
            new += b
        return self.cache.proj, slot.reshape(n, steps)

    def _layers(self, proj: np.ndarray, slot: np.ndarray, steps: int) -> tuple[list, np.ndarray | None]:
        """The layers over the first ``steps`` steps, from the first layer's input projection
        (`project`'s rows and slots): each layer's final (h, c) (None, None for no steps), and
        the last layer's final h (None for no steps)."""
        n = slot.shape[0]
        states = []
        last = len(self.layers) - 1
        for k, (w_ih, w_hh, b) in enumerate(self.layers):
            if steps == 0:
                states.append((None, None))
                continue
            if k > 0:  # the layer below's every h, projected: rows n * steps, in order
                proj = (x.reshape(n * steps, -1) @ w_ih)
                proj += b
                slot = np.arange(n * steps, dtype=np.int64).reshape(n, steps)
            h, c, x = self._run(proj, slot, steps, w_hh, outputs=k < last)
            states.append((h, c))
        return states, (states[-1][0] if steps else None)

    def _run(self, proj: np.ndarray, slot: np.ndarray, steps: int, w_hh: np.ndarray, outputs: bool):
        """One layer over ``steps`` steps, step t of sequence i's input projection at
        ``proj[slot[i, t]]``: (h, c, every step's h (n, steps, H) when ``outputs``). The
        recurrent product is BLAS's; the rest of a step, the gates and the state, is one
        compiled pass (`_cell`): fifteen numpy passes over the gate matrix took twice as long,
        and were most of the model's time once the windows' projections are cached."""
        n, hh = slot.shape[0], self.hidden
        z = np.zeros((n, 4 * hh), dtype=np.float32)  # h @ w_hh: 0 before the first step
        h = np.zeros((n, hh), dtype=np.float32)
        c = np.zeros((n, hh), dtype=np.float32)
        outs = np.empty((n, steps, hh), dtype=np.float32) if outputs else None
        for k in range(steps):
            if k:
                np.matmul(h, w_hh, out=z)
            _cell(z, proj, slot, k, c, h)
            if outs is not None:
                outs[:, k] = h
        return h, c, outs

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Class logits (n, classes) float32 of raw sequences ``x`` (n, T, columns)."""
        if not len(x):
            return np.zeros((0, len(self.b2)), dtype=np.float32)
        proj, slot = self.project(x)
        _, h = self._layers(proj, slot, slot.shape[1])
        return self._head(h)[2]

    def _head(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z1 = h @ self.w1
        z1 += self.b1
        a = np.maximum(z1, 0.0)
        logits = a @ self.w2
        logits += self.b2
        return z1, a, logits

    def attribution(self, x: np.ndarray, benign: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(shares, logits) for raw sequences ``x`` (n, T, columns): each column's signed share
        of gradient × input on the last window's encoded features, rows summing to 1 in
        absolute value (0 where the gradient is 0), as `margin_attribution` gives them;
        ``benign``: the benign class (None: the margin is the top class's log-probability)."""
        n, steps = x.shape[0], x.shape[1]
        if not n:
            return np.zeros((0, self.columns)), np.zeros((0, len(self.b2)), dtype=np.float32)
        proj, slot = self.project(x)
        last = self.encode(x[:, -1:])[:, 0]  # the last window's encoded features: the gradient's input
        with np.errstate(over="ignore"):
            states, _ = self._layers(proj, slot, steps - 1)
            # the last step of every layer, keeping what its backward pass needs
            inp, saved = None, []
            for k, ((w_ih, w_hh, b), (h0, c0)) in enumerate(zip(self.layers, states)):
                if k == 0:
                    gx = proj[slot[:, -1]]
                else:
                    gx = inp @ w_ih
                    gx += b
                h, c, s, tc = self._step(gx, h0, c0, w_hh)
                saved.append((c0, s, tc))
                inp = h
            z1, _, logits = self._head(inp)
        lg = logits.astype(np.float64)
        if benign is None:
            top = lg.argmax(axis=1)
            d = -softmax(lg)
            d[np.arange(n), top] += 1.0
        else:
            attack = np.ones(lg.shape[1], dtype=bool)
            attack[benign] = False
            d = np.zeros_like(lg)
            d[:, attack] = softmax(lg[:, attack])
            d[:, benign] = -1.0
        dh = ((d.astype(np.float32) @ self.w2.T) * (z1 > 0)) @ self.w1.T
        hh = self.hidden
        for (w_ih, _, _), (c0, s, tc) in zip(reversed(self.layers), reversed(saved)):
            i, f, g, o = s[:, :hh], s[:, hh:2 * hh], 2.0 * s[:, 2 * hh:3 * hh] - 1.0, s[:, 3 * hh:]
            dc = dh * o * (1.0 - tc * tc)
            dz = np.empty_like(s)
            dz[:, :hh] = dc * g * i * (1.0 - i)
            dz[:, hh:2 * hh] = (dc * c0 * f * (1.0 - f)) if c0 is not None else 0.0
            # d tanh(z)/dz = 1 - tanh², halved: the weights it goes back through are doubled
            dz[:, 2 * hh:3 * hh] = 0.5 * dc * i * (1.0 - g * g)
            dz[:, 3 * hh:] = dh * tc * o * (1.0 - o)
            dh = dz @ w_ih.T  # the layer's input: the layer below's h, or the encoded window
        gx = (dh * last).astype(np.float64)
        per = gx @ self._owner_matrix()
        tot = np.abs(per).sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(tot > 0, per / np.maximum(tot, 1e-30), 0.0)
        return np.nan_to_num(share, nan=0.0, posinf=0.0, neginf=0.0), logits

    def _owner_matrix(self) -> np.ndarray:
        """(width, columns) 0/1: which column each kept feature belongs to (a product sums them)."""
        m = getattr(self, "_owner_m", None)
        if m is None:
            m = np.zeros((self.width, self.columns))
            m[np.arange(self.width), self.owner] = 1.0
            self._owner_m = m
        return m


class WindowCache:
    """Projections of raw windows (rows of ``columns`` float32) by their exact bits, for the
    last windows seen, at most ``capacity``: an open-addressing index over the stored rows.
    When a batch's windows would not fit in what is left, the cache starts empty again (a
    window lives in its key's next T - 1 sequences, which come soon after it)."""

    def __init__(self, columns: int, width: int, capacity: int):
        self.capacity = int(capacity)
        self.rows = np.empty((self.capacity, columns), dtype=np.uint32)
        self.proj = np.empty((self.capacity, width), dtype=np.float32)
        slots = 16
        while slots < 2 * self.capacity:
            slots <<= 1
        self.index = np.full(slots, -1, dtype=np.int32)
        self.used = np.zeros(1, dtype=np.int64)
        self.hits = 0
        self.misses = 0
        self.resets = 0

    def clear(self) -> None:
        """Forget every window (the next batch starts an empty cache)."""
        self.index.fill(-1)
        self.used[0] = 0

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(each row's slot, the rows not held, the first slot given to them: they have the
        slots from there on, in order) for ``rows`` (m, columns) float32, m at most the
        capacity; the caller writes the missing rows' projections into ``proj`` at their slots
        before reading any."""
        m = len(rows)
        if self.used[0] + m > self.capacity:
            self.clear()
            self.resets += 1
        slot = np.empty(m, dtype=np.int64)
        miss_rows = np.empty(m, dtype=np.int64)
        first = int(self.used[0])
        k = _lookup(rows.view(np.uint32), self.rows, self.index, self.used, slot, miss_rows)
        self.misses += k
        self.hits += m - k
        return slot, miss_rows[:k], first


@njit(cache=True, nogil=True)
def _lookup(rows, held, index, used, slot, miss_rows):
    """`WindowCache.lookup`'s pass: each row hashed (its words two at a time, times an odd
    constant), probed linearly, compared word for word with the held row; a row not found is
    stored in the next free slot (in the order met, so a repeat later in the same batch finds
    it) and listed as missing."""
    m, f = rows.shape
    mask = np.uint64(index.size - 1)
    k = 0
    for r in range(m):
        # words in pairs: a multiply per two words, and the chain of multiplies half as long
        h = np.uint64(0x9E3779B97F4A7C15)
        for j in range(0, f - 1, 2):
            h = (h ^ (np.uint64(rows[r, j]) | (np.uint64(rows[r, j + 1]) << np.uint64(32)))) \
                * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(29)
        if f & 1:
            h = (h ^ np.uint64(rows[r, f - 1])) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(29)
        i = h & mask
        while True:
            s = index[i]
            if s < 0:
                s = used[0]
                used[0] += 1
                index[i] = s
                for j in range(f):
                    held[s, j] = rows[r, j]
                miss_rows[k] = r
                k += 1
                break
            same = True
            for j in range(f):
                if held[s, j] != rows[r, j]:
                    same = False
                    break
            if same:
                break
            i = (i + np.uint64(1)) & mask
        slot[r] = s
    return k


# fast-math without 'nnan'/'ninf': a NaN must stay NaN, so that the worker's schema check
# refuses it (with them LLVM may fold the clamp into a finite number)
_FAST = {"contract", "arcp", "afn"}


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _tanh(x):
    """tanh in float32 as a rational function (Eigen's `generic_fast_tanh_float`, the one
    torch's CPU kernels once used): within 3e-7 of the true value everywhere (its clamp at
    ±7.9 is where float32's tanh is 1 to that much), and only multiplies, adds and a divide,
    so a loop of it is vectorised, where a loop of ``exp`` is a scalar call per value."""
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return p * x / q


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _cell(z, proj, slot, k, c, h):
    """One LSTM step, in place: ``z`` (n, 4H) the recurrent product h @ w_hh (0 at the first
    step, where ``c`` is 0 too), step ``k``'s input projection ``proj[slot[i, k]]``; ``c`` and
    ``h`` (n, H) become the new state. Gates in torch's order (input, forget, cell, output),
    σ(a) = (1 + tanh(a/2)) / 2, and the cell gate's rows were doubled at load (for the
    2σ(2a) − 1 of the numpy passes): its tanh is of half its sum too."""
    n, hh = h.shape
    half = np.float32(0.5)
    for r in range(n):
        p = proj[slot[r, k]]
        zr = z[r]
        cr = c[r]
        hr = h[r]
        for j in range(hh):
            i = half + half * _tanh(half * (zr[j] + p[j]))
            f = half + half * _tanh(half * (zr[hh + j] + p[hh + j]))
            g = _tanh(half * (zr[2 * hh + j] + p[2 * hh + j]))
            o = half + half * _tanh(half * (zr[3 * hh + j] + p[3 * hh + j]))
            cn = f * cr[j] + i * g
            cr[j] = cn
            hr[j] = o * _tanh(cn)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), in float32 (exp overflows to inf for z < -88: the result is then 0)."""
    s = np.negative(z)
    np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    return s


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits (n, classes), in float64 (torch.softmax's arithmetic: the
    worker compares p_attack with a threshold near 1, where float32 has no resolution left)."""
    z = logits.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
    return z


@njit(cache=True, nogil=True, error_model="numpy")
def clean_and_bins(x: np.ndarray, clip_max: np.ndarray, median: np.ndarray, col: np.ndarray, lo: np.ndarray,
                   inv_width: np.ndarray, pos: np.ndarray, clean: np.ndarray, out: np.ndarray) -> None:
    """``clean``: ``x`` with +inf → the column's largest training value, NaN and -inf → its
    median (`TorchEncoder`'s cleaning); ``out[..., pos[k]]``: real bin k's share,
    clip((value - lo) · inv_width, 0, 1), in `TorchEncoder`'s float32 arithmetic."""
    n, steps, f = x.shape
    nk = col.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for i in range(n):
        for t in range(steps):
            c = clean[i, t]
            xr = x[i, t]
            for j in range(f):
                v = xr[j]
                v = clip_max[j] if v == np.inf else v
                c[j] = v if np.isfinite(v) else median[j]
            o = out[i, t]
            for k in range(nk):
                o[pos[k]] = min(max((c[col[k]] - lo[k]) * inv_width[k], zero), one)
