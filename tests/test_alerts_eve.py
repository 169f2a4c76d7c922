"""The ``eve`` alert output: Suricata EVE ``alert`` records, checked against Suricata's
published EVE JSON Schema (../shared/data/eve/schema.json), from real predictions of the
bundled sample and from hand-made ones (field values, nulls, rotation, configuration)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from ids_daemon.config import load_config
from ids_daemon.consumers.alerts import AlertConfig, AlertEngine, EveOutput, build_outputs, eve_record
from ids_daemon.consumers.alerts.eve import SID_OFFSETS, SID_RATE_LIMIT, flow_id, signature_id
from ids_daemon.errors import ConfigError
from ids_daemon.model.classes import BENIGN, CLASSES_34
from ids_daemon.predictions.community_id import community_id
from ids_daemon.predictions.decode import Prediction

from .helpers import EXE, replay_sample
from .paths import SHARED_DATA

EVE_SCHEMA = "eve/schema.json"
needs_eve_schema = pytest.mark.shared_data(EVE_SCHEMA)  # tests/conftest.py: skip in a clean clone
EVE_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+0000$")


def _validator():
    import jsonschema

    schema = json.loads((SHARED_DATA / EVE_SCHEMA).read_text())
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, rec: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(rec)]


_N = [0]


def pred(*, cls: str = "DDoS-SYN_Flood", family: str = "DDoS", severity: str = "critical", kind: str = "flow",
         protocol: str = "tcp", src_ip: str | None = "10.0.0.1", src_port: int | None = 40000,
         dst_ip: str | None = "10.0.0.2", dst_port: int | None = 80, cid: str | None = "keep",
         key: str | None = None, model: str = "ids-lstm", t: float | None = None, last_ts: float = 1_700_000_010.25,
         interface: str | None = None, p_attack: float = 0.97, pcap_file: str | None = None) -> Prediction:
    _N[0] += 1
    if key is None:
        key = f"{protocol} {src_ip}:{src_port}-{dst_ip}:{dst_port}"
    if cid == "keep":
        cid = (community_id(src_ip, dst_ip, {"tcp": 6, "udp": 17}[protocol], src_port, dst_port)
               if kind == "flow" and protocol in ("tcp", "udp") else None)
    d = {
        "schema": "ids.prediction.v1", "id": f"s-{_N[0]}", "time": t if t is not None else time.time() - 60,
        "sensor": "sensor-a", "interface": interface, "predicted_attack": cls, "family": family, "is_attack": True,
        "p_attack": p_attack, "confidence": 0.9, "risk_score": 0.8, "severity": severity,
        "probabilities": [{"class": cls, "p": 0.9}],
        "flow": {"key": key, "kind": kind, "protocol": protocol, "src_ip": src_ip, "src_port": src_port,
                 "dst_ip": dst_ip, "dst_port": dst_port, "community_id": cid},
        "window": {"first_ts": last_ts - 0.5, "last_ts": last_ts, "packets": 10, "close_reason": "full"},
        "model": {"name": model, "version": "4"},
    }
    if pcap_file is not None:
        d["pcap_file"] = pcap_file
    return Prediction.from_dict(d)


def eve_of(*preds: Prediction, **cfg) -> list[dict]:
    """The EVE records the engine makes of ``preds`` (every alert, closed at the end)."""
    eng = AlertEngine(AlertConfig(min_severity="low", **cfg), outputs=[])
    alerts = []
    for p in preds:
        alerts += eng.process(p)
    alerts += eng.close()
    return [eve_record(a) for a in alerts]


# ---------------------------------------------------------------------------------------
# (1) real predictions: replay the bundled sample, alerts --input --eve, validate every line


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("eve")
    preds, predictions = replay_sample(d)
    cfg = d / "c.yml"
    alerts_jsonl, eve = d / "alerts.jsonl", d / "eve.json"
    cfg.write_text(f"alerts:\n  min_severity: low\n  outputs:\n    - {{type: jsonl, path: {alerts_jsonl}}}\n")
    r = subprocess.run([EXE, "alerts", "--input", str(preds), "--config", str(cfg), "--eve", str(eve)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {"predictions": predictions,
            "alerts": [json.loads(x) for x in alerts_jsonl.read_text().splitlines()],
            "eve": [json.loads(x) for x in eve.read_text().splitlines()], "stderr": r.stderr}


@needs_eve_schema
def test_eve_records_of_the_replayed_sample_validate_against_suricatas_schema(replayed) -> None:
    v = _validator()
    eve, alerts = replayed["eve"], replayed["alerts"]
    attacks = [p for p in replayed["predictions"] if p["is_attack"]]
    assert attacks, "the sample has attacks"
    # one EVE record per alert, the same alerts in the same order
    assert len(eve) == len(alerts) >= 3
    assert [e["alert"]["metadata"]["ids_alert_id"][0] for e in eve] == [a["id"] for a in alerts]
    for rec in eve:
        assert _errors(v, rec) == [], rec
        assert rec["event_type"] == "alert" and rec["alert"]["action"] == "allowed"
        assert EVE_TS.match(rec["timestamp"])
    by_class = {e["alert"]["metadata"]["ids_class"][0]: e for e in eve}
    assert {p["predicted_attack"] for p in attacks} <= set(by_class)
    # the crowd flood: no single source, no ports - left out, not null
    syn = by_class["DDoS-SYN_Flood"]
    assert syn["dest_ip"] == "192.168.39.65" and syn["proto"] == "TCP"
    assert not {"src_ip", "src_port", "dest_port", "community_id"} & set(syn)
    assert syn["alert"]["metadata"]["detector"] == ["flood"] and syn["alert"]["category"] == "DDoS"
    assert syn["alert"]["severity"] == 1 and syn["alert"]["signature_id"] == signature_id("DDoS-SYN_Flood")
    assert by_class["DDoS-ICMP_Flood"]["proto"] == "ICMP"
    # the port scan has a source
    scan = by_class["Recon-PortScan"]
    assert scan["src_ip"] == "192.168.189.58" and scan["dest_ip"] == "192.168.189.103"
    assert scan["alert"]["severity"] == 2  # medium
    # EVE's timestamp is the packet time of the finding (the pcap's), not the replay's wall clock
    finding = next(p for p in attacks if p["predicted_attack"] == "DDoS-SYN_Flood")
    assert syn["timestamp"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(finding["window"]["last_ts"])))


@needs_eve_schema
def test_a_real_flow_prediction_keeps_its_community_id_and_validates(replayed) -> None:
    """A real 5-tuple prediction of the sample (benign there, made an alert here): the EVE
    record carries its endpoints, ports, Community ID and a flow_id."""
    raw = next(p for p in replayed["predictions"] if p["flow"]["kind"] == "flow" and p["flow"]["protocol"] == "tcp"
               and p["flow"].get("community_id"))
    raw = {**raw, "is_attack": True, "predicted_attack": "DDoS-TCP_Flood", "family": "DDoS", "severity": "high",
           "time": time.time() - 5}
    (rec,) = eve_of(Prediction.from_dict(raw))
    assert _errors(_validator(), rec) == []
    f = raw["flow"]
    assert rec["community_id"] == f["community_id"]
    assert (rec["src_ip"], rec["src_port"], rec["dest_ip"], rec["dest_port"]) == \
        (f["src_ip"], f["src_port"], f["dst_ip"], f["dst_port"])
    assert rec["proto"] == "TCP" and rec["flow_id"] == flow_id(f["key"])
    assert rec["alert"]["metadata"]["model"] == [raw["model"]["name"]]


# ---------------------------------------------------------------------------------------
# (2) field values


def test_timestamp_is_eves_format_and_the_packet_time() -> None:
    (rec,) = eve_of(pred(last_ts=1_796_582_888.730210))
    assert EVE_TS.match(rec["timestamp"]), rec["timestamp"]
    assert rec["timestamp"] == "2026-12-06T18:48:08.730210+0000"
    assert rec["flow"]["start"] == "2026-12-06T18:48:08.230210+0000"


@pytest.mark.parametrize("protocol,proto", [("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP"), ("icmpv6", "IPv6-ICMP"),
                                            ("47", "47")])
def test_proto_is_suricatas_spelling(protocol: str, proto: str) -> None:
    ports = protocol in ("tcp", "udp")
    (rec,) = eve_of(pred(protocol=protocol, src_port=1234 if ports else None, dst_port=53 if ports else None,
                         cid=None, kind="flow" if ports else "pool", src_ip="10.0.0.1" if ports else None))
    assert rec["proto"] == proto
    assert ("dest_port" in rec) == ports


def test_community_id_is_the_predictions_or_computed_for_a_5_tuple() -> None:
    given = pred()
    (rec,) = eve_of(given)
    assert rec["community_id"] == given.flow.community_id
    # an older message without one: computed from the 5-tuple, the same value
    (rec2,) = eve_of(pred(cid=None, dst_ip="10.0.0.9"))
    assert rec2["community_id"] == community_id("10.0.0.1", "10.0.0.9", 6, 40000, 80)
    # a pool has no 5-tuple: no community_id
    (rec3,) = eve_of(pred(kind="pool", src_ip=None, src_port=None, dst_port=None, cid=None, key="pool tcp 10.0.0.2/32"))
    assert "community_id" not in rec3


@pytest.mark.parametrize("severity,eve,named", [("critical", 1, "Critical"), ("high", 1, "Major"),
                                                ("medium", 2, "Minor"), ("low", 3, "Informational")])
def test_severity_maps_to_eves_1_high_to_3_low(severity: str, eve: int, named: str) -> None:
    (rec,) = eve_of(pred(severity=severity))
    assert rec["alert"]["severity"] == eve
    assert rec["alert"]["metadata"]["ids_severity"] == [severity]
    assert rec["alert"]["metadata"]["signature_severity"] == [named]


def test_flow_id_is_stable_per_flow_key_and_differs_between_keys() -> None:
    a1 = eve_of(pred(dst_ip="10.0.0.2"))[0]["flow_id"]
    a2 = eve_of(pred(dst_ip="10.0.0.2", last_ts=1_700_000_500.0))[0]["flow_id"]  # another run, same key
    b = eve_of(pred(dst_ip="10.0.0.3"))[0]["flow_id"]
    assert isinstance(a1, int) and 0 < a1 < 2 ** 63
    assert a1 == a2 != b
    # fixed across versions and hosts: a SIEM's stored flow_id keeps matching
    assert flow_id("tcp 10.0.0.1:40000-10.0.0.2:80") == a1
    # written the same in a fresh process (no per-process hash seed)
    code = "from ids_daemon.consumers.alerts.eve import flow_id; print(flow_id('tcp 10.0.0.1:40000-10.0.0.2:80'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == a1


def test_signature_ids_are_fixed_and_distinct_per_class() -> None:
    attacks = [c for c in CLASSES_34 if c != BENIGN]
    sids = {c: signature_id(c) for c in attacks}
    assert len(set(sids.values())) == len(attacks) == 33
    assert sids["DDoS-SYN_Flood"] == 9_100_105 and sids["Recon-PortScan"] == 9_100_403  # documented
    assert signature_id("ddos-syn_flood") == sids["DDoS-SYN_Flood"]  # any case
    assert signature_id("SomethingElse") == signature_id("SomethingElse") != signature_id("SomethingOther")
    assert set(SID_OFFSETS) >= set(attacks)
    (rec,) = eve_of(pred(cls="Recon-PortScan", family="Recon"))
    assert rec["alert"]["signature_id"] == sids["Recon-PortScan"] and rec["alert"]["gid"] == 1
    assert rec["alert"]["category"] == "Recon"
    assert rec["alert"]["signature"].startswith("IDS-DAEMON Recon-PortScan: 10.0.0.2 (ids-lstm 4, p_attack 0.97")


def test_interface_and_our_fields_ride_along() -> None:
    (rec,) = eve_of(pred(interface="eth1", p_attack=0.875))
    md = rec["alert"]["metadata"]
    assert rec["in_iface"] == "eth1" and rec["host"] == "sensor-a"
    assert md["ids_class"] == ["DDoS-SYN_Flood"] and md["ids_family"] == ["DDoS"]
    assert md["p_attack"] == ["0.8750"] and md["risk_score"] == ["0.8000"] and md["model"] == ["ids-lstm"]
    assert all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in md.values())
    (file_rec,) = eve_of(pred(interface=None))
    assert "in_iface" not in file_rec and "pcap_file" not in file_rec["alert"]["metadata"]


@needs_eve_schema
def test_the_alert_pcap_file_rides_along_and_validates() -> None:
    """Where the prediction names its alert pcap (--alert-pcap), the EVE alert does too."""
    (logged,) = eve_of(pred(pcap_file="/var/lib/ids-daemon/alert-pcap/alerts-000003.pcap"))
    assert logged["alert"]["metadata"]["pcap_file"] == ["/var/lib/ids-daemon/alert-pcap/alerts-000003.pcap"]
    assert _errors(_validator(), logged) == []


def test_the_ids_alert_v1_json_is_unchanged_by_the_eve_fields() -> None:
    eng = AlertEngine(AlertConfig(min_severity="low"), outputs=[])
    (a,) = eng.process(pred())
    assert a.prediction is not None and a.packets_last == 1_700_000_010.25
    d = a.to_dict()
    assert not {"prediction", "packets_first", "packets_last", "max_p_attack"} & set(d)
    assert d["schema"] == "ids.alert.v1" and json.loads(a.to_json())["id"] == a.id


# ---------------------------------------------------------------------------------------
# (3) no ports, no source, no flow: left out, still valid


@needs_eve_schema
def test_a_crowd_flood_finding_without_source_or_ports_validates() -> None:
    flood = pred(kind="detector", src_ip=None, src_port=None, dst_port=None, cid=None, key="flood * 192.168.39.65",
                 dst_ip="192.168.39.65", model="detector:flood")
    (rec,) = eve_of(flood)
    assert _errors(_validator(), rec) == []
    assert rec["dest_ip"] == "192.168.39.65" and rec["alert"]["target"] == {"ip": "192.168.39.65"}
    assert not {"src_ip", "src_port", "dest_port", "community_id", "in_iface"} & set(rec)
    assert "source" not in rec["alert"]
    assert "null" not in json.dumps(rec)
    assert rec["alert"]["metadata"]["detector"] == ["flood"]


@needs_eve_schema
def test_updates_and_rate_limit_summaries_validate() -> None:
    """An update (several predictions of one incident) and a rate-limit summary (many
    targets: no flow fields at all) are valid EVE records too."""
    t = time.time() - 600
    v = _validator()
    incident = [pred(dst_ip="10.0.0.2", t=t), pred(dst_ip="10.0.0.2", t=t + 1, cls="DDoS-TCP_Flood"),
                pred(dst_ip="10.0.0.2", t=t + 2, cls="DDoS-SYN_Flood")]
    new, update = eve_of(*incident)
    assert [r["alert"]["metadata"]["ids_alert_kind"] for r in (new, update)] == [["new"], ["update"]]
    assert update["alert"]["metadata"]["ids_predictions"] == ["2"]
    assert update["alert"]["metadata"]["ids_classes"] == ["DDoS-SYN_Flood=1", "DDoS-TCP_Flood=1"]
    assert update["alert"]["metadata"]["ids_incident"] == new["alert"]["metadata"]["ids_alert_id"]
    assert update["flow_id"] == new["flow_id"]  # the incident's first prediction's key
    assert _errors(v, new) == [] and _errors(v, update) == []

    recs = eve_of(*[pred(dst_ip=f"10.0.1.{i}", t=t + i) for i in range(4)], rate_limit_per_min=2)
    summary = recs[-1]
    assert summary["alert"]["metadata"]["ids_alert_kind"] == ["summary"]
    assert _errors(v, summary) == []
    assert summary["alert"]["signature_id"] == 9_100_000 + SID_RATE_LIMIT
    assert summary["alert"]["signature"].startswith("IDS-DAEMON rate limit: 2 alerts held back")
    assert not {"src_ip", "dest_ip", "flow_id", "flow"} & set(summary)


# ---------------------------------------------------------------------------------------
# the output: configuration, file, rotation


def test_eve_output_is_configured_like_the_others(tmp_path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"alerts:\n  outputs:\n    - {{type: eve, path: {tmp_path / 'eve.json'}, max_bytes: 4096}}\n")
    (out,) = build_outputs(load_config(cfg).alerts.outputs)
    assert isinstance(out, EveOutput) and out.max_bytes == 4096 and out.name == f"eve:{tmp_path / 'eve.json'}"
    cfg.write_text("alerts:\n  outputs:\n    - {type: eve, path: x.json, max_bytes: -1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "alerts.outputs.0.eve.max_bytes" in msg
    cfg.write_text("alerts:\n  outputs:\n    - {type: eve}\n")
    with pytest.raises(ConfigError, match=r"alerts\.outputs\.0\.eve\.path"):
        load_config(cfg)


def test_alerts_eve_flag_with_a_bad_value_is_one_line(tmp_path) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text("")
    r = subprocess.run([EXE, "alerts", "--input", str(preds), "--eve", ""], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("ids-daemon: error: --eve:"), r.stderr
    r = subprocess.run([EXE, "alerts", "--input", str(preds), "--eve", str(tmp_path / "no" / "dir" / "eve.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot open" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_eve_file_is_appended_and_rotated_by_size(tmp_path) -> None:
    path = tmp_path / "eve.json"
    out = EveOutput(path, max_bytes=3000, keep=2)
    eng = AlertEngine(AlertConfig(min_severity="low", rate_limit_per_min=0), outputs=[out])
    t = time.time() - 600
    for i in range(12):
        eng.process(pred(dst_ip=f"10.0.2.{i}", t=t + i))
    eng.close()
    assert out.stats.sent == 12 and out.stats.failed == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["eve.json", "eve.json.1", "eve.json.2"]
    lines = [json.loads(x) for p in tmp_path.iterdir() for x in p.read_text().splitlines()]
    assert all(p.stat().st_size <= 3000 for p in tmp_path.iterdir())
    assert len(lines) < 12  # the oldest rotated away: keep 2
    assert all(r["event_type"] == "alert" for r in lines)
