"""What an RL policy needs each step: the latest state per key as a fixed-size vector.

`ObservationBuilder` folds the prediction stream into one state per key — the target
host (default) or the flow key — and turns a key's state into a vector with a
documented layout (`ObservationBuilder.layout`):

    0  risk_score            of the key's latest prediction, [0, 1]
    1  confidence            of that prediction
    2  is_attack             0 or 1
    3  severity              low 0, medium 1/3, high 2/3, critical 1
    4  recency               exp(-(now - last seen) / tau): 1 just seen, -> 0 when quiet
    5  activity              1 - exp(-predictions in the last tau seconds / 10)
    6  max_risk_recent       the highest risk of the key within tau seconds
    7.. families             one-hot of the predicted family (Benign, DDoS, DoS, Mirai,
                             Recon, Spoofing, Web, BruteForce, other)
    ..  class probabilities  one slot per model class (the top-k the daemon publishes;
                             the rest 0), in the order given at construction

With gymnasium installed, `make_env` wraps recorded episodes (the predictions a
replay published, and the truth: every packet's time, hosts and label) as an
environment whose reward is what the actions did to the real packets (docs/rl.md).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..predictions.decode import Prediction
from ..predictions.vocabulary import FAMILIES as _FAMILIES, SEVERITY_RANK
from .filters import FLOOD_FILTER

FAMILIES = _FAMILIES + ("other",)  # the observation's one-hot: a family outside CICIoT2023 is "other"
ACTIONS = ("ignore", "rate_limit", "block")


@dataclass
class KeyState:
    """What is known of one key."""

    last: Prediction
    last_seen: float
    recent: deque = field(default_factory=deque)  # (time, risk) within tau
    # the class of its latest attack prediction that named a flood's packets (`FLOOD_FILTER`):
    # the model's predictions name a family only ("DDoS"), a detector's finding the class
    flood_class: str | None = None


class ObservationBuilder:
    """Latest state per key → fixed-size observation vectors."""

    def __init__(self, classes: list[str], key_by: str = "host", tau: float = 30.0, max_keys: int = 100_000):
        if key_by not in ("host", "flow"):
            raise ValueError("key_by must be 'host' or 'flow'")
        self.classes = list(classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.key_by = key_by
        self.tau = float(tau)
        self.max_keys = int(max_keys)
        self.states: dict[str, KeyState] = {}
        self.layout = (["risk_score", "confidence", "is_attack", "severity", "recency", "activity", "max_risk_recent"]
                       + [f"family={f}" for f in FAMILIES] + [f"p={c}" for c in self.classes])

    @property
    def size(self) -> int:
        return len(self.layout)

    def key_of(self, p: Prediction) -> str:
        if self.key_by == "host":
            return p.flow.host or p.flow.key
        return p.flow.key

    def update(self, p: Prediction) -> str:
        """Fold one prediction in; returns its key."""
        k = self.key_of(p)
        t = p.window.last_ts
        st = self.states.get(k)
        if st is None:
            if len(self.states) >= self.max_keys:  # bounded: forget the stalest key
                stale = min(self.states, key=lambda x: self.states[x].last_seen)
                del self.states[stale]
            st = self.states[k] = KeyState(last=p, last_seen=t)
        if t >= st.last_seen:
            st.last, st.last_seen = p, t
        if p.is_attack and p.predicted_attack in FLOOD_FILTER:  # in arrival order: a finding may come late
            st.flood_class = p.predicted_attack
        st.recent.append((t, p.risk_score))
        while st.recent and st.recent[0][0] < st.last_seen - self.tau:
            st.recent.popleft()
        return k

    def observation(self, key: str, now: float | None = None) -> np.ndarray:
        """The vector of one key (zeros for a key never seen)."""
        v = np.zeros(self.size, dtype=np.float32)
        st = self.states.get(key)
        if st is None:
            return v
        p = st.last
        now = st.last_seen if now is None else now
        recent = [r for t, r in st.recent if t >= now - self.tau]
        v[0], v[1], v[2] = p.risk_score, p.confidence, float(p.is_attack)
        v[3] = SEVERITY_RANK[p.severity] / 3.0
        v[4] = math.exp(-max(0.0, now - st.last_seen) / self.tau)
        v[5] = 1.0 - math.exp(-len(recent) / 10.0)
        v[6] = max(recent, default=0.0)
        fam = p.family if p.family in FAMILIES else "other"
        v[7 + FAMILIES.index(fam)] = 1.0
        base = 7 + len(FAMILIES)
        for cp in p.probabilities:
            i = self.class_index.get(cp.name)
            if i is not None:
                v[base + i] = cp.p
        return v

    def riskiest(self, now: float | None = None, n: int = 1) -> list[str]:
        """Keys ordered by their latest risk, weighted by recency."""
        def score(k: str) -> float:
            st = self.states[k]
            t = st.last_seen if now is None else now
            return st.last.risk_score * math.exp(-max(0.0, t - st.last_seen) / self.tau)
        return sorted(self.states, key=score, reverse=True)[:n]


