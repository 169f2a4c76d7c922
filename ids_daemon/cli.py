"""The ``ids-daemon`` command line (typer)."""

from __future__ import annotations

import os
import resource
import signal
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import typer

from .config import Config, load_config
from .errors import IdsError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help, as click writes it: the rich tables put a "<bool>" placeholder on flags
    # that take no value (--quiet, --help)
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Streaming network intrusion detection on CICIoT2023 flow features.",
)


def sample_pcap() -> Path:
    """The capture bundled with the package (used by the demo)."""
    return Path(str(resources.files("ids_daemon") / "data" / "sample.pcap"))


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"ids-daemon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Streaming network intrusion detection on CICIoT2023 flow features."""


def _filter_expr(option: Optional[str], words: Optional[list[str]]) -> Optional[str]:
    """The capture filter from ``--filter`` or from the words after the options, as tcpdump,
    Suricata and Zeek take it (``ids-daemon run -i eth0 not port 22``)."""
    positional = " ".join(words) if words else None
    if option and positional:
        raise IdsError(f"two capture filters: --filter {option!r} and {positional!r}; give one")
    return option or positional


_ARG_FILTER = typer.Argument(None, metavar="[EXPRESSION]...",
                             help="capture filter (tcpdump syntax), instead of --filter")


def _err(msg: str) -> None:
    print(f"ids-daemon: error: {msg}", file=sys.stderr)


def _warn(msg: str) -> None:
    print(f"ids-daemon: warning: {msg}", file=sys.stderr)


def _info(msg: str) -> None:
    print(f"ids-daemon: {msg}", file=sys.stderr)


@dataclass
class FeatureRun:
    """Totals of one features run, for the summary line."""

    frames: int = 0
    seconds: float = 0.0
    rows_written: int = 0
    error: str = ""
    kernel: tuple[int, int] | None = None  # live: (received, dropped) by the kernel
    filtered: int = 0  # files: frames the capture filter did not match


class _EarlySignals:
    """Signals that arrive while a run is being built (model loading, source opening) are
    kept, and acted on once the pipeline runs: a SIGTERM then still ends it cleanly."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, *_: object) -> None:
        self.stop = True

    def _on_reload(self, *_: object) -> None:
        self.reload = True

    def hand_over(self, pipe: Any) -> None:
        """Install the pipeline's handlers and replay what arrived before."""
        pipe.install_signal_handlers()
        if self.stop:
            pipe.request_stop()
        if self.reload:
            pipe.request_reload()


def _ignore_late_signals() -> None:
    """The run is over and flushed: a SIGTERM/SIGINT that arrives now (say, a supervisor's
    stop racing the end of a replay) must not turn the clean exit into death by signal
    while the interpreter shuts down (Python restores the default handlers then, unless
    they are set to ignore)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def run_features(cfg: Config, read: Optional[str], interface: Optional[str], output: Optional[str],
                 per_packet: bool, count: Optional[int] = None, duration: Optional[float] = None,
                 progress: bool = True) -> tuple[FeatureRun, Any]:
    """Read packets, meter them and write CSV rows; returns the run totals and the meter.

    The daemon's pipeline with the CSV writer as its sink and no model. SIGINT/SIGTERM
    end the run cleanly: what was captured is metered and written."""
    from .builder import build_pipeline

    early = _EarlySignals()  # first: a signal once capture has started must end it cleanly
    pipe = build_pipeline(cfg, read=read, interface=interface, output=output, features=True,
                          per_packet=per_packet, count=count, duration=duration, progress=progress)
    early.hand_over(pipe)
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
        _ignore_late_signals()
    run = FeatureRun(frames=st.frames, seconds=st.seconds, rows_written=st.rows_written, error=st.error,
                     filtered=getattr(pipe.source.stats, "filtered", 0))
    if pipe.live:
        run.kernel = (pipe.source.stats.kernel_packets, pipe.source.stats.kernel_drops)
    return run, pipe.meter


def _summary(run: FeatureRun, meter: Any, what: str) -> str:
    c = meter.counters
    rate = c.frames / run.seconds if run.seconds > 0 else 0.0
    parts = [
        f"{c.frames} frames: {c.packets} metered ({c.packets_ipv6} IPv6), {c.skipped_text()}"
        + (f" ({run.filtered} more did not match the filter)" if run.filtered else ""),
        f"{run.rows_written} {what} written ({c.windows} windows, {c.partial_windows} partial)",
        f"{c.flows_created} flows, {c.pools_created} pools, {c.promoted} promoted, "
        f"{c.evicted} evicted, {c.expired_idle} idle-expired, {c.expired_active} active-expired",
        f"{run.seconds:.2f} s ({rate:,.0f} frames/s)",
    ]
    if run.kernel is not None:
        parts.append(f"kernel: {run.kernel[0]} received, {run.kernel[1]} dropped")
    from .text import agree

    return agree("; ".join(parts))


def _report_problems(meter: Any) -> None:
    c = meter.counters
    if c.malformed:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(c.malformed_by_reason.items()))
        _warn(f"skipped {c.malformed} malformed frame{'s' if c.malformed != 1 else ''} ({reasons}); "
              f"first: {c.first_malformed}")
    if c.l4_incomplete:
        _warn(f"{c.l4_incomplete} TCP/UDP packets had a cut-short transport header (metered without ports)")


@app.command()
def features(
    read: Optional[str] = typer.Option(None, "-r", "--read", help="pcap/pcapng file to read, - for stdin"),
    interface: Optional[str] = typer.Option(None, "-i", "--interface", help="capture live on this interface"),
    bpf: Optional[str] = typer.Option(None, "--filter", "-f", help="capture filter (tcpdump syntax)"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="CSV file to write (default: stdout)"),
    per_packet: bool = typer.Option(False, "--per-packet", help="one row per IP/ARP packet, before averaging"),
    window: Optional[int] = typer.Option(None, "--window", "-N", help="packets averaged per window (default 10)"),
    key_mode: Optional[str] = typer.Option(None, "--key-mode", help="flow (default) or capture (as the dataset)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.yml"),
    count: Optional[int] = typer.Option(None, "--count", help="stop after this many frames"),
    duration: Optional[float] = typer.Option(None, "--duration", help="stop after this many seconds"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no summary line"),
    expression: Optional[list[str]] = _ARG_FILTER,
) -> None:
    """Extract CICIoT2023 features from a capture file or a live interface into CSV."""
    bpf = _filter_expr(bpf, expression)
    cfg = load_config(config, {"meter.window": window, "meter.key_mode": key_mode, "capture.filter": bpf,
                           "capture.interface": interface})
    run, meter = run_features(cfg, read, interface, output, per_packet, count=count, duration=duration)
    _report_problems(meter)
    if not quiet:
        print(_summary(run, meter, "rows" if per_packet else "windows"), file=sys.stderr)
    if run.error:
        _err(run.error)
        raise typer.Exit(1)


def instance_sensor(cfg: Config, interface: Optional[str]) -> Config:
    """The config with `sensor` defaulted per instance: HOST/INTERFACE for a live capture,
    so the daemons of one host (one per interface) tell their predictions apart."""
    if cfg.sensor or not interface:
        return cfg
    import socket

    return cfg.model_copy(update={"sensor": f"{socket.gethostname()}/{interface}"})


def _run_pipeline(cfg: Config, read: Optional[str], interface: Optional[str], model: Optional[str],
                  sinks: list[str], output: Optional[str], speed: Optional[float],
                  count: Optional[int] = None, duration: Optional[float] = None, append: bool = True) -> None:
    from .builder import build_pipeline
    from .logs import setup_logging

    cfg = instance_sensor(cfg, interface)

    setup_logging(cfg.log_level, cfg.log_format)
    early = _EarlySignals()
    metrics = None
    if cfg.metrics.listen:
        from .metrics import PipelineMetrics

        metrics = PipelineMetrics(interface=interface)
    pipe = build_pipeline(cfg, read=read, interface=interface, sinks=sinks, output=output, model=model,
                          speed=speed, status=sys.stderr.isatty(), metrics=metrics,
                          count=count, duration=duration, append=append)
    source, live, worker, sink_objs = pipe.source, pipe.live, pipe.worker, pipe.sinks
    if metrics is not None:
        metrics.instance["sensor"] = worker.sensor  # the worker settles the default name
    if cfg.capture.user:
        from .privileges import drop_privileges

        for s in sink_objs:
            s.open()  # outputs (files, spool) are opened with the starting user's rights
        if pipe.alert_pcap is not None:
            pipe.alert_pcap.open()  # its directory is made (and given to capture.user) before the drop
        # Nothing the run does later may import or compile: the target user may not read the
        # checkout, the virtualenv or the interpreter's library (an install in root's home)
        import encodings.idna  # noqa: F401 - socket.getaddrinfo's codec (the metrics endpoint)
        import http.server  # noqa: F401 - the metrics endpoint
        from . import metrics as _metrics, notify as _notify, text as _text  # noqa: F401
        if not live:
            from .builder import warm_up

            warm_up()  # the meter's compiled code (a live source's opening ran it)
        from .detectors import publish as _publish  # noqa: F401
        from .features import ciciot as _ciciot  # noqa: F401
        drop_privileges(cfg.capture.user)  # before a single packet is read
    early.hand_over(pipe)
    what = f"{interface} (live)" if live else str(read)
    print(f"ids-daemon: classifying {what} with {worker.model_info['name']} {worker.model_info['version']} "
          f"on {worker.device} ({worker.operating_point_text()})", file=sys.stderr, flush=True)
    if metrics is not None and metrics.serve(cfg.metrics.listen):
        print(f"ids-daemon: metrics on http://{cfg.metrics.listen}/metrics", file=sys.stderr, flush=True)
    from .notify import notify

    notify(f"READY=1\nSTATUS=classifying {what}\nMAINPID={os.getpid()}")
    try:
        st = pipe.run()
    finally:
        notify("STOPPING=1")
        source.close()
        if metrics is not None:
            metrics.close()
        _ignore_late_signals()
    c = pipe.meter.counters
    kd = pipe.kernel_drops()
    kernel = (f"kernel: {source.stats.kernel_packets} received, {kd} dropped; " if kd is not None else "")
    filtered = getattr(source.stats, "filtered", 0)  # a file read through a capture filter
    from .text import agree

    print(agree(f"{st.frames} frames" + (f" ({filtered} more did not match the filter)" if filtered else "")
          + f", {c.packets} metered ({c.packets_ipv6} IPv6), {c.skipped_text()}, "
          f"{st.windows} windows, {st.predictions} predictions "
          f"in {st.batches} batches (mean {st.mean_batch:.0f}), {kernel}queue drops: "
          f"{st.dropped_sequences} sequences, {st.dropped_findings} findings; coalesced (superseded by their key's "
          f"newer sequence while the worker lagged): {st.coalesced_sequences} sequences; refused (invalid under the schema): "
          f"{pipe.worker.refused}; {st.seconds:.2f} s ({st.frames / max(st.seconds, 1e-9):,.0f} packets/s; busy "
          + ", ".join(f"{k} {v:.2f} s" for k, v in st.busy.items())
          + f"); peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"), file=sys.stderr)
    found = ", ".join(f"{k} {v}" for k, v in sorted(st.findings.items(), key=lambda kv: -kv[1]))
    print(agree(f"model: {st.windows - st.arp_windows} windows classified, {st.arp_windows} ARP windows left to the "
          f"ARP detector; detectors: {st.detector_frames} frames flagged"
          + (f" ({st.claimed_frames} left to them, not metered)" if st.claimed_frames else "")
          + f", {st.detector_predictions} findings published" + (f" ({found})" if found else "")), file=sys.stderr)
    ap = pipe.alert_pcap
    if ap is not None:
        (_warn if ap.losses() else _info)(ap.summary())
    for s in sink_objs:
        ss = s.stats
        if hasattr(s, "summary"):  # exact: delivered (some after the spool), kept in the spool, dropped
            (_warn if ss.dropped or ss.extra.get("spool_records") else _info)(f"{s.name}: {s.summary()}")
        elif ss.spooled or ss.dropped or ss.failed:
            _warn(f"{s.name}: {ss.delivered} delivered, {ss.spooled} spooled, {ss.dropped} dropped")
    if read is not None and sink_objs and sum(s.stats.received for s in sink_objs) \
            and not any(s.stats.delivered for s in sink_objs):
        # a replay is a batch job: nothing reached any destination (it all waits in a spool)
        _err("nothing was delivered to any sink")
        raise typer.Exit(1)
    _report_problems(pipe.meter)
    if st.error:
        _err(st.error)
        raise typer.Exit(1)


_SINK_HELP = "jsonl (default) or kafka; repeat for several"


def _alert_pcap(directory: Optional[str]) -> dict[str, Any]:
    """--alert-pcap DIR: the alert pcap on, in DIR (not given: the config decides)."""
    return {"alert_pcap.enabled": True, "alert_pcap.dir": directory} if directory else {}


def _sink_options(config: Optional[Path], kafka_bootstrap: Optional[str], topic: Optional[str],
                  device: Optional[str], extra: dict[str, Any]) -> Config:
    """The config with the flags replay and run share."""
    metrics_off = extra.get("metrics.listen") == "off"  # an override of None would mean "not given"
    if metrics_off:
        extra = {**extra, "metrics.listen": None}
    cfg = load_config(config, {"kafka.bootstrap": kafka_bootstrap, "kafka.topic": topic,
                               "inference.device": device, **extra})
    if metrics_off:
        cfg.metrics.listen = None
    return cfg


_OPT_MODEL = typer.Option(None, "--model", help="model directory (default: the bundled model)")
_OPT_SINK = typer.Option(None, "--sink", help=_SINK_HELP)
_OPT_OUTPUT = typer.Option(None, "-o", "--output", help="JSON-lines file (default: stdout)")
_OPT_BOOTSTRAP = typer.Option(None, "--kafka-bootstrap", help="HOST:PORT of the Kafka cluster")
_OPT_TOPIC = typer.Option(None, "--topic", help="Kafka topic for predictions")
_OPT_DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N")
_OPT_CONFIG = typer.Option(None, "--config", "-c", help="config.yml")
_OPT_SENSOR = typer.Option(None, "--sensor", help="this sensor's name in every prediction "
                           "(default: sensor in the config, else HOST/INTERFACE live, the host name on replay)")
_OPT_ALERT_PCAP = typer.Option(None, "--alert-pcap", metavar="DIR",
                               help="write the packets of every flagged flow and detector finding to rotated pcap "
                               "files in DIR, named in the prediction's pcap_file (alert_pcap in the config)")
_OPT_METRICS = typer.Option(None, "--metrics-listen", metavar="HOST:PORT",
                            help="Prometheus /metrics endpoint, or off (default: metrics.listen, 127.0.0.1:9108); "
                            "one per instance when several run on a host")


@app.command()
def replay(
    read: str = typer.Option(..., "-r", "--read", help="pcap/pcapng file, - for stdin"),
    model: Optional[str] = _OPT_MODEL,
    speed: Optional[float] = typer.Option(None, "--speed", help="pace by packet time, X times real time"),
    sink: list[str] = _OPT_SINK,
    output: Optional[str] = _OPT_OUTPUT,
    kafka_bootstrap: Optional[str] = _OPT_BOOTSTRAP,
    topic: Optional[str] = _OPT_TOPIC,
    device: Optional[str] = _OPT_DEVICE,
    config: Optional[Path] = _OPT_CONFIG,
    sensor: Optional[str] = _OPT_SENSOR,
    metrics_listen: Optional[str] = _OPT_METRICS,
    bpf: Optional[str] = typer.Option(None, "--filter", "-f", help="capture filter (tcpdump syntax)"),
    append: bool = typer.Option(False, "--append", help="add to the -o file instead of replacing it"),
    alert_pcap: Optional[str] = _OPT_ALERT_PCAP,
    expression: Optional[list[str]] = _ARG_FILTER,
) -> None:
    """Classify a capture file: every window's sequence through the model, predictions to the sinks
    (as fast as it can be read, or paced by packet time with --speed). The -o file is replaced,
    as tcpdump -w replaces its file, unless --append."""
    if speed is not None and speed <= 0:
        raise IdsError("--speed must be positive")
    cfg = _sink_options(config, kafka_bootstrap, topic, device, {"sensor": sensor, "metrics.listen": metrics_listen,
                                                                 "capture.filter": _filter_expr(bpf, expression),
                                                                 **_alert_pcap(alert_pcap)})
    _run_pipeline(cfg, read, None, model, sink, output, speed, append=append)


@app.command()
def run(
    interface: str = typer.Option(..., "-i", "--interface", help="capture on this interface"),
    bpf: Optional[str] = typer.Option(None, "--filter", "-f", help="capture filter (tcpdump syntax)"),
    model: Optional[str] = _OPT_MODEL,
    sink: list[str] = _OPT_SINK,
    output: Optional[str] = _OPT_OUTPUT,
    kafka_bootstrap: Optional[str] = _OPT_BOOTSTRAP,
    topic: Optional[str] = _OPT_TOPIC,
    device: Optional[str] = _OPT_DEVICE,
    config: Optional[Path] = _OPT_CONFIG,
    sensor: Optional[str] = _OPT_SENSOR,
    metrics_listen: Optional[str] = _OPT_METRICS,
    count: Optional[int] = typer.Option(None, "--count", min=1, help="stop after this many frames"),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="stop after this many seconds"),
    alert_pcap: Optional[str] = _OPT_ALERT_PCAP,
    expression: Optional[list[str]] = _ARG_FILTER,
) -> None:
    """Classify live traffic on an interface until SIGINT/SIGTERM, --count or --duration (SIGHUP reloads).
    The -o file is a long-lived log: a restart adds to it (rotate it with logrotate's copytruncate)."""
    bpf = _filter_expr(bpf, expression)
    cfg = _sink_options(config, kafka_bootstrap, topic, device, {"capture.filter": bpf, "capture.interface": interface,
                                                                 "sensor": sensor, "metrics.listen": metrics_listen,
                                                                 **_alert_pcap(alert_pcap)})
    _run_pipeline(cfg, None, interface, model, sink, output, None, count=count, duration=duration)


_OPT_CONSUMER_BOOTSTRAP = typer.Option(None, "--kafka-bootstrap",
                                       help="HOST:PORT of the Kafka cluster (default: kafka.bootstrap in the config)")


def _consumer_config(config: Optional[Path], bootstrap: Optional[str]) -> tuple[Config, str]:
    """The config (its kafka section's bootstrap and TLS/SASL settings, shared with the
    producer) and the bootstrap to read from; logging set up so the consumer says what
    it waits for (joining its group, partitions assigned)."""
    from .logs import setup_logging

    cfg = load_config(config, {"kafka.bootstrap": bootstrap})
    setup_logging(cfg.log_level, cfg.log_format)
    if not cfg.kafka.bootstrap:
        raise IdsError("--kafka-bootstrap HOST:PORT is needed (or kafka.bootstrap in the config)")
    return cfg, cfg.kafka.bootstrap


@app.command()
def subscribe(
    kafka_bootstrap: Optional[str] = _OPT_CONSUMER_BOOTSTRAP,
    topic: str = typer.Option(..., "--topic", help="predictions topic"),
    group: Optional[str] = typer.Option(None, "--group", help="consumer group (commits what was printed)"),
    start: str = typer.Option("committed", "--from", help="earliest, committed or a timestamp (epoch or ISO 8601)"),
    count: Optional[int] = typer.Option(None, "--count", help="stop after N predictions"),
    as_json: bool = typer.Option(False, "--json", help="one prediction per line, exactly as published"),
    min_severity: Optional[str] = typer.Option(None, "--min-severity", help="low, medium, high or critical"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.yml (its kafka section: bootstrap, "
                                          "security)"),
) -> None:
    """Print predictions from the topic (the same client RL agents use)."""
    from .consumers.subscribe import run_subscribe

    cfg, bootstrap = _consumer_config(config, kafka_bootstrap)
    raise typer.Exit(run_subscribe(bootstrap, topic, group, start, count, as_json, min_severity,
                                   security=cfg.kafka.security, consumer_config=cfg.kafka.consumer))


@app.command()
def alerts(
    kafka_bootstrap: Optional[str] = _OPT_CONSUMER_BOOTSTRAP,
    topic: Optional[str] = typer.Option(None, "--topic", help="predictions topic (not with --input)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.yml (its alerts section, and kafka: "
                                          "bootstrap, security)"),
    group: str = typer.Option("ids-alerts", "--group", help="consumer group of the alerting consumer"),
    start: str = typer.Option("committed", "--from", help="earliest, committed or a timestamp"),
    read: Optional[str] = typer.Option(None, "--input", "-r", help="read predictions from a JSON-lines file "
                                       "(e.g. replay -o), - for stdin, instead of Kafka"),
    eve: Optional[str] = typer.Option(None, "--eve", metavar="PATH", help="also write Suricata EVE alert records "
                                      "to PATH (an eve output; see docs/alerts-eve.md)"),
) -> None:
    """Turn predictions into de-duplicated, rate-limited alerts (stdout, JSON lines, syslog, webhook, Suricata EVE)."""
    from .consumers.alerts import run_alerts

    if read is None and topic is None:
        raise IdsError("--topic is needed (or --input FILE to read predictions from a JSON-lines file)")
    if read is not None and topic is not None:
        raise IdsError("--input and --topic exclude each other: read a file or a topic")
    if read is None:
        cfg, bootstrap = _consumer_config(config, kafka_bootstrap)
    else:
        from .logs import setup_logging

        cfg, bootstrap = load_config(config), ""
        setup_logging(cfg.log_level, cfg.log_format)
    if eve is not None:
        from pydantic import ValidationError

        from .consumers.alerts import EveOutputConfig

        try:
            cfg.alerts.outputs = [*cfg.alerts.outputs, EveOutputConfig(path=eve)]
        except ValidationError as e:
            from .errors import ConfigError

            raise ConfigError(f"--eve: {e.errors()[0]['msg']} (got {eve!r})") from None
    if read is not None:
        import threading

        from .predictions.read import SkippedLines, read_predictions

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        skipped = SkippedLines()
        st = run_alerts(read_predictions(read, skipped), cfg.alerts, stop=stop)
        if skipped.count:
            _warn(f"alerts: {skipped.text(read)}")
    else:
        from .consumers.subscribe import PredictionSubscriber

        with PredictionSubscriber(bootstrap, topic, group_id=group, start=start, auto_commit=True,
                                  security=cfg.kafka.security, consumer_config=cfg.kafka.consumer) as sub:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: sub.stop())
            st = run_alerts(sub, cfg.alerts)
    print("ids-daemon: alerts: " + st.summary().replace("\n", "\n  "), file=sys.stderr)


@app.command()
def report(
    read: str = typer.Argument(..., metavar="PREDICTIONS", help="JSON-lines predictions (replay -o, the jsonl "
                               "sink), - for stdin"),
    output: str = typer.Option(..., "-o", "--output", help="HTML file to write, - for stdout"),
    top: int = typer.Option(20, "--top", min=1, help="rows in the host tables"),
) -> None:
    """One self-contained HTML page of a predictions file: flagged packets over time by family,
    top attacked and attacking hosts, severities, the detectors' findings and the run's totals."""
    from .report import write_report
    from .text import agree

    agg, skipped = write_report(read, output, top=top)
    if skipped.count:
        _warn(f"report: {skipped.text(read)}")
    where = "stdout" if output == "-" else output
    _info(agree(f"report: {agg.predictions:,} predictions ({agg.flagged:,} flagged, "
                f"{agg.detector_findings:,} detector finding{'s' if agg.detector_findings != 1 else ''}) -> {where}"))


@app.command("compile")
def compile_kernels(
    jobs: int = typer.Option(2, "-j", "--jobs", min=1, help="processes compiling at once"),
) -> None:
    """Compile the numba kernels into their cache now (scripts/setup.sh runs this): a fresh
    install's first run otherwise spends about 90 s of CPU compiling before its first packet."""
    from .precompile import compile_all

    rep = compile_all(jobs)
    if rep.failed_groups:
        _warn(f"compile: groups {', '.join(rep.failed_groups)} failed in their processes; compiled here instead")
    _info(f"compile: numba kernels cached in {rep.seconds:.0f} s"
          + (f" ({rep.compiled_after} compiled by the final pass)" if rep.compiled_after else ""))


@app.command()
def demo(
    output: Optional[str] = typer.Option(None, "-o", "--output", help="JSON-lines file for the predictions"),
    kafka: bool = typer.Option(True, "--kafka/--no-kafka",
                               help="also publish to a local Kafka-protocol broker (Tansu) and read the topic back"),
) -> None:
    """The full pipeline on embedded defaults: the bundled capture and model, predictions
    printed, and (when the Tansu broker is installed) published to a local broker the
    command starts and read back by a subscriber."""
    import collections
    import json
    import tempfile

    from .builder import build_pipeline

    cfg = load_config(None, {"sensor": "demo", "inference.device": "auto", "metrics.listen": None})
    tmp = tempfile.TemporaryDirectory()
    out = output or str(Path(tmp.name) / "predictions.jsonl")
    broker = None
    topic = "ids.predictions.demo"
    names = ["jsonl"]
    if kafka:
        try:
            from .devbroker import TansuBroker

            broker = TansuBroker().start()
            cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={
                "bootstrap": broker.bootstrap, "topic": topic, "spool_dir": str(Path(tmp.name) / "spool")})})
            names.append("kafka")
        except Exception as e:  # noqa: BLE001 - the demo runs without a broker too
            print(f"(no local Kafka broker: {e}; predictions go to JSON lines only)")
            broker = None
    path = sample_pcap()
    pipe = build_pipeline(cfg, read=str(path), sinks=names, output=out, append=False)  # one run, one file
    worker = pipe.worker
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    preds = [json.loads(line) for line in Path(out).read_text().splitlines()]
    from .text import plural

    c = pipe.meter.counters
    print(f"bundled capture {path.name}: {st.frames} packets, {c.flows_created} flows, {st.windows} windows")
    print(f"model {worker.model_info['name']} {worker.model_info['version']} on {worker.device}: "
          + plural(len(preds), "prediction") + f" in {plural(st.batches, 'batch', 'batches')}, {st.seconds:.2f} s")
    fam = collections.Counter(p["family"] for p in preds)
    print("  by family:   " + ", ".join(f"{k} {v}" for k, v in fam.most_common()))
    sev = collections.Counter(p["severity"] for p in preds)
    print("  by severity: " + ", ".join(f"{k} {sev.get(k, 0)}" for k in ("low", "medium", "high", "critical")))
    # ranked by packets: a detector's finding covers a whole flood in one prediction
    flagged: dict[tuple[str, str], list[int]] = {}  # (key, class) -> [packets, predictions]
    for p in preds:
        if p["is_attack"]:
            acc = flagged.setdefault((p["flow"]["key"], p["predicted_attack"]), [0, 0])
            acc[0] += p["window"]["packets"]
            acc[1] += 1
    print("  most flagged keys (packets):")
    for (key, cls), (n, k) in sorted(flagged.items(), key=lambda kv: -kv[1][0])[:5]:
        print(f"    {key:<36} {cls:<24} {n:>5} in {plural(k, 'prediction')}")
    from .demo import report, sample_scenarios

    print("  what the capture holds, and what was flagged in each part (by the time its window ended):")
    for line in report(preds, sample_scenarios()):
        print("    " + line)
    example = max(preds, key=lambda p: p["risk_score"])
    print("  the riskiest prediction, as published:")
    print("    " + json.dumps(example, separators=(",", ":")))
    if output:
        print(f"  all predictions: {output}")
    if broker is not None:
        from .consumers.subscribe import PredictionSubscriber

        with PredictionSubscriber(broker.bootstrap, topic, start="earliest", poll_timeout_ms=500) as sub:
            got = 0
            while got < len(preds):
                batch = sub.poll(timeout_ms=3000)
                if not batch:
                    break
                got += len(batch)
        broker.stop()
        print(f"Kafka: published to topic {topic!r} on a local broker ({broker.bootstrap}); "
              f"a subscriber read back {got} of {len(preds)} predictions")
    tmp.cleanup()


def main() -> None:
    """Console entry point: user errors are one line on stderr, never a traceback."""
    try:
        app()
    except IdsError as e:
        _err(str(e))
        sys.exit(e.exit_code)  # 2: bad configuration or model metadata (nothing was run)


if __name__ == "__main__":
    main()
