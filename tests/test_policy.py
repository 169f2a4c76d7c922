"""Response policies (docs/rl.md): the policy artefact, PPO training exported to the
runtime's torch module, episodes from the labelled corpus, and the trained policy
driving the example loop on the dev broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ids_daemon.consumers.policy import (EXTRA_LAYOUT, FILTER_LAYOUT, HostActions, PolicyNet, action_table,
                                         bundled_policy_dir, extra_layout, filter_class, load_policy,
                                         policy_observation, save_policy)
from ids_daemon.consumers.response import (PREDICTIONS_SUFFIX, TRUTH_SUFFIX, EpisodeError, Outcome, RewardConfig,
                                           Truth, load_episodes, read_predictions, run_policy, write_index)
from ids_daemon.predictions import Prediction
from ids_daemon.consumers.rl import ObservationBuilder
from ids_daemon.consumers.filters import FILTERS
from ids_daemon.model.artifacts import METADATA, WEIGHTS, ModelError

from .helpers import EXE
from .kafka_broker import read_topic
from .test_rl import ATTACKER, CLASSES, ROOT, VICTIM, crafted_episode, pred, pred_dict

TRAINER = [sys.executable, "-m", "trainer.cli"]


def _layout(classes: list[str], tau: float = 30.0) -> list[str]:
    """The layout of a policy without the filter action (as the bundled one)."""
    return ObservationBuilder(classes, tau=tau).layout + EXTRA_LAYOUT


def test_policy_artefact_round_trips_and_refuses_damaged_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    acts = action_table((15.0, 60.0), with_filter=False)
    net = PolicyNet(len(_layout(CLASSES)), len(acts), (8, 8))
    d = save_policy(tmp_path / "p", net, actions=acts, layout=_layout(CLASSES), classes=CLASSES, tau=30.0)
    pol = load_policy(d)
    x = torch.rand(5, len(_layout(CLASSES)))
    assert torch.equal(pol.net(x), net(x).detach()) and pol.actions == acts and pol.classes == CLASSES
    assert pol.act(x[0].numpy()) == acts[int(net(x[:1]).argmax())]
    w = d / WEIGHTS
    raw = bytearray(w.read_bytes())
    raw[-20] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        load_policy(d)
    meta = json.loads((d / METADATA).read_text())
    meta["layout"] = meta["layout"][:-1]
    (d / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="layout"):
        load_policy(d)


def test_a_policy_with_the_filter_action_sees_the_filter_and_refuses_the_old_layout(tmp_path: Path) -> None:
    """Actions with filter: the observation ends with `FILTER_LAYOUT` (a filter in force,
    whether the host's attack names a packet class); a policy recorded with filter actions
    but the layout without them is refused. One without filter keeps the old layout."""
    acts = action_table((15.0, 60.0))
    assert [k for k, _ in acts].count("filter") == 2 and action_table((15.0,), with_filter=False) == \
        [("ignore", 0.0), ("rate_limit", 15.0), ("block", 15.0)]
    lay = ObservationBuilder(CLASSES).layout + extra_layout(acts)
    assert lay[-len(FILTER_LAYOUT):] == FILTER_LAYOUT and extra_layout(action_table((15.0,), False)) == EXTRA_LAYOUT
    net = PolicyNet(len(lay), len(acts), (8,))
    pol = load_policy(save_policy(tmp_path / "p", net, actions=acts, layout=lay, classes=CLASSES, tau=30.0))
    assert pol.has_filter and pol.actions == acts
    old = _layout(CLASSES)
    save_policy(tmp_path / "q", PolicyNet(len(old), len(acts), (8,)), actions=acts, layout=old, classes=CLASSES,
                tau=30.0)
    with pytest.raises(ModelError, match="layout"):
        load_policy(tmp_path / "q")
    # a policy trained before the filter action (its two-kind table and layout) still loads
    plain = action_table((15.0,), with_filter=False)
    assert not load_policy(save_policy(tmp_path / "old", PolicyNet(len(old), len(plain), (8,)), actions=plain,
                                       layout=old, classes=CLASSES, tau=30.0)).has_filter
    assert load_policy(bundled_policy_dir()).has_filter  # the bundled one is trained with it
    # the observation: a SYN flood's target is filterable, and a filter in force shows
    ob, ha = ObservationBuilder(CLASSES), HostActions()
    ob.update(Prediction.from_dict(pred_dict(0, VICTIM, "DDoS-SYN_Flood", 0.9, "critical", 5.0)))
    v = policy_observation(ob, ha, VICTIM, 5.0, 60.0, with_filter=True)
    assert len(v) == len(lay) and v[lay.index("filterable")] == 1 and v[lay.index("in_force=filter")] == 0
    assert ha.apply(VICTIM, "filter", 60.0, 5.0, "tcp-syn")
    v = policy_observation(ob, ha, VICTIM, 5.0, 60.0, with_filter=True)
    assert v[lay.index("in_force=filter")] == 1 and v[lay.index("in_force=block")] == 0


def test_a_truth_file_without_packet_classes_is_refused_naming_the_fix(tmp_path: Path) -> None:
    """Episodes recorded before the packet-class column: the filter would stop nothing in
    them, silently; they are refused with one line that says how to record them again."""
    tr = crafted_episode().truth
    tr.save(tmp_path / ("new" + TRUTH_SUFFIX))
    assert (Truth.load(tmp_path / ("new" + TRUTH_SUFFIX)).pclass == tr.pclass).all()
    np.savez_compressed(tmp_path / ("old" + TRUTH_SUFFIX), time=tr.time, src=tr.src, dst=tr.dst, attack=tr.attack,
                        hosts=np.asarray(tr.hosts, dtype=str))
    with pytest.raises(EpisodeError) as e:
        Truth.load(tmp_path / ("old" + TRUTH_SUFFIX))
    assert "ids-trainer policy episodes" in str(e.value) and "\n" not in str(e.value)


def test_the_bundled_policy_loads_and_is_small() -> None:
    d = bundled_policy_dir()
    assert (d / WEIGHTS).stat().st_size < 1 << 20
    pol = load_policy(d)
    assert pol.meta["training"]["algorithm"] == "PPO" and pol.actions[0] == ("ignore", 0.0)
    assert len(pol.meta["layout"]) == pol.net.body[0].in_features


@pytest.mark.slow
def test_a_short_ppo_run_learns_to_block_the_attacker_and_exports_to_torch(tmp_path: Path) -> None:
    """``ids-trainer policy train`` (a few thousand PPO steps, from a random policy) on
    crafted episode files: the policy artefact it writes stops most of a flood's attack
    packets, which a never-acting policy lets through."""
    t = np.arange(0.0, 200.0, 0.5)
    attack = t < 100  # an attacker for 100 s, then the same host benign
    truth = Truth.from_packets(t, np.array([ATTACKER] * len(t)), np.array([VICTIM] * len(t)), attack)
    preds = [pred_dict(i, ATTACKER, "DDoS-SYN_Flood" if ti < 100 else "BenignTraffic", 0.9 if ti < 100 else 0.0,
                       "critical" if ti < 100 else "low", float(ti)) for i, ti in enumerate(np.arange(0.0, 200.0, 5.0))]
    d = tmp_path / "eps"
    d.mkdir()
    for name in ("flood", "flood2"):  # two sources of it: one may be the validation's
        truth.save(d / (name + TRUTH_SUFFIX))
        (d / (name + PREDICTIONS_SUFFIX)).write_text("".join(json.dumps(p) + "\n" for p in preds))
    crafted = crafted_episode()
    crafted.truth.save(d / ("crafted" + TRUTH_SUFFIX))
    (d / ("crafted" + PREDICTIONS_SUFFIX)).write_text("".join(json.dumps(pred_dict(i, p.flow.dst_ip, p.predicted_attack,
                                                      p.risk_score, p.severity, p.window.last_ts)) + "\n"
                                                      for i, p in enumerate(crafted.predictions)))
    write_index(d, [{"name": "flood", "source": "a"}, {"name": "crafted", "source": "b"},
                    {"name": "flood2", "source": "c"}])
    out = tmp_path / "policy"
    p = subprocess.run(TRAINER + ["policy", "train", "--episodes", str(d), "--out", str(out), "--timesteps", "4096",
                                  "--check-every", "2048", "--warm-start", "none", "--restarts", "2",
                                  "--duration", "15", "--duration", "60"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    pol = load_policy(out)
    train = pol.meta["training"]
    val = train["selection"]["validation_sources"]
    assert len(val) == 1 and sorted(train["sources"] + val) == ["a", "b", "c"]
    assert pol.actions == action_table((15.0, 60.0))
    # from a random policy: the best of the two restarts' two checkpoints on the validation source
    sel = train["selection"]
    assert [(c["restart"], c["steps"]) for c in sel["checkpoints"]] == [(0, 2048), (0, 4096), (1, 2048), (1, 4096)]
    assert sel["validation"]["reward"] == max(c["reward"] for c in sel["checkpoints"])
    assert train["restarts"] == 2 and sel["restart_seeds"][0] == 0 and len(set(sel["restart_seeds"])) == 2
    flood = load_episodes(d, ["a"])[0]
    rc = RewardConfig(durations=(15.0, 60.0))
    from trainer.policy import net_policy

    trained = run_policy(flood, pol.classes, rc, net_policy(pol.net, pol.actions))
    never = run_policy(flood, pol.classes, rc, lambda *a: ("ignore", 0.0))
    assert trained.attack_stopped > 0.5 * trained.attack and trained.reward > never.reward


def test_the_checkpoint_kept_beats_the_imitation_on_validation_by_a_margin() -> None:
    """`select_checkpoint`: a PPO checkpoint replaces the imitation only when its validation
    reward is higher by at least min_gain x the attack packets and it stops no fewer attack
    packets (benign packets lost are in the reward); of those, the best reward; when none
    does, the imitation."""
    from trainer.policy import select_checkpoint

    def ck(steps: int, reward: float, stopped: float, lost: float):
        return (steps, PolicyNet(3, 2, (4,)), Outcome(attack=100, attack_stopped=stopped, benign=1000,
                                                     benign_stopped=lost, reward=reward))
    imitation = ck(0, -100.0, 10, 5)
    worse = [ck(1, -99.5, 12, 5),  # better reward, but by less than the margin (1 = 0.01 x 100)
             ck(2, -95.0, 9, 0),  # better reward, but fewer attack packets stopped
             ck(3, -101.0, 11, 4)]  # better on both shares, worse reward
    net, sel = select_checkpoint([imitation, *worse], True, True)
    assert net is imitation[1] and sel["chosen"] == "imitation" and sel["chosen_steps"] == 0
    assert sel["validation"]["reward"] == -100.0 and len(sel["checkpoints"]) == 4
    # more benign packets lost is no bar when the reward (which prices them) gains the margin
    trade, best = ck(4, -99.0, 12, 7), ck(5, -97.0, 11, 5)
    net, sel = select_checkpoint([imitation, *worse, trade], True, True)
    assert net is trade[1] and sel["chosen_steps"] == 4
    net, sel = select_checkpoint([imitation, *worse, trade, best], True, True)
    assert net is best[1] and sel["chosen"] == "ppo" and sel["chosen_steps"] == 5
    assert sel["validation"] == {"steps": 5, "restart": 0, "reward": -97.0, "attack_stopped": 0.11,
                                 "benign_lost": 0.005}
    assert sel["chosen_restart"] == 0 and sel["checkpoints"][0]["restart"] is None
    # a larger margin keeps the imitation
    assert select_checkpoint([imitation, *worse, trade, best], True, True, min_gain=0.05)[1]["chosen"] == "imitation"
    # no validation: the last checkpoint, said so
    net, sel = select_checkpoint([imitation, *worse], True, False)
    assert net is worse[-1][1] and sel["validation"] is None and "no validation" in sel["rule"]


def test_the_checkpoint_kept_is_chosen_across_every_restart_by_the_same_rule() -> None:
    """`select_checkpoint` with PPO restarts: every restart's checkpoints compete under the
    one rule (a later restart's wins when it is the best that beats the imitation, the
    record says which restart and step), a tie keeps the earlier restart's, and a restart
    that does better than the imitation by less than the margin does not replace it."""
    from trainer.policy import select_checkpoint

    def ck(steps: int, restart: int | None, reward: float, stopped: float):
        return (steps, PolicyNet(3, 2, (4,)), Outcome(attack=100, attack_stopped=stopped, benign=1000,
                                                     benign_stopped=1, reward=reward), restart)
    imitation = ck(0, None, -100.0, 10)
    r0 = [ck(10, 0, -100.0, 10), ck(20, 0, -99.5, 10)]  # never moved, or by less than the margin
    r1 = [ck(10, 1, -90.0, 20), ck(20, 1, -95.0, 15)]
    r2 = [ck(10, 2, -98.0, 12), ck(20, 2, -90.0, 20)]  # ties restart 1's best
    net, sel = select_checkpoint([imitation, *r0, *r1, *r2], True, True)
    assert net is r1[0][1] and sel["chosen"] == "ppo" and sel["chosen_restart"] == 1 and sel["chosen_steps"] == 10
    assert [(c["restart"], c["steps"]) for c in sel["checkpoints"]] == [
        (None, 0), (0, 10), (0, 20), (1, 10), (1, 20), (2, 10), (2, 20)]
    net, sel = select_checkpoint([imitation, *r0, *r2, *r1], True, True)  # order decides a tie
    assert net is r2[1][1] and sel["chosen_restart"] == 2 and sel["chosen_steps"] == 20
    net, sel = select_checkpoint([imitation, *r0], True, True)
    assert net is imitation[1] and sel["chosen"] == "imitation" and sel["chosen_restart"] is None


@pytest.mark.slow
def test_ppo_restarts_are_deterministic_under_the_seed_and_restart_0_is_the_plain_run() -> None:
    """`train_agent` with restarts: the same seed gives the same restarts (seeds, every
    checkpoint's weights and validation figures); restart 0 is the run without restarts,
    step for step, whatever the later restarts' entropy bonus; the other restarts have
    seeds of their own, and other seeds than a neighbouring run's (a fold's seed is the
    run's + the fold)."""
    from dataclasses import replace

    from trainer.policy import baseline_policies, restart_seed, train_agent, validation_split

    rc = RewardConfig(durations=(15.0, 60.0))
    eps = [replace(crafted_episode(), name=f"e{s}", source=s) for s in ("a", "b", "c")]
    fit, val = validation_split(eps, seed=0)
    kw = dict(timesteps=1024, hidden=(16, 16), check_every=512, validation=val, n_steps=512, batch_size=128,
              warm_start=baseline_policies(rc)["block_if_attack"])
    a = train_agent(fit, CLASSES, rc, seed=5, restarts=3, **kw)
    b = train_agent(fit, CLASSES, rc, seed=5, restarts=3, **kw)
    one = train_agent(fit, CLASSES, rc, seed=5, restarts=1, **kw)
    assert a.selection == b.selection
    seeds = a.selection["restart_seeds"]
    assert seeds[0] == 5 and len(set(seeds)) == 3 and seeds == [restart_seed(5, r) for r in range(3)]
    assert not set(seeds[1:]) & {restart_seed(6, r) for r in range(3)}
    assert [(c["restart"], c["steps"]) for c in a.selection["checkpoints"]] == [
        (None, 0), (0, 512), (0, 1024), (1, 512), (1, 1024), (2, 512), (2, 1024)]
    assert one.selection["checkpoints"] == a.selection["checkpoints"][:3]
    for x, y in ((a.net, b.net), (a.last, b.last), (a.last, one.last), (a.imitation, one.imitation)):
        assert all(torch.equal(v, y.state_dict()[k]) for k, v in x.state_dict().items())
    # a larger entropy bonus for the later restarts leaves restart 0 as it was
    ent = train_agent(fit, CLASSES, rc, seed=5, restarts=2, restart_ent_coef=0.5, **kw)
    assert ent.selection["checkpoints"][:3] == one.selection["checkpoints"]
    assert all(torch.equal(v, one.last.state_dict()[k]) for k, v in ent.last.state_dict().items())
    # no validation: nothing to choose a restart by, one run
    solo = train_agent(fit, CLASSES, rc, seed=5, restarts=3, **{**kw, "validation": None})
    assert solo.selection["restart_seeds"] == [5] and solo.selection["chosen"] == "ppo"
    assert [(c["restart"], c["steps"]) for c in solo.selection["checkpoints"]] == [(0, 512), (0, 1024)]


def test_validation_takes_whole_real_sources_and_a_share_of_each_synthetic_scenario() -> None:
    """`validation_split`: real sources go to validation whole (never split between fit and
    validation); with a train-only share, each synthetic scenario (label) keeps captures in
    fit and gives the share of them to validation, drawn by the seed; a scenario of one
    capture stays in fit."""
    from dataclasses import replace

    from trainer.policy import SYNTHETIC, validation_split

    base = crafted_episode()
    real = [replace(base, name=f"r{s}{i}", source=s) for s in "abc" for i in range(2)]
    synth = [replace(base, name=f"{SYNTHETIC}-{lab}-{i}", source=SYNTHETIC, label=lab)
             for lab, n in (("DDoS", 3), ("Recon", 3), ("BenignTraffic", 6), ("Lone", 1)) for i in range(n)]
    eps = real + synth
    fit, val = validation_split(eps, seed=0, train_only_share=1 / 3)
    assert sorted(e.name for e in fit + val) == sorted(e.name for e in eps) and not {e.name for e in fit} & {e.name for e in val}
    vreal = {e.source for e in val if e.source != SYNTHETIC}
    assert len(vreal) == 1 and not vreal & {e.source for e in fit}
    per = {lab: sum(e.label == lab for e in val) for lab in ("DDoS", "Recon", "BenignTraffic", "Lone")}
    assert per == {"DDoS": 1, "Recon": 1, "BenignTraffic": 2, "Lone": 0}
    drawn = {seed: sorted(e.name for e in validation_split(eps, seed, train_only_share=1 / 3)[1]) for seed in range(6)}
    assert drawn[0] == sorted(e.name for e in val) and len(set(map(tuple, drawn.values()))) > 1
    # without the share, the synthetic episodes all stay in fit, as before
    assert all(e.source != SYNTHETIC for e in validation_split(eps, seed=0)[1])


def served_flood_episode(name: str, label: str, benign_during: bool) -> "Episode":
    """A flood of 600 attack packets on VICTIM over 6 s (from t = 10), and a benign client's
    packets to VICTIM at each whole second 0..29 (``benign_during``) or only before the flood."""
    from ids_daemon.consumers.response import Episode, Truth

    ta = 10.0 + np.arange(600) / 100.0
    tb = np.arange(30.0) if benign_during else np.arange(9.0)
    truth = Truth.from_packets(np.concatenate([ta, tb + 0.25]), np.array([ATTACKER] * 600 + ["10.0.0.77"] * len(tb)),
                               np.array([VICTIM] * (600 + len(tb))), np.arange(600 + len(tb)) < 600)
    return Episode(name=name, source=SYNTHETIC_SOURCE, predictions=[], truth=truth, label=label)


SYNTHETIC_SOURCE = "synthetic"


def test_a_flood_on_a_host_with_benign_traffic_is_told_apart_from_one_without() -> None:
    """`served_flood_target`: a host receiving a flood's packets that also sends or receives
    benign ones during the flood; benign traffic only before it, or too few attack packets
    for a flood, is not one."""
    from trainer.policy import served_flood_target

    assert served_flood_target(served_flood_episode("s", "DoS-SYN_Flood", True))
    assert not served_flood_target(served_flood_episode("s", "DoS-SYN_Flood", False))
    assert not served_flood_target(served_flood_episode("s", "DoS-SYN_Flood", True), min_packets=601)
    assert not served_flood_target(crafted_episode())  # 100 attack packets: no flood


def test_filter_and_hold_keeps_a_floods_filter_through_benign_looking_windows() -> None:
    """The default warm start `filter_and_hold`: a SYN flood's target is filtered on the
    alarm and the filter is held while its windows look benign, so the flood stays out; the
    rule that lifts it on each benign-looking window lets the flood back in. The served
    client's packets (not SYNs) go through under either."""
    from ids_daemon.consumers.filters import PACKET_CLASSES
    from ids_daemon.consumers.response import Episode, Truth, run_policy
    from trainer.policy import FILTER_AND_HOLD, FILTER_IF_ATTACK, default_warm_start, warm_start_rules

    ta = 10.0 + np.arange(600) / 100.0  # 600 SYNs into VICTIM over 6 s
    tb = np.arange(30.0) + 0.25  # the served client's data packets, each second
    pclass = np.array([PACKET_CLASSES.index("tcp-syn")] * 600 + [PACKET_CLASSES.index("tcp-other")] * 30)
    truth = Truth.from_packets(np.concatenate([ta, tb]), np.array([ATTACKER] * 600 + ["10.0.0.77"] * 30),
                               np.array([VICTIM] * 630), np.arange(630) < 600, pclass)
    preds = [pred(0, VICTIM, "DDoS-SYN_Flood", 0.9, "critical", 10.055)]
    preds += [pred(i, VICTIM, "BenignTraffic", 0.0, "low", 10.055 + i) for i in range(1, 6)]
    ep = Episode(name="served", source="tests", predictions=preds, truth=truth)
    rc = RewardConfig()
    assert default_warm_start(rc) == FILTER_AND_HOLD
    rules = warm_start_rules(rc)
    hold = run_policy(ep, CLASSES, rc, rules[FILTER_AND_HOLD]())
    lift = run_policy(ep, CLASSES, rc, rules[FILTER_IF_ATTACK]())
    assert hold.attack_stopped == (ta > 10.055).sum() == 594  # every SYN after the alarm
    assert lift.attack_stopped == ((ta > 10.055) & (ta < 11.055)).sum() == 100  # until the next window, 1 s on
    assert hold.benign_stopped == lift.benign_stopped == 0
    assert hold.reward > lift.reward
    # an alarm that names no flood class: the filter is a block of the host, and it is
    # lifted on the next benign-looking window as the other rule lifts it
    scan = [pred(0, VICTIM, "Recon-PortScan", 0.9, "high", 10.055)] + preds[1:]
    ep2 = Episode(name="scan", source="tests", predictions=scan, truth=truth)
    hold2 = run_policy(ep2, CLASSES, rc, rules[FILTER_AND_HOLD]())
    lift2 = run_policy(ep2, CLASSES, rc, rules[FILTER_IF_ATTACK]())
    # 1 s of the flood, and the client's packet at 10.25
    assert (hold2.attack_stopped, hold2.benign_stopped) == (lift2.attack_stopped, lift2.benign_stopped) == (100, 1)


def test_validation_always_holds_a_share_of_the_synthetic_floods_on_served_hosts() -> None:
    """`validation_split`: of the synthetic episodes with a flood on a host that has benign
    traffic, a share of each scenario goes to validation even without a synthetic share
    (validation of real sources alone rarely holds one); the other synthetic episodes stay
    in fit; without validation at all (share 0), every episode is fit."""
    from dataclasses import replace

    from trainer.policy import SYNTHETIC, validation_split

    assert SYNTHETIC == SYNTHETIC_SOURCE
    base = crafted_episode()
    real = [replace(base, name=f"r{s}{i}", source=s) for s in "abc" for i in range(2)]
    served = [served_flood_episode(f"{SYNTHETIC}-served-{lab}-{i}", lab, True)
              for lab in ("DoS-SYN_Flood", "DDoS-UDP_Flood") for i in range(3)]
    plain = [served_flood_episode(f"{SYNTHETIC}-{i}", "DoS-SYN_Flood", False) for i in range(3)]
    eps = real + served + plain
    fit, val = validation_split(eps, seed=0)
    vs = [e for e in val if e.source == SYNTHETIC]
    assert sorted(e.label for e in vs) == ["DDoS-UDP_Flood", "DoS-SYN_Flood"]
    assert all(e.name.startswith(f"{SYNTHETIC}-served") for e in vs)
    assert {e.name for e in plain} <= {e.name for e in fit}
    assert sorted(e.name for e in fit + val) == sorted(e.name for e in eps)
    drawn = {seed: sorted(e.name for e in validation_split(eps, seed)[1] if e.source == SYNTHETIC) for seed in range(6)}
    assert len(set(map(tuple, drawn.values()))) > 1
    assert validation_split(eps, seed=0, served_share=0.0)[1] == [e for e in val if e.source != SYNTHETIC]
    fit0, val0 = validation_split(eps, seed=0, share=0.0)
    assert not val0 and len(fit0) == len(eps)


def test_served_floods_carry_benign_clients_of_the_flooded_host(tmp_path: Path) -> None:
    """`generate_served_floods`: per kind, a capture whose flood's target also talks with
    benign clients during the flood; the flood is the target's inbound packets of the
    flood's class, unanswered; the clients' packets are benign; the same seed gives the
    same bytes, and an existing manifest keeps its files."""
    from ids_daemon.consumers.response import PACKET_CLASSES

    from trainer.dataset import read_manifest
    from trainer.policy import capture_truth, rule_labeller, served_flood_target
    from trainer.synth.served import SERVED_FLOODS, generate_served_floods

    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "files": [{"path": "x.pcap", "label": "B"}]}))
    (tmp_path / "x.pcap").write_bytes(b"")
    files = read_manifest(generate_served_floods(tmp_path, seed=3, per_kind=1))
    assert [f["label"] for f in files] == ["B"] + [lab for lab, _ in SERVED_FLOODS]
    for f in files[1:]:
        t = capture_truth(f["path"], packet_label=rule_labeller(f["label"], f["rules"]))
        ep = type("E", (), {"truth": t})()
        assert served_flood_target(ep), f["path"].name
        a = t.attack
        victim = int(np.bincount(t.dst[a]).argmax())
        assert (t.dst[a] == victim).all()  # unanswered: every attack packet is inbound to the target
        want = "udp" if "UDP" in f["label"] else "tcp-syn"
        assert (t.pclass[a] == PACKET_CLASSES.index(want)).all()
        during = ~a & (t.time >= t.time[a][0]) & (t.time <= t.time[a][-1])
        peers = {t.hosts[i] for i in np.concatenate([t.src[during & (t.dst == victim)], t.dst[during & (t.src == victim)]])}
        assert len(peers & set(f["rules"][0]["hosts"])) >= 1 and f["rules"][0]["label"] == "BenignTraffic"
        assert ((t.src[~a] == victim) | (t.dst[~a] == victim)).mean() > 0.5
    again = tmp_path / "again"
    generate_served_floods(again, seed=3, per_kind=1)
    assert all((again / f["path"].name).read_bytes() == f["path"].read_bytes() for f in files[1:])


@pytest.mark.slow
def test_training_keeps_the_imitation_where_ppo_has_nothing_to_gain() -> None:
    """On episodes where the rule is already the best policy (block the attacker at its one
    prediction, leave the benign host be), no PPO checkpoint can beat the imitation on the
    validation source: `train_agent` keeps the imitation, the rule's copy."""
    from dataclasses import replace

    from trainer.policy import baseline_policies, train_agent, validation_split

    rc = RewardConfig(durations=(15.0, 60.0))
    eps = [replace(crafted_episode(), name=f"e{s}", source=s) for s in ("a", "b", "c")]
    fit, val = validation_split(eps, seed=0)
    assert len(val) == 1 and len(fit) == 2 and val[0].source not in {e.source for e in fit}
    got = train_agent(fit, CLASSES, rc, timesteps=4096, seed=0, hidden=(16, 16), check_every=2048,
                      warm_start=baseline_policies(rc)["block_if_attack"], validation=val)
    sel = got.selection
    assert sel["chosen"] == "imitation" and sel["chosen_steps"] == 0 and got.net is got.imitation
    assert [c["steps"] for c in sel["checkpoints"]] == [0, 2048, 4096]
    assert all(c["reward"] <= sel["validation"]["reward"] for c in sel["checkpoints"])
    rule = run_policy(val[0], CLASSES, rc, baseline_policies(rc)["block_if_attack"]())
    assert sel["validation"]["reward"] == rule.reward and sel["validation_sources"] == [val[0].source]


def test_episodes_are_replayed_in_the_batches_a_live_capture_would_have() -> None:
    """`LiveLikeSource`: a file batch is handed on in blocks of packet time (a block ends at
    the first frame block_s after the block's first, a clock that steps back included),
    every frame once, in order, with its index in the file."""
    from ids_daemon.capture.batch import PacketBatch

    from trainer.policy import LiveLikeSource

    ts = [0.0, 0.05, 0.09, 0.1, 0.15, 0.3, 0.31, 0.5, 0.4, 0.7]

    class Reader:
        def __init__(self) -> None:
            b = PacketBatch.empty(len(ts))
            b.ts = np.array(ts)
            self.batches = [b, PacketBatch.empty(0), None]
            self.closed = False

        def next_batch(self):
            return self.batches.pop(0)

        def close(self) -> None:
            self.closed = True

    src = LiveLikeSource(Reader(), 0.1)
    got = []
    while (b := src.next_batch()) is not None:
        got.append(b)
    assert [list(b.ts) for b in got if len(b)] == [ts[0:3], ts[3:5], ts[5:7], ts[7:9], ts[9:10]]
    assert [b.first_index for b in got if len(b)] == [0, 3, 5, 7, 9] and len(got[-1]) == 0
    src.close()
    assert src.inner.closed  # the reader's own methods go through


@pytest.mark.shared_data("real/MANIFEST.tsv")
def test_episodes_from_the_corpus_record_every_packet_and_the_published_predictions(tmp_path: Path) -> None:
    out = tmp_path / "eps"
    src = "chrissanders/packets"
    p = subprocess.run(TRAINER + ["policy", "episodes", "--out", str(out), "--source", src],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    index = json.loads((out / "episodes.json").read_text())["episodes"]
    manifest = [r.split("\t") for r in (ROOT.parent / "shared/data/real/MANIFEST.tsv").read_text().splitlines()[1:]]
    expected = {Path(r[0]).name.rsplit(".", 1)[0]: int(r[6]) for r in manifest if r[1] == src}
    assert {r["name"]: r["packets"] for r in index} == expected  # every frame of every capture
    eps = {e.name: e for e in load_episodes(out)}
    dos = eps["chrissanders_packets__ppa1e_dosattack"]  # all attack (an empty filter)
    assert dos.truth.attack.all() and not eps["chrissanders_packets__tcp_ports"].truth.attack.any()
    # the predictions are the daemon's, as the jsonl sink publishes them
    raw = (out / "chrissanders_packets__ppa1e_dosattack.predictions.jsonl").read_text().splitlines()
    assert len(raw) == len(dos.predictions) > 0 and json.loads(raw[0])["schema"] == "ids.prediction.v1"
    # a measured table over them, the bundled policy beside the rules
    p = subprocess.run(TRAINER + ["policy", "evaluate", "--episodes", str(out), "--policy", str(bundled_policy_dir()),
                                  "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "r.json").read_text())["policies"]
    assert set(r) == {"never", "block_if_attack", "block_if_high", "hysteresis", "trained"}
    attack = sum(int(e.truth.attack.sum()) for e in eps.values())
    assert r["never"]["total"]["reward"] == -attack and r["never"]["total"]["attack_stopped"] == 0


def _offline_actions(jsonl: Path, policy_dir: Path) -> list[tuple[str, str]]:
    """The (host, action) changes the policy makes over the predictions of a file."""
    pol = load_policy(policy_dir)
    obs, ha, clock, out = ObservationBuilder(pol.classes, tau=pol.tau), HostActions(), float("-inf"), []
    for p in read_predictions(jsonl):
        h = obs.update(p)
        clock = max(clock, p.window.last_ts)
        kind, dur = pol.act(policy_observation(obs, ha, h, clock, pol.max_duration, pol.has_filter))
        if ha.apply(h, kind, dur, clock, filter_class(obs, h) if kind == "filter" else None):
            out.append((h, ha.kind[h]))
    return out


def test_trained_policy_drives_the_example_loop_end_to_end(kafka_broker, kafka_topic: str, tmp_path: Path) -> None:
    """Daemon → broker → the example loop with the bundled trained policy → actions topic:
    the actions are the ones the same policy takes offline on the same predictions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    # one partition each: the loop reads the predictions in the order the daemon wrote the
    # file, and the actions read back in the order it sent them (several would interleave
    # the hosts, and the policy's clock with them)
    actions_topic = kafka_topic + "-actions"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in (kafka_topic, actions_topic)]).values():
        f.result(timeout=30)
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"kafka:\n  spool_dir: {tmp_path / 'spool'}\n")
    sample = ROOT / "ids_daemon" / "data" / "sample.pcap"
    jsonl = tmp_path / "p.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(sample), "--sink", "kafka", "--sink", "jsonl", "-o", str(jsonl),
                        "--kafka-bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic, "--config", str(cfg),
                        "--metrics-listen", "off"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    agent = subprocess.run([sys.executable, str(ROOT / "examples" / "policy_loop.py"), "--kafka-bootstrap",
                            kafka_broker.bootstrap, "--topic", kafka_topic, "--actions-topic", actions_topic,
                            "--policy", str(bundled_policy_dir()), "--group", "policy-" + kafka_topic[-8:],
                            "--seconds", "90", "--until-idle", "2",
                            "--consumer", "session.timeout.ms=6000", "--consumer", "heartbeat.interval.ms=1000"],
                           capture_output=True, text=True, timeout=150)
    assert agent.returncode == 0, agent.stderr
    sent = int(agent.stdout.split(" actions for ")[0].split()[-1])
    acts = [json.loads(r.value) for r in read_topic(kafka_broker.bootstrap, actions_topic, sent)]
    assert len(acts) == sent > 0 and all(a["schema"] == "ids.action.v1" for a in acts)
    assert all(a["duration_s"] > 0 for a in acts if a["action"] != "ignore")
    assert [(a["host"], a["action"]) for a in acts] == _offline_actions(jsonl, bundled_policy_dir())
    # the sample's SYN-flooded hosts get a filter of the flood's class, not a block that
    # would cut them off
    filt = {a["host"]: a for a in acts if a["action"] == "filter"}
    assert {"192.168.39.65", "192.168.60.97"} & set(filt)
    assert all(a["packet_class"] in FILTERS and a["direction"] == "inbound" for a in filt.values())


def test_synthetic_episodes_label_packets_by_the_generator_rules(tmp_path: Path) -> None:
    """``policy episodes --synthetic``: an ARP-spoofing scenario is mostly the victims'
    relayed benign traffic; its attack packets are the attacker's and the ARP ones."""
    p = subprocess.run(TRAINER + ["synth", "--out", str(tmp_path / "s"), "--packets", "3000", "--class",
                                  "MITM-ArpSpoofing", "--class", "BenignTraffic"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "eps"
    p = subprocess.run(TRAINER + ["policy", "episodes", "--no-real", "--synthetic", str(tmp_path / "s/manifest.json"),
                                  "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    files = json.loads((tmp_path / "s/manifest.json").read_text())["files"]
    eps = {e.name: e for e in load_episodes(out)}
    assert {e.source for e in eps.values()} == {"synthetic"} and len(eps) == len(files)
    for f in files:
        e = eps["synthetic-" + f["path"].rsplit(".", 1)[0]]
        assert len(e.truth.time) == f["packets"] and e.predictions
        if f["label"] == "BenignTraffic":
            assert not e.truth.attack.any()
            continue
        attacker = f["rules"][1]["hosts"][0]
        tr = e.truth
        hosts = np.array(tr.hosts)
        by_attacker = (hosts[tr.src] == attacker) | (hosts[tr.dst] == attacker)
        assert 0 < tr.attack.sum() < len(tr.attack) and tr.attack[by_attacker].all()
