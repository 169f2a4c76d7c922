"""Alerting hardening (issue 11 defects 3 and 4, issue 9 item 6): one record cannot set
the engine's clock; the webhook follows no redirect and needs an explicit opt-in for
plain http; the run ends with a readable summary."""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time

import pytest
from pydantic import ValidationError

from ids_daemon.consumers.alerts import AlertConfig, AlertEngine, WebhookOutput, build_outputs, format_rfc5424
from ids_daemon.errors import ConfigError
from tests.test_alerts import pred


def engine(**cfg) -> AlertEngine:
    return AlertEngine(AlertConfig(**cfg), [], id_prefix="test")


# --- the clock (defect 3) ----------------------------------------------------------------


def test_one_record_stamped_far_ahead_does_not_set_the_engine_clock() -> None:
    now = time.time()
    eng = engine(dedupe_window_s=600, max_clock_ahead_s=300)
    assert [a.kind for a in eng.process(pred(0, now))] == ["new"]
    # 1e300 reaches the engine only if a caller skips the decoder; the engine holds anyway
    poisoned = dataclasses.replace(pred(1, now, host="10.0.0.3"), time=1e300)
    out = eng.process(poisoned)
    assert [a.kind for a in out] == ["new"]  # it still alerts ...
    assert out[0].time <= time.time() + 300  # ... stamped with the engine clock
    format_rfc5424(out[0])  # and syslog can format it (it raised for every later alert)
    assert eng.clock <= time.time() + 300
    assert eng.open_windows == 2  # the first incident's window was not closed by it
    later = eng.process(pred(2, now + 1, host="10.0.0.4"))
    assert later[0].time <= time.time() + 300
    assert eng.stats.clock_ahead == 1
    # a record an hour ahead is believable to the decoder (clock skew) but moves the clock only 300 s
    eng.process(pred(3, now + 3600, host="10.0.0.5"))
    assert eng.clock <= time.time() + 300 and eng.stats.clock_ahead == 2
    eng.flush(now + 10_000)  # the driver's tick is capped too, and is not a record
    assert eng.clock <= time.time() + 300 and eng.stats.clock_ahead == 2
    eng.close()


def test_the_clock_still_follows_prediction_time_in_the_past() -> None:
    """Deterministic replay of an old stream is unchanged by the cap."""
    t0 = 1_700_000_000.0
    eng = engine(dedupe_window_s=60)
    eng.process(pred(0, t0))
    eng.process(pred(1, t0 + 5))
    up = eng.process(pred(2, t0 + 61))
    assert [(a.kind, a.time) for a in up] == [("update", t0 + 60)]
    assert eng.clock == t0 + 61 and eng.stats.clock_ahead == 0
    eng.close()


# --- the summary (issue 9 item 6) -------------------------------------------------------


def test_the_stats_read_as_a_summary_not_a_dataclass_repr() -> None:
    t0 = 1_700_000_000.0
    eng = engine(dedupe_window_s=60, min_severity="high")
    eng.process(pred(0, t0))
    eng.process(pred(1, t0 + 1))
    eng.process(pred(2, t0 + 2, cls="BenignTraffic", family="Benign", is_attack=False, severity="low", risk=0.0))
    eng.process(pred(3, t0 + 3, severity="medium", risk=0.4))
    eng.close()
    text = eng.stats.summary()
    lines = text.splitlines()
    assert len(lines) == 3 and "AlertStats(" not in text and "OutputStats(" not in text
    assert lines[0] == "predictions read: 4, alertable: 2 (benign: 1, below min_severity: 1)"
    assert lines[1] == ("alerts: 2 (new: 1, updates: 1, rate-limit summaries: 0); predictions folded into updates: 1; "
                        "alerts held back by the rate limit: 0")
    assert lines[2] == "outputs: none"


# --- the webhook (defect 4) -------------------------------------------------------------


class _Server:
    """A real local HTTP server: /redirect answers ``status`` with a Location, /hook records."""

    def __init__(self, status: int = 302, location: str = "http://127.0.0.1:1/elsewhere"):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                srv.requests.append((self.command, self.path, dict(self.headers), body))
                if self.path.startswith("/redirect"):
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST = _any  # noqa: N815

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alert():
    eng = engine()
    a = eng.process(pred(0, 1_700_000_000.0))[0]
    eng.close()
    return a


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_webhook_follows_no_redirect_and_counts_a_failure(status: int) -> None:
    """Before: the POST was redirected to another host as a body-less GET carrying the
    Authorization header, and counted as sent."""
    with _Server() as target:
        with _Server(status=status, location=f"{target.base}/stolen") as hook:
            out = WebhookOutput(f"{hook.base}/redirect", timeout_s=2, retries=2, backoff_s=0.01,
                                headers={"Authorization": "Bearer secret"}, allow_http=True)
            out.open()
            out.send(_alert())
            assert out.flush(10)
            out.close()
            assert (out.stats.sent, out.stats.failed, out.stats.retries) == (0, 1, 0)  # a redirect is not retried
            assert [(m, p) for m, p, _, _ in hook.requests] == [("POST", "/redirect")]
        assert target.requests == []  # nothing, and no credentials, reached the other host


def test_webhook_posts_to_its_url_when_there_is_no_redirect() -> None:
    with _Server() as hook:
        out = WebhookOutput(f"{hook.base}/hook", timeout_s=2, retries=0, allow_http=True,
                            headers={"Authorization": "Bearer secret"})
        out.open()
        out.send(_alert())
        assert out.flush(10)
        out.close()
        assert (out.stats.sent, out.stats.failed) == (1, 0)
        (method, path, headers, body), = hook.requests
        assert (method, path, headers["Authorization"]) == ("POST", "/hook", "Bearer secret") and body


def test_plain_http_webhook_needs_an_explicit_opt_in() -> None:
    with pytest.raises(ValidationError, match="allow_http") as err:
        AlertConfig(outputs=[{"type": "webhook", "url": "http://alerts.example/hook?token=s3cret"}])
    assert "s3cret" not in err.value.errors()[0]["msg"]  # the message (what the CLI prints) hides the secret
    with pytest.raises(ConfigError, match="allow_http"):
        WebhookOutput("http://alerts.example/hook")
    cfg = AlertConfig(outputs=[{"type": "webhook", "url": "http://alerts.example/hook", "allow_http": True},
                               {"type": "webhook", "url": "https://alerts.example/hook"}])
    assert [type(o).__name__ for o in build_outputs(cfg.outputs)] == ["WebhookOutput", "WebhookOutput"]


def test_alerts_command_ends_with_the_summary(kafka_broker, kafka_topic, tmp_path) -> None:
    """`ids-daemon alerts` on a real (dev) broker, stopped with SIGINT: its last words are
    the three-line summary, not ``AlertStats(predictions=..., ...)``."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_subscribe import make_prediction, publish

    preds = [make_prediction(i, kind=3) for i in range(6)]  # DDoS, critical: alertable
    publish(kafka_broker.bootstrap, kafka_topic, preds)
    out = tmp_path / "alerts.jsonl"
    cfg = tmp_path / "c.yml"
    # a fresh group's join on tansu takes half the session timeout (22 s at librdkafka's 45 s)
    cfg.write_text(f"alerts:\n  outputs:\n    - {{type: jsonl, path: {out}}}\n"
                   "kafka:\n  consumer: {session.timeout.ms: 6000, heartbeat.interval.ms: 1000}\n")
    exe = str(Path(sys.executable).parent / "ids-daemon")
    proc = subprocess.Popen([exe, "alerts", "--kafka-bootstrap", kafka_broker.bootstrap, "--topic", kafka_topic,
                             "--config", str(cfg), "--group", "alerts-" + kafka_topic[-8:], "--from", "earliest"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (out.exists() and out.read_text()):
            time.sleep(0.2)
        time.sleep(1.0)  # the rest of the batch
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "AlertStats(" not in err and "OutputStats(" not in err
    tail = err[err.rindex("ids-daemon: alerts: predictions read"):].splitlines()
    assert tail[0] == "ids-daemon: alerts: predictions read: 6, alertable: 6", err
    # one incident: new at once, its 5 suppressed predictions in one update at close
    assert tail[1] == ("  alerts: 2 (new: 1, updates: 1, rate-limit summaries: 0); predictions folded into "
                       "updates: 5; alerts held back by the rate limit: 0")
    assert tail[2] == f"  outputs: jsonl:{out} sent 2, failed 0"
