"""The ``ids-daemon`` command line (typer)."""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
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


@dataclass
class FeatureRun:
    """Totals of one features run, for the summary line."""

    frames: int = 0
    seconds: float = 0.0
    rows_written: int = 0
    error: str = ""
    kernel: tuple[int, int] | None = None  # live: (received, dropped) by the kernel
    filtered: int = 0  # files: frames the capture filter did not match


class _StopFlag:
    """Set by SIGINT/SIGTERM so a capture loop ends cleanly and flushes what it holds."""

    def __init__(self) -> None:
        self.stopped = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.stopped = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _open_source(cfg: Config, read: Optional[str], interface: Optional[str]):
    from .capture.pcap import PcapSource

    if read is not None and interface is not None:
        raise IdsError("give either -r FILE or -i IFACE, not both")
    if read is not None:
        from .capture.prefetch import PrefetchSource

        # a filter applies to a file as it would on the interface (libpcap's interpreter)
        src = PcapSource(read, batch_size=cfg.capture.batch_size, bpf_filter=cfg.capture.filter)
        src.open()
        # decode the next batches while this one is metered (both release the GIL)
        ahead = PrefetchSource(src)
        ahead.open()
        return ahead, False
    iface = interface or cfg.capture.interface
    if not iface:
        raise IdsError("nothing to read: give -r FILE (or -r - for stdin) or -i IFACE")
    from .capture.live import LiveSource

    c = cfg.capture
    src = LiveSource(iface, bpf_filter=c.filter, snaplen=c.snaplen, ring_mb=c.ring_mb,
                     block_timeout_ms=c.block_timeout_ms, promiscuous=c.promiscuous, batch_size=c.batch_size)
    src.open()
    # tells a user (and a test harness) that packets are being captured from now on
    print(f"ids-daemon: capturing on {iface}" + (f" (filter: {c.filter})" if c.filter else ""),
          file=sys.stderr, flush=True)
    return src, True


def run_features(cfg: Config, read: Optional[str], interface: Optional[str], output: Optional[str],
                 per_packet: bool, count: Optional[int] = None, duration: Optional[float] = None,
                 progress: bool = True) -> tuple[FeatureRun, Any]:
    """Read packets, meter them and write CSV rows; returns the run totals and the meter.

    SIGINT/SIGTERM end the run cleanly: what was captured is metered and written."""
    # handlers first: a signal that arrives once capture has started must end it cleanly
    with _StopFlag() as stop:
        return _run_features(stop, cfg, read, interface, output, per_packet, count, duration, progress)


def _run_features(stop: _StopFlag, cfg: Config, read: Optional[str], interface: Optional[str],
                  output: Optional[str], per_packet: bool, count: Optional[int], duration: Optional[float],
                  progress: bool) -> tuple[FeatureRun, Any]:
    from .errors import CaptureError
    from .features.csvwriter import CsvWindowWriter
    from .features.meter import Meter

    source, live = _open_source(cfg, read, interface)
    meter = Meter(cfg.meter, per_packet=per_packet)
    writer = CsvWindowWriter(output, per_packet=per_packet)
    run = FeatureRun()
    bar = None
    if progress and not live and sys.stderr.isatty() and getattr(source, "total_bytes", None):
        from tqdm import tqdm

        bar = tqdm(total=source.total_bytes, unit="B", unit_scale=True, desc="reading", file=sys.stderr, leave=False)
    t0 = time.perf_counter()
    writer.open()

    def meter_batch(batch: Any) -> None:
        if len(batch) == 0:  # live: nothing arrived; wall-clock time still expires idle keys
            out = meter.advance(time.time()) if live else None
        else:
            if count is not None and run.frames + len(batch) > count:
                batch = batch.take(slice(0, count - run.frames))
            run.frames += len(batch)
            out = meter.process(batch)
        if out is not None:
            writer.write_batch(out.rows if per_packet else out.windows)

    try:
        deadline = time.monotonic() + duration if duration else None
        drain = False
        while True:
            if stop.stopped or (deadline is not None and time.monotonic() >= deadline):
                drain = live  # frames already in the ring were captured: read them too
                break
            try:
                batch = source.next_batch()
            except CaptureError as e:
                run.error = str(e)  # keep what was read; report after the flush
                break
            if batch is None:
                break
            meter_batch(batch)
            if bar is not None:
                bar.update(source.bytes_read - bar.n)
            if count is not None and run.frames >= count:
                break
        # The kernel hands over a partly filled ring block within block_timeout_ms:
        # a few more reads collect what was captured before the stop.
        for _ in range(3 if drain else 0):
            batch = source.next_batch()
            if not batch:
                break
            meter_batch(batch)
        tail = meter.flush()
        if not per_packet:
            writer.write_batch(tail.windows)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        source.close()
    run.seconds = time.perf_counter() - t0
    run.rows_written = writer.rows
    run.filtered = source.stats.filtered
    if live:
        run.kernel = (source.stats.kernel_packets, source.stats.kernel_drops)
    return run, meter


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
    return "; ".join(parts)


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


def _make_sinks(cfg: Config, sinks: list[str], output: Optional[str]) -> list[Any]:
    from .sinks.jsonl import JsonlSink

    names = sinks or ["jsonl"]
    out: list[Any] = []
    for name in names:
        if name == "jsonl":
            out.append(JsonlSink(output))
        elif name == "kafka":
            k = cfg.kafka
            if not k.bootstrap:
                raise IdsError("--sink kafka needs --kafka-bootstrap HOST:PORT (or kafka.bootstrap in the config)")
            from .sinks.kafka import KafkaSink

            out.append(KafkaSink(k.bootstrap, k.topic, spool_dir=k.spool_dir, spool_max_bytes=k.spool_max_mb << 20,
                                 acks=k.acks, compression=k.compression, linger_ms=k.linger_ms,
                                 batch_bytes=k.batch_bytes, retry_interval_s=k.retry_interval_s,
                                 request_timeout_ms=k.request_timeout_ms, stall_timeout_s=k.stall_timeout_s,
                                 close_timeout_s=k.close_timeout_s, client_id=k.client_id,
                                 enable_idempotence=k.enable_idempotence, producer_config=dict(k.producer),
                                 sensor=cfg.sensor))
        else:
            raise IdsError(f"unknown sink {name!r} (jsonl or kafka)")
    if output and "jsonl" not in names:
        raise IdsError("-o names the JSON-lines file: add --sink jsonl")
    return out


def _run_pipeline(cfg: Config, read: Optional[str], interface: Optional[str], model: Optional[str],
                  sinks: list[str], output: Optional[str], speed: Optional[float],
                  count: Optional[int] = None, duration: Optional[float] = None) -> None:
    from .inference.worker import InferenceWorker
    from .pipeline import Pipeline

    from .logs import setup_logging

    setup_logging(cfg.log_level, cfg.log_format)
    # Signals that arrive while the model loads are kept and acted on once it runs.
    early = {"stop": False, "reload": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: early.update(stop=True))
    signal.signal(signal.SIGHUP, lambda *_: early.update(reload=True))
    worker = InferenceWorker(model or cfg.inference.model, cfg.inference.device, cfg.inference.half,
                             cfg.inference.top_k, cfg.sensor, threshold=cfg.inference.threshold)
    sink_objs = _make_sinks(cfg, sinks, output)
    if read is not None and speed:
        # pacing needs finer batches than the reader's default
        cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"batch_size": 256})})
    source, live = _open_source(cfg, read, interface)
    if count is not None or duration is not None:
        from .capture.limit import LimitedSource

        source = LimitedSource(source, count=count, duration=duration)
    if cfg.capture.user:
        from .privileges import drop_privileges

        for s in sink_objs:
            s.open()  # outputs (files, spool) are opened with the starting user's rights
        drop_privileges(cfg.capture.user)  # before a single packet is read
    status = sys.stderr.isatty()
    metrics = None
    if cfg.metrics.listen:
        from .metrics import PipelineMetrics

        metrics = PipelineMetrics()
    pipe = Pipeline(cfg, source, live, sink_objs, worker, speed=speed, status=status, metrics=metrics)

    pipe.install_signal_handlers()
    if early["stop"]:
        pipe.request_stop()
    if early["reload"]:
        pipe.request_reload()
    what = f"{interface} (live)" if live else str(read)
    print(f"ids-daemon: classifying {what} with {worker.model_info['name']} {worker.model_info['version']} "
          f"on {worker.device}", file=sys.stderr, flush=True)
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
    c = pipe.meter.counters
    filtered = getattr(source.stats, "filtered", 0)  # a file read through a capture filter
    print(f"{st.frames} frames" + (f" ({filtered} more did not match the filter)" if filtered else "")
          + f", {c.packets} metered ({c.packets_ipv6} IPv6), {c.skipped_text()}, "
          f"{st.windows} windows, {st.predictions} predictions "
          f"in {st.batches} batches (mean {st.mean_batch:.0f}), {st.dropped_sequences} sequences dropped, "
          f"{st.seconds:.2f} s ({st.frames / max(st.seconds, 1e-9):,.0f} packets/s; busy "
          + ", ".join(f"{k} {v:.2f} s" for k, v in st.busy.items())
          + f"); peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", file=sys.stderr)
    found = ", ".join(f"{k} {v}" for k, v in sorted(st.findings.items(), key=lambda kv: -kv[1]))
    print(f"model: {st.windows - st.arp_windows} windows classified, {st.arp_windows} ARP windows left to the ARP "
          f"detector; detectors: {st.detector_frames} frames flagged, {st.detector_predictions} findings published"
          + (f" ({found})" if found else ""), file=sys.stderr)
    for s in sink_objs:
        ss = s.stats
        if ss.spooled or ss.dropped or ss.failed:
            _warn(f"{s.name}: {ss.delivered} delivered, {ss.spooled} spooled, {ss.dropped} dropped")
    _report_problems(pipe.meter)
    if st.error:
        _err(st.error)
        raise typer.Exit(1)


_SINK_HELP = "jsonl (default) or kafka; repeat for several"


def _sink_options(config: Optional[Path], kafka_bootstrap: Optional[str], topic: Optional[str],
                  device: Optional[str], extra: dict[str, Any]) -> Config:
    """The config with the flags replay and run share."""
    return load_config(config, {"kafka.bootstrap": kafka_bootstrap, "kafka.topic": topic,
                                "inference.device": device, **extra})


_OPT_MODEL = typer.Option(None, "--model", help="model directory (default: the bundled model)")
_OPT_SINK = typer.Option(None, "--sink", help=_SINK_HELP)
_OPT_OUTPUT = typer.Option(None, "-o", "--output", help="JSON-lines file (default: stdout)")
_OPT_BOOTSTRAP = typer.Option(None, "--kafka-bootstrap", help="HOST:PORT of the Kafka cluster")
_OPT_TOPIC = typer.Option(None, "--topic", help="Kafka topic for predictions")
_OPT_DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N")
_OPT_CONFIG = typer.Option(None, "--config", "-c", help="config.yml")


@app.command()
def replay(
    read: str = typer.Option(..., "-r", "--read", help="pcap/pcapng file, - for stdin"),
    model: Optional[str] = _OPT_MODEL,
    fast: bool = typer.Option(False, "--fast", help="as fast as possible (the default)"),
    speed: Optional[float] = typer.Option(None, "--speed", help="pace by packet time, X times real time"),
    sink: list[str] = _OPT_SINK,
    output: Optional[str] = _OPT_OUTPUT,
    kafka_bootstrap: Optional[str] = _OPT_BOOTSTRAP,
    topic: Optional[str] = _OPT_TOPIC,
    device: Optional[str] = _OPT_DEVICE,
    config: Optional[Path] = _OPT_CONFIG,
    bpf: Optional[str] = typer.Option(None, "--filter", "-f", help="capture filter (tcpdump syntax)"),
    expression: Optional[list[str]] = _ARG_FILTER,
) -> None:
    """Classify a capture file: every window's sequence through the model, predictions to the sinks."""
    if fast and speed:
        raise IdsError("--fast and --speed exclude each other")
    if speed is not None and speed <= 0:
        raise IdsError("--speed must be positive")
    cfg = _sink_options(config, kafka_bootstrap, topic, device, {"capture.filter": _filter_expr(bpf, expression)})
    _run_pipeline(cfg, read, None, model, sink, output, speed)


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
    count: Optional[int] = typer.Option(None, "--count", min=1, help="stop after this many frames"),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="stop after this many seconds"),
    expression: Optional[list[str]] = _ARG_FILTER,
) -> None:
    """Classify live traffic on an interface until SIGINT/SIGTERM, --count or --duration (SIGHUP reloads)."""
    bpf = _filter_expr(bpf, expression)
    cfg = _sink_options(config, kafka_bootstrap, topic, device, {"capture.filter": bpf, "capture.interface": interface})
    _run_pipeline(cfg, None, interface, model, sink, output, None, count=count, duration=duration)


@app.command()
def subscribe(
    kafka_bootstrap: str = typer.Option(..., "--kafka-bootstrap", help="HOST:PORT of the Kafka cluster"),
    topic: str = typer.Option(..., "--topic", help="predictions topic"),
    group: Optional[str] = typer.Option(None, "--group", help="consumer group (commits what was printed)"),
    start: str = typer.Option("committed", "--from", help="earliest, committed or a timestamp (epoch or ISO 8601)"),
    count: Optional[int] = typer.Option(None, "--count", help="stop after N predictions"),
    as_json: bool = typer.Option(False, "--json", help="one prediction per line, exactly as published"),
    min_severity: Optional[str] = typer.Option(None, "--min-severity", help="low, medium, high or critical"),
) -> None:
    """Print predictions from the topic (the same client RL agents use)."""
    from .subscribe import run_subscribe

    raise typer.Exit(run_subscribe(kafka_bootstrap, topic, group, start, count, as_json, min_severity))


@app.command()
def alerts(
    kafka_bootstrap: str = typer.Option(..., "--kafka-bootstrap", help="HOST:PORT of the Kafka cluster"),
    topic: str = typer.Option(..., "--topic", help="predictions topic"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="config.yml (its alerts section)"),
    group: str = typer.Option("ids-alerts", "--group", help="consumer group of the alerting consumer"),
    start: str = typer.Option("committed", "--from", help="earliest, committed or a timestamp"),
) -> None:
    """Turn predictions into de-duplicated, rate-limited alerts (stdout, JSON lines, syslog, webhook)."""
    from .alerts import run_alerts
    from .logs import setup_logging
    from .subscribe import PredictionSubscriber

    cfg = load_config(config, {})
    setup_logging(cfg.log_level, cfg.log_format)
    with PredictionSubscriber(kafka_bootstrap, topic, group_id=group, start=start, auto_commit=True) as sub:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: sub.stop())
        st = run_alerts(sub, cfg.alerts)
    print(f"ids-daemon: alerts: {st}", file=sys.stderr)


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

    from .inference.worker import InferenceWorker
    from .pipeline import Pipeline
    from .sinks.jsonl import JsonlSink

    cfg = load_config(None, {})
    tmp = tempfile.TemporaryDirectory()
    out = output or str(Path(tmp.name) / "predictions.jsonl")
    sinks: list[Any] = [JsonlSink(out)]
    broker = None
    topic = "ids.predictions.demo"
    if kafka:
        try:
            from .devbroker import TansuBroker

            broker = TansuBroker().start()
            from .sinks.kafka import KafkaSink

            sinks.append(KafkaSink(broker.bootstrap, topic, spool_dir=Path(tmp.name) / "spool"))
        except Exception as e:  # noqa: BLE001 - the demo runs without a broker too
            print(f"(no local Kafka broker: {e}; predictions go to JSON lines only)")
            broker = None
    worker = InferenceWorker(cfg.inference.model, "auto", top_k=cfg.inference.top_k, sensor="demo",
                             threshold=cfg.inference.threshold)
    from .capture.pcap import PcapSource

    path = sample_pcap()
    src = PcapSource(path)
    src.open()
    pipe = Pipeline(cfg, src, False, sinks, worker)
    try:
        st = pipe.run()
    finally:
        src.close()
    preds = [json.loads(line) for line in Path(out).read_text().splitlines()]
    c = pipe.meter.counters
    print(f"bundled capture {path.name}: {st.frames} packets, {c.flows_created} flows, {st.windows} windows")
    print(f"model {worker.model_info['name']} {worker.model_info['version']} on {worker.device}: "
          f"{len(preds)} predictions in {st.batches} batches, {st.seconds:.2f} s")
    fam = collections.Counter(p["family"] for p in preds)
    print("  by family:   " + ", ".join(f"{k} {v}" for k, v in fam.most_common()))
    sev = collections.Counter(p["severity"] for p in preds)
    print("  by severity: " + ", ".join(f"{k} {sev.get(k, 0)}" for k in ("low", "medium", "high", "critical")))
    flagged = collections.Counter((p["flow"]["key"], p["predicted_attack"]) for p in preds if p["is_attack"])
    print("  most flagged keys:")
    for (key, cls), n in flagged.most_common(5):
        print(f"    {key:<36} {cls:<24} {n:>4} windows")
    example = max(preds, key=lambda p: p["risk_score"])
    print("  the riskiest prediction, as published:")
    print("    " + json.dumps(example, separators=(",", ":"))[:600])
    if output:
        print(f"  all predictions: {output}")
    if broker is not None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=3000, group_id=None)
        got = sum(1 for _ in consumer)
        consumer.close()
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
        sys.exit(1)


if __name__ == "__main__":
    main()
