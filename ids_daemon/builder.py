"""The one place a run is put together from the configuration: source, meter, sinks,
model worker and `ids_daemon.pipeline.Pipeline`.

The daemon's ``run`` and ``replay``, ``features`` (the pipeline with the CSV sink and no
model), ``demo`` and the benchmarks all call `build_pipeline`, so they share one capture
loop with one stop and drain logic. Sinks are looked up by name in `SINKS`, the only
place that imports sink classes: moving a sink to another module changes this table.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .config import Config
from .errors import IdsError
from .sinks.base import SinkStats

log = logging.getLogger("ids_daemon.builder")


class CsvSink:
    """The CSV writer of ``features`` as a sink: windows (or per-packet rows) in, CSV rows out."""

    def __init__(self, path: str | None, per_packet: bool):
        from .features.csvwriter import CsvWindowWriter

        self.writer = CsvWindowWriter(path, per_packet=per_packet)
        self.name = f"csv:{path or 'stdout'}"
        self.stats = SinkStats()
        self._open = False

    def open(self) -> None:
        """Open the file and write the header; a second call does nothing."""
        if not self._open:
            self.writer.open()
            self._open = True

    def write_batch(self, batch: Any) -> None:
        """Append a `WindowBatch` as CSV rows."""
        self.writer.write_batch(batch)
        self.stats.received += len(batch)
        self.stats.delivered += len(batch)

    def flush(self, timeout: float | None = None) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self._open = False


class WindowCollector:
    """Keeps the windows in memory (benchmarks, tools that want the windows of a file)."""

    name = "memory"

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.stats = SinkStats()

    def open(self) -> None:
        pass

    def write_batch(self, batch: Any) -> None:
        self.parts.append(batch)
        self.stats.received += len(batch)
        self.stats.delivered += len(batch)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def windows(self) -> Any:
        """Every window written, in order, as one `WindowBatch`."""
        from .features.window import WindowBatch

        return WindowBatch.concat(self.parts)


@dataclass(frozen=True)
class SinkKind:
    """A sink the builder can make: what it takes (``predictions`` or ``windows``) and how."""

    takes: str
    make: Callable[[Config, "str | None", bool, bool], Any]  # (config, output file, per-packet rows, append)


def _jsonl(cfg: Config, output: str | None, per_packet: bool, append: bool) -> Any:
    from .sinks.jsonl import JsonlSink

    return JsonlSink(output, append=append)


def _kafka(cfg: Config, output: str | None, per_packet: bool, append: bool) -> Any:
    k = cfg.kafka
    if not k.bootstrap:
        raise IdsError("--sink kafka needs --kafka-bootstrap HOST:PORT (or kafka.bootstrap in the config)")
    from .sinks.kafka import KafkaSink

    return KafkaSink.from_config(cfg)  # its spool is created for capture.user


def _csv(cfg: Config, output: str | None, per_packet: bool, append: bool) -> Any:
    return CsvSink(output, per_packet)


# name → sink: the only place sink classes are imported
SINKS: dict[str, SinkKind] = {
    "jsonl": SinkKind("predictions", _jsonl),
    "kafka": SinkKind("predictions", _kafka),
    "csv": SinkKind("windows", _csv),
}


def make_sinks(cfg: Config, names: list[str], output: str | None, takes: str = "predictions",
               per_packet: bool = False, append: bool = True) -> list[Any]:
    """The sinks named (``output`` is the file of the one that writes a file: jsonl or csv;
    ``append``: the JSON-lines file keeps what it held, else it is replaced)."""
    valid = [n for n, k in SINKS.items() if k.takes == takes]
    out = []
    for name in names:
        kind = SINKS.get(name)
        if kind is None or kind.takes != takes:
            raise IdsError(f"unknown sink {name!r} ({' or '.join(valid)})")
        out.append(kind.make(cfg, output, per_packet, append))
    if output and not ({"jsonl", "csv"} & set(names)):
        raise IdsError("-o names the JSON-lines file: add --sink jsonl")
    return out


def warm_up() -> None:
    """Run the compiled decode and meter code (and the sequence buffer's) once on the bundled
    capture, before a live ring opens. The first frames through them load numba's compiled
    code (~0.4-0.8 s); with the ring open that stall made a fresh daemon drop its first half
    second of traffic (measured: 4,800 of 16,000 frames at 8 k packets/s into a 1 MiB ring;
    0 after)."""
    from importlib import resources

    from .capture.pcap import PcapSource
    from .config import MeterConfig
    from .features.meter import Meter

    sample = str(resources.files("ids_daemon") / "data" / "sample.pcap")
    with PcapSource(sample, batch_size=256) as src:
        batch = src.next_batch()
    if batch is not None:
        meter = Meter(MeterConfig(max_flows=16, prealloc=False))
        meter.process(batch)
        meter.advance(0.0)  # idle expiry: a quiet interface calls it, expiring nothing here
        meter.flush()
    from .sequence import warm_up as warm_up_sequences

    warm_up_sequences()


class _EarlyKernels:
    """The detectors made, and the decode and meter kernels loaded, on a thread while the
    worker is made. Start-up is seconds against a replay's run of one or two: torch's import
    about half of it, numba's first dispatch and its loading of ~30 cached kernels about a third
    (docs/daemon.md). numba's part is mostly LLVM (through ctypes, which lets the GIL go), so
    the two overlap on a second core.
    `result` joins and returns the `DetectorSet`, or raises what the thread raised."""

    def __init__(self, cfg: Config):
        import threading

        self._cfg = cfg
        self._out: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ids-kernels", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            from .detectors import DetectorSet

            self._out = DetectorSet(self._cfg.detectors)
            warm_up()
        except BaseException as e:  # noqa: BLE001 - handed to the caller by result()
            self._error = e

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def open_source(cfg: Config, read: str | None, interface: str | None, keep_raw: bool = False) -> tuple[Any, bool]:
    """The packet source: a capture file read ahead in a thread, or a live interface
    (announced on stderr once capturing); returns (source, live). ``keep_raw``: batches
    carry their frames' bytes (the alert pcap)."""
    from .capture.pcap import PcapSource

    if read is not None and interface is not None:
        raise IdsError("give either -r FILE or -i IFACE, not both")
    if read is not None:
        from .capture.prefetch import PrefetchSource

        # a filter applies to a file as it would on the interface (libpcap's interpreter)
        src = PcapSource(read, batch_size=cfg.capture.batch_size, bpf_filter=cfg.capture.filter, keep_raw=keep_raw)
        src.open()
        src.warm_up()  # before a privilege drop (the read-ahead thread may not have compiled it yet)
        # decode the next batches while this one is metered (both release the GIL)
        ahead = PrefetchSource(src)
        ahead.open()
        return ahead, False
    iface = interface or cfg.capture.interface
    if not iface:
        raise IdsError("nothing to read: give -r FILE (or -r - for stdin) or -i IFACE")
    from .capture.live import LiveSource

    warm_up()

    c = cfg.capture
    src = LiveSource(iface, bpf_filter=c.filter, snaplen=c.snaplen, ring_mb=c.ring_mb,
                     block_timeout_ms=c.block_timeout_ms, promiscuous=c.promiscuous, batch_size=c.batch_size,
                     keep_raw=keep_raw)
    src.open()
    src.warm_up()  # compiled before a privilege drop, which may leave the code's cache unwritable
    # tells a user (and a test harness) that packets are being captured from now on
    print(f"ids-daemon: capturing on {iface}" + (f" (filter: {c.filter})" if c.filter else ""),
          file=sys.stderr, flush=True)
    return src, True


def windows_of_file(cfg: Config, path: str) -> Any:
    """The meter's windows of a capture file (the ``features`` pipeline, kept in memory)."""
    keep = WindowCollector()
    pipe = build_pipeline(cfg, read=path, features=True, sink_objects=[keep])
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    if st.error:
        raise IdsError(st.error)
    return keep.windows()


def make_worker(cfg: Config, model: str | None = None, sensor: str | None = None,
                interface: str | None = None) -> Any:
    """The inference worker with the configured model (``model`` overrides inference.model);
    ``interface`` is the live capture's, named in every prediction (None for a file)."""
    from .inference.worker import InferenceWorker, set_threads

    inf = cfg.inference
    set_threads(inf.threads)
    return InferenceWorker(model or inf.model, inf.device, inf.half, inf.top_k, sensor or cfg.sensor,
                           threshold=inf.threshold, interface=interface, attribution=inf.attribution,
                           attribution_min_p=inf.attribution_min_p, engine=inf.engine)


def make_alert_pcap(cfg: Config) -> Any:
    """The alert pcap of ``alert_pcap`` (None when off); its directory defaults to
    <state_dir>/pcap."""
    ac = cfg.alert_pcap
    if not ac.enabled:
        return None
    from pathlib import Path

    from .config import default_state_dir
    from .sinks.alertpcap import AlertPcap

    if ac.dir is None:
        ac = ac.model_copy(update={"dir": str(Path(cfg.kafka.state_dir or default_state_dir()) / "pcap")})
    return AlertPcap(ac, owner=cfg.capture.user)


def build_pipeline(cfg: Config, *, read: str | None = None, interface: str | None = None,
                   sinks: list[str] | None = None, output: str | None = None, model: str | None = None,
                   worker: Any = None, features: bool = False, per_packet: bool = False,
                   speed: float | None = None, status: bool = False, metrics: Any = None,
                   count: int | None = None, duration: float | None = None, progress: bool = False,
                   sink_objects: list[Any] | None = None, source: Any = None, live: bool = False,
                   append: bool = True) -> Any:
    """Make a ready-to-run `Pipeline` from the config.

    ``features``: no model; the meter's windows (``per_packet``: its rows) go to the
    sinks (default ``csv``). Otherwise the model (``worker``, or one loaded from
    ``model``/inference.model) classifies sequences and predictions go to the sinks
    (default ``jsonl``). ``sink_objects`` are added to the named sinks (the demo's
    broker); ``source``/``live`` replace the source made from ``read``/``interface``;
    ``append``: a JSON-lines output file keeps what it held (else it is replaced). With
    ``alert_pcap`` on, a ``source`` given here must have been made with ``keep_raw``.
    The tables' memory is checked before anything is allocated (`ids_daemon.memory`).
    """
    from .features.meter import Meter
    from .memory import check_table_memory
    from .pipeline import Pipeline

    meter_cfg = cfg.meter
    detectors = None
    if features:
        worker = None
        seq_len = n_cols = 0
    else:
        if worker is None:
            early = _EarlyKernels(cfg) if cfg.detectors.enabled else None
            try:
                worker = make_worker(cfg, model,
                                     interface=None if read is not None else (interface or cfg.capture.interface))
            finally:
                detectors = early.result() if early is not None else None
        if meter_cfg.window != worker.window:
            log.warning("meter.window %d differs from the model's window %d: using the model's",
                        meter_cfg.window, worker.window)
            meter_cfg = meter_cfg.model_copy(update={"window": worker.window})
        seq_len, n_cols = worker.seq_len, len(worker.columns)
    check_table_memory(meter_cfg.max_flows, seq_len, n_cols)
    takes = "windows" if features else "predictions"
    names = list(sinks) if sinks else ([] if sink_objects else ["csv" if features else "jsonl"])
    sink_list = make_sinks(cfg, names, output, takes, per_packet, append) + list(sink_objects or [])
    alert_pcap = None if features else make_alert_pcap(cfg)
    if source is None:
        if read is not None and speed:
            # pacing needs finer batches than the reader's default
            cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"batch_size": 256})})
        source, live = open_source(cfg, read, interface, keep_raw=alert_pcap is not None)
    try:
        meter = Meter(meter_cfg, per_packet=per_packet)
        return Pipeline(cfg, source, live, meter, sink_list, worker, speed=speed, status=status, metrics=metrics,
                        count=count, duration=duration, progress=progress, alert_pcap=alert_pcap,
                        detectors=detectors)
    except BaseException:
        source.close()
        raise

