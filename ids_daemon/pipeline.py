"""The one capture loop: source → meter → (sequences → worker in micro-batches) → sinks.

Every run goes through it, built by `ids_daemon.builder`: the daemon (``run``,
``replay``, ``demo``), where windows become sequences for the model and predictions go
to the sinks, and ``features``, where the meter's windows (or per-packet rows) go
straight to the CSV sink.

Three threads joined by bounded queues, so a slow stage pushes back instead of growing
memory: the calling thread captures, meters and builds sequences; a worker thread
forms micro-batches (`ids_daemon.inference.batcher`) and runs the model; a sink thread
writes. Replaying a file, a full queue blocks the reader (nothing is dropped);
capturing live, while the sequence queue is full the sequences built meanwhile wait on
the capture thread, and of those only each key's newest is kept (counted as coalesced;
`ids_daemon.inference.coalesce`), so every key still gets a verdict; keys beyond
``inference.coalesce_keys`` are dropped and counted (``inference.overload: drop``:
every sequence that does not fit is dropped, as before). The kernel ring keeps the
capture itself going. Windows for the CSV sink are never dropped.

Stopping (SIGINT/SIGTERM, end of file, ``count``/``duration``, a capture error):
capture stops, what the ring still holds is read, every partial window and sequence
goes through the model, the sinks are flushed.

SIGHUP reloads the model without stalling capture: a loader thread hashes, reads and
probes the model directory and moves it to the device; the capture thread then only
queues a marker behind the sequences built for the old model (switching the sequence
buffer if the new model wants other columns or another length), and the worker
switches models at that marker, between two batches. No sequence is lost. A model
whose window N differs from the meter's is refused (the meter's N is fixed for the run).
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Config
from .errors import CaptureError
from .features.meter import Meter, MeterOutput
from .features.window import POOL_PROTO_ARP
from .inference.batcher import MicroBatcher
from .inference.coalesce import Coalescer
from .notify import notify  # imported now: after a privilege drop the checkout may be unreadable
from .sequence import SequenceBatch, SequenceBuffer
from .sinks.base import EncodedBatch, Sink

if TYPE_CHECKING:  # torch comes with them: `features` (no model) starts 2 s sooner without it
    from .inference.worker import InferenceWorker
    from .model.artifacts import LoadedModel

log = logging.getLogger("ids_daemon.pipeline")

_END = object()
_DRAIN_READS = 3  # live: the kernel hands over a partly filled ring block within its timeout


@dataclass
class PipelineStats:
    """Counters of one run (the status line and the summary print these)."""

    frames: int = 0
    windows: int = 0
    arp_windows: int = 0  # ARP windows the model leaves to the ARP detector (not classified)
    sequences: int = 0
    predictions: int = 0
    rows_written: int = 0  # features: windows (or per-packet rows) handed to the sinks
    dropped_sequences: int = 0  # live only: the worker could not keep up
    coalesced_sequences: int = 0  # live only: superseded by a newer sequence of the same key while the worker lagged
    detector_frames: int = 0  # frames a protocol-fact detector flagged
    claimed_frames: int = 0  # of those, frames kept out of the model's windows (the model's detector_claims)
    findings: dict[str, int] = field(default_factory=dict)  # detector findings per class (before the rate limit)
    detector_predictions: int = 0  # findings published (after the rate limit)
    dropped_findings: int = 0  # live only: the sink queue was full
    batches: int = 0
    batched_sequences: int = 0  # sum of the micro-batch sizes (a count and a sum, not a list: runs last months)
    reloads: int = 0
    reload_failures: int = 0
    reload_seconds: float = 0.0  # time the loader thread spent loading models (capture ran meanwhile)
    seconds: float = 0.0
    busy: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "meter": 0.0, "model": 0.0, "sinks": 0.0})
    error: str = ""

    @property
    def mean_batch(self) -> float:
        return self.batched_sequences / self.batches if self.batches else 0.0


@dataclass
class _Reload:
    loaded: LoadedModel


class Pipeline:
    """Runs a packet source through the meter into the sinks, through the model when there
    is a ``worker`` (predictions), straight when there is none (windows or rows, as the
    meter was made: ``Meter(per_packet=...)``). Made by `ids_daemon.builder.build_pipeline`.
    ``detectors``: the `DetectorSet` to run (None: one made here from the config)."""

    def __init__(self, cfg: Config, source: Any, live: bool, meter: Meter, sinks: list[Sink],
                 worker: InferenceWorker | None = None, *, speed: float | None = None, status: bool = False,
                 metrics: Any = None, count: int | None = None, duration: float | None = None,
                 progress: bool = False, alert_pcap: Any = None, detectors: Any = None):
        self.cfg = cfg
        self.source = source
        self.live = live
        self.meter = meter
        self.sinks = sinks
        self.worker = worker
        self.speed = speed
        self.status = status
        self.count = count
        self.duration = duration
        self.progress = progress
        self.stats = PipelineStats()
        # the packets of what alerted (ids_daemon.sinks.alertpcap): fed each batch, asked by the
        # detectors here and by the worker for its flagged predictions
        self.alert_pcap = alert_pcap if worker is not None else None
        if worker is not None:
            worker.alert_pcap = self.alert_pcap  # a worker reused across runs follows this run's setting
        self.metrics = metrics  # a PipelineMetrics, or None
        if metrics is not None:
            metrics.pipeline = self
        self.detectors = None
        self.seqbuf: SequenceBuffer | None = None
        if worker is not None:
            if meter.config.window != worker.window:
                raise ValueError(f"meter window {meter.config.window} != model window {worker.window}")
            self.seqbuf = SequenceBuffer(worker.seq_len, worker.columns, meter.config.max_flows)
            if cfg.detectors.enabled:
                from .detectors import DetectorSet
                from .detectors.publish import RateLimiter

                # made already (start-up overlapped with the model's: ids_daemon.builder), or here
                self.detectors = detectors if detectors is not None else DetectorSet(cfg.detectors)
                self._limiter = RateLimiter(cfg.detectors.repeat_s)
        qn = cfg.inference.queue_batches
        self._q_seq: queue.Queue = queue.Queue(maxsize=qn)
        # live, worker lagging: sequences wait here, newest per key (capture thread only)
        self._held: Coalescer | None = (Coalescer(cfg.inference.coalesce_keys)
                                        if worker is not None and live and cfg.inference.overload == "coalesce"
                                        else None)
        self._q_out: queue.Queue = queue.Queue(maxsize=qn)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._loader: threading.Thread | None = None
        self._next_model: LoadedModel | None = None  # loaded by the loader, queued by the capture thread
        self._failure: BaseException | None = None

    # ---- control ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """End the run cleanly (what was captured is still classified and written)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Load the model again (on a loader thread) and switch to it between two batches."""
        self._reload.set()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop, SIGHUP reloads (main thread only)."""
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # ---- run -------------------------------------------------------------------------------
    def run(self) -> PipelineStats:
        """Run to the end of the input or until stopped; returns the counters."""
        t0 = time.perf_counter()
        for s in self.sinks:
            s.open()  # idempotent: the CLI may have opened them before dropping privileges
        if self.alert_pcap is not None:
            self.alert_pcap.open()
        threads = [threading.Thread(target=self._guard(self._write, self._q_out), name="ids-sinks", daemon=True)]
        if self.worker is not None:
            threads.append(threading.Thread(target=self._guard(self._work, self._q_seq), name="ids-worker",
                                            daemon=True))
        for t in threads:
            t.start()
        bar = self._progress_bar()
        try:
            self._ingest(bar)
        except BaseException as e:  # noqa: BLE001 - reported after the flush below
            self.stats.error = self.stats.error or str(e)
            self._failure = self._failure or e
        finally:
            self._release_held(block=True)  # what waited is classified too
            self._put(self._q_seq if self.worker is not None else self._q_out, _END, block=True)
            for t in reversed(threads):
                t.join()
            if self._loader is not None:
                self._loader.join()
            if self.alert_pcap is not None:
                self.alert_pcap.close()  # what the last alerts want from the ring is written
            for s in self.sinks:
                try:
                    s.flush(timeout=30)
                finally:
                    s.close()
            if bar is not None:
                bar.close()
            self.stats.seconds = time.perf_counter() - t0
            if self.status:
                self._read_kernel_stats()
                self._print_status(final=True)
        return self.stats

    def _guard(self, fn, inbox: queue.Queue):
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - a dead stage must stop the others
                self._failure = e
                self._stop.set()
                log.exception("pipeline stage failed")
                # keep draining so the other stages are never blocked on a full queue
                while inbox.get() is not _END:
                    pass
                if inbox is self._q_seq:
                    self._put(self._q_out, _END, block=True)
        return run

    def _put(self, q: queue.Queue, item: object, block: bool) -> bool:
        if block:
            q.put(item)
            return True
        try:
            q.put_nowait(item)
            return True
        except queue.Full:
            return False

    def _progress_bar(self) -> Any:
        if not self.progress or self.live or not sys.stderr.isatty() or not getattr(self.source, "total_bytes", None):
            return None
        from tqdm import tqdm

        return tqdm(total=self.source.total_bytes, unit="B", unit_scale=True, desc="reading", file=sys.stderr,
                    leave=False)

    # ---- stage 1: capture, meter, sequences (calling thread) -------------------------------
    def _ingest(self, bar: Any = None) -> None:
        src = self.source
        wall0 = ts0 = None
        last_status = time.monotonic()
        deadline = time.monotonic() + self.duration if self.duration else None
        drain = 0
        while True:
            if self._failure is not None:
                raise RuntimeError(f"pipeline stage failed: {self._failure}")
            if deadline is not None and time.monotonic() >= deadline:
                self._stop.set()
            if self._stop.is_set():
                if not self.live or drain >= _DRAIN_READS:
                    break
                drain += 1
            self._control()
            if time.monotonic() - last_status >= 1.0:  # also while idle: drops show when they happen
                last_status = time.monotonic()
                self._read_kernel_stats()  # here, on the capture thread that owns the socket
                if self.status:
                    self._print_status()
            t = time.perf_counter()
            try:
                batch = src.next_batch()
            except CaptureError as e:
                self.stats.error = str(e)  # keep what was read: metered, classified and written below
                break
            self.stats.busy["read"] += time.perf_counter() - t
            if batch is None:
                break
            if len(batch) == 0:
                if self._stop.is_set() and not self.live:
                    break
                # live and stopping: an empty read may come before the kernel retires the block
                # that holds the last frames (block_timeout_ms); the drain count above ends it
                if self.live:  # nothing arrived: wall-clock time still expires idle keys
                    self._meter_out(self.meter.advance(time.time()))
                continue
            if self.count is not None and self.stats.frames + len(batch) > self.count:
                batch = batch.take(slice(0, self.count - self.stats.frames))
            if self.alert_pcap is not None:
                self.alert_pcap.add(batch)  # before the detectors: a finding's own batch is in the ring
            if self.speed:
                if wall0 is None:
                    wall0, ts0 = time.monotonic(), float(batch.ts[0])
                self._pace(wall0 + (float(batch.ts[0]) - ts0) / self.speed)
            n = len(batch)
            t = time.perf_counter()
            claimed = 0
            if self.detectors is not None:
                flagged = self._detect(batch)
                if self.worker.detector_claims and flagged.any():
                    claimed = int(flagged.sum())
                    batch = batch.take(~flagged)
            out = self.meter.process(batch)
            # counted together after the meter: a /metrics scrape between two batches sees every
            # frame read as metered, skipped, malformed or claimed
            self.stats.frames += n
            self.stats.claimed_frames += claimed
            self._meter_out(out)
            self.stats.busy["meter"] += time.perf_counter() - t
            if bar is not None:
                bar.update(src.bytes_read - bar.n)
            if self.count is not None and self.stats.frames >= self.count:
                break
        # a reload asked for before the end is honoured (even one that came with the stop, while
        # the loop waited): the keys still open are classified by the new model
        if self._reload.is_set():
            self._reload.clear()
            self._start_loader()
        if self._loader is not None:
            self._loader.join()
        if self._next_model is not None:
            self._release_held(block=True)  # built for the old model: ahead of the switch
            self._queue_model_switch()
        self._meter_out(self.meter.flush())
        if self.detectors is not None:
            self._publish_findings(self._limiter.flush())  # repeats folded since their key's last message

    def _control(self) -> None:
        """Act on a reload request, queue a model the loader has ready, and sequences that
        waited for room (capture thread)."""
        self._release_held(block=False)
        if self._reload.is_set():
            self._reload.clear()
            self._start_loader()
        if self._next_model is not None:
            self._queue_model_switch()

    def _pace(self, until: float) -> None:
        """Wait (``--speed``) until ``until`` on the monotonic clock, still acting on stop and
        reload: sparse traffic can mean seconds between two batches."""
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.05))
            self._control()

    def _meter_out(self, out: MeterOutput) -> None:
        if self.worker is not None:
            self._emit(out.windows)
            return
        self.stats.windows += len(out.windows)
        rows = out.rows if self.meter.per_packet else out.windows
        if rows is not None and len(rows):
            self._put(self._q_out, rows, block=True)  # features: nothing is dropped

    def _emit(self, windows: Any) -> None:
        if not len(windows):
            return
        self.stats.windows += len(windows)
        if self.worker.skip_arp:
            arp = windows.proto == POOL_PROTO_ARP
            if arp.any():
                self.stats.arp_windows += int(arp.sum())
                windows = windows.take(~arp)
                if not len(windows):
                    return
        seq = self.seqbuf.push(windows)
        self.stats.sequences += len(seq)
        held = self._held
        if held is not None and (len(held) or self._q_seq.full()):
            # behind what already waits, so that a key's newest sequence stays its newest
            held.add(seq)
            self._release_held(block=False)
            return
        if not self._put(self._q_seq, seq, block=not self.live):
            if held is not None:
                held.add(seq)  # the worker cannot have filled the queue: kept all the same
            else:
                self.stats.dropped_sequences += len(seq)

    def _release_held(self, block: bool) -> None:
        """Queue the sequences that waited for room (newest per key) when there is room,
        or at once with ``block``; fold the coalescer's counts into the stats."""
        held = self._held
        if held is None:
            return
        # only this thread puts: a queue not full now takes the put below
        if len(held) and (block or not self._q_seq.full()):
            self._put(self._q_seq, held.take(), block=True)
        coalesced, dropped = held.pop_counts()
        self.stats.coalesced_sequences += coalesced
        self.stats.dropped_sequences += dropped

    def _detect(self, batch: Any) -> np.ndarray:
        """Run the protocol-fact detectors and publish their findings (rate-limited) on the
        sink queue, beside the model's predictions; returns which frames they flagged."""
        res = self.detectors.process(batch)
        flagged = res.frame_class >= 0
        if res.findings:
            self.stats.detector_frames += res.flagged()
            for f in res.findings:
                self.stats.findings[f.cls] = self.stats.findings.get(f.cls, 0) + 1
        elif not self._limiter.pending:
            return flagged
        # folded findings due by this batch's packet time come out too
        keep = self._limiter.admit(res.findings, now=float(batch.ts[-1]) if len(batch) else None)
        self._publish_findings(keep)
        if self.alert_pcap is not None:
            # every finding, the rate-limited ones too, keeps its packets coming
            kept = {id(f) for f in keep}
            dropped = [f for f in res.findings if id(f) not in kept]
            if dropped:
                self.alert_pcap.flag_findings(dropped)
        return flagged

    def _publish_findings(self, keep: list[Any]) -> None:
        """Findings the rate limit let through (or folded ones now due) as predictions on the
        sink queue; with the alert pcap on, each names its file."""
        if not keep:
            return
        from .detectors.publish import encode_findings

        files = self.alert_pcap.flag_findings(keep) if self.alert_pcap is not None else None
        enc = encode_findings(keep, sensor=self.worker.sensor, id_prefix=self.worker.id_prefix,
                              first_id=self.stats.detector_predictions, now=time.time(),
                              interface=self.worker.interface, pcap_files=files)
        self.stats.detector_predictions += len(keep)
        if not self._put(self._q_out, enc, block=not self.live):
            self.stats.dropped_findings += len(keep)

    # ---- model reload ------------------------------------------------------------------------
    def _start_loader(self) -> None:
        if self.worker is None:
            return
        if self._loader is not None and self._loader.is_alive():
            log.warning("model reload already in progress: this SIGHUP is ignored")
            return
        self._loader = threading.Thread(target=self._load_next, name="ids-loader", daemon=True)
        self._loader.start()

    def _load_next(self) -> None:
        """Loader thread: the slow part of a reload (hash, torch.load, device, probe)."""
        notify("RELOADING=1")
        from .model.artifacts import load_model  # imported with the worker: reads no file after a privilege drop

        w = self.worker
        t = time.perf_counter()
        try:
            loaded = load_model(w.model_dir, w.device)
            if loaded.window != self.meter.config.window:
                raise ValueError(f"its window N {loaded.window} differs from the meter's {self.meter.config.window} "
                                 "(the meter's N is fixed for a run: restart to change it)")
            if w.half:
                loaded.model.half()
        except Exception as e:  # noqa: BLE001 - a bad model file must not stop the daemon
            self.stats.reload_failures += 1
            log.error("model reload failed, keeping the current model: %s", e)
            return
        finally:
            self.stats.reload_seconds += time.perf_counter() - t
            notify("READY=1")
        self._next_model = loaded

    def _queue_model_switch(self) -> None:
        """Capture thread: queue the switch behind the sequences built for the old model."""
        loaded = self._next_model
        if self._held is not None and len(self._held):
            return  # sequences for the old model still wait for room: they go first
        if not self._put(self._q_seq, _Reload(loaded), block=not self.live):
            return  # live with a full queue: try again after the next batch
        self._next_model = None
        from .features.ciciot import INDEX

        cols = np.array([INDEX[c] for c in loaded.columns])
        if loaded.seq_len != self.seqbuf.t or not np.array_equal(cols, self.seqbuf.cols):
            self.seqbuf = SequenceBuffer(loaded.seq_len, cols, self.seqbuf.max_keys)

    # ---- stage 2: micro-batches through the model ------------------------------------------
    def _work(self) -> None:
        inf = self.cfg.inference
        batcher = MicroBatcher(inf.max_batch, inf.max_wait_ms)
        while True:
            try:
                item = self._q_seq.get(timeout=batcher.timeout())
            except queue.Empty:
                self._classify(batcher.expired())
                continue
            if item is _END:
                self._classify(batcher.flush())
                break
            if isinstance(item, _Reload):
                self._classify(batcher.flush())  # built for the old model
                self.worker.install(item.loaded)
                self.worker.reloads += 1
                self.stats.reloads += 1
                log.info("model reloaded: %s", self.worker.model_info)
                continue
            self._classify(batcher.add(item))
        self._put(self._q_out, _END, block=True)

    def _classify(self, batches: list[SequenceBatch]) -> None:
        for part in batches:
            t = time.perf_counter()
            out = self.worker.predict(part)
            dt = time.perf_counter() - t
            self.stats.busy["model"] += dt
            if self.metrics is not None:
                self.metrics.observe_batch(len(part), dt)
            self.stats.batches += 1
            self.stats.batched_sequences += len(part)
            self._put(self._q_out, out, block=True)

    # ---- stage 3: sinks ----------------------------------------------------------------------
    def _write(self) -> None:
        while True:
            item = self._q_out.get()
            if item is _END:
                break
            t = time.perf_counter()
            for s in self.sinks:
                s.write_batch(item)
            self.stats.busy["sinks"] += time.perf_counter() - t
            if isinstance(item, EncodedBatch):
                self.stats.predictions += len(item)
            else:
                self.stats.rows_written += len(item)

    # ---- status --------------------------------------------------------------------------------
    def _read_kernel_stats(self) -> None:
        """Fold the kernel's capture counters into the source's stats (live only), so the
        status line and the metrics show kernel drops as they happen, not only at the end."""
        read = getattr(self.source, "read_kernel_stats", None)
        if self.live and read is not None:
            try:
                read()
            except OSError:
                pass  # the interface went away: the capture loop reports that

    def kernel_drops(self) -> int | None:
        """Frames the kernel dropped (capture ring full); None when not capturing live."""
        sstats = getattr(self.source, "stats", None)
        return int(sstats.kernel_drops) if self.live and sstats is not None else None

    def _print_status(self, final: bool = False) -> None:
        c = self.meter.counters
        st = self.stats
        kd = self.kernel_drops()
        line = (f"packets {c.packets} flows {c.keys_tracked} windows {st.windows} predictions {st.predictions} "
                + (f"coalesced {st.coalesced_sequences} " if self._held is not None else "")
                + f"queue drops {st.dropped_sequences + st.dropped_findings}"
                + (f" kernel drops {kd}" if kd is not None else "") + f" batch {st.mean_batch:.0f}")
        print(("\r" + line + " " * 8) if not final else ("\r" + line + "\n"), end="", file=sys.stderr, flush=True)
