"""The subscriber RL agents use (ids_daemon/consumers/subscribe.py) against a real Kafka-protocol
broker (tansu): consumer groups, resume at the committed offset, poison messages and the
dead-letter topic, filters, timestamp starts, and the `subscribe` command's printer."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime

import orjson
import pytest

from ids_daemon.predictions import Prediction
from ids_daemon.consumers.subscribe import (
    PredictionSubscriber,
    SubscribeError,
    format_prediction,
    parse_start,
    run_subscribe,
)

from .kafka_broker import read_topic
from .waiting import wait_until

# group joins on tansu take about half the session timeout
FAST = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100}
SEVERITY_OF = [(0.0, "low"), (0.2, "medium"), (0.5, "high"), (0.8, "critical")]
FAMILIES = [("BenignTraffic", "Benign", 0.0), ("Recon-PortScan", "Recon", 0.4), ("DoS-UDP_Flood", "DoS", 0.8),
            ("DDoS-SYN_Flood", "DDoS", 0.9), ("Mirai-greeth_flood", "Mirai", 1.0)]



# ---------------------------------------------------------------- helpers
def make_prediction(i: int, *, nkeys: int = 40, sensor: str = "gw-1", kind: int | None = None,
                    confidence: float = 0.9, schema: str = "ids.prediction.v1") -> dict:
    """A prediction as the daemon publishes it (prediction.v1.schema.json)."""
    cls, fam, weight = FAMILIES[i % len(FAMILIES) if kind is None else kind]
    risk = round(weight * confidence, 4)
    sev = [s for lo, s in SEVERITY_OF if risk >= lo][-1]
    k = i % nkeys
    src, dst = f"10.0.{k // 200}.{k % 200 + 1}", "10.1.0.1"
    return {
        "schema": schema, "id": f"{sensor}-run1-{i}", "time": 1_700_000_000.0 + i, "sensor": sensor,
        "predicted_attack": cls, "family": fam, "is_attack": fam != "Benign", "confidence": confidence,
        "risk_score": risk, "severity": sev,
        "probabilities": [{"class": cls, "p": confidence}, {"class": "BenignTraffic", "p": round(1 - confidence, 4)}],
        "flow": {"key": f"tcp {src}:{40000 + k}-{dst}:80", "kind": "flow", "protocol": "tcp", "src_ip": src,
                 "src_port": 40000 + k, "dst_ip": dst, "dst_port": 80},
        "window": {"first_ts": 1_699_999_990.0 + i, "last_ts": 1_700_000_000.0 + i, "packets": 10,
                   "close_reason": "full", "history": 10},
        "model": {"name": "lstm-ciciot2023", "version": "test"},
    }


class _Producer:
    """A confluent-kafka producer with the send/flush/close the tests use."""

    def __init__(self, bootstrap: str):
        from confluent_kafka import Producer

        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})

    def send(self, topic, value, key, headers):
        self.p.produce(topic, value, key, headers=headers)
        self.p.poll(0)

    def flush(self, timeout: float) -> None:
        assert self.p.flush(timeout) == 0, "records not acknowledged"

    def close(self) -> None:
        self.p.flush(10)


def producer(bootstrap: str):
    return _Producer(bootstrap)


def publish(bootstrap: str, topic: str, preds: list, prod=None) -> list[bytes]:
    """Produce like the daemon's Kafka sink: key = flow key, header schema. Items may be
    dicts (encoded with orjson) or raw bytes (poison). Returns the values sent."""
    own = prod is None
    prod = prod or producer(bootstrap)
    values = []
    try:
        for p in preds:
            if isinstance(p, dict):
                value, key = orjson.dumps(p), p["flow"]["key"].encode()
            else:
                value, key = p, b"tcp 10.0.0.1:40000-10.1.0.1:80"
            prod.send(topic, value=value, key=key, headers=[("schema", b"ids.prediction.v1")])
            values.append(value)
        prod.flush(timeout=20)
    finally:
        if own:
            prod.close()
    return values


def collect(sub: PredictionSubscriber, n: int, timeout: float = 20.0, idle: float = 0.3) -> list[Prediction]:
    """Poll until n predictions arrived (then `idle` s more, to catch duplicates) or timeout."""
    out: list[Prediction] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < n:
        out.extend(sub.poll(timeout_ms=200))
    end = time.monotonic() + idle
    while time.monotonic() < end:
        out.extend(sub.poll(timeout_ms=100))
    return out


def ids(preds) -> list[str]:
    return sorted(p.id for p in preds)




def sub_for(broker, topic, **kw) -> PredictionSubscriber:
    kw.setdefault("consumer_config", FAST)
    kw.setdefault("poll_timeout_ms", 200)
    return PredictionSubscriber(broker.bootstrap, topic, **kw)


def test_test_predictions_match_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from ids_daemon.predictions import json_schema

    for i in range(len(FAMILIES)):
        jsonschema.validate(make_prediction(i), json_schema())
        Prediction.from_dict(make_prediction(i))


# ---------------------------------------------------------------- consumer groups
def test_two_agents_in_one_group_split_the_partitions_and_see_everything_once(kafka_broker, kafka_topic):
    bootstrap = kafka_broker.bootstrap
    prod = producer(bootstrap)
    first = [make_prediction(i) for i in range(60)]
    publish(bootstrap, kafka_topic, first, prod)  # creates the topic (4 partitions)

    a = sub_for(kafka_broker, kafka_topic, group_id="agents")
    b = sub_for(kafka_broker, kafka_topic, group_id="agents")
    got_a: list[Prediction] = []
    got_b: list[Prediction] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def agent_iterating():  # agent A: `for p in sub`, closed from the main thread
        try:
            for p in a:
                got_a.append(p)
                a.commit()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def agent_polling():  # agent B: poll() batches, commits after each
        try:
            while not done.is_set():
                got_b.extend(b.poll(timeout_ms=200))
                b.commit()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            b.close()

    ta = threading.Thread(target=agent_iterating, daemon=True)
    tb = threading.Thread(target=agent_polling, daemon=True)
    ta.start()
    tb.start()
    try:
        # the group settles: each member holds some partitions, disjoint, all 4 covered
        def settled():
            pa, pb = a.assignment(), b.assignment()
            return bool(pa) and bool(pb) and not (pa & pb) and len(pa | pb) == 4

        assert wait_until(settled, 30), (a.assignment(), b.assignment())
        second = [make_prediction(i) for i in range(60, 160)]
        publish(bootstrap, kafka_topic, second, prod)
        expected = sorted(p["id"] for p in first + second)
        assert wait_until(lambda: len(got_a) + len(got_b) >= len(expected), 30)
        time.sleep(0.5)  # any duplicate would arrive now
        assert ids(got_a + got_b) == expected  # every prediction exactly once
        pa, pb = a.assignment(), b.assignment()
        assert pa and pb and not (pa & pb)
        # after the group settled, each member only got records of its own partitions
        late_a = {(p.topic, p.partition) for p in got_a if int(p.id.rsplit("-", 1)[1]) >= 60}
        late_b = {(p.topic, p.partition) for p in got_b if int(p.id.rsplit("-", 1)[1]) >= 60}
        assert late_a <= pa and late_b <= pb
        assert late_a and late_b
        assert all(p.topic == kafka_topic and p.offset is not None for p in got_a + got_b)
        assert not errors
    finally:
        done.set()
        a.close()  # from another thread than the one iterating: the iterator ends
        ta.join(10)
        tb.join(10)
        prod.close()
    assert not ta.is_alive() and not tb.is_alive()
    assert a.closed and b.closed
    assert a.stats.delivered == len(got_a) and b.stats.delivered == len(got_b)


def test_a_member_joining_later_takes_over_without_duplicates(kafka_broker, kafka_topic):
    """A reads alone and never calls commit(); when B joins, A commits what it handed out
    before giving partitions up (rebalance listener), so B does not see them again."""
    bootstrap = kafka_broker.bootstrap
    prod = producer(bootstrap)
    first = [make_prediction(i) for i in range(40)]
    publish(bootstrap, kafka_topic, first, prod)
    subs = {"a": sub_for(kafka_broker, kafka_topic, group_id="late")}
    got: dict[str, list] = {"a": [], "b": []}
    done = threading.Event()

    def agent(name):
        sub = subs[name]
        try:
            while not done.is_set():
                got[name].extend(sub.poll(timeout_ms=200))
        finally:
            sub.close()

    threads = [threading.Thread(target=agent, args=("a",), daemon=True)]
    threads[0].start()
    try:
        assert wait_until(lambda: len(got["a"]) >= len(first), 20)
        assert subs["a"].stats.commits == 0
        subs["b"] = sub_for(kafka_broker, kafka_topic, group_id="late")
        threads.append(threading.Thread(target=agent, args=("b",), daemon=True))
        threads[1].start()
        assert wait_until(lambda: subs["a"].assignment() and subs["b"].assignment()
                          and len(subs["a"].assignment() | subs["b"].assignment()) == 4, 30)
        assert subs["a"].stats.commits >= 1  # committed on revocation
        second = [make_prediction(i) for i in range(40, 100)]
        publish(bootstrap, kafka_topic, second, prod)
        total = len(first) + len(second)
        assert wait_until(lambda: len(got["a"]) + len(got["b"]) >= total, 30)
        time.sleep(0.5)
        assert ids(got["a"] + got["b"]) == sorted(p["id"] for p in first + second)
        assert got["b"]
    finally:
        done.set()
        for t in threads:
            t.join(10)
        prod.close()


def test_a_second_group_sees_every_prediction(kafka_broker, kafka_topic):
    sent = [make_prediction(i) for i in range(80)]
    publish(kafka_broker.bootstrap, kafka_topic, sent)
    g1 = sub_for(kafka_broker, kafka_topic, group_id="g1")
    g2 = sub_for(kafka_broker, kafka_topic, group_id="g2")
    got1: list[Prediction] = []
    got2: list[Prediction] = []
    # one thread polls both with short timeouts, like an agent that works between polls:
    # each still joins (librdkafka joins in its own thread, whatever the caller does)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(got1) < len(sent) or len(got2) < len(sent)):
            got1.extend(g1.poll(timeout_ms=100))
            g1.commit()
            got2.extend(g2.poll(timeout_ms=100))
        got1.extend(g1.poll(timeout_ms=200))
        got2.extend(g2.poll(timeout_ms=200))
    finally:
        g1.close()
        g2.close()
    expected = sorted(p["id"] for p in sent)
    assert ids(got1) == expected
    assert ids(got2) == expected


def test_a_restarted_agent_resumes_at_the_committed_offset(kafka_broker, kafka_topic):
    sent = [make_prediction(i) for i in range(60)]
    publish(kafka_broker.bootstrap, kafka_topic, sent)
    all_ids = sorted(p["id"] for p in sent)

    first = sub_for(kafka_broker, kafka_topic, group_id="agent")
    it = iter(first)
    committed = [next(it) for _ in range(20)]
    assert first.commit()
    handed_not_committed = [next(it) for _ in range(5)]
    first.close()  # auto_commit=False: close does not commit the last 5
    assert first.stats.commits >= 1

    second = sub_for(kafka_broker, kafka_topic, group_id="agent", start="committed")
    rest = collect(second, len(sent) - 20)
    second.close()
    assert ids(rest) == sorted(set(all_ids) - {p.id for p in committed})  # exactly the rest, once
    assert {p.id for p in handed_not_committed} <= {p.id for p in rest}  # uncommitted: delivered again

    # "earliest" ignores the committed offsets: the whole topic again
    third = sub_for(kafka_broker, kafka_topic, group_id="agent", start="earliest")
    again = collect(third, len(sent))
    third.close()
    assert ids(again) == all_ids


# ---------------------------------------------------------------- bad messages
def test_poison_messages_do_not_stop_the_stream(kafka_broker, kafka_topic, caplog):
    dlq = kafka_topic + ".dlq"
    valid = [make_prediction(i, nkeys=1) for i in range(30)]  # one key: one partition, in order
    v2 = orjson.dumps(make_prediction(100, schema="ids.prediction.v2"))
    missing = make_prediction(101)
    del missing["risk_score"]
    poison = [b"{not json", v2, orjson.dumps(missing), v2]
    stream = valid[:10] + [poison[0]] + valid[10:20] + [poison[1], poison[2], poison[3]] + valid[20:]
    publish(kafka_broker.bootstrap, kafka_topic, stream)

    caplog.set_level(logging.WARNING, logger="ids_daemon.consumers.subscribe")
    with sub_for(kafka_broker, kafka_topic, dead_letter_topic=dlq) as sub:
        got = collect(sub, len(valid))
        offsets = [p.offset for p in got]
    assert [p.id for p in got] == [p["id"] for p in valid]  # all valid ones, in order
    assert offsets == sorted(offsets)
    st = sub.stats
    assert (st.malformed, st.unknown_schema) == (2, 2)
    assert st.received == len(stream) and st.delivered == len(valid)
    assert st.dead_lettered == 4 and st.dead_letter_failed == 0
    v2_lines = [r for r in caplog.records if "ids.prediction.v2" in r.getMessage()]
    assert len(v2_lines) == 1  # one line per unknown version, not per message

    dead = read_topic(kafka_broker.bootstrap, dlq, 4, timeout=20, idle=1.0)
    assert [r.value for r in dead] == poison
    h = [dict(r.headers) for r in dead]
    assert [x["dlq.reason"] for x in h] == [b"malformed", b"unknown_schema", b"malformed", b"unknown_schema"]
    assert all(x["dlq.topic"] == kafka_topic.encode() and x["schema"] == b"ids.prediction.v1" for x in h)
    assert b"not JSON" in h[0]["dlq.error"] and b"risk_score" in h[2]["dlq.error"]
    src_offsets = [int(x["dlq.offset"]) for x in h]
    assert src_offsets == [10, 21, 22, 23]
    assert len({x["dlq.partition"] for x in h}) == 1


def test_poison_without_a_dead_letter_topic_is_counted_and_skipped(kafka_broker, kafka_topic):
    stream = [make_prediction(0), b"", b"[1,2]", orjson.dumps({"schema": "ids.prediction.v9"}), make_prediction(1)]
    publish(kafka_broker.bootstrap, kafka_topic, stream)
    with sub_for(kafka_broker, kafka_topic) as sub:
        got = collect(sub, 2)
    assert ids(got) == ["gw-1-run1-0", "gw-1-run1-1"]
    assert (sub.stats.malformed, sub.stats.unknown_schema) == (2, 1)


# ---------------------------------------------------------------- filters and start
def test_filters(kafka_broker, kafka_topic):
    sent = [make_prediction(i, sensor="gw-1" if i % 3 else "gw-2") for i in range(100)]
    publish(kafka_broker.bootstrap, kafka_topic, sent)

    def check(expect, **filters):
        want = sorted(p["id"] for p in sent if expect(p))
        with sub_for(kafka_broker, kafka_topic, **filters) as sub:
            got = collect(sub, len(want), idle=0.5)
        assert ids(got) == want, filters
        assert sub.stats.filtered == len(sent) - len(want)
        assert sub.stats.received == len(sent)

    rank = {"low": 0, "medium": 1, "high": 2, "critical": 3}
    check(lambda p: rank[p["severity"]] >= 2, min_severity="high")
    check(lambda p: p["family"] in {"DDoS", "Mirai"}, families={"DDoS", "Mirai"})
    check(lambda p: p["is_attack"], attacks_only=True)
    check(lambda p: p["risk_score"] >= 0.75 and p["sensor"] == "gw-2", min_risk=0.75, sensors={"gw-2"})


def test_start_at_a_time_skips_older_records(kafka_broker, kafka_topic):
    bootstrap = kafka_broker.bootstrap
    prod = producer(bootstrap)
    old = publish(bootstrap, kafka_topic, [make_prediction(i) for i in range(40)], prod)
    time.sleep(0.1)
    t = time.time()
    time.sleep(0.1)
    new = [make_prediction(i) for i in range(40, 90)]
    publish(bootstrap, kafka_topic, new, prod)
    prod.close()
    for start in (t, datetime.fromtimestamp(t)):  # offsets_for_times: nothing older is fetched
        with sub_for(kafka_broker, kafka_topic, start=start) as sub:
            got = collect(sub, len(new))
        assert ids(got) == sorted(p["id"] for p in new), start
        assert sub.stats.before_start == 0
    # the scan fallback (a broker without ListOffsets by time): older records skipped client-side
    with sub_for(kafka_broker, kafka_topic, start=t, use_offsets_for_times=False) as sub:
        got = collect(sub, len(new))
    assert ids(got) == sorted(p["id"] for p in new)
    assert sub.stats.before_start == len(old)
    # with a group, the same on its first assignment
    with sub_for(kafka_broker, kafka_topic, group_id="from-t", start=t) as sub:
        got = collect(sub, len(new))
    assert ids(got) == sorted(p["id"] for p in new)


# ---------------------------------------------------------------- the command
def test_run_subscribe_prints_exactly_count_json_lines_as_published(kafka_broker, kafka_topic, capsys):
    sent = publish(kafka_broker.bootstrap, kafka_topic, [make_prediction(i) for i in range(50)])
    rc = run_subscribe(kafka_broker.bootstrap, kafka_topic, None, "earliest", 12, True, None,
                       consumer_config=FAST, poll_timeout_ms=200)
    assert rc == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 12 and out.endswith("\n")
    assert len(set(lines)) == 12
    assert {ln.encode() for ln in lines} <= set(sent)  # byte for byte what was produced

    # pretty lines, in a group: what was printed (3 predictions) is committed at the end
    rc = run_subscribe(kafka_broker.bootstrap, kafka_topic, "cli", "committed", 3, False, "critical",
                       consumer_config=FAST, poll_timeout_ms=200)
    cap = capsys.readouterr()
    pretty = cap.out.splitlines()
    assert rc == 0 and len(pretty) == 3
    by_key = {p["flow"]["key"] for p in map(json.loads, sent) if p["severity"] == "critical"}
    for ln in pretty:
        assert " critical " in ln and " gw-1 " in ln and any(ln.endswith(" " + k) for k in by_key)
    assert "subscribe: 3 predictions" in cap.err
    critical = [p for p in map(json.loads, sent) if p["severity"] == "critical"]
    with sub_for(kafka_broker, kafka_topic, group_id="cli", min_severity="critical") as sub:
        rest = collect(sub, len(critical) - 3)
    assert len(rest) == len(critical) - 3  # the rest, and nothing printed before
    assert not {format_prediction(p) for p in rest} & set(pretty)


def test_run_subscribe_stops_cleanly_on_sigint(kafka_broker, kafka_topic, capsys):
    import os
    import signal

    publish(kafka_broker.bootstrap, kafka_topic, [make_prediction(i) for i in range(5)])
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        rc = run_subscribe(kafka_broker.bootstrap, kafka_topic, None, "earliest", None, True, None,
                           consumer_config=FAST, poll_timeout_ms=200)
    finally:
        timer.cancel()
    assert rc == 0 and time.monotonic() - t0 < 10
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------- no broker needed
def test_parse_start():
    assert parse_start("committed") == "committed"
    assert parse_start("EARLIEST") == parse_start("beginning") == "earliest"
    assert parse_start("1714564800") == 1714564800.0
    assert parse_start("2024-05-01T12:00:00Z") == 1714564800.0
    assert parse_start("-15m", now=1000.0) == 100.0
    assert parse_start(datetime.fromtimestamp(1714564800.5)) == 1714564800.5
    for bad in ("latest", "yesterday", "-5x", "1714564800000", -1, True, None):
        with pytest.raises(SubscribeError):
            parse_start(bad)


def test_bad_arguments_are_one_line_errors():
    for kw in ({"min_severity": "huge"}, {"min_risk": 1.5}, {"topic": "bad topic"}, {"group_id": ""},
               {"dead_letter_topic": "t"}, {"consumer_config": {"enable.auto.commit": True}},
               {"consumer_config": {"session_timeout_ms": 6000}},
               {"max_records": 0}, {"start": "soon"}):
        args = {"topic": "t", **kw}
        with pytest.raises(SubscribeError):
            PredictionSubscriber("127.0.0.1:1", **args)


def test_an_unreachable_broker_is_a_one_line_error():
    from ids_daemon.devbroker import free_port

    t0 = time.monotonic()
    with pytest.raises(SubscribeError, match="no Kafka broker answers"):
        run_subscribe(f"127.0.0.1:{free_port()}", "t", connect_timeout_s=1.0)
    assert time.monotonic() - t0 < 10


def test_format_prediction():
    p = Prediction.from_dict(make_prediction(3))
    line = format_prediction(p)
    assert line.startswith("2023-11-14T22:13:23.000Z")
    assert "DDoS-SYN_Flood" in line and "critical" in line and p.flow.key in line and "0.81" in line


def test_a_group_member_says_what_it_waits_for(kafka_broker, kafka_topic, caplog):
    """issue 9: "joining group X", then "assigned N partitions", at info level."""
    publish(kafka_broker.bootstrap, kafka_topic, [make_prediction(i) for i in range(8)])
    caplog.set_level(logging.INFO, logger="ids_daemon.consumers.subscribe")
    with sub_for(kafka_broker, kafka_topic, group_id="says") as sub:
        got = collect(sub, 8)
    assert ids(got) == sorted(f"gw-1-run1-{i}" for i in range(8))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    join = next(i for i, m in enumerate(lines) if m.startswith("joining group says"))
    assigned = next(i for i, m in enumerate(lines) if "group says: assigned" in m)
    assert join < assigned and "assigned 4 partitions" in lines[assigned]


def test_the_subscribe_command_takes_bootstrap_and_security_from_the_config(kafka_broker, kafka_topic, tmp_path):
    """`subscribe` and `alerts` share the producer's kafka settings (bootstrap, TLS/SASL)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "ids-daemon")
    sent = publish(kafka_broker.bootstrap, kafka_topic, [make_prediction(i) for i in range(6)])
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"kafka:\n  bootstrap: {kafka_broker.bootstrap}\n  security:\n    protocol: plaintext\n")
    p = subprocess.run([exe, "subscribe", "--config", str(cfg), "--topic", kafka_topic, "--from", "earliest",
                        "--count", "6", "--json"], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == sorted(v.decode() for v in sent)
    assert "assigned 4 partitions" in p.stderr  # says what it reads (info level)
    # a SASL protocol without its settings: one line naming the key, before any connection
    cfg.write_text(f"kafka:\n  bootstrap: {kafka_broker.bootstrap}\n  security:\n    protocol: sasl_ssl\n")
    for cmd in ("subscribe", "alerts"):
        p = subprocess.run([exe, cmd, "--config", str(cfg), "--topic", kafka_topic], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2 and "kafka.security" in p.stderr and "sasl_mechanism" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_security_settings_become_librdkafka_properties():
    from ids_daemon.config import KafkaSecurity

    s = KafkaSecurity(protocol="sasl_ssl", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p",
                      ssl_ca="/etc/ca.pem")
    assert s.librdkafka() == {"security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
                              "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/etc/ca.pem",
                              "ssl.endpoint.identification.algorithm": "https"}
    with pytest.raises(ValueError, match="ssl_cert and ssl_key"):
        KafkaSecurity(protocol="ssl", ssl_cert="/c.pem")


def test_json_without_filters_checks_the_schema_only_and_still_skips_poison(kafka_broker, kafka_topic, capsys):
    """`subscribe --json` with no filter prints records as published after a JSON + schema
    check (the typed decode is what limits its rate); poison is still skipped and counted."""
    good = [make_prediction(i, nkeys=1) for i in range(5)]
    minor = dict(make_prediction(5, nkeys=1), schema="ids.prediction.v1.7")
    stream = good[:2] + [b"{not json", orjson.dumps(make_prediction(9, nkeys=1, schema="ids.prediction.v2")),
                         b"[1]"] + good[2:] + [minor]
    sent = publish(kafka_broker.bootstrap, kafka_topic, stream)
    rc = run_subscribe(kafka_broker.bootstrap, kafka_topic, None, "earliest", 6, True, None,
                       consumer_config=FAST, poll_timeout_ms=200)
    cap = capsys.readouterr()
    assert rc == 0
    assert cap.out.splitlines() == [v.decode() for v in sent[:2] + sent[5:]]  # in order, byte for byte
    assert "2 malformed" in cap.err and "1 of an unknown schema" in cap.err
    with pytest.raises(SubscribeError, match="filters need"):
        PredictionSubscriber("127.0.0.1:1", "t", check="schema", min_severity="high")
