"""What every Kafka client of the daemon shares: bootstrap parsing, topic names, the
broker probe, and the librdkafka settings built from the validated config.

Used by the sink (``sinks/kafka``), the consumers (``consumers/subscribe``, the alerting
consumer, the dead-letter producer) and the dev broker (``devbroker``). The client is
confluent-kafka (librdkafka); see docs/kafka.md for the settings that matter.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any, Iterable

from .errors import ConfigError

TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


class BrokerConfigError(ConfigError):
    """A Kafka setting (bootstrap, topic, client option) the clients cannot use."""


def parse_bootstrap(bootstrap: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"host:port[,host:port...]"`` (or a list of them) -> ``["host:port", ...]``;
    a missing port means Kafka's 9092. Raises :class:`BrokerConfigError` naming the bad
    entry."""
    if isinstance(bootstrap, (list, tuple)):
        entries = [str(e) for e in bootstrap]
    elif isinstance(bootstrap, str):
        entries = bootstrap.split(",")
    else:
        raise BrokerConfigError(f"kafka bootstrap must be a string like 'host:9092', got {bootstrap!r}")
    out = []
    for raw in entries:
        e = raw.strip()
        if not e:
            raise BrokerConfigError(f"kafka bootstrap {bootstrap!r} has an empty entry (expected 'host:port[,host:port]')")
        if "://" in e:
            raise BrokerConfigError(
                f"kafka bootstrap entry {e!r} has a URL scheme: give host:port (e.g. {e.split('://', 1)[1]!r})")
        if e.startswith("["):  # [IPv6]:port
            m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::(.*))?$", e)
            if not m:
                raise BrokerConfigError(f"kafka bootstrap entry {e!r} is not '[ipv6]:port'")
            hostpart, port = f"[{m.group(1)}]", m.group(2)
        else:
            if e.count(":") > 1:
                raise BrokerConfigError(f"kafka bootstrap entry {e!r}: write IPv6 addresses as '[addr]:port'")
            host, sep, port = e.partition(":")
            if not _HOST_RE.match(host):
                raise BrokerConfigError(f"kafka bootstrap entry {e!r} has an invalid host name {host!r}")
            hostpart = host
            if not sep:
                port = None
        if port is None:
            port_n = 9092
        else:
            if not port.isdigit() or not (1 <= int(port) <= 65535):
                raise BrokerConfigError(f"kafka bootstrap entry {e!r} has an invalid port {port!r} (1-65535)")
            port_n = int(port)
        out.append(f"{hostpart}:{port_n}")
    return out


def check_topic(topic: Any, what: str = "topic") -> str:
    """``topic`` if Kafka accepts it as a topic name; else :class:`BrokerConfigError`."""
    if not isinstance(topic, str) or not TOPIC_RE.match(topic) or topic in (".", ".."):
        raise BrokerConfigError(f"{what} {topic!r} is invalid: 1-249 characters of letters, digits, '.', '_', '-'")
    return topic


def tcp_probe(servers: Iterable[str], timeout_s: float = 1.0) -> str | None:
    """None when a bootstrap server accepts a TCP connection, else why none did. A
    refused port fails in microseconds where a client would retry for its whole
    bootstrap timeout."""
    last: OSError | None = None
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            return None
        except OSError as e:
            last = e
    return str(last.strerror or last) if last is not None else "no address"


def wait_for_listener(servers: list[str], timeout_s: float) -> str | None:
    """:func:`tcp_probe` retried for up to ``timeout_s``; None once one answers."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        why = tcp_probe(servers)
        if why is None or time.monotonic() >= deadline:
            return why
        time.sleep(0.2)


class _LibrdkafkaLog:
    """librdkafka's own log lines (connection refused, broker down ...) at debug level:
    the clients log the state changes that matter once, in words, themselves."""

    def __init__(self, name: str):
        self._log = logging.getLogger(name)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._log.log(logging.DEBUG, fmt, *args)


def client_config(servers: list[str], client_id: str, security: Any = None,
                  extra: dict[str, Any] | None = None, logger: str = "ids_daemon.librdkafka") -> dict[str, Any]:
    """The librdkafka settings every client starts from: bootstrap, client id, TLS/SASL
    from the shared ``kafka.security`` settings, librdkafka's log routed to Python
    logging, and ``extra`` (librdkafka property names) on top."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": ",".join(servers),
        "client.id": client_id,
        "logger": _LibrdkafkaLog(logger),
    }
    if security is not None:
        cfg.update(security.librdkafka())
    cfg.update(extra or {})
    return cfg


def broker_ready(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout_s``."""
    from confluent_kafka.admin import AdminClient

    servers = parse_bootstrap(bootstrap)
    if tcp_probe(servers, min(timeout_s, 1.0)) is not None:
        return False
    admin = AdminClient(client_config(servers, "ids-probe"))
    try:
        admin.list_topics(timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - not ready yet
        return False
