"""One validated configuration object, loaded from ``config.yml`` and overridden by CLI flags.

No other module reads the environment or a file for settings: they receive the parts
of `Config` they need.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .consumers.alerts.config import AlertConfig
from .model.config import LSTMConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CaptureConfig(_Section):
    """Packet sources (files and live interfaces)."""

    batch_size: int = Field(65536, ge=1, le=1 << 22, description="frames per batch handed to the meter")
    interface: str | None = Field(None, description="live capture interface (-i)")
    filter: str | None = Field(None, description="tcpdump-style capture filter, compiled to kernel BPF (--filter)")
    snaplen: int = Field(256, ge=64, le=262144, description="bytes kept per live frame; headers fit in 256")
    ring_mb: int = Field(64, ge=1, le=4096, description="size of the live capture ring in MiB")
    block_timeout_ms: int = Field(100, ge=1, le=10000, description="the kernel hands over a ring block at least this often")
    promiscuous: bool = Field(True, description="put the live interface in promiscuous mode")
    user: str | None = Field(None, description="started as root: switch to this user, with no capabilities, "
                             "once the capture socket is open")


class MeterConfig(_Section):
    """The CICIoT2023 meter: flow state, windows, timeouts, memory bound."""

    window: int = Field(10, ge=1, le=10000, description="per-packet rows averaged into one window (N)")
    key_mode: Literal["flow", "capture"] = Field(
        "flow",
        description="flow: windows per flow, short flows pooled per served host (see docs/meter.md); "
        "capture: one key for all packets, exactly as the released dataset was made",
    )
    promote_after: int | None = Field(
        None, ge=1, description="packets a flow needs before it gets its own windows (default: window)"
    )
    pool_prefix: int = Field(32, ge=0, le=32, description="IPv4 prefix length of the per-host pools (32: one pool per host)")
    pool_prefix6: Literal[64, 128] = Field(
        64, description="IPv6 prefix length of the per-host pools: 64 (one per subnet; hosts rotate privacy "
        "addresses within it) or 128 (one per address)")
    idle_timeout: float = Field(120.0, ge=0, description="seconds without packets before a key expires (0: never)")
    active_timeout: float = Field(1800.0, ge=0, description="seconds after which a long flow restarts (0: never)")
    max_flows: int = Field(262144, ge=16, le=1 << 26, description="hard cap on tracked keys; LRU eviction beyond it")
    scan_interval: float = Field(1.0, gt=0, description="seconds of packet time between idle scans")
    prealloc: bool = Field(
        True, description="touch the whole key table at start, so its memory is taken (and any shortage "
        "shows) at start rather than in the middle of a flood"
    )

    @property
    def promote(self) -> int:
        """Packets after which a flow is its own window key."""
        return self.promote_after if self.promote_after is not None else self.window


class EncodingConfig(_Section):
    """How raw columns become model inputs (see ids_daemon/model/encoding.py)."""

    method: Literal["ple", "log"] = Field("ple", description="ple: log-standardised + piecewise-linear bins; log: log-standardised only")
    bins: int = Field(32, ge=2, le=256, description="quantile bins per column for ple")
    include_leaking: bool = Field(False, description="also train on IAT, Number, Weight, Drate, LLC, Srate (they leak the label)")
    exclude: list[str] = Field(default_factory=list, description="columns left out of training (shortcuts that "
                               "identify a capture rather than an attack, e.g. Duration = TTL)")

    @field_validator("exclude")
    @classmethod
    def _known_columns(cls, v: list[str]) -> list[str]:
        from .features.ciciot import COLUMNS

        bad = [c for c in v if c not in COLUMNS]
        if bad:
            raise ValueError(f"not CICIoT2023 columns: {', '.join(bad)}")
        return v


class TrainConfig(_Section):
    """Training (``ids-trainer train``)."""

    seq_len: int = Field(10, ge=1, le=1000, description="windows per sequence (T)")
    labels: Literal["34", "8", "2"] = Field("34", description="class scheme for CICIoT2023 labels")
    split: Literal["auto", "capture", "time", "stratified"] = Field(
        "auto", description="auto: by capture when every class has 2+ captures, else by time; stratified only when asked")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="held-out share")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share of the training part used for early stopping")
    epochs: int = Field(80, ge=1, le=10000)
    batch_size: int = Field(256, ge=1, le=1 << 16)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    temperature: bool = Field(False, description="after training, fit one temperature on the validation part "
                              "(least negative log-likelihood of the true labels) and fold it into the last layer "
                              "before the operating point is chosen (off: by source it sharpened the outputs past "
                              "what float64 p_attack resolves and flagged more held-out benign traffic, "
                              "docs/detection.md)")
    class_weights: bool = Field(True, description="weight the loss by inverse class frequency (imbalance)")
    class_weight_power: float = Field(1.0, ge=0, le=1, description="(inverse frequency) ** power: 1 balanced, 0.5 softened")
    patience: int = Field(40, ge=1, description="epochs without a better validation macro-F1 before stopping")
    swa_fraction: float = Field(0.25, ge=0, lt=1, description="average the weights of this last share of epochs (0: off)")
    max_per_class: int = Field(50000, ge=10, description="sequences kept per class (uniform sample beyond): bounds memory")
    target_fpr: float = Field(0.01, gt=0, lt=1, description="share of validation benign packets the stored "
                              "p_attack threshold may flag (the model's operating point)")
    threshold_by: Literal["packets", "captures"] = Field(
        "packets", description="target_fpr counts validation benign packets pooled (packets), or the mean share "
        "over validation benign captures, each counting the same whatever its size (captures)")
    threshold_by_window_kind: bool = Field(
        False, description="also hold target_fpr on each window kind's own validation benign packets (flows, and "
        "the pools of short flows per served host): a kind that needs a stricter threshold than the shared one gets "
        "its own (never a looser one)")
    seed: int = Field(0, description="seeds every random choice (split, init, batches)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    mlflow: bool = Field(False, description="log to MLflow when it is installed")


class LSTMSection(_Section):
    """The model: network shape, feature encoding and training."""

    model: LSTMConfig = LSTMConfig()
    features: EncodingConfig = EncodingConfig()
    train: TrainConfig = TrainConfig()


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")


class InferenceConfig(_Section):
    """The inference worker."""

    model: str | None = Field(None, description="model directory (default: the bundled model)")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    max_batch: int = Field(1024, ge=1, le=1 << 16, description="sequences per micro-batch")
    max_wait_ms: float = Field(20.0, ge=0, description="a batch runs when full or when its oldest sequence waited this long")
    engine: Literal["auto", "numpy", "torch"] = Field(
        "auto", description="what runs the network: auto (numpy on the CPU, so that torch is never imported; "
        "torch on a GPU), numpy (CPU only) or torch")
    half: bool = Field(False, description="half precision on CUDA")
    threads: int | None = Field(
        None, ge=1, le=1024, description="the model's CPU threads, numpy's BLAS and torch's (null: the cores this "
        "process may use, less the one the capture thread takes, at least 1)")
    top_k: int = Field(3, ge=1, le=50, description="class probabilities in each prediction")
    threshold: float | None = Field(
        None, ge=0, le=1, description="is_attack when p_attack = 1 - P(benign) reaches this (default: the model's "
        "operating point from its metadata; ids-trainer calibrate fits one to a site)")
    queue_batches: int = Field(64, ge=1, description="bound of each queue between stages (in batches)")
    overload: Literal["coalesce", "drop"] = Field(
        "coalesce", description="live, when the worker's queue is full: coalesce (the sequences built meanwhile "
        "wait, only each key's newest kept, so every key still gets a verdict) or drop (those sequences are "
        "dropped); both counted")
    coalesce_keys: int = Field(
        65536, ge=1, le=1 << 26, description="overload: coalesce: at most this many keys wait for the worker "
        "(T x F x 4 bytes of sequence and about 470 of window each); sequences of keys beyond it are dropped (counted)")
    attribution: Literal["on", "flagged", "off"] = Field(
        "flagged", description="the input columns that pushed p_attack most, in each prediction's attribution "
        "(gradient x input, docs/evidence.md): on (every prediction), flagged (is_attack ones, or p_attack >= "
        "attribution_min_p) or off")
    attribution_min_p: float | None = Field(
        None, ge=0, le=1, description="with attribution: flagged, also attribute predictions whose p_attack "
        "reaches this (null: the is_attack ones only)")

    @field_validator("attribution", mode="before")
    @classmethod
    def _attribution(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        # checked here, not when torch first sees it: torch.device("tpu") is a traceback
        if not _DEVICE.fullmatch(v):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v


def default_state_dir() -> str:
    """Where the daemon keeps state across runs (the Kafka spool): /var/lib/ids-daemon
    for root (systemd's StateDirectory), else $XDG_STATE_HOME/ids-daemon
    (~/.local/state/ids-daemon)."""
    import os

    if os.geteuid() == 0:
        return "/var/lib/ids-daemon"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "ids-daemon")


class KafkaSecurity(_Section):
    """TLS and SASL for every Kafka client (the sink, ``subscribe``, ``alerts``, the
    dead-letter producer): one set of settings, librdkafka's meaning."""

    protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = Field(
        "plaintext", description="security.protocol")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None = Field(
        None, description="sasl.mechanism (sasl_* protocols)")
    sasl_username: str | None = Field(None, description="sasl.username (PLAIN, SCRAM)")
    sasl_password: str | None = Field(None, description="sasl.password (PLAIN, SCRAM)")
    ssl_ca: str | None = Field(None, description="CA bundle (PEM file) the broker certificates are checked against")
    ssl_cert: str | None = Field(None, description="client certificate (PEM file), for mutual TLS")
    ssl_key: str | None = Field(None, description="client private key (PEM file), for mutual TLS")
    ssl_key_password: str | None = Field(None, description="password of ssl_key")
    ssl_check_hostname: bool = Field(True, description="check that the broker certificate names the host")

    @model_validator(mode="after")
    def _consistent(self) -> "KafkaSecurity":
        sasl = self.protocol.startswith("sasl_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(f"protocol {self.protocol} needs sasl_mechanism")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism is set but protocol {self.protocol} does not use SASL")
        if sasl and self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                self.sasl_username and self.sasl_password):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password")
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise ValueError("ssl_cert and ssl_key go together (mutual TLS)")
        return self

    def librdkafka(self) -> dict[str, Any]:
        """These settings as librdkafka properties."""
        out: dict[str, Any] = {"security.protocol": self.protocol}
        for key, val in (("sasl.mechanism", self.sasl_mechanism), ("sasl.username", self.sasl_username),
                         ("sasl.password", self.sasl_password), ("ssl.ca.location", self.ssl_ca),
                         ("ssl.certificate.location", self.ssl_cert), ("ssl.key.location", self.ssl_key),
                         ("ssl.key.password", self.ssl_key_password)):
            if val is not None:
                out[key] = val
        if self.protocol in ("ssl", "sasl_ssl"):
            out["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
        return out


# librdkafka settings the sink sets itself from the fields above (its guarantees depend on them)
_OWNED_PRODUCER_SETTINGS = {
    "bootstrap.servers": "bootstrap", "acks": "acks", "request.required.acks": "acks",
    "compression.type": "compression", "compression.codec": "compression", "linger.ms": "linger_ms",
    "queue.buffering.max.ms": "linger_ms", "batch.size": "batch_bytes", "enable.idempotence": "enable_idempotence",
    "on_delivery": "nothing (the sink counts deliveries)", "error_cb": "nothing", "security.protocol": "security",
}


class KafkaConfig(_Section):
    """Kafka: the sink (producer) and the settings the consumers share (bootstrap, security)."""

    bootstrap: str | None = Field(None, description="host:port[,host:port] (--kafka-bootstrap)")
    topic: str = Field("ids.predictions", description="topic for predictions (--topic)")
    acks: Literal["all", "1", "0"] = Field("all", description="all (every in-sync replica), 1 (the leader) or 0 (none)")
    # zstd, measured (docs/kafka.md): 86 bytes a prediction on the wire, as small as gzip (88)
    # and half of lz4 (155) or snappy (163), at 117-398 k records/s against lz4's 135-553 k and
    # gzip's 52-94 k: several times what the pipeline produces, so the bytes decide
    compression: Literal["gzip", "none", "snappy", "lz4", "zstd"] = Field("zstd", description="record batch compression")
    linger_ms: int = Field(20, ge=0, le=900_000, description="wait up to this long to fill a batch (latency for throughput)")
    batch_bytes: int = Field(1 << 20, ge=1024, le=2_147_483_647, description="record batch size (librdkafka batch.size)")
    state_dir: str | None = Field(None, description="state kept across runs (the spool lives in it unless spool_dir "
                                 "says otherwise); null: /var/lib/ids-daemon as root, else ~/.local/state/ids-daemon")
    spool_dir: str | None = Field(None, description="base of the on-disk spool while the broker is away; each sensor "
                                  "and topic spools in <spool_dir>/<sensor>/<topic> (default: <state_dir>/spool)")
    spool_max_mb: float = Field(256, gt=0, description="spool bound; beyond it (or when its disk is full) the oldest "
                              "predictions are dropped (counted)")
    retry_interval_s: float = Field(2.0, gt=0, description="how often to try an unreachable broker again")
    request_timeout_ms: int = Field(5000, ge=100, description="a produce request without an answer after this fails")
    stall_timeout_s: float = Field(1.5, gt=0, description="no acknowledgement for this long with records pending: broker away")
    close_timeout_s: float = Field(10.0, gt=0, description="at shutdown, wait this long for deliveries (the rest stays spooled)")
    client_id: str = Field("ids-daemon", min_length=1, description="Kafka client id")
    enable_idempotence: bool = Field(True, description="idempotent producer (no duplicates from retries; librdkafka "
                                     "recovers when the broker forgets the producer id)")
    security: KafkaSecurity = KafkaSecurity()
    producer: dict[str, Any] = Field(default_factory=dict, description="extra librdkafka producer properties "
                                     "(e.g. queue.buffering.max.kbytes); TLS/SASL go in kafka.security")
    consumer: dict[str, Any] = Field(default_factory=dict, description="extra librdkafka consumer properties of "
                                     "subscribe and alerts (e.g. session.timeout.ms); TLS/SASL go in kafka.security")

    @model_validator(mode="after")
    def _idempotence_needs_acks_all(self) -> "KafkaConfig":
        if self.enable_idempotence and self.acks != "all":
            raise ValueError(f"enable_idempotence needs acks 'all' (got {self.acks!r}): set enable_idempotence: false")
        return self

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        from .broker import BrokerConfigError, parse_bootstrap

        if v is None:
            return None
        try:
            return ",".join(parse_bootstrap(v))
        except BrokerConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        from .broker import BrokerConfigError, check_topic

        try:
            return check_topic(v)
        except BrokerConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("acks", mode="before")
    @classmethod
    def _acks(cls, v: Any) -> Any:
        return {-1: "all", "-1": "all", 1: "1", 0: "0"}.get(v, v) if not isinstance(v, bool) else v

    @field_validator("consumer")
    @classmethod
    def _consumer(cls, v: dict[str, Any]) -> dict[str, Any]:
        # the settings the subscriber owns (group.id ...) it refuses itself, by name
        for k in v:
            if k.startswith(("sasl.", "ssl.")) or k == "security.protocol":
                raise ValueError(f"{k!r}: TLS and SASL go in kafka.security (shared with the producer)")
            if "." not in k:
                raise ValueError(f"{k!r} is not a librdkafka property (they read like session.timeout.ms)")
        return v

    @field_validator("producer")
    @classmethod
    def _producer(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if k in _OWNED_PRODUCER_SETTINGS:
                raise ValueError(f"{k!r} is set by the sink: use kafka.{_OWNED_PRODUCER_SETTINGS[k]}")
            if k.startswith(("sasl.", "ssl.")):
                raise ValueError(f"{k!r}: TLS and SASL go in kafka.security (shared with the consumers)")
            if "." not in k:
                raise ValueError(f"{k!r} is not a librdkafka property (they read like queue.buffering.max.kbytes)")
        return v

    def spool_path(self, sensor: str | None) -> Path:
        """The spool of one sensor and topic: ``<spool_dir>/<sensor>/<topic>``."""
        import re
        import socket

        base = Path(self.spool_dir) if self.spool_dir else Path(self.state_dir or default_state_dir()) / "spool"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", sensor or socket.gethostname()).lstrip(".") or "sensor"
        return base / name / self.topic


class ArpDetectorConfig(_Section):
    """ARP spoofing: an IP claimed by a second MAC while the first still holds it (by ARP or its IP packets)."""

    enabled: bool = True
    hold_s: float = Field(300.0, gt=0, description="a claim older than this no longer holds the IP (DHCP renumbering)")
    solicit_s: float = Field(5.0, gt=0, description="a reply answers a request seen this long before it")
    max_ips_per_mac: int = Field(2, ge=2, le=1 << 16, description="distinct IPs one MAC may claim in unsolicited "
                                 "replies (not gratuitous announcements) within hold_s: at this many, all its "
                                 "unsolicited replies are flagged")
    learn_from_ip: bool = Field(True, description="a MAC that alone sources one IPv4 address, and no other, "
                                "holds it (an unsolicited ARP claim of it by another MAC is spoofing)")
    max_hosts: int = Field(65536, ge=16, le=1 << 24, description="IP bindings and requests kept (LRU beyond)")


class DnsDetectorConfig(_Section):
    """DNS spoofing: conflicting responses to one query."""

    enabled: bool = True
    window_s: float = Field(5.0, gt=0, description="responses to one query this close in time are compared")
    max_queries: int = Field(65536, ge=16, le=1 << 24, description="queries and responses kept (LRU beyond)")


def _ports_of(proto: str) -> AfterValidator:
    """A list of port numbers (1-65535) of ``proto``, or one error naming the others."""
    def check(v: list[int]) -> list[int]:
        bad = [p for p in v if not 0 < p < 65536]
        if bad:
            raise ValueError(f"not {proto} ports: {', '.join(map(str, bad))}")
        return v
    return AfterValidator(check)


TcpPorts = Annotated[list[int], _ports_of("TCP")]
UdpPorts = Annotated[list[int], _ports_of("UDP")]


class ScanDetectorConfig(_Section):
    """Port scans, ping sweeps and ARP host discovery."""

    enabled: bool = True
    window_s: float = Field(60.0, gt=0, description="failed probes are counted over this much packet time")
    ports: int = Field(20, ge=2, description="failed probes to distinct ports of one host: vertical port scan")
    hosts: int = Field(20, ge=2, description="failed probes to distinct hosts on one port: horizontal scan")
    ping_hosts: int = Field(10, ge=2, description="distinct hosts sent ICMP echo requests: ping sweep")
    arp_hosts: int = Field(20, ge=2, description="distinct unanswered ARP requests: host discovery")
    answer_s: float = Field(0.25, gt=0, description="a probe without an answer after this long failed")
    fail_ratio: float = Field(0.8, ge=0, le=1, description="share of a group's probes that must have failed")
    hold_s: float = Field(60.0, gt=0, description="a scanner stays flagged this long after its last probe")
    max_groups: int = Field(65536, ge=16, le=1 << 24, description="per-source groups kept (LRU beyond)")
    max_pending: int = Field(262144, ge=16, le=1 << 24, description="unanswered probes kept (LRU beyond)")
    sweep_ports: TcpPorts = Field(default_factory=lambda: [22, 23, 135, 139, 445, 2323, 3389, 5555, 5900, 7547],
                                  description="remote login and administration ports (SSH, telnet, RPC, SMB, RDP, "
                                  "ADB, VNC, TR-069) that worms sweep through an OS stack: failed SYNs to distinct "
                                  "hosts on one of these count for the horizontal rule whatever sends them")


class WebDetectorConfig(_Section):
    """Web attacks: HTTP requests carrying SQL injection, XSS, command injection, traversal or scanner signatures."""

    enabled: bool = True
    hold_s: float = Field(300.0, gt=0, description="a flagged connection stays flagged until it closes, or until it "
                          "has been idle this long")
    linger_s: float = Field(2.0, ge=0, description="frames of a flagged connection this long after its close (both "
                            "FINs or a RST) are flagged too: the last ACK, retransmitted FINs")
    confirm_s: float = Field(2.0, gt=0, description="a matching request on a connection whose handshake was not seen "
                             "counts when the server acknowledges its bytes within this long")
    max_pairs: int = Field(65536, ge=16, le=1 << 24, description="flagged connections kept (LRU beyond)")
    max_connections: int = Field(262144, ge=16, le=1 << 24, description="handshakes (SYN-ACKs) remembered (LRU beyond)")


class ShellDetectorConfig(_Section):
    """Backdoors: a remote command shell at work in a TCP connection (a Windows shell's banner, `id` output, a
    command line that fetches and runs a program), once the receiver acknowledges the segment."""

    enabled: bool = True
    hold_s: float = Field(300.0, gt=0, description="the two hosts' frames stay flagged this long after the last "
                          "flagged one")
    confirm_s: float = Field(2.0, gt=0, description="a matching segment counts when its receiver acknowledges its "
                             "bytes within this long")
    max_pairs: int = Field(65536, ge=16, le=1 << 24, description="flagged host pairs kept (LRU beyond)")


class BruteForceDetectorConfig(_Section):
    """Dictionary brute force: many connections to a login service, or repeated refused logins."""

    enabled: bool = True
    ports: TcpPorts = Field(default_factory=lambda: [21, 22, 23, 25, 110, 143, 465, 587, 993, 995, 1433, 3306, 3389,
                                                     5432, 5900],
                            description="authentication service ports (servers announcing SSH count too)")
    connections: int = Field(8, ge=2, le=1 << 16, description="connections (SYNs) from one client to one server's "
                             "login port within window_s")
    failures: int = Field(5, ge=2, le=1 << 16, description="refused logins in cleartext replies within window_s")
    window_s: float = Field(60.0, gt=0, description="connections and failures are counted over this much packet time")
    hold_s: float = Field(300.0, gt=0, description="an attacker's frames to/from the port stay flagged this long")
    max_keys: int = Field(65536, ge=16, le=1 << 24, description="(client, server, port) counters kept (LRU beyond)")


class FloodDetectorConfig(_Section):
    """Floods from a crowd: one host receiving SYNs, UDP or ICMP from many distinct sources within seconds."""

    enabled: bool = True
    sources: int = Field(256, ge=16, description="distinct sources sending one kind (SYN, UDP, ICMP) to one host "
                         "within window_s: a flood (a public server with that many new clients: raise it)")
    window_s: float = Field(10.0, gt=0, description="sources are counted per bucket of this much packet time")
    hold_s: float = Field(10.0, gt=0, description="a flooded host's packets of that kind stay flagged this long "
                          "after the last bucket that crossed the threshold")
    burst_sources: int = Field(32, ge=0, description="distinct sources sending SYNs or ICMP to one host within "
                               "burst_s: a short flood (0: off)")
    burst_s: float = Field(0.1, gt=0, description="burst sources are counted per bucket of this much packet time")
    max_targets: int = Field(16384, ge=16, le=1 << 24, description="(host, kind) counters kept (LRU beyond)")


class OsScanDetectorConfig(_Section):
    """Probes no stack sends: ICMP timestamp, information and address-mask requests, coded echo
    requests (Recon-OSScan); TCP segments without ACK other than a lone SYN or RST (Recon-PortScan)."""

    enabled: bool = True
    tcp_probes: bool = Field(True, description="also TCP segments without ACK other than a lone SYN or RST (NULL, "
                             "FIN, Xmas, SYN+FIN: no stack sends them; nmap -sN/-sF/-sX, OS detection): Recon-PortScan")
    hold_s: float = Field(60.0, gt=0, description="a (prober, host) pair stays flagged this long after its last probe")
    max_pairs: int = Field(65536, ge=16, le=1 << 24, description="flagged (prober, host) pairs kept (LRU beyond)")


class ReflectionDetectorConfig(_Section):
    """Reflection: a host receiving answers (DNS, NTP, SNMP, SSDP, CLDAP, memcached, chargen, TCP
    SYN-ACKs) to queries it never sent, at a rate no benign exchange has."""

    enabled: bool = True
    ports: UdpPorts = Field(default_factory=lambda: [19, 53, 123, 161, 389, 1900, 11211],
                            description="UDP source ports whose datagrams are answers (chargen, DNS, NTP, SNMP, "
                            "CLDAP, SSDP, memcached); TCP SYN-ACKs from any port are answers too")
    query_s: float = Field(60.0, gt=0, description="an answer is solicited when its receiver sent to that server:port "
                           "(a SYN for a SYN-ACK; to a multicast/broadcast group: any server) this long before")
    answers: int = Field(100, ge=2, description="unsolicited answers to one host within window_s: a reflection "
                         "(benign corpus maximum: see docs/detectors.md)")
    window_s: float = Field(10.0, gt=0, description="unsolicited answers are counted per bucket of this much packet time")
    hold_s: float = Field(10.0, gt=0, description="a victim's unsolicited answers (and fragments from its reflectors) "
                          "stay flagged this long after the last")
    max_queries: int = Field(262144, ge=16, le=1 << 24, description="slots of the query table (direct-mapped, "
                             "rounded up to a power of two; overwritten live queries are counted)")
    max_victims: int = Field(16384, ge=16, le=1 << 24, description="per-host answer counters and held victims kept "
                             "(LRU beyond)")
    icmp_sources: int = Field(20, ge=2, description="distinct hosts sending one host unsolicited ICMP errors within "
                              "window_s: backscatter (benign corpus maximum: see docs/detectors.md)")
    max_sent: int = Field(262144, ge=16, le=1 << 24, description="slots of the record of what hosts sent (sender, "
                          "protocol, ports) that ICMP errors are matched against (direct-mapped, rounded up to a power "
                          "of two; overwritten live keys are counted)")


class SlowHttpDetectorConfig(_Section):
    """Slow HTTP (slowloris, slow POST / R.U.D.Y.): many connections from one client to one server port
    holding requests the server never answers."""

    enabled: bool = True
    connections: int = Field(20, ge=2, le=1 << 16, description="open, unanswered request connections from one client "
                             "to one server port, each at least min_age_s old: slow HTTP (browsers keep at most 6)")
    min_age_s: float = Field(10.0, gt=0, description="a request connection counts once its request has been "
                             "unanswered this long")
    window_s: float = Field(120.0, gt=0, description="a connection counts while its client sent on it within this "
                            "long (slowloris sends a header line every 10-15 s, perl slowloris every 100 s)")
    hold_s: float = Field(300.0, gt=0, description="the client's frames to/from that server port stay flagged this "
                          "long after the last")
    max_connections: int = Field(65536, ge=16, le=1 << 24, description="unanswered request connections kept (LRU "
                                 "beyond)")
    max_pairs: int = Field(65536, ge=16, le=1 << 24, description="(client, server, port) groups and flagged pairs "
                           "kept (LRU beyond)")


class VolumeDetectorConfig(_Section):
    """Floods from one or a few hosts: one kind of packet from a source to a host at a rate, and with an answer
    ratio, no benign exchange has (the benign corpus's maxima per source and host in one second: 18 SYNs, 2,575
    segments without SYN, answered 52 %, 561 UDP datagrams, all answered, 2 ICMP messages, no fragments; 40 HTTP
    requests in 5 s)."""

    enabled: bool = True
    window_s: float = Field(1.0, gt=0, description="packets are counted per bucket of this much packet time")
    syn_rate: float = Field(100.0, gt=0, description="SYNs per second from one source to one host, fewer than half "
                            "followed by a completed connection: a SYN flood")
    tcp_rate: float = Field(500.0, gt=0, description="TCP segments without SYN (ACK, PSH-ACK, RST/FIN) per second "
                            "from one source to one host, unacknowledged and on a new connection for most: a TCP flood")
    unanswered: int = Field(8, ge=2, description="a TCP or UDP exchange is unanswered when the host sends back fewer "
                            "than one segment or datagram in this many (a bulk transfer's receiver acknowledges "
                            "every second segment)")
    udp_rate: float = Field(500.0, gt=0, description="unanswered UDP datagrams per second from one source to one host "
                            "that go to a closed port, to `ports` or more ports, or are short: a UDP flood")
    ports: int = Field(8, ge=2, le=4096, description="distinct destination ports of the host in one bucket: a TCP "
                       "flood hits at most this many (more is a scan's spread), unanswered UDP datagrams to this many "
                       "or more are a flood (a stream keeps to one port)")
    udp_payload: int = Field(256, ge=0, description="mean UDP payload (bytes) below which unanswered datagrams at "
                             "udp_rate are a flood (media streams carry full-size payloads)")
    udp_rate_any: float = Field(20000.0, gt=0, description="unanswered UDP datagrams per second from one source to "
                                "one host that are a flood whatever they carry")
    icmp_rate: float = Field(100.0, gt=0, description="ICMP messages per second from one source to one host (errors "
                             "answering the host's own traffic excepted): an ICMP flood")
    frag_rate: float = Field(100.0, gt=0, description="IP fragments per second from one source to one host: a "
                             "fragmentation flood")
    http_requests: int = Field(200, ge=2, description="HTTP requests from one client to one server port within "
                               "http_window_s: an HTTP flood (a browser's page load is about a hundred in a burst)")
    http_window_s: float = Field(5.0, gt=0, description="HTTP requests are counted per bucket of this much time")
    hold_s: float = Field(10.0, gt=0, description="a flood's packets stay flagged this long after the last bucket "
                          "over its threshold")
    max_keys: int = Field(65536, ge=16, le=1 << 24, description="(source, host, kind) counters kept (LRU beyond)")


class DetectorsConfig(_Section):
    """Deterministic protocol-fact detectors beside the model (docs/detectors.md)."""

    enabled: bool = Field(True, description="run the detectors on every packet batch")
    repeat_s: float = Field(60.0, ge=0, description="at most one prediction per (detector, attacker, victim, class) "
                            "per this much packet time; the repeats are counted in the next one")
    arp: ArpDetectorConfig = ArpDetectorConfig()
    dns: DnsDetectorConfig = DnsDetectorConfig()
    scan: ScanDetectorConfig = ScanDetectorConfig()
    web: WebDetectorConfig = WebDetectorConfig()
    bruteforce: BruteForceDetectorConfig = BruteForceDetectorConfig()
    shell: ShellDetectorConfig = ShellDetectorConfig()
    flood: FloodDetectorConfig = FloodDetectorConfig()
    osscan: OsScanDetectorConfig = OsScanDetectorConfig()
    volume: VolumeDetectorConfig = VolumeDetectorConfig()
    slowhttp: SlowHttpDetectorConfig = SlowHttpDetectorConfig()
    reflection: ReflectionDetectorConfig = ReflectionDetectorConfig()


class MetricsConfig(_Section):
    """The Prometheus endpoint."""

    listen: str | None = Field("127.0.0.1:9108", description="host:port of /metrics (loopback by default; null: off)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9108")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
        return v


class AlertPcapConfig(_Section):
    """The packets of what alerted, in rotated pcap files (docs/daemon.md, "Alert pcap")."""

    enabled: bool = Field(False, description="keep a ring of recent packets and write the packets of every "
                          "flagged flow and detector finding to pcap files (--alert-pcap DIR); off by default: "
                          "it stores packet contents on disk")
    dir: str | None = Field(None, description="directory of the files alerts-NNNNNN.pcap (default: "
                            "<kafka.state_dir>/pcap)")
    ring_mb: float = Field(64.0, gt=0, le=65536, description="memory for recent packets (their bytes and keys): "
                           "an alert's packets from before it are those still in it")
    follow_s: float = Field(10.0, ge=0, le=86400, description="after an alert, its key's packets are written for "
                            "this much more packet time")
    file_mb: float = Field(100.0, gt=0, le=1 << 20, description="a file is closed once it reaches this size "
                           "(and the alerts named to it have their earlier packets in it) and the next one begun")
    max_files: int = Field(10, ge=1, le=1 << 20, description="files kept; beyond, the oldest is deleted")
    max_triggers: int = Field(65536, ge=16, le=1 << 24, description="alerts waiting for the writer, and alerts "
                              "whose packets are followed at once; beyond, an alert is not recorded, or gets its "
                              "earlier packets only (counted)")


class Config(_Section):
    """The whole daemon configuration."""

    metrics: MetricsConfig = MetricsConfig()

    sensor: str | None = Field(None, description="name of this sensor in every prediction (default: the host name; "
                               "live capture: HOST/INTERFACE, so the instances on one host differ) (--sensor)")
    alerts: AlertConfig = AlertConfig()
    inference: InferenceConfig = InferenceConfig()
    kafka: KafkaConfig = KafkaConfig()

    capture: CaptureConfig = CaptureConfig()
    meter: MeterConfig = MeterConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    alert_pcap: AlertPcapConfig = AlertPcapConfig()
    lstm: LSTMSection = LSTMSection()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line (for journald/ELK)")


def _format_error(e: ValidationError, origin: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        val = err.get("input")
        shown = "" if isinstance(val, dict) else f" (got {val!r})"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}{shown}")
    return f"{origin}: invalid configuration: " + "; ".join(parts)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load ``path`` (YAML; None for the built-in defaults) and apply dotted overrides.

    ``overrides`` maps ``"section.key"`` to a value (None values are ignored, so CLI
    flags that were not given leave the file's value alone). Raises `ConfigError`
    with one line naming every bad key.
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read configuration: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a text (YAML) file: undecodable byte at offset {e.start}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the configuration must be a mapping of sections")
        data = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{origin}: section {p!r} must be a mapping")
        node[leaf] = value
        origin = origin if origin != "defaults" else "command line"
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None
