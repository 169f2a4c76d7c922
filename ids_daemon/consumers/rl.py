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

With gymnasium installed, `IdsPolicyEnv` wraps it as an environment whose action at
each step is applied to the riskiest key.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..predictions.decode import Prediction
from ..predictions.vocabulary import FAMILIES as _FAMILIES, SEVERITY_RANK

FAMILIES = _FAMILIES + ("other",)  # the observation's one-hot: a family outside CICIoT2023 is "other"
ACTIONS = ("ignore", "rate_limit", "block")


@dataclass
class KeyState:
    """What is known of one key."""

    last: Prediction
    last_seen: float
    recent: deque = field(default_factory=deque)  # (time, risk) within tau


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


def make_env(source, classes: list[str], key_by: str = "host", tau: float = 30.0, steps_per_episode: int = 1000):
    """A gymnasium environment over a stream of predictions (requires gymnasium).

    Each step reads the next prediction from ``source`` (an iterator of Prediction),
    observes the riskiest key, and applies the action (ignore / rate_limit / block) to
    it. Reward: +1 for blocking or rate-limiting a key whose latest prediction is an
    attack (block +2 at high or critical severity), -1 for acting on a benign key, -1
    for ignoring a critical attack, 0 otherwise. ``info`` names the key and prediction.
    """
    import gymnasium as gym

    class IdsPolicyEnv(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self) -> None:
            self.obs = ObservationBuilder(classes, key_by, tau)
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.obs.size,), dtype=np.float32)
            self.action_space = gym.spaces.Discrete(len(ACTIONS))
            self._it = iter(source)
            self._focus: str | None = None
            self._steps = 0

        def _advance(self) -> tuple[np.ndarray, dict]:
            p = next(self._it)
            self.obs.update(p)
            self._focus = self.obs.riskiest(p.window.last_ts)[0]
            return self.obs.observation(self._focus, p.window.last_ts), {"key": self._focus, "prediction": p.id}

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            self._steps = 0
            return self._advance()

        def step(self, action: int):
            st = self.obs.states[self._focus] if self._focus else None
            reward = 0.0
            if st is not None:
                attack, sev = st.last.is_attack, st.last.severity_rank
                if ACTIONS[action] != "ignore":
                    reward = (2.0 if (ACTIONS[action] == "block" and sev >= 2) else 1.0) if attack else -1.0
                elif attack and sev == 3:
                    reward = -1.0
            self._steps += 1
            try:
                obs, info = self._advance()
            except StopIteration:
                return np.zeros(self.obs.size, np.float32), reward, True, False, {}
            return obs, reward, False, self._steps >= steps_per_episode, info

    return IdsPolicyEnv()
