"""The example policy loop's decisions (examples/policy_loop.py), in-process: the
threshold policy over the RL observation, with hysteresis so that a flood whose windows
alternate between high and medium severity does not flap a host between block and
rate_limit (issue 9 item 6: 46 flips in 40 s)."""

from __future__ import annotations

import importlib.util

import pytest

from ids_daemon.consumers.rl import ObservationBuilder
from tests.test_rl import CLASSES, ROOT, pred


def _load_policy_loop():
    spec = importlib.util.spec_from_file_location("policy_loop", ROOT / "examples" / "policy_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PL = _load_policy_loop()
HOST = "10.0.0.5"


def flood(t0: float, seconds: float, every: float = 0.5, start: int = 0) -> list:
    """A flood on HOST whose windows alternate critical (risk 0.9) and medium (0.3)."""
    out = []
    for i in range(int(seconds / every)):
        sev, risk = ("critical", 0.9) if i % 2 == 0 else ("medium", 0.3)
        out.append(pred(start + i, HOST, "DDoS-SYN_Flood", risk, sev, t0 + i * every))
    return out


def run(preds, policy=None) -> list[tuple[float, str]]:
    """(time, action) each time the host's action changes; without ``policy``, the bare
    threshold policy as the loop ran it before."""
    obs = ObservationBuilder(CLASSES, key_by="host")
    changes, current = [], None
    for p in preds:
        h = obs.update(p)
        want = PL.decide(obs.observation(h, p.window.last_ts), obs.layout)
        if policy is None:
            if want != current:
                current = want
                changes.append((p.window.last_ts, want))
        elif (a := policy.step(h, want, p.window.last_ts)) is not None:
            changes.append((p.window.last_ts, a))
    return changes


def test_an_alternating_flood_flaps_without_hysteresis_and_not_with_it() -> None:
    stream = flood(1000.0, 40.0)
    bare = run(stream)
    assert len(bare) >= 40  # the defect: block, rate_limit, block, ... every window
    assert {a for _, a in bare} == {"block", "rate_limit"}
    held = run(stream, PL.Hysteresis(hold_s=30.0))
    assert held == [(1000.0, "block")]  # escalated at once, and kept


def test_de_escalation_waits_for_a_quiet_hold_and_escalation_does_not() -> None:
    stream = flood(1000.0, 10.0)  # block from t=1000, last critical at 1009
    # then only medium windows: rate_limit is wanted, but block holds until 30 s after the last critical
    stream += [pred(100 + i, HOST, "DDoS-SYN_Flood", 0.3, "medium", 1010.0 + i) for i in range(40)]
    # a critical window again: block at once
    stream += [pred(200, HOST, "DDoS-SYN_Flood", 0.9, "critical", 1050.5)]
    # benign from then on: ignore only after the hold
    stream += [pred(300 + i, HOST, "BenignTraffic", 0.0, "low", 1051.0 + i) for i in range(40)]
    changes = run(stream, PL.Hysteresis(hold_s=30.0))
    assert changes == [(1000.0, "block"), (1039.0, "rate_limit"), (1050.5, "block"), (1081.0, "ignore")]


def test_hosts_are_held_independently_and_hold_zero_is_the_bare_policy() -> None:
    h = PL.Hysteresis(hold_s=30.0)
    assert h.step("a", "block", 0.0) == "block"
    assert h.step("b", "rate_limit", 1.0) == "rate_limit"
    assert h.step("b", "ignore", 20.0) is None and h.step("a", "rate_limit", 20.0) is None
    assert h.step("b", "ignore", 31.0) == "ignore" and h.action == {"a": "block", "b": "ignore"}
    stream = flood(1000.0, 10.0)
    assert run(stream, PL.Hysteresis(hold_s=0.0)) == run(stream)
    with pytest.raises(ValueError):
        PL.Hysteresis(hold_s=-1)


def test_a_trained_filter_is_published_with_its_packet_class_and_direction(tmp_path) -> None:
    """A policy whose actions include filter (here one that always asks for a filter of
    60 s): the loop's decision on a SYN flood's target is a filter of tcp-syn, published as
    an ``ids.action.v1`` message with the class, ``direction: inbound`` and its duration;
    on a scanned host (no flood class) what goes in force, and is published, is a block;
    asking again changes nothing and publishes nothing."""
    import torch

    from ids_daemon.consumers.policy import (HostActions, PolicyNet, action_table, extra_layout, load_policy,
                                             save_policy)

    acts = action_table((15.0, 60.0))
    lay = ObservationBuilder(CLASSES).layout + extra_layout(acts)
    net = PolicyNet(len(lay), len(acts), (4,))
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([10.0 if a == ("filter", 60.0) else 0.0 for a in acts]))
    agent = load_policy(save_policy(tmp_path / "p", net, actions=acts, layout=lay, classes=CLASSES, tau=30.0))
    obs, ha, out = ObservationBuilder(CLASSES, tau=agent.tau), HostActions(), []
    stream = [pred(0, HOST, "DDoS-SYN_Flood", 0.9, "critical", 100.0), pred(1, "10.0.0.7", "Recon-PortScan", 0.8,
                                                                            "high", 101.0),
              pred(2, HOST, "BenignTraffic", 0.0, "low", 102.0)]
    for p in stream:
        h = obs.update(p)
        got = PL.agent_step(agent, obs, ha, h, p.window.last_ts)
        if got is not None:
            out.append(PL.action_message(p, h, *got))
    assert [(m["host"], m["action"], m.get("packet_class"), m.get("direction"), m["duration_s"]) for m in out] == \
        [(HOST, "filter", "tcp-syn", "inbound", 60.0), ("10.0.0.7", "block", None, None, 60.0)]
    assert all(m["schema"] == "ids.action.v1" for m in out)
    with pytest.raises(ValueError, match="packet class"):
        PL.action_message(stream[0], HOST, "filter", 60.0, None)
