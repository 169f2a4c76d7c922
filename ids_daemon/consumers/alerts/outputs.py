"""Where alerts go: stdout, JSON lines, syslog (RFC 5424), a webhook and Suricata EVE
(`eve`). ``send`` never
raises for delivery problems: they are counted in the output's stats."""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterable, Protocol

from ...errors import ConfigError
from .alert import Alert, OutputStats
from .config import (SYSLOG_SEVERITY, EveOutputConfig, JsonlOutputConfig, StdoutOutputConfig, SyslogOutputConfig,
                     WebhookOutputConfig, _redact, facility_code, plain_http_problem)
from .eve import EveOutput

log = logging.getLogger("ids_daemon.consumers.alerts")


def _quiet(fn: Any) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        log.warning("alert output: %s", e)


# ---------------------------------------------------------------------------------------
# outputs


class AlertOutput(Protocol):
    """Where alerts go. ``send`` never raises for delivery problems: they are counted."""

    name: str
    stats: OutputStats

    def open(self) -> None: ...

    def send(self, alert: Alert) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class StdoutOutput:
    """One JSON line per alert on standard output (flushed at once)."""

    def __init__(self, stream: BinaryIO | None = None):
        self.name = "stdout"
        self.stats = OutputStats()
        self._given = stream
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        self._fh = self._given if self._given is not None else sys.stdout.buffer

    def send(self, alert: Alert) -> None:
        if self._fh is None:
            self.open()
        try:
            self._fh.write(alert.to_json() + b"\n")  # type: ignore[union-attr]
            self._fh.flush()  # type: ignore[union-attr]
            self.stats.sent += 1
        except (OSError, ValueError) as e:
            self.stats.failed += 1
            log.warning("alert output stdout: %s", e)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            _quiet(self._fh.flush)
        self._fh = None


class JsonlOutput:
    """One JSON line per alert appended to a file (flushed after each alert)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.name = f"jsonl:{self.path}"
        self.stats = OutputStats()
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        try:
            self._fh = open(self.path, "ab")
        except OSError as e:
            raise ConfigError(f"alerts output {self.path}: cannot open: {e.strerror}") from None

    def send(self, alert: Alert) -> None:
        if self._fh is None:
            self.stats.failed += 1
            return
        try:
            self._fh.write(alert.to_json() + b"\n")
            self._fh.flush()
            self.stats.sent += 1
        except OSError as e:
            self.stats.failed += 1
            log.warning("alert output %s: %s", self.path, e)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            _quiet(self._fh.close)
        self._fh = None


_SD_ESCAPE = re.compile(r'(["\\\]])')


def _sd_escape(v: str) -> str:
    """An SD-PARAM value: '"', '\\' and ']' escaped with a backslash (RFC 5424 6.3.3)."""
    return _SD_ESCAPE.sub(r"\\\1", v)


def _header_field(s: str | None, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without space, or NILVALUE."""
    s = "".join(c for c in (s or "") if 33 <= ord(c) <= 126)[:limit]
    return s or "-"


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _alert_text(a: Alert) -> str:
    if a.kind == "summary":
        return (f"IDS alerts held back by the rate limit: {a.rate_limited} alerts, {a.count} predictions, "
                f"{len(a.targets)} targets, severity up to {a.severity}, max risk {a.max_risk:.2f}")
    attack = a.attack if a.attack != a.family else ""
    return (f"IDS alert {a.kind}: {a.family}{f' ({attack})' if attack else ''} on {a.target}, "
            f"severity {a.severity}, max risk {a.max_risk:.2f}, {a.count} prediction(s), {a.suppressed} suppressed")


def format_rfc5424(alert: Alert, *, facility: int = 16, app_name: str = "ids-daemon", hostname: str | None = None,
                   procid: str | None = None, msg_format: str = "text", sd_id: str = "ids@32473") -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`` for one alert.

    PRI = facility * 8 + severity (critical 2, high 3, medium 4, low 5). MSGID is
    ``alert.<kind>``. The structured data element ``ids@32473`` (the enterprise number
    reserved for documentation, RFC 5612) carries the alert's main fields. MSG is a
    sentence or the alert's JSON; non-ASCII text starts with a BOM as RFC 5424 asks.
    """
    pri = facility * 8 + SYSLOG_SEVERITY[alert.severity]
    host = _header_field(hostname or alert.sensor, 255)
    params = {
        "id": alert.id, "kind": alert.kind, "target": alert.target or "-", "family": alert.family,
        "attack": alert.attack, "severity": alert.severity, "max_risk": f"{alert.max_risk:.4f}",
        "count": str(alert.count), "suppressed": str(alert.suppressed), "rate_limited": str(alert.rate_limited),
        "incident": alert.incident or "-",
    }
    sd = "[" + sd_id + "".join(f' {k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    msg = alert.to_json().decode() if msg_format == "json" else _alert_text(alert)
    head = (f"<{pri}>1 {_rfc3339(alert.time)} {host} {_header_field(app_name, 48)} "
            f"{_header_field(procid if procid is not None else str(os.getpid()), 128)} "
            f"{_header_field('alert.' + alert.kind, 32)} {sd} ")
    body = msg.encode("utf-8")
    if not msg.isascii():
        body = b"\xef\xbb\xbf" + body
    return head.encode("utf-8") + body


class SyslogOutput:
    """RFC 5424 alerts to a syslog receiver: one UDP datagram each, or TCP with RFC 6587
    octet-counting framing (``LEN SP MSG``), reconnecting after a failure."""

    MAX_UDP = 65000

    def __init__(self, host: str = "127.0.0.1", port: int = 514, protocol: str = "udp", app_name: str = "ids-daemon",
                 facility: int | str = "local0", hostname: str | None = None, msg_format: str = "text",
                 timeout_s: float = 2.0, retry_interval_s: float = 5.0):
        if protocol not in ("udp", "tcp"):
            raise ValueError("protocol must be udp or tcp")
        self.host, self.port, self.protocol = host, int(port), protocol
        self.app_name, self.facility = app_name, facility_code(facility)
        self.hostname, self.msg_format = hostname, msg_format
        self.timeout_s, self.retry_interval_s = timeout_s, retry_interval_s
        self.name = f"syslog:{protocol}://{host}:{port}"
        self.stats = OutputStats()
        self._sock: socket.socket | None = None
        self._addr: Any = None
        self._down_until = 0.0
        self._procid = str(os.getpid())

    def open(self) -> None:
        if self.protocol == "udp":
            self._resolve()

    def _resolve(self) -> bool:
        try:
            fam, _, _, _, addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
        except OSError as e:
            log.warning("alert output %s: cannot resolve %s: %s", self.name, self.host, e)
            return False
        self._sock = socket.socket(fam, socket.SOCK_DGRAM)
        self._addr = addr
        return True

    def _connect(self) -> None:
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)

    def _drop_conn(self) -> None:
        if self._sock is not None:
            _quiet(self._sock.close)
        self._sock = None

    def send(self, alert: Alert) -> None:
        msg = format_rfc5424(alert, facility=self.facility, app_name=self.app_name, hostname=self.hostname,
                             procid=self._procid, msg_format=self.msg_format)
        if self.protocol == "udp":
            if self._sock is None and not self._resolve():
                self.stats.failed += 1
                return
            try:
                self._sock.sendto(msg[: self.MAX_UDP], self._addr)  # type: ignore[union-attr]
                self.stats.sent += 1
            except OSError as e:
                self.stats.failed += 1
                log.warning("alert output %s: alert %s not sent: %s", self.name, alert.id, e)
            return
        frame = str(len(msg)).encode() + b" " + msg
        for attempt in range(2):  # a broken connection is reopened once
            if self._sock is None:
                if time.monotonic() < self._down_until:
                    self.stats.failed += 1
                    return
                try:
                    self._connect()
                except OSError as e:
                    self._down_until = time.monotonic() + self.retry_interval_s
                    self.stats.failed += 1
                    log.warning("alert output %s: cannot connect (%s); alert %s not sent", self.name, e, alert.id)
                    return
            try:
                self._sock.sendall(frame)  # type: ignore[union-attr]
                self.stats.sent += 1
                return
            except OSError as e:
                self._drop_conn()
                if attempt:
                    self.stats.failed += 1
                    log.warning("alert output %s: alert %s not sent: %s", self.name, alert.id, e)
                else:
                    self.stats.retries += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._drop_conn()


class _Permanent(Exception):
    """An HTTP answer that retrying will not change (4xx other than 408 and 429)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: urllib would follow it with the Authorization header to any
    host and turn the POST into a body-less GET, and the alert would count as sent."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        fp.close()
        raise _Permanent(f"HTTP {code}: redirect to {_redact(newurl)} not followed (configure the final URL)")


class WebhookOutput:
    """POST each alert's JSON to a URL from a background thread: a timeout per request,
    ``retries`` more attempts with exponential backoff on network errors, timeouts, 5xx,
    408 and 429, then one logged line and a counted failure. ``send`` only queues, so a
    slow or dead endpoint never holds up the engine; a full queue counts as a failure.
    Redirects are never followed (a failure, not retried), and a plain http:// URL needs
    ``allow_http``."""

    def __init__(self, url: str, timeout_s: float = 2.0, retries: int = 3, backoff_s: float = 0.5,
                 headers: dict[str, str] | None = None, queue_size: int = 1000, close_timeout_s: float = 10.0,
                 allow_http: bool = False):
        problem = plain_http_problem(url, allow_http)
        if problem:
            raise ConfigError(f"alerts output {problem}")
        self.url = url
        self._opener = urllib.request.build_opener(_NoRedirect())
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.headers = {"Content-Type": "application/json", "User-Agent": "ids-daemon-alerts/1",
                        **(headers or {})}
        self.queue_size, self.close_timeout_s = int(queue_size), float(close_timeout_s)
        self.name = f"webhook:{_redact(url)}"
        self.stats = OutputStats()
        self._q: queue.Queue[Alert | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        if self._thread is None:
            self._abort.clear()
            self._thread = threading.Thread(target=self._run, name="alerts-webhook", daemon=True)
            self._thread.start()

    def send(self, alert: Alert) -> None:
        if self._thread is None:
            self.open()
        with self._cond:
            if self._pending >= self.queue_size:
                self.stats.failed += 1
                full = True
            else:
                self._pending += 1
                full = False
        if full:
            log.warning("alert output %s: queue full (%d); alert %s not sent", self.name, self.queue_size, alert.id)
            return
        self._q.put(alert)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert was delivered or failed (at most ``timeout``,
        default close_timeout_s); True when the queue drained."""
        limit = self.close_timeout_s if timeout is None else timeout
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, limit)

    def close(self) -> None:
        if self._thread is None:
            return
        if not self.flush():
            log.warning("alert output %s: %d alerts still queued after %.1f s; counted as failed",
                        self.name, self._pending, self.close_timeout_s)
        self._abort.set()
        self._q.put(None)
        self._thread.join(self.timeout_s + 1.0)
        self._thread = None
        # whatever the thread did not take is lost: count it
        while True:
            try:
                a = self._q.get_nowait()
            except queue.Empty:
                break
            if a is not None:
                self._done(ok=False)

    def _done(self, ok: bool) -> None:
        with self._cond:
            if ok:
                self.stats.sent += 1
            else:
                self.stats.failed += 1
            self._pending -= 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            a = self._q.get()
            if a is None:
                return
            if self._abort.is_set():
                self._done(ok=False)
                continue
            self._done(ok=self._deliver(a))

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:  # http(s) checked in __init__
                resp.read()
        except urllib.error.HTTPError as e:
            e.close()
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise _Permanent(f"HTTP {e.code} {e.reason}") from None
            raise

    def _deliver(self, a: Alert) -> bool:
        body = a.to_json()
        err: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                with self._cond:
                    self.stats.retries += 1
                if self._abort.wait(self.backoff_s * (2 ** (attempt - 1))):
                    break
            try:
                self._post(body)
                return True
            except _Permanent as e:
                err = e
                break
            except (OSError, ValueError) as e:  # URLError, timeouts, connection errors, bad answers
                err = e
            except Exception as e:  # noqa: BLE001 - http.client oddities must not kill the thread
                err = e
        reason = getattr(err, "reason", None) or err
        log.warning("alert output %s: alert %s not delivered after %d attempt(s): %s",
                    self.name, a.id, attempt + 1, reason)
        return False


def build_outputs(configs: Iterable[Any]) -> list[AlertOutput]:
    """Output objects for ``AlertConfig.outputs`` entries (not opened yet)."""
    outs: list[AlertOutput] = []
    for c in configs:
        if isinstance(c, StdoutOutputConfig):
            outs.append(StdoutOutput())
        elif isinstance(c, JsonlOutputConfig):
            outs.append(JsonlOutput(c.path))
        elif isinstance(c, SyslogOutputConfig):
            outs.append(SyslogOutput(c.host, c.port, c.protocol, c.app_name, c.facility, c.hostname, c.msg_format,
                                     c.timeout_s, c.retry_interval_s))
        elif isinstance(c, WebhookOutputConfig):
            outs.append(WebhookOutput(c.url, c.timeout_s, c.retries, c.backoff_s, dict(c.headers), c.queue_size,
                                      c.close_timeout_s, c.allow_http))
        elif isinstance(c, EveOutputConfig):
            outs.append(EveOutput(c.path, c.max_bytes, c.keep, c.gid, c.sid_base))
        else:
            raise ConfigError(f"unknown alert output {c!r}")
    return outs


