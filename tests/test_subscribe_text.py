"""`ids-daemon subscribe` text mode against hostile records (issue 11 defect 6): a time
of 1e18 or 1e300 crashed it, and control characters reached the terminal raw."""

from __future__ import annotations

import dataclasses

import pytest

from ids_daemon.consumers.subscribe import format_prediction, printable, run_subscribe
from ids_daemon.predictions import Prediction
from tests.test_subscribe import FAST, make_prediction, publish

CLEAR_SCREEN = "\x1b[2J\x1b[H"


def test_printable_escapes_controls_and_reordering() -> None:
    assert printable("gw\x1b[2J\r\nforged") == "gw\\x1b[2J\\r\\nforged"
    assert printable("evil\u202etxt.exe\u2028") == "evil\\u202etxt.exe\\u2028"
    assert printable("gw-1 10.0.0.1:80 ü") == "gw-1 10.0.0.1:80 ü"  # ordinary text unchanged


@pytest.mark.parametrize("t", [1e18, 1e300, -1e300, float("inf"), float("nan")])
def test_format_prediction_survives_any_time(t: float) -> None:
    p = dataclasses.replace(Prediction.from_dict(make_prediction(1)), time=t)
    line = format_prediction(p)
    assert line.startswith("time=") and p.flow.key in line


def test_format_prediction_escapes_every_text_field() -> None:
    d = make_prediction(3)
    d["sensor"] = "gw" + CLEAR_SCREEN
    d["predicted_attack"] = "DDoS\rBenignTraffic"
    d["family"] = "DDoS\x07"
    d["flow"]["key"] += "\n2023-11-14T22:13:23.000Z  gw-1 low 0.00  BenignTraffic"
    line = format_prediction(Prediction.from_dict(d))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    assert "gw\\x1b[2J\\x1b[H" in line and "DDoS\\rBenignTraffic" in line and "\\n2023-11-14" in line


def test_subscribe_text_mode_prints_hostile_records_safely(kafka_broker, kafka_topic, capsys) -> None:
    good = make_prediction(0)
    hostile = make_prediction(1)
    hostile["sensor"] = "gw" + CLEAR_SCREEN
    huge18, huge300 = make_prediction(2), make_prediction(3)
    huge18["time"], huge300["time"] = 1e18, 1e300
    publish(kafka_broker.bootstrap, kafka_topic, [huge18, huge300, hostile, good])
    rc = run_subscribe(kafka_broker.bootstrap, kafka_topic, None, "earliest", 2, False, None,
                       consumer_config=FAST, poll_timeout_ms=200)
    cap = capsys.readouterr()
    assert rc == 0
    lines = cap.out.splitlines()
    assert len(lines) == 2 and "\x1b" not in cap.out
    assert "gw\\x1b[2J" in lines[0] and lines[1].split()[1] == "gw-1"
    assert "malformed" in cap.err  # the two impossible times were skipped and counted
