"""The RL adapter and the example policy loop (daemon → broker → agent → actions topic)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ids_daemon.predictions import Prediction
from ids_daemon.consumers.rl import FAMILIES, ObservationBuilder, make_env

from .kafka_broker import read_topic

ROOT = Path(__file__).resolve().parents[1]
from .helpers import EXE  # noqa: E402
CLASSES = ["BenignTraffic", "DDoS-SYN_Flood", "Recon-PortScan"]


def pred(i: int, host: str, attack: str, risk: float, sev: str, t: float) -> Prediction:
    fam = {"BenignTraffic": "Benign", "DDoS-SYN_Flood": "DDoS", "Recon-PortScan": "Recon"}[attack]
    return Prediction.from_dict({
        "schema": "ids.prediction.v1", "id": f"t-{i}", "time": t, "sensor": "s", "predicted_attack": attack,
        "family": fam, "is_attack": fam != "Benign", "confidence": 0.9, "risk_score": risk, "severity": sev,
        "probabilities": [{"class": attack, "p": 0.9}, {"class": "BenignTraffic", "p": 0.05}],
        "flow": {"key": f"pool tcp {host}/32", "kind": "pool", "protocol": "tcp", "src_ip": None, "src_port": None,
                 "dst_ip": host, "dst_port": None},
        "window": {"first_ts": t - 0.01, "last_ts": t, "packets": 10, "close_reason": "full", "history": 4},
        "model": {"name": "m", "version": "1"},
    })


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


def test_gymnasium_env_steps_and_rewards() -> None:
    stream = [pred(i, f"10.0.0.{i % 3}", "DDoS-SYN_Flood" if i % 3 == 0 else "BenignTraffic",
                   0.9 if i % 3 == 0 else 0.0, "critical" if i % 3 == 0 else "low", 100.0 + i) for i in range(30)]
    env = make_env(stream, CLASSES, steps_per_episode=10)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["key"] == "10.0.0.0"
    _, r_block, *_ = env.step(2)  # block the attacked host
    assert r_block == 2.0
    total = 0.0
    done = trunc = False
    while not (done or trunc):
        _, r, done, trunc, _ = env.step(0)
        total += r
    assert trunc  # the episode length was honoured


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
