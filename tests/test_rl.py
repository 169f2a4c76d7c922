"""The RL adapter and the example policy loop (daemon → broker → agent → actions topic)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ids_daemon.predictions import Prediction
from ids_daemon.capture.batch import TH_ACK, TH_PSH, TH_RST, TH_SYN
from ids_daemon.consumers.policy import PACKET_CLASSES, HostActions
from ids_daemon.consumers.response import Episode, Replay, RewardConfig, Truth, make_env, packet_class, run_policy
from ids_daemon.consumers.rl import FAMILIES, ObservationBuilder

from .kafka_broker import read_topic

ROOT = Path(__file__).resolve().parents[1]
from .helpers import EXE  # noqa: E402
CLASSES = ["BenignTraffic", "DDoS-SYN_Flood", "Recon-PortScan"]


def pred(i: int, host: str, attack: str, risk: float, sev: str, t: float) -> Prediction:
    return Prediction.from_dict(pred_dict(i, host, attack, risk, sev, t))


def pred_dict(i: int, host: str, attack: str, risk: float, sev: str, t: float) -> dict:
    """A v1 prediction about ``host`` whose window ends at ``t``."""
    fam = {"BenignTraffic": "Benign", "DDoS-SYN_Flood": "DDoS", "Recon-PortScan": "Recon"}[attack]
    return {
        "schema": "ids.prediction.v1", "id": f"t-{i}", "time": t, "sensor": "s", "predicted_attack": attack,
        "family": fam, "is_attack": fam != "Benign", "confidence": 0.9, "risk_score": risk, "severity": sev,
        "probabilities": [{"class": attack, "p": 0.9}, {"class": "BenignTraffic", "p": 0.05}],
        "flow": {"key": f"pool tcp {host}/32", "kind": "pool", "protocol": "tcp", "src_ip": None, "src_port": None,
                 "dst_ip": host, "dst_port": None},
        "window": {"first_ts": t - 0.01, "last_ts": t, "packets": 10, "close_reason": "full", "history": 4},
        "model": {"name": "m", "version": "1"},
    }


def test_observation_layout_and_values() -> None:
    ob = ObservationBuilder(CLASSES, tau=10.0)
    assert ob.size == len(ob.layout) == 7 + len(FAMILIES) + len(CLASSES)
    k = ob.update(pred(0, "10.0.0.5", "DDoS-SYN_Flood", 0.81, "critical", 100.0))
    assert k == "10.0.0.5"
    v = ob.observation(k, 100.0)
    lay = ob.layout
    assert v[lay.index("risk_score")] == np.float32(0.81) and v[lay.index("is_attack")] == 1
    assert v[lay.index("severity")] == 1.0 and v[lay.index("recency")] == 1.0
    assert v[lay.index("family=DDoS")] == 1 and v[lay.index("p=DDoS-SYN_Flood")] == np.float32(0.9)
    assert v[lay.index("p=BenignTraffic")] == np.float32(0.05)
    later = ob.observation(k, 120.0)
    assert later[lay.index("recency")] < 0.2  # quiet for two tau
    ob.update(pred(1, "10.0.0.9", "BenignTraffic", 0.0, "low", 101.0))
    assert ob.riskiest(101.0) == ["10.0.0.5"]
    assert not ob.observation("never-seen").any()


# ---- the response environment: the reward is what the actions did to the real packets ----

ATTACKER, VICTIM, CLIENT, SERVER = "10.0.0.1", "10.0.0.9", "10.0.0.2", "10.0.0.3"


def crafted_episode() -> Episode:
    """100 s of traffic: ATTACKER sends VICTIM an attack packet at each whole second
    0..99, CLIENT sends SERVER a benign one at each half second 0.5..99.5; the daemon's
    predictions name SERVER (benign) at 10, ATTACKER (attack) at 50, SERVER at 80."""
    t = np.concatenate([np.arange(100.0), np.arange(100.0) + 0.5])
    src = [ATTACKER] * 100 + [CLIENT] * 100
    dst = [VICTIM] * 100 + [SERVER] * 100
    truth = Truth.from_packets(t, np.array(src), np.array(dst), np.arange(200) < 100)
    preds = [pred(0, SERVER, "BenignTraffic", 0.0, "low", 10.0),
             pred(1, ATTACKER, "DDoS-SYN_Flood", 0.9, "critical", 50.0),
             pred(2, SERVER, "BenignTraffic", 0.0, "low", 80.0)]
    return Episode(name="crafted", source="tests", predictions=preds, truth=truth)


def acting_on(host: str, kind: str, duration: float) -> Callable:
    """A policy that asks for ``kind`` on ``host`` whenever it is the current host."""
    return lambda v, lay, h, t, cur: (kind, duration) if h == host else ("ignore", 0.0)


def test_blocking_the_attacker_at_t_stops_exactly_its_later_attack_packets() -> None:
    rc = RewardConfig(change_cost=3.0)
    o = run_policy(crafted_episode(), CLASSES, rc, acting_on(ATTACKER, "block", 300.0))
    assert o.attack_stopped == 49  # the attack packets at 51..99; the one at 50 was in the window seen
    assert o.benign_stopped == 0 and o.changes == 1 and o.attack == 100 and o.benign == 100
    assert o.reward == -(100 - 49) - 3.0


def test_blocking_a_benign_host_costs_exactly_its_later_packets_while_in_force() -> None:
    rc = RewardConfig(availability_cost=2.5, change_cost=1.0, durations=(15.0,))
    o = run_policy(crafted_episode(), CLASSES, rc, acting_on(SERVER, "block", 15.0))
    # blocked at 10 for 15 s: SERVER's packets at 10.5 .. 24.5; again at 80: 80.5 .. 94.5
    assert o.benign_stopped == 30 and o.attack_stopped == 0 and o.changes == 2
    assert o.reward == -100 - 2.5 * 30 - 2 * 1.0


def test_ignoring_everything_scores_the_attack_packets_full_cost() -> None:
    rc = RewardConfig(attack_cost=2.0)
    o = run_policy(crafted_episode(), CLASSES, rc, lambda *a: ("ignore", 0.0))
    assert (o.attack_stopped, o.benign_stopped, o.changes, o.reward) == (0, 0, 0, -200.0)
    fig = o.figures()
    assert fig["attack_stopped"] == 0.0 and fig["benign_lost"] == 0.0 and fig["actions_per_hour"] == 0.0


def syn_flood_target_episode() -> Episode:
    """100 s around a SYN flood's target VICTIM: ATTACKER sends it a SYN (no ACK) at each
    whole second 0..99 (attack); CLIENT sends it a UDP datagram at each .25 and an
    established-session TCP segment at each .5 (benign, inbound, other classes), and VICTIM
    opens a connection to CLIENT with a SYN at each .75 (benign, outbound, the flood's own
    class). The daemon names VICTIM: benign at 10, a SYN flood at 50, benign at 80."""
    k = np.arange(100.0)
    t = np.concatenate([k, k + 0.25, k + 0.5, k + 0.75])
    src = np.array([ATTACKER] * 100 + [CLIENT] * 200 + [VICTIM] * 100)
    dst = np.array([VICTIM] * 300 + [CLIENT] * 100)
    proto = np.repeat([6, 17, 6, 6], 100)
    flags = np.repeat([TH_SYN, 0, TH_ACK | TH_PSH, TH_SYN], 100)
    pclass = packet_class(proto, flags, np.full(400, 4))
    truth = Truth.from_packets(t, src, dst, np.arange(400) < 100, pclass)
    preds = [pred(0, VICTIM, "BenignTraffic", 0.0, "low", 10.0),
             pred(1, VICTIM, "DDoS-SYN_Flood", 0.9, "critical", 50.0),
             pred(2, VICTIM, "BenignTraffic", 0.0, "low", 80.0)]
    return Episode(name="syn-target", source="tests", predictions=preds, truth=truth)


def test_a_hosts_filter_class_is_its_latest_flood_finding() -> None:
    """`filter_class`: the class of the host's latest attack prediction that names a flood's
    packets. The model's predictions name a family only ("DDoS"): they keep it, as a scan
    does; a UDP flood's finding replaces it; a host never named in a flood has none."""
    from ids_daemon.consumers.policy import filter_class

    ob = ObservationBuilder(CLASSES)
    ob.update(pred(0, VICTIM, "BenignTraffic", 0.0, "low", 1.0))
    assert filter_class(ob, VICTIM) is None and filter_class(ob, "never-seen") is None
    ob.update(pred(1, VICTIM, "DDoS-SYN_Flood", 0.9, "critical", 3.0))
    family = pred_dict(2, VICTIM, "DDoS-SYN_Flood", 0.8, "high", 4.0)
    family["predicted_attack"] = "DDoS"
    ob.update(Prediction.from_dict(family))
    ob.update(pred(3, VICTIM, "Recon-PortScan", 0.7, "high", 5.0))
    ob.update(pred(4, VICTIM, "BenignTraffic", 0.0, "low", 6.0))
    assert filter_class(ob, VICTIM) == "tcp-syn"
    udp = pred_dict(5, VICTIM, "DDoS-SYN_Flood", 0.9, "critical", 2.0)  # late: an earlier window
    udp["predicted_attack"] = "DDoS-UDP_Flood"
    ob.update(Prediction.from_dict(udp))
    assert filter_class(ob, VICTIM) == "udp"


def test_packet_classes_by_protocol_and_flags() -> None:
    proto = np.array([6, 6, 6, 6, 17, 1, 58, 47, 0, 6])
    flags = np.array([TH_SYN, TH_SYN | TH_ACK, TH_ACK, TH_RST, 0, 0, 0, 0, 0, TH_SYN])
    ipv = np.array([4, 4, 6, 4, 4, 4, 6, 4, 0, 0])  # the last two: ARP, and no IP
    got = [PACKET_CLASSES[c] for c in packet_class(proto, flags, ipv)]
    assert got == ["tcp-syn", "tcp-other", "tcp-other", "tcp-other", "udp", "icmp", "icmp", "gre", "other", "other"]


def test_filtering_a_syn_flood_target_stops_exactly_its_later_inbound_syns() -> None:
    """The filter stops VICTIM's inbound SYN-only packets after the decision (the attack's
    49 at 51..99) and none of its benign packets: not the inbound UDP and established TCP,
    not its own outbound SYNs. A block at the same moment stops those 150 benign too."""
    rc = RewardConfig(change_cost=3.0)
    after_50 = lambda kind: (lambda v, lay, h, t, cur: (kind, 300.0) if t >= 50 else ("ignore", 0.0))  # noqa: E731
    o = run_policy(syn_flood_target_episode(), CLASSES, rc, after_50("filter"))
    assert (o.attack_stopped, o.benign_stopped, o.changes, o.filters) == (49, 0, 1, 1)  # asked again at 80: no change
    assert o.reward == -(100 - 49) - 3.0 and o.attack == 100 and o.benign == 300
    b = run_policy(syn_flood_target_episode(), CLASSES, rc, after_50("block"))
    assert (b.attack_stopped, b.benign_stopped, b.changes) == (49, 150, 1)
    # the filter is of the class the host's latest attack names, kept through its benign windows
    r = Replay(syn_flood_target_episode(), CLASSES, rc)
    while r.advance():
        r.act(*after_50("filter")(None, None, r.host, r.t, None))
        assert r.actions.in_force(VICTIM, r.t)[0] == ("filter" if r.t >= 50 else "ignore")
    assert r.actions.packet_class[VICTIM] == "tcp-syn"


def test_a_filter_where_the_attack_names_no_packet_class_is_a_block() -> None:
    """A filter on a host whose latest attack is a scan (no flood class), or that was never
    predicted an attack, puts a block in force: the same packets stopped as a block's."""
    rc = RewardConfig(change_cost=0.0)
    ep = syn_flood_target_episode()
    ep.predictions[1] = pred(1, VICTIM, "Recon-PortScan", 0.9, "critical", 50.0)
    at_50 = lambda kind: (lambda v, lay, h, t, cur: (kind, 300.0) if t == 50 else ("ignore", 0.0))  # noqa: E731
    f, b = run_policy(ep, CLASSES, rc, at_50("filter")), run_policy(ep, CLASSES, rc, at_50("block"))
    # in force for 50 < t <= 80, then lifted
    assert (f.attack_stopped, f.benign_stopped) == (b.attack_stopped, b.benign_stopped) == (30, 90)
    assert f.filters == 0 and f.changes == b.changes
    never = run_policy(syn_flood_target_episode(), CLASSES, rc,
                       lambda v, lay, h, t, cur: ("filter", 15.0) if t == 10 else ("ignore", 0.0))
    assert never.attack_stopped == 14 and never.benign_stopped == 45  # 10 < t < 25: blocked
    ha = HostActions()
    assert ha.apply("h", "filter", 10.0, 0.0, None) and ha.in_force("h", 1.0) == ("block", 9.0)
    assert not ha.apply("h", "block", 10.0, 1.0)  # already in force
    assert ha.apply("h", "filter", 10.0, 2.0, "udp") and ha.packet_class["h"] == "udp"
    assert not ha.apply("h", "filter", 10.0, 3.0, "udp") and ha.apply("h", "filter", 10.0, 4.0, "tcp-syn")


def test_a_rate_limit_thins_a_host_to_its_packets_per_second() -> None:
    # 30 attack packets in each of two seconds from ATTACKER; rate-limited at the start
    t = np.concatenate([10.0 + np.arange(30) / 30, 11.0 + np.arange(30) / 30])
    truth = Truth.from_packets(t, np.array([ATTACKER] * 60), np.array([VICTIM] * 60), np.ones(60, bool))
    ep = Episode("rl", "tests", [pred(0, ATTACKER, "DDoS-SYN_Flood", 0.9, "critical", 9.0)], truth)
    o = run_policy(ep, CLASSES, RewardConfig(rate_limit_pps=10, change_cost=0.0),
                   acting_on(ATTACKER, "rate_limit", 60.0))
    assert o.attack_stopped == 40 and o.reward == -20.0


def test_asking_for_what_is_in_force_is_no_change_and_an_expired_action_is_lifted() -> None:
    ha = HostActions()
    assert ha.apply("h", "block", 10.0, 0.0) and not ha.apply("h", "block", 10.0, 5.0)
    assert ha.in_force("h", 5.0) == ("block", 5.0) and ha.in_force("h", 10.0) == ("ignore", 0.0)
    assert ha.apply("h", "block", 10.0, 10.0)  # expired: blocking again is a change
    assert ha.apply("h", "ignore", 0.0, 11.0) and ha.in_force("h", 12.0)[0] == "ignore"


def test_gymnasium_env_is_deterministic_under_a_seed_and_sums_to_the_outcome() -> None:
    eps = [crafted_episode(), Episode("b", "tests", crafted_episode().predictions[:2], crafted_episode().truth)]
    rc = RewardConfig()

    def play(seed: int) -> list[tuple[str, float]]:
        env = make_env(eps, CLASSES, rc, seed=seed)
        rng = np.random.default_rng(7)
        out = []
        obs, info = env.reset(seed=seed)
        for _ in range(4):  # two episodes
            done = False
            total = 0.0
            assert env.observation_space.contains(obs) and len(obs) == len(env.layout)
            while not done:
                obs, r, done, trunc, info = env.step(int(rng.integers(env.action_space.n)))
                total += r
            out.append((info["episode_name"], total))
            obs, info = env.reset()
        return out

    a = play(3)
    assert a == play(3)
    assert {n for n, _ in a} == {"crafted", "b"}
    # ignoring everything through the env gives the ignore-all outcome
    env = make_env([crafted_episode()], CLASSES, rc, seed=0)
    env.reset()
    total, done = 0.0, False
    while not done:
        _, r, done, _, info = env.step(0)
        total += r
    assert total == -100.0 and info["episode_name"] == "crafted"


def test_example_policy_loop_end_to_end(kafka_broker, kafka_topic: str, tmp_path: Path) -> None:
    """Daemon → broker → the example agent → actions topic, read back."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"kafka:\n  spool_dir: {tmp_path / 'spool'}\n")
    sample = ROOT / "ids_daemon" / "data" / "sample.pcap"
    p = subprocess.run([EXE, "replay", "-r", str(sample), "--sink", "kafka", "--kafka-bootstrap", kafka_broker.bootstrap,
                        "--topic", kafka_topic, "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    actions_topic = kafka_topic + "-actions"
    agent = subprocess.run([sys.executable, str(ROOT / "examples" / "policy_loop.py"), "--kafka-bootstrap",
                            kafka_broker.bootstrap, "--topic", kafka_topic, "--actions-topic", actions_topic,
                            "--group", "policy-" + kafka_topic[-8:], "--seconds", "90", "--until-idle", "2",
                            # a fresh group's join on tansu takes half the session timeout (22 s at 45 s)
                            "--consumer", "session.timeout.ms=6000", "--consumer", "heartbeat.interval.ms=1000"],
                           capture_output=True, text=True, timeout=150)
    assert agent.returncode == 0, agent.stderr
    # the agent flushed its actions before it said how many it sent: read exactly those
    sent = int(agent.stdout.split(" actions for ")[0].split()[-1])
    acts = [json.loads(r.value) for r in read_topic(kafka_broker.bootstrap, actions_topic, sent)]
    assert len(acts) == sent and acts and all(a["schema"] == "ids.action.v1" for a in acts)
    blocked = {a["host"] for a in acts if a["action"] == "block"}
    # the capture's SYN flood target and ICMP flood target get blocked
    assert {"192.168.39.65", "192.168.60.97"} <= blocked, acts
