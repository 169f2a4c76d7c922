"""Recorded episodes and what a response policy's actions do to the real packets.

An episode is one replayed capture: the predictions the daemon published for it (v1
JSON lines, exactly as a consumer of the topic receives them) and the truth, every
packet's time, source and destination host, protocol/flags class and label (`Truth`, a
compact .npz). `Replay` steps a policy through it: each prediction is one decision about
the prediction's host at the prediction's packet time (the last packet of its window);
packets are settled as packet time passes, each stopped or not by what is in force
on its source or destination host then (a filter: on its destination only, and only a
packet of the filter's classes). The reward of a step is what the packets
settled since the previous step cost (docs/rl.md):

    - attack_cost       per attack packet that got through
    - availability_cost per benign packet stopped
    - change_cost       per change of a host's action

so a policy that never acts scores minus the episode's attack packets, and a perfect
one zero. `make_env` wraps `Replay` in a gymnasium environment (gymnasium is imported
there only).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import orjson

from ..errors import IdsError
from ..predictions.decode import Prediction
from .policy import (DEFAULT_DURATIONS, FILTERS, PACKET_CLASSES, HostActions, RANK, action_table, extra_layout,
                     filter_class, policy_observation)
from .rl import ObservationBuilder

TRUTH_SUFFIX = ".truth.npz"
# Per packet, its protocol/flags class (`Truth.pclass`, an index into PACKET_CLASSES): what a
# `filter` action matches (`FILTERS` names the classes each filter stops).
PC_OTHER, PC_TCP_SYN, PC_TCP, PC_UDP, PC_ICMP, PC_GRE = (PACKET_CLASSES.index(c) for c in PACKET_CLASSES)
# per filter name, the bit mask of the packet classes it stops
FILTER_MASK = {f: sum(1 << PACKET_CLASSES.index(c) for c in cs) for f, cs in FILTERS.items()}
PREDICTIONS_SUFFIX = ".predictions.jsonl"
INDEX = "episodes.json"


class EpisodeError(IdsError):
    """An episode file that is missing or does not fit (one line, naming the file)."""


def packet_class(proto: np.ndarray, tcp_flags: np.ndarray, ip_version: np.ndarray) -> np.ndarray:
    """Per packet, its class code (``PACKET_CLASSES``): a TCP SYN without ACK, other TCP, UDP,
    ICMP/ICMPv6, GRE, or other (not IP, or another protocol). IPv6's ``proto`` is the
    upper-layer header; a fragment carries its datagram's protocol (a later fragment has no
    flags, so a TCP one is tcp-other)."""
    proto = np.asarray(proto)
    flags = np.asarray(tcp_flags).astype(np.uint16)
    ip = np.asarray(ip_version) != 0
    out = np.full(len(proto), PC_OTHER, np.uint8)
    tcp = ip & (proto == 6)
    syn = tcp & ((flags & 0x02) != 0) & ((flags & 0x10) == 0)
    out[tcp] = PC_TCP
    out[syn] = PC_TCP_SYN
    out[ip & (proto == 17)] = PC_UDP
    out[ip & ((proto == 1) | (proto == 58))] = PC_ICMP
    out[ip & (proto == 47)] = PC_GRE
    return out


@dataclass
class Truth:
    """Every packet of a capture, in time order: time (s), source and destination as
    indices into ``hosts`` (address text; '' for frames without one), its label, and its
    protocol/flags class (`packet_class`; all ``other`` when not given)."""

    time: np.ndarray  # float64
    src: np.ndarray  # int32
    dst: np.ndarray  # int32
    attack: np.ndarray  # bool
    hosts: list[str]
    pclass: np.ndarray | None = None  # uint8, PACKET_CLASSES codes

    def __post_init__(self) -> None:
        n = len(self.time)
        if self.pclass is None:
            self.pclass = np.zeros(n, np.uint8)
        self.pclass = np.asarray(self.pclass, np.uint8)
        if len(self.pclass) != n or (n and int(self.pclass.max()) >= len(PACKET_CLASSES)):
            raise EpisodeError("truth packet classes do not fit")
        if not (len(self.src) == len(self.dst) == len(self.attack) == n):
            raise EpisodeError("truth columns differ in length")
        if n and (np.diff(self.time) < 0).any():
            raise EpisodeError("truth packets are not in time order")
        if n and (min(self.src.min(), self.dst.min()) < 0 or max(self.src.max(), self.dst.max()) >= len(self.hosts)):
            raise EpisodeError("truth host index out of range")

    @classmethod
    def from_packets(cls, time: np.ndarray, src: np.ndarray, dst: np.ndarray, attack: np.ndarray,
                     pclass: np.ndarray | None = None) -> "Truth":
        """From per-packet columns with hosts as text (any order: sorted by time, stably)."""
        order = np.argsort(np.asarray(time, np.float64), kind="stable")
        names, inv = np.unique(np.concatenate([np.asarray(src, str), np.asarray(dst, str)]), return_inverse=True)
        n = len(order)
        pc = None if pclass is None else np.asarray(pclass, np.uint8)[order]
        return cls(time=np.asarray(time, np.float64)[order], src=inv[:n][order].astype(np.int32),
                   dst=inv[n:][order].astype(np.int32), attack=np.asarray(attack, bool)[order], hosts=names.tolist(),
                   pclass=pc)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, time=self.time, src=self.src, dst=self.dst, attack=self.attack,
                            hosts=np.asarray(self.hosts, dtype=str), pclass=self.pclass)

    @classmethod
    def load(cls, path: Path) -> "Truth":
        """A truth file; one written before the packet-class column is refused (the `filter`
        action would stop nothing in it, silently)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if "pclass" not in z.files:
                    raise EpisodeError(f"{path}: a truth file without packet classes (written before the filter "
                                       "action): record the episodes again with ids-trainer policy episodes")
                return cls(time=z["time"].astype(np.float64), src=z["src"].astype(np.int32),
                           dst=z["dst"].astype(np.int32), attack=z["attack"].astype(bool), hosts=z["hosts"].tolist(),
                           pclass=z["pclass"].astype(np.uint8))
        except (OSError, KeyError, ValueError) as e:
            raise EpisodeError(f"{path}: not a truth file ({e})") from None

    def bin_rank(self) -> tuple[np.ndarray, np.ndarray]:
        """Per packet, its position among its source's (destination's) packets of the same
        second: a rate limit of R packets/s lets the first R of each second through."""
        got = self.__dict__.get("_rank")
        if got is None:
            n = len(self.time)
            hosts = np.concatenate([self.src, self.dst]).astype(np.int64)
            bins = np.tile(np.floor(self.time).astype(np.int64), 2)
            idx = np.tile(np.arange(n), 2)
            order = np.lexsort((idx, bins, hosts))
            hs, bs = hosts[order], bins[order]
            start = np.ones(len(order), bool)
            start[1:] = (hs[1:] != hs[:-1]) | (bs[1:] != bs[:-1])
            first = np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order)) - first
            got = self.__dict__["_rank"] = (rank[:n], rank[n:])
        return got


@dataclass
class Episode:
    """One recorded capture: the published predictions and the truth."""

    name: str
    source: str  # the repository (or generator) the capture came from
    predictions: list[Prediction]
    truth: Truth
    label: str = ""

    @property
    def hours(self) -> float:
        """Hours of traffic: the seconds in which packets were seen (a capture's clock may
        jump by days between two packets; actions per hour count against traffic)."""
        return len(np.unique(np.floor(self.truth.time))) / 3600.0


def read_predictions(path: Path) -> list[Prediction]:
    """The v1 predictions of a JSON-lines file, in the order they were published."""
    out = []
    try:
        with open(path, "rb") as fh:
            for k, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        out.append(Prediction.from_dict(orjson.loads(line)))
                    except (ValueError, TypeError) as e:
                        raise EpisodeError(f"{path}: line {k}: not a v1 prediction ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise EpisodeError(f"{path}: cannot read: {e.strerror}") from None
    return out


def write_index(directory: Path, rows: list[dict[str, Any]]) -> None:
    """The index of an episode directory: one row per episode (name, source, label, counts)."""
    (directory / INDEX).write_text(json.dumps({"format": "ids-daemon-episodes", "episodes": rows}, indent=1) + "\n")


def load_episodes(directory: str | Path, sources: Iterable[str] | None = None) -> list[Episode]:
    """The episodes of a directory written by ``ids-trainer policy episodes`` (only those of
    ``sources`` when given)."""
    d = Path(directory)
    try:
        rows = json.loads((d / INDEX).read_text())["episodes"]
    except (OSError, ValueError, KeyError) as e:
        raise EpisodeError(f"{d}: not an episode directory ({INDEX}: {e})") from None
    keep = set(sources) if sources is not None else None
    return [Episode(name=r["name"], source=r["source"], label=r.get("label", ""),
                    predictions=read_predictions(d / (r["name"] + PREDICTIONS_SUFFIX)),
                    truth=Truth.load(d / (r["name"] + TRUTH_SUFFIX)))
            for r in rows if keep is None or r["source"] in keep]


@dataclass
class RewardConfig:
    """What a user tunes (docs/rl.md)."""

    attack_cost: float = 1.0  # per attack packet that gets through
    availability_cost: float = 1.0  # per benign packet stopped
    change_cost: float = 2.0  # per change of a host's action
    rate_limit_pps: int = 10  # packets per second a rate-limited host keeps (per direction-less host)
    durations: tuple[float, ...] = DEFAULT_DURATIONS  # seconds an action stays in force
    tau: float = 30.0  # the observation's memory (ObservationBuilder)
    filter: bool = True  # the action table includes filter (the rules never use it)

    def __post_init__(self) -> None:
        self.durations = tuple(float(d) for d in self.durations)
        if min(self.attack_cost, self.availability_cost, self.change_cost) < 0 or self.rate_limit_pps < 0:
            raise ValueError("costs and rate_limit_pps must be >= 0")
        action_table(self.durations)  # validates the durations

    def actions(self) -> list[tuple[str, float]]:
        """The action table of this environment."""
        return action_table(self.durations, self.filter)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    """What a policy did over episodes (sums; `figures` gives the shares)."""

    attack: int = 0
    attack_stopped: float = 0.0
    benign: int = 0
    benign_stopped: float = 0.0
    changes: int = 0
    filters: int = 0  # of the changes, those that put a filter in force
    hours: float = 0.0
    reward: float = 0.0
    episodes: int = 0

    def add(self, o: "Outcome") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    def figures(self) -> dict[str, Any]:
        return {"attack_stopped": self.attack_stopped / self.attack if self.attack else None,
                "benign_lost": self.benign_stopped / self.benign if self.benign else None,
                "actions_per_hour": self.changes / self.hours if self.hours > 0 else None,
                "reward": self.reward, "attack_packets": self.attack, "benign_packets": self.benign,
                "changes": self.changes, "filters": self.filters, "hours": self.hours, "episodes": self.episodes}


class Replay:
    """One episode, stepped prediction by prediction (see the module's docstring)."""

    def __init__(self, ep: Episode, classes: list[str], reward: RewardConfig):
        self.ep, self.cfg = ep, reward
        self.obs = ObservationBuilder(classes, key_by="host", tau=reward.tau)
        self.table = reward.actions()
        self.with_filter = reward.filter
        self.layout = self.obs.layout + extra_layout(self.table)
        self.actions = HostActions()
        self.max_duration = max(reward.durations)
        tr = ep.truth
        self._host = {h: i for i, h in enumerate(tr.hosts) if h}
        n_hosts = len(tr.hosts) + 1  # the last slot: a host the truth never saw
        self._kind = np.zeros(n_hosts, np.int8)
        self._until = np.zeros(n_hosts, np.float64)
        self._mask = np.zeros(n_hosts, np.uint8)  # a filter's packet classes (FILTER_MASK)
        self._rank_src, self._rank_dst = tr.bin_rank()
        self._next = 0  # the next prediction
        self._settled = 0  # packets settled so far
        self.t = -math.inf
        self.host: str | None = None
        self.pending = 0.0  # reward not yet taken
        self.unavoidable = 0.0  # the cost of the attack packets settled since, whatever was done
        self.out = Outcome(attack=int(tr.attack.sum()), benign=int((~tr.attack).sum()), hours=ep.hours, episodes=1)

    def _settle(self, end: int) -> None:
        """Settle packets up to index ``end`` under what is in force now."""
        a, b = self._settled, end
        if b <= a:
            return
        tr = self.ep.truth
        t, s, d = tr.time[a:b], tr.src[a:b], tr.dst[a:b]
        ks, kd = self._kind[s], self._kind[d]
        live_s, live_d = self._until[s] > t, self._until[d] > t
        pps = self.cfg.rate_limit_pps
        stopped = ((ks == 2) & live_s) | ((kd == 2) & live_d)
        stopped |= (ks == 1) & live_s & (self._rank_src[a:b] >= pps)
        stopped |= (kd == 1) & live_d & (self._rank_dst[a:b] >= pps)
        # a filter: the destination host's inbound packets of its classes only
        stopped |= (kd == 3) & live_d & (((self._mask[d] >> tr.pclass[a:b]) & 1) == 1)
        att = tr.attack[a:b]
        a_stop, b_stop = int((stopped & att).sum()), int((stopped & ~att).sum())
        self.out.attack_stopped += a_stop
        self.out.benign_stopped += b_stop
        self.pending -= self.cfg.attack_cost * (int(att.sum()) - a_stop) + self.cfg.availability_cost * b_stop
        self.unavoidable += self.cfg.attack_cost * int(att.sum())
        self._settled = b

    def advance(self) -> bool:
        """Move to the next prediction (settling the packets up to its time); False at the end."""
        preds = self.ep.predictions
        if self._next >= len(preds):
            return False
        p = preds[self._next]
        self._next += 1
        self.t = max(self.t, p.window.last_ts)
        self._settle(int(np.searchsorted(self.ep.truth.time, self.t, side="right")))
        self.host = self.obs.update(p)
        return True

    def observation(self) -> np.ndarray:
        """The policy's view of the current prediction's host."""
        return policy_observation(self.obs, self.actions, self.host, self.t, self.max_duration, self.with_filter)

    def in_force(self) -> str:
        return self.actions.in_force(self.host, self.t)[0]

    def act(self, kind: str, duration: float) -> bool:
        """Ask for ``kind`` on the current host (a filter: of the class its latest attack
        prediction names, `filter_class`); True (and charged) when it changes what is in force."""
        cls = filter_class(self.obs, self.host) if kind == "filter" else None
        if not self.actions.apply(self.host, kind, duration, self.t, cls):
            return False
        kind = self.actions.kind[self.host]  # a filter with no class is a block
        i = self._host.get(self.host, len(self._kind) - 1)
        self._kind[i] = RANK[kind]
        self._until[i] = self.t + duration if kind != "ignore" else self.t
        self._mask[i] = FILTER_MASK[cls] if kind == "filter" else 0
        self.out.changes += 1
        self.out.filters += kind == "filter"
        self.pending -= self.cfg.change_cost
        return True

    def finish(self) -> None:
        """Settle every remaining packet (actions run out by their expiry)."""
        self._settle(len(self.ep.truth.time))

    def take_reward(self, credit: bool = False) -> float:
        """The reward since the last call; with ``credit``, plus the cost of every attack
        packet settled meanwhile: a term no action changes (the packets settle by time
        alone), so the best policy is the same, and what is left is what the actions did
        (attack packets stopped, benign packets stopped, changes): less noise to learn from."""
        r, self.pending = self.pending, 0.0
        self.out.reward += r
        if credit:
            r += self.unavoidable
        self.unavoidable = 0.0
        return r


# A policy for `run_policy`: (observation, layout, host, t, kind in force) -> (kind, duration)
Policy = Callable[[np.ndarray, list[str], str, float, str], tuple[str, float]]


def run_policy(ep: Episode, classes: list[str], reward: RewardConfig, policy: Policy) -> Outcome:
    """Play ``policy`` through one episode; what it did."""
    r = Replay(ep, classes, reward)
    while r.advance():
        kind, dur = policy(r.observation(), r.layout, r.host, r.t, r.in_force())
        r.act(kind, dur)
        r.take_reward()
    r.finish()
    r.take_reward()
    return r.out


def make_env(episodes: list[Episode], classes: list[str], reward: RewardConfig | None = None,
             seed: int | None = None, reward_scale: float = 1.0, credit: bool = False,
             attack_share: float | None = None):
    """A gymnasium environment over recorded episodes (requires gymnasium).

    Each reset starts the next episode (in an order drawn from ``seed``; episodes without
    predictions are skipped, there is nothing to decide in them); each step applies
    the action (an index into ``reward.actions()``, `action_table`) to the current prediction's host and
    moves to the next prediction. ``info`` names the episode, host and time; the reward
    is multiplied by ``reward_scale`` (for training), with ``credit`` it is counted from
    what the actions did only (`Replay.take_reward`), and the episode ends with its last
    prediction, after the remaining packets are settled. With ``attack_share``, each reset
    draws an episode with attack packets with that probability (else one without), so
    that the rare attack episodes are seen often enough to learn from.
    """
    import gymnasium as gym

    cfg = reward or RewardConfig()
    playable = [e for e in episodes if e.predictions]
    if not playable:
        raise EpisodeError("no episode has predictions")
    attacks = [e for e in playable if e.truth.attack.any()]
    calm = [e for e in playable if not e.truth.attack.any()]

    class ResponseEnv(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self) -> None:
            self.table = cfg.actions()
            probe = Replay(playable[0], classes, cfg)
            self.layout = probe.layout
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(len(self.layout),), dtype=np.float32)
            self.action_space = gym.spaces.Discrete(len(self.table))
            self._order: list[int] = []
            self._rng = np.random.default_rng(seed)
            self.replay: Replay | None = None

        def _info(self) -> dict[str, Any]:
            r = self.replay
            return {"episode_name": r.ep.name, "host": r.host, "time": r.t}

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            if seed is not None:
                self._rng, self._order = np.random.default_rng(seed), []
            if attack_share is not None and attacks and calm:
                pool = attacks if self._rng.random() < attack_share else calm
                ep = pool[int(self._rng.integers(len(pool)))]
            else:
                if not self._order:
                    self._order = self._rng.permutation(len(playable)).tolist()
                ep = playable[self._order.pop()]
            self.replay = Replay(ep, classes, cfg)
            self.replay.advance()
            return self.replay.observation(), self._info()

        def step(self, action: int):
            r = self.replay
            r.act(*self.table[int(action)])
            if r.advance():
                return r.observation(), r.take_reward(credit) * reward_scale, False, False, self._info()
            r.finish()
            return np.zeros(len(self.layout), np.float32), r.take_reward(credit) * reward_scale, True, False, self._info()

    return ResponseEnv()
