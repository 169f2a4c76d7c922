"""Response policies grounded in labelled traffic: episodes, training and evaluation.

- `build_episodes`: each capture of a real-capture manifest goes through the daemon
  (the same pipeline as ``ids-daemon replay``, JSON-lines sink) and its packets'
  truth is recorded beside the predictions (`ids_daemon.consumers.response.Truth`).
- `train_agent`: PPO (stable-baselines3, the trainer's extra) on some sources' episodes,
  the checkpoint chosen on other (validation) sources, its actor exported into the
  runtime's `PolicyNet`, so that running it needs torch only.
- `evaluate_by_source`: sources split into folds; per fold an agent is trained on the
  other folds and measured, beside the rule policies, on the held-out sources' episodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ids_daemon.capture.batch import ip_strings
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import Config
from ids_daemon.consumers.policy import PolicyNet, load_policy, rule_policies, save_policy
from ids_daemon.consumers.response import (PREDICTIONS_SUFFIX, TRUTH_SUFFIX, Episode, Outcome, Policy, RewardConfig,
                                           Truth, make_env, packet_class, read_predictions, run_policy,
                                           write_index)

from .data.real import ManifestError, frame_labeller, read_tsv_manifest

ETHERTYPE_ARP = 0x0806


# A packet labeller for `capture_truth`: (batch, source text, destination text) -> attack
PacketLabeller = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]


def capture_truth(path: Path, frame_label: Callable[..., np.ndarray] | None = None,
                  packet_label: PacketLabeller | None = None, batch_size: int = 65536) -> Truth:
    """Every frame of a capture: time, source and destination address ('' for frames with
    none: neither IP nor ARP), its protocol/flags class (`packet_class`) and its label,
    given per raw frame (``frame_label``, a `PcapSource.frame_hook`: the real corpus's
    filters) or per decoded packet (``packet_label``: the synthetic corpus's rules)."""
    pending: list[np.ndarray] = []
    parts: list[tuple[np.ndarray, ...]] = []
    src = PcapSource(path, batch_size=batch_size)
    if frame_label is not None:
        src.frame_hook = lambda *a: pending.append(frame_label(*a))
    with src:
        while (b := src.next_batch()) is not None:
            if not len(b):
                continue
            is6 = b.ip_version == 6
            addressed = (b.ip_version != 0) | (b.ethertype == ETHERTYPE_ARP)
            s = np.where(addressed, ip_strings(b.src4, b.src6, is6), "")
            d = np.where(addressed, ip_strings(b.dst4, b.dst6, is6), "")
            att = pending.pop(0) if frame_label is not None else np.asarray(packet_label(b, s, d), bool)
            if len(att) != len(b):
                raise ManifestError(f"{path.name}: {len(att)} labels for a batch of {len(b)} frames")
            parts.append((b.ts, s, d, att, packet_class(b.proto, b.tcp_flags, b.ip_version)))
    if not parts:
        return Truth.from_packets(np.zeros(0), np.zeros(0, str), np.zeros(0, str), np.zeros(0, bool),
                                  np.zeros(0, np.uint8))
    return Truth.from_packets(*(np.concatenate(c) for c in zip(*parts)))


def rule_labeller(label: str, rules: list[dict[str, Any]]) -> PacketLabeller:
    """Per packet, the synthetic manifest's label of a file overridden by its rules in order
    (hosts: either address; arp; start/end: packet time), as the trainer labels its windows."""
    from ids_daemon.model.classes import BENIGN

    def lab(b: Any, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        out = np.full(len(b), label, dtype=object)
        for r in rules:
            m = np.ones(len(b), dtype=bool)
            if r.get("hosts"):
                m &= np.isin(s, r["hosts"]) | np.isin(d, r["hosts"])
            if r.get("arp"):
                m &= b.ethertype == ETHERTYPE_ARP
            if "start" in r:
                m &= b.ts >= float(r["start"])
            if "end" in r:
                m &= b.ts <= float(r["end"])
            out[m] = r["label"]
        return out != BENIGN
    return lab


class LiveLikeSource:
    """A capture file's frames handed on as a live capture hands them on: a batch ends
    ``block_s`` of packet time after its first frame (the live ring retires a block at
    least every ``capture.block_timeout_ms``), or at the reader's batch size. A file read
    in 65,536-frame batches publishes a short capture's predictions in one burst after
    its last packet, which would make every response look too late (docs/rl.md)."""

    def __init__(self, inner: Any, block_s: float):
        if block_s <= 0:
            raise ValueError("block_s must be > 0")
        self.inner, self.block_s = inner, float(block_s)
        self._pending: Any = None
        self._cuts: list[int] = []

    def next_batch(self) -> Any:
        """The next live-sized batch; None at the end (as the reader's)."""
        if self._pending is None:
            b = self.inner.next_batch()
            if b is None or not len(b):
                return b
            # cut points: each batch's first frame starts a block of block_s (packet time,
            # made monotonic: a capture's clock may step back)
            mono = np.maximum.accumulate(np.asarray(b.ts, np.float64))
            cuts, i = [], 0
            while i < len(b):
                i = max(i + 1, int(np.searchsorted(mono, mono[i] + self.block_s, side="left")))
                cuts.append(min(i, len(b)))
            self._pending, self._cuts, self._at = b, cuts, 0
        b, a = self._pending, self._at
        end = self._cuts.pop(0)
        self._at = end
        if not self._cuts:
            self._pending = None
        if a == 0 and end == len(b):
            return b
        out = b.take(slice(a, end))
        out.first_index = b.first_index + a
        return out

    def __getattr__(self, name: str) -> Any:  # the reader's stats, close, byte counts
        return getattr(self.inner, name)


def replay_predictions(cfg: Config, capture: Path, out: Path, model: str | None = None,
                       live_batches: bool = True) -> None:
    """Run a capture through the daemon's pipeline into a JSON-lines file, as
    ``ids-daemon replay -r CAPTURE -o OUT`` does; with ``live_batches``, in the batches
    a live capture would have (`LiveLikeSource`: predictions published when the daemon
    on the wire would have published them)."""
    from ids_daemon.builder import build_pipeline, open_source

    source = None
    if live_batches:
        inner, _ = open_source(cfg, str(capture), None)
        source = LiveLikeSource(inner, cfg.capture.block_timeout_ms / 1000.0)
    pipe = build_pipeline(cfg, read=str(capture), sinks=["jsonl"], output=str(out), model=model, append=False,
                          source=source)
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    if st.error:
        raise ManifestError(f"{capture.name}: the replay failed: {st.error}")


SYNTHETIC = "synthetic"  # the source name of the synthetic generator's episodes


def build_episodes(manifest: Path | None, out: Path, cfg: Config, model: str | None = None,
                   sources: list[str] | None = None, synthetic: Path | None = None,
                   log: Callable[[str], None] = print, live_batches: bool = True) -> list[dict[str, Any]]:
    """Write one episode per capture of the real ``manifest`` (of ``sources`` only, when
    given) and of the ``synthetic`` corpus's manifest.json (``ids-trainer synth``; source
    'synthetic') into ``out`` and its index; returns the index rows."""
    from .dataset import read_manifest

    jobs: list[tuple[str, str, str, Path, dict[str, Any]]] = []
    if manifest is not None:
        for e in read_tsv_manifest(manifest):
            if not sources or e.repo in sources:
                jobs.append((e.path.name.rsplit(".", 1)[0], e.repo, e.label, e.path, {"frame_label": frame_labeller(e)}))
        if not jobs:
            raise ManifestError(f"{manifest}: no capture of the sources {', '.join(sources or [])}")
    if synthetic is not None:
        for f in read_manifest(synthetic):
            jobs.append((f"{SYNTHETIC}-" + f["path"].name.rsplit(".", 1)[0], SYNTHETIC, str(f["label"]), f["path"],
                         {"packet_label": rule_labeller(str(f["label"]), list(f.get("rules", [])))}))
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(update={"sensor": cfg.sensor or "episodes"})
    rows = []
    for k, (name, source, label, path, how) in enumerate(jobs, start=1):
        t0 = time.perf_counter()
        truth = capture_truth(path, **how)
        truth.save(out / (name + TRUTH_SUFFIX))
        replay_predictions(cfg, path, out / (name + PREDICTIONS_SUFFIX), model, live_batches)
        n_pred = len(read_predictions(out / (name + PREDICTIONS_SUFFIX)))
        rows.append({"name": name, "source": source, "label": label, "packets": len(truth.time),
                     "attack_packets": int(truth.attack.sum()), "predictions": n_pred})
        log(f"[{k}/{len(jobs)}] {name}: {len(truth.time)} packets ({int(truth.attack.sum())} attack), "
            f"{n_pred} predictions ({time.perf_counter() - t0:.1f} s)")
    write_index(out, rows)
    return rows


# ---- training -----------------------------------------------------------------------------

def sb3_to_policy_net(model: Any, hidden: tuple[int, ...]) -> PolicyNet:
    """The actor of a stable-baselines3 PPO MlpPolicy as a `PolicyNet` (same weights)."""
    sd = model.policy.state_dict()
    n_obs = model.observation_space.shape[0]
    net = PolicyNet(n_obs, int(model.action_space.n), hidden)
    mapped = {k.replace("mlp_extractor.policy_net.", "body.").replace("action_net.", "head."): v
              for k, v in sd.items() if k.startswith(("mlp_extractor.policy_net.", "action_net."))}
    net.load_state_dict(mapped, strict=True)
    return net.eval()


@dataclass
class Trained:
    """A training run's result: the chosen actor, the imitation it started from (None
    without a warm start), the last checkpoint of restart 0 (the run without restarts) and
    how the choice was made (`select_checkpoint`)."""

    net: PolicyNet
    imitation: PolicyNet | None
    last: PolicyNet
    selection: dict[str, Any] = field(default_factory=dict)


FLOOD_MIN_PACKETS = 500  # attack packets into one host that make it a flood's target (`served_flood_target`)


def served_flood_target(ep: Episode, min_packets: int = FLOOD_MIN_PACKETS) -> bool:
    """The episode holds a flood on a host that also carries benign traffic: a host that
    receives at least ``min_packets`` attack packets and sends or receives a benign packet
    between the first and the last of them. It is where acting on the target trades benign
    packets for attack ones, and where a filter of the flood's class differs from a block."""
    t = ep.truth
    a = t.attack
    if not a.any():
        return False
    inbound = np.bincount(t.dst[a], minlength=len(t.hosts))
    for h in np.flatnonzero(inbound >= min_packets):
        ta = t.time[a & (t.dst == h)]
        during = (t.time >= ta[0]) & (t.time <= ta[-1])
        if (during & ~a & ((t.src == h) | (t.dst == h))).any():
            return True
    return False


def validation_split(episodes: list[Episode], seed: int, share: float = 1 / 3,
                     train_only: tuple[str, ...] = (SYNTHETIC,),
                     train_only_share: float = 0.0,
                     served_share: float = 1 / 3) -> tuple[list[Episode], list[Episode]]:
    """The training episodes split into fit and validation: ``share`` of the real sources
    (by source, dealt as `source_folds` deals them: attack-bearing ones spread first, by
    ``seed``), ``train_only_share`` of each scenario (label) of the ``train_only``
    sources, and ``served_share`` of each scenario of the ``train_only`` episodes that hold
    a flood on a host with benign traffic (`served_flood_target`; by capture, drawn by
    ``seed``; a scenario of one capture stays in fit; only where there is validation at
    all, ``share`` > 0). The synthetic corpus is never measured, so part of it may choose
    the checkpoint; the served floods are there because a deal of the real sources rarely
    puts such a flood in validation, and without one validation cannot tell a better flood
    response from the rule's (docs/rl.md). No validation (all shares 0, or fewer than two
    real sources and no train-only share): every episode is fit."""
    real = [e for e in episodes if e.source not in train_only]
    held: set[str] = set()
    if share > 0 and len({e.source for e in real}) >= 2:
        held = set(source_folds(real, max(2, round(1 / share)), seed)[0])
    val_names: set[str] = set()
    rng = np.random.default_rng(seed)

    def draw(pool: list[Episode], part: float) -> None:
        scenarios: dict[tuple[str, str], list[str]] = {}
        for e in pool:
            scenarios.setdefault((e.source, e.label), []).append(e.name)
        for key in sorted(scenarios):
            names = sorted(scenarios[key])
            k = int(round(part * len(names))) if len(names) > 1 else 0
            val_names.update(rng.permutation(names)[:k].tolist())
    synthetic = [e for e in episodes if e.source in train_only]
    served = [e for e in synthetic if served_flood_target(e)]
    served_ids = {id(e) for e in served}
    if train_only_share > 0:
        draw([e for e in synthetic if id(e) not in served_ids], train_only_share)
    if served_share > 0 and share > 0:
        draw(served, max(served_share, train_only_share))
    val = [e for e in episodes if e.source in held or e.name in val_names]
    chosen = {id(e) for e in val}
    return [e for e in episodes if id(e) not in chosen], val


RESTARTS = 3  # PPO runs per training in `evaluate_by_source` and the CLI (`train_agent`, docs/rl.md)
# the entropy bonus of restarts 1 and later there (the first's is PPO's 0.01): from the
# imitation, PPO with 0.01 never changed an action in half of the folds whatever its seed;
# with 0.05 the later restarts moved in every fold measured (docs/rl.md)
RESTART_ENT_COEF = 0.05
MIN_GAIN = 0.01  # a checkpoint replaces the imitation when it gains this share of validation's attack packets


def beats_imitation(o: Outcome, ref: Outcome, min_gain: float = MIN_GAIN) -> bool:
    """``o`` beats the imitation's ``ref`` on the same validation episodes: a reward higher
    by at least ``min_gain`` × their attack packets (a margin over the few changes' worth by
    which a checkpoint that does what the rule does differs from it), without stopping
    fewer attack packets. Benign packets lost are priced in the reward, at the user's
    availability cost: a checkpoint that trades some for more attack packets stopped at a
    better price than that is better by the user's own measure."""
    return o.reward >= ref.reward + min_gain * ref.attack and o.attack_stopped >= ref.attack_stopped


def train_agent(episodes: list[Episode], classes: list[str], reward: RewardConfig, *, timesteps: int = 60_000,
                seed: int = 0, hidden: tuple[int, ...] = (64, 64), reward_scale: float = 0.05,
                attack_share: float = 0.5, warm_start: Callable[[], Policy] | None = None,
                validation: list[Episode] | None = None, check_every: int = 10_000, min_gain: float = MIN_GAIN,
                restarts: int = 1, restart_ent_coef: float | None = None, **ppo: Any) -> Trained:
    """Train PPO on ``episodes`` (first imitating ``warm_start``, a rule, when given) and
    choose the actor on the ``validation`` episodes: PPO runs in chunks of ``check_every``
    steps, each checkpoint is scored there (`run_policy`, as the policy table is), and the
    one kept is the best on reward among those that beat the imitation by a margin
    (`beats_imitation`), else the imitation itself. Without a warm start, the best checkpoint
    on reward; without validation episodes, the last.

    With ``restarts`` > 1 (and validation episodes: without them there is nothing to choose
    a restart by), PPO runs that many times from the same start (the imitation, or the same
    random weights), each with its own seed (`restart_seed`: restart 0 is ``seed`` itself,
    the run without restarts), and the rule above chooses among every restart's checkpoints
    at once. From the imitation PPO often never changes an action within its steps, and
    whether it does depends on its seed (docs/rl.md): restarts are several draws of that.
    ``restart_ent_coef``: the entropy bonus of restarts 1 and later (default: the first's),
    to make them explore more from the same start."""
    if restarts < 1:
        raise ValueError("restarts must be >= 1")
    try:
        import torch
        from stable_baselines3 import PPO
    except ImportError:
        raise ManifestError("training a policy needs stable-baselines3: pip install 'ids-daemon[train]'") from None
    torch.set_num_threads(1)  # a small MLP: threads cost more than they give
    env = make_env(episodes, classes, reward, seed=seed, reward_scale=reward_scale, credit=True,
                   attack_share=attack_share)
    kw = {"n_steps": 2048, "batch_size": 256, "n_epochs": 5, "gamma": 0.99, "learning_rate": 3e-4, "ent_coef": 0.01,
          **ppo}
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": {"pi": list(hidden), "vf": list(hidden)}, "activation_fn": torch.nn.Tanh}, **kw)
    table = reward.actions()

    def score(net: PolicyNet) -> Outcome:
        tot = Outcome()
        for ep in validation or []:
            tot.add(run_policy(ep, classes, reward, net_policy(net, table)))
        return tot

    imitation, checks = None, []
    if warm_start is not None:
        imitate(model, episodes, classes, reward, warm_start, seed)
        imitation = sb3_to_policy_net(model, hidden)
        if validation:
            checks.append((0, imitation, score(imitation)))
    runs = restarts if validation else 1
    # every restart starts from these weights (restart 0 goes on from them in place, so
    # that a run with one restart is the run before restarts existed, step for step)
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    seeds = [restart_seed(seed, r) for r in range(runs)]
    last: PolicyNet | None = None
    for r, sub in enumerate(seeds):
        if r > 0:
            env = make_env(episodes, classes, reward, seed=sub, reward_scale=reward_scale, credit=True,
                           attack_share=attack_share)
            more = {} if restart_ent_coef is None else {"ent_coef": restart_ent_coef}
            model = PPO("MlpPolicy", env, seed=sub, device="cpu", verbose=0,
                        policy_kwargs={"net_arch": {"pi": list(hidden), "vf": list(hidden)},
                                       "activation_fn": torch.nn.Tanh}, **{**kw, **more})
            model.policy.load_state_dict(start)
        done = 0
        while done < timesteps:
            step = min(check_every, timesteps - done)
            model.learn(total_timesteps=step, reset_num_timesteps=done == 0)
            done += step
            net = sb3_to_policy_net(model, hidden)
            checks.append((done, net, score(net) if validation else Outcome(), r))
        if r == 0:
            last = checks[-1][1]
    # the imitation is a checkpoint only where there is validation to score it on
    net, selection = select_checkpoint(checks, imitation is not None and bool(validation), bool(validation), min_gain)
    selection["validation_sources"] = sorted({e.source for e in validation or []})
    selection["restart_seeds"] = seeds
    assert last is not None
    return Trained(net=net, imitation=imitation, last=last, selection=selection)


def restart_seed(seed: int, restart: int) -> int:
    """The seed of PPO restart ``restart`` of a run seeded ``seed``: ``seed`` itself for
    restart 0 (a run with one restart is the run before restarts), else drawn from both
    (`numpy.random.SeedSequence`), so that restarts of neighbouring seeds (a fold's seed is
    the run's seed + the fold) do not share seeds."""
    if restart == 0:
        return seed
    return int(np.random.SeedSequence([seed, restart]).generate_state(1)[0] & 0x7FFFFFFF)


def select_checkpoint(checks: list[tuple[Any, ...]], from_imitation: bool,
                      validated: bool, min_gain: float = MIN_GAIN) -> tuple[PolicyNet, dict[str, Any]]:
    """The checkpoint `train_agent` keeps, of (PPO steps, actor, validation outcome[, PPO
    restart]) in order (the first: the imitation when ``from_imitation``; restart 0 when
    none is given), and the record of the choice. Every restart's checkpoints compete
    under the one rule; on a tie the earliest in order (the first restart's) is kept."""
    if not validated:
        k = len(checks) - 1
        rule = "last checkpoint (no validation sources)"
    elif from_imitation:
        ok = [i for i, c in enumerate(checks) if i > 0 and beats_imitation(c[2], checks[0][2], min_gain)]
        k = max(ok, key=lambda i: (checks[i][2].reward, -i)) if ok else 0
        rule = (f"best validation reward among the checkpoints that beat the imitation's by {min_gain:g} x its attack "
                "packets without stopping fewer, else the imitation")
    else:
        k = max(range(len(checks)), key=lambda i: (checks[i][2].reward, -i))
        rule = "best validation reward"
    def restart(i: int) -> int | None:
        return None if from_imitation and i == 0 else (int(checks[i][3]) if len(checks[i]) > 3 else 0)
    rows = [{"steps": c[0], "restart": restart(i),
             **({k2: c[2].figures()[k2] for k2 in ("reward", "attack_stopped", "benign_lost")} if validated else {})}
            for i, c in enumerate(checks)]
    return checks[k][1], {"rule": rule, "chosen_steps": checks[k][0], "chosen_restart": restart(k),
                          "chosen": "imitation" if from_imitation and k == 0 else "ppo",
                          "validation": rows[k] if validated else None, "checkpoints": rows}


def imitate(model: Any, episodes: list[Episode], classes: list[str], reward: RewardConfig,
            rule: Callable[[], Policy], seed: int, epochs: int = 10, batch: int = 256) -> None:
    """Behaviour cloning before PPO: the actor learns the rule's actions on the training
    episodes (cross-entropy, each action weighing the same), so that PPO starts from the
    rule and looks for what beats it instead of from a random policy, which blocks six
    times in seven. The attack steps are a few per cent of all: PPO from scratch settles
    on never acting before it has seen enough of them (docs/rl.md)."""
    import torch

    table = reward.actions()
    xs, ys = [], []
    for ep in episodes:
        act = rule()

        def record(v: np.ndarray, lay: list[str], h: str, t: float, cur: str) -> tuple[str, float]:
            a = act(v, lay, h, t, cur)
            xs.append(v)
            ys.append(table.index(a) if a in table else 0)
            return a
        run_policy(ep, classes, reward, record)
    x, y = torch.as_tensor(np.array(xs)), torch.as_tensor(np.array(ys))
    # each action weighs the same in all: the rule's rare blocks are what there is to learn
    count = torch.bincount(y, minlength=len(table)).clamp(min=1).double()
    w = (len(y) / (len(count.nonzero()) * count))[y].float()
    opt = torch.optim.Adam(model.policy.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            _, logp, _ = model.policy.evaluate_actions(x[idx], y[idx])
            loss = -(w[idx] * logp).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def net_policy(net: PolicyNet, actions: list[tuple[str, float]]) -> Policy:
    """A `Policy` acting by the network's most likely action."""
    import torch

    def act(v: np.ndarray, lay: list[str], h: str, t: float, cur: str) -> tuple[str, float]:
        with torch.inference_mode():
            return actions[int(net(torch.as_tensor(v)[None]).argmax(1))]
    return act


def save_trained(out: Path, net: PolicyNet, episodes: list[Episode], classes: list[str], reward: RewardConfig,
                 training: dict[str, Any]) -> Path:
    """The policy directory of a trained agent (weights, checksummed metadata)."""
    from ids_daemon.consumers.rl import ObservationBuilder
    from ids_daemon.consumers.policy import extra_layout

    layout = ObservationBuilder(classes, tau=reward.tau).layout + extra_layout(reward.actions())
    return save_policy(out, net, actions=reward.actions(), layout=layout, classes=classes,
                       tau=reward.tau, extra={"reward": reward.as_dict(),
                                              "training": {**training, "sources": sorted({e.source for e in episodes}),
                                                           "episodes": len(episodes)}})


# ---- evaluation ---------------------------------------------------------------------------

def rule_as_policy(factory: Callable[[], Any], reward: RewardConfig) -> Callable[[], Policy]:
    """A rule policy acting with the longest duration (the rules lift by ``ignore``)."""
    dur = max(reward.durations)

    def make() -> Policy:
        rule = factory()
        return lambda v, lay, h, t, cur: (k := rule(v, lay, h, t, cur), dur if k != "ignore" else 0.0)
    return make


def evaluate(episodes: list[Episode], classes: list[str], reward: RewardConfig,
             policies: dict[str, Callable[[], Policy]]) -> dict[str, dict[str, Outcome]]:
    """Per policy, per source: what it did over the episodes (a fresh policy per episode)."""
    out: dict[str, dict[str, Outcome]] = {}
    for name, make in policies.items():
        per = out.setdefault(name, {})
        for ep in episodes:
            per.setdefault(ep.source, Outcome()).add(run_policy(ep, classes, reward, make()))
    return out


def baseline_policies(reward: RewardConfig, hold_s: float = 30.0) -> dict[str, Callable[[], Policy]]:
    """The rule policies (`ids_daemon.consumers.policy.rule_policies`) as environment policies."""
    return {n: rule_as_policy(f, reward) for n, f in rule_policies(hold_s).items()}


WARM_START = "block_if_attack"  # the rule PPO starts from (`imitate`)


FILTER_IF_ATTACK = "filter_if_attack"
FILTER_AND_HOLD = "filter_and_hold"


def warm_start_rules(reward: RewardConfig) -> dict[str, Callable[[], Policy]]:
    """The rules PPO may start from: the baselines, and (with the filter action)
    ``filter_if_attack``, `block_if_attack` with filter for block (a block where the host's
    class names no packet class), and ``filter_and_hold``, the same holding a flood's filter
    for its duration rather than lifting it on the next benign-looking window. They are
    starting points, not baselines: the table's rules stay the four the agent is measured
    against (the start is shown beside them)."""
    rules = baseline_policies(reward)
    if reward.filter:
        dur = max(reward.durations)
        rules[FILTER_IF_ATTACK] = lambda: (lambda v, lay, h, t, cur: ("filter", dur) if v[lay.index("is_attack")]
                                           else ("ignore", 0.0))
        # the same, but a filter of a flood's class is held for its duration through the
        # benign-looking windows between alarms (it stops that class only; lifting it on
        # each such window lets the flood back in until the next alarm)
        rules[FILTER_AND_HOLD] = lambda: (
            lambda v, lay, h, t, cur: ("filter", dur) if v[lay.index("is_attack")]
            or (cur == "filter" and v[lay.index("filterable")]) else ("ignore", 0.0))
    return rules


def default_warm_start(reward: RewardConfig) -> str:
    """The rule PPO starts from by default: ``filter_and_hold`` where the actions include
    filter (a rule that filters floods gives the filter actions weight to start from, one
    that never filters gives them none; holding the filter is what PPO found from
    ``filter_if_attack`` in only some of its runs, docs/rl.md), else ``block_if_attack``."""
    return FILTER_AND_HOLD if reward.filter else WARM_START


def warm_start_rule(name: str | None, reward: RewardConfig) -> Callable[[], Policy] | None:
    """The rule policy called ``name`` (None or 'none': PPO from a random policy)."""
    if name in (None, "none"):
        return None
    rules = warm_start_rules(reward)
    if name not in rules:
        raise ValueError(f"--warm-start: {name!r} is not one of none, {', '.join(rules)}")
    return rules[name]


def source_folds(episodes: list[Episode], folds: int, seed: int) -> list[list[str]]:
    """Sources dealt into ``folds`` groups at random (by ``seed``), attack-bearing sources
    spread first so that every fold has attacks to learn from and to be measured on."""
    attack: dict[str, int] = {}
    for e in episodes:
        attack[e.source] = attack.get(e.source, 0) + int(e.truth.attack.sum())
    rng = np.random.default_rng(seed)
    srcs = sorted(attack)
    rng.shuffle(srcs)
    srcs.sort(key=lambda s: attack[s] == 0)  # stable: attack sources first, in random order
    groups: list[list[str]] = [[] for _ in range(folds)]
    for i, s in enumerate(srcs):
        groups[i % folds].append(s)
    return groups


def evaluate_by_source(episodes: list[Episode], classes: list[str], reward: RewardConfig, *, folds: int = 2,
                       seed: int = 0, timesteps: int = 60_000, hidden: tuple[int, ...] = (64, 64),
                       warm_start: str | None = WARM_START, train_only: tuple[str, ...] = (SYNTHETIC,),
                       validation_share: float = 1 / 3, synthetic_validation_share: float = 0.0,
                       served_validation_share: float = 1 / 3, min_gain: float = MIN_GAIN,
                       check_every: int = 10_000, restarts: int = RESTARTS,
                       restart_ent_coef: float | None = RESTART_ENT_COEF, log: Callable[[str], None] = print,
                       **ppo: Any) -> dict[str, Any]:
    """Train on all folds but one, measure on that one, for every fold; per policy the
    figures over every held-out source (each source is held out once). The ``train_only``
    sources (the synthetic corpus) are in every fold's training and never measured. Within
    a fold's training sources, ``validation_share`` of the real ones choose the checkpoint
    among every one of the fold's ``restarts`` PPO runs (`validation_split`, `train_agent`):
    the held-out sources never do. "last PPO" is restart 0's last checkpoint."""
    if folds < 2:
        raise ValueError("folds must be >= 2")
    groups = source_folds([e for e in episodes if e.source not in train_only], folds, seed)
    per_policy: dict[str, dict[str, Outcome]] = {}
    fold_rows = []
    table = reward.actions()
    for k, held in enumerate(groups):
        fit, val = validation_split([e for e in episodes if e.source not in held], seed + k, validation_share,
                                    train_only, synthetic_validation_share, served_validation_share)
        test = [e for e in episodes if e.source in held and e.source not in train_only]
        t0 = time.perf_counter()
        got = train_agent(fit, classes, reward, timesteps=timesteps, seed=seed + k, hidden=hidden,
                          warm_start=warm_start_rule(warm_start, reward), validation=val, check_every=check_every,
                          min_gain=min_gain, restarts=restarts, restart_ent_coef=restart_ent_coef, **ppo)
        fold_rows.append({"fold": k, "held_out": held, "fit_episodes": len(fit), "validation_episodes": len(val),
                          "test_episodes": len(test), "train_s": round(time.perf_counter() - t0, 1),
                          "selection": got.selection})
        restart_of = got.selection["chosen_restart"]
        log(f"fold {k}: trained on {len(fit)} episodes, chose {got.selection['chosen']} at "
            f"{got.selection['chosen_steps']} steps"
            f"{'' if restart_of is None else f' of restart {restart_of}'} on {len(val)} validation episodes "
            f"({fold_rows[-1]['train_s']} s); measuring on {len(held)} held-out sources")
        nets = {"imitation only": got.imitation, "last PPO": got.last, "trained": got.net}
        start = {} if warm_start in baseline_policies(reward) or warm_start_rule(warm_start, reward) is None \
            else {f"{warm_start} (start)": warm_start_rule(warm_start, reward)}  # a start that is no baseline: shown
        pols = {**baseline_policies(reward), **start,
                **{name: (lambda n=n: net_policy(n, table)) for name, n in nets.items() if n is not None}}
        for name, per in evaluate(test, classes, reward, pols).items():
            for src, o in per.items():
                per_policy.setdefault(name, {})[src] = o
    out = summary(per_policy, reward, fold_rows)
    out["training"] = {"algorithm": "PPO", "timesteps": timesteps, "warm_start": warm_start, "seed": seed,
                       "hidden": list(hidden), "validation_share": validation_share,
                       "synthetic_validation_share": synthetic_validation_share,
                       "served_validation_share": served_validation_share, "min_gain": min_gain,
                       "check_every": check_every, "restarts": restarts, "restart_ent_coef": restart_ent_coef,
                       **ppo}
    return out


def summary(per_policy: dict[str, dict[str, Outcome]], reward: RewardConfig,
            folds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report: per policy, the totals and each source's figures."""
    table = {}
    for name, per in per_policy.items():
        tot = Outcome()
        for o in per.values():
            tot.add(o)
        table[name] = {"total": tot.figures(), "sources": {s: o.figures() for s, o in sorted(per.items())}}
    return {"reward": reward.as_dict(), "folds": folds or [], "policies": table}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def format_table(result: dict[str, Any]) -> str:
    """The policy table of a report."""
    lines = [f"{'policy':<16} {'attack stopped':>15} {'benign lost':>12} {'actions/h':>10} {'reward':>12}"]
    for name, r in result["policies"].items():
        t = r["total"]
        aph = "-" if t["actions_per_hour"] is None else f"{t['actions_per_hour']:.1f}"
        lines.append(f"{name:<16} {_pct(t['attack_stopped']):>15} {_pct(t['benign_lost']):>12} {aph:>10} "
                     f"{t['reward']:>12.1f}")
    return "\n".join(lines)


def evaluate_saved(policy_dir: Path, episodes: list[Episode], reward: RewardConfig | None = None) -> dict[str, Any]:
    """A saved policy beside the rule policies on ``episodes`` (the reward it was trained for
    unless given; the durations are always the policy's own)."""
    pol = load_policy(policy_dir)
    # the policy's actions are fixed: its durations, and filter or not (a policy from before
    # the filter action has none)
    durations = tuple(d for k, d in pol.actions if k == "block")
    own = {"durations": durations, "filter": pol.has_filter}
    reward = replace(reward, **own) if reward else RewardConfig(**{**pol.meta.get("reward", {}), **own})
    if reward.actions() != pol.actions:
        raise ValueError(f"{policy_dir}: the policy's actions are not the environment's")
    pols = {**baseline_policies(reward), "trained": lambda: net_policy(pol.net, pol.actions)}
    return summary(evaluate(episodes, pol.classes, reward, pols), reward)


def default_classes(model: str | None = None) -> list[str]:
    """The class list of the model the episodes were replayed with (default: bundled)."""
    from ids_daemon.model.artifacts import bundled_model_dir, read_metadata

    return list(read_metadata(model or bundled_model_dir())["classes"])

