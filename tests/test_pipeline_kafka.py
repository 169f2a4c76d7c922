"""Replay into a real Kafka-protocol broker (Tansu) and read every prediction back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from kafka import KafkaConsumer

from ids_daemon.capture.pcap import PcapSource
from ids_daemon.predictions import json_schema
from trainer.synth import generate_file

from .test_pipeline import windows_of

EXE = str(Path(sys.executable).parent / "ids-daemon")


def consume_all(bootstrap: str, topic: str, idle_ms: int = 4000) -> list:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                      consumer_timeout_ms=idle_ms, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    try:
        return list(c)
    finally:
        c.close()


def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"kafka:\n  spool_dir: {tmp_path / 'spool'}\n  retry_interval_s: 0.5\n")
    return cfg


def test_replay_into_the_broker_every_prediction_read_back(kafka_broker, kafka_topic: str, tmp_path: Path) -> None:
    pcap = tmp_path / "scan.pcap"
    generate_file(pcap, "Recon-PortScan", 0, 3000, seed=2)
    out = tmp_path / "p.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "--sink", "kafka", "--kafka-bootstrap", kafka_broker.bootstrap,
                        "--topic", kafka_topic, "--sink", "jsonl", "-o", str(out), "--config", str(config(tmp_path))],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    records = consume_all(kafka_broker.bootstrap, kafka_topic)
    # every prediction written to JSON lines (the model's, one per window it classifies,
    # and the detectors' findings) was read back from the topic
    written = out.read_text().splitlines()
    assert len(records) == len(written) > 20
    model_preds = [x for x in written if '"detector:' not in x]
    assert len(model_preds) == int(p.stderr.split(" windows classified,")[0].split()[-1]) <= windows_of(pcap)
    schema = json_schema()
    ids = set()
    for r in records:
        msg = json.loads(r.value)
        jsonschema.validate(msg, schema)
        assert r.key.decode() == msg["flow"]["key"]  # the record key is the flow key
        assert dict(r.headers)["schema"] == b"ids.prediction.v1"
        ids.add(msg["id"])
    assert len(ids) == len(written)  # ids are unique across the model and the detectors
    assert ids == {json.loads(x)["id"] for x in out.read_text().splitlines()}  # both sinks got the same
    flagged = [json.loads(r.value) for r in records if json.loads(r.value)["is_attack"]]
    assert len(flagged) / len(records) > 0.8  # the scan is flagged


def test_broker_outage_mid_replay_loses_nothing(kafka_broker, kafka_topic: str, tmp_path: Path) -> None:
    """Stop the broker for several seconds mid-replay: everything predicted reaches the
    topic at least once (what a consumer read before the stop, plus what the restarted,
    empty broker holds afterwards: the test broker keeps nothing across a restart)."""
    pcap = tmp_path / "benign.pcap"
    generate_file(pcap, "BenignTraffic", 0, 2500, seed=9)
    out = tmp_path / "p.jsonl"
    seen_before: set[str] = set()
    stop_reading = threading.Event()

    def reader() -> None:
        c = KafkaConsumer(kafka_topic, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                          group_id=None, consumer_timeout_ms=500, session_timeout_ms=6000,
                          heartbeat_interval_ms=1000)
        try:
            while not stop_reading.is_set():
                for r in c:
                    seen_before.add(json.loads(r.value)["id"])
                    if stop_reading.is_set():
                        break
        except Exception:  # the broker goes away under it: that is the point
            pass
        finally:
            try:
                c.close()
            except Exception:
                pass

    # paced so that the replay lasts about 20 s whatever the generated site's rate: the
    # outage begins after 3 s and lasts 4
    with PcapSource(pcap) as src:
        ts = np.concatenate([b.ts for b in iter(src.next_batch, None)])
    speed = f"{max((ts[-1] - ts[0]) / 20.0, 0.05):.3f}"
    proc = subprocess.Popen([EXE, "replay", "-r", str(pcap), "--speed", speed, "--sink", "kafka", "--kafka-bootstrap",
                             kafka_broker.bootstrap, "--topic", kafka_topic, "--sink", "jsonl", "-o", str(out),
                             "--config", str(config(tmp_path))], stderr=subprocess.PIPE, text=True)
    t = threading.Thread(target=reader, daemon=True)
    try:
        assert "classifying" in proc.stderr.readline()
        t.start()
        time.sleep(3)
        # Freeze the daemon, let the reader catch up with everything the broker
        # acknowledged, then take the broker away: the test broker forgets on restart,
        # so what it held must have been read first for the count to prove anything.
        proc.send_signal(signal.SIGSTOP)
        quiet_since, last = time.monotonic(), -1
        while time.monotonic() - quiet_since < 1.5:
            if len(seen_before) != last:
                last, quiet_since = len(seen_before), time.monotonic()
            time.sleep(0.1)
        stop_reading.set()
        t.join(10)
        kafka_broker.stop()
        proc.send_signal(signal.SIGCONT)
        time.sleep(4)  # predictions made now go to the spool
        kafka_broker.start()
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        if not kafka_broker.running:
            kafka_broker.start()
    assert proc.returncode == 0, err
    produced = {json.loads(x)["id"] for x in out.read_text().splitlines()}
    after = {json.loads(r.value)["id"] for r in consume_all(kafka_broker.bootstrap, kafka_topic)}
    assert seen_before, "the consumer read nothing before the outage"
    assert produced - seen_before, "nothing was predicted after the outage began"
    missing = produced - (seen_before | after)
    assert not missing, f"{len(missing)} of {len(produced)} predictions never reached the topic"
