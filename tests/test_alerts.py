"""Alerting (ids_daemon/consumers/alerts/): dedupe windows, reopen, thresholds, rate limit and the
outputs (JSON lines, syslog over UDP/TCP, webhook against a local HTTP server). No broker:
predictions are built with Prediction.from_dict from schema-valid dicts."""

from __future__ import annotations

import http.server
import io
import logging
import math
import re
import socket
import threading
import time
from pathlib import Path

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from ids_daemon.consumers.alerts import (
    AlertConfig,
    AlertEngine,
    JsonlOutput,
    StdoutOutput,
    SyslogOutput,
    WebhookOutput,
    build_outputs,
    format_rfc5424,
    run_alerts,
)
from ids_daemon.predictions import Prediction, json_schema

from .helpers import free_port

SCHEMA = json_schema()
T0 = 1_700_000_000.0


def pdict(i: int, t: float, host: str = "10.0.0.2", cls: str = "DDoS-SYN_Flood", family: str = "DDoS",
          severity: str = "critical", risk: float = 0.9, is_attack: bool = True, sensor: str = "gw1") -> dict:
    sport = 1024 + i % 60000
    return {
        "schema": "ids.prediction.v1", "id": f"{sensor}-run-{i}", "time": t, "sensor": sensor,
        "predicted_attack": cls, "family": family, "is_attack": is_attack, "confidence": 0.97,
        "risk_score": risk, "severity": severity, "probabilities": [{"class": cls, "p": 0.97}],
        "flow": {"key": f"tcp 10.9.9.9:{sport}-{host}:80", "kind": "flow", "protocol": "tcp",
                 "src_ip": "10.9.9.9", "src_port": sport, "dst_ip": host, "dst_port": 80},
        "window": {"first_ts": t - 0.5, "last_ts": t, "packets": 10, "close_reason": "full", "history": 10},
        "model": {"name": "ciciot-lstm", "version": "1"},
    }


def pred(i: int, t: float, **kw) -> Prediction:
    return Prediction.from_dict(pdict(i, t, **kw))


def engine(outputs=None, **cfg) -> AlertEngine:
    return AlertEngine(AlertConfig(**cfg), [] if outputs is None else outputs, id_prefix="test")


def test_the_test_predictions_are_schema_valid() -> None:
    jsonschema.validate(pdict(1, T0), SCHEMA)
    jsonschema.validate(pdict(2, T0, cls="BenignTraffic", family="Benign", is_attack=False, risk=0.0,
                              severity="low"), SCHEMA)


# --- dedupe -----------------------------------------------------------------------------


def test_flood_on_one_target_gives_one_new_then_one_update_per_window() -> None:
    n, duration, window = 100_000, 1800.0, 600.0
    eng = engine(dedupe_window_s=window)
    times = [T0 + duration * i / n for i in range(n)]
    during = []
    for i, t in enumerate(times):
        during += eng.process(pred(i, t))
    at_flush = eng.close()
    alerts = during + at_flush

    # 1 new + one update per window: windows [T0, T0+600), [T0+600, T0+1200), [T0+1200, ...)
    windows = math.floor((times[-1] - T0) / window) + 1
    assert windows == 3
    assert [a.kind for a in alerts] == ["new"] + ["update"] * windows
    assert len(during) == 1 + (windows - 1) and len(at_flush) == 1  # the last window closes at flush
    assert sum(a.count for a in alerts) == n
    assert sum(a.suppressed for a in alerts) == n - 1
    assert eng.stats.alertable == n and eng.stats.suppressed == n - 1 and eng.stats.alerts == 1 + windows
    # each update covers exactly the suppressed predictions of its window
    for k, a in enumerate(alerts[1:]):
        lo, hi = T0 + k * window, T0 + (k + 1) * window
        expected = sum(1 for t in times if lo <= t < hi) - (1 if k == 0 else 0)
        assert a.count == a.suppressed == expected
        assert lo <= a.first_seen <= a.last_seen < hi
    assert alerts[1].time == T0 + window and alerts[2].time == T0 + 2 * window
    assert {a.incident for a in alerts} == {alerts[0].id}
    assert all(a.target == "10.0.0.2" and a.family == "DDoS" and a.key == "10.0.0.2|DDoS" for a in alerts)
    assert alerts[0].examples == ["gw1-run-0"] and len(alerts[1].examples) == 3


def test_new_family_on_the_same_target_alerts_at_once() -> None:
    eng = engine()
    assert [a.kind for a in eng.process(pred(0, T0))] == ["new"]
    assert eng.process(pred(1, T0 + 1)) == []  # same target, same family: suppressed
    # another DDoS class is the same incident
    assert eng.process(pred(2, T0 + 2, cls="DDoS-UDP_Flood")) == []
    got = eng.process(pred(3, T0 + 3, cls="Mirai-udpplain", family="Mirai"))
    assert [(a.kind, a.family, a.target, a.attack, a.count) for a in got] == [
        ("new", "Mirai", "10.0.0.2", "Mirai-udpplain", 1)]
    assert got[0].incident == got[0].id
    # the same family on another target is another incident too
    assert [a.target for a in eng.process(pred(4, T0 + 4, host="10.0.0.3"))] == ["10.0.0.3"]
    final = eng.close()
    assert [(a.kind, a.family, a.count, a.suppressed) for a in final] == [("update", "DDoS", 2, 2)]
    assert final[0].attacks == {"DDoS-SYN_Flood": 1, "DDoS-UDP_Flood": 1}


def test_a_quiet_window_closes_silently_and_the_next_prediction_is_new_again() -> None:
    eng = engine(dedupe_window_s=600)
    first = eng.process(pred(0, T0))
    assert eng.flush(T0 + 599) == [] and eng.open_windows == 1
    assert eng.flush(T0 + 600) == [] and eng.open_windows == 0  # nothing suppressed: no update
    again = eng.process(pred(1, T0 + 700))
    assert [a.kind for a in again] == ["new"] and again[0].incident != first[0].incident
    assert eng.close() == []


def test_flush_with_a_time_reports_ended_windows_while_predictions_are_quiet() -> None:
    eng = engine(dedupe_window_s=60)
    eng.process(pred(0, T0))
    for i in range(1, 5):
        eng.process(pred(i, T0 + i))
    assert eng.flush(T0 + 30) == []
    up = eng.flush(T0 + 61)
    assert [(a.kind, a.count, a.time) for a in up] == [("update", 4, T0 + 60)]
    assert eng.flush(T0 + 200) == [] and eng.open_windows == 0
    eng.flush(T0 + 10)  # the clock never goes back
    assert eng.clock == T0 + 200


def test_duplicate_prediction_ids_are_dropped() -> None:
    eng = engine()
    eng.process(pred(0, T0))
    eng.process(pred(1, T0 + 1))
    eng.process(pred(1, T0 + 1))  # redelivered
    final = eng.close()
    assert eng.stats.duplicates == 1 and final[0].count == 1


# --- thresholds -------------------------------------------------------------------------


def test_severity_risk_family_thresholds_and_benign_never_alerts() -> None:
    eng = engine(min_severity="high", min_risk=0.75)
    assert eng.process(pred(0, T0, cls="BenignTraffic", family="Benign", is_attack=False, severity="low", risk=0.0)) == []
    # even a (malformed) benign prediction marked critical does not alert
    assert eng.process(pred(1, T0, cls="BenignTraffic", family="Benign", is_attack=True, severity="critical",
                            risk=1.0)) == []
    assert eng.process(pred(2, T0, cls="Recon-PortScan", family="Recon", severity="medium", risk=0.38)) == []
    assert eng.process(pred(3, T0, cls="DNS_Spoofing", family="Spoofing", severity="high", risk=0.66)) == []
    assert [a.severity for a in eng.process(pred(4, T0, severity="high", risk=0.78))] == ["high"]
    st = eng.stats
    assert (st.benign, st.below_severity, st.below_risk, st.alertable, st.alerts) == (2, 1, 1, 1, 1)

    low = engine(min_severity="low")
    assert len(low.process(pred(5, T0, cls="Recon-PortScan", family="Recon", severity="low", risk=0.1))) == 1

    fam = engine(families=["mirai", "DDoS-SYN_Flood"])  # a family or a class, any case
    assert fam.process(pred(6, T0, cls="DoS-SYN_Flood", family="DoS")) == []
    assert len(fam.process(pred(7, T0, cls="Mirai-udpplain", family="Mirai"))) == 1
    assert len(fam.process(pred(8, T0, cls="DDoS-SYN_Flood", family="DDoS"))) == 1
    assert fam.stats.filtered_family == 1


def test_a_summary_update_reports_the_highest_severity_and_risk() -> None:
    eng = engine(min_severity="medium")
    eng.process(pred(0, T0, severity="medium", risk=0.45))
    eng.process(pred(1, T0 + 1, severity="critical", risk=0.93))
    eng.process(pred(2, T0 + 2, severity="high", risk=0.6))
    (up,) = eng.close()
    assert (up.severity, up.max_risk, up.count, up.first_seen, up.last_seen) == ("critical", 0.93, 2, T0 + 1, T0 + 2)


# --- rate limit -------------------------------------------------------------------------


def test_rate_limit_counts_and_summarises_the_excess() -> None:
    eng = engine(rate_limit_per_min=10, dedupe_window_s=600)
    emitted = []
    for i in range(25):  # 25 distinct targets within 25 s
        emitted += eng.process(pred(i, T0 + i, host=f"10.1.0.{i}"))
    assert [a.kind for a in emitted] == ["new"] * 10
    assert eng.stats.rate_limited == 15
    # the held-back target 20 goes on: suppressed in its (open) window
    assert eng.process(pred(100, T0 + 30, host="10.1.0.20")) == []
    # 60 s after the first held-back alert: one summary of all that was held back
    summary = eng.flush(T0 + 10 + 60)
    assert [(a.kind, a.rate_limited, a.count, a.key, a.target) for a in summary] == [
        ("summary", 15, 15, "rate_limited", None)]
    assert summary[0].time == T0 + 10 + 60
    assert summary[0].targets == [f"10.1.0.{i}" for i in range(10, 25)]
    # at the end of its window target 20 reports: its "new" was held back, so this is "new"
    later = eng.flush(T0 + 20 + 600)
    assert [(a.kind, a.target, a.count, a.suppressed) for a in later] == [("new", "10.1.0.20", 1, 1)]
    emitted += summary + later + eng.close()
    assert sum(a.count for a in emitted) == eng.stats.alertable == 26  # nothing lost
    assert eng.stats.summaries == 1


def test_rate_limited_alerts_at_close_still_come_out_as_a_summary() -> None:
    eng = engine(rate_limit_per_min=2)
    out = []
    for i in range(5):
        out += eng.process(pred(i, T0, host=f"10.2.0.{i}"))
    out += eng.close()
    assert [a.kind for a in out] == ["new", "new", "summary"]
    assert out[-1].rate_limited == 3 and sum(a.count for a in out) == 5


def test_max_open_closes_the_oldest_window_early_without_losing_counts() -> None:
    eng = engine(max_open=2, rate_limit_per_min=0)
    out = []
    for i, host in enumerate(["10.3.0.1", "10.3.0.1", "10.3.0.2", "10.3.0.3"]):
        out += eng.process(pred(i, T0 + i, host=host))
    out += eng.close()
    assert eng.stats.evicted == 1
    assert sum(a.count for a in out) == 4


# --- outputs ----------------------------------------------------------------------------


def test_jsonl_output_file_contents(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    eng = AlertEngine(AlertConfig(outputs=[{"type": "jsonl", "path": str(path)}]), id_prefix="j")
    alerts = []
    for i in range(5):
        alerts += eng.process(pred(i, T0 + i))
    alerts += eng.process(pred(5, T0 + 5, cls="Mirai-greeth_flood", family="Mirai"))
    alerts += eng.close()
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["id"] for x in lines] == [a.id for a in alerts] == ["j-1", "j-2", "j-3"]
    assert [(x["kind"], x["family"], x["count"], x["suppressed"]) for x in lines] == [
        ("new", "DDoS", 1, 0), ("new", "Mirai", 1, 0), ("update", "DDoS", 4, 4)]
    first = lines[0]
    assert first["schema"] == "ids.alert.v1" and first["target"] == "10.0.0.2" and first["sensor"] == "gw1"
    assert set(first) >= {"id", "time", "sensor", "target", "key", "attack", "family", "severity", "max_risk",
                          "first_seen", "last_seen", "count", "suppressed", "kind", "examples"}
    assert eng.stats.outputs[f"jsonl:{path}"].sent == 3


def test_stdout_output_writes_one_json_line_per_alert() -> None:
    buf = io.BytesIO()
    eng = engine([StdoutOutput(buf)])
    eng.process(pred(0, T0))
    eng.close()
    (line,) = buf.getvalue().splitlines()
    assert orjson.loads(line)["kind"] == "new"


def test_config_validation_and_output_building(tmp_path: Path) -> None:
    cfg = AlertConfig.model_validate({
        "min_severity": "medium", "dedupe_window_s": 300,
        "outputs": [{"type": "stdout"}, {"type": "jsonl", "path": str(tmp_path / "a.jsonl")},
                    {"type": "syslog", "host": "127.0.0.1", "port": 5514, "protocol": "tcp", "facility": "local3"},
                    {"type": "webhook", "url": "http://127.0.0.1:9/hook", "allow_http": True,
                     "headers": {"Authorization": "Bearer x"}}],
    })
    outs = build_outputs(cfg.outputs)
    assert [type(o).__name__ for o in outs] == ["StdoutOutput", "JsonlOutput", "SyslogOutput", "WebhookOutput"]
    assert outs[2].facility == 19 and outs[3].headers["Authorization"] == "Bearer x"
    assert AlertConfig().outputs[0].type == "stdout"
    for bad in ({"min_severity": "urgent"}, {"nope": 1}, {"outputs": [{"type": "pager"}]},
                {"outputs": [{"type": "syslog", "facility": "local9"}]}, {"outputs": [{"type": "webhook", "url": "ftp://x"}]},
                {"outputs": [{"type": "jsonl", "path": "a", "extra": 1}]}, {"min_risk": 1.5}):
        with pytest.raises(ValidationError):
            AlertConfig.model_validate(bad)


RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 "
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    r"(?P<sd>-|(?:\[[^ \]=\"]{1,32}(?: [^ \]=\"]{1,32}=\"(?:[^\"\\\]]|\\[\"\\\]])*\")*\])+)"
    r"(?: (?P<msg>.*))?$", re.S)


def _sd_params(sd: str) -> dict[str, str]:
    return {k: re.sub(r'\\(["\\\]])', r"\1", v) for k, v in re.findall(r' ([^ =\]"]+)="((?:[^"\\]|\\.)*)"', sd)}


def test_syslog_udp_datagram_is_rfc5424_with_pri_from_severity() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    out = SyslogOutput("127.0.0.1", rx.getsockname()[1], "udp", app_name="ids-test", facility="local4")
    try:
        eng = engine([out])
        eng.process(pred(0, T0, severity="critical", risk=0.95))
        eng.process(pred(1, T0, host="10.0.0.9", cls="DNS_Spoofing", family="Spoofing", severity="high", risk=0.7))
        eng.process(pred(2, T0 + 1, host="10.0.0.9", cls="DNS_Spoofing", family="Spoofing", severity="high", risk=0.7))
        eng.close()
        msgs = [rx.recvfrom(65535)[0].decode("utf-8") for _ in range(3)]
    finally:
        rx.close()
    parsed = [RFC5424.match(m) for m in msgs]
    assert all(parsed), msgs
    local4 = 20
    assert [int(m["pri"]) for m in parsed] == [local4 * 8 + 2, local4 * 8 + 3, local4 * 8 + 3]  # crit, err, err
    m = parsed[0]
    assert m["ts"] == "2023-11-14T22:13:20.000000Z"
    assert (m["host"], m["app"], m["msgid"]) == ("gw1", "ids-test", "alert.new")
    sd = _sd_params(m["sd"])
    assert m["sd"].startswith("[ids@32473 ")
    assert (sd["kind"], sd["target"], sd["family"], sd["severity"], sd["count"]) == (
        "new", "10.0.0.2", "DDoS", "critical", "1")
    assert "DDoS" in m["msg"] and "10.0.0.2" in m["msg"]
    assert parsed[2]["msgid"] == "alert.update" and _sd_params(parsed[2]["sd"])["suppressed"] == "1"
    assert out.stats.sent == 3 and out.stats.failed == 0


def test_syslog_severity_mapping_json_message_and_escaping() -> None:
    eng = engine(min_severity="low")
    (a,) = eng.process(pred(0, T0, cls='x"y]z', family="Odd\\Family", severity="medium", risk=0.3))
    msg = format_rfc5424(a, facility=1, msg_format="json", hostname="my host", procid="42").decode()
    m = RFC5424.match(msg)
    assert m and int(m["pri"]) == 1 * 8 + 4 and m["host"] == "myhost" and m["procid"] == "42"
    assert _sd_params(m["sd"])["attack"] == 'x"y]z' and _sd_params(m["sd"])["family"] == "Odd\\Family"
    assert orjson.loads(m["msg"])["id"] == a.id
    (low,) = engine(min_severity="low").process(pred(1, T0, severity="low", risk=0.1))
    assert RFC5424.match(format_rfc5424(low, facility=16).decode())["pri"] == str(16 * 8 + 5)


def test_syslog_tcp_uses_octet_counting_frames() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(5)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        got.append(data)
        conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    out = SyslogOutput("127.0.0.1", srv.getsockname()[1], "tcp")
    eng = engine([out])
    eng.process(pred(0, T0))
    eng.process(pred(1, T0, host="10.0.0.7"))
    eng.close()
    th.join(5)
    srv.close()
    data, frames = got[0], []
    while data:
        n, _, rest = data.partition(b" ")
        frames.append(rest[: int(n)])
        data = rest[int(n):]
    assert len(frames) == 2 and all(RFC5424.match(f.decode()) for f in frames)
    assert out.stats.sent == 2


def test_syslog_tcp_receiver_down_is_counted_not_raised() -> None:
    port = free_port()
    out = SyslogOutput("127.0.0.1", port, "tcp", timeout_s=0.5)
    eng = engine([out])
    assert len(eng.process(pred(0, T0))) == 1
    assert len(eng.process(pred(1, T0, host="10.0.0.8"))) == 1
    eng.close()
    assert out.stats.sent == 0 and out.stats.failed == 2


# --- webhook ----------------------------------------------------------------------------


class _Hook:
    """A local HTTP server recording POSTs; ``behaviour`` picks the answer."""

    def __init__(self, behaviour: str = "ok", delay: float = 0.0):
        self.bodies: list[bytes] = []
        self.headers: list[dict] = []
        self.calls = 0
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                hook.calls += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if behaviour == "slow":
                    time.sleep(delay)
                if behaviour == "flaky" and hook.calls == 1:
                    self.send_response(503)
                    self.end_headers()
                    return
                if behaviour == "reject":
                    self.send_response(400)
                    self.end_headers()
                    return
                hook.bodies.append(body)
                hook.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts?token=secret"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "_Hook":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_posts_each_alert_as_json() -> None:
    with _Hook() as hook:
        out = WebhookOutput(hook.url, allow_http=True, timeout_s=2, retries=1, backoff_s=0.01, headers={"Authorization": "Bearer t"})
        eng = engine([out])
        sent = eng.process(pred(0, T0)) + eng.process(pred(1, T0 + 1))
        sent += eng.process(pred(2, T0 + 2, cls="Mirai-udpplain", family="Mirai")) + eng.close()
    assert out.stats.sent == 3 and out.stats.failed == 0 and out.stats.retries == 0
    bodies = [orjson.loads(b) for b in hook.bodies]
    assert [b["id"] for b in bodies] == [a.id for a in sent]
    assert [(b["schema"], b["kind"], b["family"], b["target"], b["count"]) for b in bodies] == [
        ("ids.alert.v1", "new", "DDoS", "10.0.0.2", 1), ("ids.alert.v1", "new", "Mirai", "10.0.0.2", 1),
        ("ids.alert.v1", "update", "DDoS", "10.0.0.2", 1)]
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert hook.headers[0]["Authorization"] == "Bearer t"
    assert "secret" not in out.name


def test_webhook_retries_a_5xx_and_does_not_retry_a_4xx() -> None:
    with _Hook("flaky") as hook:
        out = WebhookOutput(hook.url, allow_http=True, timeout_s=2, retries=2, backoff_s=0.01)
        eng = engine([out])
        eng.process(pred(0, T0))
        eng.close()
    assert (out.stats.sent, out.stats.retries, out.stats.failed, hook.calls) == (1, 1, 0, 2)
    with _Hook("reject") as hook:
        out = WebhookOutput(hook.url, allow_http=True, timeout_s=2, retries=3, backoff_s=0.01)
        eng = engine([out])
        eng.process(pred(0, T0))
        eng.close()
    assert (out.stats.sent, out.stats.retries, out.stats.failed, hook.calls) == (0, 0, 1, 1)


def test_webhook_server_down_retries_then_counts_a_failure_and_the_engine_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/alerts"
    hook = WebhookOutput(url, allow_http=True, timeout_s=1, retries=2, backoff_s=0.01)
    jl = JsonlOutput(tmp_path / "a.jsonl")
    eng = engine([hook, jl])
    with caplog.at_level(logging.WARNING, logger="ids_daemon.consumers.alerts"):
        assert len(eng.process(pred(0, T0))) == 1
        assert hook.flush(5)
        assert len(eng.process(pred(1, T0, host="10.0.0.5"))) == 1  # still going
        eng.close()
    assert (hook.stats.sent, hook.stats.failed, hook.stats.retries) == (0, 2, 4)
    assert jl.stats.sent == 2 and len((tmp_path / "a.jsonl").read_bytes().splitlines()) == 2
    lines = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(lines) == 2 and "after 3 attempt(s)" in lines[0]


def test_webhook_that_times_out_fails_within_bounded_time_without_blocking_the_engine() -> None:
    with _Hook("slow", delay=1.5) as hook:
        out = WebhookOutput(hook.url, allow_http=True, timeout_s=0.2, retries=1, backoff_s=0.01)
        eng = engine([out])
        t = time.monotonic()
        assert len(eng.process(pred(0, T0))) == 1
        assert time.monotonic() - t < 0.1  # send only queues
        eng.close()
        elapsed = time.monotonic() - t
    assert (out.stats.sent, out.stats.failed, out.stats.retries) == (0, 1, 1)
    assert elapsed < 2.0  # 2 attempts x 0.2 s + backoff, not the server's 1.5 s each
    assert hook.calls == 2


def test_webhook_full_queue_counts_failures() -> None:
    with _Hook("slow", delay=0.3) as hook:
        out = WebhookOutput(hook.url, allow_http=True, timeout_s=2, retries=0, queue_size=1, close_timeout_s=5)
        eng = engine([out], rate_limit_per_min=0)
        for i in range(4):
            eng.process(pred(i, T0, host=f"10.4.0.{i}"))
        eng.close()
    assert out.stats.sent + out.stats.failed == 4 and out.stats.failed >= 2


# --- the driver -------------------------------------------------------------------------


def test_run_alerts_feeds_the_engine_and_ticks_while_quiet(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    cfg = AlertConfig(dedupe_window_s=0.2, tick_s=0.05, outputs=[{"type": "jsonl", "path": str(path)}])
    seen_while_quiet: list[int] = []

    def stream():
        yield pred(0, T0)
        yield None  # an idle poll
        yield pred(1, T0 + 0.01)
        yield pred(2, T0 + 0.02, cls="Benign", family="Benign", is_attack=False, severity="low", risk=0.0)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # quiet: the ticker closes the window on its own
            lines = path.read_bytes().splitlines() if path.exists() else []
            if len(lines) >= 2:
                break
            time.sleep(0.02)
            yield None
        seen_while_quiet.append(len(path.read_bytes().splitlines()))

    st = run_alerts(stream(), cfg)
    assert seen_while_quiet == [2]
    kinds = [orjson.loads(x)["kind"] for x in path.read_bytes().splitlines()]
    assert kinds == ["new", "update"]
    assert (st.predictions, st.benign, st.alertable, st.new, st.updates) == (3, 1, 2, 1, 1)
    assert st.outputs[f"jsonl:{path}"].sent == 2
