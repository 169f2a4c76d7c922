"""What the alerting consumer is told: thresholds, de-duplication, rate limit and outputs
(a pydantic model, also the ``alerts:`` section of config.yml)."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StdoutOutputConfig(_Model):
    """One JSON alert per line on standard output."""

    type: Literal["stdout"] = "stdout"


class JsonlOutputConfig(_Model):
    """One JSON alert per line, appended to a file."""

    type: Literal["jsonl"] = "jsonl"
    path: str = Field(..., min_length=1, description="file the alerts are appended to")


SYSLOG_FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "audit": 13, "console": 14, "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
# alert severity -> RFC 5424 severity code
SYSLOG_SEVERITY: dict[str, int] = {"critical": 2, "high": 3, "medium": 4, "low": 5}


class SyslogOutputConfig(_Model):
    """RFC 5424 messages to a syslog receiver over UDP (RFC 5426) or TCP (RFC 6587 octet counting)."""

    type: Literal["syslog"] = "syslog"
    host: str = Field("127.0.0.1", description="syslog receiver host")
    port: int = Field(514, ge=1, le=65535, description="syslog receiver port")
    protocol: Literal["udp", "tcp"] = Field("udp", description="udp: one datagram per alert; tcp: octet-counting framing")
    app_name: str = Field("ids-daemon", min_length=1, max_length=48, description="APP-NAME field")
    facility: Union[int, str] = Field("local0", description="facility name (local0..local7, auth, daemon, ...) or code 0-23")
    hostname: str | None = Field(None, description="HOSTNAME field (default: the alert's sensor name)")
    msg_format: Literal["text", "json"] = Field("text", description="MSG: a readable sentence or the alert's JSON")
    timeout_s: float = Field(2.0, gt=0, description="TCP connect/send timeout")
    retry_interval_s: float = Field(5.0, ge=0, description="after a failed TCP connect, alerts fail at once for this long")

    @field_validator("facility")
    @classmethod
    def _facility(cls, v: int | str) -> int | str:
        facility_code(v)
        return v


def facility_code(v: int | str) -> int:
    """The numeric facility of a name or number; ValueError when unknown."""
    if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
        code = int(v)
        if not 0 <= code <= 23:
            raise ValueError(f"syslog facility {code} outside 0-23")
        return code
    try:
        return SYSLOG_FACILITIES[str(v).lower()]
    except KeyError:
        raise ValueError(f"unknown syslog facility {v!r} (one of {', '.join(SYSLOG_FACILITIES)} or 0-23)") from None


class WebhookOutputConfig(_Model):
    """HTTP POST of each alert's JSON, from a background thread (never blocks the engine)."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(..., description="https URL the alerts are POSTed to (redirects are not followed)")
    allow_http: bool = Field(False, description="allow a plain http:// URL: alerts and headers (Authorization) "
                             "then cross the network unencrypted")
    timeout_s: float = Field(2.0, gt=0, description="per-request timeout")
    retries: int = Field(3, ge=0, le=20, description="further attempts after a failed one (5xx, 408, 429, network errors)")
    backoff_s: float = Field(0.5, ge=0, description="wait before the first retry, doubled for each next one")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (e.g. Authorization)")
    queue_size: int = Field(1000, ge=1, description="alerts waiting for delivery; beyond it they are counted as failed")
    close_timeout_s: float = Field(10.0, ge=0, description="at close, wait this long for queued alerts (the rest fail, counted)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urllib.parse.urlsplit(v)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"not an http(s) URL: {_redact(v)!r}")
        return v

    @model_validator(mode="after")
    def _plain_http(self) -> "WebhookOutputConfig":
        problem = plain_http_problem(self.url, self.allow_http)
        if problem:
            raise ValueError(problem)
        return self


def plain_http_problem(url: str, allow_http: bool) -> str | None:
    """Why ``url`` may not be used (a plain http:// URL without the opt-in), or None."""
    if urllib.parse.urlsplit(url).scheme == "http" and not allow_http:
        return (f"webhook {_redact(url)} is plain http://: alerts and their headers would cross the network "
                "unencrypted; use https:// or set allow_http: true")
    return None


# EVE signature ids: gid 1 (Suricata's rule generator) and sid = sid_base + a fixed offset
# per class (see eve.py); 9_100_000 + 0..99_999 lies outside the ranges Snort/Talos
# (< 1_000_000), local rules (1_000_000-1_999_999) and Emerging Threats (2_000_000-2_999_999) use.
EVE_SID_BASE = 9_100_000


class EveOutputConfig(_Model):
    """Suricata EVE ``alert`` records (eve.json), one JSON object per line appended to a file,
    for SIEM parsers that already read Suricata (Elastic, Wazuh, Splunk, Security Onion)."""

    type: Literal["eve"] = "eve"
    path: str = Field(..., min_length=1, description="file the EVE records are appended to (e.g. eve-ids.json)")
    max_bytes: int = Field(0, ge=0, description="rotate when the file would grow past this size: PATH -> PATH.1 "
                           "-> ... -> PATH.KEEP (0: never; or rotate it with logrotate copytruncate)")
    keep: int = Field(5, ge=1, le=1000, description="rotated files kept when max_bytes is set")
    gid: int = Field(1, ge=1, le=2**31 - 1, description="alert.gid of every record")
    sid_base: int = Field(EVE_SID_BASE, ge=1, le=2**31 - 1 - 100_000,
                          description="alert.signature_id = sid_base + the class's fixed offset (docs/alerts-eve.md)")


OutputConfig = Annotated[
    Union[StdoutOutputConfig, JsonlOutputConfig, SyslogOutputConfig, WebhookOutputConfig, EveOutputConfig],
    Field(discriminator="type"),
]


class AlertConfig(_Model):
    """Alerting on the prediction stream (``ids-daemon alerts``); see ids_daemon/consumers/alerts/."""

    min_severity: Literal["low", "medium", "high", "critical"] = Field(
        "high", description="lowest prediction severity that alerts")
    min_risk: float = Field(0.0, ge=0, le=1, description="lowest risk score that alerts")
    families: list[str] | None = Field(
        None, description="attack families (or classes) that alert, case-insensitive; null: all. Benign never alerts")
    dedupe_window_s: float = Field(
        600.0, gt=0, description="one alert per (target host, family) per window; the window's other "
        "predictions are counted and reported in one update alert when it ends")
    rate_limit_per_min: int = Field(
        60, ge=0, description="at most this many alerts in any 60 s (0: no limit); the excess is counted "
        "and reported in a summary alert, never dropped")
    max_open: int = Field(
        100_000, ge=1, description="open (target, family) windows kept; beyond it the oldest is closed early")
    examples: int = Field(3, ge=0, le=100, description="prediction ids quoted in each alert")
    duplicate_ids: int = Field(
        65536, ge=0, description="recent prediction ids remembered to drop redelivered duplicates (0: off)")
    tick_s: float = Field(1.0, gt=0, description="how often the driver closes windows that ended while predictions are quiet")
    max_clock_ahead_s: float = Field(
        300.0, gt=0, description="the engine clock (prediction time) moves at most this far ahead of this host's "
        "clock, so one record stamped in the future cannot close every window or stamp later alerts")
    outputs: list[OutputConfig] = Field(
        default_factory=lambda: [StdoutOutputConfig()],
        description="where alerts go: stdout | jsonl (path) | syslog (host, port, protocol, ...) | webhook (url, ...) "
        "| eve (path: Suricata EVE alert records)")


def _redact(url: str) -> str:
    """scheme://host[:port] only: webhook URLs often carry a secret in the path or query."""
    try:
        u = urllib.parse.urlsplit(url)
        return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}"
    except ValueError:
        return "<url>"
