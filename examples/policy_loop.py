"""An example policy loop: subscribe to predictions, build observations, emit actions.

    python examples/policy_loop.py --kafka-bootstrap 127.0.0.1:9092 --topic ids.predictions \
        --actions-topic ids.actions [--policy DIR] [--seconds 30] [--group policy-demo] [--consumer KEY=VALUE ...]

Each prediction updates the state of its target host (`ids_daemon.consumers.rl`); the policy
looks at that host's observation and decides.

With ``--policy DIR`` a trained policy (``ids-trainer policy train``, docs/rl.md; the
bundled one is ids_daemon/data/policy) decides: ignore, rate_limit, block or (a policy
trained with it) filter for a duration, from the observation plus what is in force on
the host; an action is published when it changes what is in force (a block that ran
out is no longer in force), with its ``duration_s``. A filter stops only the host's
inbound packets of one class, the one its latest attack names
(`ids_daemon.consumers.policy.FLOOD_FILTER`): the message carries it as
``packet_class`` (a `FILTERS` name: tcp-syn, tcp, udp, icmp, gre) with
``direction: inbound``; where the attack names no class the policy's filter is
published as a block. Running it needs torch only.

Without it, a threshold rule decides: block (a high or critical attack),
rate_limit (a medium one, or a low-confidence attack), or ignore. `Hysteresis` keeps a
host's action from flapping as the severities of a flood's windows alternate (it went
between block and rate_limit 46 times in 40 s): a stronger action applies at once, a
weaker one only after the host has given no reason for the current one for ``--hold``
seconds of traffic time. An action is published to the actions topic only when it
changes for the host, keyed by the host, as JSON (`ids.action.v1`).

Run it against the demo: `ids-daemon replay -r ... --sink kafka ...` in one terminal,
this in another.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

import orjson
from confluent_kafka import Producer

from ids_daemon.consumers.policy import (FILTERS, HostActions, Hysteresis, LoadedPolicy, decide, filter_class,
                                         load_policy, policy_observation)
from ids_daemon.consumers.rl import ObservationBuilder
from ids_daemon.consumers.subscribe import PredictionSubscriber
from ids_daemon.model.artifacts import load_model
from ids_daemon.predictions.decode import Prediction

# the rule policy lives in ids_daemon.consumers.policy
__all__ = ["Hysteresis", "action_message", "agent_step", "decide", "main"]


def agent_step(agent: LoadedPolicy, obs: ObservationBuilder, in_force: HostActions, host: str,
               clock: float) -> tuple[str, float, str | None] | None:
    """The trained policy's decision for ``host`` at ``clock``: (kind, duration, packet class)
    when it changes what is in force, else None. A filter is of the class the host's latest
    attack names (`filter_class`); where it names none, what goes in force is a block."""
    action, duration = agent.act(policy_observation(obs, in_force, host, clock, agent.max_duration, agent.has_filter))
    if not in_force.apply(host, action, duration, clock, filter_class(obs, host) if action == "filter" else None):
        return None
    return in_force.kind[host], duration, in_force.packet_class[host]


def action_message(p: Prediction, host: str, action: str, duration: float | None,
                   packet_class: str | None = None) -> dict[str, Any]:
    """The ``ids.action.v1`` message of a change of ``host``'s action, prompted by ``p``:
    ``duration_s`` for an action in force for a while, and for a filter the packet class
    it stops (a `FILTERS` name) and that only the host's inbound packets are stopped."""
    msg: dict[str, Any] = {"schema": "ids.action.v1", "time": time.time(), "host": host, "action": action,
                           "reason": f"{p.predicted_attack} ({p.family}) risk {p.risk_score:.2f} {p.severity}",
                           "prediction_id": p.id, "sensor": p.sensor}
    if duration:
        msg["duration_s"] = duration
    if action == "filter":
        if packet_class not in FILTERS:
            raise ValueError(f"a filter needs a packet class, not {packet_class!r}")
        msg["packet_class"], msg["direction"] = packet_class, "inbound"
    return msg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kafka-bootstrap", required=True)
    ap.add_argument("--topic", default="ids.predictions")
    ap.add_argument("--actions-topic", default="ids.actions")
    ap.add_argument("--group", default="policy-demo")
    ap.add_argument("--from", dest="start", default="earliest", help="earliest or committed")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until SIGINT)")
    ap.add_argument("--until-idle", type=float, default=None,
                    help="stop once records have arrived and none came for this many seconds (a replay's end)")
    ap.add_argument("--model", default=None, help="model directory, for its class list (default: bundled)")
    ap.add_argument("--consumer", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka consumer property, e.g. session.timeout.ms=10000 (repeatable)")
    ap.add_argument("--policy", default=None, metavar="DIR",
                    help="a trained policy directory (ids-trainer policy train) instead of the threshold rule")
    ap.add_argument("--hold", type=float, default=30.0,
                    help="seconds of traffic without reason for a host's action before a weaker one applies")
    a = ap.parse_args()
    if any("=" not in kv for kv in a.consumer):
        ap.error("--consumer takes KEY=VALUE")
    consumer_config = dict(kv.split("=", 1) for kv in a.consumer)

    agent = load_policy(a.policy) if a.policy else None
    classes = agent.classes if agent else load_model(a.model).classes
    obs = ObservationBuilder(classes, key_by="host", tau=agent.tau if agent else 30.0)
    producer = Producer({"bootstrap.servers": a.kafka_bootstrap, "acks": "all", "linger.ms": 5})
    policy = Hysteresis(a.hold)
    in_force = HostActions()
    decided = in_force.kind if agent else policy.action
    clock = float("-inf")  # traffic time: windows of different keys may close out of order
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    deadline = time.monotonic() + a.seconds if a.seconds else None
    sent = 0
    last_record = None  # monotonic time of the last record, once any arrived
    with PredictionSubscriber(a.kafka_bootstrap, a.topic, group_id=a.group, start=a.start, poll_timeout_ms=500,
                              consumer_config=consumer_config) as sub:
        while not stop["now"] and (deadline is None or time.monotonic() < deadline):
            batch = sub.poll()
            now = time.monotonic()
            if batch:
                last_record = now
            elif a.until_idle is not None and last_record is not None and now - last_record >= a.until_idle:
                break
            for p in batch:
                host = obs.update(p)
                clock = max(clock, p.window.last_ts)
                duration, packet_class = None, None
                if agent is not None:
                    got = agent_step(agent, obs, in_force, host, clock)
                    action, duration, packet_class = got if got is not None else (None, None, None)
                else:
                    action = policy.step(host, decide(obs.observation(host, clock), obs.layout), clock)
                if action is not None:
                    msg = action_message(p, host, action, duration, packet_class)
                    producer.produce(a.actions_topic, orjson.dumps(msg), host.encode())
                    sent += 1
            if batch:
                if producer.flush(10):  # actions not acknowledged: do not commit the predictions behind them
                    print("the actions topic did not acknowledge in time", file=sys.stderr)
                    return 1
                sub.commit()
    producer.flush(10)
    print(f"{sent} actions for {len(decided)} hosts: "
          + ", ".join(f"{h} {act}" for h, act in sorted(decided.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
