"""Response policies over the prediction stream: the actions in force per host, the
policy's observation, the rule policies, and a trained policy as a plain torch module.

What runs a trained policy needs torch and this module only; the training library
(stable-baselines3) stays in the trainer, which exports the policy network's weights
into `PolicyNet` (`save_policy`). A policy directory is like a model directory:

    POLICY_DIR/weights.pt      state_dict only, loaded with torch.load(weights_only=True)
    POLICY_DIR/metadata.json   format, network sizes, the action table, the observation's
                               layout and classes, the reward it was trained for, and the
                               SHA-256 of weights.pt

An action is (kind, duration): ``ignore`` lifts whatever is in force on the host,
``rate_limit`` and ``block`` put it in force for ``duration`` seconds of traffic time,
and ``filter`` stops only the host's inbound packets of the packet class of its latest
flood (`filter_class`, `FLOOD_FILTER`: TCP SYN without ACK for a SYN flood, UDP for a
UDP flood, ...; a block where no prediction named one, `resolve_action`).
Asking for what is already in force changes nothing (its expiry stays); anything else
is a change, which a live loop publishes (`ids.action.v1`) and the environment charges.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..model.artifacts import METADATA, ModelError, load_checked_state, read_artefact_metadata, write_weights
from .filters import FILTERS, FLOOD_FILTER, PACKET_CLASSES  # noqa: F401 (re-exported: what a filter stops)
from .rl import ObservationBuilder

KINDS = ("ignore", "rate_limit", "block", "filter")
RANK = {k: i for i, k in enumerate(KINDS)}  # the environment's code of each kind
DEFAULT_DURATIONS = (15.0, 60.0, 300.0)
POLICY_FORMAT = "ids-daemon-policy"
POLICY_FORMAT_VERSION = 1
# appended to ObservationBuilder.layout: what is in force on the host now
EXTRA_LAYOUT = ["in_force=rate_limit", "in_force=block", "in_force_remaining"]
# and, for a policy whose actions include filter: a filter in force, and whether an attack
# prediction of the host named a flood's packet class (`filter_class`; else filter is a block)
FILTER_LAYOUT = ["in_force=filter", "filterable"]

def action_table(durations: tuple[float, ...] = DEFAULT_DURATIONS,
                 with_filter: bool = True) -> list[tuple[str, float]]:
    """The discrete actions: 0 is ignore, then rate_limit and block for each duration, then
    (``with_filter``) filter for each duration."""
    if not durations or any(d <= 0 for d in durations):
        raise ValueError("durations must be positive seconds")
    kinds = ("rate_limit", "block", "filter") if with_filter else ("rate_limit", "block")
    return [("ignore", 0.0)] + [(k, float(d)) for k in kinds for d in durations]


def extra_layout(actions: list[tuple[str, float]]) -> list[str]:
    """What a policy with these actions sees after `ObservationBuilder.layout`."""
    return EXTRA_LAYOUT + (FILTER_LAYOUT if any(k == "filter" for k, _ in actions) else [])


def filter_class(obs: ObservationBuilder, host: str) -> str | None:
    """The filter (a `FILTERS` name) of the flood class ``host``'s latest attack prediction
    naming one named (`KeyState.flood_class`); None when none ever did."""
    st = obs.states.get(host)
    return FLOOD_FILTER.get(st.flood_class) if st is not None and st.flood_class else None


def resolve_action(kind: str, packet_class: str | None) -> tuple[str, str | None]:
    """The action put in force: a filter with no packet class is a block; other kinds
    carry no packet class."""
    if kind not in RANK:
        raise ValueError(f"unknown action {kind!r}")
    if kind != "filter":
        return kind, None
    if packet_class is None:
        return "block", None
    if packet_class not in FILTERS:
        raise ValueError(f"unknown packet class {packet_class!r}")
    return kind, packet_class


class HostActions:
    """What is in force on each host, in traffic time (seconds)."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}
        self.until: dict[str, float] = {}
        self.packet_class: dict[str, str | None] = {}  # a filter's `FILTERS` name

    def in_force(self, host: str, t: float) -> tuple[str, float]:
        """(kind, seconds left) on ``host`` at ``t``; ignore once the action expired."""
        k = self.kind.get(host, "ignore")
        if k == "ignore" or self.until[host] <= t:
            return "ignore", 0.0
        return k, self.until[host] - t

    def apply(self, host: str, kind: str, duration: float, t: float, packet_class: str | None = None) -> bool:
        """Ask for ``kind`` on ``host`` at ``t`` (a filter of ``packet_class``, `resolve_action`);
        True when that changes what is in force (a filter of another class is a change)."""
        kind, packet_class = resolve_action(kind, packet_class)
        if self.in_force(host, t)[0] == kind and self.packet_class.get(host) == packet_class:
            return False
        self.kind[host] = kind
        self.until[host] = t + duration if kind != "ignore" else t
        self.packet_class[host] = packet_class
        return True


def policy_observation(obs: ObservationBuilder, actions: HostActions, host: str, t: float,
                       max_duration: float, with_filter: bool = False) -> np.ndarray:
    """``obs``'s vector of ``host`` at ``t`` with `EXTRA_LAYOUT` appended (and `FILTER_LAYOUT`
    with ``with_filter``: for a policy whose actions include filter)."""
    kind, left = actions.in_force(host, t)
    extra = [kind == "rate_limit", kind == "block", min(1.0, left / max_duration)]
    if with_filter:
        extra += [kind == "filter", filter_class(obs, host) is not None]
    return np.concatenate([obs.observation(host, t), np.array(extra, dtype=np.float32)])


# ---- rule policies: what the example loop did before a trained policy --------------------

def decide(obs: np.ndarray, layout: list[str]) -> str:
    """A threshold policy over the observation vector: block a high or critical attack,
    rate-limit a medium one (or a low one above risk 0.2), else ignore."""
    risk, is_attack, severity = obs[layout.index("risk_score")], obs[layout.index("is_attack")], obs[layout.index("severity")]
    if not is_attack:
        return "ignore"
    if severity >= 2 / 3:  # high or critical
        return "block"
    return "rate_limit" if risk >= 0.2 else "ignore"


class Hysteresis:
    """Per host: escalate at once, de-escalate only after a quiet hold.

    ``step(host, wanted, t)`` takes what the policy wants for the host now (``t`` in the
    traffic's time, seconds) and returns the host's new action when it changes, else
    None. An observation that wants the current action or a stronger one renews the
    hold; one that wants a weaker action gets it only when the current action has not
    been asked for in the last ``hold_s`` seconds.
    """

    RANK = {"ignore": 0, "rate_limit": 1, "block": 2}  # its own order: the rules never filter

    def __init__(self, hold_s: float = 30.0):
        if hold_s < 0:
            raise ValueError("hold_s must be >= 0")
        self.hold_s = float(hold_s)
        self.action: dict[str, str] = {}  # the host's current action
        self._renewed: dict[str, float] = {}  # when it was last asked for (or a stronger one)

    def step(self, host: str, wanted: str, t: float) -> str | None:
        current = self.action.get(host, "ignore")
        if self.RANK[wanted] >= self.RANK[current]:
            self._renewed[host] = max(t, self._renewed.get(host, t))
            if wanted == current:
                return None
        elif t - self._renewed.get(host, float("-inf")) < self.hold_s:
            return None  # still within the hold: keep the stronger action
        else:
            self._renewed[host] = t
        self.action[host] = wanted
        return wanted


# A rule policy: (observation vector, layout, host, t, kind in force) -> the kind it wants
RulePolicy = Callable[[np.ndarray, list[str], str, float, str], str]


def rule_policies(hold_s: float = 30.0) -> dict[str, Callable[[], RulePolicy]]:
    """The baselines a trained policy is measured against, each a factory of a fresh policy."""
    def never() -> RulePolicy:
        return lambda v, lay, h, t, cur: "ignore"

    def is_attack() -> RulePolicy:
        return lambda v, lay, h, t, cur: "block" if v[lay.index("is_attack")] else "ignore"

    def severe() -> RulePolicy:
        return lambda v, lay, h, t, cur: "block" if v[lay.index("is_attack")] and v[lay.index("severity")] >= 2 / 3 \
            else "ignore"

    def hysteresis() -> RulePolicy:
        hy = Hysteresis(hold_s)

        def act(v: np.ndarray, lay: list[str], h: str, t: float, cur: str) -> str:
            hy.action[h] = cur  # an action that expired is no longer held
            hy.step(h, decide(v, lay), t)
            return hy.action.get(h, "ignore")
        return act

    return {"never": never, "block_if_attack": is_attack, "block_if_high": severe, "hysteresis": hysteresis}


# ---- a trained policy -------------------------------------------------------------------

class PolicyNet(nn.Module):
    """The actor of a PPO MLP policy: tanh layers, then one logit per action."""

    def __init__(self, n_obs: int, n_actions: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        last = n_obs
        for h in hidden:
            layers += [nn.Linear(last, h), nn.Tanh()]
            last = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(last, n_actions)
        self.hidden = tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class LoadedPolicy:
    """A policy ready to act: network (eval mode), metadata and what it was built for."""

    net: PolicyNet
    meta: dict[str, Any]
    path: Path

    @property
    def actions(self) -> list[tuple[str, float]]:
        return [(str(k), float(d)) for k, d in self.meta["actions"]]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def tau(self) -> float:
        return float(self.meta["tau"])

    @property
    def max_duration(self) -> float:
        return max(d for _, d in self.actions)

    @property
    def has_filter(self) -> bool:
        """Whether its actions include filter (and its observation `FILTER_LAYOUT`)."""
        return any(k == "filter" for k, _ in self.actions)

    def act(self, obs: np.ndarray) -> tuple[str, float]:
        """The most likely action for one observation vector."""
        with torch.inference_mode():
            logits = self.net(torch.as_tensor(obs, dtype=torch.float32)[None])
        return self.actions[int(logits.argmax(1))]


def save_policy(directory: str | os.PathLike, net: PolicyNet, *, actions: list[tuple[str, float]], layout: list[str],
                classes: list[str], tau: float, extra: dict[str, Any] | None = None) -> Path:
    """Write a policy directory (weights and checksummed metadata)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sha = write_weights(d, net)
    meta = {"format": POLICY_FORMAT, "format_version": POLICY_FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hidden": list(net.hidden), "actions": [[k, d_] for k, d_ in actions], "layout": list(layout),
            "classes": list(classes), "tau": float(tau), **(extra or {}), "weights_sha256": sha}
    (d / METADATA).write_text(json.dumps(meta, indent=1) + "\n")
    return d


def load_policy(directory: str | os.PathLike) -> LoadedPolicy:
    """Load and check a policy directory: format, checksum, and weights that fit the network."""
    d = Path(directory)
    mp = d / METADATA
    meta = read_artefact_metadata(d, POLICY_FORMAT, "policy")
    if meta.get("format_version", 0) > POLICY_FORMAT_VERSION:
        raise ModelError(f"{mp}: policy format {meta['format_version']} is newer than this daemon reads")
    try:
        actions = [(str(k), float(t)) for k, t in meta["actions"]]
        hidden = tuple(int(h) for h in meta["hidden"])
        n_obs, classes, tau = len(meta["layout"]), list(meta["classes"]), float(meta["tau"])
        if any(k not in RANK for k, _ in actions) or not actions or tau <= 0:
            raise ValueError("actions or tau out of range")
        expected = ObservationBuilder(classes, tau=tau).layout + extra_layout(actions)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{mp}: inconsistent policy metadata: {e}") from None
    if meta["layout"] != expected:
        raise ModelError(f"{mp}: the observation layout is not the one this daemon builds")
    net = PolicyNet(n_obs, len(actions), hidden)
    state = {k: torch.from_numpy(v) for k, v in load_checked_state(d, meta).items()}
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"{d}: weights do not fit the recorded network: {str(e).splitlines()[0]}") from None
    return LoadedPolicy(net=net.eval(), meta=meta, path=d)


def bundled_policy_dir() -> Path:
    """The policy shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("ids_daemon") / "data" / "policy"))
