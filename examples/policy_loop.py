"""An example policy loop: subscribe to predictions, build observations, emit actions.

    python examples/policy_loop.py --kafka-bootstrap 127.0.0.1:9092 --topic ids.predictions \
        --actions-topic ids.actions [--seconds 30] [--group policy-demo] [--consumer KEY=VALUE ...]

Each prediction updates the state of its target host (`ids_daemon.consumers.rl`); the policy
looks at that host's observation and decides: block (a high or critical attack),
rate_limit (a medium one, or a low-confidence attack), or ignore. `Hysteresis` keeps a
host's action from flapping as the severities of a flood's windows alternate (it went
between block and rate_limit 46 times in 40 s): a stronger action applies at once, a
weaker one only after the host has given no reason for the current one for ``--hold``
seconds of traffic time. An action is published to the actions topic only when it
changes for the host, keyed by the host, as JSON (`ids.action.v1`). A real deployment would replace `decide` with a trained
agent (the observation layout is in `ObservationBuilder.layout`).

Run it against the demo: `ids-daemon replay -r ... --sink kafka ...` in one terminal,
this in another.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import orjson
from confluent_kafka import Producer

from ids_daemon.model.artifacts import load_model
from ids_daemon.consumers.rl import ObservationBuilder
from ids_daemon.consumers.subscribe import PredictionSubscriber


def decide(obs, layout: list[str]) -> str:
    """A threshold policy over the observation vector."""
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

    RANK = {"ignore": 0, "rate_limit": 1, "block": 2}

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
    ap.add_argument("--hold", type=float, default=30.0,
                    help="seconds of traffic without reason for a host's action before a weaker one applies")
    a = ap.parse_args()
    if any("=" not in kv for kv in a.consumer):
        ap.error("--consumer takes KEY=VALUE")
    consumer_config = dict(kv.split("=", 1) for kv in a.consumer)

    classes = load_model(a.model).classes
    obs = ObservationBuilder(classes, key_by="host")
    producer = Producer({"bootstrap.servers": a.kafka_bootstrap, "acks": "all", "linger.ms": 5})
    policy = Hysteresis(a.hold)
    decided = policy.action
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
                action = policy.step(host, decide(obs.observation(host, p.window.last_ts), obs.layout),
                                     p.window.last_ts)
                if action is not None:
                    msg = {"schema": "ids.action.v1", "time": time.time(), "host": host, "action": action,
                           "reason": f"{p.predicted_attack} ({p.family}) risk {p.risk_score:.2f} {p.severity}",
                           "prediction_id": p.id, "sensor": p.sensor}
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
