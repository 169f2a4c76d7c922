"""Prediction fields that join with other tools (ISO 8601 timestamp, capture interface,
Community ID of the flow) and the typed decoder's checks of what it reads (types are
checked, never coerced; `time` must be believable)."""

from __future__ import annotations

import copy
import json
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from ids_daemon.predictions import MalformedPrediction, Prediction, json_schema
from ids_daemon.predictions.community_id import community_id
from tests.paths import PCAPS

from .helpers import EXE  # noqa: E402
PROTO = {"tcp": 6, "udp": 17, "sctp": 132}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def check_join_fields(preds: list[dict], interface: str | None) -> int:
    """Every prediction: schema-valid, its timestamp is its time, its interface is
    ``interface``, a flow's Community ID is the one of its 5-tuple, others have none.
    Returns the number of flow predictions."""
    schema = json_schema()
    flows = 0
    for m in preds:
        jsonschema.validate(m, schema)
        ts = datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))
        assert m["timestamp"].endswith("Z") and abs(ts.timestamp() - m["time"]) < 1e-5
        assert m["interface"] == interface
        f = m["flow"]
        if f["kind"] == "flow":
            flows += 1
            assert f["community_id"] == community_id(f["src_ip"], f["dst_ip"], PROTO[f["protocol"]], f["src_port"],
                                                     f["dst_port"])
            # the reverse direction names the same flow
            assert f["community_id"] == community_id(f["dst_ip"], f["src_ip"], PROTO[f["protocol"]], f["dst_port"],
                                                     f["src_port"])
        else:
            assert f["community_id"] is None
        p = Prediction.from_dict(m)
        assert (p.timestamp, p.interface, p.flow.community_id) == (m["timestamp"], interface, f["community_id"])
    return flows


def test_replay_predictions_carry_timestamp_community_id_and_no_interface(tmp_path: Path) -> None:
    """A file was seen by no interface: `interface` is null even when the config names one."""
    out = tmp_path / "p.jsonl"
    cfg = tmp_path / "config.yml"
    cfg.write_text("capture:\n  interface: eth9\n")
    p = subprocess.run([EXE, "replay", "-c", str(cfg), "-r", str(PCAPS / "modbus.pcap"), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    preds = read_jsonl(out)
    assert check_join_fields(preds, None) >= 5
    assert any(m["flow"]["kind"] == "pool" for m in preds)
    # a value Zeek/Suricata would log for this modbus session, computed independently of the encoder's cache
    assert {m["flow"]["community_id"] for m in preds if m["flow"]["kind"] == "flow"} >= {
        community_id("192.168.110.131", "192.168.110.138", 6, 2074, 502)}


def test_live_predictions_name_the_interface_given_with_dash_i(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, Ether, sendp

    port = random.randint(30000, 60000)
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen([EXE, "run", "-i", "lo", "--filter", f"tcp and port {port}", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on lo" in proc.stderr.readline()
        assert "classifying" in proc.stderr.readline()
        # one long TCP flow (its own windows) and one-packet flows (pooled)
        pkts = [Ether() / IP(src="10.77.0.1", dst="127.0.0.1") / TCP(sport=40000, dport=port, flags="PA")
                for _ in range(60)]
        pkts += [Ether() / IP(src=f"10.78.0.{i + 1}", dst="127.0.0.1") / TCP(sport=1024 + i, dport=port, flags="S")
                 for i in range(20)]
        sendp(pkts, iface="lo", verbose=False)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    preds = read_jsonl(out)
    assert check_join_fields(preds, "lo") >= 1
    assert community_id("10.77.0.1", "127.0.0.1", 6, 40000, port) in {m["flow"]["community_id"] for m in preds}


# --- the typed decoder ------------------------------------------------------------------

GOOD = {
    "schema": "ids.prediction.v1", "id": "gw-1-5", "time": 1_700_000_000.0, "sensor": "gw",
    "predicted_attack": "DDoS-SYN_Flood", "family": "DDoS", "is_attack": True, "p_attack": 0.99,
    "confidence": 0.97, "risk_score": 0.9, "severity": "critical",
    "probabilities": [{"class": "DDoS-SYN_Flood", "p": 0.97}],
    "flow": {"key": "tcp 10.0.0.1:5000-10.0.0.2:80", "kind": "flow", "protocol": "tcp", "src_ip": "10.0.0.1",
             "src_port": 5000, "dst_ip": "10.0.0.2", "dst_port": 80},
    "window": {"first_ts": 1.0, "last_ts": 2.0, "packets": 10, "close_reason": "full", "history": 3},
    "model": {"name": "m", "version": "1"},
}


def with_(path: str, value) -> dict:
    d = copy.deepcopy(GOOD)
    *head, last = path.split(".")
    obj = d
    for k in head:
        obj = obj[k] if not k.isdigit() else obj[int(k)]
    obj[last] = value
    return d


def test_a_message_of_before_the_new_fields_still_decodes() -> None:
    p = Prediction.from_dict(GOOD)
    assert (p.timestamp, p.interface, p.flow.community_id) == (None, None, None)
    assert p.is_attack is True and p.flow.dst_port == 80


@pytest.mark.parametrize("path,value,why", [
    ("is_attack", "false", "is_attack: expected true or false"),  # issue 11 defect 11: decoded as True
    ("is_attack", 0, "is_attack: expected true or false"),
    ("id", 17, "id: expected a string"),
    ("sensor", ["gw"], "sensor: expected a string"),
    ("confidence", "0.9", "confidence: expected a number"),
    ("risk_score", True, "risk_score: expected a number"),
    ("probabilities.0.p", "1", "p: expected a number"),
    ("probabilities", [], "probabilities"),
    ("flow.src_port", "5000", "flow.src_port: expected an integer"),
    ("flow.dst_port", 70000, "flow.dst_port: 70000 outside"),
    ("flow.dst_ip", 167772162, "flow.dst_ip: expected a string"),
    ("flow.community_id", 5, "flow.community_id: expected a string"),
    ("window.packets", 1.5, "window.packets: expected an integer"),
    ("window.packets", 0, "window.packets: 0 outside"),
    ("window.first_ts", "1.0", "window.first_ts: expected a number"),
    ("model.version", 1, "model.version: expected a string"),
    ("interface", 3, "interface: expected a string"),
    ("severity", "severe", "unknown severity"),
])
def test_mistyped_fields_are_rejected_not_coerced(path: str, value, why: str) -> None:
    with pytest.raises(MalformedPrediction, match=why):
        Prediction.from_dict(with_(path, value))


# ids fixed: a parameter computed from the clock must name the test the same way in every
# process (pytest-xdist workers collect separately and must agree)
@pytest.mark.parametrize("t", [1e300, 1e18, time.time() + 2 * 86400, -1.0, float("inf"), float("nan")],
                         ids=["1e300", "1e18", "two-days-ahead", "-1", "inf", "nan"])
def test_an_unbelievable_time_is_rejected(t: float) -> None:
    """Issue 11 defect 3: one record with time 1e300 set the alert engine's clock."""
    with pytest.raises(MalformedPrediction, match="time"):
        Prediction.from_dict(with_("time", t))


def test_a_huge_time_in_json_is_rejected() -> None:
    raw = json.dumps(with_("time", 0.0)).replace('"time": 0.0', '"time": 1e300')
    with pytest.raises(MalformedPrediction, match="time"):
        Prediction.from_json(raw)


def test_times_a_reader_accepts() -> None:
    """A backlog is old, and a sensor's clock may run a little ahead of the reader's."""
    for t in (0.0, 1_500_000_000.0, time.time(), time.time() + 3600):
        assert Prediction.from_dict(with_("time", t)).time == t
